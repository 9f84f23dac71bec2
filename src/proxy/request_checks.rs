//! Checks on a request before anything is sent upstream.
//!
//! - Size limits (`limits.*`): the head (request line and headers) when the request arrives, the
//!   body as declared by `Content-Length` and again as it streams (a chunked body declares
//!   nothing). Pingora's own parser stops at 1 MiB of head and 256 headers; these limits sit
//!   below that and answer with the sidecar's JSON errors (431, 413).
//! - Paths with dot segments or encoded slashes, dots or backslashes, refused with 400: no LLM
//!   API needs them, and upstreams normalize them differently from the route match
//!   (`/openai/../other` would otherwise leave the route's base path with its key). A dot
//!   segment with `;parameters` (`..;`, `.;x`, `..%3B`) counts as one: servlet containers drop
//!   the parameters before resolving the dots.
//!
//! Framing needs little here: Pingora refuses differing `Content-Length` values, obs-fold and
//! bare CR, drops `Content-Length` when `Transfer-Encoding` is present (RFC 9112 §6.3) and frames
//! the upstream request itself (tests/it/hostile_input.rs pins each); a repeated value is reconciled
//! to one in [`super::framing`], and the body limit applies to that value.

use pingora::http::RequestHeader;

use super::framing::declared_length;
use super::respond::ErrorReply;
use crate::config::Limits;

/// Checks the request head: sizes, declared body length and path shape.
pub fn check_head(req: &RequestHeader, limits: &Limits) -> Result<(), ErrorReply> {
    check_sizes(req, limits)?;
    check_path(req.uri.path())
}

/// Refuses dot segments (with or without `;parameters`) and encoded `/`, `\` or `.` in the path.
fn check_path(path: &str) -> Result<(), ErrorReply> {
    // Every refused shape has a `.`, a `%` or a `\`: most paths have none, and need no copy.
    if !path.bytes().any(|b| matches!(b, b'.' | b'%' | b'\\')) {
        return Ok(());
    }
    let lowered = path.to_ascii_lowercase();
    let dot_segment = lowered.split('/').any(is_dot_segment);
    let encoded = ["%2f", "%5c", "%2e"].iter().any(|e| lowered.contains(e));
    if dot_segment || encoded || path.contains('\\') {
        return Err(ErrorReply::new(
            400,
            "path_not_canonical",
            "paths with dot segments (also with ;parameters) or encoded slashes, backslashes or \
             dots are refused",
        ));
    }
    Ok(())
}

/// `.` or `..`, once path parameters (from `;` or its encoding `%3b`, lowercase here) are cut
/// off, as Tomcat and Jetty cut them before resolving dot segments.
fn is_dot_segment(segment: &str) -> bool {
    let end = [segment.find(';'), segment.find("%3b")]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(segment.len());
    matches!(&segment[..end], "." | "..")
}

/// The length of `uri` as written (`scheme://authority/path?query`), without writing it.
fn uri_len(uri: &http::Uri) -> usize {
    uri.scheme_str().map_or(0, |s| s.len() + "://".len())
        + uri.authority().map_or(0, |a| a.as_str().len())
        + uri.path().len()
        + uri.query().map_or(0, |q| q.len() + 1)
}

fn check_sizes(req: &RequestHeader, limits: &Limits) -> Result<(), ErrorReply> {
    let count = req.headers.len() as u64;
    if count > limits.max_request_headers {
        return Err(ErrorReply::new(
            431,
            "request_headers_too_large",
            format!(
                "{count} request headers; at most {} are accepted (limits.max_request_headers)",
                limits.max_request_headers
            ),
        ));
    }
    let line = req.method.as_str().len() + uri_len(&req.uri);
    let fields: usize = req
        .headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    let bytes = (line + fields) as u64;
    if bytes > limits.max_request_header_bytes {
        return Err(ErrorReply::new(
            431,
            "request_headers_too_large",
            format!(
                "request line and headers take {bytes} bytes; at most {} are accepted \
                 (limits.max_request_header_bytes)",
                limits.max_request_header_bytes
            ),
        ));
    }
    match declared_length(&req.headers)? {
        Some(length) if length > limits.max_request_body_bytes => Err(body_too_large(limits)),
        _ => Ok(()),
    }
}

/// Adds `chunk` bytes to `received`; the 413 once the total passes the limit.
pub fn count_body(received: &mut u64, chunk: usize, limits: &Limits) -> Result<(), ErrorReply> {
    *received += chunk as u64;
    if *received > limits.max_request_body_bytes {
        Err(body_too_large(limits))
    } else {
        Ok(())
    }
}

fn body_too_large(limits: &Limits) -> ErrorReply {
    ErrorReply::new(
        413,
        "request_body_too_large",
        format!(
            "the request body is larger than {} bytes (limits.max_request_body_bytes)",
            limits.max_request_body_bytes
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_request_header_bytes: 200,
            max_request_headers: 3,
            max_request_body_bytes: 10,
            ..Limits::default()
        }
    }

    fn request(headers: &[(&str, &str)]) -> RequestHeader {
        let mut req = RequestHeader::build("POST", b"/p/x", None).expect("request");
        for (name, value) in headers {
            req.append_header(name.to_string(), *value).expect("header");
        }
        req
    }

    #[test]
    fn heads_within_the_limits_pass() {
        assert_eq!(
            check_head(&request(&[("a", "1"), ("content-length", "10")]), &limits()),
            Ok(())
        );
    }

    #[test]
    fn too_many_or_too_large_headers_get_431() {
        let many = request(&[("a", "1"), ("b", "2"), ("c", "3"), ("d", "4")]);
        assert_eq!(check_head(&many, &limits()).map_err(|e| e.status), Err(431));
        let big = "x".repeat(200);
        let large = request(&[("a", big.as_str())]);
        assert_eq!(
            check_head(&large, &limits()).map_err(|e| e.status),
            Err(431)
        );
    }

    #[test]
    fn non_canonical_paths_get_400() {
        for path in [
            "/p/../x",
            "/p/./x",
            "/p/%2e%2E/x",
            "/p%2Fx",
            "/p/a%5cb",
            "/p\\x",
            "/..",
            "/p/..;/x",
            "/p/..;jsessionid=1/x",
            "/p/.;/x",
            "/p/..%3B/x",
            "/p/..;",
        ] {
            let req = RequestHeader::build("GET", path.as_bytes(), None).expect("request");
            assert_eq!(
                check_head(&req, &limits()).map_err(|e| e.code),
                Err("path_not_canonical"),
                "{path}"
            );
        }
        for path in [
            "/p/x",
            "/p/models/gemini-1.5:generateContent",
            "/p/a..b/.well",
            "/p/%20",
            "/p/a;b/x",
            "/p/...;/x",
        ] {
            let req = RequestHeader::build("GET", path.as_bytes(), None).expect("request");
            assert_eq!(check_head(&req, &limits()), Ok(()), "{path}");
        }
    }

    #[test]
    fn declared_and_streamed_bodies_over_the_limit_get_413() {
        for lengths in [&["11"][..], &["11, 11"], &["11", "11"]] {
            let pairs: Vec<_> = lengths.iter().map(|v| ("content-length", *v)).collect();
            assert_eq!(
                check_head(&request(&pairs), &limits()).map_err(|e| e.status),
                Err(413),
                "{lengths:?}"
            );
        }
        let mut received = 0;
        assert!(count_body(&mut received, 6, &limits()).is_ok());
        assert_eq!(
            count_body(&mut received, 5, &limits()).map_err(|e| e.status),
            Err(413)
        );
    }

    #[test]
    fn a_uri_is_measured_as_it_is_written() {
        for uri in [
            "/",
            "/v1/chat/completions",
            "/p?key=1&b",
            "http://api.example.com:8080/v1?x=y",
            "https://[::1]/a",
            "api.example.com:443",
        ] {
            let parsed: http::Uri = uri.parse().expect("uri");
            assert_eq!(uri_len(&parsed), parsed.to_string().len(), "{uri}");
        }
    }
}
