//! The connection gate's gauges and counters, read from the gate at scrape time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounter, IntGauge, IntGaugeVec, Opts};

use super::ConnectionGate;
use crate::metrics::set_counter;

/// Registers the gate's collector. Call once.
pub fn register(gate: Arc<ConnectionGate>) -> Result<(), String> {
    crate::metrics::register(GateCollector::new(gate).map_err(|e| e.to_string())?)
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
