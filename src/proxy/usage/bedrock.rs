//! Token usage in AWS Bedrock's native answers, read only for requests to a Bedrock deployment:
//! - Converse's JSON answer and ConverseStream's `metadata` event: `usage` with `inputTokens`,
//!   `outputTokens`, `cacheReadInputTokens`, `cacheWriteInputTokens` (botocore's `TokenUsage`);
//! - InvokeModel's JSON answer: the model's own body (Anthropic's `usage`, read as Anthropic's),
//!   else Bedrock's `x-amzn-bedrock-input-token-count` and `…-output-token-count` headers (what
//!   LiteLLM reads for the other models' bodies: Llama, Titan, Mistral, …);
//! - InvokeModelWithResponseStream: `chunk` events whose payload `{"bytes": base64}` holds the
//!   model's own stream event (Anthropic's `message_start` and `message_delta` usage), the last
//!   one with Bedrock's `amazon-bedrock-invocationMetrics` (`inputTokenCount`,
//!   `outputTokenCount`, and the cache counts when there are some).
//!
//! Normalised as LiteLLM's Bedrock transformation normalises them: the prompt is the input
//! tokens plus the tokens read from and written to the cache.

use base64::Engine;
use memchr::memmem;
use serde::Deserialize;
use serde_json::Value;

use super::{report_of, Report, Usage, UsageCarrier};
use crate::aws::eventstream::Frame;

/// The member Bedrock adds to the last event of an InvokeModel stream.
const INVOCATION_METRICS: &str = "amazon-bedrock-invocationMetrics";

/// Converse's names for the token counts (input, output, cache read, cache write).
const CONVERSE: [&str; 4] = [
    "inputTokens",
    "outputTokens",
    "cacheReadInputTokens",
    "cacheWriteInputTokens",
];

/// The invocation metrics' names for them.
const METRICS: [&str; 4] = [
    "inputTokenCount",
    "outputTokenCount",
    "cacheReadInputTokenCount",
    "cacheWriteInputTokenCount",
];

/// A usage object in Converse's names (`None` when it has no input or output count).
pub fn converse_usage(usage: &Value) -> Option<Usage> {
    counts(usage, CONVERSE)
}

fn counts(usage: &Value, [input, output, read, write]: [&str; 4]) -> Option<Usage> {
    let count = |name: &str| usage.get(name).and_then(Value::as_u64);
    if count(input).is_none() && count(output).is_none() {
        return None;
    }
    let cache_read = count(read).unwrap_or(0);
    let cache_creation = count(write).unwrap_or(0);
    Some(Usage {
        prompt: count(input)
            .unwrap_or(0)
            .saturating_add(cache_read)
            .saturating_add(cache_creation),
        completion: count(output).unwrap_or(0),
        cache_read,
        cache_creation,
        reasoning: 0,
    })
}

/// The token counts of an InvokeModel answer's headers, when it has them.
pub fn header_usage(header: &pingora::http::ResponseHeader) -> Option<Usage> {
    let count = |name: &str| {
        header
            .headers
            .get(name)?
            .to_str()
            .ok()?
            .trim()
            .parse::<u64>()
            .ok()
    };
    let input = count("x-amzn-bedrock-input-token-count");
    let output = count("x-amzn-bedrock-output-token-count");
    let cache_read = count("x-amzn-bedrock-cache-read-input-token-count").unwrap_or(0);
    let cache_creation = count("x-amzn-bedrock-cache-write-input-token-count").unwrap_or(0);
    (input.is_some() || output.is_some()).then(|| Usage {
        prompt: input
            .unwrap_or(0)
            .saturating_add(cache_read)
            .saturating_add(cache_creation),
        completion: output.unwrap_or(0),
        cache_read,
        cache_creation,
        reasoning: 0,
    })
}

/// What one event-stream frame of a Bedrock answer reported.
pub fn frame_report(frame: &Frame<'_>) -> Report {
    if frame.message_type.is_some_and(|t| t != "event") {
        return Report::default();
    }
    match frame.event_type {
        Some("metadata") => usage_report(frame.payload),
        Some("chunk") => chunk_report(frame.payload),
        _ => Report::default(),
    }
}

/// The `usage` (in Converse's names) of a Converse answer or of ConverseStream's `metadata`
/// event (`{"usage": {...}, "metrics": {...}}`). Converse names no model.
pub fn usage_report(payload: &[u8]) -> Report {
    #[derive(Deserialize)]
    struct WithUsage {
        #[serde(default)]
        usage: Option<Value>,
    }
    let usage = serde_json::from_slice::<WithUsage>(payload)
        .ok()
        .and_then(|m| m.usage)
        .as_ref()
        .and_then(converse_usage);
    Report { usage, model: None }
}

/// InvokeModelWithResponseStream's `chunk` event: the model's own event, base64 in `bytes`.
fn chunk_report(payload: &[u8]) -> Report {
    #[derive(Deserialize)]
    struct Chunk<'a> {
        #[serde(borrow)]
        bytes: std::borrow::Cow<'a, str>,
    }
    let Some(inner) = serde_json::from_slice::<Chunk<'_>>(payload)
        .ok()
        .and_then(|c| {
            base64::engine::general_purpose::STANDARD
                .decode(c.bytes.as_bytes())
                .ok()
        })
    else {
        return Report::default();
    };
    let mut report = if memmem::find(&inner, b"\"usage\"").is_some() {
        serde_json::from_slice::<UsageCarrier>(&inner).map_or_else(|_| Report::default(), report_of)
    } else {
        Report::default()
    };
    if memmem::find(&inner, INVOCATION_METRICS.as_bytes()).is_some() {
        let metrics = serde_json::from_slice::<Value>(&inner)
            .ok()
            .and_then(|v| counts(v.get(INVOCATION_METRICS)?, METRICS));
        report.add(Report {
            usage: metrics,
            model: None,
        });
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converse_usage_counts_the_cache_in_the_prompt_as_litellm_does() {
        let usage = serde_json::json!({ "inputTokens": 10, "outputTokens": 4, "totalTokens": 44,
                                        "cacheReadInputTokens": 20, "cacheWriteInputTokens": 10 });
        assert_eq!(
            converse_usage(&usage),
            Some(Usage {
                prompt: 40,
                completion: 4,
                cache_read: 20,
                cache_creation: 10,
                reasoning: 0
            })
        );
        assert_eq!(
            converse_usage(&serde_json::json!({ "prompt_tokens": 1 })),
            None
        );
    }

    #[test]
    fn exceptions_and_undecodable_chunks_report_nothing() {
        let frame = |event_type, message_type, payload| Frame {
            event_type: Some(event_type),
            message_type: Some(message_type),
            exception_type: None,
            payload,
        };
        let usage = br#"{"usage":{"inputTokens":1,"outputTokens":2}}"#;
        assert!(frame_report(&frame("metadata", "event", usage))
            .usage
            .is_some());
        assert_eq!(
            frame_report(&frame("metadata", "exception", usage)),
            Report::default()
        );
        assert_eq!(
            frame_report(&frame("chunk", "event", b"{\"bytes\":\"%%%\"}")),
            Report::default()
        );
        assert_eq!(
            frame_report(&frame("chunk", "event", b"not json")),
            Report::default()
        );
    }
}
