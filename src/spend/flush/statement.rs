//! The flush statement: which of LiteLLM's spend tables and columns this database has
//! ([`SpendTables::discover`]) and the one statement that writes a batch into them
//! ([`SpendTables::statement`]); see [`super`] for what it does.

use std::collections::{HashMap, HashSet};

use tokio_postgres::GenericClient;

use crate::db::sql::{quote_ident, table};
use crate::db::DbError;

/// The table that remembers written batches (pruned after a week).
pub const BATCHES_TABLE: &str = "Sidecar_SpendBatches";

/// The spend-log columns, as bound (`$10` on, in this order, each an array of this type):
/// the batch's `LogColumns` hold them.
const LOG_COLUMNS: [(&str, &str); 17] = [
    ("request_id", "text"),
    ("api_key", "text"),
    ("spend", "float8"),
    ("prompt_tokens", "int8"),
    ("completion_tokens", "int8"),
    ("start_ms", "int8"),
    ("end_ms", "int8"),
    ("first_byte_ms", "int8"),
    ("model", "text"),
    ("model_id", "text"),
    ("model_group", "text"),
    ("custom_llm_provider", "text"),
    ("api_base", "text"),
    ("user", "text"),
    ("team_id", "text"),
    ("end_user", "text"),
    ("success", "bool"),
];

/// The parameter of the first spend-log column.
const FIRST_LOG_PARAM: usize = 10;
/// The parameter of the ids of the watchers' batches the batch holds (after the log columns).
const ABSORBED_PARAM: usize = FIRST_LOG_PARAM + LOG_COLUMNS.len();

/// What the statement fails with when a watcher's batch it holds was written already: a text
/// no boolean can be read from, so the cast fails (SQLSTATE 22P02) and nothing is written. (No
/// quote in it: it is put in the statement as a literal.)
pub const ABSORBED_WRITTEN: &str = "sidecar: a watcher batch in this flush was written already";

/// The daily tables: (table, entity column, document).
const DAILY_TABLES: [(&str, &str, usize); 3] = [
    ("LiteLLM_DailyUserSpend", "user_id", 5),
    ("LiteLLM_DailyTeamSpend", "team_id", 6),
    ("LiteLLM_DailyEndUserSpend", "end_user_id", 7),
];

/// The tables the spend is written to, as this database has them.
#[derive(Debug, Clone)]
pub struct SpendTables {
    schema: String,
    columns: HashMap<String, HashSet<String>>,
    /// Each daily table's unique key (its columns, in index order).
    unique: HashMap<String, Vec<String>>,
}

impl SpendTables {
    /// Reads which of LiteLLM's spend tables and columns exist in `schema`, and makes the
    /// batch table when it is missing.
    pub async fn discover(
        client: &impl GenericClient,
        schema: &str,
    ) -> Result<SpendTables, DbError> {
        client
            .batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {} (batch_id TEXT PRIMARY KEY, \
                 written_at TIMESTAMPTZ NOT NULL DEFAULT now())",
                table(schema, BATCHES_TABLE)
            ))
            .await
            .map_err(|e| DbError::query("create the spend batch table", &e))?;
        let rows = client
            .query(
                "SELECT table_name::text, column_name::text FROM information_schema.columns \
                 WHERE table_schema = $1",
                &[&schema],
            )
            .await
            .map_err(|e| DbError::query("read the spend tables' columns", &e))?;
        let mut columns: HashMap<String, HashSet<String>> = HashMap::new();
        for row in rows {
            columns.entry(row.get(0)).or_default().insert(row.get(1));
        }
        let rows = client
            .query(
                "SELECT c.relname::text, array_agg(a.attname::text ORDER BY k.ord) \
                 FROM pg_index i \
                 JOIN pg_class c ON c.oid = i.indrelid \
                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                 CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) \
                 JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum \
                 WHERE n.nspname = $1 AND i.indisunique AND NOT i.indisprimary \
                 AND c.relname LIKE 'LiteLLM_Daily%' \
                 GROUP BY c.relname, i.indexrelid",
                &[&schema],
            )
            .await
            .map_err(|e| DbError::query("read the daily tables' unique keys", &e))?;
        let unique = rows
            .into_iter()
            .map(|row| (row.get::<_, String>(0), row.get::<_, Vec<String>>(1)))
            .collect();
        Ok(SpendTables {
            schema: schema.to_string(),
            columns,
            unique,
        })
    }

    fn has(&self, table: &str, column: &str) -> bool {
        self.columns.get(table).is_some_and(|c| c.contains(column))
    }

    /// The spend tables LiteLLM has and this database lacks (said once in the log).
    pub fn missing(&self) -> Vec<&'static str> {
        let mut missing: Vec<&'static str> = [
            "LiteLLM_VerificationToken",
            "LiteLLM_TeamTable",
            "LiteLLM_UserTable",
            "LiteLLM_TeamMembership",
            "LiteLLM_EndUserTable",
            "LiteLLM_SpendLogs",
        ]
        .into_iter()
        .filter(|t| !self.columns.contains_key(*t))
        .collect();
        missing.extend(
            DAILY_TABLES
                .iter()
                .map(|(t, ..)| *t)
                .filter(|t| self.daily_key(t).is_none()),
        );
        missing
    }

    fn t(&self, name: &str) -> String {
        table(&self.schema, name)
    }

    /// A daily table's unique key, when the table exists with one that covers its entity.
    fn daily_key(&self, name: &str) -> Option<&Vec<String>> {
        self.unique
            .get(name)
            .filter(|key| key.iter().any(|c| c == "date") && key.iter().any(|c| c == "api_key"))
    }

    /// The statement that writes a batch: `$1` the batch id, `$2`…`$9` the documents, `$10`…
    /// the spend-log columns in `LOG_COLUMNS` order, then the watchers' batch ids (see
    /// [`write`]). It returns one row: whether the batch was new.
    pub fn statement(&self, spend_logs: bool) -> String {
        // Every document is typed here, so that a part left out (its table missing) leaves no
        // parameter whose type the server cannot tell.
        let documents = (2..=9).map(|n| format!("${n}::jsonb AS d{n}"));
        let columns = LOG_COLUMNS
            .iter()
            .enumerate()
            .map(|(i, (_, ty))| format!("${n}::{ty}[] AS d{n}", n = FIRST_LOG_PARAM + i));
        let absorbed = format!("${ABSORBED_PARAM}::text[]");
        let mut parts = vec![format!(
            "typed AS (SELECT {}, {absorbed} AS absorbed)",
            documents.chain(columns).collect::<Vec<_>>().join(", ")
        )];
        parts.push(format!(
            "batch AS (INSERT INTO {} (batch_id) VALUES ($1) ON CONFLICT (batch_id) DO NOTHING \
             RETURNING batch_id)",
            self.t(BATCHES_TABLE)
        ));
        // The watchers' batches: all new, or the statement fails (the subquery keeps the cast
        // from being evaluated ahead of time).
        parts.push(format!(
            "absorbed AS (INSERT INTO {} (batch_id) SELECT unnest({absorbed}) FROM batch \
             ON CONFLICT (batch_id) DO NOTHING RETURNING batch_id)",
            self.t(BATCHES_TABLE)
        ));
        parts.push(format!(
            "guard AS (SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM batch) \
             OR (SELECT count(*) FROM absorbed) = cardinality({absorbed}) THEN true \
             ELSE (SELECT ('{ABSORBED_WRITTEN}: ' || count(*))::bool FROM absorbed) END AS ok)"
        ));
        parts.push(format!(
            "pruned AS (DELETE FROM {} WHERE written_at < now() - interval '7 days')",
            self.t(BATCHES_TABLE)
        ));
        let key_table = "LiteLLM_VerificationToken";
        if self.columns.contains_key(key_table) {
            let mut set = vec!["spend = t.spend + d.cost".to_string()];
            if self.has(key_table, "total_spend") {
                set.push("total_spend = t.total_spend + d.cost".into());
            }
            if self.has(key_table, "last_active") {
                set.push("last_active = now() AT TIME ZONE 'UTC'".into());
            }
            parts.push(format!(
                "keys AS (UPDATE {} t SET {} FROM jsonb_to_recordset($2::jsonb) \
                 AS d(token text, cost float8), batch WHERE t.token = d.token)",
                self.t(key_table),
                set.join(", ")
            ));
        }
        for (name, cte, id, param) in [
            ("LiteLLM_TeamTable", "teams", "team_id", 3),
            ("LiteLLM_UserTable", "users", "user_id", 4),
        ] {
            if self.columns.contains_key(name) {
                parts.push(format!(
                    "{cte} AS (UPDATE {} t SET spend = t.spend + d.cost FROM \
                     jsonb_to_recordset(${param}::jsonb) AS d({id} text, cost float8), batch \
                     WHERE t.{id} = d.{id})",
                    self.t(name)
                ));
            }
        }
        let members = "LiteLLM_TeamMembership";
        if self.columns.contains_key(members) && self.has("LiteLLM_TeamTable", "members_with_roles")
        {
            let total = self.has(members, "total_spend");
            parts.push(format!(
                "members AS (INSERT INTO {m} (user_id, team_id, spend{tc}) \
                 SELECT d.user_id, d.team_id, d.cost{tv} \
                 FROM jsonb_to_recordset($5::jsonb) AS d(user_id text, team_id text, cost float8), batch \
                 WHERE EXISTS (SELECT 1 FROM {teams} t WHERE t.team_id = d.team_id \
                   AND t.members_with_roles @> jsonb_build_array(jsonb_build_object('user_id', d.user_id))) \
                 OR EXISTS (SELECT 1 FROM {m} x WHERE x.user_id = d.user_id AND x.team_id = d.team_id) \
                 ON CONFLICT (user_id, team_id) DO UPDATE SET spend = {m}.spend + EXCLUDED.spend{tu})",
                m = self.t(members),
                teams = self.t("LiteLLM_TeamTable"),
                tc = if total { ", total_spend" } else { "" },
                tv = if total { ", d.cost" } else { "" },
                tu = if total {
                    format!(", total_spend = {}.total_spend + EXCLUDED.total_spend", self.t(members))
                } else {
                    String::new()
                },
            ));
        }
        let end_users = "LiteLLM_EndUserTable";
        if self.columns.contains_key(end_users) {
            parts.push(format!(
                "end_users AS (INSERT INTO {e} (user_id, spend) SELECT d.user_id, d.cost \
                 FROM jsonb_to_recordset($6::jsonb) AS d(user_id text, cost float8), batch \
                 ON CONFLICT (user_id) DO UPDATE SET spend = {e}.spend + EXCLUDED.spend)",
                e = self.t(end_users)
            ));
        }
        for (index, (name, entity, param)) in DAILY_TABLES.iter().enumerate() {
            if let Some(key) = self.daily_key(name) {
                parts.push(self.daily_part(index, name, entity, *param + 2, key));
            }
        }
        if spend_logs && self.columns.contains_key("LiteLLM_SpendLogs") {
            parts.push(self.logs_part());
        }
        format!(
            "WITH {} SELECT count(*) > 0 AND (SELECT ok FROM guard) FROM batch",
            parts.join(",\n")
        )
    }

    fn daily_part(
        &self,
        index: usize,
        name: &str,
        entity: &str,
        param: usize,
        key: &[String],
    ) -> String {
        const COUNTS: [&str; 7] = [
            "prompt_tokens",
            "completion_tokens",
            "cache_read_input_tokens",
            "cache_creation_input_tokens",
            "api_requests",
            "successful_requests",
            "failed_requests",
        ];
        let mut columns = vec![
            ("id", "gen_random_uuid()::text".to_string()),
            (entity, "d.entity".into()),
            ("date", "d.date".into()),
            ("api_key", "d.api_key".into()),
            ("model", "d.model".into()),
            ("model_group", "d.model_group".into()),
            ("custom_llm_provider", "d.custom_llm_provider".into()),
            ("mcp_namespaced_tool_name", "''".into()),
            ("endpoint", "d.endpoint".into()),
            ("spend", "d.spend".into()),
            ("updated_at", "now() AT TIME ZONE 'UTC'".into()),
        ];
        columns.extend(COUNTS.iter().map(|c| (*c, format!("d.{c}"))));
        columns.retain(|(c, _)| self.has(name, c));
        let added: Vec<String> = COUNTS
            .iter()
            .chain(["spend"].iter())
            .filter(|c| self.has(name, c))
            .map(|c| format!("{c} = t.{c} + EXCLUDED.{c}"))
            .chain(
                self.has(name, "updated_at")
                    .then(|| "updated_at = EXCLUDED.updated_at".to_string()),
            )
            .collect();
        format!(
            "daily{index} AS (INSERT INTO {t} AS t ({cols}) SELECT {exprs} \
             FROM jsonb_to_recordset(${param}::jsonb) AS d(entity text, date text, api_key text, \
             model text, model_group text, custom_llm_provider text, endpoint text, spend float8, \
             prompt_tokens int8, completion_tokens int8, cache_read_input_tokens int8, \
             cache_creation_input_tokens int8, api_requests int8, successful_requests int8, \
             failed_requests int8), batch \
             ON CONFLICT ({key}) DO UPDATE SET {added})",
            t = self.t(name),
            cols = column_list(&columns),
            exprs = value_list(&columns),
            key = key
                .iter()
                .map(|c| quote_ident(c))
                .collect::<Vec<_>>()
                .join(", "),
            added = added.join(", "),
        )
    }

    fn logs_part(&self) -> String {
        let name = "LiteLLM_SpendLogs";
        let at = |field: &str| format!("to_timestamp(d.{field} / 1000.0) AT TIME ZONE 'UTC'");
        let mut columns = vec![
            ("request_id", "d.request_id".to_string()),
            ("call_type", "'acompletion'".into()),
            ("api_key", "d.api_key".into()),
            ("spend", "d.spend".into()),
            (
                "total_tokens",
                "d.prompt_tokens + d.completion_tokens".into(),
            ),
            ("prompt_tokens", "d.prompt_tokens".into()),
            ("completion_tokens", "d.completion_tokens".into()),
            ("startTime", at("start_ms")),
            ("endTime", at("end_ms")),
            ("completionStartTime", at("first_byte_ms")),
            ("request_duration_ms", "d.end_ms - d.start_ms".into()),
            ("model", "d.model".into()),
            ("model_id", "d.model_id".into()),
            ("model_group", "d.model_group".into()),
            ("custom_llm_provider", "d.custom_llm_provider".into()),
            ("api_base", "d.api_base".into()),
            ("user", "d.user".into()),
            ("team_id", "d.team_id".into()),
            ("end_user", "d.end_user".into()),
            (
                "status",
                "CASE WHEN d.success THEN 'success' ELSE 'failure' END".into(),
            ),
            ("messages", "'{}'::jsonb".into()),
            ("response", "'{}'::jsonb".into()),
        ];
        columns.retain(|(c, _)| self.has(name, c));
        format!(
            "logs AS (INSERT INTO {t} ({cols}) SELECT {exprs} \
             FROM unnest({arrays}) AS d({names}), batch \
             ON CONFLICT (request_id) DO NOTHING)",
            arrays = LOG_COLUMNS
                .iter()
                .enumerate()
                .map(|(i, (_, ty))| format!("${}::{ty}[]", FIRST_LOG_PARAM + i))
                .collect::<Vec<_>>()
                .join(", "),
            names = LOG_COLUMNS
                .iter()
                .map(|(name, _)| quote_ident(name))
                .collect::<Vec<_>>()
                .join(", "),
            t = self.t(name),
            cols = column_list(&columns),
            exprs = value_list(&columns),
        )
    }
}

/// The quoted column names of `(column, expression)` pairs, comma-separated.
fn column_list(columns: &[(&str, String)]) -> String {
    let names: Vec<String> = columns.iter().map(|(c, _)| quote_ident(c)).collect();
    names.join(", ")
}

/// The expressions of `(column, expression)` pairs, comma-separated.
fn value_list(columns: &[(&str, String)]) -> String {
    let values: Vec<&str> = columns.iter().map(|(_, e)| e.as_str()).collect();
    values.join(", ")
}
