//! Client connections on the proxy listeners, read at scrape time from
//! [`ClientConnections`]: how many are open, how many were refused at accept (by reason) and how
//! many were closed for not sending a request head in time.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts};

use super::set_counter;
use crate::downstream::ClientConnections;

/// Registers the client-connection collector. Call once.
pub fn register_clients(clients: Arc<ClientConnections>) -> Result<(), String> {
    let collector = ClientCollector::new(clients).map_err(|e| format!("metrics: {e}"))?;
    prometheus::register(Box::new(collector)).map_err(|e| format!("metrics: {e}"))
}

struct ClientCollector {
    clients: Arc<ClientConnections>,
    open: IntGauge,
    limit: IntGauge,
    refused: IntCounterVec,
    head_timeouts: IntCounter,
    /// Serializes scrapes: setting a counter is a reset and an add.
    scrape: Mutex<()>,
}

impl ClientCollector {
    fn new(clients: Arc<ClientConnections>) -> prometheus::Result<ClientCollector> {
        Ok(ClientCollector {
            clients,
            open: IntGauge::new(
                "sidecar_client_connections",
                "Client connections open on the proxy listeners (TLS handshakes included)",
            )?,
            limit: IntGauge::new(
                "sidecar_client_connections_limit",
                "limits.max_client_connections",
            )?,
            refused: IntCounterVec::new(
                Opts::new(
                    "sidecar_client_connections_refused_total",
                    "Client connections closed at accept, by reason (address: outside \
                     access.allowed_cidrs; limit: max_client_connections open)",
                ),
                &["reason"],
            )?,
            head_timeouts: IntCounter::new(
                "sidecar_client_head_timeouts_total",
                "Client connections closed for not sending a whole request head within \
                 limits.request_head_timeout",
            )?,
            scrape: Mutex::new(()),
        })
    }
}

impl Collector for ClientCollector {
    fn desc(&self) -> Vec<&Desc> {
        let mut descs = self.open.desc();
        descs.extend(self.limit.desc());
        descs.extend(self.refused.desc());
        descs.extend(self.head_timeouts.desc());
        descs
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let _scrape = self.scrape.lock().unwrap_or_else(|e| e.into_inner());
        let c = &self.clients.counters;
        self.open.set(self.clients.open() as i64);
        self.limit
            .set(self.clients.limits().max_client_connections as i64);
        for (reason, counter) in [("address", &c.refused_address), ("limit", &c.refused_limit)] {
            set_counter(
                &self.refused.with_label_values(&[reason]),
                counter.load(Ordering::Relaxed),
            );
        }
        set_counter(&self.head_timeouts, c.head_timeouts.load(Ordering::Relaxed));
        let mut families = self.open.collect();
        families.extend(self.limit.collect());
        families.extend(self.refused.collect());
        families.extend(self.head_timeouts.collect());
        families
    }
}
