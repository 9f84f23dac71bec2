//! The serving side of fan-out: `GET /v1/snapshot` on a listener of its own (TLS, required off
//! loopback), answered from the [`FanoutHub`] without touching the database.
//!
//! A watcher is known by its token (`Authorization: Bearer …`; the config holds only its
//! SHA-256) and receives only the rows its grant names, plus the credentials those model rows
//! link to, and the LiteLLM key and team rows its grant's `litellm_keys` covers (all, or those
//! of named teams). A request naming anything outside the grant is refused whole (403, naming what was
//! refused), so a misconfigured watcher is told rather than silently served less. Tokens are
//! compared by their SHA-256 through a map: what a lookup's timing could reveal is about the
//! digest, which an attacker cannot invert into a token. The query a watch request makes and the
//! grants it is checked against are `grants`'s.
//!
//! `POST /v1/spend` takes a watcher's spend batch into this instance's writer ([`spend`]).
//!
//! A request held open while nothing changes also watches its connection: a watcher that closes
//! it (a restart, a failover, a timeout of its own) releases the request and its descriptor at
//! once, not at the end of the wait.

use std::sync::Arc;

use async_trait::async_trait;
use http::{header, Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::json;
use sha2::{Digest, Sha256};
use tracing::{debug, info};

use super::{entity_tag, FanoutHub, SNAPSHOT_PATH, SPEND_PATH};
use crate::config::WatcherGrant;
use crate::credentials::cipher::Keys;
use crate::credentials::values::ValueReader;
use crate::metrics::spend::FANOUT_REPORTS;
use crate::metrics::FANOUT_REQUESTS;
use crate::spend::writer::SpendWriter;
use grants::outside_grant;
pub use grants::{grants_by_token, SharedGrants, WatchRequest};

mod grants;
pub mod spend;

/// The fan-out listener's application.
pub struct FanoutApp {
    hub: Arc<FanoutHub>,
    grants: SharedGrants,
    keys: Option<Keys>,
    /// This instance's spend writer, which watchers' spend is added to.
    spend: Option<Arc<SpendWriter>>,
    receipts: spend::Receipts,
}

impl FanoutApp {
    /// Serves `hub` to the watchers in `grants`; `keys` resolves encrypted
    /// `litellm_credential_name` links (without them, only plain links are followed).
    pub fn new(hub: Arc<FanoutHub>, grants: SharedGrants, keys: Option<Keys>) -> FanoutApp {
        FanoutApp {
            hub,
            grants,
            keys,
            spend: None,
            receipts: spend::Receipts::default(),
        }
    }

    /// Also takes watchers' spend reports into `writer` (this instance's).
    pub fn with_spend(mut self, writer: Option<Arc<SpendWriter>>) -> FanoutApp {
        self.spend = writer;
        self
    }

    /// The answer to `POST /v1/spend`.
    async fn spend_report(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let digest = Self::token_digest(session);
        let Some(grant) = digest.and_then(|d| self.grants.load().get(&d).cloned()) else {
            FANOUT_REPORTS.with_label_values(&["unauthorized"]).inc();
            return error(
                StatusCode::UNAUTHORIZED,
                "a watcher token is required (Authorization: Bearer …) and this one is not known",
            );
        };
        let rows = self.hub.subscribe().borrow().clone();
        spend::answer(
            session,
            &grant,
            self.spend.as_deref(),
            rows.as_deref(),
            &self.receipts,
        )
        .await
    }

    /// The SHA-256 of the presented bearer token.
    fn token_digest(session: &ServerSession) -> Option<[u8; 32]> {
        let value = session.req_header().headers.get(header::AUTHORIZATION)?;
        let token = value.to_str().ok()?.strip_prefix("Bearer ")?.trim();
        Some(Sha256::digest(token.as_bytes()).into())
    }

    /// The grant in force now for `digest`, and the refusal when the request is not (or no
    /// longer: a reload may revoke it while the request waits) covered by one.
    fn authorize(
        &self,
        digest: Option<&[u8; 32]>,
        request: &WatchRequest,
    ) -> Result<WatcherGrant, Box<Response<Vec<u8>>>> {
        let Some(grant) = digest.and_then(|d| self.grants.load().get(d).cloned()) else {
            FANOUT_REQUESTS.with_label_values(&["unauthorized"]).inc();
            return Err(Box::new(error(
                StatusCode::UNAUTHORIZED,
                "a watcher token is required (Authorization: Bearer …) and this one is not known",
            )));
        };
        let refused = outside_grant(&grant, request);
        if refused.is_empty() {
            return Ok(grant);
        }
        FANOUT_REQUESTS.with_label_values(&["forbidden"]).inc();
        info!(
            "fanout: watcher {} asked for what its grant does not cover: {}",
            grant.name,
            refused.join(", ")
        );
        Err(Box::new(error(
            StatusCode::FORBIDDEN,
            &format!(
                "not granted to watcher {}: {}",
                grant.name,
                refused.join(", ")
            ),
        )))
    }

    /// The answer to a request: waits while the watcher's rows still match `if_none_match`, up
    /// to the requested wait, checking the grant again before every answer.
    #[allow(
        clippy::expect_used,
        reason = "rows of strings and JSON values always serialize"
    )]
    async fn answer(
        &self,
        digest: Option<[u8; 32]>,
        request: &WatchRequest,
        if_none_match: Option<&str>,
    ) -> Response<Vec<u8>> {
        let deadline = tokio::time::Instant::now() + request.wait;
        let mut updates = self.hub.subscribe();
        loop {
            let grant = match self.authorize(digest.as_ref(), request) {
                Ok(grant) => grant,
                Err(refusal) => return *refusal,
            };
            let rows = updates.borrow_and_update().clone();
            if let Some(rows) = rows {
                let reader = ValueReader {
                    keys: self.keys.as_ref(),
                    env: None,
                };
                let selected = rows.select(
                    &request.credentials,
                    &request.models,
                    request.keys.as_ref(),
                    &reader,
                );
                let body = serde_json::to_vec(&selected).expect("rows serialize");
                let tag = entity_tag(&body);
                if if_none_match != Some(tag.as_str()) {
                    FANOUT_REQUESTS.with_label_values(&["changed"]).inc();
                    debug!(
                        "fanout: watcher {} gets {} credential, {} model and {} key rows",
                        grant.name,
                        selected.credentials.len(),
                        selected.models.len(),
                        selected.keys.len()
                    );
                    return snapshot_response(body, &tag);
                }
            }
            let woke = tokio::time::timeout_at(deadline, updates.changed()).await;
            if !matches!(woke, Ok(Ok(()))) {
                break;
            }
        }
        if updates.borrow().is_none() {
            FANOUT_REQUESTS.with_label_values(&["unavailable"]).inc();
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "this server has not read the database yet; retry",
            );
        }
        FANOUT_REQUESTS.with_label_values(&["unchanged"]).inc();
        let mut response = Response::new(Vec::new());
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        if let Some(tag) = if_none_match {
            if let Ok(value) = tag.parse() {
                response.headers_mut().insert(header::ETAG, value);
            }
        }
        response
    }
}

#[allow(
    clippy::expect_used,
    reason = "the status and headers are constants or an entity tag of hex digits"
)]
fn snapshot_response(body: Vec<u8>, tag: &str) -> Response<Vec<u8>> {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, body.len())
        .header(header::ETAG, tag)
        .header(header::CACHE_CONTROL, "no-store")
        .body(body)
        .expect("static response parts are valid")
}

#[allow(clippy::expect_used, reason = "the status and headers are constants")]
fn error(status: StatusCode, message: &str) -> Response<Vec<u8>> {
    let body = json!({ "error": message }).to_string().into_bytes();
    let mut builder = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, body.len());
    if status == StatusCode::UNAUTHORIZED {
        builder = builder.header(header::WWW_AUTHENTICATE, "Bearer");
    }
    builder.body(body).expect("static response parts are valid")
}

#[async_trait]
impl ServeHttp for FanoutApp {
    #[allow(
        clippy::expect_used,
        reason = "the status is a constant and there are no headers"
    )]
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        if req.method == Method::POST && req.uri.path() == SPEND_PATH {
            return self.spend_report(session).await;
        }
        if req.method != Method::GET || req.uri.path() != SNAPSHOT_PATH {
            FANOUT_REQUESTS.with_label_values(&["bad_request"]).inc();
            return error(
                StatusCode::NOT_FOUND,
                "the fan-out listener answers GET /v1/snapshot and POST /v1/spend only",
            );
        }
        let request = match WatchRequest::parse(req.uri.query()) {
            Ok(request) => request,
            Err(e) => {
                FANOUT_REQUESTS.with_label_values(&["bad_request"]).inc();
                return error(StatusCode::BAD_REQUEST, &e);
            }
        };
        let if_none_match = req
            .headers
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let digest = Self::token_digest(session);
        // A watcher that goes away while its request waits is noticed at once (its FIN or
        // reset), and the request and its descriptor are released instead of held to the
        // end of the wait.
        let answer = self.answer(digest, &request, if_none_match.as_deref());
        tokio::select! {
            response = answer => response,
            () = client_gone(session) => {
                FANOUT_REQUESTS.with_label_values(&["abandoned"]).inc();
                debug!("fanout: a watcher closed its connection while its request waited");
                // Nobody reads it: no body, so nothing is left to fail (and log) after the head.
                Response::builder()
                    .status(StatusCode::BAD_REQUEST)
                    .header(header::CONTENT_LENGTH, 0)
                    .header(header::CONNECTION, "close")
                    .body(Vec::new())
                    .expect("static response parts are valid")
            }
        }
    }
}

/// Resolves when the client closes its connection (or sends anything: a watcher sends nothing
/// after its request, which has no body); pending while it stays open.
async fn client_gone(session: &mut ServerSession) {
    match session.read_body_or_idle(true).await {
        Err(_) => {}
        // Not a close (cannot happen without a body): keep waiting for the answer.
        Ok(_) => std::future::pending().await,
    }
}
