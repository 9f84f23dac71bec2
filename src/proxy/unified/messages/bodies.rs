//! A Messages API body as the clouds take it for Claude, the way LiteLLM (1.106.2) sends it:
//!
//! - Bedrock's InvokeModel ([`bedrock_invoke`], LiteLLM's `AmazonAnthropicClaudeMessagesConfig`):
//!   `model` and `stream` leave the body (the path names the model and the operation says whether
//!   to stream), `anthropic_version` is `bedrock-2023-05-31` unless the body names one, the
//!   `anthropic-beta` header's betas move into the body's `anthropic_beta`, and only the
//!   top-level fields Bedrock accepts stay (LiteLLM's allowlist,
//!   `BedrockInvokeAnthropicMessagesRequest`: anything else, such as `service_tier` or
//!   `mcp_servers`, would be a 400 "extraneous key").
//! - Vertex AI's `rawPredict` ([`vertex_raw_predict`], LiteLLM's
//!   `VertexAIPartnerModelsAnthropicMessagesConfig`): `model` leaves the body (the path names
//!   it), `anthropic_version` is `vertex-2023-10-16`, everything else stays (`stream` included:
//!   `streamRawPredict` answers Anthropic's SSE), betas stay in the header.
//!
//! Every value is sent as the client wrote it (raw JSON slices, not re-encoded). Unlike LiteLLM,
//! the betas are not filtered against the ones each cloud supports, and nested fields are not
//! rewritten (`cache_control.ttl` or `scope`, tool schemas): the cloud's own refusal then reaches
//! the client.

use std::borrow::Cow;

use bytes::Bytes;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::proxy::respond::ErrorReply;

/// The `anthropic_version` Bedrock's Claude models take.
pub const BEDROCK_ANTHROPIC_VERSION: &str = "bedrock-2023-05-31";

/// The `anthropic_version` Vertex AI's Claude models take.
pub const VERTEX_ANTHROPIC_VERSION: &str = "vertex-2023-10-16";

/// The top-level fields Bedrock's InvokeModel accepts for Claude (LiteLLM's allowlist).
const INVOKE_FIELDS: [&str; 16] = [
    "anthropic_version",
    "max_tokens",
    "messages",
    "anthropic_beta",
    "system",
    "stop_sequences",
    "temperature",
    "top_p",
    "top_k",
    "tools",
    "tool_choice",
    "thinking",
    "metadata",
    "output_config",
    "safeguards",
    "context_management",
];

/// A body made for a cloud.
#[derive(Debug)]
pub struct MadeBody {
    /// The body to send.
    pub body: Bytes,
    /// Whether the client asked for a stream (`"stream": true`).
    pub stream: bool,
}

/// `body` (a Messages API request, already checked to be a JSON object) made for Bedrock's
/// InvokeModel, with the betas of the client's `anthropic-beta` header (comma-separated), if any.
pub fn bedrock_invoke(body: &[u8], beta_header: Option<&str>) -> Result<MadeBody, ErrorReply> {
    let members = members(body)?;
    let mut out = Vec::with_capacity(body.len() + 64);
    out.push(b'{');
    let mut stream = false;
    let mut has_version = false;
    let mut has_betas = false;
    for (key, value) in &members {
        match key.as_ref() {
            "stream" => stream = value.get() == "true",
            "anthropic_version" => has_version = true,
            "anthropic_beta" => has_betas = true,
            _ => {}
        }
        if INVOKE_FIELDS.contains(&key.as_ref()) {
            push_member(&mut out, key, value.get().as_bytes());
        }
    }
    if !has_version {
        push_member(
            &mut out,
            "anthropic_version",
            &quoted(BEDROCK_ANTHROPIC_VERSION),
        );
    }
    let betas: Vec<&str> = beta_header
        .into_iter()
        .flat_map(|h| h.split(','))
        .map(str::trim)
        .filter(|b| !b.is_empty())
        .collect();
    if !has_betas && !betas.is_empty() {
        let list = serde_json::to_string(&betas).unwrap_or_default();
        push_member(&mut out, "anthropic_beta", list.as_bytes());
    }
    out.push(b'}');
    Ok(MadeBody {
        body: Bytes::from(out),
        stream,
    })
}

/// `body` (a Messages API request, already checked to be a JSON object) made for Vertex AI's
/// `rawPredict` / `streamRawPredict`.
pub fn vertex_raw_predict(body: &[u8]) -> Result<MadeBody, ErrorReply> {
    let members = members(body)?;
    let mut out = Vec::with_capacity(body.len() + 64);
    out.push(b'{');
    let mut stream = false;
    for (key, value) in &members {
        match key.as_ref() {
            "model" | "anthropic_version" => continue,
            "stream" => stream = value.get() == "true",
            _ => {}
        }
        push_member(&mut out, key, value.get().as_bytes());
    }
    push_member(
        &mut out,
        "anthropic_version",
        &quoted(VERTEX_ANTHROPIC_VERSION),
    );
    out.push(b'}');
    Ok(MadeBody {
        body: Bytes::from(out),
        stream,
    })
}

/// The top-level members of `body`, a JSON object, each value as written.
fn members(body: &[u8]) -> Result<Vec<(Cow<'_, str>, &RawValue)>, ErrorReply> {
    let text = std::str::from_utf8(body).map_err(|_| bad("the body is not UTF-8"))?;
    let mut de = serde_json::Deserializer::from_str(text);
    de.deserialize_map(Members)
        .map_err(|e| bad(&format!("the body is not a JSON object: {e}")))
}

/// `text` as a JSON string.
fn quoted(text: &str) -> Vec<u8> {
    serde_json::to_vec(text).unwrap_or_default()
}

/// Appends `"key":value` to an object being written.
fn push_member(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    if out.len() > 1 {
        out.push(b',');
    }
    let key = serde_json::to_string(key).unwrap_or_default();
    out.extend_from_slice(key.as_bytes());
    out.push(b':');
    out.extend_from_slice(value);
}

fn bad(message: &str) -> ErrorReply {
    ErrorReply::invalid_request(400, "invalid_request_error", message)
}

/// A JSON object's top-level members, each value as written.
struct Members;

impl<'de> Visitor<'de> for Members {
    type Value = Vec<(Cow<'de, str>, &'de RawValue)>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members = Vec::new();
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            members.push((key, map.next_value()?));
        }
        Ok(members)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn made(body: &str, betas: Option<&str>) -> (Value, bool, String) {
        let made = bedrock_invoke(body.as_bytes(), betas).expect("made");
        let text = String::from_utf8(made.body.to_vec()).expect("utf8");
        (
            serde_json::from_str(&text).expect("json"),
            made.stream,
            text,
        )
    }

    #[test]
    fn model_and_stream_leave_the_version_joins_and_values_keep_their_bytes() {
        let body = r#"{"model":"claude","max_tokens":8,"stream":true,"temperature":0.70,"messages":[{"role":"user","content":"h\u00e9"}],"service_tier":"auto"}"#;
        let (value, stream, text) = made(body, None);
        assert!(stream);
        assert_eq!(
            value,
            json!({ "max_tokens": 8, "temperature": 0.7, "anthropic_version": BEDROCK_ANTHROPIC_VERSION,
                    "messages": [{ "role": "user", "content": "hé" }] })
        );
        assert!(text.contains(r#""temperature":0.70"#), "{text}");
        assert!(text.contains(r#""content":"h\u00e9""#), "{text}");
        let (_, stream, _) = made(r#"{"model":"m","stream":false,"messages":[]}"#, None);
        assert!(!stream);
    }

    #[test]
    fn betas_come_from_the_header_unless_the_body_names_them() {
        let (value, _, _) = made(
            r#"{"messages":[]}"#,
            Some("context-1m-2025-08-07, interleaved-thinking-2025-05-14"),
        );
        assert_eq!(
            value["anthropic_beta"],
            json!(["context-1m-2025-08-07", "interleaved-thinking-2025-05-14"])
        );
        let (value, _, _) = made(
            r#"{"messages":[],"anthropic_beta":["x"],"anthropic_version":"v"}"#,
            Some("y"),
        );
        assert_eq!(value["anthropic_beta"], json!(["x"]));
        assert_eq!(value["anthropic_version"], "v");
    }

    #[test]
    fn vertex_takes_everything_but_model_with_its_own_version() {
        let body = r#"{"model":"claude","anthropic_version":"x","stream":true,"service_tier":"auto","max_tokens":8,"messages":[]}"#;
        let made = vertex_raw_predict(body.as_bytes()).expect("made");
        assert!(made.stream);
        assert_eq!(
            std::str::from_utf8(&made.body).expect("utf8"),
            r#"{"stream":true,"service_tier":"auto","max_tokens":8,"messages":[],"anthropic_version":"vertex-2023-10-16"}"#
        );
    }

    #[test]
    fn a_body_that_is_not_an_object_is_a_400() {
        for body in ["[1]", "{", "\"x\""] {
            assert_eq!(
                bedrock_invoke(body.as_bytes(), None)
                    .expect_err(body)
                    .status,
                400
            );
            assert_eq!(
                vertex_raw_predict(body.as_bytes()).expect_err(body).status,
                400
            );
        }
    }
}
