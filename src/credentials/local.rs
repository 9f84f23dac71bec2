//! The embedded credential store: a YAML file in the shape of LiteLLM's credential rows.
//!
//! ```yaml
//! credential_list:
//!   - credential_name: openai-prod
//!     credential_values:
//!       api_key: "v3:gcm:…"                 # written by `sidecar credentials encrypt`
//!     credential_info:
//!       custom_llm_provider: openai
//!   - credential_name: anthropic-dev
//!     credential_values:
//!       api_key: os.environ/ANTHROPIC_API_KEY   # LiteLLM-style environment reference
//! ```
//!
//! Every string in `credential_values` is either LiteLLM ciphertext or an `os.environ/VAR`
//! reference; plaintext keys are refused, so a key never sits in a file in the clear.
//!
//! Model deployments (for `model:` and `dispatch: model` routes) come in LiteLLM's config.yaml
//! shape, `model_name` plus `litellm_params` (and `model_info.id`, else `{model_name}-{n}`):
//!
//! ```yaml
//! model_list:
//!   - model_name: gpt-4o                    # the alias clients send as "model"
//!     litellm_params:
//!       model: azure/my-gpt-4o-deployment
//!       api_base: https://example.openai.azure.com
//!       api_version: "2024-10-21"
//!       api_key: os.environ/AZURE_API_KEY     # ciphertext or os.environ/, never plain
//!       weight: 2
//! ```
//!
//! In `litellm_params` only `api_key` must be ciphertext or a reference; the other fields may be
//! plain text, as LiteLLM's config.yaml has them. Structural
//! mistakes (unknown keys, wrong types, duplicate names) fail the whole file with every error
//! listed; an entry that cannot be decrypted or resolved is left out and reported by name.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use serde_yaml::Value;
use sha2::{Digest, Sha256};

use super::cipher::Keys;
use super::models::{deployment, ParamsStorage};
use super::source::{CredentialSource, LoadError, LoadOutcome};
use super::values::{ValueReader, AUTHENTICATION_FAILURE};
use super::Credential;
use crate::config::reader::{Diagnostics, Section};
use crate::config::Env;
use crate::db::litellm::ModelRow;
use crate::upstream::Targets;

const TOP_KEYS: &[&str] = &["credential_list", "model_list"];
const ENTRY_KEYS: &[&str] = &["credential_name", "credential_values", "credential_info"];
const MODEL_KEYS: &[&str] = &["model_name", "litellm_params", "model_info"];

/// One entry as written in the file, structurally valid.
struct Entry {
    name: String,
    values: serde_json::Map<String, serde_json::Value>,
    info: Option<serde_json::Map<String, serde_json::Value>>,
}

/// The file's entries, structurally valid.
#[derive(Default)]
struct Entries {
    credentials: Vec<Entry>,
    models: Vec<ModelRow>,
}

/// The local file store.
pub struct LocalStore {
    path: PathBuf,
    keys: Option<Keys>,
    targets: Arc<Targets>,
}

impl LocalStore {
    /// A store reading `path`, decrypting with `keys` (none when no salt key is set), its
    /// deployments' upstreams registered in `targets`.
    pub fn new(path: &Path, keys: Option<Keys>, targets: Arc<Targets>) -> LocalStore {
        LocalStore {
            path: path.to_path_buf(),
            keys,
            targets,
        }
    }

    /// Reads and decrypts the file now, with `env` resolving `os.environ/` references.
    pub fn load_with_env(&self, env: &Env) -> Result<LoadOutcome, LoadError> {
        let text = std::fs::read_to_string(&self.path).map_err(|e| self.unreadable(e))?;
        let entries = parse_entries(&text).map_err(|errors| LoadError::Malformed {
            path: self.path.clone(),
            errors,
        })?;
        let reader = ValueReader {
            keys: self.keys.as_ref(),
            env: Some(env),
        };
        let mut outcome = LoadOutcome::default();
        for entry in entries.credentials {
            outcome.rows += 1;
            match reader.credential(&entry.name, &entry.values, entry.info.as_ref()) {
                Ok(c) => outcome.credentials.push(Arc::new(c)),
                Err(reason) => {
                    if reason.contains(AUTHENTICATION_FAILURE) {
                        outcome.rows_failing_authentication += 1;
                    }
                    outcome.credential_failures.insert(entry.name, reason);
                }
            }
        }
        let by_name: HashMap<String, Arc<Credential>> = outcome
            .credentials
            .iter()
            .map(|c| (c.name.clone(), c.clone()))
            .collect();
        for row in entries.models {
            outcome.rows += 1;
            let storage = ParamsStorage::ConfigFile;
            match deployment(&row, &reader, storage, &by_name, &self.targets) {
                Ok(d) => outcome
                    .models
                    .entry(row.name)
                    .or_default()
                    .push(Arc::new(d)),
                Err(reason) => {
                    if reason.contains(AUTHENTICATION_FAILURE) {
                        outcome.rows_failing_authentication += 1;
                    }
                    let failures = outcome.model_failures.entry(row.name).or_default();
                    if !failures.is_empty() {
                        failures.push_str("; ");
                    }
                    failures.push_str(&format!("deployment {}: {reason}", row.id));
                }
            }
        }
        Ok(outcome)
    }

    fn unreadable(&self, error: std::io::Error) -> LoadError {
        LoadError::Unreadable {
            path: self.path.clone(),
            error,
        }
    }
}

#[async_trait]
impl CredentialSource for LocalStore {
    fn describe(&self) -> String {
        format!("local store {}", self.path.display())
    }

    /// The SHA-256 of the file: an unchanged file is not parsed, decrypted or published again.
    /// (Its `os.environ/` references resolve against the process environment, which is fixed.)
    async fn fingerprint(&self) -> Result<Option<String>, LoadError> {
        let bytes = std::fs::read(&self.path).map_err(|e| self.unreadable(e))?;
        Ok(Some(format!("{:x}", Sha256::digest(&bytes))))
    }

    async fn load(&self) -> Result<LoadOutcome, LoadError> {
        self.load_with_env(&|name| std::env::var(name).ok())
    }
}

/// Checks the file's structure, collecting every error with its path.
fn parse_entries(text: &str) -> Result<Entries, Vec<crate::config::ConfigError>> {
    let mut diag = Diagnostics::default();
    let doc: Value = serde_yaml::from_str(text).map_err(|e| {
        diag.error("(document)", format!("invalid YAML: {e}"));
        std::mem::take(&mut diag.errors)
    })?;
    let mut entries = Entries::default();
    let mut names = HashSet::new();
    if let Some(top) = Section::open(&doc, "", TOP_KEYS, &mut diag) {
        entries.models = parse_models(&top, &mut diag);
        for (path, item) in top.list("credential_list", &mut diag) {
            let Some(s) = Section::open(item, &path, ENTRY_KEYS, &mut diag) else {
                continue;
            };
            let name = s.string("credential_name", &mut diag);
            if name.is_none() && !s.has("credential_name") {
                diag.error(s.path_of("credential_name"), "required");
            }
            let values = json_object(&s, "credential_values", true, &mut diag);
            let info = json_object(&s, "credential_info", false, &mut diag);
            let (Some(name), Some(values)) = (name, values) else {
                continue;
            };
            if !names.insert(name.clone()) {
                diag.error(
                    s.path_of("credential_name"),
                    format!("{name:?} is listed twice"),
                );
                continue;
            }
            entries.credentials.push(Entry { name, values, info });
        }
    }
    if diag.is_empty() {
        Ok(entries)
    } else {
        Err(diag.errors)
    }
}

/// `model_list`, as LiteLLM's config.yaml has it; each entry becomes a model row (its id from
/// `model_info.id`, else `{model_name}-{n}`, counting that alias's entries from 1).
fn parse_models(top: &Section<'_>, diag: &mut Diagnostics) -> Vec<ModelRow> {
    let mut rows: Vec<ModelRow> = Vec::new();
    let mut ids = HashSet::new();
    for (path, item) in top.list("model_list", diag) {
        let Some(s) = Section::open(item, &path, MODEL_KEYS, diag) else {
            continue;
        };
        let name = s.string("model_name", diag);
        if name.is_none() && !s.has("model_name") {
            diag.error(s.path_of("model_name"), "required");
        }
        let params = json_object(&s, "litellm_params", true, diag);
        let info = json_object(&s, "model_info", false, diag);
        let (Some(name), Some(params)) = (name, params) else {
            continue;
        };
        let id = match info.as_ref().and_then(|i| i.get("id")) {
            Some(serde_json::Value::String(id)) => id.clone(),
            Some(_) => {
                diag.error(format!("{path}.model_info.id"), "expected a string");
                continue;
            }
            None => {
                let n = rows.iter().filter(|r| r.name == name).count() + 1;
                format!("{name}-{n}")
            }
        };
        if !ids.insert(id.clone()) {
            diag.error(path, format!("deployment id {id:?} is used twice"));
            continue;
        }
        rows.push(ModelRow {
            id,
            name,
            params: serde_json::Value::Object(params),
            info: info.map(serde_json::Value::Object),
        });
    }
    rows
}

/// Reads a mapping under `key` as a JSON object (the shape LiteLLM's jsonb columns have).
fn json_object(
    s: &Section<'_>,
    key: &str,
    required: bool,
    diag: &mut Diagnostics,
) -> Option<serde_json::Map<String, serde_json::Value>> {
    let Some(value) = s.value(key) else {
        if required {
            diag.error(s.path_of(key), "required");
        }
        return None;
    };
    match serde_json::to_value(value) {
        Ok(serde_json::Value::Object(map)) => Some(map),
        _ => {
            diag.error(
                s.path_of(key),
                "expected a mapping of field names to values",
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::cipher::{encrypt, Format};
    use super::super::Secret;
    use super::*;

    fn store(text: &str, keys: Option<Keys>) -> (tempfile::TempDir, LocalStore) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("credentials.yaml");
        std::fs::write(&path, text).expect("write");
        let targets = Arc::new(crate::upstream::test_targets());
        (dir, LocalStore::new(&path, keys, targets))
    }

    #[test]
    fn loads_encrypted_and_env_entries_and_reports_bad_ones_by_name() {
        let keys = Keys::derive(&Secret::new("salt".into()));
        let text = format!(
            "credential_list:\n\
             - credential_name: enc\n  credential_values: {{ api_key: \"{}\" }}\n  credential_info: {{ custom_llm_provider: openai }}\n\
             - credential_name: env\n  credential_values: {{ api_key: os.environ/TEST_KEY }}\n\
             - credential_name: plain\n  credential_values: {{ api_key: sk-plaintext }}\n\
             - credential_name: unset\n  credential_values: {{ api_key: os.environ/UNSET_VAR }}\n",
            encrypt("sk-enc", Format::V3, &keys)
        );
        let (_dir, store) = store(&text, Some(keys));
        let env = |n: &str| (n == "TEST_KEY").then(|| "sk-env".to_string());
        let outcome = store.load_with_env(&env).expect("structurally valid");
        let mut names: Vec<_> = outcome
            .credentials
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        names.sort();
        assert_eq!(names, ["enc", "env"]);
        let failures = outcome.failure_lines();
        assert_eq!(failures.len(), 2);
        assert!(
            failures[0].starts_with("credential plain: api_key: cannot decrypt"),
            "{failures:?}"
        );
        assert!(
            failures[1].starts_with("credential unset: api_key: environment variable UNSET_VAR")
        );
        assert!(!failures.join(" ").contains("sk-plaintext"));
    }

    #[test]
    fn structural_errors_are_all_listed() {
        let text = "credential_list:\n- credential_values: 3\n  extra: 1\n- credential_name: a\n  credential_values: {}\n- credential_name: a\n  credential_values: {}\n";
        let (_dir, store) = store(text, None);
        let err = store.load_with_env(&|_| None).unwrap_err().to_string();
        for expected in [
            "credential_list[0].extra",
            "credential_list[0].credential_name",
            "credential_list[0].credential_values",
            "credential_list[2].credential_name",
        ] {
            assert!(err.contains(expected), "missing {expected} in {err}");
        }
    }

    #[test]
    fn model_list_reads_as_litellm_config_yaml_with_keys_never_plain() {
        let text = "credential_list:\n\
             - credential_name: shared\n  credential_values: { api_key: os.environ/SHARED_KEY }\n\
             model_list:\n\
             - model_name: gpt\n  litellm_params: { model: openai/gpt-4o, api_key: os.environ/GPT_KEY, weight: 2 }\n\
             - model_name: gpt\n  litellm_params: { model: azure/dep, api_base: \"https://example.openai.azure.com\", api_version: \"2024-10-21\", litellm_credential_name: shared }\n  model_info: { id: azure-1 }\n\
             - model_name: leaky\n  litellm_params: { model: openai/x, api_key: sk-plain-in-file }\n";
        let (_dir, store) = store(text, None);
        let env = |n: &str| match n {
            "SHARED_KEY" => Some("sk-shared".to_string()),
            "GPT_KEY" => Some("sk-gpt".to_string()),
            _ => None,
        };
        let outcome = store.load_with_env(&env).expect("structurally valid");
        let gpt = &outcome.models["gpt"];
        let ids: Vec<&str> = gpt.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["gpt-1", "azure-1"]);
        assert_eq!(gpt[0].credential.api_key.expose(), "sk-gpt");
        assert_eq!((gpt[0].model.as_str(), gpt[0].weight), ("gpt-4o", 2.0));
        assert_eq!(gpt[1].credential.api_key.expose(), "sk-shared");
        assert_eq!(gpt[1].provider, "azure");
        assert_eq!(gpt[1].credential.api_version.as_deref(), Some("2024-10-21"));
        let failures = outcome.failure_lines().join("\n");
        assert!(
            failures.contains("model leaky: deployment leaky-1: api_key"),
            "{failures}"
        );
        assert!(!failures.contains("sk-plain-in-file"));
    }
}
