//! How a request's framing is read from the client and passed on, where Pingora's defaults
//! would leave a client waiting or a provider guessing.
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

use http::header::CONTENT_LENGTH;
use http::HeaderMap;
use pingora::http::RequestHeader;
use pingora::proxy::Session;

use super::respond::ErrorReply;

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
    let declared = declared_length(&req.headers).map_err(|reply| reply.message)?;
    if let Some(length) = declared {
        req.insert_header(CONTENT_LENGTH, length)
            .map_err(|_| "cannot set the upstream Content-Length".to_string())?;
    }
    Ok(())
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
}
