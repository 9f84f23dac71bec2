//! Every metric the sidecar exports, defined in one place, all in the `prometheus` default
//! registry that `pingora-prometheus` serves on the admin listener's `/metrics`.
//!
//! Request-path metrics are plain statics updated where things happen. State that already lives
//! elsewhere (the connection gate's counters, the credential snapshot) is read at scrape time by
//! a [`Collector`], so there is one source of truth and nothing to keep in sync.
//!
//! Labels are bounded: route names (from the config), status classes, credential and model
//! names (rows in the store). Never paths, client addresses, hosts from requests, or values.

mod clients;
mod logs;
mod models;
mod requests;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
};

use crate::credentials::CredentialCache;
use crate::upstream::gate::ConnectionGate;

pub use clients::{register_clients, ClientsOf};
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

/// Registers the scrape-time collectors over the gate and the credential cache. Call once.
pub fn register_state(
    gate: Arc<ConnectionGate>,
    cache: Arc<CredentialCache>,
) -> Result<(), String> {
    let gate = GateCollector::new(gate).map_err(|e| e.to_string())?;
    let cache = CacheCollector::new(cache).map_err(|e| e.to_string())?;
    prometheus::register(Box::new(gate)).map_err(|e| format!("metrics: {e}"))?;
    prometheus::register(Box::new(cache)).map_err(|e| format!("metrics: {e}"))?;
    // The process's CPU, memory and file descriptors (process_cpu_seconds_total, …) come with
    // the prometheus crate's `process` feature: its default registry collects them on Linux.
    let build = IntGaugeVec::new(
        Opts::new(
            "sidecar_build_info",
            "1, labelled with the running build's version",
        ),
        &["version"],
    )
    .map_err(|e| e.to_string())?;
    build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
    prometheus::register(Box::new(build)).map_err(|e| format!("metrics: {e}"))?;
    Ok(())
}

/// A counter whose value is owned elsewhere: set at scrape time.
fn set_counter(counter: &IntCounter, value: u64) {
    counter.reset();
    counter.inc_by(value);
}

/// The connection gate's gauges and counters.
struct GateCollector {
    gate: Arc<ConnectionGate>,
    connections: IntGaugeVec,
    limit: IntGauge,
    new_connections: IntCounter,
    reuses: IntCounter,
    waits: IntCounter,
    rejections: IntCounter,
    evictions: IntCounter,
    /// Serializes scrapes: setting a counter is a reset and an add.
    scrape: Mutex<()>,
}

impl GateCollector {
    fn new(gate: Arc<ConnectionGate>) -> prometheus::Result<GateCollector> {
        let counter = IntCounter::new;
        Ok(GateCollector {
            gate,
            connections: IntGaugeVec::new(
                Opts::new(
                    "sidecar_upstream_connections",
                    "Upstream TCP connections now, by state (open = in_use + idle + opening/closing)",
                ),
                &["state"],
            )?,
            limit: IntGauge::new(
                "sidecar_upstream_connections_limit",
                "upstream.max_connections",
            )?,
            new_connections: counter(
                "sidecar_upstream_connections_opened_total",
                "New upstream connections (TLS handshakes to providers)",
            )?,
            reuses: counter(
                "sidecar_upstream_connections_reused_total",
                "Requests served on a pooled upstream connection",
            )?,
            waits: counter(
                "sidecar_upstream_cap_waits_total",
                "Requests that waited at the connection cap",
            )?,
            rejections: counter(
                "sidecar_upstream_cap_rejections_total",
                "Requests refused (503) at the connection cap",
            )?,
            evictions: counter(
                "sidecar_upstream_cap_evictions_total",
                "Idle connections closed to make room under the cap",
            )?,
            scrape: Mutex::new(()),
        })
    }
}

impl GateCollector {
    /// Each exported counter with the gate's own counter it mirrors.
    fn counters(&self) -> [(&IntCounter, &AtomicU64); 5] {
        let c = &self.gate.counters;
        [
            (&self.new_connections, &c.new_connections),
            (&self.reuses, &c.reuses),
            (&self.waits, &c.waits),
            (&self.rejections, &c.rejections),
            (&self.evictions, &c.evictions),
        ]
    }
}

impl Collector for GateCollector {
    fn desc(&self) -> Vec<&Desc> {
        let mut descs = self.connections.desc();
        for (exported, _) in self.counters() {
            descs.extend(exported.desc());
        }
        descs.extend(self.limit.desc());
        descs
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let _scrape = self.scrape.lock().unwrap_or_else(|e| e.into_inner());
        let g = &self.gate;
        let states = [
            ("open", g.open_connections()),
            ("idle", g.idle_connections()),
            ("in_use", g.in_use_connections()),
        ];
        for (state, n) in states {
            self.connections.with_label_values(&[state]).set(n as i64);
        }
        self.limit.set(g.max_connections() as i64);
        let mut families = self.connections.collect();
        for (exported, source) in self.counters() {
            set_counter(exported, source.load(Ordering::Relaxed));
            families.extend(exported.collect());
        }
        families.extend(self.limit.collect());
        families
    }
}

/// The credential snapshot: its size, its age, and the names that failed to load.
struct CacheCollector {
    cache: Arc<CredentialCache>,
    loaded: IntGaugeVec,
    age: Gauge,
    failures: IntGaugeVec,
    last_success: Gauge,
    scrape: Mutex<()>,
}

impl CacheCollector {
    fn new(cache: Arc<CredentialCache>) -> prometheus::Result<CacheCollector> {
        Ok(CacheCollector {
            cache,
            loaded: IntGaugeVec::new(
                Opts::new(
                    "sidecar_credential_snapshot_entries",
                    "Entries in the credential snapshot, by kind (credential, model)",
                ),
                &["kind"],
            )?,
            age: Gauge::new(
                "sidecar_credential_snapshot_age_seconds",
                "Seconds since every credential source was last read successfully",
            )?,
            last_success: Gauge::new(
                "sidecar_credential_last_success_timestamp_seconds",
                "Unix time every credential source was last read successfully",
            )?,
            failures: IntGaugeVec::new(
                Opts::new(
                    "sidecar_credential_load_failures",
                    "1 for each credential or model that failed to decrypt or parse (names only)",
                ),
                &["kind", "name"],
            )?,
            scrape: Mutex::new(()),
        })
    }
}

impl Collector for CacheCollector {
    fn desc(&self) -> Vec<&Desc> {
        let mut descs = self.loaded.desc();
        descs.extend(self.age.desc());
        descs.extend(self.last_success.desc());
        descs.extend(self.failures.desc());
        descs
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let _scrape = self.scrape.lock().unwrap_or_else(|e| e.into_inner());
        let snapshot = self.cache.snapshot();
        let count = |n: usize| n as i64;
        self.loaded
            .with_label_values(&["credential"])
            .set(count(snapshot.credentials.len()));
        self.loaded
            .with_label_values(&["model"])
            .set(count(snapshot.models.len()));
        let age = self.cache.age();
        self.age.set(age.as_secs_f64());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        self.last_success.set(now.saturating_sub(age).as_secs_f64());
        self.failures.reset();
        for name in snapshot.credential_failures.keys() {
            self.failures
                .with_label_values(&["credential", name])
                .set(1);
        }
        for name in snapshot.model_failures.keys() {
            self.failures.with_label_values(&["model", name]).set(1);
        }
        let mut families = self.loaded.collect();
        families.extend(self.age.collect());
        families.extend(self.last_success.collect());
        families.extend(self.failures.collect());
        families
    }
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
