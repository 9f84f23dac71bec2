//! Keeps the credential snapshot current without a restart: every source is read again every
//! `refresh_interval` (±10 % at random, so a fleet started together does not poll together),
//! and whenever a source wakes the refresher (a Postgres `NOTIFY`, a lost database connection,
//! a new snapshot from a fan-out server); a complete new snapshot is built off the request path
//! and swapped in atomically.
//!
//! Failures never empty the cache: a source that cannot be read keeps its last good outcome;
//! a row that stops decrypting keeps its last good value; every row failing (a wrong salt key)
//! is refused as a whole. Retries back off exponentially up to [`MAX_BACKOFF`], each delay drawn
//! at random from its upper half (no fleet retrying in lockstep after a database restart). Logs record
//! state changes (database lost, back, rows failing or recovering), not every attempt.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::sync::{Mutex, Notify};
use tracing::{error, info, warn};

use super::cache::{CredentialCache, Deployments, Snapshot};
use super::source::{CredentialSource, LoadError, LoadOutcome};
use crate::jitter::random_below;
use crate::upstream::resolver::resolve;

/// First retry delay after a failed refresh.
pub const MIN_BACKOFF: Duration = Duration::from_secs(1);
/// Longest delay between retries.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Why one read of a source was not used.
#[derive(Debug, thiserror::Error)]
enum ReadError {
    /// The source could not be read.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// Every row failed authentication: the salt key is almost certainly wrong.
    #[error(
        "{described}: every one of its {rows} rows failed to decrypt: the salt key \
         (LITELLM_SALT_KEY, else LITELLM_MASTER_KEY) is probably wrong"
    )]
    WrongKey {
        /// The source, as it describes itself.
        described: String,
        /// Its rows, all failing.
        rows: usize,
    },
}

/// One source and what the refresher remembers about it.
struct Tracked {
    source: Box<dyn CredentialSource>,
    last_good: Option<LoadOutcome>,
    fingerprint: Option<String>,
    healthy: Option<bool>,
    failing: BTreeSet<String>,
}

impl Tracked {
    fn new(source: Box<dyn CredentialSource>) -> Tracked {
        Tracked {
            source,
            last_good: None,
            fingerprint: None,
            healthy: None,
            failing: BTreeSet::new(),
        }
    }
}

/// The refresher: sources in precedence order (later ones win on a name clash).
pub struct Refresher {
    cache: Arc<CredentialCache>,
    sources: Mutex<Vec<Tracked>>,
    /// The reload whose sources are in `sources` (0: the start-up ones).
    generation: AtomicU64,
    interval: Duration,
    wake: Arc<Notify>,
}

impl Refresher {
    /// A refresher publishing to `cache` from `sources`, woken early by `wake` (give the same
    /// `Notify` to the sources that can tell when they changed).
    pub fn new(
        cache: Arc<CredentialCache>,
        sources: Vec<Box<dyn CredentialSource>>,
        interval: Duration,
        wake: Arc<Notify>,
    ) -> Refresher {
        let sources = sources.into_iter().map(Tracked::new).collect();
        Refresher {
            cache,
            sources: Mutex::new(sources),
            generation: AtomicU64::new(0),
            interval,
            wake,
        }
    }

    /// What wakes the refresher before its next poll (for sources built after it, on reload).
    pub fn wake(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Replaces the sources with those of reload number `generation`, unless a later reload's
    /// are already in place (reloads replace them in the background, so two can race); returns
    /// whether it did. A source that was configured before (same description) keeps its last
    /// good outcome, so reloading while the database is down does not drop its credentials; a
    /// new source contributes from the next [`Refresher::refresh`], which reads every source
    /// again.
    pub async fn replace_sources(
        &self,
        sources: Vec<Box<dyn CredentialSource>>,
        generation: u64,
    ) -> bool {
        let mut current = self.sources.lock().await;
        if self.generation.load(Ordering::Relaxed) >= generation {
            return false;
        }
        self.generation.store(generation, Ordering::Relaxed);
        let mut previous: HashMap<String, Tracked> = current
            .drain(..)
            .map(|t| (t.source.describe(), t))
            .collect();
        for source in sources {
            source.start();
            let mut tracked = Tracked::new(source);
            if let Some(old) = previous.remove(&tracked.source.describe()) {
                tracked.last_good = old.last_good;
                tracked.healthy = old.healthy;
                tracked.failing = old.failing;
            }
            current.push(tracked);
        }
        // Sources that were dropped leave the snapshot now, even if nothing else changes.
        self.cache.publish(merge(&current));
        true
    }

    /// Reads every source once and publishes a new snapshot when anything changed. Returns
    /// `false` when some source could not be read (its last good outcome stays in use).
    pub async fn refresh(&self) -> bool {
        let mut sources = self.sources.lock().await;
        let mut all_read = true;
        let mut changed = false;
        for tracked in sources.iter_mut() {
            match read(tracked).await {
                Ok(source_changed) => {
                    changed |= source_changed;
                    if tracked.healthy != Some(true) {
                        if tracked.healthy == Some(false) {
                            info!(
                                "credentials: {} is readable again",
                                tracked.source.describe()
                            );
                        }
                        tracked.healthy = Some(true);
                    }
                }
                Err(e) => {
                    all_read = false;
                    if tracked.healthy != Some(false) {
                        let serving = if tracked.last_good.is_some() {
                            "serving its last good credentials"
                        } else {
                            "its credentials are not loaded yet"
                        };
                        error!("credentials: {e}; {serving}; retrying with backoff");
                        tracked.healthy = Some(false);
                    }
                }
            }
        }
        if changed {
            let snapshot = merge(&sources);
            resolve_new_targets(&snapshot).await;
            info!(
                "credentials: snapshot published ({} credentials, {} models)",
                snapshot.credentials.len(),
                snapshot.models.len()
            );
            self.cache.publish(snapshot);
        }
        if all_read {
            // As old as the oldest confirmation (a watcher's last answer), else now.
            let confirmed = sources.iter().filter_map(|t| t.source.confirmed_at()).min();
            self.cache
                .mark_fresh_at(confirmed.unwrap_or_else(tokio::time::Instant::now));
        }
        let result = if all_read { "success" } else { "failure" };
        crate::metrics::REFRESHES.with_label_values(&[result]).inc();
        all_read
    }
}

/// Reads one source; `Ok(true)` when its outcome changed.
async fn read(tracked: &mut Tracked) -> Result<bool, ReadError> {
    let fingerprint = tracked.source.fingerprint().await?;
    if fingerprint.is_some() && fingerprint == tracked.fingerprint && tracked.last_good.is_some() {
        return Ok(false);
    }
    let mut outcome = tracked.source.load().await?;
    if outcome.wrong_key_suspected() {
        return Err(ReadError::WrongKey {
            described: tracked.source.describe(),
            rows: outcome.rows,
        });
    }
    if let Some(previous) = &tracked.last_good {
        for name in outcome.keep_last_good(previous) {
            warn!("credentials: {name} no longer loads; keeping its last good value");
        }
    }
    let failing: BTreeSet<String> = outcome.failure_lines().into_iter().collect();
    for line in failing.difference(&tracked.failing) {
        warn!("credentials: left out {line}");
    }
    for line in tracked.failing.difference(&failing) {
        info!(
            "credentials: no longer failing: {}",
            line.split(':').next().unwrap_or(line)
        );
    }
    tracked.failing = failing;
    tracked.fingerprint = fingerprint;
    tracked.last_good = Some(outcome);
    Ok(true)
}

/// One snapshot from every source's last good outcome, later sources winning on a clash.
fn merge(sources: &[Tracked]) -> Snapshot {
    let mut snapshot = Snapshot::default();
    let mut models = std::collections::HashMap::new();
    for outcome in sources.iter().filter_map(|t| t.last_good.as_ref()) {
        for c in &outcome.credentials {
            snapshot.credential_failures.remove(&c.name);
            snapshot.credentials.insert(c.name.clone(), c.clone());
        }
        for (name, reason) in &outcome.credential_failures {
            if !snapshot.credentials.contains_key(name) {
                snapshot
                    .credential_failures
                    .insert(name.clone(), reason.clone());
            }
        }
        for (alias, list) in &outcome.models {
            models.insert(alias.clone(), list.clone());
        }
        if let Some(keys) = &outcome.litellm_keys {
            snapshot.litellm_keys = Some(keys.clone());
        }
        for (alias, reason) in &outcome.model_failures {
            snapshot
                .model_failures
                .insert(alias.clone(), reason.clone());
        }
    }
    snapshot.models = models
        .into_iter()
        .map(|(alias, list)| (alias, Deployments::new(list)))
        .collect();
    snapshot
}

/// Resolves upstreams that deployments introduced, before requests need them.
async fn resolve_new_targets(snapshot: &Snapshot) {
    for deployments in snapshot.models.values() {
        for target in deployments.all().iter().filter_map(|d| d.target.as_ref()) {
            if target.address().is_none() {
                if let Err(e) = resolve(target).await {
                    warn!(
                        "upstream {}: {e}; retried every dns_refresh_interval",
                        target.url
                    );
                }
            }
        }
    }
}

/// The refresher as a Pingora background service (it is shared with the config reloader).
pub struct RefreshService(pub Arc<Refresher>);

#[async_trait]
impl BackgroundService for RefreshService {
    async fn start(&self, shutdown: ShutdownWatch) {
        self.0.run(shutdown).await;
    }
}

impl Refresher {
    /// Refreshes every `refresh_interval` (jittered) and whenever woken, backing off after
    /// failures, until shutdown.
    pub async fn run(&self, mut shutdown: ShutdownWatch) {
        for tracked in self.sources.lock().await.iter() {
            tracked.source.start();
        }
        let mut backoff = MIN_BACKOFF;
        loop {
            let all_read = self.refresh().await;
            let wait = next_wait(all_read, &mut backoff, self.interval);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.wake.notified() => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// How long to wait before the next refresh: the interval ±10 % after a success; after a
/// failure the current backoff (capped by the interval), drawn from its upper half, and the
/// backoff doubles up to [`MAX_BACKOFF`].
fn next_wait(all_read: bool, backoff: &mut Duration, interval: Duration) -> Duration {
    if all_read {
        *backoff = MIN_BACKOFF;
        return interval - interval / 10 + random_below(interval / 5);
    }
    let ceiling = (*backoff).min(interval);
    *backoff = (*backoff * 2).min(MAX_BACKOFF);
    ceiling / 2 + random_below(ceiling / 2)
}

#[cfg(test)]
mod tests;
