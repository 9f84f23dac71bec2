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

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::Usage;

mod documents;
pub use documents::Documents;

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

/// A daily table's key: the entity and the columns LiteLLM's unique constraint names, with
/// absent values as `''` (LiteLLM's writer does the same: a NULL never matches in a unique index).
/// `S` is `String` for totals a batch keeps, `&str` for totals borrowed from its records.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct DailyKey<S> {
    entity: S,
    /// The UTC day, in days since 1970-01-01 (formatted once per row when written).
    day: i64,
    api_key: S,
    model: S,
    provider: S,
    endpoint: S,
}

/// A daily row's counts.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
struct DailyTotals<S> {
    model_group: Option<S>,
    prompt_tokens: u64,
    completion_tokens: u64,
    cache_read_input_tokens: u64,
    cache_creation_input_tokens: u64,
    spend: f64,
    api_requests: u64,
    successful_requests: u64,
    failed_requests: u64,
}

/// Totals added up over records: the spend per key, team, user, member and end user, and the
/// daily rows; keyed by `S` (see [`DailyKey`]). As JSON (a watcher's batch, see the module
/// docs), maps whose keys are not strings are lists of `[key, value]`.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    default,
    bound(
        serialize = "S: Serialize",
        deserialize = "S: Deserialize<'de> + Ord + Default"
    )
)]
pub struct Totals<S> {
    keys: BTreeMap<S, f64>,
    teams: BTreeMap<S, f64>,
    users: BTreeMap<S, f64>,
    #[serde(with = "entries")]
    members: BTreeMap<(S, S), f64>,
    end_users: BTreeMap<S, f64>,
    #[serde(with = "entries")]
    daily_users: BTreeMap<DailyKey<S>, DailyTotals<S>>,
    #[serde(with = "entries")]
    daily_teams: BTreeMap<DailyKey<S>, DailyTotals<S>>,
    #[serde(with = "entries")]
    daily_end_users: BTreeMap<DailyKey<S>, DailyTotals<S>>,
}

/// A map as a list of `[key, value]` pairs (JSON object keys must be strings).
mod entries {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<K: Serialize, V: Serialize, S: Serializer>(
        map: &BTreeMap<K, V>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(map.iter())
    }

    pub fn deserialize<'de, K, V, D>(deserializer: D) -> Result<BTreeMap<K, V>, D::Error>
    where
        K: Deserialize<'de> + Ord,
        V: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        Vec::<(K, V)>::deserialize(deserializer).map(|pairs| pairs.into_iter().collect())
    }
}

impl Totals<String> {
    /// Every key, team and user these totals name (what a fan-out server checks against the
    /// watcher's grant).
    pub fn named(&self) -> Named<'_> {
        let daily = self
            .daily_users
            .keys()
            .chain(self.daily_teams.keys())
            .chain(self.daily_end_users.keys());
        let mut keys: Vec<&str> = self.keys.keys().map(String::as_str).collect();
        keys.extend(daily.clone().map(|d| d.api_key.as_str()));
        let mut teams: Vec<&str> = self.teams.keys().map(String::as_str).collect();
        teams.extend(self.members.keys().map(|(_, t)| t.as_str()));
        teams.extend(self.daily_teams.keys().map(|d| d.entity.as_str()));
        let mut users: Vec<&str> = self.users.keys().map(String::as_str).collect();
        users.extend(self.members.keys().map(|(u, _)| u.as_str()));
        users.extend(self.daily_users.keys().map(|d| d.entity.as_str()));
        for list in [&mut keys, &mut teams, &mut users] {
            list.retain(|id| !id.is_empty());
            list.sort_unstable();
            list.dedup();
        }
        Named { keys, teams, users }
    }
}

impl<'a, S: Ord + Default + Borrow<str> + From<&'a str>> Totals<S> {
    fn add(&mut self, record: &'a SpendRecord) {
        let cost = record.spend;
        add_to(&mut self.keys, &record.key, cost);
        if let Some(team) = &record.team_id {
            add_to(&mut self.teams, team, cost);
        }
        if let Some(user) = &record.user_id {
            add_to(&mut self.users, user, cost);
            if let Some(team) = &record.team_id {
                *self
                    .members
                    .entry((S::from(user), S::from(team)))
                    .or_default() += cost;
            }
        }
        let end_user = record.end_user.as_deref().filter(|u| !u.is_empty());
        if let Some(end_user) = end_user {
            add_to(&mut self.end_users, end_user, cost);
        }
        let day = record.start_ms.div_euclid(MS_PER_DAY);
        let daily = |entity: &'a str| DailyKey {
            entity: S::from(entity),
            day,
            api_key: S::from(&record.key),
            model: S::from(&record.model),
            provider: S::from(&record.provider),
            endpoint: S::from(&record.endpoint),
        };
        let user = record.user_id.as_deref().unwrap_or("");
        add_daily(&mut self.daily_users, daily(user), record);
        let team = record.team_id.as_deref().unwrap_or("");
        add_daily(&mut self.daily_teams, daily(team), record);
        if let Some(end_user) = end_user {
            add_daily(&mut self.daily_end_users, daily(end_user), record);
        }
    }
}

impl<'a> Totals<&'a str> {
    /// Adds `other`'s totals (a batch's overflow) to these, borrowing its names.
    fn include(&mut self, other: &'a Totals<String>) {
        for (mine, theirs) in [
            (&mut self.keys, &other.keys),
            (&mut self.teams, &other.teams),
            (&mut self.users, &other.users),
            (&mut self.end_users, &other.end_users),
        ] {
            for (id, cost) in theirs {
                *mine.entry(id.as_str()).or_default() += cost;
            }
        }
        for ((user, team), cost) in &other.members {
            *self
                .members
                .entry((user.as_str(), team.as_str()))
                .or_default() += cost;
        }
        for (mine, theirs) in [
            (&mut self.daily_users, &other.daily_users),
            (&mut self.daily_teams, &other.daily_teams),
            (&mut self.daily_end_users, &other.daily_end_users),
        ] {
            for (key, totals) in theirs {
                mine.entry(key.borrowed()).or_default().include(totals);
            }
        }
    }
}

impl DailyKey<String> {
    fn borrowed(&self) -> DailyKey<&str> {
        DailyKey {
            entity: &self.entity,
            day: self.day,
            api_key: &self.api_key,
            model: &self.model,
            provider: &self.provider,
            endpoint: &self.endpoint,
        }
    }
}

impl<'a> DailyTotals<&'a str> {
    /// Adds `other`'s counts to these, borrowing its model group.
    fn include(&mut self, other: &'a DailyTotals<String>) {
        if self.model_group.is_none() {
            self.model_group = other.model_group.as_deref();
        }
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.cache_read_input_tokens += other.cache_read_input_tokens;
        self.cache_creation_input_tokens += other.cache_creation_input_tokens;
        self.spend += other.spend;
        self.api_requests += other.api_requests;
        self.successful_requests += other.successful_requests;
        self.failed_requests += other.failed_requests;
    }
}

/// Adds `cost` to `id`'s total, making the key only the first time.
fn add_to<'a, S: Ord + Borrow<str> + From<&'a str>>(
    totals: &mut BTreeMap<S, f64>,
    id: &'a str,
    cost: f64,
) {
    match totals.get_mut(id) {
        Some(total) => *total += cost,
        None => {
            totals.insert(S::from(id), cost);
        }
    }
}

/// The keys, teams and users some totals name, each sorted and without repeats or `''`.
#[derive(Debug, PartialEq, Eq)]
pub struct Named<'a> {
    /// Key digests.
    pub keys: Vec<&'a str>,
    /// Team ids.
    pub teams: Vec<&'a str>,
    /// User ids.
    pub users: Vec<&'a str>,
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

    /// Keeps a watcher's batch (`id` as [`Absorbed::id`]) beside this one, within the same
    /// bound: the spend-log rows of its requests past `max_logs` in all are left out (their
    /// spend kept in its totals).
    pub fn absorb(&mut self, id: String, mut other: Batch, max_logs: usize) {
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
    /// [`documents`]), borrowing every name from the batch.
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

fn add_daily<'a, S: Ord + Default + From<&'a str>>(
    table: &mut BTreeMap<DailyKey<S>, DailyTotals<S>>,
    key: DailyKey<S>,
    r: &'a SpendRecord,
) {
    let into = table.entry(key).or_default();
    if into.model_group.is_none() {
        into.model_group = r.model_group.as_deref().map(S::from);
    }
    into.prompt_tokens += r.usage.prompt;
    into.completion_tokens += r.usage.completion;
    into.cache_read_input_tokens += r.usage.cache_read;
    into.cache_creation_input_tokens += r.usage.cache_creation;
    into.spend += r.spend;
    into.api_requests += 1;
    into.successful_requests += u64::from(r.success);
    into.failed_requests += u64::from(!r.success);
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
