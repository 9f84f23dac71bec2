//! LiteLLM rows as stored → a [`LoadOutcome`]: the one decoding step shared by the Postgres
//! source (rows read from the tables) and the watch source (the same rows received from a
//! fan-out server), so both fail closed the same way and name failures the same way.
//!
//! [`StoredRows`] is a database read kept as ciphertext: what a fan-out server hands out. With
//! LiteLLM's keys read, it holds their rows too: a key's `token` is already LiteLLM's SHA-256
//! of the key, and nothing else in a key or team row is secret (alias, models, budget, spend,
//! limits, ids).

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::cipher::Keys;
use super::models::{deployment, params_object, ParamsStorage};
use super::source::LoadOutcome;
use super::values::{ValueReader, AUTHENTICATION_FAILURE};
use crate::config::KeyGrant;
use crate::db::keys::{KeyRow, TeamRow};
use crate::db::litellm::{CredentialRow, ModelRow};
use crate::upstream::Targets;

/// Where a source hands every set of rows it reads, still ciphertext (the fan-out hub, which
/// serves them to watchers). Defined here so a source need not know who listens.
pub trait RowsSink: Send + Sync {
    /// Takes the rows of one successful read.
    fn publish(&self, rows: StoredRows);
}

/// Rows of both tables exactly as stored (every secret still LiteLLM ciphertext).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StoredRows {
    /// `"LiteLLM_CredentialsTable"` rows.
    pub credentials: Vec<CredentialRow>,
    /// `"LiteLLM_ProxyModelTable"` rows that are not blocked.
    pub models: Vec<ModelRow>,
    /// `"LiteLLM_VerificationToken"` rows, when the keys are read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<KeyRow>,
    /// `"LiteLLM_TeamTable"` rows, when the keys are read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub teams: Vec<TeamRow>,
}

impl StoredRows {
    /// Only what `credentials` and `models` name, plus every credential row a selected model
    /// row links to with `litellm_credential_name` (resolved with `reader`: the link itself may
    /// be encrypted), and the key and team rows `keys` covers. Rows keep their stored order.
    pub fn select(
        &self,
        credentials: &[String],
        models: &[String],
        keys: Option<&KeyGrant>,
        reader: &ValueReader<'_>,
    ) -> StoredRows {
        let models: Vec<ModelRow> = self
            .models
            .iter()
            .filter(|m| models.contains(&m.name))
            .cloned()
            .collect();
        let linked: Vec<String> = models
            .iter()
            .filter_map(|m| linked_credential(m, reader))
            .collect();
        let credentials = self
            .credentials
            .iter()
            .filter(|c| credentials.contains(&c.name) || linked.contains(&c.name))
            .cloned()
            .collect();
        let (keys, teams) = match keys {
            Some(grant) => self.keys_for(grant),
            None => (Vec::new(), Vec::new()),
        };
        StoredRows {
            credentials,
            models,
            keys,
            teams,
        }
    }

    /// The key rows `grant` covers and the team rows of the teams it covers.
    pub fn keys_for(&self, grant: &KeyGrant) -> (Vec<KeyRow>, Vec<TeamRow>) {
        let keys = self
            .keys
            .iter()
            .filter(|k| grant.covers_team(k.team_id.as_deref()))
            .cloned()
            .collect();
        let teams = self
            .teams
            .iter()
            .filter(|t| grant.covers_team(Some(&t.id)))
            .cloned()
            .collect();
        (keys, teams)
    }
}

/// The `litellm_credential_name` of a model row, when it has a readable one.
pub(crate) fn linked_credential(row: &ModelRow, reader: &ValueReader<'_>) -> Option<String> {
    let params = params_object(&row.params).ok()?;
    let stored = params.get("litellm_credential_name")?.as_str()?;
    let name = reader.read("litellm_credential_name", stored).ok()?;
    Some(name.expose().to_string())
}

/// Decrypts every row; rows that fail are left out and named (fail closed: a row that does not
/// decrypt is never used as if its ciphertext were the key).
pub fn decode(rows: &StoredRows, keys: Option<&Keys>, targets: &Targets) -> LoadOutcome {
    let reader = ValueReader { keys, env: None };
    let mut outcome = LoadOutcome {
        rows: rows.credentials.len() + rows.models.len(),
        ..LoadOutcome::default()
    };
    let mut by_name = HashMap::new();
    for row in &rows.credentials {
        let loaded = match (row.values.as_object(), row.info.as_ref()) {
            (Some(values), info) => {
                reader.credential(&row.name, values, info.and_then(|i| i.as_object()))
            }
            (None, _) => Err("credential_values is not a JSON object".to_string()),
        };
        match loaded {
            Ok(c) => {
                by_name.insert(row.name.clone(), Arc::new(c));
            }
            Err(reason) => {
                outcome.rows_failing_authentication +=
                    usize::from(reason.contains(AUTHENTICATION_FAILURE));
                outcome.credential_failures.insert(row.name.clone(), reason);
            }
        }
    }
    for row in &rows.models {
        match deployment(row, &reader, ParamsStorage::Encrypted, &by_name, targets) {
            Ok(d) => outcome
                .models
                .entry(row.name.clone())
                .or_default()
                .push(Arc::new(d)),
            Err(reason) => {
                outcome.rows_failing_authentication +=
                    usize::from(reason.contains(AUTHENTICATION_FAILURE));
                let entry = outcome.model_failures.entry(row.name.clone()).or_default();
                if !entry.is_empty() {
                    entry.push_str("; ");
                }
                entry.push_str(&format!("deployment {}: {reason}", row.id));
            }
        }
    }
    outcome.credentials = by_name.into_values().collect();
    outcome
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::credentials::cipher::{encrypt, Format};
    use crate::credentials::Secret;

    fn keys() -> Keys {
        Keys::derive(&Secret::new("rows-test-salt".into()))
    }

    fn credential(name: &str, key: &str) -> CredentialRow {
        CredentialRow {
            name: name.into(),
            values: json!({ "api_key": encrypt(key, Format::Nacl, &keys()) }),
            info: Some(json!({ "custom_llm_provider": "openai" })),
        }
    }

    fn model(id: &str, alias: &str, linked: &str) -> ModelRow {
        let params = json!({
            "model": encrypt("openai/gpt-4o", Format::Nacl, &keys()),
            "litellm_credential_name": encrypt(linked, Format::Nacl, &keys()),
        });
        ModelRow {
            id: id.into(),
            name: alias.into(),
            params,
            info: None,
        }
    }

    #[test]
    fn selection_keeps_named_rows_and_the_credentials_selected_models_link_to() {
        let rows = StoredRows {
            credentials: vec![
                credential("a", "sk-rows-test-key-a"),
                credential("b", "sk-rows-test-key-b"),
                credential("linked", "sk-rows-test-key-linked"),
            ],
            models: vec![model("m1", "gpt", "linked"), model("m2", "other", "b")],
            ..StoredRows::default()
        };
        let k = keys();
        let reader = ValueReader {
            keys: Some(&k),
            env: None,
        };
        let picked = rows.select(&["a".into()], &["gpt".into()], None, &reader);
        let names: Vec<&str> = picked.credentials.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["a", "linked"]);
        assert_eq!(picked.models.len(), 1);
        assert_eq!(picked.models[0].id, "m1");
        // Nothing asked for: nothing given.
        assert_eq!(rows.select(&[], &[], None, &reader), StoredRows::default());
        // The selection is still ciphertext: the key is nowhere in its JSON.
        let wire = serde_json::to_string(&picked).expect("serialize");
        assert!(!wire.contains("sk-rows-test-key"), "{wire}");
    }

    fn key(token: &str, team: Option<&str>) -> KeyRow {
        KeyRow {
            token: token.into(),
            alias: None,
            models: Vec::new(),
            expires: None,
            blocked: false,
            max_budget: Some(1.0),
            spend: 0.5,
            team_id: team.map(str::to_string),
            rpm_limit: None,
            tpm_limit: None,
            user_id: None,
        }
    }

    fn team(id: &str) -> TeamRow {
        TeamRow {
            id: id.into(),
            models: Vec::new(),
            blocked: false,
            max_budget: None,
            spend: 0.0,
        }
    }

    #[test]
    fn a_key_grant_selects_its_teams_keys_and_rows_and_all_selects_every_one() {
        let rows = StoredRows {
            keys: vec![
                key("k-a", Some("a")),
                key("k-b", Some("b")),
                key("k-none", None),
            ],
            teams: vec![team("a"), team("b")],
            ..StoredRows::default()
        };
        let reader = ValueReader {
            keys: None,
            env: None,
        };
        let teams = KeyGrant::Teams(vec!["a".into()]);
        let picked = rows.select(&[], &[], Some(&teams), &reader);
        let tokens: Vec<&str> = picked.keys.iter().map(|k| k.token.as_str()).collect();
        assert_eq!(tokens, ["k-a"]);
        assert_eq!(picked.teams, [team("a")]);
        let all = rows.select(&[], &[], Some(&KeyGrant::All), &reader);
        assert_eq!((all.keys.len(), all.teams.len()), (3, 2));
        assert!(rows.select(&[], &[], None, &reader).keys.is_empty());
        // On the wire under LiteLLM's column names, and read back the same.
        let wire = serde_json::to_value(&picked).expect("serialize");
        assert_eq!(wire["keys"][0]["token"], "k-a");
        assert_eq!(wire["teams"][0]["team_id"], "a");
        let back: StoredRows = serde_json::from_value(wire).expect("deserialize");
        assert_eq!(back, picked);
    }
}
