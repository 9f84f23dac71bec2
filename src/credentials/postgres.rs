//! LiteLLM's Postgres tables as a credential source: `"LiteLLM_CredentialsTable"` rows become
//! credentials, `"LiteLLM_ProxyModelTable"` rows become model deployments.
//!
//! Everything goes over the sidecar's one connection ([`Session`]), which also `LISTEN`s.
//!
//! Change detection, so that an unchanged poll costs the database O(1) work:
//! - **version** (after `sidecar db install-notify`): each poll reads the one-row version table
//!   that the triggers bump in the same transaction as every change. Exact for every change the
//!   triggers see. It misses changes made with triggers off (`session_replication_role =
//!   replica`, as `pg_restore --disable-triggers` and logical replication apply do, or `ALTER
//!   TABLE … DISABLE TRIGGER`): those are caught by the full check below, so they are served at
//!   most `full_check_interval` late.
//! - **full**: both tables hashed by the database (O(rows); about 27 ms at 10,000 rows). Run
//!   every `full_check_interval` as the safety net, and on every poll while the version table
//!   is missing (a warning says so once).
//!
//! A load reads both tables in one `REPEATABLE READ` transaction (a consistent pair), decrypts
//! every row through [`rows::decode`], and hands the rows, still ciphertext, to its sink (the
//! fan-out hub) when this sidecar serves others.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tracing::warn;

use super::cipher::Keys;
use super::rows::{self, RowsSink, StoredRows};
use super::source::{CredentialSource, LoadError, LoadOutcome};
use crate::access::litellm_keys::KeyTable;
use crate::db::keys as db_keys;
use crate::db::litellm;
use crate::db::session::Session;
use crate::db::DbError;
use crate::metrics::CHANGE_CHECKS;
use crate::upstream::Targets;

/// What the source remembers between change checks.
#[derive(Default)]
struct ChangeCheck {
    /// The version table exists (as of the last full check).
    versioned: bool,
    /// The last full hash of both tables.
    digest: String,
    /// When that hash was taken.
    at: Option<Instant>,
    /// The missing version table was already warned about.
    warned: bool,
}

/// The Postgres credential source.
pub struct PostgresSource {
    session: Arc<Session>,
    keys: Option<Keys>,
    targets: Arc<Targets>,
    full_check_interval: Duration,
    check: Mutex<ChangeCheck>,
    sink: Option<Arc<dyn RowsSink>>,
    /// Also read LiteLLM's key and team tables (for `access.litellm_keys`, or for watchers).
    litellm_keys: bool,
    /// Also enforce them here (`access.litellm_keys`): the load's outcome holds the key table.
    enforce_keys: bool,
}

impl PostgresSource {
    /// A source over `session`, decrypting with `keys`, registering deployment upstreams in
    /// `targets`, hashing both tables at least every `full_check_interval`, and handing what it
    /// reads to `sink` when set.
    pub fn new(
        session: Arc<Session>,
        keys: Option<Keys>,
        targets: Arc<Targets>,
        full_check_interval: Duration,
        sink: Option<Arc<dyn RowsSink>>,
    ) -> PostgresSource {
        PostgresSource {
            session,
            keys,
            targets,
            full_check_interval,
            check: Mutex::new(ChangeCheck::default()),
            sink,
            litellm_keys: false,
            enforce_keys: false,
        }
    }

    /// Also reads LiteLLM's virtual keys and teams, in the same transaction as the rest and in
    /// the change digest, when this instance enforces them (`enforce`: `access.litellm_keys`)
    /// or serves them to watchers (`serve`: a fan-out grant names them).
    pub fn with_litellm_keys(mut self, enforce: bool, serve: bool) -> PostgresSource {
        self.litellm_keys = enforce || serve;
        self.enforce_keys = enforce;
        self
    }

    fn check(&self) -> std::sync::MutexGuard<'_, ChangeCheck> {
        self.check.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `version/digest`: changes when the triggers saw a change or the last full hash did.
    async fn read_fingerprint(&self) -> Result<String, DbError> {
        let client = self.session.client().await?;
        let schema = &self.session.database().schema;
        let due = {
            let check = self.check();
            !check.versioned
                || check
                    .at
                    .is_none_or(|at| at.elapsed() >= self.full_check_interval)
        };
        if due {
            self.full_check(&client).await?;
        }
        if !self.check().versioned {
            return Ok(format!("-/{}", self.check().digest));
        }
        CHANGE_CHECKS.with_label_values(&["version"]).inc();
        match litellm::read_version(&*client, schema).await? {
            Some(version) => Ok(format!("{version}/{}", self.check().digest)),
            None => {
                // Uninstalled since the last full check: hash now, and every poll from here.
                self.full_check(&client).await?;
                Ok(format!("-/{}", self.check().digest))
            }
        }
    }

    async fn full_check(&self, client: &tokio_postgres::Client) -> Result<(), DbError> {
        let schema = &self.session.database().schema;
        let versioned = litellm::has_version_table(client, schema).await?;
        let blocked = litellm::has_blocked_column(client, schema).await?;
        let digest = litellm::fingerprint(client, schema, blocked, self.litellm_keys).await?;
        CHANGE_CHECKS.with_label_values(&["full"]).inc();
        let mut check = self.check();
        if !versioned && !check.warned {
            warn!(
                "credentials: {}: no change-version table (run `sidecar db install-notify`); \
                 every poll hashes both tables in full, a cost that grows with the rows",
                self.describe()
            );
        }
        *check = ChangeCheck {
            versioned,
            digest,
            at: Some(Instant::now()),
            warned: !versioned,
        };
        Ok(())
    }

    async fn read_rows(&self) -> Result<StoredRows, DbError> {
        // The transaction has the connection to itself (the spend writer shares it).
        let _exclusive = self.session.exclusive().await;
        let client = self.session.client().await?;
        let schema = &self.session.database().schema;
        client
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(|e| DbError::query("cannot start the read transaction", &e))?;
        let blocked = litellm::has_blocked_column(&*client, schema).await?;
        let credentials = litellm::fetch_credentials(&*client, schema).await?;
        let models = litellm::fetch_models(&*client, schema, blocked).await?;
        let (keys, teams) = if self.litellm_keys {
            let keys = db_keys::fetch_keys(&*client, schema).await?;
            (keys, db_keys::fetch_teams(&*client, schema).await?)
        } else {
            (Vec::new(), Vec::new())
        };
        client
            .batch_execute("COMMIT")
            .await
            .map_err(|e| DbError::query("cannot end the read transaction", &e))?;
        Ok(StoredRows {
            credentials,
            models,
            keys,
            teams,
        })
    }

    /// `error`, with the database it happened at.
    fn located(&self, error: DbError) -> LoadError {
        LoadError::Database {
            at: self.session.database().describe().to_string(),
            error,
        }
    }
}

#[async_trait]
impl CredentialSource for PostgresSource {
    fn describe(&self) -> String {
        let db = self.session.database();
        format!("database {} (schema {})", db.describe(), db.schema)
    }

    async fn fingerprint(&self) -> Result<Option<String>, LoadError> {
        self.session
            .deadline(self.read_fingerprint())
            .await
            .map(Some)
            .map_err(|e| self.located(e))
    }

    async fn load(&self) -> Result<LoadOutcome, LoadError> {
        let rows = self
            .session
            .deadline(self.read_rows())
            .await
            .map_err(|e| self.located(e))?;
        let mut outcome = rows::decode(&rows, self.keys.as_ref(), &self.targets);
        if self.enforce_keys {
            let table = KeyTable::new(rows.keys.clone(), rows.teams.clone());
            outcome.litellm_keys = Some(Arc::new(table));
        }
        if let Some(sink) = &self.sink {
            sink.publish(rows);
        }
        Ok(outcome)
    }
}
