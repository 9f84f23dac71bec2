//! How a request's framing is read from the client and passed on, where Pingora's defaults
//! would leave a client waiting, a provider guessing, or a limit unapplied.
//!
//! - **Pipelined HTTP/1 requests** (a client writing request N+1 before reading answer N) are
//!   answered one after the other, in order ([`enable_pipelining`]). Pingora's default drops
//!   them: with both requests in one read it answers the first and closes; with the next request
//!   arriving while the first is in flight it fails the first (a 400 for a valid request, or a
//!   streamed answer cut off). Each pipelined request is a request like any other: every check,
//!   the credential strip and the injection run for it. Framing stays Pingora's: the bytes after a
//!   request's body are the next request exactly as on a kept-alive connection; a request answered
//!   with an error, or carrying both `Content-Length` and `Transfer-Encoding`, still closes the
//!   connection, so what follows it is never read.
//! - **`Content-Length`**: Pingora accepts a value repeated in one field (`5, 5`) or in several
//!   fields, as RFC 9110 §8.6 allows, but forwards the fields verbatim, which upstreams read
//!   differently (hyper refuses `5, 5` with a 400). [`declared_length`] reconciles them to one
//!   value (the body limit is checked against it); [`single_content_length`] sends that one value.
//! - **HTTP/2 header lists** are bounded by the h2 library before a request exists for the
//!   sidecar: past the bound it answers a bare 431 itself. [`http2_options`] sets the bound from
//!   `limits.*` ([`http2_header_list_cap`]) above the sidecar's own limits, so every head within
//!   them is served and heads up to about twice the byte limit reach `request_checks` and get
//!   the JSON 431. It is fixed when the listener starts (a reload says it changed).

use http::header::CONTENT_LENGTH;
use http::HeaderMap;
use pingora::http::RequestHeader;
use pingora::protocols::http::v2::server::{default_h2_options, H2Options};
use pingora::proxy::Session;

use super::respond::ErrorReply;
use crate::config::Limits;

/// What HTTP/2 adds to each header field's name and value in its header-list size
/// (RFC 9113 §6.5.2).
const HTTP2_FIELD_OVERHEAD: u64 = 32;

/// Pseudo-header fields of a request (`:method`, `:scheme`, `:authority`, `:path`).
const HTTP2_PSEUDO_FIELDS: u64 = 4;

/// Lets Pingora answer pipelined HTTP/1 requests in order instead of dropping them (see the
/// module docs). Without effect on HTTP/2.
pub fn enable_pipelining(session: &mut Session) {
    session.set_pipelining_enabled(true);
}

/// The body length `headers` declare: every `Content-Length` value, in repeated fields and in
/// comma-separated lists, reconciled to one. `Ok(None)` without `Content-Length`; a 400 when the
/// values differ or one is not a number (Pingora refuses those first for HTTP/1).
pub fn declared_length(headers: &HeaderMap) -> Result<Option<u64>, ErrorReply> {
    let mut declared = None;
    for field in headers.get_all(CONTENT_LENGTH) {
        let values = field.to_str().map_err(|_| invalid_length())?;
        for value in values.split(',') {
            let value = value.trim();
            if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid_length());
            }
            let length = value.parse::<u64>().map_err(|_| invalid_length())?;
            match declared {
                Some(seen) if seen != length => return Err(invalid_length()),
                _ => declared = Some(length),
            }
        }
    }
    Ok(declared)
}

fn invalid_length() -> ErrorReply {
    ErrorReply::new(
        400,
        "invalid_content_length",
        "Content-Length values differ or are not numbers",
    )
}

/// Replaces the upstream request's `Content-Length` fields with the one value they declare.
pub fn single_content_length(req: &mut RequestHeader) -> Result<(), String> {
    let mut fields = req.headers.get_all(CONTENT_LENGTH).iter();
    if let (Some(only), None) = (fields.next(), fields.next()) {
        if !only.is_empty() && only.as_bytes().iter().all(u8::is_ascii_digit) {
            return Ok(()); // already one plain value: the common case, nothing to rewrite
        }
    }
    let declared = declared_length(&req.headers).map_err(|reply| reply.message)?;
    if let Some(length) = declared {
        req.insert_header(CONTENT_LENGTH, length)
            .map_err(|_| "cannot set the upstream Content-Length".to_string())?;
    }
    Ok(())
}

/// Frames the upstream request for a replaced body of `len` bytes: one `Content-Length`, no
/// `Transfer-Encoding` (the client may have sent its body chunked).
pub fn replace_body_length(req: &mut RequestHeader, len: usize) -> Result<(), String> {
    req.remove_header(&http::header::TRANSFER_ENCODING);
    req.insert_header(CONTENT_LENGTH, len)
        .map_err(|_| "cannot set the upstream Content-Length".to_string())
}

/// The HTTP/2 header-list bound (`SETTINGS_MAX_HEADER_LIST_SIZE`), in HTTP/2's own count (name
/// plus value plus 32 per field, pseudo-headers included): twice `max_request_header_bytes`, plus
/// HTTP/2's per-field overhead for the most fields a request may have. Every head within the
/// limits fits (the sidecar counts 4 bytes per field, HTTP/2 32), and so does any head up to
/// about twice the byte limit, which the sidecar then refuses with its JSON 431.
pub fn http2_header_list_cap(limits: &Limits) -> u32 {
    let fields = limits.max_request_headers + HTTP2_PSEUDO_FIELDS;
    let cap = 2 * limits.max_request_header_bytes + HTTP2_FIELD_OVERHEAD * fields;
    u32::try_from(cap).unwrap_or(u32::MAX)
}

/// Pingora's HTTP/2 server options (its bounded defaults) with the header-list bound of
/// [`http2_header_list_cap`].
pub fn http2_options(limits: &Limits) -> H2Options {
    let mut options = default_h2_options();
    options.max_header_list_size(http2_header_list_cap(limits));
    options
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(lengths: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in lengths {
            map.append(CONTENT_LENGTH, value.parse().expect("value"));
        }
        map
    }

    #[test]
    fn repeated_equal_lengths_are_one_value_and_differing_ones_are_refused() {
        assert_eq!(declared_length(&headers(&[])), Ok(None));
        for same in [
            &["5"][..],
            &["5, 5"],
            &["5,5"],
            &["5", "5"],
            &["5", " 5 , 5"],
        ] {
            assert_eq!(declared_length(&headers(same)), Ok(Some(5)), "{same:?}");
        }
        for bad in [
            &["5, 6"][..],
            &["5", "6"],
            &["5,"],
            &["+5"],
            &["-1"],
            &["x"],
            &["5 5"],
        ] {
            assert_eq!(
                declared_length(&headers(bad)).map_err(|e| e.status),
                Err(400),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn the_upstream_request_carries_one_content_length() {
        let mut req = RequestHeader::build("POST", b"/x", None).expect("request");
        req.append_header("content-length", "5, 5").expect("header");
        req.append_header("content-length", "5").expect("header");
        single_content_length(&mut req).expect("reconciled");
        let values: Vec<_> = req.headers.get_all(CONTENT_LENGTH).iter().collect();
        assert_eq!(values, ["5"]);
        let mut req = RequestHeader::build("GET", b"/x", None).expect("request");
        single_content_length(&mut req).expect("nothing to do");
        assert!(req.headers.get(CONTENT_LENGTH).is_none());
    }

    #[test]
    fn the_http2_cap_admits_every_head_within_the_limits() {
        let defaults = Limits::default();
        // 2 × 32 KiB + 32 × (100 + 4): near Pingora's own 64 KiB default.
        assert_eq!(http2_header_list_cap(&defaults), 68_864);
        for (bytes, count) in [(1024, 256), (32_768, 100), (1_048_576, 256)] {
            let limits = Limits {
                max_request_header_bytes: bytes,
                max_request_headers: count,
                ..Limits::default()
            };
            // The largest HTTP/2 size of a head the sidecar accepts: its own bytes minus its
            // 4 per field, plus 32 per field and the pseudo-header names (29 bytes).
            let largest_accepted = bytes + 28 * count + 32 * HTTP2_PSEUDO_FIELDS + 29;
            assert!(u64::from(http2_header_list_cap(&limits)) >= largest_accepted);
            assert!(u64::from(http2_header_list_cap(&limits)) >= 2 * bytes);
        }
    }
}
