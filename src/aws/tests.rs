use pingora::http::RequestHeader;

use super::*;

use crate::secret::fields as values;

#[test]
fn keys_and_region_make_a_credential_and_leave_the_other_fields() {
    let mut row = values(&[
        ("aws_access_key_id", "AKIDEXAMPLE"),
        ("aws_secret_access_key", "wJalrXUtnFEMI"),
        ("aws_region_name", "us-west-2"),
        ("api_base", "https://bedrock.internal"),
    ]);
    let aws = from_fields("d", &mut row)
        .expect("valid")
        .expect("AWS keys");
    assert_eq!(aws.region.as_deref(), Some("us-west-2"));
    assert_eq!(aws.report()["keys"], "access_keys");
    assert!(row.contains_key("api_base") && !row.contains_key("aws_secret_access_key"));
    assert!(!format!("{aws:?}").contains("wJalr"));
    assert!(from_fields("d", &mut values(&[("api_key", "k")]))
        .expect("valid")
        .is_none());
}

#[test]
fn incomplete_or_unserved_rows_are_refused_naming_the_field() {
    let cases: [(&[(&str, &str)], &str); 6] = [
        (
            &[("aws_access_key_id", "AKID")],
            "without aws_secret_access_key",
        ),
        (
            &[("aws_secret_access_key", "s3cret")],
            "without aws_access_key_id",
        ),
        (
            &[("aws_role_name", "arn:aws:iam::1:role/r")],
            "aws_role_name needs",
        ),
        (&[("aws_profile_name", "dev")], "aws_profile_name"),
        (
            &[("aws_web_identity_token", "eyJ")],
            "aws_web_identity_token",
        ),
        (
            &[
                ("aws_access_key_id", "AKID"),
                ("aws_secret_access_key", "s3cret"),
                ("aws_region_name", "us-east-1.evil"),
            ],
            "aws_region_name",
        ),
    ];
    for (fields, want) in cases {
        let err = from_fields("d", &mut values(fields)).expect_err("refused");
        assert!(err.contains(want), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
    }
}

#[test]
fn signing_replaces_the_clients_signature_and_marks_secrets_sensitive() {
    let mut row = values(&[
        ("aws_access_key_id", "AKIDEXAMPLE"),
        ("aws_secret_access_key", "wJalrXUtnFEMI"),
        ("aws_session_token", "tok-123"),
        ("aws_region_name", "us-east-1"),
    ]);
    let aws = from_fields("d", &mut row).expect("valid").expect("keys");
    let target = b"/model/m%3A0/converse?X-Amz-Signature=abc&keep=1&x%2Damz%2Dsecurity%2Dtoken=t&x-amz%C3%A9=1";
    let mut req = RequestHeader::build("POST", target, None).expect("request");
    for (name, value) in [
        ("host", "bedrock-runtime.us-east-1.amazonaws.com"),
        ("x-amz-date", "20000101T000000Z"),
        ("x-amz-content-sha256", "UNSIGNED-PAYLOAD"),
        ("x-amz-security-token", "client-token"),
    ] {
        req.insert_header(name, value).expect("header");
    }
    aws.sign("d", &mut req, b"{}", BEDROCK_SERVICE)
        .expect("signed");
    let header = |name: &str| req.headers.get(name).cloned();
    let authorization = header("authorization").expect("authorization");
    assert!(authorization.is_sensitive());
    let text = authorization.to_str().expect("ascii");
    assert!(
        text.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/"),
        "{text}"
    );
    assert!(text.contains("/us-east-1/bedrock/aws4_request"), "{text}");
    let token = header("x-amz-security-token").expect("token");
    assert_eq!(token.as_bytes(), b"tok-123");
    assert!(token.is_sensitive());
    assert!(header("x-amz-content-sha256").is_none());
    assert_eq!(
        req.uri.query(),
        Some("keep=1&x-amz%C3%A9=1"),
        "the client's presigned parameters are gone"
    );
    assert_ne!(
        header("x-amz-date").expect("date").as_bytes(),
        b"20000101T000000Z"
    );
}
