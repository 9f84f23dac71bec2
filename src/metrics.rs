//! Every metric the sidecar exports, defined in one place, all in the `prometheus` default
//! registry that `pingora-prometheus` serves on the admin listener's `/metrics`.
//!
//! Request-path metrics are plain statics updated where things happen. State that already lives
//! elsewhere (the connection gate's counters, the credential snapshot, the client connections)
//! is read at scrape time by a [`Collector`] that lives beside that state
//! (`upstream/gate/metrics.rs`, `credentials/metrics.rs`, `downstream/metrics.rs`) and is
//! registered by the server through [`register`]: there is one source of truth and nothing to
//! keep in sync, and this module depends on nothing of the sidecar's own.
//!
//! Labels are bounded: route names (from the config), status classes, credential and model
//! names (rows in the store). Never paths, client addresses, hosts from requests, or values.

#![allow(
    clippy::expect_used,
    reason = "metric names, help texts and label sets are constants: a failure is a programming error that every test run would show"
)]

mod logs;
mod models;
mod requests;
pub mod spend;

use std::sync::LazyLock;

use prometheus::core::Collector;
use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts};

pub use logs::{suppressed_log_line, CLIENT_HEAD_READ_ERRORS};
pub use models::{record_attempt, record_cooldown, record_tokens};
pub use requests::{record_request, Origin, RouteMetrics};

/// Latency buckets (seconds): LLM calls range from milliseconds (errors, cached) to minutes.
const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

fn registered<C: Collector + Clone + 'static>(collector: C) -> C {
    prometheus::register(Box::new(collector.clone())).expect("metric registered once");
    collector
}

/// Requests by route (`-` when none matched), status class (`2xx` … `5xx`, `none` when no
/// response was written) and origin: `provider` when the answer is the provider's, `sidecar`
/// when the sidecar answered itself (a refusal, the cap, a missing credential, a failed
/// connection), so a provider's 503 is told apart from the sidecar's.
pub static REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    registered(
        IntCounterVec::new(
            Opts::new(
                "sidecar_requests_total",
                "Requests by route, status class and origin (provider or sidecar)",
            ),
            &["route", "status_class", "origin"],
        )
        .expect("valid metric"),
    )
});

/// From getting past the connection cap to the upstream's response header, by route.
pub static UPSTREAM_TTFB: LazyLock<HistogramVec> = LazyLock::new(|| {
    latency_by_route(
        "sidecar_upstream_ttfb_seconds",
        "Time from getting past the connection cap to the upstream's response header, by route",
    )
});

/// Whole request duration as the client sees it (streams included), by route.
pub static REQUEST_DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
    latency_by_route(
        "sidecar_request_duration_seconds",
        "Request duration from arrival to the last byte, by route",
    )
});

/// A registered latency histogram with a `route` label.
fn latency_by_route(name: &str, help: &str) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec());
    registered(HistogramVec::new(opts, &["route"]).expect("valid metric"))
}

/// Completed downstream TLS handshakes.
pub static DOWNSTREAM_TLS_HANDSHAKES: LazyLock<IntCounter> = LazyLock::new(|| {
    registered(
        IntCounter::new(
            "sidecar_downstream_tls_handshakes_total",
            "Completed TLS handshakes on the TLS listeners",
        )
        .expect("valid metric"),
    )
});

/// Log lines dropped because stderr could not keep up (the logger's buffer was full).
pub static LOG_LINES_DROPPED: LazyLock<IntCounter> = LazyLock::new(|| {
    registered(
        IntCounter::new(
            "sidecar_log_lines_dropped_total",
            "Log lines dropped because stderr could not keep up",
        )
        .expect("valid metric"),
    )
});

/// Database round trips cut at `credentials.postgres.query_timeout` (the connection is then
/// dropped and made again).
pub static DATABASE_TIMEOUTS: LazyLock<IntCounter> = LazyLock::new(|| {
    registered(
        IntCounter::new(
            "sidecar_database_timeouts_total",
            "Database round trips cut at query_timeout",
        )
        .expect("valid metric"),
    )
});

/// Credential refresh rounds by result (`success`: every source read; `failure`: some source
/// could not be read and its last good credentials stayed in use).
pub static REFRESHES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    registered(
        IntCounterVec::new(
            Opts::new(
                "sidecar_credential_refreshes_total",
                "Credential refresh rounds by result",
            ),
            &["result"],
        )
        .expect("valid metric"),
    )
});

/// Database change checks by kind (`version`: one read of the version row the triggers keep;
/// `full`: both tables hashed) — what polling costs the database.
pub static CHANGE_CHECKS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    registered(
        IntCounterVec::new(
            Opts::new(
                "sidecar_credential_change_checks_total",
                "Database change checks by kind (version row or full table hash)",
            ),
            &["kind"],
        )
        .expect("valid metric"),
    )
});

/// Fan-out snapshot requests answered, by result (`changed`, `unchanged`, `unauthorized`,
/// `forbidden`, `bad_request`, `unavailable`, `abandoned`: the watcher closed the connection
/// while its request waited).
pub static FANOUT_REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    registered(
        IntCounterVec::new(
            Opts::new(
                "sidecar_fanout_requests_total",
                "Fan-out snapshot requests answered, by result",
            ),
            &["result"],
        )
        .expect("valid metric"),
    )
});

/// A watcher's polls of its fan-out servers, by result (`changed`, `unchanged`, `timeout`,
/// `too_large`, `error`).
pub static WATCH_POLLS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    registered(
        IntCounterVec::new(
            Opts::new(
                "sidecar_watch_polls_total",
                "A watcher's polls of its fan-out servers, by result",
            ),
            &["result"],
        )
        .expect("valid metric"),
    )
});

/// Rows a fan-out server sent that this watcher did not ask for (dropped on receipt).
pub static WATCH_UNREQUESTED_ROWS: LazyLock<IntCounter> = LazyLock::new(|| {
    registered(
        IntCounter::new(
            "sidecar_watch_unrequested_rows_total",
            "Rows a fan-out server sent that this watcher did not ask for (ignored)",
        )
        .expect("valid metric"),
    )
});

/// Spans the OTLP exporter sent (`exported`) or could not send (`failed`: the collector
/// unreachable or refusing); the exporter's own error messages are not logged, since they may
/// quote `OTEL_EXPORTER_OTLP_HEADERS`.
pub static OTLP_SPANS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    registered(
        IntCounterVec::new(
            Opts::new(
                "sidecar_otlp_spans_total",
                "Spans sent to the OTLP collector by result",
            ),
            &["result"],
        )
        .expect("valid metric"),
    )
});

/// Minted-token mints by credential, phase (`first`, `refresh`) and outcome (`ok`, `failed`):
/// Entra ID client-credentials grants and the like (see `crate::minted`).
pub static MINTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    registered(
        IntCounterVec::new(
            Opts::new(
                "sidecar_minted_token_mints_total",
                "Token mints by credential, phase (first, refresh) and outcome (ok, failed)",
            ),
            &["credential", "phase", "outcome"],
        )
        .expect("valid metric"),
    )
});

/// Counts one mint of `credential`'s token.
pub fn record_mint(credential: &str, phase: &str, outcome: &str) {
    MINTS.with_label_values(&[credential, phase, outcome]).inc();
}

/// Config reloads (SIGHUP) by result.
pub static RELOADS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    registered(
        IntCounterVec::new(
            Opts::new("sidecar_config_reloads_total", "Config reloads by result"),
            &["result"],
        )
        .expect("valid metric"),
    )
});

/// `2xx` … `5xx` for a status code; `none` when no response was written.
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "none",
    }
}

/// Registers `sidecar_build_info`. Call once. (The process's CPU, memory and file descriptors,
/// `process_cpu_seconds_total` and the rest, come with the prometheus crate's `process` feature:
/// its default registry collects them on Linux.)
pub fn register_build_info() -> Result<(), String> {
    let build = IntGaugeVec::new(
        Opts::new(
            "sidecar_build_info",
            "1, labelled with the running build's version",
        ),
        &["version"],
    )
    .map_err(|e| e.to_string())?;
    build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
    register(build)
}

/// Registers a scrape-time collector (of state owned by another module) in the default registry.
pub fn register(collector: impl Collector + 'static) -> Result<(), String> {
    prometheus::register(Box::new(collector)).map_err(|e| format!("metrics: {e}"))
}

/// A counter whose value is owned elsewhere: set at scrape time.
pub fn set_counter(counter: &IntCounter, value: u64) {
    counter.reset();
    counter.inc_by(value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes() {
        assert_eq!(status_class(200), "2xx");
        assert_eq!(status_class(404), "4xx");
        assert_eq!(status_class(503), "5xx");
        assert_eq!(status_class(0), "none");
    }
}
