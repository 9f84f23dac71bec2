//! [`GuardedApp`]: the proxy service's application wrapped with the request-head deadline and
//! the client connection bookkeeping (see the parent module).
//!
//! Pingora calls `process_new` once per connection and, for HTTP/1, serves every request of the
//! connection inside that call (the keep-alive loop), running the proxy's phases in the same
//! task. The wrapper keeps a [`HeadClock`] for the connection in a task-local: armed with
//! `request_head_timeout` when the connection is handed over, disarmed by the proxy's first
//! phase once a head is read ([`mark_head_read`]), armed again with `client_keepalive_timeout`
//! plus `request_head_timeout` when a request ends ([`mark_request_done`]). If the clock runs
//! out, the wrapper drops the call, which closes the connection. No timer runs while a request
//! is being served.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::{Stream, ALPN};
use pingora::server::ShutdownWatch;
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::debug;

use super::ClientConnections;
use crate::config::Limits;

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

tokio::task_local! {
    /// The head clock of the connection the current task serves.
    static HEAD_CLOCK: Arc<HeadClock>;
}

/// Records that the current request's head was read (called from the proxy's first phase).
/// Outside a guarded HTTP/1 connection (HTTP/2 streams run in their own tasks) it does nothing.
pub fn mark_head_read() {
    let _ = HEAD_CLOCK.try_with(|clock| clock.disarm());
}

/// Records that the current request ended: the next head, if the connection is kept alive,
/// must arrive within the keep-alive idle time and then be complete within the head deadline.
pub fn mark_request_done(limits: &Limits) {
    let within = limits.client_keepalive_timeout + limits.request_head_timeout;
    let _ = HEAD_CLOCK.try_with(|clock| clock.arm(within));
}

/// An application (the proxy) behind the head deadline and the connection count.
pub struct GuardedApp<A> {
    inner: Arc<A>,
    clients: Arc<ClientConnections>,
}

impl<A> GuardedApp<A> {
    /// Wraps `inner`, counting its connections in `clients`.
    pub fn new(inner: A, clients: Arc<ClientConnections>) -> GuardedApp<A> {
        GuardedApp {
            inner: Arc::new(inner),
            clients,
        }
    }
}

impl<A: ServerApp + Send + Sync + 'static> GuardedApp<A> {
    /// Serves an HTTP/1 connection until it ends or a head is late.
    async fn serve_http1(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let first = self.clients.limits().request_head_timeout;
        let clock = Arc::new(HeadClock::started(first));
        let serving = HEAD_CLOCK.scope(clock.clone(), self.inner.process_new(stream, shutdown));
        tokio::pin!(serving);
        loop {
            match clock.due() {
                None => tokio::select! {
                    next = &mut serving => return next,
                    _ = clock.armed.notified() => {}
                },
                Some(due) => tokio::select! {
                    next = &mut serving => return next,
                    _ = tokio::time::sleep_until(due) => {
                        if clock.due().is_some_and(|due| due <= Instant::now()) {
                            self.clients.counters.head_timeouts.fetch_add(1, Ordering::Relaxed);
                            debug!("closing a client connection: no request head in time");
                            return None;
                        }
                    }
                },
            }
        }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for GuardedApp<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let peer = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).copied());
        if let Some(peer) = peer {
            self.clients.start_request(peer);
        }
        let next = if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            self.inner.process_new(stream, shutdown).await
        } else {
            self.serve_http1(stream, shutdown).await
        };
        if next.is_none() {
            if let Some(peer) = peer {
                self.clients.closed(peer);
            }
        }
        next
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
