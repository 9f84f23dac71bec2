//! Minted credentials: short-lived secrets the sidecar obtains from a token endpoint with a
//! longer-lived one, held per credential and refreshed ahead of expiry off the request path:
//! bearer tokens (Azure Entra ID's client-credentials grant, [`entra`], or the host's managed
//! identity, [`managed_identity`]; Vertex AI's JWT bearer, [`vertex`]) and temporary AWS keys (STS AssumeRole, `crate::aws::sts`), which sign requests
//! instead of being sent ([`Issued`]). The shape is the grant's business ([`Mint`]); caching,
//! single flight, failure and reporting are this module's.
//!
//! - The request path reads the token with one `ArcSwap` load ([`MintedCredential::header`]). A
//!   request that finds it in its refresh window (the last quarter of its life, at most
//!   [`MAX_REFRESH_AHEAD`]) starts one background refresh and goes on with the current token.
//! - A request that finds no usable token (none minted yet, or expired) waits for one mint
//!   ([`MintedCredential::ready`]): one mint per credential however many requests wait, since
//!   mints run one at a time and a waiter takes the outcome of the mint it waited behind.
//! - A mint that fails keeps the current token until it expires; after that, requests fail
//!   closed (503 `credential_unavailable`, naming the credential and the cause, never a value),
//!   and a new mint is tried at most once per [`RETRY_AFTER`].
//! - Mints are counted in `sidecar_minted_token_mints_total`; `/config` and `/readyz` list each
//!   minted credential's state and expiry ([`report`]), never its token.
//!
//! Credentials are shared across snapshot reloads by their grant's fingerprint ([`shared`]), so a
//! reload that rebuilds every deployment does not mint again.

pub mod entra;
pub mod federated;
pub mod managed_identity;
pub(crate) mod token_client;
pub mod vertex;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use http::HeaderValue;
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::aws::sigv4::Keys;
use crate::providers::BEARER_PREFIX;
use crate::secret::Secret;

pub use token_client::{configure_token_client, MintError};

/// The most a token is refreshed ahead of its expiry.
pub const MAX_REFRESH_AHEAD: Duration = Duration::from_secs(300);
/// After a failed mint, how long requests take that failure rather than minting again.
pub const RETRY_AFTER: Duration = Duration::from_secs(2);
/// Deadline for one whole mint (connect, send, answer).
pub const MINT_DEADLINE: Duration = Duration::from_secs(15);

/// What a grant issues.
pub enum Issued {
    /// An access token, sent as `Authorization: Bearer`.
    Bearer(Secret),
    /// Temporary AWS credentials, which sign each request (never sent themselves, but for the
    /// session token).
    Aws(Arc<Keys>),
}

/// A token as a grant returns it.
pub struct Minted {
    /// The access token, or the temporary keys.
    pub token: Issued,
    /// How long it is valid from now.
    pub lifetime: Duration,
}

/// One grant: how a credential's token is obtained.
#[async_trait::async_trait]
pub trait Mint: Send + Sync + 'static {
    /// The grant's name in reports (`entra_id`, `azure_ad_token`, `aws_assume_role`).
    fn kind(&self) -> &'static str;
    /// Obtains a new token. Errors never contain a secret.
    async fn mint(&self) -> Result<Minted, MintError>;
}

/// Why a minted credential cannot serve a request now. Names the credential and the cause,
/// never a value.
#[derive(Debug, Clone, thiserror::Error)]
#[error("credential {credential:?}: no valid token: {cause}")]
pub struct Unavailable {
    /// The credential's name.
    pub credential: String,
    /// The last mint's failure, or why there is no token.
    pub cause: String,
}

/// What a held token is used as.
enum Held {
    /// `Bearer TOKEN`, marked sensitive.
    Bearer(HeaderValue),
    /// Temporary AWS keys.
    Aws(Arc<Keys>),
}

/// A token in use.
struct Token {
    value: Held,
    expires: Instant,
    refresh_at: Instant,
    expires_wall: SystemTime,
}

/// A failed mint.
#[derive(Clone)]
struct Failure {
    at: Instant,
    cause: String,
}

#[derive(Default)]
struct State {
    token: Option<Arc<Token>>,
    failure: Option<Failure>,
    /// Mints tried so far (a waiter that sees this change took the outcome of another's mint).
    attempts: u64,
    mints: u64,
}

impl State {
    fn usable(&self, now: Instant) -> Option<&Arc<Token>> {
        self.token.as_ref().filter(|t| now < t.expires)
    }
}

/// One credential whose token is minted (see the module docs).
pub struct MintedCredential {
    name: String,
    minter: Box<dyn Mint>,
    state: ArcSwap<State>,
    mint_lock: tokio::sync::Mutex<()>,
    refreshing: AtomicBool,
}

impl std::fmt::Debug for MintedCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MintedCredential")
            .field("name", &self.name)
            .field("kind", &self.minter.kind())
            .finish()
    }
}

impl MintedCredential {
    /// A credential named `name` whose token `minter` mints; nothing is minted until a request
    /// needs it.
    pub fn new(name: String, minter: Box<dyn Mint>) -> MintedCredential {
        MintedCredential {
            name,
            minter,
            state: ArcSwap::from_pointee(State::default()),
            mint_lock: tokio::sync::Mutex::new(()),
            refreshing: AtomicBool::new(false),
        }
    }

    /// The credential's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The current token as `Authorization: Bearer TOKEN` (request path: one load). In its
    /// refresh window, a background refresh starts (once); without a usable token, why not.
    pub fn header(self: &Arc<Self>) -> Result<HeaderValue, Unavailable> {
        match &self.current()?.value {
            Held::Bearer(header) => Ok(header.clone()),
            Held::Aws(_) => Err(self.not_held("a bearer token")),
        }
    }

    /// The current temporary AWS keys, as [`header`](Self::header) reads a token.
    pub fn aws_keys(self: &Arc<Self>) -> Result<Arc<Keys>, Unavailable> {
        match &self.current()?.value {
            Held::Aws(keys) => Ok(keys.clone()),
            Held::Bearer(_) => Err(self.not_held("AWS keys")),
        }
    }

    /// Whether a usable token is held now (and a refresh starts when one is due).
    pub fn check(self: &Arc<Self>) -> Result<(), Unavailable> {
        self.current().map(drop)
    }

    fn not_held(&self, what: &str) -> Unavailable {
        Unavailable {
            credential: self.name.clone(),
            cause: format!("its grant ({}) does not issue {what}", self.minter.kind()),
        }
    }

    /// The current token (see [`header`](Self::header)).
    fn current(self: &Arc<Self>) -> Result<Arc<Token>, Unavailable> {
        let now = Instant::now();
        let state = self.state.load();
        match state.usable(now) {
            Some(token) => {
                // Not while a failure is younger than RETRY_AFTER: no task per request then.
                let resting = state
                    .failure
                    .as_ref()
                    .is_some_and(|f| now.duration_since(f.at) < RETRY_AFTER);
                if now >= token.refresh_at && !resting {
                    self.refresh_in_background();
                }
                Ok(token.clone())
            }
            None => Err(self.unavailable(&state)),
        }
    }

    /// Waits until a usable token is held, minting one if needed (single flight), or says why
    /// there is none.
    pub async fn ready(self: &Arc<Self>) -> Result<(), Unavailable> {
        if self.check().is_ok() {
            return Ok(());
        }
        let seen = self.state.load().attempts;
        self.mint_unless_done(seen, false).await;
        self.check()
    }

    /// Starts one refresh on the current runtime unless one runs.
    fn refresh_in_background(self: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = self.clone();
        runtime.spawn(async move {
            let seen = this.state.load().attempts;
            this.mint_unless_done(seen, true).await;
            this.refreshing.store(false, Ordering::Release);
        });
    }

    /// Mints, one mint at a time, unless what was wanted happened while waiting for the turn: a
    /// usable token (for a refresh: one not due for refresh), another mint's outcome (`seen`
    /// attempts changed), or a failure younger than [`RETRY_AFTER`].
    async fn mint_unless_done(&self, seen: u64, refresh: bool) {
        let _turn = self.mint_lock.lock().await;
        let now = Instant::now();
        let state = self.state.load_full();
        let satisfied = state
            .usable(now)
            .is_some_and(|t| !refresh || now < t.refresh_at);
        let recent_failure = state
            .failure
            .as_ref()
            .is_some_and(|f| now.duration_since(f.at) < RETRY_AFTER);
        if satisfied || state.attempts != seen || recent_failure {
            return;
        }
        let phase = if state.mints == 0 { "first" } else { "refresh" };
        let outcome = match tokio::time::timeout(MINT_DEADLINE, self.minter.mint()).await {
            Ok(Ok(minted)) => self.accept(minted),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!(
                "the token endpoint did not answer within {MINT_DEADLINE:?}"
            )),
        };
        let mut next = State {
            token: state.token.clone(),
            failure: None,
            attempts: state.attempts + 1,
            mints: state.mints,
        };
        match outcome {
            Ok(token) => {
                crate::metrics::record_mint(&self.name, phase, "ok");
                next.token = Some(Arc::new(token));
                next.mints += 1;
            }
            Err(cause) => {
                crate::metrics::record_mint(&self.name, phase, "failed");
                let kept = if state.usable(now).is_some() {
                    "; the current token is used until it expires"
                } else {
                    ""
                };
                tracing::warn!(
                    "credential {}: minting a token failed: {cause}{kept}",
                    self.name
                );
                next.failure = Some(Failure { at: now, cause });
            }
        }
        self.state.store(Arc::new(next));
    }

    /// A minted token, ready to use.
    fn accept(&self, minted: Minted) -> Result<Token, String> {
        let value = match minted.token {
            Issued::Bearer(token) if token.is_empty() => {
                return Err("the token endpoint answered with an empty token".to_string())
            }
            Issued::Bearer(token) => Held::Bearer(
                token
                    .to_header_value(BEARER_PREFIX)
                    .map_err(|_| "the token holds bytes a header cannot".to_string())?,
            ),
            Issued::Aws(keys) => Held::Aws(keys),
        };
        let now = Instant::now();
        let ahead = (minted.lifetime / 4).min(MAX_REFRESH_AHEAD);
        Ok(Token {
            value,
            expires: now + minted.lifetime,
            refresh_at: now + minted.lifetime - ahead,
            expires_wall: SystemTime::now() + minted.lifetime,
        })
    }

    fn unavailable(&self, state: &State) -> Unavailable {
        let cause = match (&state.failure, &state.token) {
            (Some(failure), _) => failure.cause.clone(),
            (None, Some(_)) => "the token expired".to_string(),
            (None, None) => "no token minted yet".to_string(),
        };
        Unavailable {
            credential: self.name.clone(),
            cause,
        }
    }

    /// State and expiry, for `/config` and `/readyz` (never the token).
    pub fn report(&self) -> Value {
        let now = Instant::now();
        let state = self.state.load();
        let status = match (state.usable(now), &state.failure) {
            (Some(_), None) => "valid",
            (Some(_), Some(_)) => "valid_refresh_failing",
            (None, Some(_)) => "failing",
            (None, None) if state.token.is_some() => "expired",
            (None, None) => "not_minted_yet",
        };
        json!({
            "name": self.name,
            "grant": self.minter.kind(),
            "state": status,
            "expires_at": state.token.as_ref().map(|t| {
                humantime::format_rfc3339_seconds(t.expires_wall).to_string()
            }),
            "mints": state.mints,
            "last_failure": state.failure.as_ref().map(|f| f.cause.clone()),
        })
    }
}

/// Live minted credentials by their grant's fingerprint.
static LIVE: LazyLock<Mutex<HashMap<[u8; 32], Weak<MintedCredential>>>> =
    LazyLock::new(Default::default);

/// The credential for the grant whose fingerprint (a digest of everything that defines it,
/// secrets included) is `fingerprint`: the live one if a snapshot still holds it, so its token
/// survives a reload; else a new one from `make`.
pub fn shared(
    fingerprint: [u8; 32],
    make: impl FnOnce() -> MintedCredential,
) -> Arc<MintedCredential> {
    let mut live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    live.retain(|_, weak| weak.strong_count() > 0);
    if let Some(existing) = live.get(&fingerprint).and_then(Weak::upgrade) {
        return existing;
    }
    let made = Arc::new(make());
    live.insert(fingerprint, Arc::downgrade(&made));
    made
}

/// Every live minted credential's [report](MintedCredential::report), by name.
pub fn report() -> Vec<Value> {
    let live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    let mut all: Vec<Value> = live
        .values()
        .filter_map(Weak::upgrade)
        .map(|c| c.report())
        .collect();
    all.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    all
}

/// A fixed token (LiteLLM's `azure_ad_token`): minted once, never expires in the sidecar's
/// view (the provider decides when it no longer accepts it).
pub struct FixedToken(pub Secret);

/// How long a fixed token is taken to live: no refresh is ever due.
const FIXED_LIFETIME: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

#[async_trait::async_trait]
impl Mint for FixedToken {
    fn kind(&self) -> &'static str {
        "azure_ad_token"
    }

    async fn mint(&self) -> Result<Minted, MintError> {
        Ok(Minted {
            token: Issued::Bearer(self.0.clone()),
            lifetime: FIXED_LIFETIME,
        })
    }
}

#[cfg(test)]
mod tests;
