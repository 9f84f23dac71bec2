//! The one database connection a sidecar holds: change notifications (`LISTEN`) and every query
//! share it, so a fleet of N sidecars costs the database N connections, never 2N.
//!
//! The connection is made on first use and again after it is lost; a lost connection wakes the
//! refresher after a random delay (so a restarted database is not met by every sidecar at the
//! same instant). A `NOTIFY` wakes it after a random delay below `notify_jitter`, for the same
//! reason: one trigger reaches every listening sidecar at once. Every round trip has a deadline
//! (`query_timeout`): on the server as `statement_timeout`, on the socket as `TCP_USER_TIMEOUT`
//! and keepalives, and around the call itself, so a frozen network path fails instead of
//! hanging. Errors carry Postgres's own text (`FATAL 53300: sorry, too many clients already`).

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{Mutex, Notify};
use tokio_postgres::{AsyncMessage, Client};
use tracing::{debug, info, warn};

pub use super::error::pg_error;
use super::{Database, DbError};
use crate::jitter::random_below;

/// Idle time before the first TCP keepalive probe on the database connection (an idle LISTEN
/// connection on a dead path is otherwise noticed only by the next poll).
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);

/// What to `LISTEN` on, and how to spread the refreshes a `NOTIFY` starts.
#[derive(Debug, Clone)]
pub struct ListenSettings {
    /// The channel the triggers notify.
    pub channel: String,
    /// A refresh starts a random delay below this after a notification.
    pub jitter: Duration,
}

/// One lazily made, re-made-when-lost connection; see the module docs.
pub struct Session {
    db: Database,
    listen: Option<ListenSettings>,
    query_timeout: Duration,
    wake: Arc<Notify>,
    client: Mutex<Option<Connection>>,
    /// Held by work that must not interleave with other work on the shared connection: the
    /// credential load's read transaction, the spend writer's statement (one sent into the
    /// other's transaction would run, or fail, inside it).
    exclusive: Mutex<()>,
}

/// A live connection, and whether this side chose to close it (then its loss wakes nobody).
struct Connection {
    client: Arc<Client>,
    closing: Arc<AtomicBool>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.closing.store(true, Ordering::Release);
    }
}

impl Session {
    /// A session over `db` that wakes `wake` on notifications and on connection loss.
    pub fn new(
        db: Database,
        listen: Option<ListenSettings>,
        query_timeout: Duration,
        wake: Arc<Notify>,
    ) -> Session {
        Session {
            db,
            listen,
            query_timeout,
            wake,
            client: Mutex::new(None),
            exclusive: Mutex::new(()),
        }
    }

    /// The connection to oneself: held across a transaction or a write, so that no other
    /// task's statement lands inside it (see the `exclusive` field). Take it inside the
    /// [`Session::deadline`] call, so that waiting for it counts against the deadline.
    pub async fn exclusive(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.exclusive.lock().await
    }

    /// The database, for descriptions.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// The connected client, connecting (and `LISTEN`ing) first when there is none or the last
    /// one was lost.
    pub async fn client(&self) -> Result<Arc<Client>, DbError> {
        let mut slot = self.client.lock().await;
        if let Some(live) = slot.as_ref().filter(|c| !c.client.is_closed()) {
            return Ok(live.client.clone());
        }
        *slot = None;
        let closing = Arc::new(AtomicBool::new(false));
        let client = Arc::new(self.connect(closing.clone()).await?);
        *slot = Some(Connection {
            client: client.clone(),
            closing,
        });
        Ok(client)
    }

    /// Runs database work under the deadline. Any failure (a timeout, a lost connection, an
    /// error inside a transaction) drops the connection, so the next call starts on a fresh one.
    pub async fn deadline<T>(
        &self,
        call: impl Future<Output = Result<T, DbError>>,
    ) -> Result<T, DbError> {
        let error = match tokio::time::timeout(self.query_timeout + SLACK, call).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(e)) => e,
            Err(_) => {
                crate::metrics::DATABASE_TIMEOUTS.inc();
                DbError::Timeout {
                    at: self.db.describe().to_string(),
                    timeout: self.query_timeout,
                }
            }
        };
        self.disconnect().await;
        Err(error)
    }

    /// Wakes whoever listens on this session (the refresher) to refresh now: work other than
    /// the refresher's failed, and its [`Session::deadline`] dropped the connection, and with it
    /// the `LISTEN`; a notification sent before the next connection would otherwise be missed
    /// until the next poll.
    pub fn wake_listener(&self) {
        if self.listen.is_some() {
            self.wake.notify_one();
        }
    }

    /// Drops the connection (the next call reconnects).
    pub async fn disconnect(&self) {
        *self.client.lock().await = None;
    }

    async fn connect(&self, closing: Arc<AtomicBool>) -> Result<Client, DbError> {
        let mut config = self.db.pg_config.clone();
        config
            .tcp_user_timeout(self.query_timeout)
            .keepalives(true)
            .keepalives_idle(KEEPALIVE_IDLE);
        let connecting = config.connect(self.db.tls.clone());
        let (client, mut connection) =
            match tokio::time::timeout(self.query_timeout + SLACK, connecting).await {
                Ok(Ok(pair)) => pair,
                Ok(Err(e)) => return Err(self.db.connect_error(pg_error(&e))),
                Err(_) => {
                    let reason = format!("no answer within {:?}", self.query_timeout);
                    return Err(self.db.connect_error(reason));
                }
            };
        let wake = self.wake.clone();
        let jitter = self.listen.as_ref().map(|l| l.jitter);
        let described = self.db.describe().to_string();
        tokio::spawn(async move {
            let pending = Arc::new(AtomicBool::new(false));
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            loop {
                match messages.next().await {
                    Some(Ok(AsyncMessage::Notification(n))) => {
                        debug!("database: NOTIFY on {} ({})", n.channel(), n.payload());
                        wake_later(&wake, &pending, jitter.unwrap_or_default());
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        warn!("database {described}: connection lost: {}", pg_error(&e));
                        break;
                    }
                    None => break,
                }
            }
            // Lost, not closed on purpose (after a failure, whose retry the refresher's backoff
            // times): reconnect soon, but not in step with every other sidecar of the fleet.
            if !closing.load(Ordering::Acquire) {
                wake_later(&wake, &pending, RECONNECT_SPREAD);
            }
        });
        let mut setup = format!("SET statement_timeout = {}", self.query_timeout.as_millis());
        if let Some(listen) = &self.listen {
            setup += &format!("; LISTEN {}", super::sql::quote_ident(&listen.channel));
        }
        match tokio::time::timeout(self.query_timeout + SLACK, client.batch_execute(&setup)).await {
            Ok(Ok(())) => {
                if let Some(listen) = &self.listen {
                    info!(
                        "credentials: listening for changes on channel {} (database {})",
                        listen.channel,
                        self.db.describe()
                    );
                }
                Ok(client)
            }
            Ok(Err(e)) => Err(DbError::Setup {
                at: self.db.describe().to_string(),
                reason: pg_error(&e),
            }),
            Err(_) => {
                crate::metrics::DATABASE_TIMEOUTS.inc();
                Err(DbError::Timeout {
                    at: self.db.describe().to_string(),
                    timeout: self.query_timeout,
                })
            }
        }
    }
}

/// Time the client-side deadline adds to `statement_timeout`, so the server's own timeout (and
/// its clearer error) normally fires first.
const SLACK: Duration = Duration::from_secs(1);
/// After a lost connection, the refresher is woken within this random delay.
const RECONNECT_SPREAD: Duration = Duration::from_secs(1);

/// Wakes `wake` after a random delay below `spread`; a wake already pending absorbs this one.
fn wake_later(wake: &Arc<Notify>, pending: &Arc<AtomicBool>, spread: Duration) {
    if pending.swap(true, Ordering::AcqRel) {
        return;
    }
    let delay = random_below(spread);
    let (wake, pending) = (wake.clone(), pending.clone());
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        pending.store(false, Ordering::Release);
        wake.notify_one();
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn notifications_arriving_together_wake_once_within_the_spread() {
        let wake = Arc::new(Notify::new());
        let pending = Arc::new(AtomicBool::new(false));
        let started = tokio::time::Instant::now();
        for _ in 0..10 {
            wake_later(&wake, &pending, Duration::from_millis(500));
        }
        wake.notified().await;
        assert!(started.elapsed() < Duration::from_millis(500));
        // The nine others were absorbed: no second wake is stored.
        let second = tokio::time::timeout(Duration::from_secs(5), wake.notified()).await;
        assert!(
            second.is_err(),
            "ten notifications woke the refresher twice"
        );
    }
}
