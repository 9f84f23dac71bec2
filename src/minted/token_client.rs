//! One POST of a form to a token endpoint over TLS (or plain HTTP, for a test's `http://`
//! endpoint), or one GET of Azure's instance metadata service (plain HTTP on its link-local
//! address), every step under [`super::MINT_DEADLINE`] (applied by the caller) and the answer
//! bounded by [`MAX_ANSWER_BYTES`].
//!
//! The certificate is verified against the upstream CA bundle (`upstream.ca_file`, else the
//! system roots), set once at start-up by [`configure_token_client`]. A token endpoint named by
//! an IP literal is refused: a name is needed to verify its certificate. The connection is not
//! pooled and does not count toward `upstream.max_connections` (one short connection per mint).

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use boring::x509::X509;
use bytes::{Bytes, BytesMut};
use http::header;
use pingora::connectors::http::v1::Connector;
use pingora::http::RequestHeader;
use pingora::upstreams::peer::{HttpPeer, PeerOptions};

use crate::config::UpstreamUrl;

/// The longest lifetime an answer's `expires_in` is taken for (a longer one, or a huge number,
/// is read as a day).
pub const MAX_TOKEN_LIFETIME: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// The most of a token endpoint's answer that is read.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Why a mint failed. The text names the endpoint and the cause, never a secret; what a token
/// endpoint sent back is reduced to its status and error code.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    /// The token endpoint's URL cannot be used.
    #[error("token endpoint {url}: {reason}")]
    BadUrl {
        /// The URL as configured.
        url: String,
        /// Why.
        reason: String,
    },
    /// Resolving, connecting or the TLS handshake failed.
    #[error("token endpoint {endpoint}: cannot connect: {cause}")]
    Connect {
        /// `host:port`.
        endpoint: String,
        /// Pingora's or the resolver's error.
        cause: String,
    },
    /// Sending the request or reading the answer failed.
    #[error("token endpoint {endpoint}: {cause}")]
    Exchange {
        /// `host:port`.
        endpoint: String,
        /// What failed.
        cause: String,
    },
    /// The endpoint refused the grant.
    #[error("token endpoint {endpoint} refused the grant: HTTP {status}{code}")]
    Refused {
        /// `host:port`.
        endpoint: String,
        /// The HTTP status.
        status: u16,
        /// `: error_code` when the answer named one (OAuth2's `error`).
        code: String,
    },
    /// The answer is not a token.
    #[error("token endpoint {endpoint}: {what}")]
    Malformed {
        /// `host:port`.
        endpoint: String,
        /// What is wrong with it.
        what: String,
    },
    /// Building the grant failed (a key that cannot sign, …).
    #[error("{0}")]
    Grant(String),
}

/// The CA bundle token endpoints are verified against (`None`: the system roots).
static TOKEN_CA: OnceLock<Option<Arc<Box<[X509]>>>> = OnceLock::new();

/// Sets the CA bundle token endpoints are verified against (the upstream one). Call once, at
/// start-up; later calls keep the first bundle.
pub fn configure_token_client(ca: Option<Arc<Box<[X509]>>>) {
    let _ = TOKEN_CA.set(ca);
}

/// Asks the token endpoint `url` for a token with `form` (an OAuth2 grant, already
/// `application/x-www-form-urlencoded`): the token and its lifetime, or why not (a refusal
/// names the endpoint, the status and OAuth2's `error` code, never the answer's description).
pub(super) async fn request_token(
    url: &UpstreamUrl,
    form: Bytes,
) -> Result<super::Minted, MintError> {
    let (status, body) = post_form(url, form, &[]).await?;
    if status != 200 {
        return Err(MintError::Refused {
            endpoint: url.host_header().to_string(),
            status,
            code: oauth_error_code(&body),
        });
    }
    read_token(url, &body)
}

/// POSTs `form` (already `application/x-www-form-urlencoded`) to `url`, with `headers` besides
/// the form's own (they replace one of the same name: `Accept`); returns the status and the
/// answer's body.
pub(crate) async fn post_form(
    url: &UpstreamUrl,
    form: Bytes,
    headers: &[(header::HeaderName, header::HeaderValue)],
) -> Result<(u16, Bytes), MintError> {
    let path = if url.base_path.is_empty() {
        "/"
    } else {
        url.base_path.as_str()
    };
    let mut all = vec![
        (
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/x-www-form-urlencoded"),
        ),
        (
            header::CONTENT_LENGTH,
            header::HeaderValue::from(form.len()),
        ),
    ];
    all.extend(headers.iter().cloned());
    send_request(url, "POST", path, Some(form), &all).await
}

/// GETs `target` (a path and query) from `url`'s host, with `headers`; returns the status and
/// the answer's body.
pub(crate) async fn get(
    url: &UpstreamUrl,
    target: &str,
    headers: &[(header::HeaderName, header::HeaderValue)],
) -> Result<(u16, Bytes), MintError> {
    send_request(url, "GET", target, None, headers).await
}

/// Sends `method target` with `body` to `url`'s host, with `headers` (they replace one of the
/// same name: `Accept`); returns the status and the answer's body.
async fn send_request(
    url: &UpstreamUrl,
    method: &str,
    target: &str,
    body: Option<Bytes>,
    headers: &[(header::HeaderName, header::HeaderValue)],
) -> Result<(u16, Bytes), MintError> {
    let endpoint = url.host_header().to_string();
    let exchange = |cause: String| MintError::Exchange {
        endpoint: endpoint.clone(),
        cause,
    };
    let addr = resolve(url).await.map_err(|cause| MintError::Connect {
        endpoint: endpoint.clone(),
        cause,
    })?;
    let mut peer = HttpPeer::new(addr, url.tls, url.host.clone());
    let mut options = PeerOptions::new();
    options.verify_cert = true;
    options.verify_hostname = true;
    options.ca = TOKEN_CA.get().cloned().flatten();
    peer.options = options;
    let connector = Connector::new(None);
    let (mut session, _) =
        connector
            .get_http_session(&peer)
            .await
            .map_err(|e| MintError::Connect {
                endpoint: endpoint.clone(),
                cause: e.to_string(),
            })?;
    let mut request = RequestHeader::build(method, target.as_bytes(), None)
        .map_err(|e| exchange(format!("cannot build the request: {e}")))?;
    for (name, value) in [
        (header::HOST, url.host_header()),
        (header::ACCEPT, "application/json"),
        (header::CONNECTION, "close"),
    ] {
        request
            .insert_header(name, value)
            .map_err(|_| exchange("cannot build the request".to_string()))?;
    }
    for (name, value) in headers {
        request
            .insert_header(name.clone(), value.clone())
            .map_err(|_| exchange("cannot build the request".to_string()))?;
    }
    session
        .write_request_header(Box::new(request))
        .await
        .map_err(|e| exchange(format!("sending the request: {e}")))?;
    if let Some(body) = body {
        session
            .write_body(&body)
            .await
            .map_err(|e| exchange(format!("sending the request: {e}")))?;
    }
    session
        .finish_body()
        .await
        .map_err(|e| exchange(format!("sending the request: {e}")))?;
    session
        .read_response()
        .await
        .map_err(|e| exchange(format!("reading the answer: {e}")))?;
    let status = session
        .resp_header()
        .map(|r| r.status.as_u16())
        .ok_or_else(|| exchange("no answer".to_string()))?;
    let mut body = BytesMut::new();
    while let Some(chunk) = session
        .read_body_bytes()
        .await
        .map_err(|e| exchange(format!("reading the answer: {e}")))?
    {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(exchange(format!(
                "the answer is larger than {MAX_ANSWER_BYTES} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((status, body.freeze()))
}

/// The endpoint's first address (IPv4 first).
async fn resolve(url: &UpstreamUrl) -> Result<SocketAddr, String> {
    let mut addrs: Vec<SocketAddr> = tokio::net::lookup_host((url.host.as_str(), url.port))
        .await
        .map_err(|e| format!("cannot resolve {}: {e}", url.host))?
        .collect();
    addrs.sort_by_key(SocketAddr::is_ipv6);
    addrs
        .first()
        .copied()
        .ok_or_else(|| format!("{} resolved to no address", url.host))
}

/// Checks that `text` names a token endpoint the sidecar can verify: `https://` with a host
/// name (`http://` only on a loopback name, for tests).
pub(crate) fn token_url(text: &str) -> Result<UpstreamUrl, MintError> {
    let bad = |reason: &str| MintError::BadUrl {
        url: crate::config::redacted(text),
        reason: reason.to_string(),
    };
    let url = UpstreamUrl::parse(text).map_err(|e| bad(&e))?;
    if url.tls && url.host.parse::<std::net::IpAddr>().is_ok() {
        return Err(bad(
            "a token endpoint must be named by a host name, so that its certificate can be verified",
        ));
    }
    if !url.tls && url.host != "localhost" {
        return Err(bad("a token endpoint must use https"));
    }
    Ok(url)
}

/// Checks that `text` names Azure's instance metadata service as the sidecar may reach it:
/// plain HTTP on its link-local address (`169.254.169.254`, which only the host's own hypervisor
/// answers), or on a loopback name for a test.
pub(crate) fn metadata_service_url(text: &str) -> Result<UpstreamUrl, MintError> {
    let bad = |reason: &str| MintError::BadUrl {
        url: crate::config::redacted(text),
        reason: reason.to_string(),
    };
    let url = UpstreamUrl::parse(text).map_err(|e| bad(&e))?;
    if url.tls || !matches!(url.host.as_str(), "169.254.169.254" | "localhost") {
        return Err(bad(
            "the instance metadata service is http://169.254.169.254 (or http://localhost in a test)",
        ));
    }
    Ok(url)
}

/// OAuth2's `error` code from an error answer, shortened and without control characters.
pub(super) fn oauth_error_code(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error")?.as_str().map(str::to_string))
        .map(|code| {
            let clean: String = code
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                .take(64)
                .collect();
            format!(": {clean}")
        })
        .unwrap_or_default()
}

/// Reads `access_token` and `expires_in` (a number or a numeric string) from a token answer.
pub(super) fn read_token(endpoint: &UpstreamUrl, body: &[u8]) -> Result<super::Minted, MintError> {
    let malformed = |what: &str| MintError::Malformed {
        endpoint: endpoint.host_header().to_string(),
        what: what.to_string(),
    };
    let answer: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| malformed("the answer is not JSON"))?;
    let token = answer
        .get("access_token")
        .and_then(|t| t.as_str())
        .ok_or_else(|| malformed("the answer has no access_token"))?;
    let expires_in = match answer.get("expires_in") {
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|&s| s > 0)
    .ok_or_else(|| malformed("the answer has no positive expires_in"))?;
    Ok(super::Minted {
        token: super::Issued::Bearer(crate::secret::Secret::new(token.to_string())),
        lifetime: std::time::Duration::from_secs(expires_in).min(MAX_TOKEN_LIFETIME),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint() -> UpstreamUrl {
        token_url("https://login.example.com/t/oauth2/v2.0/token").expect("valid")
    }

    #[test]
    fn answers_are_read_bounded_and_never_quoted() {
        let ok = read_token(&endpoint(), br#"{"access_token":"t","expires_in":"3599"}"#);
        assert_eq!(ok.expect("valid").lifetime.as_secs(), 3599);
        let huge = format!(r#"{{"access_token":"t","expires_in":{}}}"#, u64::MAX);
        let capped = read_token(&endpoint(), huge.as_bytes()).expect("valid");
        assert_eq!(capped.lifetime, MAX_TOKEN_LIFETIME);
        for bad in [
            &b"not json tok-secret"[..],
            br#"{"access_token":"tok-secret"}"#,
            br#"{"access_token":"tok-secret","expires_in":0}"#,
        ] {
            let err = read_token(&endpoint(), bad)
                .err()
                .expect("refused")
                .to_string();
            assert!(!err.contains("tok-secret"), "{err}");
        }
    }

    #[test]
    fn only_the_oauth_error_code_is_kept() {
        let body = br#"{"error":"invalid_client\r\nX: y","error_description":"secret s3cr3t"}"#;
        assert_eq!(oauth_error_code(body), ": invalid_clientXy");
        assert_eq!(oauth_error_code(b"<html>"), "");
    }

    #[test]
    fn token_endpoints_need_https_and_a_host_name() {
        assert!(token_url("http://login.example.com/token").is_err());
        assert!(token_url("https://10.0.0.1/token").is_err());
        assert!(token_url("http://localhost:8080/token").is_ok());
    }

    #[test]
    fn the_metadata_service_is_plain_http_on_its_own_address() {
        assert!(metadata_service_url("http://169.254.169.254").is_ok());
        assert!(metadata_service_url("http://localhost:8080").is_ok());
        for bad in [
            "https://169.254.169.254",
            "http://169.254.169.253",
            "http://imds.example.com",
            "http://10.0.0.1",
        ] {
            assert!(metadata_service_url(bad).is_err(), "{bad}");
        }
    }
}
