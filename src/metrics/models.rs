//! Metrics of `dispatch: model` routes, by alias and deployment (both names come from the
//! credential store, never from a request, so the label sets are bounded by the store): every
//! attempt on a deployment and how it ended, and the cooldowns the router started; and tokens
//! by alias and LiteLLM key alias (keys past the first [`MAX_KEY_LABELS`] count as `other`).

#![allow(
    clippy::expect_used,
    reason = "metric names, help texts and label sets are constants: a failure is a programming error that every test run would show"
)]

use std::collections::HashSet;
use std::sync::{LazyLock, Mutex};

use prometheus::{IntCounterVec, Opts};

use super::registered;

/// Attempts on a deployment by alias, deployment and outcome (the provider's status class, or
/// `connect_error`).
pub static MODEL_ATTEMPTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    registered(
        IntCounterVec::new(
            Opts::new(
                "sidecar_model_attempts_total",
                "Attempts on a model deployment by alias, deployment and outcome",
            ),
            &["model", "deployment", "outcome"],
        )
        .expect("valid metric"),
    )
});

/// Cooldowns started by alias and deployment.
pub static MODEL_COOLDOWNS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    registered(
        IntCounterVec::new(
            Opts::new(
                "sidecar_model_cooldowns_total",
                "Cooldowns the router started, by alias and deployment",
            ),
            &["model", "deployment"],
        )
        .expect("valid metric"),
    )
});

/// Records one attempt on `deployment` of `model` that ended with `status` (0: no answer).
pub fn record_attempt(model: &str, deployment: &str, status: u16) {
    let outcome = match status {
        0 => "connect_error",
        s => super::status_class(s),
    };
    MODEL_ATTEMPTS
        .with_label_values(&[model, deployment, outcome])
        .inc();
}

/// Records a cooldown of `deployment` of `model`.
pub fn record_cooldown(model: &str, deployment: &str) {
    MODEL_COOLDOWNS
        .with_label_values(&[model, deployment])
        .inc();
}

/// Distinct key labels `sidecar_tokens_total` takes; later keys are counted as `other`.
pub const MAX_KEY_LABELS: usize = 1000;

/// Tokens providers reported, by alias (`-` on credential routes), key alias (`-` without
/// LiteLLM keys) and kind (`prompt`, `completion`).
pub static TOKENS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    registered(
        IntCounterVec::new(
            Opts::new(
                "sidecar_tokens_total",
                "Tokens providers reported, by model alias, key alias and kind",
            ),
            &["model", "key", "kind"],
        )
        .expect("valid metric"),
    )
});

/// Records the tokens one answer used.
pub fn record_tokens(model: &str, key: &str, prompt: u64, completion: u64) {
    static KEYS: LazyLock<Mutex<HashSet<String>>> = LazyLock::new(Default::default);
    let key = {
        let mut seen = KEYS.lock().unwrap_or_else(|e| e.into_inner());
        if seen.contains(key) || (seen.len() < MAX_KEY_LABELS && seen.insert(key.to_string())) {
            key
        } else {
            "other"
        }
    };
    TOKENS
        .with_label_values(&[model, key, "prompt"])
        .inc_by(prompt);
    TOKENS
        .with_label_values(&[model, key, "completion"])
        .inc_by(completion);
}
