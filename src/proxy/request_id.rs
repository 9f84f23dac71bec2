//! Request ids. Every request gets one: the client's `x-request-id` when it sent exactly one
//! sane one (1 to 128 of `A-Z a-z 0-9 - _ . :`), else a new UUID. It goes upstream as
//! `x-request-id` (the client's own is already on the request and passes unchanged), back to the
//! client as `x-sidecar-request-id` (and as `x-request-id` when the provider's answer has none of
//! its own: OpenAI's SDK reads that header as OpenAI's id, so the provider's is not replaced),
//! and into the access record beside the provider's own id (`x-request-id` from OpenAI,
//! `request-id` from Anthropic, `apim-request-id` from Azure). W3C `traceparent` and
//! `tracestate` pass through untouched, as every header that is not a credential does.
//!
//! The id is a header value made once per request (the client's is the one Pingora parsed, not
//! a copy): the up to three headers it goes in share it.

use http::{HeaderName, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};

/// The request id header, both ways.
pub const REQUEST_ID: &str = "x-request-id";
/// The header the sidecar's id always comes back in.
pub const SIDECAR_REQUEST_ID: &str = "x-sidecar-request-id";
/// Where providers put their own request id, in the order looked at. Lookups by `HeaderName`
/// (made at compile time), as a `&str` name is parsed again on every lookup.
const PROVIDER_ID_HEADERS: [HeaderName; 3] = [
    REQUEST_ID_NAME,
    HeaderName::from_static("request-id"),
    HeaderName::from_static("apim-request-id"),
];
/// [`REQUEST_ID`] for lookups. Headers are inserted by their `&'static str` name: Pingora
/// copies a `HeaderName` that it has no title case for into a new buffer for its case map.
const REQUEST_ID_NAME: HeaderName = HeaderName::from_static(REQUEST_ID);
/// The longest id kept from a client or a provider.
const MAX_LEN: usize = 128;

/// A request's id.
#[derive(Debug, Clone)]
pub struct RequestId {
    header: HeaderValue,
    /// The client's own, already on the request.
    from_client: bool,
}

impl Default for RequestId {
    fn default() -> Self {
        RequestId {
            header: HeaderValue::from_static("-"),
            from_client: false,
        }
    }
}

impl RequestId {
    /// The request's id: the client's when it sent one sane id, else a new one.
    #[allow(
        clippy::expect_used,
        reason = "a hyphenated UUID is ASCII letters, digits and dashes: a valid header value"
    )]
    pub fn for_request(req: &RequestHeader) -> RequestId {
        let mut sent = req.headers.get_all(REQUEST_ID_NAME).iter();
        if let (Some(id), None) = (sent.next(), sent.next()) {
            if id.to_str().is_ok_and(sane) {
                return RequestId {
                    header: id.clone(),
                    from_client: true,
                };
            }
        }
        let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let text = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut text);
        RequestId {
            header: HeaderValue::from_str(text).expect("a UUID is a valid header value"),
            from_client: false,
        }
    }

    /// The id as text (ASCII: checked for the client's, a UUID otherwise).
    pub fn as_str(&self) -> &str {
        self.header.to_str().unwrap_or("-")
    }

    /// Puts the id on the request sent upstream, unless it is the client's and so already there.
    pub fn forward(&self, upstream: &mut RequestHeader) -> pingora::Result<()> {
        if self.from_client {
            return Ok(());
        }
        upstream.insert_header(REQUEST_ID, self.header.clone())
    }

    /// Marks the answer with the id (see the module docs).
    pub fn mark_response(&self, resp: &mut ResponseHeader) -> pingora::Result<()> {
        if !resp.headers.contains_key(REQUEST_ID_NAME) {
            resp.insert_header(REQUEST_ID, self.header.clone())?;
        }
        resp.insert_header(SIDECAR_REQUEST_ID, self.header.clone())
    }
}

/// The provider's own id for the answer, when it gave a sane one (shared with the answer's
/// header, not copied).
pub fn from_provider(resp: &ResponseHeader) -> Option<HeaderValue> {
    PROVIDER_ID_HEADERS.iter().find_map(|name| {
        resp.headers
            .get(name)
            .filter(|v| v.to_str().is_ok_and(sane))
            .cloned()
    })
}

fn sane(id: &str) -> bool {
    (1..=MAX_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(id: Option<&str>) -> RequestHeader {
        let mut req = RequestHeader::build("POST", b"/x", None).expect("head");
        if let Some(id) = id {
            req.insert_header(REQUEST_ID, id).expect("header");
        }
        req
    }

    #[test]
    fn a_sane_client_id_is_kept_and_anything_else_replaced() {
        let client = RequestId::for_request(&request(Some("req-123_a.b:c")));
        assert_eq!(client.as_str(), "req-123_a.b:c");
        for odd in [
            None,
            Some("has space"),
            Some(&*"x".repeat(129)),
            Some("a\"b"),
        ] {
            let id = RequestId::for_request(&request(odd));
            assert_eq!(id.as_str().len(), 36, "{odd:?} → {}", id.as_str());
            assert!(uuid::Uuid::parse_str(id.as_str()).is_ok());
        }
        let (a, b) = (request(None), request(None));
        assert_ne!(
            RequestId::for_request(&a).as_str(),
            RequestId::for_request(&b).as_str()
        );
    }

    #[test]
    fn the_clients_id_passes_upstream_unchanged_and_a_new_one_is_added() {
        let mut sent = request(Some("client-id"));
        RequestId::for_request(&sent)
            .forward(&mut sent)
            .expect("forward");
        let ids: Vec<_> = sent.headers.get_all(REQUEST_ID).iter().collect();
        assert_eq!(ids, ["client-id"]);
        // Two ids: neither is the request's; one new id replaces both.
        let mut two = request(Some("one"));
        two.append_header(REQUEST_ID, "two").expect("header");
        let id = RequestId::for_request(&two);
        id.forward(&mut two).expect("forward");
        let ids: Vec<_> = two.headers.get_all(REQUEST_ID).iter().collect();
        assert_eq!(ids, [id.as_str()]);
        assert_eq!(id.as_str().len(), 36);
    }

    #[test]
    fn the_providers_id_is_kept_and_ours_always_added() {
        let ours = RequestId::for_request(&request(Some("ours")));
        let mut anthropic = ResponseHeader::build(200, None).expect("head");
        anthropic
            .insert_header("request-id", "req_anthropic")
            .expect("h");
        assert_eq!(
            from_provider(&anthropic),
            Some(HeaderValue::from_static("req_anthropic"))
        );
        ours.mark_response(&mut anthropic).expect("mark");
        assert_eq!(anthropic.headers[REQUEST_ID], "ours");
        let mut openai = ResponseHeader::build(200, None).expect("head");
        openai
            .insert_header("x-request-id", "req_openai")
            .expect("h");
        ours.mark_response(&mut openai).expect("mark");
        assert_eq!(
            openai.headers[REQUEST_ID], "req_openai",
            "OpenAI's id is left for its SDK"
        );
        assert_eq!(openai.headers[SIDECAR_REQUEST_ID], "ours");
    }
}
