//! The attempts of one `dispatch: model` request: the deployment each goes to, the body it
//! sends, and one retry on another deployment while nothing has reached the client. What a
//! failure means (its cooldown, the deployment the retry moves to) is the router's decision
//! ([`Router::failed`]). The proxy's phases call the `on_*` functions here.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use pingora::{Error, ErrorType};

use super::body::{replace_model, respliced, ClientBody, ModelField};
use super::messages::{self, MessagesRequest};
use crate::config::RouterSettings;
use crate::credentials::models::Deployment;
use crate::credentials::Snapshot;
use crate::proxy::ctx::Bound;
use crate::proxy::respond::ErrorReply;
use crate::proxy::RequestCtx;
use crate::router::health::Failure;
use crate::router::{bind_deployment, Binding, Router};

/// A request bound to a deployment of its alias, and what a retry on another one needs.
pub struct ModelRequest {
    /// The alias the client asked for.
    pub alias: String,
    /// The deployment of the current attempt.
    pub deployment: Arc<Deployment>,
    /// Where the current attempt goes, with which key.
    pub binding: Binding,
    /// The client's body with `model` rewritten for `deployment`.
    upstream_body: Bytes,
    /// The current attempt's body when its provider takes another shape than the client's
    /// (a Messages API request to Bedrock's InvokeModel); else `upstream_body` is sent.
    translated: Option<Bytes>,
    /// What the current attempt changes in the head it sends.
    pub head: messages::Head,
    /// A Messages API request (`/messages`), as its attempts need it.
    messages: Option<MessagesRequest>,
    /// Where `model`'s value sits in `upstream_body`.
    model_at: Range<usize>,
    field: ModelField,
    /// The request path after the route's prefix.
    rest: String,
    /// The snapshot the request was admitted with (a refresh never changes it halfway).
    snapshot: Arc<Snapshot>,
    /// The deployment the next attempt moves to, once this one failed.
    next: Option<Arc<Deployment>>,
}

impl ModelRequest {
    /// The end user the body names (its top-level `user`), when it names one.
    pub fn end_user(&self) -> Option<&str> {
        self.field.end_user.as_deref()
    }

    /// The body the current attempt sends.
    pub fn body(&self) -> &Bytes {
        self.translated.as_ref().unwrap_or(&self.upstream_body)
    }

    /// A request for `alias` (`messages`: a Messages API request), bound to `deployment`.
    pub(super) fn new(
        (alias, deployment): (String, Arc<Deployment>),
        client_body: ClientBody,
        field: ModelField,
        rest: String,
        snapshot: Arc<Snapshot>,
        messages: Option<MessagesRequest>,
    ) -> Result<ModelRequest, ErrorReply> {
        let (upstream_body, model_at) = replace_model(
            client_body,
            &field,
            &deployment.model,
            &deployment.model_json,
        );
        let (binding, translated, head) = attempt_on(
            &deployment,
            &alias,
            &rest,
            messages.as_ref(),
            &upstream_body,
        )?;
        Ok(ModelRequest {
            upstream_body,
            translated,
            head,
            messages,
            model_at,
            alias,
            deployment,
            binding,
            field,
            rest,
            snapshot,
            next: None,
        })
    }

    /// Tells `router` that the current deployment failed. With `may_retry` (nothing has reached
    /// the client, no retry yet), returns whether another deployment of the alias takes the next
    /// attempt.
    pub fn failed(
        &mut self,
        router: &Router,
        failure: Failure,
        settings: &RouterSettings,
        may_retry: bool,
    ) -> bool {
        // A request moves only to a deployment that takes its API.
        let serves = messages::serves_for(self.messages.is_some());
        let next = router.failed(
            &self.snapshot,
            &self.alias,
            &self.deployment,
            failure,
            settings,
            may_retry.then_some(serves),
        );
        // Once the body is released (the request was answered) there is nothing to send again.
        let moves = next.is_some() && !self.upstream_body.is_empty();
        if moves {
            self.next = next;
        }
        moves
    }

    /// Drops the body once the request was answered: no attempt follows (see
    /// `RequestCtx::release_retry_body`).
    pub fn release_body(&mut self) {
        self.upstream_body = Bytes::new();
        self.translated = None;
        self.next = None;
    }

    /// Moves to the deployment [`failed`](Self::failed) chose, if any: the next attempt goes
    /// with its binding, and a copy of the body with its model.
    pub fn advance(&mut self) -> Result<(), ErrorReply> {
        let Some(next) = self.next.take() else {
            return Ok(());
        };
        (self.upstream_body, self.model_at) = respliced(
            &self.upstream_body,
            self.model_at.clone(),
            &self.field,
            &next.model,
            &next.model_json,
        );
        let messages = self.messages.as_ref();
        (self.binding, self.translated, self.head) = attempt_on(
            &next,
            &self.alias,
            &self.rest,
            messages,
            &self.upstream_body,
        )?;
        self.deployment = next;
        Ok(())
    }
}

/// Where an attempt on `deployment` goes (`rest`: the path after the route's prefix), the body
/// it sends instead of `body` (the client's, its model set), if another, and what it changes in
/// the head.
fn attempt_on(
    deployment: &Deployment,
    alias: &str,
    rest: &str,
    messages: Option<&MessagesRequest>,
    body: &Bytes,
) -> Result<(Binding, Option<Bytes>, messages::Head), ErrorReply> {
    if let Some(request) = messages {
        let attempt = messages::attempt(request, alias, deployment, body)?;
        return Ok((attempt.binding, attempt.body, attempt.head));
    }
    if !messages::takes_openai(deployment) {
        return Err(messages::openai_refused(alias, deployment));
    }
    let binding = bind_deployment(deployment, rest)
        .map_err(|e| ErrorReply::credential_unavailable(e.to_string()))?;
    Ok((binding, None, messages::Head::AsIs))
}

/// `request_body_filter`: the attempt's body (or a `model:` route's pinned one) replaces the
/// client's (already read, bounded), which Pingora replays from its retry buffer. Returns
/// whether the body was replaced.
pub fn on_body(ctx: &mut RequestCtx, body: &mut Option<Bytes>) -> bool {
    let Some(replacement) = ctx.replacement_body().cloned() else {
        return false;
    };
    let first = !std::mem::replace(&mut ctx.body_replaced, true);
    *body = Some(if first { replacement } else { Bytes::new() });
    true
}

/// `upstream_peer`: after a failed attempt, moves to the deployment the router chose.
pub fn on_next_attempt(ctx: &mut RequestCtx) -> pingora::Result<()> {
    let Some(request) = ctx.bound.as_mut().and_then(Bound::model_request_mut) else {
        return Ok(());
    };
    if let Err(reply) = request.advance() {
        ctx.reply = Some(reply);
        return Err(Error::new(ErrorType::InternalError));
    }
    Ok(())
}

/// `fail_to_connect`: a deployment that cannot be reached counts as failed; the request moves
/// to another once.
pub fn on_connect_failure(ctx: &mut RequestCtx, e: &mut Error, router: &Router) {
    let Some(request) = ctx.bound.as_mut().and_then(Bound::model_request_mut) else {
        return;
    };
    if !is_connect_failure(e) {
        return;
    }
    crate::metrics::record_attempt(&request.alias, &request.deployment.id, 0);
    if request.failed(router, Failure::Unavailable, &ctx.router, !ctx.retried) {
        ctx.retried = true;
        e.set_retry(true);
    }
}

/// `upstream_response_filter`: a 429 or 5xx counts as a failure, and while nothing has reached
/// the client the request moves to another deployment (the error carries the retry).
pub fn on_response(ctx: &mut RequestCtx, status: u16, router: &Router) -> pingora::Result<()> {
    let Some(request) = ctx.bound.as_mut().and_then(Bound::model_request_mut) else {
        return Ok(());
    };
    crate::metrics::record_attempt(&request.alias, &request.deployment.id, status);
    let failure = match status {
        429 => Failure::RateLimited,
        500..=599 => Failure::Unavailable,
        _ => return Ok(()),
    };
    if request.failed(router, failure, &ctx.router, !ctx.retried) {
        ctx.retry_elsewhere = true;
        return Err(Error::explain(
            ErrorType::HTTPStatus(status),
            "the deployment failed; retrying on another",
        ));
    }
    Ok(())
}

/// Whether a failure to connect is the deployment's (it counts toward its cooldown): not the
/// connection cap, which is the sidecar's own.
fn is_connect_failure(e: &pingora::Error) -> bool {
    use pingora::ErrorType::*;
    matches!(
        e.etype,
        ConnectTimedout
            | ConnectRefused
            | ConnectError
            | ConnectNoRoute
            | TLSHandshakeFailure
            | TLSHandshakeTimedout
            | InvalidCert
            | HandshakeError
    )
}
