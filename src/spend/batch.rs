//! One flush interval's spend, added up the way LiteLLM's writer adds it up before it writes:
//! a total per key, team, user, team member and end user; one row per LiteLLM daily-table key
//! (entity, date, hashed key, model, provider, endpoint); and one spend-log row per request.
//! The adding up is done when the batch is written, off the request path.
//!
//! The batch holds no message or response content, only counts, names and times. The names a
//! request shares with others (its key's, its deployment's) are shared, not copied
//! (`Arc<str>`, sent as plain strings). It travels as
//! JSON too: a fan-out watcher sends its batch to its serving instance, which keeps it beside
//! its own under the watcher's batch id ([`Batch::absorb`]) and writes both in one statement.
//! They are kept apart, not added together, so that a watcher's batch another serving instance
//! has already written (the watcher sent it again there after losing the first answer) can be
//! left out of the write ([`Batch::leave_out`]).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::Usage;

mod documents;
mod totals;
pub use documents::Documents;
pub use totals::{Named, Totals};

/// Milliseconds in a day.
const MS_PER_DAY: i64 = 86_400_000;

/// What one request adds to LiteLLM's spend tables.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpendRecord {
    /// The request's id (`x-request-id`), the spend log's `request_id`.
    pub request_id: String,
    /// The key's digest, as `"LiteLLM_VerificationToken".token` holds it.
    pub key: Arc<str>,
    /// The key's `user_id`.
    pub user_id: Option<Arc<str>>,
    /// The key's `team_id`.
    pub team_id: Option<Arc<str>>,
    /// The end user the request named (OpenAI's `user` field), when the sidecar read it.
    pub end_user: Option<String>,
    /// The deployment's model, with its provider prefix (`openai/gpt-4o`).
    pub model: Arc<str>,
    /// The deployment's `model_id`, when the request went to a LiteLLM deployment.
    pub model_id: Option<Arc<str>>,
    /// The alias the client asked for (LiteLLM's model group).
    pub model_group: Option<String>,
    /// The LiteLLM provider name (`openai`, `azure`, …).
    pub provider: Arc<str>,
    /// The provider base the request went to.
    pub api_base: Option<Arc<str>>,
    /// The endpoint called, as LiteLLM names it in its daily tables (`/chat/completions`).
    pub endpoint: String,
    /// The tokens the answer reported (zero when it reported none).
    pub usage: Usage,
    /// The cost in USD (0 for a failure, or a model with no price).
    pub spend: f64,
    /// Unix time, in milliseconds, the request arrived.
    pub start_ms: i64,
    /// Unix time, in milliseconds, its answer ended.
    pub end_ms: i64,
    /// Unix time, in milliseconds, of the answer's first byte (streams).
    pub first_byte_ms: Option<i64>,
    /// Whether the provider answered with success.
    pub success: bool,
}

/// One flush interval's spend: the requests' records, kept as they came (adding one is a move,
/// nothing is added up on the request path), and the totals of those past `max_logs`, whose
/// spend-log rows are left out. The totals are added up when the batch is written.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    /// The requests with their spend-log rows.
    pub records: Vec<SpendRecord>,
    /// The totals of requests past `max_logs`.
    #[serde(default)]
    pub overflow: Totals<String>,
    /// Spend-log rows left out because the batch held `max_logs` already.
    #[serde(default)]
    pub logs_dropped: u64,
    /// Watchers' batches a serving instance took, each under its id. Never read from a
    /// watcher's report (a watcher's batch holds only its own requests).
    #[serde(skip)]
    absorbed: Vec<Absorbed>,
    /// How many records the watchers' batches hold (kept, so that [`Batch::len`] does not walk
    /// them on every request).
    #[serde(skip)]
    absorbed_records: usize,
}

/// A watcher's batch, as a serving instance holds it until it is written.
#[derive(Debug, Clone, PartialEq)]
struct Absorbed {
    /// The batch's id, with the watcher's name before it (`{watcher}/{id}`): what
    /// `"Sidecar_SpendBatches"` remembers it by.
    id: String,
    /// The batch.
    batch: Batch,
}

impl Batch {
    /// How many requests the batch holds spend-log rows for, its watchers' batches included.
    pub fn len(&self) -> usize {
        self.records.len() + self.absorbed_records
    }

    /// Whether the batch holds nothing to write.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
            && self.overflow.keys.is_empty()
            && self.absorbed.iter().all(|a| a.batch.is_empty())
    }

    /// Adds one request. Its record is kept whole while the batch holds fewer than `max_logs`;
    /// past that only its spend is kept (added to the totals), its spend-log row left out.
    pub fn add(&mut self, record: SpendRecord, max_logs: usize) {
        if self.len() < max_logs {
            self.records.push(record);
        } else {
            self.overflow.add(&record);
            self.logs_dropped += 1;
        }
    }

    /// Keeps a watcher's batch (`id` as `Absorbed::id`; not again when it holds that id
    /// already) beside this one, within the same bound: the spend-log rows of its requests past
    /// `max_logs` in all are left out (their spend kept in its totals).
    pub fn absorb(&mut self, id: String, mut other: Batch, max_logs: usize) {
        // Held already (its watcher sent it twice): once is enough, and the flush statement
        // takes each id once.
        if self.absorbed.iter().any(|a| a.id == id) {
            return;
        }
        let room = max_logs.saturating_sub(self.len());
        if other.records.len() > room {
            for record in other.records.drain(room..) {
                other.overflow.add(&record);
                other.logs_dropped += 1;
            }
        }
        self.logs_dropped += other.logs_dropped;
        other.logs_dropped = 0;
        self.absorbed_records += other.records.len();
        self.absorbed.push(Absorbed { id, batch: other });
    }

    /// The ids of the watchers' batches held.
    pub fn absorbed_ids(&self) -> Vec<&str> {
        self.absorbed.iter().map(|a| a.id.as_str()).collect()
    }

    /// Drops the watchers' batches whose ids are in `written` (another serving instance wrote
    /// them); how many were dropped.
    pub fn leave_out(&mut self, written: &[String]) -> usize {
        let before = self.absorbed.len();
        self.absorbed.retain(|a| !written.contains(&a.id));
        self.absorbed_records = self.absorbed.iter().map(|a| a.batch.records.len()).sum();
        before - self.absorbed.len()
    }

    /// The batch as the JSON documents the flush statement reads (see `flush.rs` and
    /// `documents`), borrowing every name from the batch.
    pub fn documents(&self) -> Documents<'_> {
        let mut totals = Totals::default();
        let own = std::iter::once(self);
        for part in own.clone().chain(self.absorbed.iter().map(|a| &a.batch)) {
            totals.include(&part.overflow);
            for record in &part.records {
                totals.add(record);
            }
        }
        let records = own
            .chain(self.absorbed.iter().map(|a| &a.batch))
            .flat_map(|part| part.records.iter());
        Documents::of(&totals, records)
    }
}

/// The UTC date (`YYYY-MM-DD`) of a Unix time in milliseconds, as LiteLLM dates its daily rows.
pub fn date_of(unix_ms: i64) -> String {
    date_of_day(unix_ms.div_euclid(MS_PER_DAY))
}

/// The date (`YYYY-MM-DD`) of a day counted from 1970-01-01.
fn date_of_day(days: i64) -> String {
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

#[cfg(test)]
mod tests;
