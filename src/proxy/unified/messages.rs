//! Anthropic's Messages API on a `dispatch: model` route: `POST {prefix}/messages`, as the
//! Anthropic SDK and Claude Code send it with their base URL at the sidecar (LiteLLM serves it
//! at `/v1/messages`; so does a route with the prefix `/v1`). The body's `model` names the alias,
//! as on the OpenAI endpoints; where each attempt's deployment takes the request:
//!
//! - `anthropic`: `{api_base}/v1/messages` (`/v1` not repeated when `api_base` ends with it), the
//!   key as `x-api-key` (with `anthropic-version` when the client sent none); the body passes
//!   with `model` set to the deployment's.
//! - `bedrock/mantle/…` (Bedrock's Mantle endpoint, Anthropic's API on AWS):
//!   `{base}/anthropic/v1/messages`, signed (or its Bedrock API key as `Bearer`), with
//!   `anthropic-version` when the client sent none; the body passes with `model` set and the
//!   answer (JSON or SSE) passes as it is. An OpenAI endpoint on such a deployment is refused:
//!   LiteLLM translates it into the Messages API; the sidecar does not.
//! - `bedrock`, a Claude model (`claude` in its id: LiteLLM's test): InvokeModel,
//!   `/model/{id}/invoke`, or `/model/{id}/invoke-with-response-stream` when the body asks for a
//!   stream, with the body made as [`bodies`] says and signed with the deployment's keys (or its
//!   Bedrock API key). The stream's AWS event-stream framing reaches the client as Anthropic's SSE
//!   ([`sse`]); a JSON answer is already a Message and passes as it is.
//! - `vertex_ai`, a Claude model: `rawPredict`, or `streamRawPredict` when the body asks for a
//!   stream, at `{base}/v1/projects/{project}/locations/{location}/publishers/anthropic/models/
//!   {model}:…`, with the minted token; the body made as [`bodies`] says; the answer (JSON, or
//!   Anthropic's SSE) passes as it is.
//! - any other: refused with a 400 naming the deployment and its provider (LiteLLM translates
//!   the Messages API into other providers' APIs; the sidecar does not), and a retry never moves
//!   to such a deployment.

pub mod bodies;
pub mod sse;

use bytes::Bytes;
use http::header::{HeaderValue, ACCEPT, ACCEPT_ENCODING, CONTENT_TYPE};
use pingora::http::{RequestHeader, ResponseHeader};

use crate::aws::bedrock::{MANTLE_MESSAGES_PATH, PROVIDER as BEDROCK};
use crate::credentials::models::Deployment;
use crate::providers::{AuthStyle, DEFAULT_ANTHROPIC_VERSION, VERTEX_PROVIDER};
use crate::proxy::respond::ErrorReply;
use crate::proxy::RequestCtx;
use crate::router::{bind_deployment_at, compat_path, Binding, Serves};

/// The Messages API's endpoint below a `dispatch: model` route's prefix.
pub const MESSAGES_ENDPOINT: &str = "/messages";

/// LiteLLM's provider name for Anthropic's own API.
const ANTHROPIC: &str = "anthropic";

/// What ends a Vertex deployment's base: its place's OpenAI-compatible API.
const VERTEX_OPENAI_SUFFIX: &str = "/endpoints/openapi";

/// The client's beta header, which InvokeModel takes in the body instead.
const ANTHROPIC_BETA: &str = "anthropic-beta";

/// The Anthropic API version header.
const ANTHROPIC_VERSION: &str = "anthropic-version";

/// AWS event-stream framing, InvokeModelWithResponseStream's answer.
const AWS_EVENT_STREAM: &str = "application/vnd.amazon.eventstream";

/// A Messages API request, as its attempts need it.
#[derive(Debug)]
pub struct MessagesRequest {
    /// The client's `anthropic-beta` header, for Bedrock's body.
    beta_header: Option<String>,
}

impl MessagesRequest {
    /// The Messages API request whose head is `header`.
    pub fn new(header: &RequestHeader) -> MessagesRequest {
        let beta_header = header
            .headers
            .get(ANTHROPIC_BETA)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        MessagesRequest { beta_header }
    }
}

/// How a deployment takes a Messages API request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    /// Anthropic's own API.
    Anthropic,
    /// Bedrock's Mantle endpoint: Anthropic's API, signed.
    BedrockMantle,
    /// Bedrock's InvokeModel, for a Claude model.
    BedrockInvoke,
    /// Vertex AI's `rawPredict`, for a Claude model.
    VertexRawPredict,
}

impl Backend {
    fn of(deployment: &Deployment) -> Option<Backend> {
        match deployment.provider.as_str() {
            ANTHROPIC => Some(Backend::Anthropic),
            BEDROCK if deployment.bedrock_mantle => Some(Backend::BedrockMantle),
            BEDROCK if deployment.model.contains("claude") => Some(Backend::BedrockInvoke),
            VERTEX_PROVIDER if deployment.path_model().contains("claude") => {
                Some(Backend::VertexRawPredict)
            }
            _ => None,
        }
    }
}

/// What an attempt changes in the head it sends, besides the route's rewrite. Every attempt but
/// one to Anthropic's own API also drops the client's query (Claude Code sends `?beta=true`,
/// which Anthropic's API takes and Google's APIs refuse), as LiteLLM makes its own URL for them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Head {
    /// Nothing (Anthropic's own API).
    #[default]
    AsIs,
    /// No query (Vertex AI's `rawPredict`).
    NoQuery,
    /// `anthropic-version` when the client sent none (Bedrock's Mantle endpoint).
    AnthropicVersion,
    /// InvokeModel's: the Anthropic headers leave (the body has them), JSON or an event stream
    /// (`stream`) is asked for, and an event stream answered becomes SSE.
    BedrockInvoke {
        /// InvokeModelWithResponseStream.
        stream: bool,
    },
}

impl Head {
    /// Whether the answer is an event stream the client gets as SSE.
    pub fn sse_from_event_stream(self) -> bool {
        self == Head::BedrockInvoke { stream: true }
    }
}

/// Which deployments take a request of this API (`messages`: the Messages API, else OpenAI's),
/// for the router's pick.
pub fn serves_for(messages: bool) -> Serves {
    if messages {
        takes_messages
    } else {
        takes_openai
    }
}

/// Whether `deployment` takes a Messages API request.
fn takes_messages(deployment: &Deployment) -> bool {
    Backend::of(deployment).is_some()
}

/// Whether `deployment` takes an OpenAI API request: all but a Mantle deployment.
pub fn takes_openai(deployment: &Deployment) -> bool {
    !deployment.bedrock_mantle
}

/// The refusal of an OpenAI endpoint on a deployment that takes only the Messages API.
pub fn openai_refused(alias: &str, deployment: &Deployment) -> ErrorReply {
    ErrorReply::invalid_request(
        400,
        "unsupported_model_api",
        format!(
            "model {alias:?}: deployment {} is on Bedrock's Mantle endpoint, which the sidecar \
             serves only Anthropic's Messages API for (POST …/messages)",
            deployment.id
        ),
    )
}

/// What one attempt of a Messages API request sends, and how its answer is read.
pub struct MessagesAttempt {
    /// Where it goes, with which key.
    pub binding: Binding,
    /// The body Bedrock takes, made from the client's; `None`: the client's (with `model` set).
    pub body: Option<Bytes>,
    /// What it changes in the head.
    pub head: Head,
}

/// The attempt of `request` (its body `body`, `model` already set to the deployment's) on
/// `deployment` (`alias`: what the client asked for, for the refusal).
pub fn attempt(
    request: &MessagesRequest,
    alias: &str,
    deployment: &Deployment,
    body: &Bytes,
) -> Result<MessagesAttempt, ErrorReply> {
    let unbound = |e: crate::router::Unbound| ErrorReply::credential_unavailable(e.to_string());
    match Backend::of(deployment) {
        Some(Backend::Anthropic) => {
            let binding = bind_deployment_at(deployment, &AuthStyle::Anthropic, |base| {
                compat_path(base, "/v1", MESSAGES_ENDPOINT)
            })
            .map_err(unbound)?;
            Ok(MessagesAttempt {
                binding,
                body: None,
                head: Head::AsIs,
            })
        }
        Some(Backend::BedrockMantle) => {
            let binding = bind_deployment_at(deployment, &AuthStyle::OpenAi, |base| {
                if base.ends_with(MANTLE_MESSAGES_PATH) {
                    base.to_string()
                } else {
                    compat_path(base, "/anthropic/v1", MESSAGES_ENDPOINT)
                }
            })
            .map_err(unbound)?;
            Ok(MessagesAttempt {
                binding,
                body: None,
                head: Head::AnthropicVersion,
            })
        }
        Some(Backend::BedrockInvoke) => {
            let made = bodies::bedrock_invoke(body, request.beta_header.as_deref())?;
            let operation = if made.stream {
                "invoke-with-response-stream"
            } else {
                "invoke"
            };
            let model = crate::percent::encode(&deployment.model);
            let binding = bind_deployment_at(deployment, &AuthStyle::OpenAi, |base| {
                format!("{base}/model/{model}/{operation}")
            })
            .map_err(unbound)?;
            Ok(MessagesAttempt {
                binding,
                body: Some(made.body),
                head: Head::BedrockInvoke {
                    stream: made.stream,
                },
            })
        }
        Some(Backend::VertexRawPredict) => {
            let made = bodies::vertex_raw_predict(body)?;
            let method = if made.stream {
                "streamRawPredict"
            } else {
                "rawPredict"
            };
            let model = crate::percent::encode(deployment.path_model());
            // The deployment's base is its place's OpenAI-compatible API; the partner models
            // sit beside it.
            let binding = bind_deployment_at(deployment, &AuthStyle::OpenAi, |base| {
                let place = base.strip_suffix(VERTEX_OPENAI_SUFFIX).unwrap_or(base);
                format!("{place}/publishers/anthropic/models/{model}:{method}")
            })
            .map_err(unbound)?;
            Ok(MessagesAttempt {
                binding,
                body: Some(made.body),
                head: Head::NoQuery,
            })
        }
        None => Err(ErrorReply::invalid_request(
            400,
            "unsupported_model_api",
            format!(
                "model {alias:?}: deployment {} is on provider {:?}, which the sidecar does not \
                 serve the Messages API for (it serves anthropic deployments and Claude models \
                 on bedrock and vertex_ai); use the OpenAI endpoints for it",
                deployment.id, deployment.provider
            ),
        )),
    }
}

/// `upstream_request_filter`, once the head is rewritten and before it is signed: what the
/// attempt's [`Head`] says.
pub fn on_upstream_request(ctx: &RequestCtx, upstream: &mut RequestHeader) -> pingora::Result<()> {
    let Some(head) = ctx.model_request().map(|r| r.head) else {
        return Ok(());
    };
    if head != Head::AsIs && upstream.uri.query().is_some() {
        let path = upstream.uri.path().to_string();
        let uri = http::Uri::try_from(path).map_err(|_| {
            pingora::Error::explain(pingora::ErrorType::InternalError, "the path is not a URI")
        })?;
        upstream.set_uri(uri);
    }
    match head {
        Head::BedrockInvoke { stream } => bedrock_head(upstream, stream),
        Head::AnthropicVersion if upstream.headers.get(ANTHROPIC_VERSION).is_none() => {
            upstream.insert_header(ANTHROPIC_VERSION, DEFAULT_ANTHROPIC_VERSION)
        }
        _ => Ok(()),
    }
}

fn bedrock_head(upstream: &mut RequestHeader, stream: bool) -> pingora::Result<()> {
    upstream.remove_header(ANTHROPIC_VERSION);
    upstream.remove_header(ANTHROPIC_BETA);
    let json = HeaderValue::from_static("application/json");
    upstream.insert_header(CONTENT_TYPE, json.clone())?;
    let accept = if stream {
        // Read frame by frame to become SSE: the answer must come unencoded.
        upstream.remove_header(&ACCEPT_ENCODING);
        HeaderValue::from_static(AWS_EVENT_STREAM)
    } else {
        json
    };
    upstream.insert_header(ACCEPT, accept)
}

/// `upstream_response_filter`, before the usage reader looks at the head: for an attempt whose
/// answer is an event stream to turn into SSE, a successful event-stream answer is announced as
/// SSE, of a length not known in advance, and its body will be turned ([`on_body`]).
pub fn on_response_header(
    ctx: &mut RequestCtx,
    response: &mut ResponseHeader,
) -> pingora::Result<()> {
    ctx.sse = None;
    if !ctx
        .model_request()
        .is_some_and(|r| r.head.sse_from_event_stream())
    {
        return Ok(());
    }
    let event_stream = response.status.is_success()
        && response
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with(AWS_EVENT_STREAM));
    if event_stream {
        response.insert_header(CONTENT_TYPE, "text/event-stream")?;
        response.remove_header(&http::header::CONTENT_LENGTH);
        response.insert_header(http::header::TRANSFER_ENCODING, "chunked")?;
        ctx.sse = Some(Box::default());
    }
    Ok(())
}

/// `response_body_filter`, before the usage reader reads the chunk: the SSE an event-stream
/// chunk completes replaces it.
pub fn on_body(ctx: &mut RequestCtx, body: &mut Option<Bytes>, end_of_stream: bool) {
    let Some(sse) = ctx.sse.as_mut() else {
        return;
    };
    let chunk = body.as_deref().unwrap_or(&[]);
    let out = sse.translate(chunk, end_of_stream);
    *body = (!out.is_empty()).then_some(out);
}
