//! Vectors from AWS's SigV4 test suite (`get-vanilla`, `post-vanilla`,
//! `get-vanilla-query-order-key-case`, with its example credentials), and Bedrock-shaped requests
//! whose expected signatures botocore's `SigV4Auth` computed (`canonical_request`,
//! `string_to_sign`, `signature` with the same timestamp).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::*;

/// 2015-08-30T12:36:00Z, the suite's signing time.
fn suite_time() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_440_938_160)
}

fn suite_keys(token: Option<&str>) -> Keys {
    Keys::new(
        "AKIDEXAMPLE".into(),
        Secret::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into()),
        token.map(|t| Secret::new(t.into())),
    )
}

fn signature(signed: &Signed) -> &str {
    let header = signed.authorization.expose();
    header.rsplit("Signature=").next().expect("a signature")
}

fn request<'a>(
    method: &'a str,
    path: &'a str,
    query: Option<&'a str>,
    body: &'a [u8],
) -> Request<'a> {
    Request {
        method,
        path,
        query,
        host: "example.amazonaws.com",
        body,
    }
}

#[test]
fn the_suites_vanilla_requests_sign_as_aws_publishes() {
    let keys = suite_keys(None);
    let cases = [
        (
            "GET",
            None,
            "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        ),
        (
            "POST",
            None,
            "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b",
        ),
        (
            "GET",
            Some("Param2=value2&Param1=value1"),
            "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
        ),
    ];
    for (method, query, want) in cases {
        let signed = keys.sign(
            &request(method, "/", query, b""),
            "us-east-1",
            "service",
            suite_time(),
        );
        assert_eq!(signature(&signed), want, "{method} {query:?}");
        assert_eq!(signed.amz_date, "20150830T123600Z");
    }
    let signed = keys.sign(
        &request("GET", "/", None, b""),
        "us-east-1",
        "service",
        suite_time(),
    );
    assert_eq!(
        signed.authorization.expose(),
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
         SignedHeaders=host;x-amz-date, \
         Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
    );
}

#[test]
fn a_bedrock_request_with_a_session_token_signs_as_botocore_does() {
    let keys = suite_keys(Some("SESSIONTOKEN"));
    let path = "/model/anthropic.claude-v2%3A1/converse";
    let signed = keys.sign(
        &request("POST", path, None, br#"{"a":1}"#),
        "us-west-2",
        "bedrock",
        suite_time(),
    );
    assert_eq!(
        signature(&signed),
        "2d29daa8e3e2ef4c665cabc88af43da63110cf650ab1db813787b528eac33e93"
    );
    assert!(signed
        .authorization
        .expose()
        .contains("SignedHeaders=host;x-amz-date;x-amz-security-token,"));
    assert_eq!(
        signed.security_token.as_ref().map(Secret::expose),
        Some("SESSIONTOKEN")
    );
    // Another body, another signature: the body's hash is signed.
    let other = keys.sign(
        &request("POST", path, None, br#"{"a":2}"#),
        "us-west-2",
        "bedrock",
        suite_time(),
    );
    assert_ne!(signature(&other), signature(&signed));
}

#[test]
fn the_canonical_query_sorts_and_encodes_as_aws_does() {
    let keys = suite_keys(None);
    let signed = keys.sign(
        &request("GET", "/", Some("a=b%20c&a=a&x=~y_z"), b""),
        "us-east-1",
        "service",
        suite_time(),
    );
    assert_eq!(
        signature(&signed),
        "aef3624994047329a5a8fcf23e5697d43116f5fe14c2a9addc68779ccc0acc76"
    );
    assert_eq!(canonical_query("b=2&a=&c"), "a=&b=2&c=");
    assert_eq!(canonical_query("k=a b*"), "k=a%20b%2A");
}

#[test]
fn the_canonical_path_is_normalized_then_encoded_once_more() {
    assert_eq!(canonical_path(""), "/");
    assert_eq!(
        canonical_path("/model/a%3A0/converse"),
        "/model/a%253A0/converse"
    );
    assert_eq!(canonical_path("/a//b/./c/../d/"), "/a/b/d/");
    assert_eq!(canonical_path("/x y~"), "/x%20y~");
}

#[test]
fn the_derived_key_is_kept_for_its_day_and_made_again_for_another() {
    let keys = suite_keys(None);
    let day = keys.signing_key("20150830", "us-east-1", "iam");
    assert_eq!(
        hex::encode(&day[..]),
        "c4afb1cc5771d871763a393e44b703571b55cc28424d1a5e86da6ed3c154a4b9",
        "the key AWS's documentation derives for this day, region and service"
    );
    let again = keys.signing_key("20150830", "us-east-1", "iam");
    assert_eq!(day[..], again[..]);
    let next = keys.signing_key("20150831", "us-east-1", "iam");
    assert_ne!(day[..], next[..]);
    assert!(!format!("{keys:?}").contains("EXAMPLEKEY"));
}

proptest::proptest! {
    /// Any path and query, however odd: signing never panics, and the canonical forms hold only
    /// what SigV4 allows (unreserved characters, `/` in the path, `=` and `&` in the query, and
    /// `%XX` escapes).
    #[test]
    fn any_path_and_query_sign_into_canonical_forms(path in "\\PC{0,40}", query in "\\PC{0,40}") {
        let allowed = |c: char, extra: &str| c.is_ascii_alphanumeric() || "-._~%".contains(c) || extra.contains(c);
        let canonical = canonical_path(&path);
        proptest::prop_assert!(canonical.starts_with('/'));
        proptest::prop_assert!(canonical.chars().all(|c| allowed(c, "/")), "{}", canonical);
        let canonical = canonical_query(&query);
        proptest::prop_assert!(canonical.chars().all(|c| allowed(c, "=&")), "{}", canonical);
        let keys = suite_keys(Some("t"));
        let signed = keys.sign(&request("GET", &path, Some(&query), b""), "us-east-1", "bedrock", suite_time());
        proptest::prop_assert_eq!(signature(&signed).len(), 64);
    }
}
