//! Writing one batch: a single SQL statement, so that it lands whole or not at all, on the
//! sidecar's one database connection (no transaction to hold open on a shared connection).
//!
//! The statement first records the batch's id in `"Sidecar_SpendBatches"`; every other part
//! of it reads that insert's result and writes nothing when the id was already there. A batch
//! retried after a commit whose answer was lost is therefore not counted twice. A serving
//! instance's batch also records the ids of the watchers' batches it holds: when any of them
//! is there already (another serving instance wrote it, the watcher having sent it again there
//! after losing the first answer), the statement fails as a whole ([`ABSORBED_WRITTEN`]), and
//! the writer leaves those out and writes the rest ([`Written::AbsorbedWritten`]). The parts, each
//! a data-modifying `WITH` query over a JSON document of the batch (`Documents`):
//!
//! - the spend of keys (and `total_spend`, `last_active` where the schema has them), teams and
//!   users: `spend = spend + cost`, never read-modify-write;
//! - team members: LiteLLM's rule, a membership row is added to only while the user is on the
//!   team's roster (or already has a row);
//! - end users: the row is created when missing;
//! - the daily user, team and end-user tables: upserts on LiteLLM's unique key, adding counts;
//! - spend-log rows (unless `disable_spend_logs`), with empty `messages` and `response`.
//!
//! Which tables and columns exist is read from the schema once ([`SpendTables::discover`]), so
//! the same sidecar writes into older LiteLLM schemas (a missing daily table is skipped, and
//! said once in the log).

use bytes::{BufMut, BytesMut};
use serde::Serialize;
use tokio_postgres::types::{accepts, to_sql_checked, IsNull, ToSql, Type};
use tokio_postgres::GenericClient;

use super::batch::Batch;
use crate::db::sql::table;
use crate::db::DbError;

mod array;
mod statement;

use array::Array;
pub use statement::{SpendTables, ABSORBED_WRITTEN, BATCHES_TABLE};

/// What writing a batch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    /// Written now.
    Fresh,
    /// A batch with this id had been written already: nothing written now.
    Duplicate,
    /// Nothing written: these watchers' batches it holds had been written already (by another
    /// serving instance).
    AbsorbedWritten(Vec<String>),
}

/// Writes one batch with `statement` ([`SpendTables::statement`]) into `schema`.
pub async fn write(
    client: &impl GenericClient,
    statement: &str,
    schema: &str,
    batch_id: &str,
    batch: &Batch,
) -> Result<Written, DbError> {
    let docs = batch.documents();
    let absorbed = batch.absorbed_ids();
    let logs = &docs.logs;
    let answer = client
        .query_one(
            statement,
            &[
                &batch_id,
                &JsonDocument::of(&docs.keys),
                &JsonDocument::of(&docs.teams),
                &JsonDocument::of(&docs.users),
                &JsonDocument::of(&docs.members),
                &JsonDocument::of(&docs.end_users),
                &JsonDocument::of(&docs.daily_users),
                &JsonDocument::of(&docs.daily_teams),
                &JsonDocument::of(&docs.daily_end_users),
                &Array(&logs.request_id),
                &Array(&logs.api_key),
                &Array(&logs.spend),
                &Array(&logs.prompt_tokens),
                &Array(&logs.completion_tokens),
                &Array(&logs.start_ms),
                &Array(&logs.end_ms),
                &Array(&logs.first_byte_ms),
                &Array(&logs.model),
                &Array(&logs.model_id),
                &Array(&logs.model_group),
                &Array(&logs.custom_llm_provider),
                &Array(&logs.api_base),
                &Array(&logs.user),
                &Array(&logs.team_id),
                &Array(&logs.end_user),
                &Array(&logs.success),
                &absorbed,
            ],
        )
        .await;
    match answer {
        Ok(row) if row.get(0) => Ok(Written::Fresh),
        Ok(_) => Ok(Written::Duplicate),
        Err(e) if is_absorbed_written(&e) => {
            let sql = format!(
                "SELECT batch_id FROM {} WHERE batch_id = ANY($1)",
                table(schema, BATCHES_TABLE)
            );
            let rows = client
                .query(&sql, &[&absorbed])
                .await
                .map_err(|e| DbError::query("read which watchers' batches were written", &e))?;
            Ok(Written::AbsorbedWritten(
                rows.iter().map(|r| r.get(0)).collect(),
            ))
        }
        Err(e) => Err(DbError::query("write the spend", &e)),
    }
}

/// Whether the statement failed on [`ABSORBED_WRITTEN`].
fn is_absorbed_written(e: &tokio_postgres::Error) -> bool {
    e.as_db_error().is_some_and(|db| {
        *db.code() == tokio_postgres::error::SqlState::INVALID_TEXT_REPRESENTATION
            && db.message().contains(ABSORBED_WRITTEN)
    })
}

/// A document (a list of rows) bound as a `json`/`jsonb` parameter, serialized into a buffer of
/// its own and then copied into the parameter's. `tokio_postgres::types::Json`, which serializes
/// through an `io::Write` over the parameter buffer, cost about 2.8k more instructions per
/// request (callgrind, `benches/load/instructions.py --spend`, flushes every second).
#[derive(Debug)]
struct JsonDocument<'a, T> {
    rows: &'a [T],
}

impl<'a, T> JsonDocument<'a, T> {
    fn of(rows: &'a [T]) -> JsonDocument<'a, T> {
        JsonDocument { rows }
    }
}

impl<T: Serialize + std::fmt::Debug> ToSql for JsonDocument<'_, T> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        let text = serde_json::to_vec(self.rows)?;
        if *ty == Type::JSONB {
            out.put_u8(1); // jsonb's binary format: a version byte, then the text
        }
        out.put_slice(&text);
        Ok(IsNull::No)
    }

    accepts!(JSON, JSONB);
    to_sql_checked!();
}
