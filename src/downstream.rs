//! Client connections before (and between) requests: who may connect, how many may be open,
//! who goes when the cap is reached, and how long a connection may take to become a request.
//!
//! - **At accept** ([`AllowedNetworks`], Pingora's connection filter, before any task, TLS or
//!   buffer): a client outside `access.allowed_cidrs` is closed at once and counted.
//! - **Per connection** ([`GuardedApp`], wrapping the proxy and the fan-out services): the
//!   connection is counted in a [`ClientConnections`] from accept to close (a guard owns the
//!   count, so a connection that dies in its handshake stops counting at once). When the cap
//!   (`limits.max_client_connections`) is reached, the overload policy of [`registry`] evicts a
//!   connection that has not delivered a request yet, or else the longest idle one; only when
//!   every connection is serving a request is the new one refused. A per-source-address limit
//!   (`limits.max_client_connections_per_source`) is checked first.
//! - **Deadlines**, each shortened as the cap fills ([`registry::scaled`]): the TLS handshake
//!   (`limits.tls_handshake_timeout`, done here, not by Pingora, so it is ours to bound and
//!   count), the first request head (`limits.request_head_timeout`), and the idle time between
//!   requests (`limits.client_keepalive_timeout`, then the head deadline). HTTP/2 connections
//!   are closed by Pingora after `client_keepalive_timeout` with no stream open.

mod app;
pub mod listener_tls;
pub mod metrics;
pub mod registry;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use pingora::listeners::ConnectionFilter;
use tokio::time::Instant;

use crate::access::allowed;
use crate::config::Limits;
use crate::live_config::SharedLiveConfig;
use registry::{Caps, Phase, Refusal, Registry, Slot};

use app::{mark_head_read, mark_request_done};
pub use app::{GuardedApp, HeadMarked, TlsListeners};

/// What one listener's connections are held to (read anew for every connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionPolicy {
    /// The caps.
    pub caps: Caps,
    /// Longest TLS handshake.
    pub tls_handshake_timeout: Duration,
    /// Longest wait for a whole request head once the connection is handed over.
    pub request_head_timeout: Duration,
    /// Longest idle time between requests (the head deadline then applies on top).
    pub keepalive_timeout: Duration,
}

impl ConnectionPolicy {
    /// The proxy listeners' policy, from `limits`.
    pub fn of(limits: &Limits) -> ConnectionPolicy {
        ConnectionPolicy {
            caps: Caps {
                max_connections: limits.max_client_connections,
                max_per_source: limits.max_client_connections_per_source,
            },
            tls_handshake_timeout: limits.tls_handshake_timeout,
            request_head_timeout: limits.request_head_timeout,
            keepalive_timeout: limits.client_keepalive_timeout,
        }
    }
}

/// Counters (monotonic), exported by [`crate::metrics`].
#[derive(Debug, Default)]
pub struct ClientCounters {
    /// Refused at accept: the address is outside `access.allowed_cidrs`.
    pub refused_address: AtomicU64,
    /// Refused: the cap was reached and every connection was serving a request.
    pub refused_limit: AtomicU64,
    /// Refused: the client address already held its per-source share.
    pub refused_source: AtomicU64,
    /// Evicted to make room before delivering a request (handshake or first head).
    pub evicted_unserved: AtomicU64,
    /// Evicted to make room while idle between requests.
    pub evicted_idle: AtomicU64,
    /// Closed because no whole request head arrived in time.
    pub head_timeouts: AtomicU64,
    /// Closed because the TLS handshake took too long.
    pub handshake_timeouts: AtomicU64,
    /// TLS handshakes that failed (the client closed, or spoke something else).
    pub handshake_failures: AtomicU64,
}

/// One listener group's client connections: the count, the overload policy, the counters.
pub struct ClientConnections {
    policy: Box<dyn Fn() -> ConnectionPolicy + Send + Sync>,
    registry: Mutex<Registry>,
    /// The registry's open count, readable without its lock (deadlines scale with it).
    open: AtomicUsize,
    /// The registry's clock: milliseconds are counted from here.
    epoch: Instant,
    /// Counters.
    pub counters: ClientCounters,
}

impl ClientConnections {
    /// The proxy listeners' connections, under the limits in force in `dispatch`.
    pub fn for_proxy(live_config: SharedLiveConfig) -> Arc<ClientConnections> {
        Self::with_policy(move || ConnectionPolicy::of(&live_config.load().limits))
    }

    /// Connections held to the policy `policy` returns.
    pub fn with_policy(
        policy: impl Fn() -> ConnectionPolicy + Send + Sync + 'static,
    ) -> Arc<ClientConnections> {
        Arc::new(ClientConnections {
            policy: Box::new(policy),
            registry: Mutex::default(),
            open: AtomicUsize::new(0),
            epoch: Instant::now(),
            counters: ClientCounters::default(),
        })
    }

    /// Client connections open now (handshaking included, evicted ones not).
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// The policy in force now.
    pub fn policy(&self) -> ConnectionPolicy {
        (self.policy)()
    }

    /// The deadline `pick` chooses from the policy in force, shortened for how full the cap is
    /// now (one read of the policy).
    pub fn deadline(&self, pick: impl FnOnce(&ConnectionPolicy) -> Duration) -> Duration {
        let policy = self.policy();
        registry::scaled(pick(&policy), self.open(), policy.caps.max_connections)
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Counts a new connection from `peer`, evicting another if the cap requires it; `None`
    /// (counted) when it is refused. The count lasts as long as the returned lease.
    pub fn admit(self: &Arc<Self>, peer: SocketAddr) -> Option<Lease> {
        let caps = self.policy().caps;
        let now = self.now_ms();
        let admitted = {
            let mut registry = self.lock();
            let admitted = registry.admit(peer, caps, now);
            self.open.store(registry.open(), Ordering::Relaxed);
            admitted
        };
        let c = &self.counters;
        match admitted {
            Ok(admitted) => {
                match admitted.evicted {
                    Some(Phase::Idle) => c.evicted_idle.fetch_add(1, Ordering::Relaxed),
                    Some(_) => c.evicted_unserved.fetch_add(1, Ordering::Relaxed),
                    None => 0,
                };
                Some(Lease {
                    clients: self.clone(),
                    slot: admitted.slot,
                })
            }
            Err(Refusal::Limit) => {
                c.refused_limit.fetch_add(1, Ordering::Relaxed);
                None
            }
            Err(Refusal::Source) => {
                c.refused_source.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// A request head was read (the application's first phase). On HTTP/1 the connection's
    /// own task records it; an HTTP/2 stream runs in a task of its own and is found by `peer`.
    /// Returns whether an HTTP/2 stream was counted: hand that to [`Self::request_ended`].
    pub fn request_started(&self, peer: Option<SocketAddr>) -> bool {
        if mark_head_read() {
            return false;
        }
        let Some(peer) = peer else {
            return false;
        };
        self.lock().stream_started(peer);
        true
    }

    /// The request ended (the application's last phase); `stream_counted` is what
    /// [`Self::request_started`] returned for it.
    pub fn request_ended(&self, peer: Option<SocketAddr>, stream_counted: bool) {
        match peer {
            Some(peer) if stream_counted => {
                let now = self.now_ms();
                self.lock().stream_ended(peer, now);
            }
            _ => mark_request_done(),
        }
    }
}

impl std::fmt::Debug for ClientConnections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConnections")
            .field("open", &self.open())
            .finish_non_exhaustive()
    }
}

/// One connection's place in the count, given up when dropped (however the connection ends).
pub struct Lease {
    clients: Arc<ClientConnections>,
    slot: Arc<Slot>,
}

impl Lease {
    /// The connection's slot.
    pub fn slot(&self) -> &Arc<Slot> {
        &self.slot
    }

    /// The registry clock now, for [`Slot::request_ended`].
    pub fn now_ms(&self) -> u64 {
        self.clients.now_ms()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut registry = self.clients.lock();
        registry.remove(&self.slot);
        self.clients.open.store(registry.open(), Ordering::Relaxed);
    }
}

/// The proxy listeners' accept-time filter: `access.allowed_cidrs`, before any task or TLS.
pub struct AllowedNetworks {
    live_config: SharedLiveConfig,
    clients: Arc<ClientConnections>,
}

impl AllowedNetworks {
    /// Filters by the networks in force in `dispatch`, counting refusals in `clients`.
    pub fn new(
        live_config: SharedLiveConfig,
        clients: Arc<ClientConnections>,
    ) -> Arc<AllowedNetworks> {
        Arc::new(AllowedNetworks {
            live_config,
            clients,
        })
    }

    /// Whether `peer` may connect (a refusal is counted).
    pub fn admit(&self, peer: SocketAddr) -> bool {
        let ok = allowed(&self.live_config.load().access.allowed_cidrs, peer.ip());
        if !ok {
            self.clients
                .counters
                .refused_address
                .fetch_add(1, Ordering::Relaxed);
        }
        ok
    }
}

impl std::fmt::Debug for AllowedNetworks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AllowedNetworks").finish_non_exhaustive()
    }
}

#[async_trait]
impl ConnectionFilter for AllowedNetworks {
    async fn should_accept(&self, addr: Option<&SocketAddr>) -> bool {
        // Only TCP listeners are configured; anything else has no address to judge.
        addr.is_none_or(|peer| self.admit(*peer))
    }
}

#[cfg(test)]
mod tests;
