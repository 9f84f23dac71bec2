//! One flush interval's spend, added up the way LiteLLM's writer adds it up before it writes:
//! a total per key, team, user, team member and end user; one row per LiteLLM daily-table key
//! (entity, date, hashed key, model, provider, endpoint); and one spend-log row per request.
//! The adding up is done when the batch is written, off the request path.
//!
//! The batch holds no message or response content, only counts, names and times. It travels as
//! JSON too: a fan-out watcher sends its batch to its serving instance, which merges it into
//! its own ([`Batch::merge`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Usage;

/// What one request adds to LiteLLM's spend tables.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpendRecord {
    /// The request's id (`x-request-id`), the spend log's `request_id`.
    pub request_id: String,
    /// The key's digest, as `"LiteLLM_VerificationToken".token` holds it.
    pub key: String,
    /// The key's `user_id`.
    pub user_id: Option<String>,
    /// The key's `team_id`.
    pub team_id: Option<String>,
    /// The end user the request named (OpenAI's `user` field), when the sidecar read it.
    pub end_user: Option<String>,
    /// The deployment's model, with its provider prefix (`openai/gpt-4o`).
    pub model: String,
    /// The deployment's `model_id`, when the request went to a LiteLLM deployment.
    pub model_id: Option<String>,
    /// The alias the client asked for (LiteLLM's model group).
    pub model_group: Option<String>,
    /// The LiteLLM provider name (`openai`, `azure`, …).
    pub provider: String,
    /// The provider base the request went to.
    pub api_base: Option<String>,
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
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct DailyKey {
    entity: String,
    date: String,
    api_key: String,
    model: String,
    provider: String,
    endpoint: String,
}

/// A daily row's counts.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
struct DailyTotals {
    model_group: Option<String>,
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
/// daily rows. As JSON, maps whose keys are not strings are lists of `[key, value]`.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Totals {
    keys: BTreeMap<String, f64>,
    teams: BTreeMap<String, f64>,
    users: BTreeMap<String, f64>,
    #[serde(with = "entries")]
    members: BTreeMap<(String, String), f64>,
    end_users: BTreeMap<String, f64>,
    #[serde(with = "entries")]
    daily_users: BTreeMap<DailyKey, DailyTotals>,
    #[serde(with = "entries")]
    daily_teams: BTreeMap<DailyKey, DailyTotals>,
    #[serde(with = "entries")]
    daily_end_users: BTreeMap<DailyKey, DailyTotals>,
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

impl Totals {
    /// Adds `other`'s totals to these.
    fn merge(&mut self, other: Totals) {
        for (mine, theirs) in [
            (&mut self.keys, other.keys),
            (&mut self.teams, other.teams),
            (&mut self.users, other.users),
            (&mut self.end_users, other.end_users),
        ] {
            for (id, cost) in theirs {
                *mine.entry(id).or_default() += cost;
            }
        }
        for (member, cost) in other.members {
            *self.members.entry(member).or_default() += cost;
        }
        for (mine, theirs) in [
            (&mut self.daily_users, other.daily_users),
            (&mut self.daily_teams, other.daily_teams),
            (&mut self.daily_end_users, other.daily_end_users),
        ] {
            for (key, totals) in theirs {
                merge_daily(mine.entry(key).or_default(), &totals);
            }
        }
    }

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

    fn add(&mut self, record: &SpendRecord) {
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
                    .entry((user.clone(), team.clone()))
                    .or_default() += cost;
            }
        }
        let end_user = record.end_user.as_deref().filter(|u| !u.is_empty());
        if let Some(end_user) = end_user {
            add_to(&mut self.end_users, end_user, cost);
        }
        let date = date_of(record.start_ms);
        let daily = |entity: &str| DailyKey {
            entity: entity.to_string(),
            date: date.clone(),
            api_key: record.key.clone(),
            model: record.model.clone(),
            provider: record.provider.clone(),
            endpoint: record.endpoint.clone(),
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

/// Adds `cost` to `id`'s total, allocating the id only the first time.
fn add_to(totals: &mut BTreeMap<String, f64>, id: &str, cost: f64) {
    match totals.get_mut(id) {
        Some(total) => *total += cost,
        None => {
            totals.insert(id.to_string(), cost);
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
    pub overflow: Totals,
    /// Spend-log rows left out because the batch held `max_logs` already.
    #[serde(default)]
    pub logs_dropped: u64,
}

impl Batch {
    /// How many requests the batch holds spend-log rows for.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether the batch holds nothing to write.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty() && self.overflow.keys.is_empty()
    }

    /// Adds one request. Its record is kept whole while the batch holds fewer than `max_logs`;
    /// past that only its spend is kept (added to the totals), its spend-log row left out.
    pub fn add(&mut self, record: SpendRecord, max_logs: usize) {
        if self.records.len() < max_logs {
            self.records.push(record);
        } else {
            self.overflow.add(&record);
            self.logs_dropped += 1;
        }
    }

    /// Adds every request of `other` (a watcher's batch) as [`Batch::add`] adds one, and its
    /// totals.
    pub fn merge(&mut self, other: Batch, max_logs: usize) {
        for record in other.records {
            self.add(record, max_logs);
        }
        self.overflow.merge(other.overflow);
        self.logs_dropped += other.logs_dropped;
    }

    /// The batch as the JSON documents the flush statement reads (see `flush.rs`), by name.
    pub fn documents(&self) -> Documents {
        let mut totals = self.overflow.clone();
        for record in &self.records {
            totals.add(record);
        }
        let spend = |m: &BTreeMap<String, f64>, id: &str| -> Value {
            m.iter()
                .map(|(k, cost)| serde_json::json!({ id: k, "cost": cost }))
                .collect()
        };
        Documents {
            keys: spend(&totals.keys, "token"),
            teams: spend(&totals.teams, "team_id"),
            users: spend(&totals.users, "user_id"),
            members: totals
                .members
                .iter()
                .map(|((user, team), cost)| {
                    serde_json::json!({ "user_id": user, "team_id": team, "cost": cost })
                })
                .collect(),
            end_users: spend(&totals.end_users, "user_id"),
            daily_users: daily_rows(&totals.daily_users),
            daily_teams: daily_rows(&totals.daily_teams),
            daily_end_users: daily_rows(&totals.daily_end_users),
            logs: self.records.iter().map(log_row).collect(),
        }
    }
}

/// The JSON documents of one batch.
#[derive(Debug)]
pub struct Documents {
    /// `[{token, cost}]`.
    pub keys: Value,
    /// `[{team_id, cost}]`.
    pub teams: Value,
    /// `[{user_id, cost}]`.
    pub users: Value,
    /// `[{user_id, team_id, cost}]`.
    pub members: Value,
    /// `[{user_id, cost}]` (end users).
    pub end_users: Value,
    /// Daily user rows.
    pub daily_users: Value,
    /// Daily team rows.
    pub daily_teams: Value,
    /// Daily end-user rows.
    pub daily_end_users: Value,
    /// Spend-log rows.
    pub logs: Value,
}

fn add_daily(table: &mut BTreeMap<DailyKey, DailyTotals>, key: DailyKey, r: &SpendRecord) {
    let one = DailyTotals {
        model_group: r.model_group.clone(),
        prompt_tokens: r.usage.prompt,
        completion_tokens: r.usage.completion,
        cache_read_input_tokens: r.usage.cache_read,
        cache_creation_input_tokens: r.usage.cache_creation,
        spend: r.spend,
        api_requests: 1,
        successful_requests: u64::from(r.success),
        failed_requests: u64::from(!r.success),
    };
    merge_daily(table.entry(key).or_default(), &one);
}

fn merge_daily(into: &mut DailyTotals, add: &DailyTotals) {
    if into.model_group.is_none() {
        into.model_group.clone_from(&add.model_group);
    }
    into.prompt_tokens += add.prompt_tokens;
    into.completion_tokens += add.completion_tokens;
    into.cache_read_input_tokens += add.cache_read_input_tokens;
    into.cache_creation_input_tokens += add.cache_creation_input_tokens;
    into.spend += add.spend;
    into.api_requests += add.api_requests;
    into.successful_requests += add.successful_requests;
    into.failed_requests += add.failed_requests;
}

fn daily_rows(table: &BTreeMap<DailyKey, DailyTotals>) -> Value {
    table
        .iter()
        .map(|(k, t)| {
            let mut row = serde_json::to_value(t).unwrap_or(Value::Null);
            if let Value::Object(fields) = &mut row {
                for (name, value) in [
                    ("entity", &k.entity),
                    ("date", &k.date),
                    ("api_key", &k.api_key),
                    ("model", &k.model),
                    ("custom_llm_provider", &k.provider),
                    ("endpoint", &k.endpoint),
                ] {
                    fields.insert(name.into(), Value::String(value.clone()));
                }
            }
            row
        })
        .collect()
}

fn log_row(r: &SpendRecord) -> Value {
    serde_json::json!({
        "request_id": r.request_id,
        "api_key": r.key,
        "spend": r.spend,
        "total_tokens": r.usage.prompt + r.usage.completion,
        "prompt_tokens": r.usage.prompt,
        "completion_tokens": r.usage.completion,
        "start_ms": r.start_ms,
        "end_ms": r.end_ms,
        "first_byte_ms": r.first_byte_ms,
        "duration_ms": r.end_ms - r.start_ms,
        "model": r.model,
        "model_id": r.model_id.as_deref().unwrap_or(""),
        "model_group": r.model_group.as_deref().unwrap_or(""),
        "custom_llm_provider": r.provider,
        "api_base": r.api_base.as_deref().unwrap_or(""),
        "user": r.user_id.as_deref().unwrap_or(""),
        "team_id": r.team_id,
        "end_user": r.end_user,
        "status": if r.success { "success" } else { "failure" },
    })
}

/// The UTC date (`YYYY-MM-DD`) of a Unix time in milliseconds, as LiteLLM dates its daily rows.
pub fn date_of(unix_ms: i64) -> String {
    let days = unix_ms.div_euclid(86_400_000);
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
