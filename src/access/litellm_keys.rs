//! LiteLLM virtual keys as client credentials (`access.litellm_keys`): the key an application
//! presents (`Authorization: Bearer sk-…`, or `x-api-key`) is hashed as LiteLLM hashes it
//! (SHA-256, hex) and looked up in a snapshot of LiteLLM's key and team tables; the request is
//! refused, with LiteLLM's error status and shape and nothing sent, when the key is unknown,
//! blocked or expired, its team is blocked, its spend (or its team's) has reached the budget
//! LiteLLM recorded, or it may not call the model asked for.
//!
//! The presented key is removed before forwarding (its headers are in every route's strip
//! list) and never logged: the access log names the key's alias, else the first 8 hex digits of
//! its digest.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use pingora::http::RequestHeader;
use sha2::{Digest, Sha256};

use crate::db::keys::{KeyRow, TeamRow};
use crate::named_state::NamedState;

mod refusal;

pub use refusal::Refusal;

/// LiteLLM's model name that grants every model.
const ALL_MODELS: &str = "all-proxy-models";

/// One team, as its keys are checked.
#[derive(Debug)]
pub struct Team {
    /// `team_id`.
    pub id: Arc<str>,
    models: Vec<String>,
    blocked: bool,
    max_budget: Option<f64>,
    spend: f64,
}

/// One virtual key, as it is checked.
#[derive(Debug)]
pub struct VirtualKey {
    /// What the access log names the key by: its alias, else the start of its digest.
    pub label: String,
    /// The key's row id: `token`, the digest as LiteLLM stores it (what its spend is written
    /// to; never the key).
    pub digest: Arc<str>,
    /// The key's `user_id`.
    pub user_id: Option<Arc<str>>,
    models: Vec<String>,
    expires: Option<f64>,
    blocked: bool,
    max_budget: Option<f64>,
    spend: f64,
    team: Option<Arc<Team>>,
    rpm_limit: Option<u64>,
    tpm_limit: Option<u64>,
    /// This instance's count of the key's requests and tokens in the current minute (kept by
    /// digest across snapshots).
    window: Window,
}

/// A key's use in this instance in one minute.
#[derive(Debug, Default)]
struct Counts {
    /// Minutes since the epoch.
    minute: u64,
    requests: u64,
    tokens: u64,
}

/// A key's counts, shared by every snapshot that holds the key.
type Window = Arc<Mutex<Counts>>;

/// The key and team tables, by digest and by id.
#[derive(Debug, Default)]
pub struct KeyTable {
    by_digest: HashMap<String, Arc<VirtualKey>>,
}

impl KeyTable {
    /// Builds the table from the rows read. A key naming a team that does not exist is kept
    /// without one (LiteLLM then checks the key alone).
    pub fn new(keys: Vec<KeyRow>, teams: Vec<TeamRow>) -> KeyTable {
        let teams: HashMap<String, Arc<Team>> = teams
            .into_iter()
            .map(|t| {
                let team = Team {
                    id: t.id.as_str().into(),
                    models: t.models,
                    blocked: t.blocked,
                    max_budget: t.max_budget,
                    spend: t.spend,
                };
                (t.id, Arc::new(team))
            })
            .collect();
        let by_digest =
            keys.into_iter()
                .map(|k| {
                    let label = k.alias.clone().unwrap_or_else(|| {
                        format!("key {}…", k.token.get(..8).unwrap_or(&k.token))
                    });
                    let key = VirtualKey {
                        label,
                        digest: k.token.as_str().into(),
                        user_id: k.user_id.map(Arc::from),
                        models: k.models,
                        expires: k.expires,
                        blocked: k.blocked,
                        max_budget: k.max_budget,
                        spend: k.spend,
                        team: k.team_id.and_then(|id| teams.get(&id).cloned()),
                        rpm_limit: k.rpm_limit.and_then(|n| u64::try_from(n).ok()),
                        tpm_limit: k.tpm_limit.and_then(|n| u64::try_from(n).ok()),
                        window: window_for(&k.token.to_ascii_lowercase()),
                    };
                    (k.token.to_ascii_lowercase(), Arc::new(key))
                })
                .collect();
        KeyTable { by_digest }
    }

    /// How many keys the table holds.
    pub fn len(&self) -> usize {
        self.by_digest.len()
    }

    /// Whether the table holds no key.
    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }

    /// The key `req` presents, checked: unknown, blocked, expired, a blocked team and a budget
    /// reached are refused. The model is checked later, once it is known
    /// ([`VirtualKey::check_model`]).
    pub fn admit(&self, req: &RequestHeader) -> Result<Arc<VirtualKey>, Refusal> {
        let presented = presented_key(req).ok_or_else(|| {
            Refusal::auth("Authentication Error, no api key passed in (Authorization: Bearer sk-…)")
        })?;
        let digest = format!("{:x}", Sha256::digest(presented.as_bytes()));
        let key = self
            .by_digest
            .get(&digest)
            .ok_or_else(Refusal::unknown_key)?;
        key.check(now())?;
        Ok(key.clone())
    }
}

impl VirtualKey {
    /// The key's team, when it has one that exists.
    pub fn team_id(&self) -> Option<&str> {
        self.team.as_ref().map(|t| &*t.id)
    }

    /// The key's team's id, shared (as spend records hold it).
    pub fn team_id_shared(&self) -> Option<&Arc<str>> {
        self.team.as_ref().map(|t| &t.id)
    }

    fn check(&self, now: f64) -> Result<(), Refusal> {
        if self.blocked {
            return Err(Refusal::auth(format!(
                "Authentication Error, Key is blocked ({})",
                self.label
            )));
        }
        if self.expires.is_some_and(|at| at <= now) {
            return Err(Refusal::expired(format!(
                "Authentication Error - Expired Key ({})",
                self.label
            )));
        }
        if let Some(team) = self.team.as_ref() {
            if team.blocked {
                return Err(Refusal::auth(format!(
                    "Authentication Error, team {} is blocked",
                    team.id
                )));
            }
            if team.max_budget.is_some_and(|max| team.spend >= max) {
                return Err(Refusal::budget(format!(
                    "Budget has been exceeded! Team={} Current cost: {}, Max budget: {}",
                    team.id,
                    team.spend,
                    team.max_budget.unwrap_or_default()
                )));
            }
        }
        if let Some(max) = self.max_budget.filter(|max| self.spend >= *max) {
            return Err(Refusal::budget(format!(
                "Budget has been exceeded! Key={} Current cost: {}, Max budget: {max}",
                self.label, self.spend
            )));
        }
        Ok(())
    }

    /// Counts one request against the key's `rpm_limit` in this instance, and checks the
    /// tokens its answers used this minute against its `tpm_limit` (fixed one-minute windows, as
    /// LiteLLM's limiter counts): past either, 429 with the seconds until the next minute.
    pub fn take_request(&self) -> Result<(), Refusal> {
        if self.rpm_limit.is_none() && self.tpm_limit.is_none() {
            return Ok(());
        }
        let now = now();
        let mut counts = self.counts(now);
        let over = match (self.rpm_limit, self.tpm_limit) {
            (Some(rpm), _) if counts.requests >= rpm => Some(format!("rpm_limit {rpm}")),
            (_, Some(tpm)) if counts.tokens >= tpm => Some(format!("tpm_limit {tpm}")),
            _ => None,
        };
        if let Some(limit) = over {
            let retry_after = ((counts.minute + 1) as f64 * 60.0 - now).ceil().max(1.0) as u64;
            return Err(Refusal::rate_limited(
                format!(
                    "Rate limit exceeded for {}: {limit} (per sidecar instance)",
                    self.label
                ),
                retry_after,
            ));
        }
        counts.requests += 1;
        Ok(())
    }

    /// Adds the tokens an answer used to this minute's count (for `tpm_limit`).
    pub fn add_tokens(&self, tokens: u64) {
        if self.tpm_limit.is_some() {
            self.counts(now()).tokens += tokens;
        }
    }

    /// This minute's counts (a new minute starts from zero).
    fn counts(&self, now: f64) -> std::sync::MutexGuard<'_, Counts> {
        let minute = (now / 60.0) as u64;
        let mut counts = self.window.lock().unwrap_or_else(|e| e.into_inner());
        if counts.minute != minute {
            *counts = Counts {
                minute,
                ..Counts::default()
            };
        }
        counts
    }

    /// Whether the key or its team may call only some models (a list that is not empty and
    /// holds no `all-proxy-models`).
    pub fn limited_to_models(&self) -> bool {
        let limited = |list: &[String]| !list.is_empty() && !list.iter().any(|m| m == ALL_MODELS);
        limited(&self.models) || self.team.as_ref().is_some_and(|t| limited(&t.models))
    }

    /// The refusal for a key [limited to models](Self::limited_to_models) on a request whose
    /// model the sidecar cannot see (`what`: a route that names none, a body it cannot read).
    pub fn refuse_unseen_model(&self, what: &str) -> Refusal {
        Refusal::key_model(format!(
            "Authentication Error, API Key not allowed to access model. This key can only \
             access models={:?}, and {what} does not say which model it calls",
            self.models
        ))
    }

    /// Whether the key (and its team) may call `model`: an empty list or
    /// `all-proxy-models` allows every model, else the exact name must be listed.
    pub fn check_model(&self, model: &str) -> Result<(), Refusal> {
        let allows =
            |list: &[String]| list.is_empty() || list.iter().any(|m| m == model || m == ALL_MODELS);
        if !allows(&self.models) {
            return Err(Refusal::key_model(format!(
                "Authentication Error, API Key not allowed to access model. This key can only \
                 access models={:?}. Tried to access {model}",
                self.models
            )));
        }
        if let Some(team) = self.team.as_ref().filter(|t| !allows(&t.models)) {
            return Err(Refusal::team_model(format!(
                "Authentication Error, Team={} not allowed to access model. Team can only access \
                 models={:?}. Tried to access {model}",
                team.id, team.models
            )));
        }
        Ok(())
    }
}

/// The request window of the key with digest `digest`, shared by every snapshot that holds it
/// (a refresh does not reset a key's count).
fn window_for(digest: &str) -> Window {
    static WINDOWS: LazyLock<NamedState<Mutex<Counts>>> = LazyLock::new(Default::default);
    WINDOWS.get(digest)
}

/// The key a request presents: `Authorization: Bearer KEY`, else `x-api-key: KEY`.
fn presented_key(req: &RequestHeader) -> Option<&str> {
    let bearer = req
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        });
    bearer
        .or_else(|| req.headers.get("x-api-key").and_then(|v| v.to_str().ok()))
        .map(str::trim)
        .filter(|k| !k.is_empty())
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests;
