//! Metrics of the log itself: lines of other crates' repetitive records left out, and the client
//! connections whose request head Pingora could not read (see `logging::repeats`).

#![allow(
    clippy::expect_used,
    reason = "metric names, help texts and label sets are constants: a failure is a programming error that every test run would show"
)]

use std::sync::LazyLock;

use prometheus::{IntCounter, IntCounterVec, Opts};

use super::registered;

/// Client connections whose request head could not be read (the client closed or reset the
/// connection mid-head, or sent what could not be read), as Pingora logs them.
pub static CLIENT_HEAD_READ_ERRORS: LazyLock<IntCounter> = LazyLock::new(|| {
    registered(
        IntCounter::new(
            "sidecar_client_head_read_errors_total",
            "Client connections whose request head could not be read (closed or reset mid-head)",
        )
        .expect("valid metric"),
    )
});

/// Other crates' log lines not written because a line of the same kind was written within the
/// window, by target (a crate's module path: a bounded set).
static SUPPRESSED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    registered(
        IntCounterVec::new(
            Opts::new(
                "sidecar_log_lines_suppressed_total",
                "Other crates' repetitive log lines not written, by target",
            ),
            &["target"],
        )
        .expect("valid metric"),
    )
});

/// Counts one line of `target` not written.
pub fn suppressed_log_line(target: &str) {
    SUPPRESSED.with_label_values(&[target]).inc();
}
