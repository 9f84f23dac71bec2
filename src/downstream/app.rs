//! [`GuardedApp`]: a Pingora application (the proxy, the fan-out server) wrapped with the
//! connection count, the overload policy, the TLS handshake and the request-head deadlines (see
//! the parent module).
//!
//! Pingora calls `process_new` once per connection and, for HTTP/1, serves every request of the
//! connection inside that call (the keep-alive loop), running the application's phases in the
//! same task. The wrapper keeps a [`HeadClock`] for the connection in a task-local: armed with
//! `request_head_timeout` when the connection is handed over, disarmed by the application's
//! first phase once a head is read ([`mark_head_read`]), armed again with the keep-alive idle
//! time plus the head deadline when a request ends ([`mark_request_done`]). If the clock runs
//! out, or the overload policy evicts the connection, the wrapper drops the call, which closes
//! the connection. HTTP/2 streams run in tasks of their own: the proxy reports them by peer
//! address ([`ClientConnections::request_started`]).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::apps::ServerApp;
use pingora::protocols::http::ServerSession;
use pingora::protocols::{Stream, ALPN};
use pingora::server::ShutdownWatch;
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::debug;

use super::listener_tls::TlsAcceptor;
use super::registry::Phase;
use super::{ClientConnections, Lease};

/// The deadline for the next request head on one connection.
struct HeadClock {
    epoch: Instant,
    /// Milliseconds after `epoch` by which the head must be in; [`DISARMED`] while a request
    /// is being served.
    due_ms: AtomicU64,
    /// Signalled when the clock is armed again.
    armed: Notify,
}

const DISARMED: u64 = u64::MAX;

impl HeadClock {
    fn started(within: Duration) -> HeadClock {
        HeadClock {
            epoch: Instant::now(),
            due_ms: AtomicU64::new(millis(within)),
            armed: Notify::new(),
        }
    }

    fn arm(&self, within: Duration) {
        let due = millis(self.epoch.elapsed() + within);
        self.due_ms.store(due, Ordering::Relaxed);
        self.armed.notify_one();
    }

    fn disarm(&self) {
        self.due_ms.store(DISARMED, Ordering::Relaxed);
    }

    fn due(&self) -> Option<Instant> {
        let due = self.due_ms.load(Ordering::Relaxed);
        (due != DISARMED).then(|| self.epoch + Duration::from_millis(due))
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(DISARMED - 1)
}

/// The HTTP/1 connection the current task serves.
struct Serving {
    lease: Lease,
    clock: HeadClock,
}

tokio::task_local! {
    static SERVING: Arc<Serving>;
}

/// Records that the current request's head was read (called from the application's first
/// phase). Returns false outside a guarded HTTP/1 connection (HTTP/2 streams run in tasks of
/// their own; see [`ClientConnections::request_started`]).
pub fn mark_head_read() -> bool {
    SERVING
        .try_with(|serving| {
            serving.clock.disarm();
            serving.lease.slot().request_started();
        })
        .is_ok()
}

/// Records that the current request ended: the next head, if the connection is kept alive,
/// must arrive within the keep-alive idle time and then be complete within the head deadline
/// (both shortened as the cap fills).
pub fn mark_request_done() {
    let _ = SERVING.try_with(|serving| {
        let lease = &serving.lease;
        lease.slot().request_ended(lease.now_ms());
        serving.clock.arm(
            lease
                .clients
                .deadline(|p| p.keepalive_timeout + p.request_head_timeout),
        );
    });
}

/// A [`ServeHttp`] application (the fan-out server) whose requests start and stop the
/// connection's head clock, as the proxy's phases do for the proxy. Served over HTTP/1 only.
pub struct HeadMarked<S>(pub S);

#[async_trait]
impl<S: ServeHttp + Send + Sync> ServeHttp for HeadMarked<S> {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        mark_head_read();
        let response = self.0.response(session).await;
        mark_request_done();
        response
    }
}

/// Which listener addresses terminate TLS here, and with what.
#[derive(Default)]
pub struct TlsListeners(Vec<(SocketAddr, Arc<TlsAcceptor>)>);

impl TlsListeners {
    /// Connections to `address` are TLS, accepted by `acceptor`.
    pub fn add(&mut self, address: SocketAddr, acceptor: TlsAcceptor) {
        self.0.push((address, Arc::new(acceptor)));
    }

    /// The acceptor for a connection that arrived at `local` (a listener bound to an
    /// unspecified address matches by port).
    fn for_local(&self, local: Option<SocketAddr>) -> Option<&TlsAcceptor> {
        let local = local?;
        let exact = self.0.iter().find(|(a, _)| *a == local);
        exact
            .or_else(|| {
                self.0
                    .iter()
                    .find(|(a, _)| a.ip().is_unspecified() && a.port() == local.port())
            })
            .map(|(_, acceptor)| acceptor.as_ref())
    }
}

/// An application behind the connection count, the overload policy and the deadlines.
pub struct GuardedApp<A> {
    inner: Arc<A>,
    clients: Arc<ClientConnections>,
    tls: TlsListeners,
}

impl<A> GuardedApp<A> {
    /// Wraps `inner`, counting its connections in `clients`; connections to the addresses in
    /// `tls` are TLS.
    pub fn new(inner: A, clients: Arc<ClientConnections>, tls: TlsListeners) -> GuardedApp<A> {
        GuardedApp {
            inner: Arc::new(inner),
            clients,
            tls,
        }
    }
}

fn inet(addr: Option<&pingora::protocols::l4::socket::SocketAddr>) -> Option<SocketAddr> {
    addr.and_then(|a| a.as_inet()).copied()
}

impl<A: ServerApp + Send + Sync + 'static> GuardedApp<A> {
    /// The TLS handshake, when the listener has TLS, within its (scaled) deadline.
    async fn handshake(&self, stream: Stream, lease: &Lease, peer: SocketAddr) -> Option<Stream> {
        let digest = stream.get_socket_digest();
        let Some(tls) = self
            .tls
            .for_local(inet(digest.as_ref().and_then(|d| d.local_addr())))
        else {
            return Some(stream);
        };
        let counters = &self.clients.counters;
        let within = self.clients.deadline(|p| p.tls_handshake_timeout);
        tokio::select! {
            done = tokio::time::timeout(within, tls.handshake(stream)) => match done {
                Ok(Ok(tls_stream)) => Some(tls_stream),
                Ok(Err(e)) => {
                    counters.handshake_failures.fetch_add(1, Ordering::Relaxed);
                    debug!("TLS handshake with {peer} failed: {e}");
                    None
                }
                Err(_) => {
                    counters.handshake_timeouts.fetch_add(1, Ordering::Relaxed);
                    debug!("closing a client connection from {peer}: TLS handshake too slow");
                    None
                }
            },
            _ = lease.slot().evicted.notified() => None,
        }
    }

    /// Serves an HTTP/1 connection until it ends, a head is late or it is evicted.
    async fn serve_http1(&self, stream: Stream, shutdown: &ShutdownWatch, lease: Lease) {
        let first = self.clients.deadline(|p| p.request_head_timeout);
        let serving = Arc::new(Serving {
            lease,
            clock: HeadClock::started(first),
        });
        let call = SERVING.scope(serving.clone(), self.inner.process_new(stream, shutdown));
        tokio::pin!(call);
        loop {
            let due = serving.clock.due();
            tokio::select! {
                _ = &mut call => return,
                _ = serving.lease.slot().evicted.notified() => {
                    debug!("closing a client connection: evicted to make room");
                    return;
                }
                _ = serving.clock.armed.notified(), if due.is_none() => {}
                _ = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {
                    if serving.clock.due().is_some_and(|due| due <= Instant::now()) {
                        self.head_timeout();
                        return;
                    }
                }
            }
        }
    }

    /// Serves an HTTP/2 connection until it ends, is evicted, or opens no stream within the
    /// head deadline.
    async fn serve_http2(&self, stream: Stream, shutdown: &ShutdownWatch, lease: &Lease) {
        let first = self.clients.deadline(|p| p.request_head_timeout);
        let call = self.inner.process_new(stream, shutdown);
        tokio::pin!(call);
        let first_due = tokio::time::sleep(first);
        tokio::pin!(first_due);
        let mut waiting_for_first = true;
        loop {
            tokio::select! {
                _ = &mut call => return,
                _ = lease.slot().evicted.notified() => {
                    debug!("closing an HTTP/2 client connection: evicted to make room");
                    return;
                }
                _ = &mut first_due, if waiting_for_first => {
                    if lease.slot().phase() == Phase::Fresh {
                        self.head_timeout();
                        return;
                    }
                    waiting_for_first = false;
                }
            }
        }
    }

    fn head_timeout(&self) {
        self.clients
            .counters
            .head_timeouts
            .fetch_add(1, Ordering::Relaxed);
        debug!("closing a client connection: no request head in time");
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for GuardedApp<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let Some(peer) = inet(
            stream
                .get_socket_digest()
                .as_ref()
                .and_then(|d| d.peer_addr()),
        ) else {
            // Only TCP listeners are configured; anything else has no address to count.
            return self.inner.process_new(stream, shutdown).await;
        };
        let lease = self.clients.admit(peer)?;
        let stream = self.handshake(stream, &lease, peer).await?;
        lease.slot().handed_over();
        if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            self.serve_http2(stream, shutdown, &lease).await;
        } else {
            self.serve_http1(stream, shutdown, lease).await;
        }
        // Pingora's HTTP applications serve every request of a connection in one call and
        // never hand the stream back.
        None
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_clock_runs_until_a_head_is_read_and_again_after_each_request() {
        let clock = HeadClock::started(Duration::from_secs(10));
        assert_eq!(clock.due(), Some(clock.epoch + Duration::from_secs(10)));
        clock.disarm();
        assert_eq!(clock.due(), None, "no deadline while a request is served");
        tokio::time::advance(Duration::from_secs(300)).await;
        clock.arm(Duration::from_secs(70));
        assert_eq!(clock.due(), Some(Instant::now() + Duration::from_secs(70)));
        // The re-arm wakes a guard waiting for it.
        tokio::time::timeout(Duration::from_millis(1), clock.armed.notified())
            .await
            .expect("armed is signalled");
    }
}
