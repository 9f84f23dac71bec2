//! JSON error responses the sidecar itself sends, in the shape OpenAI's API and LiteLLM's proxy
//! send and their SDKs display: `{"error": {"message", "type", "param", "code"}}`. The `type` is
//! `sidecar_error` for the sidecar's own failures (a route, a credential, the connection cap),
//! `invalid_request_error` for a request the client must fix (as OpenAI and LiteLLM say it), and
//! LiteLLM's own for its key refusals ([`ErrorReply::litellm`]).
//!
//! Messages name routes, paths and credentials, never credential values or client tokens.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;

use super::request_id::RequestId;

/// An error the sidecar answers with itself; nothing is sent upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorReply {
    /// HTTP status.
    pub status: u16,
    /// Stable machine-readable code, e.g. `route_not_found`.
    pub code: &'static str,
    /// Human-readable message (no secrets).
    pub message: String,
    /// The error's `type`: `sidecar_error`, `invalid_request_error`, or LiteLLM's for its key
    /// refusals.
    pub kind: &'static str,
    /// The request field the error is about, when there is one (`param`; `null` otherwise).
    pub param: Option<&'static str>,
    /// Seconds for a `retry-after` header (rate limits).
    pub retry_after: Option<u64>,
}

impl ErrorReply {
    /// An error reply.
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> ErrorReply {
        ErrorReply {
            status,
            code,
            message: message.into(),
            kind: "sidecar_error",
            param: None,
            retry_after: None,
        }
    }

    /// 503 `credential_unavailable`: the credential that serves the request cannot now (not
    /// loaded, not decryptable, its token not minted, its keys not able to sign); `message`
    /// names it and the cause, never a value. Nothing is sent upstream.
    pub fn credential_unavailable(message: impl Into<String>) -> ErrorReply {
        ErrorReply::new(503, "credential_unavailable", message)
    }

    /// A request the client must fix (a body that is not JSON, an unknown model): type
    /// `invalid_request_error`, as OpenAI and LiteLLM answer it.
    pub fn invalid_request(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        ErrorReply {
            kind: "invalid_request_error",
            ..ErrorReply::new(status, code, message)
        }
    }

    /// A LiteLLM virtual-key refusal, in LiteLLM's shape: its `type` (`token_not_found_in_db`,
    /// `key_model_access_denied`, `budget_exceeded`, …), its `param`, and the status as the code.
    pub fn litellm(refusal: crate::access::litellm_keys::Refusal) -> ErrorReply {
        let code = match refusal.status {
            403 => "403",
            422 => "422",
            429 => "429",
            _ => "401",
        };
        ErrorReply {
            status: refusal.status,
            code,
            message: refusal.message,
            kind: refusal.kind,
            param: refusal.param,
            retry_after: refusal.retry_after,
        }
    }

    /// The JSON body.
    pub fn body(&self) -> Bytes {
        let body = serde_json::json!({
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        });
        Bytes::from(body.to_string())
    }

    /// Writes the reply, marked with the request's id, and closes the client connection
    /// afterwards (the request body may be unread). Returns the status for logging.
    pub async fn send(
        &self,
        session: &mut Session,
        request_id: &RequestId,
    ) -> pingora::Result<u16> {
        let body = self.body();
        let mut header = json_header(self.status, body.len(), request_id)?;
        if let Some(seconds) = self.retry_after {
            header.insert_header("retry-after", seconds.to_string())?;
        }
        session.write_error_response(header, body).await?;
        Ok(self.status)
    }
}

/// The head of a JSON answer the sidecar writes itself: status, type, length and the request's
/// id (see `request_id`).
pub fn json_header(
    status: u16,
    len: usize,
    request_id: &RequestId,
) -> pingora::Result<ResponseHeader> {
    let mut header = ResponseHeader::build(status, Some(5))?;
    header.insert_header("content-type", "application/json")?;
    header.insert_header("content-length", len.to_string())?;
    request_id.mark_response(&mut header)?;
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_openai_shaped_json() {
        let reply = ErrorReply::new(404, "route_not_found", "no route for path /x \"y\"");
        let parsed: serde_json::Value = serde_json::from_slice(&reply.body()).expect("json");
        assert_eq!(parsed["error"]["code"], "route_not_found");
        assert_eq!(parsed["error"]["message"], "no route for path /x \"y\"");
        assert_eq!(parsed["error"]["type"], "sidecar_error");
        assert_eq!(parsed["error"]["param"], serde_json::Value::Null);
    }
}
