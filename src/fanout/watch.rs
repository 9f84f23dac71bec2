//! The watching side of fan-out: a credential source whose rows come from a fan-out server by
//! long poll instead of from the database.
//!
//! A poller task holds one request open at a time (`If-None-Match` with the last entity tag);
//! a new answer is stored and wakes the refresher, which decodes it with this sidecar's own
//! salt key exactly as it would decode database rows. When the server cannot be reached, the
//! last rows stay in use (the refresher's last-known-good rule), the failure is reported once
//! per state change, and retries back off with jitter up to 30 s.
//!
//! The request asks for exactly the credentials and models this sidecar's routes name.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::BytesMut;
use http::header;
use pingora::connectors::http::v1::Connector;
use pingora::http::RequestHeader;
use pingora::upstreams::peer::{HttpPeer, PeerOptions};
use pingora::utils::tls::CertKey;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::SNAPSHOT_PATH;
use crate::config::WatchSettings;
use crate::credentials::cipher::Keys;
use crate::credentials::rows::{self, StoredRows};
use crate::credentials::source::{CredentialSource, LoadOutcome};
use crate::credentials::Secret;
use crate::db::session::random_below;
use crate::percent;
use crate::upstream::tls::{load_ca_bundle, load_client_cert};
use crate::upstream::Targets;

/// Largest snapshot accepted from a server.
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
/// Connect (and TLS handshake) deadline for each poll.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Added to the requested wait before a poll counts as hung.
const READ_SLACK: Duration = Duration::from_secs(15);
/// Longest delay between retries.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// One answer of the server.
struct Received {
    tag: String,
    rows: StoredRows,
}

/// What the poller last learned.
#[derive(Default)]
struct WatchState {
    latest: Option<Received>,
    /// Why the last poll failed, while it is failing.
    failing: Option<String>,
}

/// Makes the requests.
struct WatchClient {
    connector: Connector,
    settings: WatchSettings,
    options: PeerOptions,
    client_cert: Option<Arc<CertKey>>,
    token: Secret,
    path_and_query: String,
}

impl WatchClient {
    /// One long poll: `Ok(None)` when nothing changed within `wait`.
    async fn poll(&self, tag: Option<&str>, wait: Duration) -> Result<Option<Received>, String> {
        let server = &self.settings.url;
        let addr = tokio::net::lookup_host((self.settings.host.as_str(), self.settings.port))
            .await
            .ok()
            .and_then(|mut addrs| addrs.next())
            .ok_or_else(|| format!("fan-out server {server}: cannot resolve its host"))?;
        let mut peer = HttpPeer::new(addr, self.settings.tls, self.settings.host.clone());
        peer.options = self.options.clone();
        peer.options.read_timeout = Some(wait + READ_SLACK);
        peer.client_cert_key = self.client_cert.clone();
        let (mut session, _) = self
            .connector
            .get_http_session(&peer)
            .await
            .map_err(|e| format!("fan-out server {server}: cannot connect: {e}"))?;
        let path = format!("{}&wait={}", self.path_and_query, wait.as_secs());
        let mut request = RequestHeader::build("GET", path.as_bytes(), None)
            .map_err(|e| format!("fan-out request: {e}"))?;
        let authority = format!("{}:{}", self.settings.host, self.settings.port);
        let bearer = format!("Bearer {}", self.token.expose());
        let mut headers = vec![
            (header::HOST, authority.as_str()),
            (header::AUTHORIZATION, bearer.as_str()),
        ];
        if let Some(tag) = tag {
            headers.push((header::IF_NONE_MATCH, tag));
        }
        for (name, value) in headers {
            let what = name.to_string();
            request
                .insert_header(name, value)
                .map_err(|_| format!("fan-out request: invalid {what} header"))?;
        }
        session
            .write_request_header(Box::new(request))
            .await
            .map_err(|e| format!("fan-out server {server}: cannot send the request: {e}"))?;
        session
            .read_response()
            .await
            .map_err(|e| format!("fan-out server {server}: no answer: {e}"))?;
        let response = session
            .resp_header()
            .ok_or_else(|| format!("fan-out server {server}: no response head"))?;
        let status = response.status.as_u16();
        let new_tag = response
            .headers
            .get(header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let mut body = BytesMut::new();
        while let Some(chunk) = session
            .read_body_bytes()
            .await
            .map_err(|e| format!("fan-out server {server}: reading the answer: {e}"))?
        {
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(format!(
                    "fan-out server {server}: answer larger than {MAX_BODY_BYTES} bytes"
                ));
            }
            body.extend_from_slice(&chunk);
        }
        if !wait.is_zero() {
            // Kept for the next poll. Not after the immediate start-up poll, which runs on a
            // runtime that is about to stop (a pooled connection would die with it).
            self.connector
                .release_http_session(session, &peer, None)
                .await;
        }
        match (status, new_tag) {
            (304, _) => Ok(None),
            (200, Some(tag)) => {
                let rows = serde_json::from_slice(&body).map_err(|e| {
                    format!("fan-out server {server}: the snapshot is not valid JSON rows: {e}")
                })?;
                Ok(Some(Received { tag, rows }))
            }
            (200, None) => Err(format!("fan-out server {server}: answer without an ETag")),
            (status, _) => {
                let reason = serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v.get("error")?.as_str().map(str::to_string))
                    .unwrap_or_default();
                Err(format!(
                    "fan-out server {server} answered {status}: {reason}"
                ))
            }
        }
    }
}

/// The watch credential source.
pub struct WatchSource {
    client: Arc<WatchClient>,
    keys: Option<Keys>,
    targets: Arc<Targets>,
    wake: Arc<Notify>,
    state: Arc<Mutex<WatchState>>,
    poller: Mutex<Option<JoinHandle<()>>>,
}

impl WatchSource {
    /// A source watching `settings.url` for `credentials` and `models`, decrypting with
    /// `keys`; `upstream_ca` is trusted when `settings.ca_file` is unset. Errors name the
    /// missing token variable or an unreadable certificate file.
    pub fn new(
        settings: &WatchSettings,
        upstream_ca: Option<&std::path::PathBuf>,
        credentials: &[String],
        models: &[String],
        keys: Option<Keys>,
        targets: Arc<Targets>,
        wake: Arc<Notify>,
    ) -> Result<WatchSource, String> {
        let token = std::env::var(&settings.token_env)
            .ok()
            .filter(|t| !t.is_empty())
            .map(Secret::new)
            .ok_or_else(|| {
                format!(
                    "credentials.watch: the token variable {} is not set",
                    settings.token_env
                )
            })?;
        let mut options = PeerOptions::new();
        options.connection_timeout = Some(CONNECT_TIMEOUT);
        options.total_connection_timeout = Some(CONNECT_TIMEOUT * 2);
        options.verify_cert = true;
        options.verify_hostname = true;
        if let Some(ca) = settings.ca_file.as_ref().or(upstream_ca) {
            options.ca = Some(load_ca_bundle(ca)?);
        }
        let client_cert = match (&settings.client_cert, &settings.client_key) {
            (Some(cert), Some(key)) => Some(load_client_cert(cert, key)?),
            _ => None,
        };
        let names = credentials
            .iter()
            .map(|n| format!("credential={}", percent::encode(n)))
            .chain(
                models
                    .iter()
                    .map(|n| format!("model={}", percent::encode(n))),
            )
            .collect::<Vec<_>>()
            .join("&");
        Ok(WatchSource {
            client: Arc::new(WatchClient {
                connector: Connector::new(None),
                settings: settings.clone(),
                options,
                client_cert,
                token,
                path_and_query: format!("{SNAPSHOT_PATH}?{names}"),
            }),
            keys,
            targets,
            wake,
            state: Arc::default(),
            poller: Mutex::new(None),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, WatchState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts the poller on the current runtime unless one runs (it stops with its runtime,
    /// e.g. the start-up one, and is started again by the next refresh).
    fn ensure_poller(&self) {
        let mut poller = self.poller.lock().unwrap_or_else(|e| e.into_inner());
        if poller.as_ref().is_some_and(|p| !p.is_finished()) {
            return;
        }
        let (client, state, wake) = (self.client.clone(), self.state.clone(), self.wake.clone());
        *poller = Some(tokio::spawn(poll_forever(client, state, wake)));
    }
}

impl Drop for WatchSource {
    fn drop(&mut self) {
        if let Some(poller) = self.poller.lock().unwrap_or_else(|e| e.into_inner()).take() {
            poller.abort();
        }
    }
}

/// Long-polls until aborted, storing each new answer and waking the refresher.
async fn poll_forever(client: Arc<WatchClient>, state: Arc<Mutex<WatchState>>, wake: Arc<Notify>) {
    let lock = || state.lock().unwrap_or_else(|e| e.into_inner());
    let mut backoff = Duration::from_secs(1);
    loop {
        let tag = lock().latest.as_ref().map(|r| r.tag.clone());
        match client.poll(tag.as_deref(), client.settings.wait).await {
            Ok(answer) => {
                backoff = Duration::from_secs(1);
                let changed = answer.is_some();
                let recovered = {
                    let mut state = lock();
                    if let Some(received) = answer {
                        state.latest = Some(received);
                    }
                    state.failing.take().is_some()
                };
                if recovered {
                    info!(
                        "credentials: fan-out server {} is answering again",
                        client.settings.url
                    );
                }
                if changed || recovered {
                    wake.notify_one();
                }
            }
            Err(e) => {
                let first = lock().failing.replace(e.clone()).is_none();
                if first {
                    warn!(
                        "credentials: {e}; keeping the last rows received; retrying with backoff"
                    );
                    // The refresher reports the source as failing (staleness, metrics).
                    wake.notify_one();
                }
                tokio::time::sleep(backoff / 2 + random_below(backoff / 2)).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

#[async_trait]
impl CredentialSource for WatchSource {
    fn describe(&self) -> String {
        format!("fan-out server {}", self.client.settings.url)
    }

    async fn fingerprint(&self) -> Result<Option<String>, String> {
        self.ensure_poller();
        if self.state().latest.is_none() {
            // Nothing yet (start-up): ask once without waiting, so the sidecar starts serving.
            let first = self.client.poll(None, Duration::ZERO).await?;
            let mut state = self.state();
            if state.latest.is_none() {
                state.latest = first;
            }
        }
        let state = self.state();
        if let Some(e) = &state.failing {
            return Err(e.clone());
        }
        Ok(state.latest.as_ref().map(|r| r.tag.clone()))
    }

    async fn load(&self) -> Result<LoadOutcome, String> {
        let state = self.state();
        let received = state
            .latest
            .as_ref()
            .ok_or_else(|| format!("{}: no snapshot received yet", self.describe()))?;
        Ok(rows::decode(
            &received.rows,
            self.keys.as_ref(),
            &self.targets,
        ))
    }
}
