//! Token usage read from providers' answers, off the client's critical path: each body chunk is
//! passed on untouched and only looked at on the way (a JSON answer is kept, up to 1 MiB, and
//! parsed once at its end; a stream is split into events and only events that carry a `usage`
//! object are parsed). Read on `model:` and `dispatch: model` routes and for LiteLLM keys, where
//! the tokens feed `sidecar_tokens_total` and the key's `tpm_limit`.
//!
//! Both OpenAI's fields (`prompt_tokens`, `completion_tokens`, `prompt_tokens_details.
//! cached_tokens`, `completion_tokens_details.reasoning_tokens`, in a JSON answer or, with
//! `stream_options.include_usage`, the last chunk of a stream) and Anthropic's (`input_tokens`,
//! `output_tokens`, `cache_read_input_tokens`, `cache_creation_input_tokens`, in `message_start`
//! and `message_delta` events) are read, into LiteLLM's normalised [`Usage`] (Anthropic's cached
//! tokens are added to its `input_tokens`, as LiteLLM adds them). The sidecar does not
//! add `stream_options.include_usage` to a client's request: that would add a chunk to every
//! stream the client did not ask for; a stream without usage counts no tokens.
//!
//! On requests to a Bedrock deployment, Bedrock's native answers are read too (`bedrock`):
//! Converse's usage names in a JSON answer, InvokeModel's token-count headers, and AWS
//! event-stream answers (`crate::aws::eventstream`: frames checked by their CRCs; an answer whose frames do
//! not hold counts nothing).

mod bedrock;

use std::sync::LazyLock;

use bytes::Bytes;
use memchr::memmem;
use pingora::http::ResponseHeader;
use serde::Deserialize;
use serde_json::Value;

use super::RequestCtx;
use crate::config::Backend;
pub use crate::spend::Usage;

/// The most of a JSON answer kept to read its usage.
const MAX_JSON_BYTES: usize = 1024 * 1024;

/// What kind of body is being read.
#[derive(Debug)]
enum Body {
    /// `application/json`: kept whole (until it is too large).
    Json { kept: Vec<u8>, overflowed: bool },
    /// `text/event-stream`: the incomplete last event, and what was seen so far.
    Events { pending: Vec<u8>, seen: Report },
    /// `application/vnd.amazon.eventstream` (Bedrock's streams): the frames, and what was
    /// seen so far.
    AwsEvents {
        frames: crate::aws::eventstream::Frames,
        seen: Report,
    },
}

/// What an answer reported: the tokens it used, and the model it said answered.
#[derive(Debug, Default, PartialEq)]
pub struct Report {
    /// Its usage, when it reported one.
    pub usage: Option<Usage>,
    /// Its top-level `model` (Anthropic's: `message.model`), read where its usage is.
    pub model: Option<String>,
}

impl Report {
    /// Adds what a later event of the same stream reported.
    fn add(&mut self, later: Report) {
        self.usage = match (self.usage, later.usage) {
            (Some(total), Some(seen)) => Some(merged(total, seen)),
            (total, seen) => total.or(seen),
        };
        if self.model.is_none() {
            self.model = later.model;
        }
    }
}

/// Reads one answer's usage as its body passes.
#[derive(Debug)]
pub struct UsageReader {
    body: Body,
    /// Whether the answer is Bedrock's (its native shapes are read too).
    bedrock: bool,
    /// The token counts of a Bedrock answer's headers (InvokeModel's), for a body without any.
    in_headers: Option<Usage>,
}

impl UsageReader {
    /// A reader for a successful JSON or event-stream answer (and, from Bedrock, an AWS
    /// event-stream one); `None` for anything else.
    pub fn for_response(header: &ResponseHeader, bedrock: bool) -> Option<UsageReader> {
        if !header.status.is_success() {
            return None;
        }
        let kind = header
            .headers
            .get(http::header::CONTENT_TYPE)?
            .to_str()
            .ok()?;
        let body = if kind.starts_with("application/json") {
            Body::Json {
                kept: Vec::new(),
                overflowed: false,
            }
        } else if kind.starts_with("text/event-stream") {
            Body::Events {
                pending: Vec::new(),
                seen: Report::default(),
            }
        } else if bedrock && kind.starts_with(AWS_EVENT_STREAM) {
            Body::AwsEvents {
                frames: crate::aws::eventstream::Frames::default(),
                seen: Report::default(),
            }
        } else {
            return None;
        };
        let in_headers = bedrock.then(|| bedrock::header_usage(header)).flatten();
        Some(UsageReader {
            body,
            bedrock,
            in_headers,
        })
    }

    /// Looks at one chunk of the body (which goes on to the client unchanged).
    pub fn feed(&mut self, chunk: &[u8]) {
        match &mut self.body {
            Body::Json { kept, overflowed } => {
                if kept.len() + chunk.len() > MAX_JSON_BYTES {
                    *overflowed = true;
                    kept.clear();
                } else if !*overflowed {
                    kept.extend_from_slice(chunk);
                }
            }
            Body::Events { pending, seen } => {
                // Every whole event is read where it lies; only the incomplete last one is kept
                // (one move per chunk, no copy per event).
                pending.extend_from_slice(chunk);
                let mut read = 0;
                while let Some(end) = event_end(&pending[read..]) {
                    seen.add(event_report(&pending[read..read + end]));
                    read += end;
                }
                pending.drain(..read);
                if pending.len() > MAX_JSON_BYTES {
                    pending.clear();
                }
            }
            Body::AwsEvents { frames, seen } => {
                frames.feed(chunk, |frame| seen.add(bedrock::frame_report(&frame)));
            }
        }
    }

    /// What the answer reported.
    pub fn finish(self) -> Report {
        let mut report = match self.body {
            Body::Json { kept, overflowed } if !overflowed => {
                let report =
                    serde_json::from_slice(&kept).map_or_else(|_| Report::default(), report_of);
                if self.bedrock && report.usage.is_none() {
                    let mut report = bedrock::usage_report(&kept);
                    report.usage = report.usage.or(self.in_headers);
                    report
                } else {
                    report
                }
            }
            Body::Json { .. } => Report::default(),
            Body::Events { pending, mut seen } => {
                seen.add(event_report(&pending));
                seen
            }
            Body::AwsEvents { frames, .. } if frames.broken() || frames.unfinished() => {
                Report::default()
            }
            Body::AwsEvents { seen, .. } => seen,
        };
        if self.bedrock {
            // The model a Bedrock answer names (Anthropic's short name) is not one LiteLLM
            // prices Bedrock by: the deployment's model id prices it.
            report.model = None;
        }
        report
    }
}

/// AWS event-stream's content type.
const AWS_EVENT_STREAM: &str = "application/vnd.amazon.eventstream";

/// `upstream_response_filter`: starts reading the answer's usage when the request has a model
/// alias or a LiteLLM key to count it for.
pub fn on_response_header(ctx: &mut RequestCtx, header: &ResponseHeader) {
    if model_label(ctx) != "-" || ctx.litellm_key.is_some() {
        ctx.usage = UsageReader::for_response(header, to_bedrock(ctx));
    }
}

/// Whether the request went to a Bedrock deployment.
fn to_bedrock(ctx: &RequestCtx) -> bool {
    ctx.deployment()
        .is_some_and(|d| d.provider == crate::aws::bedrock::PROVIDER)
}

/// `response_body_filter`: looks at each chunk; at the end records the tokens (metrics, and the
/// key's `tpm_limit` count).
pub fn on_body(ctx: &mut RequestCtx, body: Option<&Bytes>, end_of_stream: bool) {
    let Some(reader) = ctx.usage.as_mut() else {
        return;
    };
    if let Some(chunk) = body {
        reader.feed(chunk);
    }
    if !end_of_stream {
        return;
    }
    let Some(report) = ctx.usage.take().map(UsageReader::finish) else {
        return;
    };
    ctx.answered_by = report.model;
    let Some(usage) = report.usage else {
        return;
    };
    ctx.answer_usage = Some(usage);
    let key = ctx.litellm_key.as_ref().map_or("-", |k| k.label.as_str());
    crate::metrics::record_tokens(model_label(ctx), key, usage.prompt, usage.completion);
    if let Some(key) = &ctx.litellm_key {
        key.add_tokens(usage.prompt + usage.completion);
    }
}

/// The alias a request's tokens count for: the body's on `dispatch: model` routes, the route's
/// on `model:` routes, else `-`.
fn model_label(ctx: &RequestCtx) -> &str {
    if let Some(request) = ctx.model_request() {
        return &request.alias;
    }
    match ctx.route.as_ref().map(|r| &r.backend) {
        Some(Backend::Model(alias)) => alias,
        _ => "-",
    }
}

/// What one event (`data: {...}` lines) reported, parsed only when it names a usage object.
fn event_report(event: &[u8]) -> Report {
    if !names_usage(event) {
        return Report::default();
    }
    let Ok(text) = std::str::from_utf8(event) else {
        return Report::default();
    };
    let data: String = text
        .lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .map(str::trim_start)
        .collect::<Vec<_>>()
        .join("\n");
    serde_json::from_str(&data).map_or_else(|_| Report::default(), report_of)
}

/// What an answer or event reported. OpenAI puts usage and model at the top; Anthropic's
/// `message_start` inside `message`.
fn report_of(carrier: UsageCarrier) -> Report {
    let UsageCarrier {
        usage,
        message,
        model,
    } = carrier;
    let named = |model: Option<&Value>| model.and_then(Value::as_str).map(str::to_string);
    let inner = |field: &str| message.as_ref().and_then(|m| m.get(field));
    let usage = usage.filter(Value::is_object);
    Report {
        usage: usage.as_ref().or_else(|| inner("usage")).and_then(usage_of),
        model: named(model.as_ref()).or_else(|| named(inner("model"))),
    }
}

/// The top-level members of an answer or event that can carry usage and the model. Every other
/// member (the answer's text, its choices) is read past without being built, where parsing the
/// whole answer into a `Value` built all of it.
#[derive(Deserialize)]
struct UsageCarrier {
    #[serde(default)]
    usage: Option<Value>,
    #[serde(default)]
    message: Option<Value>,
    #[serde(default)]
    model: Option<Value>,
}

/// Two reports of one stream's usage, each a running total (Anthropic's `message_start` and
/// `message_delta`, OpenAI's last chunk): the larger of each count.
fn merged(a: Usage, b: Usage) -> Usage {
    Usage {
        prompt: a.prompt.max(b.prompt),
        completion: a.completion.max(b.completion),
        cache_read: a.cache_read.max(b.cache_read),
        cache_creation: a.cache_creation.max(b.cache_creation),
        reasoning: a.reasoning.max(b.reasoning),
    }
}

/// A usage object's token counts, in OpenAI's or Anthropic's names, normalised as LiteLLM
/// normalises them (see the module docs).
fn usage_of(usage: &Value) -> Option<Usage> {
    let count = |path: &[&str]| {
        path.iter()
            .try_fold(usage, |v, name| v.get(*name))
            .and_then(Value::as_u64)
    };
    if let Some(input) = count(&["input_tokens"]) {
        let cache_read = count(&["cache_read_input_tokens"]).unwrap_or(0);
        let cache_creation = count(&["cache_creation_input_tokens"]).unwrap_or(0);
        return Some(Usage {
            prompt: input + cache_read + cache_creation,
            completion: count(&["output_tokens"]).unwrap_or(0),
            cache_read,
            cache_creation,
            reasoning: 0,
        });
    }
    let prompt = count(&["prompt_tokens"]);
    let completion = count(&["completion_tokens"]).or_else(|| count(&["output_tokens"]));
    (prompt.is_some() || completion.is_some()).then(|| Usage {
        prompt: prompt.unwrap_or(0),
        completion: completion.unwrap_or(0),
        cache_read: count(&["prompt_tokens_details", "cached_tokens"]).unwrap_or(0),
        cache_creation: 0,
        reasoning: count(&["completion_tokens_details", "reasoning_tokens"]).unwrap_or(0),
    })
}

/// The length of the first event in `bytes`, up to and with the blank line that ends it.
fn event_end(bytes: &[u8]) -> Option<usize> {
    memchr::memchr_iter(b'\n', bytes)
        .find(|&at| bytes.get(at + 1) == Some(&b'\n'))
        .map(|at| at + 2)
}

/// Whether an event mentions `"usage"` (one searcher, made once).
fn names_usage(event: &[u8]) -> bool {
    static USAGE: LazyLock<memmem::Finder<'static>> =
        LazyLock::new(|| memmem::Finder::new(b"\"usage\""));
    USAGE.find(event).is_some()
}

#[cfg(test)]
mod tests;
