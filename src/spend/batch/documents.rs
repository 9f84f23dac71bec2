//! What a batch is written as: the totals as JSON documents (the flush statement's `$2`…`$9`),
//! typed rows that borrow every name from the batch and are serialized once into the statement's
//! parameters, and the spend-log rows as one array per column (`$10`…`$26`, [`LogColumns`]).
//! Building `serde_json::Value` trees instead (and owned totals) cost about 16k more
//! instructions per request (callgrind, `benches/load/instructions.py --spend`: 34.7k → 18.5k
//! over spend off): building them, serializing them, and freeing them.

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

use super::totals::{DailyKey, DailyTotals};
use super::{date_of_day, SpendRecord, Totals};

/// The documents of one batch.
#[derive(Debug)]
pub struct Documents<'a> {
    /// `[{token, cost}]`.
    pub keys: Vec<Spent<'a>>,
    /// `[{team_id, cost}]`.
    pub teams: Vec<Spent<'a>>,
    /// `[{user_id, cost}]`.
    pub users: Vec<Spent<'a>>,
    /// `[{user_id, team_id, cost}]`.
    pub members: Vec<MemberSpent<'a>>,
    /// `[{user_id, cost}]` (end users).
    pub end_users: Vec<Spent<'a>>,
    /// Daily user rows.
    pub daily_users: Vec<DailyRow<'a>>,
    /// Daily team rows.
    pub daily_teams: Vec<DailyRow<'a>>,
    /// Daily end-user rows.
    pub daily_end_users: Vec<DailyRow<'a>>,
    /// Spend-log rows.
    pub logs: LogColumns<'a>,
}

impl<'a> Documents<'a> {
    /// The documents of `totals` and of the spend-log rows of `records`.
    pub(super) fn of(
        totals: &Totals<&'a str>,
        records: impl Iterator<Item = &'a SpendRecord> + Clone,
    ) -> Documents<'a> {
        let spent = |map: &std::collections::BTreeMap<&'a str, f64>, field| {
            map.iter()
                .map(|(id, cost)| Spent {
                    field,
                    id,
                    cost: *cost,
                })
                .collect()
        };
        let daily = |map: &std::collections::BTreeMap<DailyKey<&'a str>, DailyTotals<&'a str>>| {
            map.iter().map(DailyRow::of).collect()
        };
        Documents {
            keys: spent(&totals.keys, "token"),
            teams: spent(&totals.teams, "team_id"),
            users: spent(&totals.users, "user_id"),
            members: totals
                .members
                .iter()
                .map(|((user_id, team_id), cost)| MemberSpent {
                    user_id,
                    team_id,
                    cost: *cost,
                })
                .collect(),
            end_users: spent(&totals.end_users, "user_id"),
            daily_users: daily(&totals.daily_users),
            daily_teams: daily(&totals.daily_teams),
            daily_end_users: daily(&totals.daily_end_users),
            logs: LogColumns::of(records),
        }
    }
}

/// One entity's spend: `{<field>: id, cost}`.
#[derive(Debug, PartialEq)]
pub struct Spent<'a> {
    field: &'static str,
    id: &'a str,
    cost: f64,
}

impl Serialize for Spent<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(2))?;
        map.serialize_entry(self.field, self.id)?;
        map.serialize_entry("cost", &self.cost)?;
        map.end()
    }
}

/// A team member's spend.
#[derive(Debug, PartialEq, Serialize)]
pub struct MemberSpent<'a> {
    user_id: &'a str,
    team_id: &'a str,
    cost: f64,
}

/// A daily row: its key and counts.
#[derive(Debug, PartialEq, Serialize)]
pub struct DailyRow<'a> {
    entity: &'a str,
    date: String,
    api_key: &'a str,
    model: &'a str,
    custom_llm_provider: &'a str,
    endpoint: &'a str,
    model_group: Option<&'a str>,
    prompt_tokens: u64,
    completion_tokens: u64,
    cache_read_input_tokens: u64,
    cache_creation_input_tokens: u64,
    spend: f64,
    api_requests: u64,
    successful_requests: u64,
    failed_requests: u64,
}

impl<'a> DailyRow<'a> {
    fn of((key, t): (&DailyKey<&'a str>, &DailyTotals<&'a str>)) -> DailyRow<'a> {
        DailyRow {
            entity: key.entity,
            date: date_of_day(key.day),
            api_key: key.api_key,
            model: key.model,
            custom_llm_provider: key.provider,
            endpoint: key.endpoint,
            model_group: t.model_group,
            prompt_tokens: t.prompt_tokens,
            completion_tokens: t.completion_tokens,
            cache_read_input_tokens: t.cache_read_input_tokens,
            cache_creation_input_tokens: t.cache_creation_input_tokens,
            spend: t.spend,
            api_requests: t.api_requests,
            successful_requests: t.successful_requests,
            failed_requests: t.failed_requests,
        }
    }
}

/// The spend-log rows, one list per column, bound as PostgreSQL arrays (binary: each value a
/// length and its bytes, nothing escaped). As JSON rows they were the most of the flush's cost:
/// about 7k instructions a row, most of it escaping strings byte by byte.
#[derive(Debug, Default, PartialEq)]
pub struct LogColumns<'a> {
    /// `request_id`.
    pub request_id: Vec<&'a str>,
    /// The key's digest.
    pub api_key: Vec<&'a str>,
    /// The cost.
    pub spend: Vec<f64>,
    /// Prompt tokens.
    pub prompt_tokens: Vec<i64>,
    /// Completion tokens.
    pub completion_tokens: Vec<i64>,
    /// Arrival, Unix milliseconds.
    pub start_ms: Vec<i64>,
    /// End, Unix milliseconds.
    pub end_ms: Vec<i64>,
    /// First byte of the answer, Unix milliseconds.
    pub first_byte_ms: Vec<Option<i64>>,
    /// The model with its provider prefix.
    pub model: Vec<&'a str>,
    /// The deployment's id (`''` when none).
    pub model_id: Vec<&'a str>,
    /// The alias (`''` when none).
    pub model_group: Vec<&'a str>,
    /// The provider.
    pub custom_llm_provider: Vec<&'a str>,
    /// The base the request went to (`''` when none).
    pub api_base: Vec<&'a str>,
    /// The key's user (`''` when none).
    pub user: Vec<&'a str>,
    /// The key's team.
    pub team_id: Vec<Option<&'a str>>,
    /// The end user.
    pub end_user: Vec<Option<&'a str>>,
    /// Whether the provider answered with success.
    pub success: Vec<bool>,
}

impl<'a> LogColumns<'a> {
    /// The columns of `records`, in one pass.
    fn of(records: impl Iterator<Item = &'a SpendRecord> + Clone) -> LogColumns<'a> {
        let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let text = |s: &'a Option<String>| s.as_deref().unwrap_or("");
        let shared = |s: &'a Option<std::sync::Arc<str>>| s.as_deref().unwrap_or("");
        let n = records.clone().count();
        let mut c = LogColumns::with_capacity(n);
        for r in records {
            c.request_id.push(&r.request_id);
            c.api_key.push(&r.key);
            c.spend.push(r.spend);
            c.prompt_tokens.push(count(r.usage.prompt));
            c.completion_tokens.push(count(r.usage.completion));
            c.start_ms.push(r.start_ms);
            c.end_ms.push(r.end_ms);
            c.first_byte_ms.push(r.first_byte_ms);
            c.model.push(&r.model);
            c.model_id.push(shared(&r.model_id));
            c.model_group.push(text(&r.model_group));
            c.custom_llm_provider.push(&r.provider);
            c.api_base.push(shared(&r.api_base));
            c.user.push(shared(&r.user_id));
            c.team_id.push(r.team_id.as_deref());
            c.end_user.push(r.end_user.as_deref());
            c.success.push(r.success);
        }
        c
    }

    fn with_capacity(n: usize) -> LogColumns<'a> {
        LogColumns {
            request_id: Vec::with_capacity(n),
            api_key: Vec::with_capacity(n),
            spend: Vec::with_capacity(n),
            prompt_tokens: Vec::with_capacity(n),
            completion_tokens: Vec::with_capacity(n),
            start_ms: Vec::with_capacity(n),
            end_ms: Vec::with_capacity(n),
            first_byte_ms: Vec::with_capacity(n),
            model: Vec::with_capacity(n),
            model_id: Vec::with_capacity(n),
            model_group: Vec::with_capacity(n),
            custom_llm_provider: Vec::with_capacity(n),
            api_base: Vec::with_capacity(n),
            user: Vec::with_capacity(n),
            team_id: Vec::with_capacity(n),
            end_user: Vec::with_capacity(n),
            success: Vec::with_capacity(n),
        }
    }

    /// How many rows.
    pub fn len(&self) -> usize {
        self.request_id.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.request_id.is_empty()
    }
}
