//! Reading a server's answer: only the rows this watcher asked for are built. Every other row
//! is looked at for its name alone (as raw JSON borrowed from the body, never turned into a
//! value tree) and counted, so an answer full of rows nobody asked for costs little more than
//! its bytes. A credential name received twice keeps its first row (names are unique in
//! LiteLLM's table). Key and team rows (small, and holding no secret) are read whole and those
//! not asked for dropped and counted the same way.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::config::KeyGrant;
use crate::credentials::rows::{linked_credential, StoredRows};
use crate::credentials::values::ValueReader;
use crate::db::keys::{KeyRow, TeamRow};
use crate::db::litellm::{CredentialRow, ModelRow};

/// The answer's shape, rows left raw.
#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow, default)]
    credentials: Vec<&'a RawValue>,
    #[serde(borrow, default)]
    models: Vec<&'a RawValue>,
    #[serde(default)]
    keys: Vec<KeyRow>,
    #[serde(default)]
    teams: Vec<TeamRow>,
}

/// A row's name, the rest skipped.
#[derive(Deserialize)]
struct Named<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
}

/// What was asked for: credential names, model aliases and LiteLLM keys, and the reader that
/// resolves the credentials model rows link to.
pub(super) struct Selection<'a> {
    pub credentials: &'a [String],
    pub models: &'a [String],
    pub keys: Option<&'a KeyGrant>,
    pub reader: ValueReader<'a>,
}

/// The rows asked for in `body` (plus the credentials the selected model rows link to), and how
/// many others it held. Errors say what is not valid.
pub(super) fn requested_rows(
    body: &[u8],
    selection: &Selection<'_>,
) -> Result<(StoredRows, usize), serde_json::Error> {
    let wire: Wire<'_> = serde_json::from_slice(body)?;
    let name = |raw: &RawValue| -> Result<String, serde_json::Error> {
        let named: Named<'_> = serde_json::from_str(raw.get())?;
        Ok(named.name.into_owned())
    };
    let mut dropped = 0;
    let mut rows = StoredRows::default();
    for raw in &wire.models {
        if selection.models.contains(&name(raw)?) {
            let row: ModelRow = serde_json::from_str(raw.get())?;
            rows.models.push(row);
        } else {
            dropped += 1;
        }
    }
    let linked: Vec<String> = rows
        .models
        .iter()
        .filter_map(|m| linked_credential(m, &selection.reader))
        .collect();
    for raw in &wire.credentials {
        let name = name(raw)?;
        let wanted = selection.credentials.contains(&name) || linked.contains(&name);
        if wanted && !rows.credentials.iter().any(|c| c.name == name) {
            let row: CredentialRow = serde_json::from_str(raw.get())?;
            rows.credentials.push(row);
        } else {
            dropped += 1;
        }
    }
    let received = StoredRows {
        keys: wire.keys,
        teams: wire.teams,
        ..StoredRows::default()
    };
    let total = received.keys.len() + received.teams.len();
    if let Some(grant) = selection.keys {
        (rows.keys, rows.teams) = received.keys_for(grant);
    }
    dropped += total - rows.keys.len() - rows.teams.len();
    Ok((rows, dropped))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::credentials::cipher::{encrypt, Format, Keys};
    use crate::credentials::Secret;

    fn keys() -> Keys {
        Keys::derive(&Secret::new("answer-test-salt".into()))
    }

    fn select(
        body: &serde_json::Value,
        credentials: &[&str],
        models: &[&str],
    ) -> (StoredRows, usize) {
        let credentials: Vec<String> = credentials.iter().map(|s| s.to_string()).collect();
        let models: Vec<String> = models.iter().map(|s| s.to_string()).collect();
        let keys = keys();
        let selection = Selection {
            credentials: &credentials,
            models: &models,
            keys: None,
            reader: ValueReader {
                keys: Some(&keys),
                env: None,
            },
        };
        requested_rows(body.to_string().as_bytes(), &selection).expect("valid")
    }

    #[test]
    fn only_rows_asked_for_and_linked_are_built_and_the_rest_counted() {
        let link = encrypt("linked", Format::Nacl, &keys());
        let body = json!({
            "credentials": [
                { "name": "a", "values": { "api_key": "x" } },
                { "name": "linked", "values": { "api_key": "y" } },
                { "name": "other", "values": { "api_key": "z" } },
                { "name": "a", "values": { "api_key": "again" } },
            ],
            "models": [
                { "id": "1", "name": "m", "params": { "litellm_credential_name": link } },
                { "id": "2", "name": "n", "params": {} },
            ],
            "unknown": [1, 2, 3],
        });
        let (rows, dropped) = select(&body, &["a"], &["m"]);
        let names: Vec<&str> = rows.credentials.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["a", "linked"]);
        assert_eq!(rows.credentials[0].values["api_key"], "x");
        assert_eq!(rows.models.len(), 1);
        assert_eq!(dropped, 3);
    }

    #[test]
    fn rows_without_a_name_or_not_json_are_refused() {
        let selection = Selection {
            credentials: &[],
            models: &[],
            keys: None,
            reader: ValueReader {
                keys: None,
                env: None,
            },
        };
        assert!(requested_rows(b"{\"credentials\":[{\"values\":{}}]}", &selection).is_err());
        assert!(requested_rows(b"[1,2", &selection).is_err());
        let (rows, dropped) = requested_rows(b"{}", &selection).expect("empty is valid");
        assert_eq!((rows, dropped), (StoredRows::default(), 0));
    }

    #[test]
    fn only_the_keys_asked_for_are_kept_and_the_rest_counted() {
        let key = |token: &str, team: &str| {
            json!({ "token": token, "key_alias": null,
            "models": [], "expires": null, "blocked": false, "max_budget": null, "spend": 0.0,
            "team_id": team, "rpm_limit": null, "tpm_limit": null, "user_id": null })
        };
        let team = |id: &str| {
            json!({ "team_id": id, "models": [], "blocked": false,
            "max_budget": null, "spend": 0.0 })
        };
        let body = json!({
            "keys": [key("k1", "a"), key("k2", "b")],
            "teams": [team("a"), team("b")],
        });
        let asked = KeyGrant::Teams(vec!["a".into()]);
        let selection = Selection {
            credentials: &[],
            models: &[],
            keys: Some(&asked),
            reader: ValueReader {
                keys: None,
                env: None,
            },
        };
        let (rows, dropped) =
            requested_rows(body.to_string().as_bytes(), &selection).expect("valid");
        assert_eq!(rows.keys.len(), 1);
        assert_eq!(rows.keys[0].token, "k1");
        assert_eq!(rows.teams.len(), 1);
        assert_eq!(dropped, 2);
        // Not asking for keys: none kept.
        let (rows, dropped) = select(&body, &[], &[]);
        assert!(rows.keys.is_empty() && rows.teams.is_empty());
        assert_eq!(dropped, 4);
    }
}
