//! The bookkeeping of open client connections, and the overload policy that decides who goes
//! when the cap is reached.
//!
//! Every connection is a [`Slot`] from accept to close; its [`Phase`] says what it is doing.
//! Phases change on the connection's own task (atomics, no lock) or, for HTTP/2 streams, under
//! the registry lock. When a new connection arrives with the cap reached, the registry evicts
//! one that is doing nothing for anyone, in this order (Envoy's overload manager and nginx's
//! reuse of keep-alive connections do the same):
//!
//! 1. the oldest connection that has not yet delivered its first request head (a TLS handshake
//!    in progress, or a partial head): it has cost the attacker nothing but a socket;
//! 2. the connection idle the longest between requests (HTTP/1 keep-alive, HTTP/2 with no
//!    stream open).
//!
//! A connection serving a request is never evicted. With none to evict, the new connection is
//! refused. A per-source-address limit, checked first, keeps one client address from taking
//! the whole cap.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

/// What a connection is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// Accepted; its TLS handshake is in progress.
    Handshaking = 0,
    /// Handed to the application; no request head has arrived yet.
    Fresh = 1,
    /// Serving at least one request.
    Busy = 2,
    /// Between requests (HTTP/1 keep-alive, or HTTP/2 with no stream open).
    Idle = 3,
    /// Told to close by the overload policy; on its way out.
    Evicted = 4,
}

impl Phase {
    fn from_u8(value: u8) -> Phase {
        match value {
            0 => Phase::Handshaking,
            1 => Phase::Fresh,
            2 => Phase::Busy,
            3 => Phase::Idle,
            _ => Phase::Evicted,
        }
    }

    /// The eviction class: lower goes first; `None` is never evicted.
    fn eviction_class(self) -> Option<u8> {
        match self {
            Phase::Handshaking | Phase::Fresh => Some(0),
            Phase::Idle => Some(1),
            Phase::Busy | Phase::Evicted => None,
        }
    }
}

/// One open client connection.
#[derive(Debug)]
pub struct Slot {
    id: u64,
    peer: SocketAddr,
    phase: AtomicU8,
    /// Milliseconds (registry clock) of the last move into `Idle`, or of accept.
    since_ms: AtomicU64,
    /// HTTP/2 streams in flight (changed under the registry lock).
    streams: AtomicU32,
    /// Signalled once when the overload policy evicts this connection.
    pub evicted: Notify,
}

impl Slot {
    /// The phase now.
    pub fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Acquire))
    }

    /// Moves from `from` to `to`; false when the phase was another (e.g. already evicted).
    fn advance(&self, from: Phase, to: Phase) -> bool {
        self.phase
            .compare_exchange(from as u8, to as u8, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// The TLS handshake is done (or there was none): the application has the connection.
    pub fn handed_over(&self) {
        self.advance(Phase::Handshaking, Phase::Fresh);
    }

    /// A request head arrived: the connection is serving and may not be evicted.
    pub fn request_started(&self) {
        let _ = self.advance(Phase::Fresh, Phase::Busy) || self.advance(Phase::Idle, Phase::Busy);
    }

    /// The request ended; the connection waits for the next one (`now_ms`: registry clock).
    pub fn request_ended(&self, now_ms: u64) {
        self.since_ms.store(now_ms, Ordering::Release);
        self.advance(Phase::Busy, Phase::Idle);
    }
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The cap was reached and no connection could be evicted.
    Limit,
    /// Its address already holds `max_per_source` connections.
    Source,
}

/// The limits the registry enforces (read anew for every connection; they change on reload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// Connections open at once.
    pub max_connections: u64,
    /// Connections open at once from one client address (`None`: no such limit).
    pub max_per_source: Option<u64>,
}

/// What an accepted connection brought about.
#[derive(Debug)]
pub struct Admitted {
    /// The new connection's slot.
    pub slot: Arc<Slot>,
    /// The connection evicted to make room, in the phase it was evicted from.
    pub evicted: Option<Phase>,
}

/// The open connections; see the module docs.
#[derive(Debug, Default)]
pub struct Registry {
    /// By id, which is accept order.
    slots: BTreeMap<u64, Arc<Slot>>,
    /// By peer address, for HTTP/2 streams (whose tasks only know their peer).
    by_peer: HashMap<SocketAddr, Arc<Slot>>,
    per_source: HashMap<IpAddr, u64>,
    /// Evicted and not yet closed: they no longer count against the cap.
    leaving: usize,
    next_id: u64,
}

impl Registry {
    /// Connections counted against the cap.
    pub fn open(&self) -> usize {
        self.slots.len() - self.leaving
    }

    /// Decides on a new connection from `peer` at `now_ms`; evicts one when the cap is reached.
    pub fn admit(
        &mut self,
        peer: SocketAddr,
        caps: Caps,
        now_ms: u64,
    ) -> Result<Admitted, Refusal> {
        let from_source = self.per_source.get(&peer.ip()).copied().unwrap_or(0);
        if caps.max_per_source.is_some_and(|max| from_source >= max) {
            return Err(Refusal::Source);
        }
        let mut evicted = None;
        if self.open() as u64 >= caps.max_connections {
            evicted = Some(self.evict_one().ok_or(Refusal::Limit)?);
        }
        let id = self.next_id;
        self.next_id += 1;
        let slot = Arc::new(Slot {
            id,
            peer,
            phase: AtomicU8::new(Phase::Handshaking as u8),
            since_ms: AtomicU64::new(now_ms),
            streams: AtomicU32::new(0),
            evicted: Notify::new(),
        });
        self.slots.insert(id, slot.clone());
        self.by_peer.insert(peer, slot.clone());
        *self.per_source.entry(peer.ip()).or_default() += 1;
        Ok(Admitted { slot, evicted })
    }

    /// Evicts the first connection by the module's order; returns the phase it had.
    fn evict_one(&mut self) -> Option<Phase> {
        loop {
            let mut best: Option<(u8, u64, &Arc<Slot>)> = None;
            for slot in self.slots.values() {
                let Some(class) = slot.phase().eviction_class() else {
                    continue;
                };
                // Class 0 in accept order (ids), class 1 by how long it has been idle.
                let age = if class == 0 {
                    slot.id
                } else {
                    slot.since_ms.load(Ordering::Acquire)
                };
                if best.is_none_or(|(c, a, _)| (class, age) < (c, a)) {
                    best = Some((class, age, slot));
                }
                if class == 0 {
                    // Accept order: the first class-0 slot is the oldest one.
                    break;
                }
            }
            let slot = best?.2.clone();
            let phase = slot.phase();
            // The connection's task may have moved on since it was read; then look again.
            if phase.eviction_class().is_some() && slot.advance(phase, Phase::Evicted) {
                self.leaving += 1;
                slot.evicted.notify_one();
                return Some(phase);
            }
        }
    }

    /// `slot`'s connection closed.
    pub fn remove(&mut self, slot: &Slot) {
        if self.slots.remove(&slot.id).is_none() {
            return;
        }
        if slot.phase() == Phase::Evicted {
            self.leaving -= 1;
        }
        if self
            .by_peer
            .get(&slot.peer)
            .is_some_and(|s| s.id == slot.id)
        {
            self.by_peer.remove(&slot.peer);
        }
        if let Some(count) = self.per_source.get_mut(&slot.peer.ip()) {
            *count -= 1;
            if *count == 0 {
                self.per_source.remove(&slot.peer.ip());
            }
        }
    }

    /// An HTTP/2 stream of `peer`'s connection started.
    pub fn stream_started(&mut self, peer: SocketAddr) {
        if let Some(slot) = self.by_peer.get(&peer) {
            slot.streams.fetch_add(1, Ordering::Relaxed);
            slot.request_started();
        }
    }

    /// An HTTP/2 stream of `peer`'s connection ended at `now_ms`.
    pub fn stream_ended(&mut self, peer: SocketAddr, now_ms: u64) {
        if let Some(slot) = self.by_peer.get(&peer) {
            let left = slot.streams.load(Ordering::Relaxed).saturating_sub(1);
            slot.streams.store(left, Ordering::Relaxed);
            if left == 0 {
                slot.request_ended(now_ms);
            }
        }
    }
}

/// A deadline shortened as the cap fills (Envoy's "reduce timeouts" overload action): the full
/// `base` up to half the cap, then linearly down to a tenth of it when full, never below
/// [`SCALED_FLOOR`] (or `base`, when that is shorter).
pub fn scaled(base: Duration, open: usize, cap: u64) -> Duration {
    let fill = open as f64 / cap.max(1) as f64;
    if fill <= 0.5 {
        return base;
    }
    let factor = 1.0 - 1.8 * (fill.min(1.0) - 0.5);
    base.mul_f64(factor).max(SCALED_FLOOR.min(base))
}

/// The shortest a scaled deadline gets.
pub const SCALED_FLOOR: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests;
