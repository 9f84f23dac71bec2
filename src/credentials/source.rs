//! The seam every credential source implements (the local file, LiteLLM's Postgres tables, a
//! fan-out watcher), what one load of a source produces, and why a source could not be read.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;

use super::models::Deployment;
use super::Credential;
use crate::access::litellm_keys::KeyTable;
use crate::config::ConfigError;
use crate::db::DbError;

/// Why a source could not be read as a whole (the caller keeps its last good outcome).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The local store file cannot be read.
    #[error("{}: cannot read: {error}", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The local store file is not structurally valid: `FILE: N error(s)`, then one indented
    /// line per error.
    #[error("{}: {} error(s)\n{}", path.display(), errors.len(), indented(errors))]
    Malformed {
        /// The file.
        path: PathBuf,
        /// Every error, with its path in the file.
        errors: Vec<ConfigError>,
    },
    /// The database could not be read; the text names it (`host:port/dbname`) once.
    #[error("{}", located(at, error))]
    Database {
        /// The database, `host:port/dbname`.
        at: String,
        /// What went wrong.
        error: DbError,
    },
    /// A source implemented outside this module (the fan-out watcher) with an error type of
    /// its own, boxed so that `credentials` does not depend on it.
    #[error(transparent)]
    External(Box<dyn std::error::Error + Send + Sync>),
}

/// One line per error, each indented by two spaces.
fn indented(errors: &[ConfigError]) -> String {
    let lines: Vec<String> = errors.iter().map(|e| format!("  {e}")).collect();
    lines.join("\n")
}

/// `error`'s text, prefixed with `database {at}: ` when it does not name the database itself.
fn located(at: &str, error: &DbError) -> String {
    if error.names_the_database() {
        error.to_string()
    } else {
        format!("database {at}: {error}")
    }
}

/// What one load of a source produced. Reasons name fields, never values.
#[derive(Debug, Default, Clone)]
pub struct LoadOutcome {
    /// Decrypted credentials.
    pub credentials: Vec<Arc<Credential>>,
    /// Credential names left out → why.
    pub credential_failures: HashMap<String, String>,
    /// Model aliases → deployments that loaded.
    pub models: HashMap<String, Vec<Arc<Deployment>>>,
    /// Model aliases with deployments left out → why (`model_id: reason`, joined by `; `).
    pub model_failures: HashMap<String, String>,
    /// Rows read in all.
    pub rows: usize,
    /// Rows that failed authentication (the signature of a wrong salt key when it is all of them).
    pub rows_failing_authentication: usize,
    /// LiteLLM's virtual keys and teams, from a source that reads them.
    pub litellm_keys: Option<Arc<KeyTable>>,
}

impl LoadOutcome {
    /// Every failure as a log-ready line, `name: reason`, sorted.
    pub fn failure_lines(&self) -> Vec<String> {
        let mut lines: Vec<String> = self
            .credential_failures
            .iter()
            .map(|(n, r)| format!("credential {n}: {r}"))
            .chain(
                self.model_failures
                    .iter()
                    .map(|(n, r)| format!("model {n}: {r}")),
            )
            .collect();
        lines.sort();
        lines
    }

    /// Whether every row failed authentication: the salt key is almost certainly wrong.
    pub fn wrong_key_suspected(&self) -> bool {
        self.rows > 0 && self.rows_failing_authentication == self.rows
    }

    /// Keeps the last good value of every credential or model that loaded in `previous` but
    /// fails now (a refresh never replaces a working key with nothing); deleted entries, which
    /// are absent rather than failing, are dropped. Returns the names kept this way.
    pub fn keep_last_good(&mut self, previous: &LoadOutcome) -> Vec<String> {
        let mut kept = Vec::new();
        for old in &previous.credentials {
            if self.credential_failures.contains_key(&old.name)
                && !self.credentials.iter().any(|c| c.name == old.name)
            {
                self.credentials.push(old.clone());
                kept.push(format!("credential {}", old.name));
            }
        }
        for (alias, old) in &previous.models {
            if self.model_failures.contains_key(alias) && !self.models.contains_key(alias) {
                self.models.insert(alias.clone(), old.clone());
                kept.push(format!("model {alias}"));
            }
        }
        kept
    }
}

/// A place credentials are loaded from.
#[async_trait]
pub trait CredentialSource: Send + Sync {
    /// A short description for logs, e.g. `local store conf/credentials.yaml` (no secrets).
    fn describe(&self) -> String;

    /// A cheap digest of the source's content: when it equals the last one, loading can be
    /// skipped. `None` when the source has no cheap digest.
    async fn fingerprint(&self) -> Result<Option<String>, LoadError> {
        Ok(None)
    }

    /// Starts the source's background work (a fan-out watcher's poller) on the current
    /// runtime. The refresher calls it from its long-lived loop and for the sources a reload
    /// brings in, never on the short-lived start-up runtime.
    fn start(&self) {}

    /// When the source last confirmed its content, for a source whose reads are answers
    /// received earlier (a fan-out watcher): the snapshot is as old as its oldest
    /// confirmation. `None`: a successful read confirms it now.
    fn confirmed_at(&self) -> Option<tokio::time::Instant> {
        None
    }

    /// Loads everything. `Err` means the source as a whole could not be read (the file is
    /// malformed, the database is down); the caller keeps its last good outcome.
    async fn load(&self) -> Result<LoadOutcome, LoadError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_errors_read_as_before_they_were_typed() {
        let path = PathBuf::from("conf/credentials.yaml");
        let gone = std::io::Error::new(std::io::ErrorKind::NotFound, "gone");
        let unreadable = LoadError::Unreadable {
            path: path.clone(),
            error: gone,
        };
        assert_eq!(
            unreadable.to_string(),
            "conf/credentials.yaml: cannot read: gone"
        );
        let error = |path: &str, message: &str| ConfigError {
            path: path.into(),
            message: message.into(),
        };
        let malformed = LoadError::Malformed {
            path,
            errors: vec![
                error("credential_list[0].extra", "unknown key"),
                error("credential_list[1].credential_name", "required"),
            ],
        };
        assert_eq!(
            malformed.to_string(),
            "conf/credentials.yaml: 2 error(s)\n  credential_list[0].extra: unknown key\n  \
             credential_list[1].credential_name: required"
        );
        let at = "db:5432/litellm".to_string();
        let query = DbError::Query {
            what: "cannot read the credentials table",
            reason: "ERROR 42P01: relation does not exist".into(),
        };
        assert_eq!(
            LoadError::Database {
                at: at.clone(),
                error: query
            }
            .to_string(),
            "database db:5432/litellm: cannot read the credentials table: ERROR 42P01: relation \
             does not exist"
        );
        let timeout = DbError::Timeout {
            at: at.clone(),
            timeout: std::time::Duration::from_secs(10),
        };
        assert_eq!(
            LoadError::Database { at, error: timeout }.to_string(),
            "database db:5432/litellm: no answer within 10s (query_timeout); reconnecting",
            "named once"
        );
    }
}
