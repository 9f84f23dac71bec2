//! Client connections before (and between) requests: who may connect, how many may be open,
//! and how long one may take to send a request head.
//!
//! - **At accept** ([`ClientConnections`] as Pingora's connection filter, before any TLS
//!   handshake or buffer): a client outside `access.allowed_cidrs` is refused, and so is any
//!   connection past `limits.max_client_connections`. A refused connection is closed at once
//!   and counted (`sidecar_client_connections_refused_total{reason}`); it has cost a socket
//!   and nothing else.
//! - **Per request** ([`GuardedApp`], wrapping the proxy service): a connection that has not
//!   delivered a whole request head within `limits.request_head_timeout` of being handed over
//!   (after the TLS handshake, which Pingora bounds at 60 s) is closed and counted; on a kept-alive
//!   connection the clock starts again when a request ends and allows
//!   `limits.client_keepalive_timeout` of idleness on top. HTTP/2 connections are exempt from
//!   the head deadline (their streams are multiplexed; Pingora bounds them) but counted.
//!
//! Counting: a connection is counted from accept. Until the application sees it (after the TLS
//! handshake) it is "pending"; a pending entry older than Pingora's handshake limit is dropped,
//! since its handshake failed or timed out. A connection is forgotten when its last request ends
//! without keep-alive.

mod app;

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use pingora::listeners::ConnectionFilter;
use tokio::time::Instant;

use crate::access::allowed;
use crate::config::Limits;
use crate::proxy::dispatch::SharedDispatch;

pub use app::{mark_head_read, mark_request_done, GuardedApp};

/// Pingora gives a TLS handshake at most 60 s; a pending entry older than this never will be
/// handed over.
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(61);

/// Counters (monotonic), exported by [`crate::metrics`].
#[derive(Debug, Default)]
pub struct ClientCounters {
    /// Refused at accept: the address is outside `access.allowed_cidrs`.
    pub refused_address: AtomicU64,
    /// Refused at accept: `limits.max_client_connections` were open.
    pub refused_limit: AtomicU64,
    /// Closed because no whole request head arrived in time.
    pub head_timeouts: AtomicU64,
}

/// Which client connections are open; see the module docs.
#[derive(Debug, Default)]
struct Tracked {
    /// Accepted, not yet handed to the application (TLS handshake in progress), by peer.
    pending: HashMap<SocketAddr, Instant>,
    /// Accept order of `pending`, for expiry (entries already handed over are skipped).
    pending_order: VecDeque<(Instant, SocketAddr)>,
    /// Handed to the application and not yet closed.
    open: HashSet<SocketAddr>,
}

impl Tracked {
    fn expire_pending(&mut self, now: Instant) {
        while let Some(&(at, peer)) = self.pending_order.front() {
            if now.duration_since(at) < HANDSHAKE_LIMIT {
                break;
            }
            self.pending_order.pop_front();
            if self.pending.get(&peer) == Some(&at) {
                self.pending.remove(&peer);
            }
        }
    }

    fn count(&self) -> usize {
        self.pending.len() + self.open.len()
    }
}

/// The proxy listeners' client connections: the accept-time filter and the count.
pub struct ClientConnections {
    dispatch: SharedDispatch,
    tracked: Mutex<Tracked>,
    /// Counters.
    pub counters: ClientCounters,
}

impl ClientConnections {
    /// Tracks connections under the access rules and limits in force in `dispatch`.
    pub fn new(dispatch: SharedDispatch) -> Arc<ClientConnections> {
        Arc::new(ClientConnections {
            dispatch,
            tracked: Mutex::new(Tracked::default()),
            counters: ClientCounters::default(),
        })
    }

    /// Client connections open now (handshaking included).
    pub fn open(&self) -> usize {
        let mut tracked = self.lock();
        tracked.expire_pending(Instant::now());
        tracked.count()
    }

    /// The limits in force now (they change on reload).
    pub fn limits(&self) -> Limits {
        self.dispatch.load().limits
    }

    fn lock(&self) -> MutexGuard<'_, Tracked> {
        self.tracked.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Decides on a new connection from `peer`, and counts it when accepted.
    pub fn admit(&self, peer: SocketAddr) -> bool {
        let dispatch = self.dispatch.load();
        if !allowed(&dispatch.access.allowed_cidrs, peer.ip()) {
            self.counters
                .refused_address
                .fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let now = Instant::now();
        let mut tracked = self.lock();
        tracked.expire_pending(now);
        if tracked.count() as u64 >= dispatch.limits.max_client_connections {
            drop(tracked);
            self.counters.refused_limit.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        tracked.pending.insert(peer, now);
        tracked.pending_order.push_back((now, peer));
        true
    }

    /// The application starts serving `peer`'s connection (its TLS handshake is done).
    fn start_request(&self, peer: SocketAddr) {
        let mut tracked = self.lock();
        tracked.pending.remove(&peer);
        tracked.open.insert(peer);
    }

    /// `peer`'s connection is closed.
    fn closed(&self, peer: SocketAddr) {
        self.lock().open.remove(&peer);
    }
}

impl std::fmt::Debug for ClientConnections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConnections")
            .field("open", &self.open())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl ConnectionFilter for ClientConnections {
    async fn should_accept(&self, addr: Option<&SocketAddr>) -> bool {
        // Only TCP listeners are configured; anything else has no address to judge.
        addr.is_none_or(|peer| self.admit(*peer))
    }
}

#[cfg(test)]
mod tests;
