//! SQL over LiteLLM's two tables, `"LiteLLM_CredentialsTable"` and `"LiteLLM_ProxyModelTable"`
//! (names are quoted and case-sensitive), in a configurable schema.
//!
//! Reads return rows as stored (ciphertext included); decryption is the credentials module's
//! job. The NOTIFY triggers send only the table name and the new change version, never a row.
//!
//! Change detection: `db install-notify` installs a one-row version table that the triggers
//! bump in the same transaction as every change to either table, so "has anything changed?" is
//! one primary-key read ([`read_version`]), whatever the number of rows. [`fingerprint`] hashes
//! both tables in full: the slow check for changes the triggers did not see.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_postgres::error::SqlState;
use tokio_postgres::GenericClient;

use super::sql::table;
use super::DbError;

/// LiteLLM's credentials table.
pub const CREDENTIALS_TABLE: &str = "LiteLLM_CredentialsTable";
/// LiteLLM's model deployments table.
pub const MODELS_TABLE: &str = "LiteLLM_ProxyModelTable";
/// Name of the trigger (on each table) and prefix of the function `db install-notify` creates.
const NOTIFY_TRIGGER: &str = "sidecar_notify_change";
/// The one-row table (`id = 1`, `version`, `changed_at`) the triggers bump on every change.
pub const VERSION_TABLE: &str = "sidecar_change_version";

/// One row of the credentials table, as stored (the fan-out wire carries it as it is).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CredentialRow {
    /// `credential_name`.
    pub name: String,
    /// `credential_values` (each string encrypted).
    pub values: Value,
    /// `credential_info` (plain).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<Value>,
}

/// One row of the model table, as stored (the fan-out wire carries it as it is).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelRow {
    /// `model_id`.
    pub id: String,
    /// `model_name`, the public alias.
    pub name: String,
    /// `litellm_params`: an object, or a string whose content is a JSON object.
    pub params: Value,
    /// `model_info` (plain, not encrypted): an object or a string holding one; the sidecar
    /// reads its prices and `base_model`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<Value>,
}

/// Whether `db install-notify` created the version table in `schema`.
pub async fn has_version_table(client: &impl GenericClient, schema: &str) -> Result<bool, DbError> {
    let row = client
        .query_one(
            "SELECT to_regclass($1) IS NOT NULL",
            &[&table(schema, VERSION_TABLE)],
        )
        .await
        .map_err(|e| DbError::query("cannot look for the change-version table", &e))?;
    Ok(row.get(0))
}

/// Whether LiteLLM's key and team tables exist in `schema` (a database LiteLLM has migrated
/// has them; a bare credentials-only schema may not).
pub async fn has_key_tables(client: &impl GenericClient, schema: &str) -> Result<bool, DbError> {
    let row = client
        .query_one(
            "SELECT to_regclass($1) IS NOT NULL AND to_regclass($2) IS NOT NULL",
            &[
                &table(schema, super::keys::KEYS_TABLE),
                &table(schema, super::keys::TEAMS_TABLE),
            ],
        )
        .await
        .map_err(|e| DbError::query("cannot look for LiteLLM's key tables", &e))?;
    Ok(row.get(0))
}

/// The change version the triggers keep; `None` when the table is gone (uninstalled since).
pub async fn read_version(
    client: &impl GenericClient,
    schema: &str,
) -> Result<Option<i64>, DbError> {
    let sql = format!(
        "SELECT version FROM {} WHERE id = 1",
        table(schema, VERSION_TABLE)
    );
    match client.query_opt(&sql, &[]).await {
        Ok(row) => Ok(Some(row.map_or(0, |r| r.get(0)))),
        Err(e) if e.code() == Some(&SqlState::UNDEFINED_TABLE) => Ok(None),
        Err(e) => Err(DbError::query("cannot read the change version", &e)),
    }
}

/// Whether the model table has the `blocked` column (newer LiteLLM schemas).
pub async fn has_blocked_column(
    client: &impl GenericClient,
    schema: &str,
) -> Result<bool, DbError> {
    let row = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM information_schema.columns \
             WHERE table_schema = $1 AND table_name = $2 AND column_name = 'blocked')",
            &[&schema, &MODELS_TABLE],
        )
        .await
        .map_err(|e| DbError::query("cannot inspect the model table", &e))?;
    Ok(row.get(0))
}

/// A digest of everything the sidecar reads from both tables: when it is unchanged, a refresh
/// has nothing to do (the database does the hashing; one short row crosses the network).
/// With `keys`, LiteLLM's key and team tables are part of the digest.
pub async fn fingerprint(
    client: &impl GenericClient,
    schema: &str,
    blocked: bool,
    keys: bool,
) -> Result<String, DbError> {
    let blocked_expr = if blocked {
        "coalesce(blocked::text, '')"
    } else {
        "''"
    };
    let sql = format!(
        "SELECT md5(coalesce((SELECT string_agg(credential_name || E'\\x1f' || credential_values::text \
           || E'\\x1f' || coalesce(credential_info::text, ''), E'\\x1e' ORDER BY credential_name) FROM {c}), '') \
           || E'\\x1d' || coalesce((SELECT string_agg(model_id || E'\\x1f' || model_name || E'\\x1f' \
           || litellm_params::text || E'\\x1f' || coalesce(model_info::text, '') || E'\\x1f' || {blocked_expr}, E'\\x1e' ORDER BY model_id) FROM {m}), '') \
           || E'\\x1c' || {keys_expr})",
        c = table(schema, CREDENTIALS_TABLE),
        m = table(schema, MODELS_TABLE),
        keys_expr = if keys { super::keys::fingerprint_sql(schema) } else { "''".to_string() },
    );
    let row = client
        .query_one(&sql, &[])
        .await
        .map_err(|e| DbError::query("cannot read LiteLLM's tables", &e))?;
    Ok(row.get(0))
}

/// Every credential row.
pub async fn fetch_credentials(
    client: &impl GenericClient,
    schema: &str,
) -> Result<Vec<CredentialRow>, DbError> {
    let sql = format!(
        "SELECT credential_name, credential_values, credential_info FROM {} ORDER BY credential_name",
        table(schema, CREDENTIALS_TABLE)
    );
    let rows = client
        .query(&sql, &[])
        .await
        .map_err(|e| DbError::query("cannot read the credentials table", &e))?;
    Ok(rows
        .iter()
        .map(|r| CredentialRow {
            name: r.get(0),
            values: r.get(1),
            info: r.get(2),
        })
        .collect())
}

/// Every model row that is not blocked.
pub async fn fetch_models(
    client: &impl GenericClient,
    schema: &str,
    blocked: bool,
) -> Result<Vec<ModelRow>, DbError> {
    let filter = if blocked {
        " WHERE blocked IS NOT TRUE"
    } else {
        ""
    };
    let sql = format!(
        "SELECT model_id, model_name, litellm_params, model_info FROM {}{filter} ORDER BY model_id",
        table(schema, MODELS_TABLE)
    );
    let rows = client
        .query(&sql, &[])
        .await
        .map_err(|e| DbError::query("cannot read the model table", &e))?;
    Ok(rows
        .iter()
        .map(|r| ModelRow {
            id: r.get(0),
            name: r.get(1),
            params: r.get(2),
            info: r.get(3),
        })
        .collect())
}

/// Creates or replaces a credential row the way LiteLLM writes it (new uuid id on insert;
/// `created_by`/`updated_by` set to `actor`).
pub async fn upsert_credential(
    client: &impl GenericClient,
    schema: &str,
    name: &str,
    values: &Value,
    info: &Value,
    actor: &str,
) -> Result<(), DbError> {
    let sql = format!(
        "INSERT INTO {} (credential_id, credential_name, credential_values, credential_info, \
           created_at, created_by, updated_at, updated_by) \
         VALUES ($1, $2, $3, $4, now(), $5, now(), $5) \
         ON CONFLICT (credential_name) DO UPDATE SET credential_values = EXCLUDED.credential_values, \
           credential_info = EXCLUDED.credential_info, updated_at = now(), updated_by = EXCLUDED.updated_by",
        table(schema, CREDENTIALS_TABLE)
    );
    let id = uuid::Uuid::new_v4().to_string();
    client
        .execute(&sql, &[&id, &name, values, info, &actor])
        .await
        .map_err(|e| DbError::query("cannot write the credential", &e))?;
    Ok(())
}

/// Deletes a credential row; `false` when there was none.
pub async fn delete_credential(
    client: &impl GenericClient,
    schema: &str,
    name: &str,
) -> Result<bool, DbError> {
    let sql = format!(
        "DELETE FROM {} WHERE credential_name = $1",
        table(schema, CREDENTIALS_TABLE)
    );
    let n = client
        .execute(&sql, &[&name])
        .await
        .map_err(|e| DbError::query("cannot delete the credential", &e))?;
    Ok(n > 0)
}

/// Name, provider and last update of every credential (never values).
pub async fn list_credentials(
    client: &impl GenericClient,
    schema: &str,
) -> Result<Vec<(String, String, String)>, DbError> {
    let sql = format!(
        "SELECT credential_name, coalesce(credential_info->>'custom_llm_provider', '-'), \
           coalesce(to_char(updated_at, 'YYYY-MM-DD HH24:MI:SS'), '-') FROM {} ORDER BY credential_name",
        table(schema, CREDENTIALS_TABLE)
    );
    let rows = client
        .query(&sql, &[])
        .await
        .map_err(|e| DbError::query("cannot list credentials", &e))?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
}

/// Replaces the stored values of a credential row (key rotation).
pub async fn update_credential_values(
    client: &impl GenericClient,
    schema: &str,
    name: &str,
    values: &Value,
    actor: &str,
) -> Result<(), DbError> {
    let sql = format!(
        "UPDATE {} SET credential_values = $2, updated_at = now(), updated_by = $3 WHERE credential_name = $1",
        table(schema, CREDENTIALS_TABLE)
    );
    client
        .execute(&sql, &[&name, values, &actor])
        .await
        .map_err(|e| DbError::query("cannot update the credential", &e))?;
    Ok(())
}

/// Replaces the stored `litellm_params` of a model row (key rotation).
pub async fn update_model_params(
    client: &impl GenericClient,
    schema: &str,
    id: &str,
    params: &Value,
    actor: &str,
) -> Result<(), DbError> {
    let sql = format!(
        "UPDATE {} SET litellm_params = $2, updated_at = now(), updated_by = $3 WHERE model_id = $1",
        table(schema, MODELS_TABLE)
    );
    client
        .execute(&sql, &[&id, params, &actor])
        .await
        .map_err(|e| DbError::query("cannot update the model", &e))?;
    Ok(())
}

/// Installs (or replaces) the change-version table and the triggers that bump it and
/// `NOTIFY channel` (payload: table name and new version) after any insert, update, delete or
/// truncate on either table, and on LiteLLM's key and team tables when they exist (changes to
/// what the sidecar enforces, and a spend reaching its budget; see `keys::trigger_sql`).
/// Idempotent. The trigger function runs with its owner's rights
/// (`SECURITY DEFINER`), so LiteLLM's own role needs no grant on the version table; everyone may
/// read the version (it is a counter, nothing more).
pub async fn install_notify(
    client: &impl GenericClient,
    schema: &str,
    channel: &str,
) -> Result<(), DbError> {
    let function = table(schema, NOTIFY_TRIGGER);
    let version = table(schema, VERSION_TABLE);
    let channel_literal = channel.replace('\'', "''");
    let mut sql = format!(
        "CREATE TABLE IF NOT EXISTS {version} (id integer PRIMARY KEY CHECK (id = 1), \
           version bigint NOT NULL, changed_at timestamptz NOT NULL DEFAULT now()); \
         INSERT INTO {version} (id, version) VALUES (1, 0) ON CONFLICT (id) DO NOTHING; \
         GRANT SELECT ON {version} TO PUBLIC; \
         CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql \
           SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $body$ \
         DECLARE v bigint; \
         BEGIN \
           UPDATE {version} SET version = version + 1, changed_at = now() WHERE id = 1 \
             RETURNING version INTO v; \
           PERFORM pg_notify('{channel_literal}', TG_TABLE_NAME || ' ' || coalesce(v::text, '')); \
           RETURN NULL; \
         END $body$;"
    );
    for t in [CREDENTIALS_TABLE, MODELS_TABLE] {
        let target = table(schema, t);
        sql += &format!(
            "DROP TRIGGER IF EXISTS {NOTIFY_TRIGGER} ON {target}; \
             CREATE TRIGGER {NOTIFY_TRIGGER} AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {target} \
             FOR EACH STATEMENT EXECUTE FUNCTION {function}();"
        );
    }
    if has_key_tables(client, schema).await? {
        sql += &super::keys::trigger_sql(schema, NOTIFY_TRIGGER, &function);
    }
    client
        .batch_execute(&format!("BEGIN; {sql} COMMIT;"))
        .await
        .map_err(|e| DbError::query("cannot install the notify triggers", &e))
}

/// Removes what [`install_notify`] installed. Idempotent.
pub async fn uninstall_notify(client: &impl GenericClient, schema: &str) -> Result<(), DbError> {
    let mut sql = String::new();
    if has_key_tables(client, schema).await? {
        sql += &super::keys::drop_trigger_sql(schema, NOTIFY_TRIGGER);
    }
    for t in [CREDENTIALS_TABLE, MODELS_TABLE] {
        sql += &format!(
            "DROP TRIGGER IF EXISTS {NOTIFY_TRIGGER} ON {};",
            table(schema, t)
        );
    }
    sql += &format!(
        "DROP FUNCTION IF EXISTS {}(); DROP TABLE IF EXISTS {};",
        table(schema, NOTIFY_TRIGGER),
        table(schema, VERSION_TABLE)
    );
    client
        .batch_execute(&format!("BEGIN; {sql} COMMIT;"))
        .await
        .map_err(|e| DbError::query("cannot remove the notify triggers", &e))
}
