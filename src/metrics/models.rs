//! Metrics of `dispatch: model` routes, by alias and deployment (both names come from the
//! credential store, never from a request, so the label sets are bounded by the store): every
//! attempt on a deployment and how it ended, and the cooldowns the router started.

use std::sync::LazyLock;

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
