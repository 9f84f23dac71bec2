//! `dispatch: model` routes: one OpenAI-compatible base URL for every model alias, as the
//! LiteLLM proxy serves it. The request's JSON body names the alias in `model`; the sidecar
//! reads the body (bounded by `limits.max_request_body_bytes`), picks a deployment of that alias,
//! rewrites `model` to the deployment's own model name and sends the body to the deployment's
//! provider with the deployment's key. `GET {prefix}/models` lists the aliases.
//!
//! The body is read into one buffer and checked once ([`body`]: a hand-written syntax pass that
//! keeps only where the top-level `model` sits), and its `model` value is replaced in that
//! buffer, moving only the shorter side of it: everything else reaches the provider byte for
//! byte, and the body is not copied again (a retry on another deployment copies it once).
//!
//! Pingora 0.9 chooses the upstream (`upstream_peer`) before it forwards the body, and forwards
//! a body read earlier only through its retry buffer (`HttpSession::get_retry_buffer`, 64 KiB,
//! `None` once more was written to it). So the body is read with that buffer switched on only
//! for its last 64 KiB (`Content-Length` says when); Pingora then replays that tail through
//! `request_body_filter`, which sends the whole rewritten body in its place. A body of unknown
//! length (chunked) over 64 KiB cannot be replayed and is refused with 413.
//!
//! A deployment that answers 429 or 5xx, or cannot be connected to, counts toward its cooldown
//! (see [`crate::router`]), and the request moves to another deployment once, before anything
//! reaches the client ([`attempts`]).

pub mod attempts;
pub mod body;
pub mod messages;

use std::sync::Arc;

use bytes::Bytes;
use pingora::proxy::Session;

use super::request_id::RequestId;
use super::respond::ErrorReply;
use super::RequestCtx;
use crate::access::litellm_keys::VirtualKey;
use crate::config::RouterSettings;
use crate::credentials::{Lookup, Snapshot};
use crate::router::Router;
use crate::routes::Route;
use body::{find_model, ClientBody};

pub use attempts::ModelRequest;

/// The endpoints under a `dispatch: model` route whose JSON body carries `model`: OpenAI's,
/// and Anthropic's Messages API ([`messages`]).
pub const MODEL_ENDPOINTS: [&str; 8] = [
    messages::MESSAGES_ENDPOINT,
    "/chat/completions",
    "/completions",
    "/embeddings",
    "/responses",
    "/moderations",
    "/images/generations",
    "/audio/speech",
];

/// Pingora's retry buffer (`BODY_BUF_LIMIT` in pingora-core): the most of a body read before
/// the upstream is chosen that Pingora can still forward.
const RETRY_BUFFER_BYTES: usize = 64 * 1024;

/// What a request to a `dispatch: model` route turned into.
pub enum ServedOrBound {
    /// Answered here (`GET /models`); nothing goes upstream.
    Answered,
    /// Bound to a deployment.
    Bound(Box<ModelRequest>),
}

/// `request_filter` on a `dispatch: model` route: answers `/models`, or reads the body and
/// binds the request to a deployment of its alias, from `snapshot` (the one the request was
/// admitted with), picked by the router with the settings in force.
pub async fn bind_by_body(
    session: &mut Session,
    ctx: &mut RequestCtx,
    snapshot: Arc<Snapshot>,
    router: &Router,
    settings: RouterSettings,
) -> Result<ServedOrBound, ErrorReply> {
    let Some(route) = ctx.route.clone() else {
        return Err(ErrorReply::new(
            500,
            "internal_error",
            "no route was matched",
        ));
    };
    ctx.router = settings;
    let max_body = ctx.limits.max_request_body_bytes;
    let key = ctx.litellm_key.as_deref();
    let outcome = serve_or_bind(
        session,
        &route,
        snapshot,
        router,
        key,
        max_body,
        &ctx.request_id,
    )
    .await?;
    if let (ServedOrBound::Bound(request), Some(key)) = (&outcome, &ctx.litellm_key) {
        // With `access.litellm_keys`, the alias is checked now that the body named it.
        key.check_model(&request.alias)
            .map_err(ErrorReply::litellm)?;
        key.take_request().map_err(ErrorReply::litellm)?;
    }
    Ok(outcome)
}

/// Serves or binds a request to `route` (a `dispatch: model` route) from `snapshot`, the
/// deployment picked by `router`; `key`, the LiteLLM key the request presented, limits what
/// `/models` lists.
async fn serve_or_bind(
    session: &mut Session,
    route: &Route,
    snapshot: Arc<Snapshot>,
    router: &Router,
    key: Option<&VirtualKey>,
    max_body: u64,
    request_id: &RequestId,
) -> Result<ServedOrBound, ErrorReply> {
    let path = session.req_header().uri.path();
    let rest = route.path_after_prefix(path).to_string();
    let method = session.req_header().method.clone();
    if rest == "/models" || rest.starts_with("/models/") {
        if method != http::Method::GET {
            return Err(invalid(405, "method_not_allowed", "use GET for /models"));
        }
        let (status, body) = models_reply(&snapshot, key, rest.strip_prefix("/models/"));
        write_json(session, status, body, request_id).await?;
        return Ok(ServedOrBound::Answered);
    }
    if !MODEL_ENDPOINTS.contains(&rest.as_str()) {
        return Err(invalid(
            404,
            "unknown_url",
            format!(
                "{path} is not served here: a dispatch: model route serves GET /models and POST {}",
                MODEL_ENDPOINTS.join(", ")
            ),
        ));
    }
    if method != http::Method::POST {
        return Err(invalid(
            405,
            "method_not_allowed",
            format!("use POST for {rest}"),
        ));
    }
    let body = read_body(session, max_body).await?;
    let field = find_model(body.as_bytes())?;
    // Among the alias's deployments, only those that take the request's API.
    let serves = messages::serves_for(rest == messages::MESSAGES_ENDPOINT);
    let deployment = match router.pick_serving(&snapshot, &field.alias, None, serves) {
        Lookup::Ready(d) => d.clone(),
        Lookup::Failed(reason) => {
            return Err(ErrorReply::credential_unavailable(format!(
                "model {:?} could not be loaded: {reason}",
                field.alias
            )))
        }
        Lookup::Missing => {
            return Err(invalid(
                404,
                "model_not_found",
                format!(
                    "model {:?} is not served here; GET {}/models lists the models",
                    field.alias,
                    route.path_prefix.as_deref().unwrap_or("")
                ),
            ))
        }
    };
    let alias = field.alias.clone();
    let messages = (rest == messages::MESSAGES_ENDPOINT)
        .then(|| messages::MessagesRequest::new(session.req_header()));
    ModelRequest::new((alias, deployment), body, field, rest, snapshot, messages)
        .map(|r| ServedOrBound::Bound(Box::new(r)))
}

/// A client error in OpenAI's shape.
fn invalid(status: u16, code: &'static str, message: impl Into<String>) -> ErrorReply {
    ErrorReply::invalid_request(status, code, message)
}

/// Reads the whole request body, at most `max_body` bytes, leaving its last 64 KiB in Pingora's
/// retry buffer so that Pingora forwards it (see the module docs).
pub(super) async fn read_body(
    session: &mut Session,
    max_body: u64,
) -> Result<ClientBody, ErrorReply> {
    let too_large = || {
        invalid(
            413,
            "request_body_too_large",
            format!("the request body exceeds limits.max_request_body_bytes ({max_body})"),
        )
    };
    let declared = match session
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)
    {
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    invalid(
                        400,
                        "invalid_content_length",
                        "Content-Length is not a number",
                    )
                })?,
        ),
        None => None,
    };
    if declared.is_some_and(|n| n > max_body) {
        return Err(too_large());
    }
    let mut body = ClientBody::with_capacity(declared.unwrap_or(0) as usize);
    loop {
        let tail = declared.is_none_or(|n| n - body.len() as u64 <= RETRY_BUFFER_BYTES as u64);
        if tail {
            session.as_mut().enable_retry_buffering();
        }
        let chunk = session.read_request_body().await.map_err(|_| {
            invalid(
                400,
                "request_body_unreadable",
                "the request body could not be read",
            )
        })?;
        let Some(chunk) = chunk else { break };
        if body.len() as u64 + chunk.len() as u64 > max_body {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    if session.as_ref().retry_buffer_truncated() {
        return Err(invalid(
            413,
            "request_body_too_large",
            "a body over 64 KiB needs a Content-Length header on a dispatch: model route",
        ));
    }
    Ok(body)
}

/// `GET /models` (every alias) or `GET /models/{id}` (one), as OpenAI and LiteLLM answer them;
/// with a LiteLLM key, only the aliases the key and its team may call, as LiteLLM lists them.
fn models_reply(snapshot: &Snapshot, key: Option<&VirtualKey>, one: Option<&str>) -> (u16, Bytes) {
    let entry = |alias: &str| serde_json::json!({ "id": alias, "object": "model", "created": 0, "owned_by": "sidecar" });
    let loaded = |alias: &&String| {
        snapshot
            .models
            .get(*alias)
            .is_some_and(|d| !d.all().is_empty())
            && key.is_none_or(|k| k.check_model(alias).is_ok())
    };
    match one {
        Some(id) if snapshot.models.keys().filter(loaded).any(|a| a == id) => {
            (200, Bytes::from(entry(id).to_string()))
        }
        Some(id) => {
            let reply = invalid(
                404,
                "model_not_found",
                format!("model {id:?} is not served here"),
            );
            (404, reply.body())
        }
        None => {
            let mut aliases: Vec<&String> = snapshot.models.keys().filter(loaded).collect();
            aliases.sort();
            let data: Vec<serde_json::Value> = aliases.into_iter().map(|a| entry(a)).collect();
            let list = serde_json::json!({ "object": "list", "data": data });
            (200, Bytes::from(list.to_string()))
        }
    }
}

/// Writes a JSON response the sidecar answers itself.
async fn write_json(
    session: &mut Session,
    status: u16,
    body: Bytes,
    request_id: &RequestId,
) -> Result<(), ErrorReply> {
    let failed = |_| ErrorReply::new(500, "response_failed", "could not write the response");
    let header = super::respond::json_header(status, body.len(), request_id).map_err(failed)?;
    session
        .write_response_header(Box::new(header), false)
        .await
        .map_err(failed)?;
    session
        .write_response_body(Some(body), true)
        .await
        .map_err(failed)
}
