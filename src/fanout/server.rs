//! The serving side of fan-out: `GET /v1/snapshot` on a listener of its own (TLS, required off
//! loopback), answered from the [`FanoutHub`] without touching the database.
//!
//! A watcher is known by its token (`Authorization: Bearer …`; the config holds only its
//! SHA-256) and receives only the rows its grant names, plus the credentials those model rows
//! link to, and the LiteLLM key and team rows its grant's `litellm_keys` covers (all, or those
//! of named teams). A request naming anything outside the grant is refused whole (403, naming what was
//! refused), so a misconfigured watcher is told rather than silently served less. Tokens are
//! compared by their SHA-256 through a map: what a lookup's timing could reveal is about the
//! digest, which an attacker cannot invert into a token.
//!
//! `POST /v1/spend` takes a watcher's spend batch into this instance's writer ([`spend`]).
//!
//! A request held open while nothing changes also watches its connection: a watcher that closes
//! it (a restart, a failover, a timeout of its own) releases the request and its descriptor at
//! once, not at the end of the wait.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use http::{header, Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::json;
use sha2::{Digest, Sha256};
use tracing::{debug, info};

use super::{entity_tag, FanoutHub, MAX_WAIT_SECONDS, SNAPSHOT_PATH, SPEND_PATH};
use crate::config::{KeyGrant, WatcherGrant};
use crate::credentials::cipher::Keys;
use crate::credentials::values::ValueReader;
use crate::metrics::spend::FANOUT_REPORTS;
use crate::metrics::FANOUT_REQUESTS;
use crate::percent;
use crate::spend::writer::SpendWriter;

pub mod spend;

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

/// The fan-out listener's application.
pub struct FanoutApp {
    hub: Arc<FanoutHub>,
    grants: SharedGrants,
    keys: Option<Keys>,
    /// This instance's spend writer, which watchers' spend is added to.
    spend: Option<Arc<SpendWriter>>,
    receipts: spend::Receipts,
}

impl FanoutApp {
    /// Serves `hub` to the watchers in `grants`; `keys` resolves encrypted
    /// `litellm_credential_name` links (without them, only plain links are followed).
    pub fn new(hub: Arc<FanoutHub>, grants: SharedGrants, keys: Option<Keys>) -> FanoutApp {
        FanoutApp {
            hub,
            grants,
            keys,
            spend: None,
            receipts: spend::Receipts::default(),
        }
    }

    /// Also takes watchers' spend reports into `writer` (this instance's).
    pub fn with_spend(mut self, writer: Option<Arc<SpendWriter>>) -> FanoutApp {
        self.spend = writer;
        self
    }

    /// The answer to `POST /v1/spend`.
    async fn spend_report(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let digest = Self::token_digest(session);
        let Some(grant) = digest.and_then(|d| self.grants.load().get(&d).cloned()) else {
            FANOUT_REPORTS.with_label_values(&["unauthorized"]).inc();
            return error(
                StatusCode::UNAUTHORIZED,
                "a watcher token is required (Authorization: Bearer …) and this one is not known",
            );
        };
        let rows = self.hub.subscribe().borrow().clone();
        spend::answer(
            session,
            &grant,
            self.spend.as_deref(),
            rows.as_deref(),
            &self.receipts,
        )
        .await
    }

    /// The SHA-256 of the presented bearer token.
    fn token_digest(session: &ServerSession) -> Option<[u8; 32]> {
        let value = session.req_header().headers.get(header::AUTHORIZATION)?;
        let token = value.to_str().ok()?.strip_prefix("Bearer ")?.trim();
        Some(Sha256::digest(token.as_bytes()).into())
    }

    /// The grant in force now for `digest`, and the refusal when the request is not (or no
    /// longer: a reload may revoke it while the request waits) covered by one.
    fn authorize(
        &self,
        digest: Option<&[u8; 32]>,
        request: &WatchRequest,
    ) -> Result<WatcherGrant, Box<Response<Vec<u8>>>> {
        let Some(grant) = digest.and_then(|d| self.grants.load().get(d).cloned()) else {
            FANOUT_REQUESTS.with_label_values(&["unauthorized"]).inc();
            return Err(Box::new(error(
                StatusCode::UNAUTHORIZED,
                "a watcher token is required (Authorization: Bearer …) and this one is not known",
            )));
        };
        let refused = outside_grant(&grant, request);
        if refused.is_empty() {
            return Ok(grant);
        }
        FANOUT_REQUESTS.with_label_values(&["forbidden"]).inc();
        info!(
            "fanout: watcher {} asked for what its grant does not cover: {}",
            grant.name,
            refused.join(", ")
        );
        Err(Box::new(error(
            StatusCode::FORBIDDEN,
            &format!(
                "not granted to watcher {}: {}",
                grant.name,
                refused.join(", ")
            ),
        )))
    }

    /// The answer to a request: waits while the watcher's rows still match `if_none_match`, up
    /// to the requested wait, checking the grant again before every answer.
    #[allow(
        clippy::expect_used,
        reason = "rows of strings and JSON values always serialize"
    )]
    async fn answer(
        &self,
        digest: Option<[u8; 32]>,
        request: &WatchRequest,
        if_none_match: Option<&str>,
    ) -> Response<Vec<u8>> {
        let deadline = tokio::time::Instant::now() + request.wait;
        let mut updates = self.hub.subscribe();
        loop {
            let grant = match self.authorize(digest.as_ref(), request) {
                Ok(grant) => grant,
                Err(refusal) => return *refusal,
            };
            let rows = updates.borrow_and_update().clone();
            if let Some(rows) = rows {
                let reader = ValueReader {
                    keys: self.keys.as_ref(),
                    env: None,
                };
                let selected = rows.select(
                    &request.credentials,
                    &request.models,
                    request.keys.as_ref(),
                    &reader,
                );
                let body = serde_json::to_vec(&selected).expect("rows serialize");
                let tag = entity_tag(&body);
                if if_none_match != Some(tag.as_str()) {
                    FANOUT_REQUESTS.with_label_values(&["changed"]).inc();
                    debug!(
                        "fanout: watcher {} gets {} credential, {} model and {} key rows",
                        grant.name,
                        selected.credentials.len(),
                        selected.models.len(),
                        selected.keys.len()
                    );
                    return snapshot_response(body, &tag);
                }
            }
            let woke = tokio::time::timeout_at(deadline, updates.changed()).await;
            if !matches!(woke, Ok(Ok(()))) {
                break;
            }
        }
        if updates.borrow().is_none() {
            FANOUT_REQUESTS.with_label_values(&["unavailable"]).inc();
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "this server has not read the database yet; retry",
            );
        }
        FANOUT_REQUESTS.with_label_values(&["unchanged"]).inc();
        let mut response = Response::new(Vec::new());
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        if let Some(tag) = if_none_match {
            if let Ok(value) = tag.parse() {
                response.headers_mut().insert(header::ETAG, value);
            }
        }
        response
    }
}

#[allow(
    clippy::expect_used,
    reason = "the status and headers are constants or an entity tag of hex digits"
)]
fn snapshot_response(body: Vec<u8>, tag: &str) -> Response<Vec<u8>> {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, body.len())
        .header(header::ETAG, tag)
        .header(header::CACHE_CONTROL, "no-store")
        .body(body)
        .expect("static response parts are valid")
}

#[allow(clippy::expect_used, reason = "the status and headers are constants")]
fn error(status: StatusCode, message: &str) -> Response<Vec<u8>> {
    let body = json!({ "error": message }).to_string().into_bytes();
    let mut builder = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, body.len());
    if status == StatusCode::UNAUTHORIZED {
        builder = builder.header(header::WWW_AUTHENTICATE, "Bearer");
    }
    builder.body(body).expect("static response parts are valid")
}

/// The names in `request` that `grant` does not cover.
fn outside_grant(grant: &WatcherGrant, request: &WatchRequest) -> Vec<String> {
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

#[async_trait]
impl ServeHttp for FanoutApp {
    #[allow(
        clippy::expect_used,
        reason = "the status is a constant and there are no headers"
    )]
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        if req.method == Method::POST && req.uri.path() == SPEND_PATH {
            return self.spend_report(session).await;
        }
        if req.method != Method::GET || req.uri.path() != SNAPSHOT_PATH {
            FANOUT_REQUESTS.with_label_values(&["bad_request"]).inc();
            return error(
                StatusCode::NOT_FOUND,
                "the fan-out listener answers GET /v1/snapshot and POST /v1/spend only",
            );
        }
        let request = match WatchRequest::parse(req.uri.query()) {
            Ok(request) => request,
            Err(e) => {
                FANOUT_REQUESTS.with_label_values(&["bad_request"]).inc();
                return error(StatusCode::BAD_REQUEST, &e);
            }
        };
        let if_none_match = req
            .headers
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let digest = Self::token_digest(session);
        // A watcher that goes away while its request waits is noticed at once (its FIN or
        // reset), and the request and its descriptor are released instead of held to the
        // end of the wait.
        let answer = self.answer(digest, &request, if_none_match.as_deref());
        tokio::select! {
            response = answer => response,
            () = client_gone(session) => {
                FANOUT_REQUESTS.with_label_values(&["abandoned"]).inc();
                debug!("fanout: a watcher closed its connection while its request waited");
                // Nobody reads it: no body, so nothing is left to fail (and log) after the head.
                Response::builder()
                    .status(StatusCode::BAD_REQUEST)
                    .header(header::CONTENT_LENGTH, 0)
                    .header(header::CONNECTION, "close")
                    .body(Vec::new())
                    .expect("static response parts are valid")
            }
        }
    }
}

/// Resolves when the client closes its connection (or sends anything: a watcher sends nothing
/// after its request, which has no body); pending while it stays open.
async fn client_gone(session: &mut ServerSession) {
    match session.read_body_or_idle(true).await {
        Err(_) => {}
        // Not a close (cannot happen without a body): keep waiting for the answer.
        Ok(_) => std::future::pending().await,
    }
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
