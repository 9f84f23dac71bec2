//! Client connections of one listener group, read at scrape time from [`ClientConnections`]:
//! how many are open, how many were refused (by reason), evicted by the overload policy (by
//! what they were doing) or closed by a deadline. The proxy listeners' series are
//! `sidecar_client_*`, the fan-out listener's `sidecar_fanout_client_*`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts};

use super::ClientConnections;
use crate::metrics::set_counter;

/// Whose connections a collector reports.
#[derive(Debug, Clone, Copy)]
pub enum ClientsOf {
    /// The proxy listeners (`sidecar_client_*`).
    Proxy,
    /// The fan-out listener (`sidecar_fanout_client_*`).
    Fanout,
}

/// Registers the collector for `clients`. Call once per listener group.
pub fn register(clients: Arc<ClientConnections>, of: ClientsOf) -> Result<(), String> {
    crate::metrics::register(ClientCollector::new(clients, of).map_err(|e| e.to_string())?)
}

struct ClientCollector {
    clients: Arc<ClientConnections>,
    open: IntGauge,
    limit: IntGauge,
    refused: IntCounterVec,
    evicted: IntCounterVec,
    head_timeouts: IntCounter,
    handshakes: IntCounterVec,
    /// Serializes scrapes: setting a counter is a reset and an add.
    scrape: Mutex<()>,
}

impl ClientCollector {
    fn new(clients: Arc<ClientConnections>, of: ClientsOf) -> prometheus::Result<ClientCollector> {
        let (prefix, listeners, cap) = match of {
            ClientsOf::Proxy => (
                "sidecar_client",
                "the proxy listeners",
                "limits.max_client_connections",
            ),
            ClientsOf::Fanout => (
                "sidecar_fanout_client",
                "the fan-out listener",
                "fanout.max_connections",
            ),
        };
        let counter = |name: &str, help: String, label: &str| {
            IntCounterVec::new(Opts::new(format!("{prefix}_{name}"), help), &[label])
        };
        Ok(ClientCollector {
            clients,
            open: IntGauge::new(
                format!("{prefix}_connections"),
                format!("Client connections open on {listeners} (TLS handshakes included)"),
            )?,
            limit: IntGauge::new(format!("{prefix}_connections_limit"), cap)?,
            refused: counter(
                "connections_refused_total",
                format!(
                    "Client connections closed at accept, by reason (address: outside \
                     access.allowed_cidrs; limit: {cap} open and every one serving; source: \
                     the client address's per-source limit)"
                ),
                "reason",
            )?,
            evicted: counter(
                "connections_evicted_total",
                format!(
                    "Client connections closed to make room at {cap}, by what they were doing \
                     (unserved: no request yet; idle: between requests)"
                ),
                "phase",
            )?,
            head_timeouts: IntCounter::new(
                format!("{prefix}_head_timeouts_total"),
                "Client connections closed for not sending a whole request head (or, on \
                 HTTP/2, their first stream) within limits.request_head_timeout",
            )?,
            handshakes: counter(
                "tls_handshake_failures_total",
                "Client TLS handshakes that did not complete (timeout: past \
                 limits.tls_handshake_timeout; failed: the client closed or spoke something \
                 else)"
                    .to_string(),
                "reason",
            )?,
            scrape: Mutex::new(()),
        })
    }

    fn set(&self, family: &IntCounterVec, values: &[(&str, &AtomicU64)]) {
        for (label, counter) in values {
            set_counter(
                &family.with_label_values(&[label]),
                counter.load(Ordering::Relaxed),
            );
        }
    }
}

impl Collector for ClientCollector {
    fn desc(&self) -> Vec<&Desc> {
        let mut descs = self.open.desc();
        descs.extend(self.limit.desc());
        descs.extend(self.refused.desc());
        descs.extend(self.evicted.desc());
        descs.extend(self.head_timeouts.desc());
        descs.extend(self.handshakes.desc());
        descs
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let _scrape = self.scrape.lock().unwrap_or_else(|e| e.into_inner());
        let c = &self.clients.counters;
        self.open.set(self.clients.open() as i64);
        self.limit
            .set(self.clients.policy().caps.max_connections as i64);
        self.set(
            &self.refused,
            &[
                ("address", &c.refused_address),
                ("limit", &c.refused_limit),
                ("source", &c.refused_source),
            ],
        );
        self.set(
            &self.evicted,
            &[("unserved", &c.evicted_unserved), ("idle", &c.evicted_idle)],
        );
        set_counter(&self.head_timeouts, c.head_timeouts.load(Ordering::Relaxed));
        self.set(
            &self.handshakes,
            &[
                ("timeout", &c.handshake_timeouts),
                ("failed", &c.handshake_failures),
            ],
        );
        let mut families = self.open.collect();
        families.extend(self.limit.collect());
        families.extend(self.refused.collect());
        families.extend(self.evicted.collect());
        families.extend(self.head_timeouts.collect());
        families.extend(self.handshakes.collect());
        families
    }
}
