//! The spend writer: requests add their [`SpendRecord`] to the pending batch (a lock held for
//! a few additions, nothing on the network), and a task writes the batch every flush interval
//! on the sidecar's one database connection, off the request path; or, on a fan-out watcher,
//! sends it to its serving instance ([`BatchSink`]), which merges it into its own pending batch
//! ([`SpendWriter::absorb`]) and writes it with its own flushes.
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
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tracing::{error, info, warn};

use super::batch::{Batch, SpendRecord};
use super::flush::{write, SpendTables, Written};
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

/// What a sink did with a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    /// Taken, for the first time.
    Fresh,
    /// Already taken (a retry whose first try landed): not counted again.
    Duplicate,
    /// Refused for good (the reason): retrying the same batch cannot succeed.
    Refused(String),
    /// Nothing taken: these watchers' batches it holds were written already (by another
    /// serving instance); the batch without them can be sent at once.
    AbsorbedWritten(Vec<String>),
}

/// Why a batch could not be sent (it is kept and tried again).
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The database did not take it.
    #[error(transparent)]
    Database(#[from] DbError),
    /// No fan-out server took it (what each said).
    #[error("no fan-out server took it: {0}")]
    Fanout(String),
}

/// Where batches go: the database, or a watcher's serving instance.
#[async_trait]
pub trait BatchSink: Send + Sync {
    /// Sends `batch` under `id` (the same id on every retry of the same batch).
    async fn send(&self, id: &str, batch: &Batch) -> Result<Sent, SendError>;
}

/// The writer: the pending batch, and what the flushing task keeps between flushes.
pub struct SpendWriter {
    settings: WriterSettings,
    pending: Mutex<Batch>,
    unsent: tokio::sync::Mutex<Option<Unsent>>,
    /// Wakes the flushing task before its interval when the pending batch is half full.
    half_full: tokio::sync::Notify,
    /// The statement for the database it was made for (`host:port/db`, schema): a reload that
    /// moves the source to another database or schema makes it again.
    statement: tokio::sync::Mutex<Option<(String, String)>>,
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
    /// A batch was refused for good by the fan-out server (logged and counted, not kept).
    Refused,
}

impl SpendWriter {
    /// A writer with nothing pending.
    pub fn new(settings: WriterSettings) -> Arc<SpendWriter> {
        Arc::new(SpendWriter {
            settings,
            pending: Mutex::new(Batch::default()),
            unsent: tokio::sync::Mutex::new(None),
            statement: tokio::sync::Mutex::new(None),
            half_full: tokio::sync::Notify::new(),
        })
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Batch> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds one request's spend to the pending batch.
    pub fn record(&self, record: SpendRecord) {
        let mut pending = self.pending();
        let dropped = pending.logs_dropped;
        let before = pending.len();
        pending.add(record, self.settings.max_pending_requests);
        self.grown(before, pending.len());
        if pending.logs_dropped > dropped {
            metrics::LOGS_DROPPED.inc();
        }
    }

    /// Adds a watcher's batch to the pending batch under `id` (`{watcher}/{batch id}`), within
    /// the same bound as this instance's own requests.
    pub fn absorb(&self, id: String, batch: Batch) {
        let mut pending = self.pending();
        let dropped = pending.logs_dropped + batch.logs_dropped;
        let before = pending.len();
        pending.absorb(id, batch, self.settings.max_pending_requests);
        self.grown(before, pending.len());
        metrics::LOGS_DROPPED.inc_by(pending.logs_dropped.saturating_sub(dropped));
    }

    /// The pending batch grew from `before` to `now` requests: the gauge follows, and the
    /// flushing task is woken once per batch, as it reaches half of what it may hold, so a busy
    /// sidecar writes before the interval rather than leave spend-log rows out. (While a failed
    /// batch is kept the pending one is not taken, so this wakes the task once, not on every
    /// request.)
    fn grown(&self, before: usize, now: usize) {
        metrics::PENDING_REQUESTS.set(now as i64);
        let half = self.settings.max_pending_requests.div_ceil(2);
        if before < half && now >= half {
            self.half_full.notify_one();
        }
    }

    /// The pending batch, leaving an empty one in its place (what the next flush writes).
    pub fn take_pending(&self) -> Batch {
        let batch = std::mem::take(&mut *self.pending());
        metrics::PENDING_REQUESTS.set(0);
        batch
    }

    /// Writes what is waiting on `session`: see [`SpendWriter::flush_into`].
    pub async fn flush(&self, session: &Session) -> Flushed {
        let sink = DatabaseSink {
            session,
            statement: &self.statement,
            spend_logs: self.settings.spend_logs,
        };
        let flushed = self.flush_into(&sink).await;
        if flushed == Flushed::Kept {
            // The failed write dropped the shared connection and its LISTEN: the refresher
            // reconnects now and reads whatever it may have missed (a budget reached).
            session.wake_listener();
        }
        flushed
    }

    /// Sends what is waiting to `sink`: first the batch a previous flush could not send (with
    /// the same id), else the pending one under a new id. On failure the batch is kept (and
    /// said in the log). Watchers' batches another serving instance wrote already are left out
    /// and the rest sent again at once.
    pub async fn flush_into(&self, sink: &dyn BatchSink) -> Flushed {
        let mut unsent = self.unsent.lock().await;
        if unsent.is_none() {
            let batch = self.take_pending();
            if batch.is_empty() {
                return Flushed::Nothing;
            }
            *unsent = Some(Unsent {
                id: batch_id(),
                batch,
            });
        }
        let Some(waiting) = unsent.as_mut() else {
            return Flushed::Nothing;
        };
        let mut sent = sink.send(&waiting.id, &waiting.batch).await;
        while let Ok(Sent::AbsorbedWritten(written)) = &sent {
            let left_out = waiting.batch.leave_out(written);
            metrics::BATCHES
                .with_label_values(&["duplicate"])
                .inc_by(left_out as u64);
            info!(
                "spend: {left_out} watchers' batches were written already by another serving \
                 instance; writing the rest"
            );
            if left_out == 0 {
                // The database named none this batch holds (they were pruned between the two
                // statements): keep the batch for the next flush rather than loop.
                metrics::BATCHES.with_label_values(&["failed"]).inc();
                return Flushed::Kept;
            }
            sent = sink.send(&waiting.id, &waiting.batch).await;
        }
        match sent {
            // (`AbsorbedWritten` never reaches here: the loop above sends the rest again.)
            Ok(Sent::Fresh | Sent::Duplicate | Sent::AbsorbedWritten(_)) => {
                *unsent = None;
                Flushed::Written
            }
            Ok(Sent::Refused(reason)) => {
                metrics::BATCHES.with_label_values(&["refused"]).inc();
                error!(
                    "spend: a batch of {} requests was refused by the fan-out server and is not \
                     sent again: {reason}",
                    waiting.batch.len()
                );
                *unsent = None;
                Flushed::Refused
            }
            Err(e) => {
                metrics::BATCHES.with_label_values(&["failed"]).inc();
                let held = waiting.batch.len();
                warn!("spend: a batch of {held} requests could not be written, kept for the next flush: {e}");
                Flushed::Kept
            }
        }
    }

    /// Flushes every `flush_interval`, and as soon as the pending batch is half full, to
    /// `target` until `shutdown`; then once more (twice, if the first try fails).
    pub async fn run(&self, target: &SpendTarget, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(self.settings.flush_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    self.flush_to(target).await;
                }
                _ = self.half_full.notified() => {
                    self.flush_to(target).await;
                }
                _ = shutdown.changed() => break,
            }
        }
        if self.flush_to(target).await == Flushed::Kept {
            self.flush_to(target).await;
        }
    }

    /// A flush to `target` now (the database's session as it is now: none, the batch waits).
    pub async fn flush_to(&self, target: &SpendTarget) -> Flushed {
        match target {
            SpendTarget::Database(database) => match database.load_full() {
                Some(session) => self.flush(&session).await,
                None => Flushed::Kept,
            },
            SpendTarget::Fanout(sink) => self.flush_into(sink.as_ref()).await,
        }
    }
}

/// Writing batches on a database session, as one statement each ([`super::flush`]).
struct DatabaseSink<'a> {
    session: &'a Session,
    statement: &'a tokio::sync::Mutex<Option<(String, String)>>,
    spend_logs: bool,
}

#[async_trait]
impl BatchSink for DatabaseSink<'_> {
    async fn send(&self, id: &str, batch: &Batch) -> Result<Sent, SendError> {
        let session = self.session;
        // Never inside the credential load's read transaction on the same connection.
        let _exclusive = session.exclusive().await;
        let client = session.client().await?;
        let database = format!(
            "{} {}",
            session.database().describe(),
            session.database().schema
        );
        let mut statement = self.statement.lock().await;
        let sql = match statement.as_ref() {
            Some((made_for, sql)) if *made_for == database => sql.clone(),
            _ => {
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
                let sql = tables.statement(self.spend_logs);
                *statement = Some((database, sql.clone()));
                sql
            }
        };
        let schema = &session.database().schema;
        let written = session
            .deadline(write(client.as_ref(), &sql, schema, id, batch))
            .await?;
        Ok(match written {
            Written::Fresh => {
                metrics::BATCHES.with_label_values(&["written"]).inc();
                Sent::Fresh
            }
            Written::Duplicate => {
                metrics::BATCHES.with_label_values(&["duplicate"]).inc();
                Sent::Duplicate
            }
            Written::AbsorbedWritten(ids) => Sent::AbsorbedWritten(ids),
        })
    }
}

/// Where a sidecar's spend goes.
pub enum SpendTarget {
    /// LiteLLM's database, on the session the Postgres source holds then.
    Database(Arc<ArcSwapOption<Session>>),
    /// The fan-out servers a watcher takes its rows from.
    Fanout(Arc<dyn BatchSink>),
}

/// The writer as a Pingora background service.
pub struct SpendService {
    /// The writer.
    pub writer: Arc<SpendWriter>,
    /// Where it writes.
    pub target: Arc<SpendTarget>,
}

#[async_trait]
impl BackgroundService for SpendService {
    async fn start(&self, shutdown: ShutdownWatch) {
        self.writer.run(&self.target, shutdown).await;
    }
}

/// A fresh batch id: 128 random bits, hex.
fn batch_id() -> String {
    format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}
