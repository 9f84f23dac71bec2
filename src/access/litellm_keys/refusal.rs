//! Why a LiteLLM virtual key was refused, as LiteLLM's proxy answers it: the HTTP status, the
//! error `type` (a value of LiteLLM's `ProxyErrorTypes`) and `param`.
//!
//! The pairs are LiteLLM 1.106.2's: `tests/it/litellm_parity.rs` asks the real `litellm`
//! package (its `_as_proxy_exception`, `can_key_call_model`, `can_team_access_model`,
//! `virtual_key_max_budget_check`, …) for the same cases and compares.

/// A refusal: the status and the body's fields, the way LiteLLM sends them.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    /// HTTP status (401, 403, 422 for a budget, 429 for a rate limit).
    pub status: u16,
    /// LiteLLM's error `type`.
    pub kind: &'static str,
    /// LiteLLM's `param`: the field the refusal is about (`key`, `model`), `None` as LiteLLM
    /// spells it for a generic authentication error, else absent. LiteLLM puts an abbreviation
    /// of the key here for an expired key; the sidecar puts nothing of a key in a response.
    pub param: Option<&'static str>,
    /// The message (names the model or the key's label, never the key).
    pub message: String,
    /// Seconds until a rate-limited key may try again.
    pub retry_after: Option<u64>,
}

impl Refusal {
    fn of(status: u16, kind: &'static str, param: Option<&'static str>, message: String) -> Self {
        Refusal {
            status,
            kind,
            param,
            message,
            retry_after: None,
        }
    }

    /// A generic authentication failure (no key, a blocked key or team): 401 `auth_error`,
    /// which LiteLLM answers for any plain exception its checks raise.
    pub(super) fn auth(message: impl Into<String>) -> Self {
        Self::of(401, "auth_error", Some("None"), message.into())
    }

    /// A key that is not in LiteLLM's key table (never created, or deleted): 401
    /// `token_not_found_in_db`.
    pub(super) fn unknown_key() -> Self {
        Self::of(
            401,
            "token_not_found_in_db",
            Some("key"),
            "Authentication Error, Invalid proxy server token passed. The key was not found; \
             create one with LiteLLM's /key/generate"
                .into(),
        )
    }

    /// A key past its `expires`: 401 `expired_key`.
    pub(super) fn expired(message: String) -> Self {
        Self::of(401, "expired_key", None, message)
    }

    /// The key may not call the model: 403 `key_model_access_denied`.
    pub(super) fn key_model(message: String) -> Self {
        Self::of(403, "key_model_access_denied", Some("model"), message)
    }

    /// The key's team may not call the model: 403 `team_model_access_denied`.
    pub(super) fn team_model(message: String) -> Self {
        Self::of(403, "team_model_access_denied", Some("model"), message)
    }

    /// The key's or its team's spend reached `max_budget`: `budget_exceeded`, with LiteLLM's
    /// default `budget_exceeded_status_code`, 422.
    pub(super) fn budget(message: String) -> Self {
        Self::of(422, "budget_exceeded", None, message)
    }

    /// Past the key's `rpm_limit` or `tpm_limit` in this instance: 429 `throttling_error`, with
    /// the seconds until the window turns.
    pub(super) fn rate_limited(message: String, retry_after: u64) -> Self {
        Refusal {
            retry_after: Some(retry_after),
            ..Self::of(429, "throttling_error", None, message)
        }
    }
}
