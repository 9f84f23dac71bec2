//! LiteLLM's Postgres tables as a credential source: `"LiteLLM_CredentialsTable"` rows become
//! credentials, `"LiteLLM_ProxyModelTable"` rows become model deployments.
//!
//! Each load reads both tables on one pooled connection, decrypts every row, and reports rows
//! that fail by name (fail closed: a row that does not decrypt is left out, never used as if its
//! ciphertext were the key). A digest computed by the database lets an unchanged refresh skip
//! the transfer and the decryption.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use deadpool_postgres::Pool;

use super::cipher::Keys;
use super::models::deployment;
use super::source::{CredentialSource, LoadOutcome};
use super::values::{ValueReader, AUTHENTICATION_FAILURE};
use crate::db::{litellm, Database};
use crate::upstream::Targets;

/// The Postgres credential source.
pub struct PostgresSource {
    db: Database,
    pool: Pool,
    keys: Option<Keys>,
    targets: Arc<Targets>,
}

impl PostgresSource {
    /// A source over `db`, decrypting with `keys`, registering deployment upstreams in `targets`.
    pub fn new(
        db: Database,
        keys: Option<Keys>,
        targets: Arc<Targets>,
    ) -> Result<PostgresSource, String> {
        let pool = db.pool()?;
        Ok(PostgresSource {
            db,
            pool,
            keys,
            targets,
        })
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, String> {
        self.pool
            .get()
            .await
            .map_err(|e| format!("database {} unreachable: {e}", self.db.describe()))
    }
}

#[async_trait]
impl CredentialSource for PostgresSource {
    fn describe(&self) -> String {
        format!(
            "database {} (schema {})",
            self.db.describe(),
            self.db.schema
        )
    }

    async fn fingerprint(&self) -> Result<Option<String>, String> {
        self.read_fingerprint().await.map_err(|e| self.located(e))
    }

    async fn load(&self) -> Result<LoadOutcome, String> {
        self.read_all().await.map_err(|e| self.located(e))
    }
}

impl PostgresSource {
    fn located(&self, error: String) -> String {
        if error.starts_with("database ") {
            error
        } else {
            format!("database {}: {error}", self.db.describe())
        }
    }

    async fn read_fingerprint(&self) -> Result<Option<String>, String> {
        let client = self.client().await?;
        let blocked = litellm::has_blocked_column(&**client, &self.db.schema).await?;
        litellm::fingerprint(&**client, &self.db.schema, blocked)
            .await
            .map(Some)
    }

    async fn read_all(&self) -> Result<LoadOutcome, String> {
        let client = self.client().await?;
        let schema = &self.db.schema;
        let blocked = litellm::has_blocked_column(&**client, schema).await?;
        let credential_rows = litellm::fetch_credentials(&**client, schema).await?;
        let model_rows = litellm::fetch_models(&**client, schema, blocked).await?;
        drop(client);

        let reader = ValueReader {
            keys: self.keys.as_ref(),
            env: None,
        };
        let mut outcome = LoadOutcome {
            rows: credential_rows.len() + model_rows.len(),
            ..LoadOutcome::default()
        };
        let mut by_name = HashMap::new();
        for row in credential_rows {
            let loaded = match (row.values.as_object(), row.info.as_ref()) {
                (Some(values), info) => {
                    reader.credential(&row.name, values, info.and_then(|i| i.as_object()))
                }
                (None, _) => Err("credential_values is not a JSON object".to_string()),
            };
            match loaded {
                Ok(c) => {
                    by_name.insert(row.name, Arc::new(c));
                }
                Err(reason) => {
                    outcome.rows_failing_authentication +=
                        usize::from(reason.contains(AUTHENTICATION_FAILURE));
                    outcome.credential_failures.insert(row.name, reason);
                }
            }
        }
        for row in model_rows {
            match deployment(&row, &reader, &by_name, &self.targets) {
                Ok(d) => outcome
                    .models
                    .entry(row.name)
                    .or_default()
                    .push(Arc::new(d)),
                Err(reason) => {
                    outcome.rows_failing_authentication +=
                        usize::from(reason.contains(AUTHENTICATION_FAILURE));
                    let entry = outcome.model_failures.entry(row.name).or_default();
                    if !entry.is_empty() {
                        entry.push_str("; ");
                    }
                    entry.push_str(&format!("deployment {}: {reason}", row.id));
                }
            }
        }
        outcome.credentials = by_name.into_values().collect();
        Ok(outcome)
    }
}
