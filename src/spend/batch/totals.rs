//! What a batch adds up when it is written: the spend per key, team, user, team member and end
//! user, and LiteLLM's daily rows ([`Totals`]), over owned names (what a batch keeps for the
//! requests past its spend-log bound, and what a watcher's batch carries) or borrowed ones (what
//! a flush adds up from its records).

use std::borrow::Borrow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{SpendRecord, MS_PER_DAY};

/// A daily table's key: the entity and the columns LiteLLM's unique constraint names, with
/// absent values as `''` (LiteLLM's writer does the same: a NULL never matches in a unique index).
/// `S` is `String` for totals a batch keeps, `&str` for totals borrowed from its records.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(super) struct DailyKey<S> {
    pub(super) entity: S,
    /// The UTC day, in days since 1970-01-01 (formatted once per row when written).
    pub(super) day: i64,
    pub(super) api_key: S,
    pub(super) model: S,
    pub(super) provider: S,
    pub(super) endpoint: S,
}

/// A daily row's counts.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct DailyTotals<S> {
    pub(super) model_group: Option<S>,
    pub(super) prompt_tokens: u64,
    pub(super) completion_tokens: u64,
    pub(super) cache_read_input_tokens: u64,
    pub(super) cache_creation_input_tokens: u64,
    pub(super) spend: f64,
    pub(super) api_requests: u64,
    pub(super) successful_requests: u64,
    pub(super) failed_requests: u64,
}

/// Totals added up over records: the spend per key, team, user, member and end user, and the
/// daily rows; keyed by `S` (see `DailyKey`). As JSON (a watcher's batch, see the module
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
    pub(super) keys: BTreeMap<S, f64>,
    pub(super) teams: BTreeMap<S, f64>,
    pub(super) users: BTreeMap<S, f64>,
    #[serde(with = "entries")]
    pub(super) members: BTreeMap<(S, S), f64>,
    pub(super) end_users: BTreeMap<S, f64>,
    #[serde(with = "entries")]
    pub(super) daily_users: BTreeMap<DailyKey<S>, DailyTotals<S>>,
    #[serde(with = "entries")]
    pub(super) daily_teams: BTreeMap<DailyKey<S>, DailyTotals<S>>,
    #[serde(with = "entries")]
    pub(super) daily_end_users: BTreeMap<DailyKey<S>, DailyTotals<S>>,
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
    pub(super) fn add(&mut self, record: &'a SpendRecord) {
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
    pub(super) fn include(&mut self, other: &'a Totals<String>) {
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
