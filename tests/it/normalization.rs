//! Credentials in the spellings other server stacks fold together: query parameters named `key`
//! in any case, encoding, array or `;` form. None reaches the provider, whatever the provider's
//! stack would make of it.

use crate::support::gateway::{start_openai_only, CLIENT_SECRETS};
use crate::support::http::status_line;
use crate::support::mock_provider::RecordedRequest;

/// Every value below that starts with `client-` is a client credential.
fn assert_no_client_value(req: &RecordedRequest) {
    let seen = format!(
        "{} {:?} {:?} {}",
        req.path,
        req.query,
        req.headers,
        req.body_str()
    );
    assert!(
        !seen.contains("client-") && !CLIENT_SECRETS.iter().any(|s| seen.contains(s)),
        "a client credential reached the provider: {seen}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_query_parameters_in_every_spelling_are_stripped() {
    let (mock, sidecar, _dir) = start_openai_only(|_| {}).await;
    let query = [
        "KEY=client-upper",
        "Key=client-mixed",
        "key%00=client-nul",
        "key[]=client-array",
        "key%5B%5D=client-encoded-array",
        "key[0]=client-indexed",
        ";key=client-semicolon",
        "alt=json;key=client-after-semicolon",
        "%4B%45%59=client-encoded-upper",
        "k%2565y=client-double-encoded",
        "stream=true",
        "keys=kept",
        "monkey=kept",
    ]
    .join("&");
    let line = status_line(
        sidecar.listen_addr(),
        format!(
            "POST /openai/x?{query} HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\
             Connection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    assert!(line.contains(" 200 "), "{line}");
    let seen = mock.requests();
    assert_eq!(seen.len(), 1);
    assert_no_client_value(&seen[0]);
    assert_eq!(
        seen[0].query.as_deref(),
        Some("stream=true&keys=kept&monkey=kept")
    );
}
