//! The watching side of fan-out: a credential source whose rows come from fan-out servers by
//! long poll instead of from the database.
//!
//! A poller task (`poller`) holds one request open at a time (`If-None-Match` with the last
//! entity tag); a new answer is stored and wakes the refresher, which decodes it with this
//! sidecar's own salt key exactly as it would decode database rows. The request asks for
//! exactly the credentials and models this sidecar's routes name (and, with
//! `access.litellm_keys`, the LiteLLM keys `credentials.watch.litellm_keys` names, used exactly
//! as a database read's); rows the server sends beyond those are dropped on receipt and counted
//! (`sidecar_watch_unrequested_rows_total`).
//!
//! What a hostile or broken server can do is bounded:
//! - every round trip step has a deadline of ours (`client`), so a server that accepts and
//!   never answers costs one timeout, after which the poller moves to another address;
//! - an answer larger than `max_answer_bytes` is refused before (or while) it is read;
//! - the snapshot's age (`/readyz`, `sidecar_credential_snapshot_age_seconds`) runs from the
//!   last answer (200 or 304) received, so a hung server makes the watcher go stale;
//! - warnings are rate-limited.
//!
//! Start-up asks once without waiting, on the start-up runtime and under [`START_DEADLINE`], and
//! closes that connection when answered; the poller starts only on the long-lived runtime
//! ([`CredentialSource::start`]), with the start-up answer's tag, so nothing is left waiting on
//! a server for a runtime that is gone.

mod answer;
mod client;
mod endpoints;
mod error;
mod failure;
mod poller;
mod report;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{info, warn};

use self::answer::{requested_rows, Selection};
use self::client::{Endpoint, RawAnswer, WatchClient, CONNECT_DEADLINE};
use self::failure::{Failure, Problem};
use self::poller::{held_back, Throttle, WARN_INTERVAL};
use super::SNAPSHOT_PATH;
use crate::access::litellm_keys::KeyTable;
use crate::config::{FanoutServer, KeyGrant, WatchSettings};
use crate::credentials::cipher::Keys;
use crate::credentials::rows::{self, StoredRows};
use crate::credentials::source::{CredentialSource, LoadError, LoadOutcome};
use crate::credentials::values::ValueReader;
use crate::metrics::{WATCH_POLLS, WATCH_UNREQUESTED_ROWS};
use crate::percent;
use crate::upstream::Targets;

pub use self::client::ANSWER_SLACK;
pub use self::error::WatchError;
pub use self::poller::MAX_BACKOFF;
pub use self::report::SpendReporter;

/// Longest the start-up poll (every address in turn, without waiting) may take before the
/// sidecar starts without the servers' rows.
pub const START_DEADLINE: Duration = Duration::from_secs(15);

/// How long a watcher's snapshot may go without an answer before `/readyz` reports it stale:
/// two full waits and their slack (a poll in progress is at most one).
pub fn stale_after(settings: &WatchSettings) -> Duration {
    (settings.wait + ANSWER_SLACK) * 2 + CONNECT_DEADLINE
}

/// One answer of a server: the rows asked for.
struct Received {
    tag: String,
    rows: StoredRows,
}

/// What the poller last learned.
struct WatchState {
    latest: Option<Received>,
    /// Why no server answered in the last full round, while that is so.
    failing: Option<String>,
    /// When a server last answered (200 or 304).
    confirmed_at: Option<Instant>,
    /// Warnings about rows not asked for.
    unrequested: Throttle,
}

/// What the source and its poller share.
struct Shared {
    client: WatchClient,
    servers: Vec<Arc<FanoutServer>>,
    credentials: Vec<String>,
    models: Vec<String>,
    /// The LiteLLM keys asked for (`access.litellm_keys` on).
    litellm_keys: Option<KeyGrant>,
    keys: Option<Keys>,
    wake: Arc<Notify>,
    state: Mutex<WatchState>,
    /// Counts answers and failed rounds (the first one ends a wait for the poller's start).
    outcomes: tokio::sync::watch::Sender<u64>,
}

impl Shared {
    fn state(&self) -> std::sync::MutexGuard<'_, WatchState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn tag(&self) -> Option<String> {
        self.state().latest.as_ref().map(|r| r.tag.clone())
    }

    /// Takes an answer (`None`: 304): only the rows asked for are read from it, the others
    /// are counted; then [`Shared::answered`]. An answer that is not valid rows is a failure.
    fn accept(&self, endpoint: &Endpoint, answer: Option<RawAnswer>) -> Result<(), Failure> {
        let Some(answer) = answer else {
            self.answered(endpoint, None);
            return Ok(());
        };
        let selection = Selection {
            credentials: &self.credentials,
            models: &self.models,
            keys: self.litellm_keys.as_ref(),
            reader: ValueReader {
                keys: self.keys.as_ref(),
                env: None,
            },
        };
        let (rows, dropped) = requested_rows(&answer.body, &selection)
            .map_err(|e| Failure::new(&endpoint.describe(), Problem::NotRows(e)))?;
        drop(answer.body);
        if dropped > 0 {
            WATCH_UNREQUESTED_ROWS.inc_by(dropped as u64);
            if let Some(n) = self.state().unrequested.allow() {
                warn!(
                    "credentials: {} sent {dropped} rows this watcher did not ask for; ignored{}",
                    endpoint.describe(),
                    held_back(n)
                );
            }
        }
        let received = Received {
            tag: answer.tag,
            rows,
        };
        self.answered(endpoint, Some(received));
        Ok(())
    }

    /// Records an answer: the confirmation time, the rows, recovery; wakes the refresher
    /// (staleness is measured from answers).
    fn answered(&self, endpoint: &Endpoint, answer: Option<Received>) {
        let label = if answer.is_some() {
            "changed"
        } else {
            "unchanged"
        };
        WATCH_POLLS.with_label_values(&[label]).inc();
        let recovered = {
            let mut state = self.state();
            state.confirmed_at = Some(Instant::now());
            if let Some(received) = answer {
                state.latest = Some(received);
            }
            state.failing.take().is_some()
        };
        if recovered {
            info!("credentials: {} is answering again", endpoint.describe());
        }
        self.wake.notify_one();
        self.outcomes.send_modify(|n| *n += 1);
    }

    fn count_failure(&self, failure: &Failure) {
        WATCH_POLLS.with_label_values(&[failure.kind()]).inc();
    }

    /// No address answered in a whole round: the source is failing until one does.
    fn round_failed(&self, message: &str, warnings: &mut Throttle) {
        let first = self.state().failing.replace(message.to_string()).is_none();
        if let Some(n) = warnings.allow() {
            warn!(
                "credentials: {message}; no fan-out server answered; keeping the last rows \
                 received; retrying every {MAX_BACKOFF:?} at most{}",
                held_back(n)
            );
        }
        if first {
            // The refresher reports the source as failing (staleness, metrics).
            self.wake.notify_one();
        }
        self.outcomes.send_modify(|n| *n += 1);
    }
}

/// The watch credential source.
pub struct WatchSource {
    shared: Arc<Shared>,
    targets: Arc<Targets>,
    /// Set once the poller may run (the long-lived runtime has taken over).
    started: AtomicBool,
    poller: Mutex<Option<JoinHandle<()>>>,
}

impl WatchSource {
    /// A source watching `settings.servers` for `credentials`, `models` and the LiteLLM keys
    /// `litellm_keys` asks for (their table is then in every outcome, as a database read puts
    /// it), decrypting with `keys`; `upstream_ca` is trusted when `settings.ca_file` is unset.
    /// Errors name the missing token variable or an unreadable certificate file.
    #[allow(
        clippy::too_many_arguments,
        reason = "each is a separate part of the config the source is built from"
    )]
    pub fn new(
        settings: &WatchSettings,
        upstream_ca: Option<&std::path::PathBuf>,
        credentials: &[String],
        models: &[String],
        litellm_keys: Option<&KeyGrant>,
        keys: Option<Keys>,
        targets: Arc<Targets>,
        wake: Arc<Notify>,
    ) -> Result<WatchSource, WatchError> {
        let names = credentials
            .iter()
            .map(|n| format!("credential={}", percent::encode(n)))
            .chain(
                models
                    .iter()
                    .map(|n| format!("model={}", percent::encode(n))),
            )
            .chain(match litellm_keys {
                None => Vec::new(),
                Some(KeyGrant::All) => vec!["keys=all".to_string()],
                Some(KeyGrant::Teams(teams)) => teams
                    .iter()
                    .map(|t| format!("team={}", percent::encode(t)))
                    .collect(),
            })
            .collect::<Vec<_>>()
            .join("&");
        let client = WatchClient::new(settings, upstream_ca, format!("{SNAPSHOT_PATH}?{names}"))?;
        let shared = Shared {
            client,
            servers: settings.servers.iter().cloned().map(Arc::new).collect(),
            credentials: credentials.to_vec(),
            models: models.to_vec(),
            litellm_keys: litellm_keys.cloned(),
            keys,
            wake,
            state: Mutex::new(WatchState {
                latest: None,
                failing: None,
                confirmed_at: None,
                unrequested: Throttle::new(WARN_INTERVAL),
            }),
            outcomes: tokio::sync::watch::Sender::new(0),
        };
        Ok(WatchSource {
            shared: Arc::new(shared),
            targets,
            started: AtomicBool::new(false),
            poller: Mutex::new(None),
        })
    }

    /// Starts the poller on the current runtime unless one runs (it is started again by the
    /// next refresh should it ever end).
    fn ensure_poller(&self) {
        let mut poller = self.poller.lock().unwrap_or_else(|e| e.into_inner());
        if poller.as_ref().is_some_and(|p| !p.is_finished()) {
            return;
        }
        *poller = Some(tokio::spawn(poller::poll_forever(self.shared.clone())));
    }

    /// The start-up poll: each address once, without waiting, until one answers; bounded by
    /// [`START_DEADLINE`]. The connection is closed after the answer (the start-up runtime
    /// ends soon), never pooled or left waiting.
    async fn poll_once(&self) -> Result<(), WatchError> {
        let shared = &self.shared;
        let attempt = async {
            let (endpoints, mut problems) = endpoints::resolve(&shared.servers).await;
            let first = fastrand::usize(..endpoints.len().max(1));
            for i in 0..endpoints.len() {
                let endpoint = &endpoints[(first + i) % endpoints.len()];
                let answer = shared
                    .client
                    .poll(endpoint, None, Duration::ZERO, false)
                    .await;
                match answer.and_then(|a| shared.accept(endpoint, a)) {
                    Ok(()) => return Ok(()),
                    Err(f) => {
                        shared.count_failure(&f);
                        warn!("credentials: {f}");
                        problems.push(f.to_string());
                    }
                }
            }
            Err(WatchError::Unanswered(problems))
        };
        match tokio::time::timeout(START_DEADLINE, attempt).await {
            Ok(result) => result,
            Err(_) => {
                let e = WatchError::StartTimedOut {
                    described: self.describe(),
                    deadline: START_DEADLINE,
                };
                warn!("credentials: {e}; starting without their rows, polling on");
                Err(e)
            }
        }
    }
}

impl Drop for WatchSource {
    fn drop(&mut self) {
        if let Some(poller) = self.poller.lock().unwrap_or_else(|e| e.into_inner()).take() {
            poller.abort();
        }
    }
}

#[async_trait]
impl CredentialSource for WatchSource {
    fn describe(&self) -> String {
        match self.shared.servers.len() {
            1 => format!("fan-out server {}", self.shared.client.settings.urls()),
            _ => format!("fan-out servers {}", self.shared.client.settings.urls()),
        }
    }

    fn start(&self) {
        self.started.store(true, Ordering::Relaxed);
        self.ensure_poller();
    }

    async fn fingerprint(&self) -> Result<Option<String>, LoadError> {
        if self.started.load(Ordering::Relaxed) {
            self.ensure_poller();
            if self.shared.tag().is_none() {
                // A poller just started (a reload): give it its first round.
                let mut outcomes = self.shared.outcomes.subscribe();
                let first = outcomes.wait_for(|n| *n > 0);
                let _ = tokio::time::timeout(START_DEADLINE, first).await;
            }
        } else if self.shared.tag().is_none() {
            // Start-up: ask once without waiting, so the sidecar starts serving.
            self.poll_once().await?;
        }
        let state = self.shared.state();
        if let Some(e) = &state.failing {
            return Err(WatchError::Failing(e.clone()).into());
        }
        Ok(state.latest.as_ref().map(|r| r.tag.clone()))
    }

    fn confirmed_at(&self) -> Option<Instant> {
        self.shared.state().confirmed_at
    }

    async fn load(&self) -> Result<LoadOutcome, LoadError> {
        let state = self.shared.state();
        let received = state
            .latest
            .as_ref()
            .ok_or_else(|| WatchError::NothingReceived {
                described: self.describe(),
            })?;
        let mut outcome = rows::decode(&received.rows, self.shared.keys.as_ref(), &self.targets);
        if self.shared.litellm_keys.is_some() {
            let table = KeyTable::new(received.rows.keys.clone(), received.rows.teams.clone());
            outcome.litellm_keys = Some(Arc::new(table));
        }
        Ok(outcome)
    }
}
