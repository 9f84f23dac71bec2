//! Waiting at the cap: [`ConnectionGate::admit`] (before Pingora looks in its pool) claims an
//! idle pooled connection to the request's upstream or reserves a slot for a new one;
//! `ConnectionGate::acquire` (in the connector) takes a slot when none was reserved. Both wait,
//! half-closing idle connections to make room, and refuse with [`LIMIT_REACHED`] past
//! `upstream.pool_wait_timeout`.

use std::net::Shutdown;
use std::net::SocketAddr as InetAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use pingora::{Error, ErrorType};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tracing::debug;

use super::{
    Admission, Connection, ConnectionGate, State, LIMIT_REACHED, MIN_IDLE_TO_EVICT, RECHECK_EVERY,
};

impl ConnectionGate {
    /// What a request to `peer` can have right now without waiting: a claim on an idle pooled
    /// connection to `peer`, else a slot for a new one.
    pub(super) fn try_admit(&self, peer: InetAddr) -> Option<Admission> {
        if self.move_one(peer, State::Idle, State::Claimed) {
            return Some(Admission::Pooled);
        }
        self.slots
            .clone()
            .try_acquire_owned()
            .ok()
            .map(Admission::NewConnection)
    }

    /// Waits until a request to `peer` can go ahead without tripping the cap (see
    /// [`try_admit`](Self::try_admit)). Meanwhile idle connections to other upstreams are
    /// half-closed to make room. Gives up (503) after the wait timeout.
    pub(super) async fn admit(&self, peer: InetAddr) -> Result<Admission, Box<Error>> {
        let deadline = Instant::now() + self.wait_timeout;
        let slot = self.slots.clone().acquire_owned();
        tokio::pin!(slot);
        let mut counted = false;
        loop {
            let changed = self.changed.notified();
            if let Some(admission) = self.try_admit(peer) {
                return Ok(admission);
            }
            if !counted {
                self.counters.waits.fetch_add(1, Ordering::Relaxed);
                counted = true;
            }
            self.evict_one_idle(|c| c.peer != peer);
            let tick = self.next_tick(deadline)?;
            tokio::select! {
                permit = &mut slot => {
                    return permit.map(Admission::NewConnection).map_err(|_| closed());
                }
                _ = changed => {}
                _ = tokio::time::sleep(tick) => {}
            }
        }
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
    pub(super) async fn acquire(&self, peer: InetAddr) -> Result<OwnedSemaphorePermit, Box<Error>> {
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
                permit = &mut wait => return permit.map_err(|_| closed()),
                _ = tokio::time::sleep(tick) => {}
            }
        }
    }

    /// Half-closes one idle, unclaimed pooled connection that `eligible` accepts and that has
    /// been idle at least [`MIN_IDLE_TO_EVICT`]: the provider closes its end, Pingora's pool
    /// notices and drops it, and its slot comes back. Returns whether one was found.
    pub(super) fn evict_one_idle(&self, eligible: impl Fn(&Connection) -> bool) -> bool {
        let now = self.now_ms();
        let settled = |c: &Connection| {
            now.saturating_sub(c.idle_since.load(Ordering::Relaxed))
                >= MIN_IDLE_TO_EVICT.as_millis() as u64
        };
        let victim = self
            .lock_open()
            .values()
            .find(|c| eligible(c) && settled(c) && c.move_state(State::Idle, State::Closing))
            .cloned();
        let Some(conn) = victim else {
            return false;
        };
        self.counters.evictions.fetch_add(1, Ordering::Relaxed);
        debug!(
            "closing an idle upstream connection to {} to make room",
            conn.peer
        );
        if let Some(handle) = conn
            .handle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            let _ = handle.shutdown(Shutdown::Write);
        }
        true
    }
}

fn closed() -> Box<Error> {
    Error::explain(ErrorType::InternalError, "connection gate closed")
}
