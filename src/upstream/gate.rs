//! The exact upstream connection cap: at no instant are more than `upstream.max_connections`
//! TCP connections to upstreams open, counted at the socket level across every upstream, idle
//! pooled ones included.
//!
//! Pingora has no such cap, but it calls `PeerOptions::custom_l4` for every *new* connection
//! (never for pooled reuse) and tells the peer's tracer when a connection's stream is dropped.
//! [`GateConnector`] takes a slot before the socket exists and hands it to the stream;
//! [`GateTracer`] gives it back once the stream (pooled or not) is dropped **and** the provider
//! has closed its end too, or, past [`LINGER`], once the gate has reset the connection; so the
//! provider never holds more than the cap either. This file is the accounting (slots, claims,
//! connections registered and released); `connection.rs` is one connection and its [`State`];
//! `waiting.rs` is the waiting at the cap and the making of room; `connector.rs` is the Pingora
//! glue; `lease.rs` is what one request holds at the gate ([`Lease`]), with a method for each
//! proxy phase that touches it.
//!
//! Waiting: a request first waits in `ConnectionGate::admit` (before Pingora looks in its pool)
//! until it can claim a connection to its upstream idle in the pool, or reserve a slot for a new
//! one, so a burst to one upstream reuses connections instead of churning them; meanwhile it
//! half-closes idle connections to *other* upstreams to make room. A request that still finds
//! itself connecting without a reserved slot waits in the connector the same way. Past
//! `upstream.pool_wait_timeout` it fails with [`LIMIT_REACHED`] (a 503; nothing is sent).
//!
//! A connection's [`State`]: `InUse` → `Idle` (back in Pingora's pool) → `Claimed` (an admitted
//! request counts on it) → `InUse` again; or `Idle` → `Closing` (half-closed to make room). A claim
//! is a count per upstream, not a promise of one socket: Pingora's pool picks which idle
//! connection a request gets, so `ConnectionGate::start_using` moves claims between connections
//! to keep the number of `Claimed` connections equal to the claims outstanding.

mod connection;
mod connector;
mod lease;
pub mod metrics;
#[cfg(test)]
mod tests;
mod waiting;

use std::collections::HashMap;
use std::net::{Shutdown, SocketAddr as InetAddr};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

pub use connection::{Connection, State};
pub use connector::{GateConnector, GateTracer};
pub use lease::Lease;

/// The error type of a request refused at the cap.
pub const LIMIT_REACHED: &str = "UpstreamConnectionLimit";
/// How often a waiting request re-checks and tries to make room.
const RECHECK_EVERY: Duration = Duration::from_millis(50);
/// An idle connection younger than this is not closed to make room: a request is most likely
/// taking it from the pool right now.
const MIN_IDLE_TO_EVICT: Duration = Duration::from_millis(50);
/// How long a dropped connection waits for the provider to close its end before its slot is
/// given back anyway.
pub const LINGER: Duration = Duration::from_secs(1);

/// What [`ConnectionGate::admit`] reserved for a request.
#[derive(Debug)]
enum Admission {
    /// A claim on a connection to the upstream idle in the pool: Pingora will reuse one.
    Pooled,
    /// A slot for a new connection, to travel with the request's peer into the connector.
    NewConnection(OwnedSemaphorePermit),
}

/// A slot reserved by [`ConnectionGate::admit`] for one request, shared between the request's
/// peer (its connector uses it) and the request's [`Lease`] (which gives it back when a pooled
/// connection was reused instead).
type Reservation = Arc<Mutex<Option<OwnedSemaphorePermit>>>;

/// Counters (monotonic), exported by [`crate::metrics`].
#[derive(Debug, Default)]
pub struct GateCounters {
    /// New upstream connections made.
    pub new_connections: AtomicU64,
    /// Requests that reused a pooled connection.
    pub reuses: AtomicU64,
    /// Requests that had to wait at the cap.
    pub waits: AtomicU64,
    /// Requests refused at the cap.
    pub rejections: AtomicU64,
    /// Idle connections closed to make room.
    pub evictions: AtomicU64,
}

/// The shared state of the cap.
#[derive(Debug)]
pub struct ConnectionGate {
    max: usize,
    slots: Arc<Semaphore>,
    wait_timeout: Duration,
    connect_timeout: Duration,
    open: Mutex<HashMap<RawFd, Arc<Connection>>>,
    /// Signalled when a slot comes back or a connection goes idle.
    changed: Notify,
    epoch: Instant,
    /// Counters.
    pub counters: GateCounters,
}

impl ConnectionGate {
    /// A gate allowing `max` open connections.
    pub fn new(
        max: usize,
        wait_timeout: Duration,
        connect_timeout: Duration,
    ) -> Arc<ConnectionGate> {
        Arc::new(ConnectionGate {
            max,
            slots: Arc::new(Semaphore::new(max)),
            wait_timeout,
            connect_timeout,
            open: Mutex::new(HashMap::new()),
            changed: Notify::new(),
            epoch: Instant::now(),
            counters: GateCounters::default(),
        })
    }

    /// Slots taken now: connections in use, idle, being established or closing, and slots
    /// reserved for connections about to be made.
    pub fn open_connections(&self) -> usize {
        self.max - self.slots.available_permits()
    }

    /// The cap, `upstream.max_connections`.
    pub fn max_connections(&self) -> usize {
        self.max
    }

    /// Connections carrying a request now.
    pub fn in_use_connections(&self) -> usize {
        self.count(|s| s == State::InUse)
    }

    /// Idle pooled connections now (claimed or not).
    pub fn idle_connections(&self) -> usize {
        self.count(|s| matches!(s, State::Idle | State::Claimed))
    }

    fn count(&self, wanted: impl Fn(State) -> bool) -> usize {
        self.lock_open()
            .values()
            .filter(|c| wanted(c.state()))
            .count()
    }

    /// The connection whose socket is `fd`, as Pingora reports it in `connected_to_upstream`.
    fn connection(&self, fd: RawFd) -> Option<Arc<Connection>> {
        self.lock_open().get(&fd).cloned()
    }

    /// Marks a connection as back in the pool, waking requests waiting for one.
    fn set_idle(&self, conn: &Connection) {
        conn.idle_since.store(self.now_ms(), Ordering::Relaxed);
        if conn.move_state(State::InUse, State::Idle) {
            self.changed.notify_waiters();
        }
    }

    /// Marks `conn` as carrying a request that Pingora gave it (new or pooled). `claimed` says
    /// whether the request held a claim from [`admit`](Self::admit): if Pingora handed it a
    /// different connection than the claimed one, the claim moves so that the number of
    /// claimed connections stays the number of claims outstanding.
    fn start_using(&self, conn: &Connection, claimed: bool) {
        let was = conn.swap_state(State::InUse);
        match (claimed, was == State::Claimed) {
            // Its claim was spent elsewhere: give one claimed connection back to the pool.
            (true, false) => self.drop_claim(conn.peer),
            // It took a connection another request had claimed: that claim moves to another
            // idle connection, if there is one (else that request will connect anew).
            (false, true) => {
                self.move_one(conn.peer, State::Idle, State::Claimed);
            }
            _ => {}
        }
    }

    /// Gives back a claim a request did not use (it failed before connecting, or retried).
    fn drop_claim(&self, peer: InetAddr) {
        if self.move_one(peer, State::Claimed, State::Idle) {
            self.changed.notify_waiters();
        }
    }

    /// Moves one connection to `peer` from `from` to `to`; returns whether there was one.
    /// A scan that stops at the first match: measured with 645 idle connections to 10 upstreams
    /// it costs ~160 instructions per request (0.1 %), less than a per-upstream index costs to
    /// keep (+2.5 %; benches/README.md). It reads every connection only when `peer` has none in `from`,
    /// which is when a new connection (a TLS handshake) is made anyway.
    fn move_one(&self, peer: InetAddr, from: State, to: State) -> bool {
        self.lock_open()
            .values()
            .any(|c| c.peer == peer && c.move_state(from, to))
    }

    /// Gives back a reserved slot the request did not need (it reused a pooled connection).
    fn unreserve(&self, reserved: &Reservation) {
        let slot = reserved.lock().unwrap_or_else(|e| e.into_inner()).take();
        if slot.is_some() {
            drop(slot);
            self.changed.notify_waiters();
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn lock_open(&self) -> MutexGuard<'_, HashMap<RawFd, Arc<Connection>>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a connection just made with `permit`'s slot, which from now on belongs to it
    /// (given back by [`release`](Self::release)). `handle` is a second handle on its socket.
    fn register(
        &self,
        permit: OwnedSemaphorePermit,
        fd: RawFd,
        peer: InetAddr,
        handle: Option<std::net::TcpStream>,
    ) -> Arc<Connection> {
        let conn = Arc::new(Connection {
            fd,
            peer,
            state: AtomicU8::new(State::InUse as u8),
            idle_since: AtomicU64::new(0),
            handle: Mutex::new(handle),
        });
        permit.forget();
        self.lock_open().insert(fd, conn.clone());
        self.counters
            .new_connections
            .fetch_add(1, Ordering::Relaxed);
        conn
    }

    /// Called when Pingora drops a connection's stream: half-closes it, and once the provider
    /// has closed its end (or, past [`LINGER`], after resetting the connection) closes our handle
    /// and frees the slot.
    fn release(self: &Arc<Self>, conn: &Arc<Connection>) {
        {
            let mut open = self.lock_open();
            if open.get(&conn.fd).is_some_and(|c| Arc::ptr_eq(c, conn)) {
                open.remove(&conn.fd);
            }
        }
        let handle = conn.handle.lock().unwrap_or_else(|e| e.into_inner()).take();
        let runtime = tokio::runtime::Handle::try_current();
        let (Some(handle), Ok(runtime)) = (handle, runtime) else {
            self.give_back_slot();
            return;
        };
        let gate = self.clone();
        runtime.spawn(async move {
            let _ = handle.shutdown(Shutdown::Write);
            if handle.set_nonblocking(true).is_ok() {
                if let Ok(mut stream) = TcpStream::from_std(handle) {
                    let closed = tokio::time::timeout(LINGER, wait_for_eof(&mut stream)).await;
                    if closed.is_err() {
                        // The provider still holds its end: reset the connection, so that when
                        // the slot is reused it has no socket left either.
                        let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
                    }
                }
            }
            gate.give_back_slot();
        });
    }

    fn give_back_slot(&self) {
        self.slots.add_permits(1);
        self.changed.notify_waiters();
    }
}

/// Reads (and discards) until the provider closes its end.
async fn wait_for_eof(stream: &mut TcpStream) {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 1024];
    while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
}
