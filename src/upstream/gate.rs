//! The exact upstream connection cap: at no instant are more than `upstream.max_connections`
//! TCP connections to upstreams open, counted at the socket level across every upstream, idle
//! pooled ones included.
//!
//! Pingora has no such cap, but it calls [`PeerOptions::custom_l4`] for every *new* connection
//! (never for pooled reuse) and tells the peer's tracer when a connection's stream is dropped.
//! [`GateConnector`] takes a slot before the socket exists and hands it to the stream;
//! [`GateTracer`] gives it back once the stream (pooled or not) is dropped **and** the provider
//! has closed its end too (or [`LINGER`] passed), so the provider never sees more than the cap
//! either.
//!
//! Waiting: a request first waits in [`ConnectionGate::admit`] (before Pingora looks in its pool)
//! until it can reserve a connection to its upstream idle in the pool, or a slot for a new one,
//! so a burst to one upstream reuses connections instead of churning them; meanwhile it
//! half-closes idle connections to *other* upstreams to make room. A request that still finds
//! itself connecting without a reserved slot waits in the connector the same way. Past
//! `upstream.pool_wait_timeout` it fails with [`LIMIT_REACHED`] (a 503; nothing is sent).
//!
//! Which connection a tracer belongs to: Pingora calls the tracer's `on_connected` right after
//! `custom_l4` returns, on the same thread with no await in between, so the connector leaves the
//! new connection in a thread-local slot that `on_connected` takes.
//!
//! [`PeerOptions::custom_l4`]: pingora::upstreams::peer::PeerOptions

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{Shutdown, SocketAddr as InetAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use log::debug;
use pingora::connectors::L4Connect;
use pingora::protocols::l4::socket::SocketAddr;
use pingora::protocols::l4::stream::Stream;
use pingora::upstreams::peer::Tracing;
use pingora::{Error, ErrorType};
use tokio::net::TcpStream;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

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

thread_local! {
    /// The connection `GateConnector::connect` just made, for the tracer's `on_connected`.
    static JUST_CONNECTED: RefCell<Option<Arc<Connection>>> = const { RefCell::new(None) };
}

/// One open upstream connection.
#[derive(Debug)]
pub struct Connection {
    fd: RawFd,
    peer: InetAddr,
    idle: AtomicBool,
    /// When it last went idle, in milliseconds since the gate was made.
    idle_since: AtomicU64,
    /// A second handle on the socket, to half-close an idle connection from outside Pingora's
    /// pool and to wait for the provider's close. Taken when Pingora drops the stream.
    handle: Mutex<Option<std::net::TcpStream>>,
}

impl Connection {
    /// Marks the connection as carrying a request.
    pub fn set_in_use(&self) {
        self.idle.store(false, Ordering::Relaxed);
    }
}

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

    /// Connections open now (in use, idle, being established, or closing).
    pub fn open_connections(&self) -> usize {
        self.max - self.slots.available_permits()
    }

    /// The cap, `upstream.max_connections`.
    pub fn max_connections(&self) -> usize {
        self.max
    }

    /// Connections carrying a request now.
    pub fn in_use_connections(&self) -> usize {
        self.lock_open()
            .values()
            .filter(|c| !c.idle.load(Ordering::Relaxed))
            .count()
    }

    /// Idle pooled connections now.
    pub fn idle_connections(&self) -> usize {
        self.lock_open()
            .values()
            .filter(|c| c.idle.load(Ordering::Relaxed))
            .count()
    }

    /// The connection whose socket is `fd`, as Pingora reports it in `connected_to_upstream`.
    pub fn connection(&self, fd: RawFd) -> Option<Arc<Connection>> {
        self.lock_open().get(&fd).cloned()
    }

    /// Marks a connection as back in the pool, waking requests waiting for one.
    pub fn set_idle(&self, conn: &Connection) {
        conn.idle_since.store(self.now_ms(), Ordering::Relaxed);
        conn.idle.store(true, Ordering::Relaxed);
        self.changed.notify_waiters();
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn lock_open(&self) -> MutexGuard<'_, HashMap<RawFd, Arc<Connection>>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until a request to `peer` can go ahead without tripping the cap, and reserves
    /// what lets it: a connection to `peer` idle in the pool (claimed, so concurrent waiters do
    /// not count it twice; returns `None`) or a slot for a new connection (returned, to travel
    /// with the request's peer into [`GateConnector::connect`]). Meanwhile idle connections to
    /// other upstreams are half-closed to make room. Gives up (503) after the wait timeout.
    pub async fn admit(&self, peer: InetAddr) -> Result<Option<OwnedSemaphorePermit>, Box<Error>> {
        let deadline = Instant::now() + self.wait_timeout;
        let slot = self.slots.clone().acquire_owned();
        tokio::pin!(slot);
        let mut counted = false;
        loop {
            let changed = self.changed.notified();
            if self.claim_idle_to(peer) {
                return Ok(None);
            }
            if let Ok(permit) = self.slots.clone().try_acquire_owned() {
                return Ok(Some(permit));
            }
            if !counted {
                self.counters.waits.fetch_add(1, Ordering::Relaxed);
                counted = true;
            }
            self.evict_one_idle(|c| c.peer != peer);
            let tick = self.next_tick(deadline)?;
            tokio::select! {
                permit = &mut slot => {
                    return permit
                        .map(Some)
                        .map_err(|_| Error::explain(ErrorType::InternalError, "connection gate closed"));
                }
                _ = changed => {}
                _ = tokio::time::sleep(tick) => {}
            }
        }
    }

    /// Takes the idle mark of one connection to `peer`, if any.
    fn claim_idle_to(&self, peer: InetAddr) -> bool {
        self.lock_open()
            .values()
            .any(|c| c.peer == peer && c.idle.swap(false, Ordering::Relaxed))
    }

    /// How long to wait before checking again, or the refusal once `deadline` has passed.
    fn next_tick(&self, deadline: Instant) -> Result<Duration, Box<Error>> {
        let tick = deadline
            .saturating_duration_since(Instant::now())
            .min(RECHECK_EVERY);
        if tick.is_zero() {
            Err(self.reject())
        } else {
            Ok(tick)
        }
    }

    fn reject(&self) -> Box<Error> {
        self.counters.rejections.fetch_add(1, Ordering::Relaxed);
        Error::explain(
            ErrorType::Custom(LIMIT_REACHED),
            format!("all {} upstream connections are in use", self.max),
        )
    }

    /// Takes a slot for a new connection to `peer` when none was reserved (the claimed pooled
    /// connection was gone, or Pingora's pool handed it to another request): waits, half-closing
    /// idle connections to other upstreams, then, past half the wait, to `peer` itself.
    async fn acquire(&self, peer: InetAddr) -> Result<OwnedSemaphorePermit, Box<Error>> {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Ok(permit);
        }
        let started = Instant::now();
        let deadline = started + self.wait_timeout;
        let wait = self.slots.clone().acquire_owned();
        tokio::pin!(wait);
        loop {
            if !self.evict_one_idle(|c| c.peer != peer) && started.elapsed() > self.wait_timeout / 2
            {
                self.evict_one_idle(|_| true);
            }
            let tick = self.next_tick(deadline)?;
            tokio::select! {
                permit = &mut wait => {
                    return permit.map_err(|_| Error::explain(ErrorType::InternalError, "connection gate closed"));
                }
                _ = tokio::time::sleep(tick) => {}
            }
        }
    }

    /// Half-closes one idle pooled connection that `eligible` accepts: the provider closes its
    /// end, Pingora's pool notices and drops it, and its slot comes back. Returns whether one was
    /// found.
    fn evict_one_idle(&self, eligible: impl Fn(&Connection) -> bool) -> bool {
        let now = self.now_ms();
        let settled = |c: &Connection| {
            now.saturating_sub(c.idle_since.load(Ordering::Relaxed))
                >= MIN_IDLE_TO_EVICT.as_millis() as u64
        };
        let victim = self
            .lock_open()
            .values()
            .find(|c| eligible(c) && settled(c) && c.idle.swap(false, Ordering::Relaxed))
            .cloned();
        let Some(conn) = victim else {
            return false;
        };
        if let Some(handle) = conn
            .handle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            let _ = handle.shutdown(Shutdown::Write);
            self.counters.evictions.fetch_add(1, Ordering::Relaxed);
            debug!(
                "closing an idle upstream connection to {} to make room",
                conn.peer
            );
        }
        true
    }

    /// Called when Pingora drops a connection's stream: once the provider has closed its end
    /// (or [`LINGER`] passed), closes our handle and frees the slot.
    fn release(self: &Arc<Self>, conn: &Arc<Connection>) {
        {
            let mut open = self.lock_open();
            if open.get(&conn.fd).is_some_and(|c| Arc::ptr_eq(c, conn)) {
                open.remove(&conn.fd);
            }
        }
        let handle = conn.handle.lock().unwrap_or_else(|e| e.into_inner()).take();
        let gate = self.clone();
        let close = async move {
            if let Some(handle) = handle {
                let _ = handle.shutdown(Shutdown::Write);
                if handle.set_nonblocking(true).is_ok() {
                    if let Ok(stream) = TcpStream::from_std(handle) {
                        let _ = tokio::time::timeout(LINGER, wait_for_eof(stream)).await;
                    }
                }
            }
            gate.slots.add_permits(1);
            gate.changed.notify_waiters();
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(close);
            }
            Err(_) => {
                self.slots.add_permits(1);
                self.changed.notify_waiters();
            }
        }
    }
}

/// Reads (and discards) until the provider closes its end.
async fn wait_for_eof(mut stream: TcpStream) {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 1024];
    while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
}

/// A slot reserved by [`ConnectionGate::admit`] for one request, shared between the request's
/// peer (its connector uses it) and the request's context (which drops it when a pooled
/// connection was reused instead).
pub type Reservation = Arc<Mutex<Option<OwnedSemaphorePermit>>>;

/// Pingora's `custom_l4`: uses the request's reserved slot (or takes one), then connects.
#[derive(Debug)]
pub struct GateConnector {
    gate: Arc<ConnectionGate>,
    reserved: Reservation,
}

impl GateConnector {
    /// A connector for one request, with the slot `admit` reserved for it (if any).
    pub fn new(gate: Arc<ConnectionGate>, reserved: Reservation) -> GateConnector {
        GateConnector { gate, reserved }
    }
}

impl ConnectionGate {
    /// Gives back a reserved slot the request did not need (it reused a pooled connection).
    pub fn unreserve(&self, reserved: &Reservation) {
        if reserved
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .is_some()
        {
            self.changed.notify_waiters();
        }
    }
}

#[async_trait]
impl L4Connect for GateConnector {
    async fn connect(&self, addr: &SocketAddr) -> pingora::Result<Stream> {
        let gate = &self.gate;
        let Some(inet) = addr.as_inet().copied() else {
            return Err(Error::explain(
                ErrorType::ConnectError,
                "only TCP upstreams are supported",
            ));
        };
        let reserved = self
            .reserved
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let permit = match reserved {
            Some(permit) => permit,
            None => gate.acquire(inet).await?,
        };
        let tcp = match tokio::time::timeout(gate.connect_timeout, TcpStream::connect(inet)).await {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(e)) => {
                let etype = if e.kind() == std::io::ErrorKind::ConnectionRefused {
                    ErrorType::ConnectRefused
                } else {
                    ErrorType::ConnectError
                };
                return Err(Error::because(etype, format!("connecting to {inet}"), e));
            }
            Err(_) => {
                return Err(Error::explain(
                    ErrorType::ConnectTimedout,
                    format!("timeout {:?} connecting to {inet}", gate.connect_timeout),
                ))
            }
        };
        let (tcp, handle) = duplicate(tcp)
            .map_err(|e| Error::because(ErrorType::SocketError, "duplicating the socket", e))?;
        let _ = tcp.set_nodelay(true);
        let conn = Arc::new(Connection {
            fd: tcp.as_raw_fd(),
            peer: inet,
            idle: AtomicBool::new(false),
            idle_since: AtomicU64::new(0),
            handle: Mutex::new(Some(handle)),
        });
        // From here the slot belongs to the connection; its tracer gives it back.
        permit.forget();
        gate.lock_open().insert(conn.fd, conn.clone());
        gate.counters
            .new_connections
            .fetch_add(1, Ordering::Relaxed);
        JUST_CONNECTED.with(|slot| *slot.borrow_mut() = Some(conn));
        Ok(Stream::from(tcp))
    }
}

/// A second handle on the same socket, so it can be shut down while Pingora holds the stream.
fn duplicate(tcp: TcpStream) -> std::io::Result<(TcpStream, std::net::TcpStream)> {
    let std_stream = tcp.into_std()?;
    let handle = std_stream.try_clone()?;
    Ok((TcpStream::from_std(std_stream)?, handle))
}

/// Pingora's tracer: one instance per connection gives its slot back when the stream drops.
#[derive(Debug)]
pub struct GateTracer {
    gate: Arc<ConnectionGate>,
    conn: Mutex<Option<Arc<Connection>>>,
}

impl GateTracer {
    /// The tracer template peers carry.
    pub fn new(gate: Arc<ConnectionGate>) -> GateTracer {
        GateTracer {
            gate,
            conn: Mutex::new(None),
        }
    }
}

impl Tracing for GateTracer {
    fn on_connected(&self) {
        let conn = JUST_CONNECTED.with(|slot| slot.borrow_mut().take());
        *self.conn.lock().unwrap_or_else(|e| e.into_inner()) = conn;
    }

    fn on_disconnected(&self) {
        let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(conn) = conn {
            self.gate.release(&conn);
        }
    }

    fn boxed_clone(&self) -> Box<dyn Tracing> {
        Box::new(GateTracer::new(self.gate.clone()))
    }
}
