//! The JSON reply for a proxy error the sidecar did not plan for (upstream refused, timed out,
//! TLS failed, connection cap reached…), by error type and side.

use pingora::protocols::tls::SslDigest;
use pingora::{Error, ErrorSource, ErrorType};

use super::respond::ErrorReply;
use crate::router::Binding;
use crate::upstream::gate::LIMIT_REACHED;
use crate::upstream::verify;

/// Whether a connection's TLS may carry a request for `binding` (checked before anything is
/// sent, on new and pooled connections): at least the configured TLS version, and for an IP
/// upstream the certificate verdict of the handshake hook (see `upstream::verify`).
pub fn check_upstream_tls(
    binding: &Binding,
    ssl: Option<&SslDigest>,
) -> Result<(), (ErrorReply, ErrorType)> {
    let upstream = binding.upstream.host_header();
    if let Some(ssl) = ssl.filter(|ssl| !binding.target.accepts_tls_version(&ssl.version)) {
        let message = format!(
            "upstream {upstream} negotiated {}, below the configured minimum",
            ssl.version
        );
        let reply = ErrorReply::new(502, "upstream_tls_version", message);
        return Err((reply, ErrorType::HandshakeError));
    }
    if binding.target.verified_after_handshake() {
        if let Err(reason) = verify::verdict(ssl) {
            let message = format!("upstream {upstream}: certificate verification failed: {reason}");
            let reply = ErrorReply::new(502, "upstream_tls_failed", message);
            return Err((reply, ErrorType::InvalidCert));
        }
    }
    Ok(())
}

/// The JSON reply for a proxy error the sidecar did not plan for, or `None` when the client is
/// gone and nothing can be written.
pub fn reply_for(e: &Error, binding: Option<&Binding>) -> Option<ErrorReply> {
    let upstream = binding.map_or_else(
        || "upstream".to_string(),
        |b| format!("upstream {}", b.upstream.host_header()),
    );
    let (status, code, what) = match (e.esource(), e.etype()) {
        (_, ErrorType::HTTPStatus(code)) => (*code, "http_error", "request failed".to_string()),
        (
            ErrorSource::Downstream,
            ErrorType::ReadError | ErrorType::WriteError | ErrorType::ConnectionClosed,
        ) => return None,
        (ErrorSource::Downstream, _) => (
            400,
            "bad_request",
            "the request could not be read".to_string(),
        ),
        (_, ErrorType::Custom(LIMIT_REACHED)) => (
            503,
            "upstream_connection_limit",
            "upstream connection limit reached; retry later".to_string(),
        ),
        (_, ErrorType::ConnectTimedout) => (
            504,
            "upstream_connect_timeout",
            format!("{upstream}: connect timed out"),
        ),
        (_, ErrorType::ReadTimedout) => (
            504,
            "upstream_timeout",
            format!("{upstream}: no response within the read timeout"),
        ),
        (_, ErrorType::ConnectRefused) => (
            502,
            "upstream_connect_refused",
            format!("{upstream}: connection refused"),
        ),
        (
            _,
            ErrorType::TLSHandshakeFailure | ErrorType::InvalidCert | ErrorType::HandshakeError,
        ) => (
            502,
            "upstream_tls_failed",
            format!("{upstream}: TLS handshake failed (certificate not trusted?)"),
        ),
        (ErrorSource::Upstream, _) | (_, ErrorType::ConnectError | ErrorType::ConnectNoRoute) => (
            502,
            "upstream_failed",
            format!("{upstream}: {}", e.etype.as_str()),
        ),
        _ => (500, "internal_error", "internal error".to_string()),
    };
    Some(ErrorReply::new(status, code, what))
}
