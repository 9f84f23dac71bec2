//! The gate's hooks into Pingora: [`GateConnector`] (Pingora's `custom_l4`, called for every new
//! upstream connection) takes the request's reserved slot or waits for one, then connects;
//! [`GateTracer`] (the peer's tracer) gives the slot back when Pingora drops the stream.
//!
//! Which connection a tracer belongs to: Pingora calls the tracer's `on_connected` right after
//! `custom_l4` returns, on the same thread with no await in between, so the connector leaves the
//! new connection in a thread-local slot that `on_connected` takes.

use std::cell::RefCell;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use pingora::connectors::L4Connect;
use pingora::protocols::l4::socket::SocketAddr;
use pingora::protocols::l4::stream::Stream;
use pingora::upstreams::peer::Tracing;
use pingora::{Error, ErrorType};
use tokio::net::TcpStream;

use super::{Connection, ConnectionGate, Reservation};

thread_local! {
    /// The connection `GateConnector::connect` just made, for the tracer's `on_connected`.
    static JUST_CONNECTED: RefCell<Option<Arc<Connection>>> = const { RefCell::new(None) };
}

/// Pingora's `custom_l4`: uses the request's reserved slot (or takes one), then connects.
#[derive(Debug)]
pub struct GateConnector {
    gate: Arc<ConnectionGate>,
    reserved: Option<Reservation>,
}

impl GateConnector {
    /// A connector for one request, with the slot `admit` reserved for it (if any).
    pub(super) fn new(gate: Arc<ConnectionGate>, reserved: Option<Reservation>) -> GateConnector {
        GateConnector { gate, reserved }
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
            .as_ref()
            .and_then(|r| r.lock().unwrap_or_else(|e| e.into_inner()).take());
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
        let conn = gate.register(permit, tcp.as_raw_fd(), inet, Some(handle));
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
