//! Request ids. Every request gets one: the client's `x-request-id` when it sent a sane one
//! (1 to 128 of `A-Z a-z 0-9 - _ . :`), else a new UUID. It goes upstream as `x-request-id`,
//! back to the client as `x-sidecar-request-id` (and as `x-request-id` when the provider's answer
//! has none of its own: OpenAI's SDK reads that header as OpenAI's id, so the provider's is not
//! replaced), and into the access record beside the provider's own id (`x-request-id` from
//! OpenAI, `request-id` from Anthropic, `apim-request-id` from Azure). W3C `traceparent` and
//! `tracestate` pass through untouched, as every header that is not a credential does.

use pingora::http::{RequestHeader, ResponseHeader};

/// The request id header, both ways.
pub const REQUEST_ID: &str = "x-request-id";
/// The header the sidecar's id always comes back in.
pub const SIDECAR_REQUEST_ID: &str = "x-sidecar-request-id";
/// Where providers put their own request id, in the order looked at.
const PROVIDER_ID_HEADERS: [&str; 3] = ["x-request-id", "request-id", "apim-request-id"];
/// The longest id kept from a client or a provider.
const MAX_LEN: usize = 128;

/// The request's id: the client's when sane, else a new one.
pub fn for_request(req: &RequestHeader) -> String {
    req.headers
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| sane(v))
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_string)
}

/// The provider's own id for the answer, when it gave a sane one.
pub fn from_provider(resp: &ResponseHeader) -> Option<String> {
    PROVIDER_ID_HEADERS.iter().find_map(|name| {
        resp.headers
            .get(*name)
            .and_then(|v| v.to_str().ok())
            .filter(|v| sane(v))
            .map(str::to_string)
    })
}

/// Marks the answer with the sidecar's id (see the module docs).
pub fn mark_response(resp: &mut ResponseHeader, id: &str) -> pingora::Result<()> {
    if !resp.headers.contains_key(REQUEST_ID) {
        resp.insert_header(REQUEST_ID, id)?;
    }
    resp.insert_header(SIDECAR_REQUEST_ID, id)
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
        assert_eq!(
            for_request(&request(Some("req-123_a.b:c"))),
            "req-123_a.b:c"
        );
        for odd in [
            None,
            Some("has space"),
            Some(&*"x".repeat(129)),
            Some("a\"b"),
        ] {
            let id = for_request(&request(odd));
            assert_eq!(id.len(), 36, "{odd:?} → {id}");
            assert!(uuid::Uuid::parse_str(&id).is_ok());
        }
        assert_ne!(for_request(&request(None)), for_request(&request(None)));
    }

    #[test]
    fn the_providers_id_is_kept_and_ours_always_added() {
        let mut anthropic = ResponseHeader::build(200, None).expect("head");
        anthropic
            .insert_header("request-id", "req_anthropic")
            .expect("h");
        assert_eq!(from_provider(&anthropic).as_deref(), Some("req_anthropic"));
        mark_response(&mut anthropic, "ours").expect("mark");
        assert_eq!(anthropic.headers[REQUEST_ID], "ours");
        let mut openai = ResponseHeader::build(200, None).expect("head");
        openai
            .insert_header("x-request-id", "req_openai")
            .expect("h");
        mark_response(&mut openai, "ours").expect("mark");
        assert_eq!(
            openai.headers[REQUEST_ID], "req_openai",
            "OpenAI's id is left for its SDK"
        );
        assert_eq!(openai.headers[SIDECAR_REQUEST_ID], "ours");
    }
}
