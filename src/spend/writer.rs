//! The spend writer: requests add their [`SpendRecord`] to the pending batch (a lock held for
//! a few additions, nothing on the network), and a task writes the batch every flush interval
//! on the sidecar's one database connection, off the request path.
//!
//! Nothing is lost silently: a batch that could not be written is kept, with its id, and tried
//! again first at the next interval, unchanged, so that if its first try did land (the answer
//! was lost) the retry is recognised and not counted twice ([`super::flush`]). While it waits,
//! new requests go on adding to the pending batch. A batch half full (`max_pending_requests` / 2
//! requests) is written at once, before the interval, so a busy sidecar leaves no row out while
//! the database answers. What is held is bounded: at most `max_pending_requests` spend-log rows
//! in each of the two batches (past that, rows are counted in `sidecar_spend_logs_dropped_total`
//! and left out; the spend totals are always kept, they grow with the number of keys, not of
//! requests). On shutdown the writer flushes once more.
//! A crash loses what was not yet written: at most one flush interval of requests, or more
//! while the database is unreachable.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tracing::{info, warn};

use super::batch::{Batch, SpendRecord};
use super::flush::{write, SpendTables};
use crate::db::session::Session;
use crate::db::DbError;
use crate::metrics::spend as metrics;

/// How the writer writes.
#[derive(Debug, Clone)]
pub struct WriterSettings {
    /// Time between flushes.
    pub flush_interval: Duration,
    /// Whether spend-log rows are written (LiteLLM's `disable_spend_logs` turns them off).
    pub spend_logs: bool,
    /// The most spend-log rows held per batch.
    pub max_pending_requests: usize,
}

/// A batch that was tried and not confirmed, with the id it was tried with.
struct Unsent {
    id: String,
    batch: Batch,
}

/// The writer: the pending batch, and what the flushing task keeps between flushes.
pub struct SpendWriter {
    settings: WriterSettings,
    pending: Mutex<Batch>,
    flushing: tokio::sync::Mutex<Flushing>,
    /// Wakes the flushing task before its interval when the pending batch is half full.
    half_full: tokio::sync::Notify,
}

#[derive(Default)]
struct Flushing {
    unsent: Option<Unsent>,
    /// The statement for the database it was made for (`host:port/db`, schema): a reload that
    /// moves the source to another database or schema makes it again.
    statement: Option<(String, String)>,
}

/// What one flush did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flushed {
    /// Nothing was waiting.
    Nothing,
    /// Every batch waiting was written.
    Written,
    /// A batch could not be written; it is kept for the next flush.
    Kept,
}

impl SpendWriter {
    /// A writer with nothing pending.
    pub fn new(settings: WriterSettings) -> Arc<SpendWriter> {
        Arc::new(SpendWriter {
            settings,
            pending: Mutex::new(Batch::default()),
            flushing: tokio::sync::Mutex::new(Flushing::default()),
            half_full: tokio::sync::Notify::new(),
        })
    }

    /// Adds one request's spend to the pending batch.
    pub fn record(&self, record: SpendRecord) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let dropped = pending.logs_dropped;
        pending.add(record, self.settings.max_pending_requests);
        metrics::PENDING_REQUESTS.set(pending.len() as i64);
        // Once per batch, as it reaches half of what it may hold: a busy sidecar writes before
        // the interval rather than leave spend-log rows out. (While a failed batch is kept, the
        // pending one is not taken, so this wakes the task once, not on every request.)
        if pending.len() == self.settings.max_pending_requests.div_ceil(2) {
            self.half_full.notify_one();
        }
        if pending.logs_dropped > dropped {
            metrics::LOGS_DROPPED.inc();
        }
    }

    /// The pending batch, leaving an empty one in its place (what the next flush writes).
    pub fn take_pending(&self) -> Batch {
        let batch = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        metrics::PENDING_REQUESTS.set(0);
        batch
    }

    /// Writes what is waiting: first the batch a previous flush could not write, then the
    /// pending one. Stops at the first failure (the batch is kept, and said in the log).
    pub async fn flush(&self, session: &Session) -> Flushed {
        let mut state = self.flushing.lock().await;
        if state.unsent.is_none() {
            let batch =
                std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
            metrics::PENDING_REQUESTS.set(0);
            if batch.is_empty() {
                return Flushed::Nothing;
            }
            state.unsent = Some(Unsent {
                id: batch_id(),
                batch,
            });
        }
        match self.write_unsent(&mut state, session).await {
            Ok(()) => {
                state.unsent = None;
                Flushed::Written
            }
            Err(e) => {
                // The failed write dropped the shared connection and its LISTEN: the refresher
                // reconnects now and reads whatever it may have missed (a budget reached).
                session.wake_listener();
                metrics::BATCHES.with_label_values(&["failed"]).inc();
                let held = state.unsent.as_ref().map_or(0, |u| u.batch.len());
                warn!("spend: a batch of {held} requests could not be written, kept for the next flush: {e}");
                Flushed::Kept
            }
        }
    }

    async fn write_unsent(&self, state: &mut Flushing, session: &Session) -> Result<(), DbError> {
        // Never inside the credential load's read transaction on the same connection.
        let _exclusive = session.exclusive().await;
        let client = session.client().await?;
        let database = format!(
            "{} {}",
            session.database().describe(),
            session.database().schema
        );
        if state
            .statement
            .as_ref()
            .is_none_or(|(made_for, _)| *made_for != database)
        {
            let schema = &session.database().schema;
            let tables = session
                .deadline(SpendTables::discover(client.as_ref(), schema))
                .await?;
            let missing = tables.missing();
            if !missing.is_empty() {
                info!(
                    "spend: this LiteLLM schema has no {}; that spend is not written",
                    missing.join(", ")
                );
            }
            state.statement = Some((database, tables.statement(self.settings.spend_logs)));
        }
        let (Some((_, statement)), Some(unsent)) =
            (state.statement.as_ref(), state.unsent.as_ref())
        else {
            return Ok(());
        };
        let docs = unsent.batch.documents();
        let fresh = session
            .deadline(write(client.as_ref(), statement, &unsent.id, &docs))
            .await?;
        let result = if fresh { "written" } else { "duplicate" };
        metrics::BATCHES.with_label_values(&[result]).inc();
        Ok(())
    }

    /// Flushes every `flush_interval`, and as soon as the pending batch is half full, on the
    /// session `database` holds then, until `shutdown`; then once more (twice, if the first
    /// try fails).
    pub async fn run(&self, database: &ArcSwapOption<Session>, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(self.settings.flush_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    self.flush_on(database).await;
                }
                _ = self.half_full.notified() => {
                    self.flush_on(database).await;
                }
                _ = shutdown.changed() => break,
            }
        }
        if self.flush_on(database).await == Flushed::Kept {
            self.flush_on(database).await;
        }
    }

    /// A flush on the session `database` holds now (none: the batch waits).
    pub async fn flush_on(&self, database: &ArcSwapOption<Session>) -> Flushed {
        match database.load_full() {
            Some(session) => self.flush(&session).await,
            None => Flushed::Kept,
        }
    }
}

/// The writer as a Pingora background service.
pub struct SpendService {
    /// The writer.
    pub writer: Arc<SpendWriter>,
    /// The session it writes on (the Postgres source's).
    pub database: Arc<ArcSwapOption<Session>>,
}

#[async_trait::async_trait]
impl BackgroundService for SpendService {
    async fn start(&self, shutdown: ShutdownWatch) {
        self.writer.run(&self.database, shutdown).await;
    }
}

/// A fresh batch id: 128 random bits, hex.
fn batch_id() -> String {
    format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}
