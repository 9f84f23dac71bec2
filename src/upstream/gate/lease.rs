//! One request's hold on the gate across its attempts, one method per proxy phase:
//! [`Lease::admit`] (`upstream_peer`) gives back an earlier attempt's unused claim, then claims a
//! pooled connection or reserves a slot for a new one; [`Lease::connected`]
//! (`connected_to_upstream`) gives back a reserved slot a reused connection made unneeded and
//! marks the connection Pingora handed out as in use, moving the claim to it; [`Lease::end`]
//! (`logging`) marks that connection idle again and gives back a claim never used. The proxy
//! keeps one `Lease` per request and holds nothing else of the gate's.

use std::net::SocketAddr as InetAddr;
use std::os::fd::RawFd;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use pingora::Error;

use super::{Admission, Connection, ConnectionGate, GateConnector, Reservation};

/// What one request holds at the gate (see the module docs).
#[derive(Debug, Default)]
pub struct Lease {
    /// The upstream on which this attempt holds a claim to a pooled connection.
    claim: Option<InetAddr>,
    /// The slot reserved for this attempt, given back if a pooled connection is reused.
    reservation: Option<Reservation>,
    /// The upstream connection in use, marked idle again when the request ends.
    connection: Option<Arc<Connection>>,
}

impl Lease {
    /// `upstream_peer`: an earlier attempt's claim (before a retry) goes back; then waits at the
    /// cap until the attempt can claim a connection to `addr` idle in the pool, or reserve a slot
    /// for a new one (none is reserved when `addr` is not resolved). Returns the connector the
    /// attempt's peer carries, or the refusal at the cap.
    pub async fn admit(
        &mut self,
        gate: &Arc<ConnectionGate>,
        addr: Option<InetAddr>,
    ) -> Result<GateConnector, Box<Error>> {
        if let Some(peer) = self.claim.take() {
            gate.drop_claim(peer);
        }
        let reserved = match addr {
            Some(addr) => match gate.admit(addr).await? {
                Admission::Pooled => {
                    self.claim = Some(addr);
                    None
                }
                Admission::NewConnection(slot) => Some(Arc::new(Mutex::new(Some(slot)))),
            },
            None => None,
        };
        self.reservation = reserved.clone();
        Ok(GateConnector::new(gate.clone(), reserved))
    }

    /// `connected_to_upstream`: Pingora handed the attempt the connection whose socket is `fd`,
    /// pooled (`reused`) or new. A reused one makes the reserved slot unneeded; the connection
    /// is in use from now on (a previous attempt's is no longer this request's to mark), and the
    /// claim moves to it, or goes back if the gate does not know the connection.
    pub fn connected(&mut self, gate: &ConnectionGate, fd: RawFd, reused: bool) {
        if reused {
            gate.counters.reuses.fetch_add(1, Ordering::Relaxed);
            if let Some(reserved) = self.reservation.take() {
                gate.unreserve(&reserved);
            }
        }
        self.connection = gate.connection(fd);
        match (&self.connection, self.claim.take()) {
            (Some(conn), claim) => gate.start_using(conn, claim.is_some()),
            (None, Some(peer)) => gate.drop_claim(peer),
            (None, None) => {}
        }
    }

    /// `logging`: the request is over and Pingora has returned its connection to the pool (or
    /// dropped it, which the gate saw): the connection is idle again, and a claim never used
    /// goes back.
    pub fn end(&mut self, gate: &ConnectionGate) {
        if let Some(conn) = self.connection.take() {
            gate.set_idle(&conn);
        }
        if let Some(peer) = self.claim.take() {
            gate.drop_claim(peer);
        }
    }
}
