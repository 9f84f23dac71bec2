//! One open upstream connection as the gate counts it ([`Connection`]), and where it stands
//! ([`State`]): `InUse`, `Idle`, `Claimed` or `Closing`, moved atomically.

use std::net::SocketAddr as InetAddr;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;

/// Where one open connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum State {
    /// Carrying a request (or just made for one).
    InUse = 0,
    /// In Pingora's pool, free for any request.
    Idle = 1,
    /// In Pingora's pool, counted on by an admitted request.
    Claimed = 2,
    /// Half-closed by the gate to make room; its slot comes back when Pingora drops it.
    Closing = 3,
}

impl State {
    pub(super) fn from_u8(value: u8) -> State {
        match value {
            1 => State::Idle,
            2 => State::Claimed,
            3 => State::Closing,
            _ => State::InUse,
        }
    }
}

/// One open upstream connection.
#[derive(Debug)]
pub struct Connection {
    pub(super) fd: RawFd,
    pub(super) peer: InetAddr,
    pub(super) state: AtomicU8,
    /// When it last went idle, in milliseconds since the gate was made.
    pub(super) idle_since: AtomicU64,
    /// A second handle on the socket, to half-close an idle connection from outside Pingora's
    /// pool and to wait for the provider's close. Taken when Pingora drops the stream.
    pub(super) handle: Mutex<Option<std::net::TcpStream>>,
}

impl Connection {
    /// Where the connection stands now.
    pub fn state(&self) -> State {
        State::from_u8(self.state.load(Ordering::Relaxed))
    }

    pub(super) fn swap_state(&self, to: State) -> State {
        State::from_u8(self.state.swap(to as u8, Ordering::Relaxed))
    }

    /// Moves `from` → `to` if the connection is in `from`; returns whether it was.
    pub(super) fn move_state(&self, from: State, to: State) -> bool {
        self.state
            .compare_exchange(from as u8, to as u8, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }
}
