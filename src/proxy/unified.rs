//! `dispatch: model` routes: one OpenAI-compatible base URL for every model alias, as the
//! LiteLLM proxy serves it. The request's JSON body names the alias in `model`; the sidecar
//! reads the body (bounded by `limits.max_request_body_bytes`), picks a deployment of that alias,
//! rewrites `model` to the deployment's own model name and sends the body to the deployment's
//! provider with the deployment's key. `GET {prefix}/models` lists the aliases.
//!
//! The body is parsed once, at its top level only (nested values are checked for syntax and
//! skipped), and copied once, to replace the `model` value in place: everything else reaches
//! the provider byte for byte.
//!
//! Pingora 0.9 chooses the upstream (`upstream_peer`) before it forwards the body, and forwards
//! a body read earlier only through its retry buffer (`HttpSession::get_retry_buffer`, 64 KiB,
//! `None` once more was written to it). So the body is read with that buffer switched on only
//! for its last 64 KiB (`Content-Length` says when); Pingora then replays that tail through
//! `request_body_filter`, which sends the whole rewritten body in its place. A body of unknown
//! length (chunked) over 64 KiB cannot be replayed and is refused with 413.

use std::ops::Range;

use bytes::{Bytes, BytesMut};
use pingora::proxy::Session;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::respond::ErrorReply;
use crate::credentials::Snapshot;
use crate::routes::{bind_deployment, Binding, Route};

/// The endpoints under a `dispatch: model` route whose JSON body carries `model`.
pub const MODEL_ENDPOINTS: [&str; 7] = [
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
pub enum Dispatched {
    /// Answered here (`GET /models`); nothing goes upstream.
    Answered,
    /// Bound to a deployment; `body` replaces the client's body upstream.
    Bound {
        /// Where the request goes, with which key.
        binding: Binding,
        /// The body with `model` rewritten.
        body: Bytes,
        /// The alias the client asked for.
        alias: String,
    },
}

/// Serves or binds a request to `route` (a `dispatch: model` route) from `snapshot`.
pub async fn dispatch(
    session: &mut Session,
    route: &Route,
    snapshot: &Snapshot,
    max_body: u64,
) -> Result<Dispatched, ErrorReply> {
    let path = session.req_header().uri.path();
    let rest = match route.path_prefix.as_deref() {
        Some(prefix) if prefix != "/" => path.strip_prefix(prefix).unwrap_or(path),
        _ => path,
    }
    .to_string();
    let method = session.req_header().method.clone();
    if rest == "/models" || rest.starts_with("/models/") {
        if method != http::Method::GET {
            return Err(invalid(405, "method_not_allowed", "use GET for /models"));
        }
        let (status, body) = models_reply(snapshot, rest.strip_prefix("/models/"));
        write_json(session, status, body).await?;
        return Ok(Dispatched::Answered);
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
    let field = find_model(&body)?;
    let deployment = match snapshot.deployment(&field.alias) {
        crate::credentials::Lookup::Ready(d) => d.clone(),
        crate::credentials::Lookup::Failed(reason) => {
            return Err(ErrorReply::new(
                503,
                "credential_unavailable",
                format!("model {:?} could not be loaded: {reason}", field.alias),
            ))
        }
        crate::credentials::Lookup::Missing => {
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
    let binding = bind_deployment(&deployment, &rest)
        .map_err(|e| ErrorReply::new(503, "credential_unavailable", e.to_string()))?;
    let body = replace_model(&body, &field, &deployment.model);
    Ok(Dispatched::Bound {
        binding,
        body,
        alias: field.alias,
    })
}

/// A client error in OpenAI's shape.
fn invalid(status: u16, code: &'static str, message: impl Into<String>) -> ErrorReply {
    ErrorReply::new(status, code, message)
}

/// Reads the whole request body, at most `max_body` bytes, leaving its last 64 KiB in Pingora's
/// retry buffer so that Pingora forwards it (see the module docs).
async fn read_body(session: &mut Session, max_body: u64) -> Result<Bytes, ErrorReply> {
    let too_large = || {
        ErrorReply::new(
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
    let mut body = BytesMut::with_capacity(declared.unwrap_or(0) as usize);
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
        return Err(ErrorReply::new(
            413,
            "request_body_too_large",
            "a body over 64 KiB needs a Content-Length header on a dispatch: model route",
        ));
    }
    Ok(body.freeze())
}

/// The alias a body asks for, and where its value sits in the body.
#[derive(Debug)]
pub struct ModelField {
    /// The value of the top-level `model`.
    pub alias: String,
    /// The byte range of that value (with its quotes).
    range: Range<usize>,
}

/// Finds the top-level `model` of a JSON object body. Malformed JSON, a body that is not an
/// object, a missing, repeated or non-string `model` are 400s.
pub fn find_model(body: &[u8]) -> Result<ModelField, ErrorReply> {
    let bad = |message: String| invalid(400, "invalid_request_error", message);
    let text = std::str::from_utf8(body).map_err(|_| bad("the body is not UTF-8".into()))?;
    let mut de = serde_json::Deserializer::from_str(text);
    let values = de
        .deserialize_map(ModelValues)
        .and_then(|v| de.end().map(|()| v))
        .map_err(|e| bad(format!("the body is not a JSON object: {e}")))?;
    let raw = match values.as_slice() {
        [raw] => *raw,
        [] => return Err(bad("the body has no \"model\"".into())),
        _ => return Err(bad("the body names \"model\" more than once".into())),
    };
    let alias: String =
        serde_json::from_str(raw.get()).map_err(|_| bad("\"model\" is not a string".into()))?;
    let start = raw.get().as_ptr() as usize - text.as_ptr() as usize;
    Ok(ModelField {
        alias,
        range: start..start + raw.get().len(),
    })
}

/// The body with the `model` value replaced by `model`; the same bytes when it is unchanged.
pub fn replace_model(body: &Bytes, field: &ModelField, model: &str) -> Bytes {
    if field.alias == model {
        return body.clone();
    }
    let quoted = serde_json::Value::from(model).to_string();
    let mut out = BytesMut::with_capacity(body.len() + quoted.len());
    out.extend_from_slice(&body[..field.range.start]);
    out.extend_from_slice(quoted.as_bytes());
    out.extend_from_slice(&body[field.range.end..]);
    out.freeze()
}

/// Visits a JSON object's top level, keeping the raw value of every `model` key.
struct ModelValues;

impl<'de> Visitor<'de> for ModelValues {
    type Value = Vec<&'de RawValue>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = Vec::new();
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            let value: &'de RawValue = map.next_value()?;
            if key == "model" {
                found.push(value);
            }
        }
        Ok(found)
    }
}

/// `GET /models` (every alias) or `GET /models/{id}` (one), as OpenAI and LiteLLM answer them.
fn models_reply(snapshot: &Snapshot, one: Option<&str>) -> (u16, Bytes) {
    let entry = |alias: &str| serde_json::json!({ "id": alias, "object": "model", "created": 0, "owned_by": "sidecar" });
    let loaded = |alias: &&String| {
        snapshot
            .models
            .get(*alias)
            .is_some_and(|d| !d.all().is_empty())
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
async fn write_json(session: &mut Session, status: u16, body: Bytes) -> Result<(), ErrorReply> {
    let failed = |_| ErrorReply::new(500, "response_failed", "could not write the response");
    let mut header = pingora::http::ResponseHeader::build(status, Some(2)).map_err(failed)?;
    header
        .insert_header("content-type", "application/json")
        .map_err(failed)?;
    header
        .insert_header("content-length", body.len().to_string())
        .map_err(failed)?;
    session
        .write_response_header(Box::new(header), false)
        .await
        .map_err(failed)?;
    session
        .write_response_body(Some(body), true)
        .await
        .map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewritten(body: &str, model: &str) -> Result<String, ErrorReply> {
        let bytes = Bytes::from(body.to_string());
        let field = find_model(&bytes)?;
        Ok(String::from_utf8(replace_model(&bytes, &field, model).to_vec()).expect("utf8"))
    }

    #[test]
    fn only_the_top_level_model_value_changes() {
        let body = r#"{"messages":[{"role":"user","content":"model: \"x\"","model":"inner"}], "model" : "fast", "n":1.50}"#;
        assert_eq!(
            rewritten(body, "gpt-4o").expect("ok"),
            body.replace(r#""model" : "fast""#, r#""model" : "gpt-4o""#)
        );
        let escaped = r#"{"model":"f\u0061st"}"#;
        assert_eq!(find_model(escaped.as_bytes()).expect("ok").alias, "fast");
        assert_eq!(
            rewritten(escaped, "a\"b").expect("ok"),
            r#"{"model":"a\"b"}"#
        );
    }

    #[test]
    fn bodies_without_one_string_model_are_400s() {
        for body in [
            "",
            "not json",
            "[1]",
            r#"{"messages":[]}"#,
            r#"{"model":1}"#,
            r#"{"model":"a","model":"b"}"#,
            r#"{"model":"a"} trailing"#,
            r#"{"model":"a","x":[}"#,
        ] {
            let err = find_model(body.as_bytes()).expect_err(body);
            assert_eq!(err.status, 400, "{body}");
        }
    }
}
