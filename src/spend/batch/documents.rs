//! The JSON documents a batch is written as (the flush statement's `$2`…`$10`): typed rows that
//! borrow every name from the batch and are serialized once, into the statement's parameters.
//! Building `serde_json::Value` trees instead (and owned totals) cost about 16k more
//! instructions per request (callgrind, `benches/load/instructions.py --spend`: 34.7k → 18.5k
//! over spend off): building them, serializing them, and freeing them.

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

use super::{date_of_day, DailyKey, DailyTotals, SpendRecord, Totals};

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
    pub logs: Vec<LogRow<'a>>,
}

impl<'a> Documents<'a> {
    /// The documents of `totals` and of the spend-log rows of `records`.
    pub(super) fn of(totals: &Totals<&'a str>, records: &'a [SpendRecord]) -> Documents<'a> {
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
            logs: records.iter().map(LogRow::of).collect(),
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

/// One spend-log row.
#[derive(Debug, PartialEq, Serialize)]
pub struct LogRow<'a> {
    request_id: &'a str,
    api_key: &'a str,
    spend: f64,
    total_tokens: u64,
    prompt_tokens: u64,
    completion_tokens: u64,
    start_ms: i64,
    end_ms: i64,
    first_byte_ms: Option<i64>,
    duration_ms: i64,
    model: &'a str,
    model_id: &'a str,
    model_group: &'a str,
    custom_llm_provider: &'a str,
    api_base: &'a str,
    user: &'a str,
    team_id: Option<&'a str>,
    end_user: Option<&'a str>,
    status: &'static str,
}

impl<'a> LogRow<'a> {
    fn of(r: &'a SpendRecord) -> LogRow<'a> {
        LogRow {
            request_id: &r.request_id,
            api_key: &r.key,
            spend: r.spend,
            total_tokens: r.usage.prompt + r.usage.completion,
            prompt_tokens: r.usage.prompt,
            completion_tokens: r.usage.completion,
            start_ms: r.start_ms,
            end_ms: r.end_ms,
            first_byte_ms: r.first_byte_ms,
            duration_ms: r.end_ms - r.start_ms,
            model: &r.model,
            model_id: r.model_id.as_deref().unwrap_or(""),
            model_group: r.model_group.as_deref().unwrap_or(""),
            custom_llm_provider: &r.provider,
            api_base: r.api_base.as_deref().unwrap_or(""),
            user: r.user_id.as_deref().unwrap_or(""),
            team_id: r.team_id.as_deref(),
            end_user: r.end_user.as_deref(),
            status: if r.success { "success" } else { "failure" },
        }
    }
}
