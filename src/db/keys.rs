//! SQL over LiteLLM's virtual keys and teams (`"LiteLLM_VerificationToken"`,
//! `"LiteLLM_TeamTable"`), read only when `access.litellm_keys` is on. Only the columns the
//! sidecar enforces are read; `token` is already LiteLLM's SHA-256 digest of the key, never the
//! key itself.

use serde::{Deserialize, Serialize};
use tokio_postgres::GenericClient;

use super::sql::table;
use super::DbError;

/// LiteLLM's virtual keys.
pub const KEYS_TABLE: &str = "LiteLLM_VerificationToken";
/// LiteLLM's teams.
pub const TEAMS_TABLE: &str = "LiteLLM_TeamTable";

/// The columns of the key table whose change must reach the sidecars at once (what a
/// `NOTIFY` trigger watches: not `spend`, which LiteLLM updates all the time; a key's spend
/// crossing its budget is watched on its own).
pub const KEY_COLUMNS: &str =
    "token, key_alias, models, expires, blocked, max_budget, team_id, rpm_limit, tpm_limit, user_id";
/// The same for the team table.
pub const TEAM_COLUMNS: &str = "team_id, models, blocked, max_budget";

/// One virtual key as the sidecar enforces it; on the fan-out wire under LiteLLM's column
/// names (the digest, never the key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyRow {
    /// `token`: the SHA-256 hex digest of the key.
    pub token: String,
    /// `key_alias`.
    #[serde(rename = "key_alias")]
    pub alias: Option<String>,
    /// `models` the key may call (empty: any the team allows).
    pub models: Vec<String>,
    /// `expires`, in seconds since the Unix epoch (UTC).
    pub expires: Option<f64>,
    /// `blocked`.
    pub blocked: bool,
    /// `max_budget`.
    pub max_budget: Option<f64>,
    /// `spend` as LiteLLM last recorded it.
    pub spend: f64,
    /// `team_id`.
    pub team_id: Option<String>,
    /// `rpm_limit`: requests per minute, per sidecar instance.
    pub rpm_limit: Option<i64>,
    /// `tpm_limit`: tokens per minute, per sidecar instance.
    pub tpm_limit: Option<i64>,
    /// `user_id`: the LiteLLM user the key's spend is also added to.
    pub user_id: Option<String>,
}

/// One team as the sidecar enforces it (on the fan-out wire under LiteLLM's column names).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TeamRow {
    /// `team_id`.
    #[serde(rename = "team_id")]
    pub id: String,
    /// `models` the team's keys may call (empty: any).
    pub models: Vec<String>,
    /// `blocked`.
    pub blocked: bool,
    /// `max_budget`.
    pub max_budget: Option<f64>,
    /// `spend`.
    pub spend: f64,
}

/// Every virtual key.
pub async fn fetch_keys(client: &impl GenericClient, schema: &str) -> Result<Vec<KeyRow>, DbError> {
    let sql = format!(
        "SELECT token, key_alias, coalesce(models, '{{}}')::text[], \
           extract(epoch FROM expires)::float8, coalesce(blocked, false), max_budget::float8, \
           coalesce(spend, 0)::float8, team_id, rpm_limit::int8, tpm_limit::int8, user_id FROM {}",
        table(schema, KEYS_TABLE)
    );
    let rows = client
        .query(&sql, &[])
        .await
        .map_err(|e| DbError::query("cannot read LiteLLM's key table", &e))?;
    Ok(rows
        .iter()
        .map(|r| KeyRow {
            token: r.get(0),
            alias: r.get(1),
            models: r.get(2),
            expires: r.get(3),
            blocked: r.get(4),
            max_budget: r.get(5),
            spend: r.get(6),
            team_id: r.get(7),
            rpm_limit: r.get(8),
            tpm_limit: r.get(9),
            user_id: r.get(10),
        })
        .collect())
}

/// Every team.
pub async fn fetch_teams(
    client: &impl GenericClient,
    schema: &str,
) -> Result<Vec<TeamRow>, DbError> {
    let sql = format!(
        "SELECT team_id, coalesce(models, '{{}}')::text[], coalesce(blocked, false), \
           max_budget::float8, coalesce(spend, 0)::float8 FROM {}",
        table(schema, TEAMS_TABLE)
    );
    let rows = client
        .query(&sql, &[])
        .await
        .map_err(|e| DbError::query("cannot read LiteLLM's team table", &e))?;
    Ok(rows
        .iter()
        .map(|r| TeamRow {
            id: r.get(0),
            models: r.get(1),
            blocked: r.get(2),
            max_budget: r.get(3),
            spend: r.get(4),
        })
        .collect())
}

/// The part of the change digest the key and team tables add (spend included, so a budget
/// reached is seen at the next full check even without triggers).
pub fn fingerprint_sql(schema: &str) -> String {
    format!(
        "coalesce((SELECT string_agg(token || E'\\x1f' || row({KEY_COLUMNS})::text || E'\\x1f' \
           || coalesce(spend, 0)::text, E'\\x1e' ORDER BY token) FROM {k}), '') || E'\\x1d' || \
         coalesce((SELECT string_agg(team_id || E'\\x1f' || row({TEAM_COLUMNS})::text || E'\\x1f' \
           || coalesce(spend, 0)::text, E'\\x1e' ORDER BY team_id) FROM {t}), '')",
        k = table(schema, KEYS_TABLE),
        t = table(schema, TEAMS_TABLE),
    )
}

/// Triggers that bump the change version (and `NOTIFY`) when a key or team is added, removed
/// or changed in what the sidecar enforces, or when its spend reaches its budget; `function` is
/// the trigger function of `litellm::install_notify`. Spend-only updates, which LiteLLM makes
/// all the time, fire nothing.
pub fn trigger_sql(schema: &str, trigger: &str, function: &str) -> String {
    let mut sql = String::new();
    for (t, columns) in [(KEYS_TABLE, KEY_COLUMNS), (TEAMS_TABLE, TEAM_COLUMNS)] {
        let target = table(schema, t);
        let budget = format!("{trigger}_budget");
        sql += &format!(
            "DROP TRIGGER IF EXISTS {trigger} ON {target}; \
             CREATE TRIGGER {trigger} AFTER INSERT OR DELETE OR TRUNCATE OR UPDATE OF {columns} \
               ON {target} FOR EACH STATEMENT EXECUTE FUNCTION {function}(); \
             DROP TRIGGER IF EXISTS {budget} ON {target}; \
             CREATE TRIGGER {budget} AFTER UPDATE OF spend ON {target} FOR EACH ROW \
               WHEN (NEW.max_budget IS NOT NULL AND NEW.spend >= NEW.max_budget \
                 AND OLD.spend < OLD.max_budget) EXECUTE FUNCTION {function}();"
        );
    }
    sql
}

/// Removes what [`trigger_sql`] installed.
pub fn drop_trigger_sql(schema: &str, trigger: &str) -> String {
    let mut sql = String::new();
    for t in [KEYS_TABLE, TEAMS_TABLE] {
        let target = table(schema, t);
        sql += &format!(
            "DROP TRIGGER IF EXISTS {trigger} ON {target}; \
             DROP TRIGGER IF EXISTS {trigger}_budget ON {target};"
        );
    }
    sql
}
