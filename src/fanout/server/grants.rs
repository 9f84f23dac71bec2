//! Who may watch what: the query a watch request makes ([`WatchRequest`]), the watchers'
//! grants by token digest (swapped whole on a reload), and the names a request asks for that
//! its grant does not cover.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::config::{KeyGrant, WatcherGrant};
use crate::fanout::MAX_WAIT_SECONDS;
use crate::percent;

/// What one watch request asks for.
#[derive(Debug, Default, PartialEq)]
pub struct WatchRequest {
    /// Credential names.
    pub credentials: Vec<String>,
    /// Model aliases.
    pub models: Vec<String>,
    /// LiteLLM keys: `keys=all`, or `team=ID` (repeated) for those teams' keys.
    pub keys: Option<KeyGrant>,
    /// How long to hold the request when nothing changed.
    pub wait: Duration,
}

impl WatchRequest {
    /// Parses the query string; errors name the parameter.
    pub fn parse(query: Option<&str>) -> Result<WatchRequest, String> {
        let mut request = WatchRequest::default();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent::decode(value).into_owned();
            match key {
                "credential" if !value.is_empty() => request.credentials.push(value),
                "model" if !value.is_empty() => request.models.push(value),
                "keys" if value == "all" && request.keys.is_none() => {
                    request.keys = Some(KeyGrant::All);
                }
                "team" if !value.is_empty() => match &mut request.keys {
                    None => request.keys = Some(KeyGrant::Teams(vec![value])),
                    Some(KeyGrant::Teams(teams)) => teams.push(value),
                    Some(KeyGrant::All) => return Err("keys=all and team= together".into()),
                },
                "keys" => return Err(format!("keys={value:?}: only keys=all (or team=ID)")),
                "wait" => {
                    let seconds: u64 = value
                        .parse()
                        .map_err(|_| format!("wait={value:?} is not a whole number of seconds"))?;
                    request.wait = Duration::from_secs(seconds.min(MAX_WAIT_SECONDS));
                }
                "credential" | "model" | "team" => return Err(format!("{key}= is empty")),
                other => return Err(format!("unknown parameter {other:?}")),
            }
        }
        Ok(request)
    }
}

/// Watcher grants by token digest, swapped whole on a config reload (revoking a token takes a
/// SIGHUP, not a restart).
pub type SharedGrants = Arc<ArcSwap<HashMap<[u8; 32], WatcherGrant>>>;

/// The grants of `fanout.watchers`, by token digest.
pub fn grants_by_token(watchers: &[WatcherGrant]) -> HashMap<[u8; 32], WatcherGrant> {
    watchers
        .iter()
        .map(|g| (g.token_sha256, g.clone()))
        .collect()
}

/// The names in `request` that `grant` does not cover.
pub(super) fn outside_grant(grant: &WatcherGrant, request: &WatchRequest) -> Vec<String> {
    let credentials = request
        .credentials
        .iter()
        .filter(|n| !grant.credentials.contains(n))
        .map(|n| format!("credential {n}"));
    let models = request
        .models
        .iter()
        .filter(|n| !grant.models.contains(n))
        .map(|n| format!("model {n}"));
    let keys = match (&request.keys, &grant.litellm_keys) {
        (None, _) => Vec::new(),
        (Some(asked), Some(granted)) if granted.covers(asked) => Vec::new(),
        (Some(KeyGrant::All), _) => vec!["litellm_keys all".to_string()],
        (Some(KeyGrant::Teams(teams)), granted) => teams
            .iter()
            .filter(|t| !granted.as_ref().is_some_and(|g| g.covers_team(Some(t))))
            .map(|t| format!("litellm_keys of team {t}"))
            .collect(),
    };
    credentials.chain(models).chain(keys).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_parse_names_and_a_bounded_wait() {
        let r = WatchRequest::parse(Some("credential=a%2Fb&model=gpt&credential=c&wait=25"))
            .expect("valid");
        assert_eq!(r.credentials, ["a/b", "c"]);
        assert_eq!(r.models, ["gpt"]);
        assert_eq!(r.keys, None);
        let keys = WatchRequest::parse(Some("keys=all")).expect("valid");
        assert_eq!(keys.keys, Some(KeyGrant::All));
        let teams = WatchRequest::parse(Some("team=a&team=b")).expect("valid");
        assert_eq!(
            teams.keys,
            Some(KeyGrant::Teams(vec!["a".into(), "b".into()]))
        );
        assert!(WatchRequest::parse(Some("keys=all&team=a")).is_err());
        assert!(WatchRequest::parse(Some("keys=some")).is_err());
        assert_eq!(r.wait, Duration::from_secs(25));
        let capped = WatchRequest::parse(Some("wait=100000")).expect("valid");
        assert_eq!(capped.wait, Duration::from_secs(MAX_WAIT_SECONDS));
        assert!(WatchRequest::parse(Some("wait=soon"))
            .unwrap_err()
            .contains("wait"));
        assert!(WatchRequest::parse(Some("everything=1"))
            .unwrap_err()
            .contains("everything"));
        assert!(WatchRequest::parse(Some("credential="))
            .unwrap_err()
            .contains("empty"));
    }

    #[test]
    fn names_outside_the_grant_are_listed() {
        let grant = WatcherGrant {
            name: "w".into(),
            token_sha256: [0; 32],
            credentials: vec!["a".into()],
            models: vec!["m".into()],
            litellm_keys: Some(KeyGrant::Teams(vec!["t1".into()])),
        };
        let request = WatchRequest {
            credentials: vec!["a".into(), "b".into()],
            models: vec!["m".into(), "n".into()],
            keys: Some(KeyGrant::Teams(vec!["t1".into(), "t2".into()])),
            wait: Duration::ZERO,
        };
        assert_eq!(
            outside_grant(&grant, &request),
            ["credential b", "model n", "litellm_keys of team t2"]
        );
        let all = WatchRequest {
            keys: Some(KeyGrant::All),
            ..WatchRequest::default()
        };
        assert_eq!(outside_grant(&grant, &all), ["litellm_keys all"]);
        let everything = WatcherGrant {
            litellm_keys: Some(KeyGrant::All),
            ..grant.clone()
        };
        assert!(outside_grant(&everything, &all).is_empty());
        let none = WatcherGrant {
            litellm_keys: None,
            ..grant
        };
        assert_eq!(outside_grant(&none, &all), ["litellm_keys all"]);
    }
}
