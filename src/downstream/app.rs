//! [`GuardedApp`]: the proxy service's application wrapped with the request-head deadline and
//! the client connection bookkeeping (see the parent module).
//!
//! Pingora calls `process_new` once per request on a connection (again with the same stream
//! while it is kept alive), and runs the proxy's phases inside that call for HTTP/1. The wrapper
//! races the call against the deadline; the proxy's `request_filter` (the first phase after the
//! head is read) marks the head as read through a task-local flag, which lets the request run
//! past the deadline. Dropping the call closes the connection.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use log::debug;
use pingora::apps::ServerApp;
use pingora::protocols::{Stream, ALPN};
use pingora::server::ShutdownWatch;

use super::ClientConnections;

tokio::task_local! {
    /// Set when the current request's head has been read.
    static HEAD_READ: Arc<AtomicBool>;
}

/// Records that the current request's head was read (called from the proxy's first phase).
/// Outside a guarded connection (HTTP/2 streams run in their own tasks) it does nothing.
pub fn mark_head_read() {
    let _ = HEAD_READ.try_with(|read| read.store(true, Ordering::Relaxed));
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
        let kept_alive = peer.is_some_and(|p| self.clients.start_request(p));
        let http2 = matches!(stream.selected_alpn_proto(), Some(ALPN::H2));
        let next = if http2 {
            self.inner.process_new(stream, shutdown).await
        } else {
            let limits = self.clients.limits();
            let mut deadline = limits.request_head_timeout;
            if kept_alive {
                deadline += limits.client_keepalive_timeout;
            }
            let head_read = Arc::new(AtomicBool::new(false));
            let request =
                HEAD_READ.scope(head_read.clone(), self.inner.process_new(stream, shutdown));
            tokio::pin!(request);
            tokio::select! {
                next = &mut request => next,
                _ = tokio::time::sleep(deadline) => {
                    if head_read.load(Ordering::Relaxed) {
                        request.await
                    } else {
                        self.clients.counters.head_timeouts.fetch_add(1, Ordering::Relaxed);
                        debug!("closing a client connection: no request head within {deadline:?}");
                        None
                    }
                }
            }
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
