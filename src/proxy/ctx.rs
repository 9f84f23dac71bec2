//! The state one request carries through the proxy's phases (Pingora's `CTX`): what was decided
//! at admission, the attempt in progress, and what the access record and metrics need at the end.

use std::sync::Arc;
use std::time::Instant;

use super::request_id::RequestId;
use super::respond::ErrorReply;
use super::unified::ModelRequest;
use super::usage;
use crate::config::Limits;
use crate::router::Binding;
use crate::routes::Route;
use crate::upstream::gate::Lease;

/// What serves a request once it is bound; its binding is stored here only.
pub(super) enum Bound {
    /// A credential or `model:` route: the route's binding, for every attempt.
    Route(Binding),
    /// A `dispatch: model` request: its deployment, the body sent instead of the client's, and
    /// what a retry on another deployment needs; the binding is its current attempt's.
    Model(Box<ModelRequest>),
}

impl Bound {
    /// Where the current attempt goes, with which key.
    pub(super) fn binding(&self) -> &Binding {
        match self {
            Bound::Route(binding) => binding,
            Bound::Model(request) => &request.binding,
        }
    }

    /// The `dispatch: model` request, for its attempts.
    pub(super) fn model_request_mut(&mut self) -> Option<&mut ModelRequest> {
        match self {
            Bound::Route(_) => None,
            Bound::Model(request) => Some(request),
        }
    }
}

/// Per-request state.
pub struct RequestCtx {
    pub(super) started: Instant,
    /// The request's id (see `request_id`).
    pub(super) request_id: RequestId,
    /// The provider's own id for its answer.
    pub(super) upstream_request_id: Option<http::HeaderValue>,
    pub(super) route: Option<Arc<Route>>,
    /// What serves the request, once bound.
    pub(super) bound: Option<Bound>,
    /// An error the sidecar answers with, set before failing a phase.
    pub(super) reply: Option<ErrorReply>,
    pub(super) retried: bool,
    /// The deployment answered 429 or 5xx and the router chose another for one retry.
    pub(super) retry_elsewhere: bool,
    pub(super) reused_connection: Option<bool>,
    /// When the first attempt got past the connection cap, about to connect or reuse.
    pub(super) upstream_started: Option<Instant>,
    /// From then to the upstream's response header.
    pub(super) upstream_ttfb: Option<std::time::Duration>,
    /// What the request holds at the connection gate (claim, reserved slot, connection).
    pub(super) lease: Lease,
    /// The limits in force when the request was admitted.
    pub(super) limits: Limits,
    /// This request is an HTTP/2 stream counted on its connection (see `downstream`).
    pub(super) stream_counted: bool,
    /// Request body bytes received so far.
    pub(super) body_received: u64,
    /// A `model:` route's request body with its `model` set to the deployment's (see `pinned`).
    pub(super) pinned_body: Option<bytes::Bytes>,
    /// Whether this attempt has sent the model request's body.
    pub(super) body_replaced: bool,
    /// The router settings in force when the request was admitted.
    pub(super) router: crate::config::RouterSettings,
    /// The LiteLLM virtual key the client presented (`access.litellm_keys`).
    pub(super) litellm_key: Option<Arc<crate::access::litellm_keys::VirtualKey>>,
    /// Reads the answer's token usage as it passes (see `usage`).
    pub(super) usage: Option<usage::UsageReader>,
    /// Turns Bedrock's event stream into the SSE a Messages API client reads (see
    /// `unified::messages`); boxed, as few requests need it.
    pub(super) sse: Option<Box<super::unified::messages::sse::EventStreamToSse>>,
    /// The usage the answer reported, once it has ended.
    pub(super) answer_usage: Option<usage::Usage>,
    /// The model the answer said answered, once it has ended.
    pub(super) answered_by: Option<String>,
    /// The request's trace span, when the OTLP exporter is on.
    pub(super) span: Option<crate::otel::RequestSpan>,
}

impl RequestCtx {
    /// A request's state when it arrives.
    pub fn new() -> RequestCtx {
        RequestCtx {
            started: Instant::now(),
            request_id: RequestId::default(),
            upstream_request_id: None,
            route: None,
            bound: None,
            reply: None,
            retried: false,
            retry_elsewhere: false,
            reused_connection: None,
            upstream_started: None,
            upstream_ttfb: None,
            lease: Lease::default(),
            limits: Limits::default(),
            stream_counted: false,
            body_received: 0,
            pinned_body: None,
            body_replaced: false,
            router: Default::default(),
            litellm_key: None,
            usage: None,
            sse: None,
            answer_usage: None,
            answered_by: None,
            span: None,
        }
    }
}

impl RequestCtx {
    /// Once the upstream answered with a final response the request is not retried elsewhere
    /// for: drops the body the sidecar kept for a retry (a `dispatch: model` attempt's, a
    /// `model:` route's), which a held stream would otherwise keep for as long as it lasts (a
    /// 300 KB prompt streamed for a minute). Only once Pingora was handed the body; an empty
    /// one stays in its place, so the replay of the client's body is still swallowed.
    pub(super) fn release_retry_body(&mut self) {
        if !self.body_replaced {
            return;
        }
        if let Some(request) = self.bound.as_mut().and_then(Bound::model_request_mut) {
            request.release_body();
        }
        if self.pinned_body.is_some() {
            self.pinned_body = Some(bytes::Bytes::new());
        }
    }

    /// The body sent upstream instead of the client's, when the sidecar read it: a `dispatch:
    /// model` attempt's or a `model:` route's.
    pub(super) fn replacement_body(&self) -> Option<&bytes::Bytes> {
        match self.model_request() {
            Some(request) => Some(request.body()),
            None => self.pinned_body.as_ref(),
        }
    }

    /// Where the current attempt goes, once bound.
    pub(super) fn binding(&self) -> Option<&Binding> {
        self.bound.as_ref().map(Bound::binding)
    }

    /// A `dispatch: model` request's deployment and attempts.
    pub(super) fn model_request(&self) -> Option<&ModelRequest> {
        match &self.bound {
            Some(Bound::Model(request)) => Some(request),
            _ => None,
        }
    }

    /// The LiteLLM deployment the request went to: a `dispatch: model` request's current one,
    /// else a `model:` route's.
    pub(super) fn deployment(&self) -> Option<&Arc<crate::credentials::models::Deployment>> {
        match self.model_request() {
            Some(request) => Some(&request.deployment),
            None => self.binding().and_then(|b| b.model.as_ref()),
        }
    }
}

impl Default for RequestCtx {
    fn default() -> Self {
        RequestCtx::new()
    }
}
