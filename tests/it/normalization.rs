//! Credentials in the spellings other server stacks fold together: query parameters named `key`
//! in any case, encoding, array or `;` form, and credential headers written with underscores.
//! None reaches the provider, whatever the provider's stack would make of it.

use crate::support::gateway::{start_openai_only, CLIENT_SECRETS};
use crate::support::http::status_line;
use crate::support::mock_provider::RecordedRequest;
use crate::support::sha256_hex;
use serde_json::json;

/// The client token the underscore test presents (its SHA-256 is configured).
const TOKEN: &str = "client-token-normalization";

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
    let _turn = crate::support::lock::shared().await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn underscore_spellings_of_credential_headers_are_stripped() {
    let _turn = crate::support::lock::shared().await;
    let digest = sha256_hex(TOKEN);
    let (mock, sidecar, _dir) = start_openai_only(|config| {
        config["access"] =
            json!({ "client_tokens": { "header": "x-client-token", "sha256": [digest] } });
    })
    .await;
    let headers = [
        "x_api_key: client-x-api-key",
        "X_API_KEY: client-x-api-key-upper",
        "api_key: client-api-key",
        "x_goog_api_key: client-goog-key",
        "x-goog_api-key: client-goog-mixed",
        "X_Api-Key: client-x-api-mixed",
        "proxy_authorization: Basic client-proxy",
        "x_client_token: client-token-underscore",
        "x_request_id: kept",
    ];
    let request = format!(
        "POST /openai/x HTTP/1.1\r\nHost: a\r\nx-client-token: {TOKEN}\r\n{}\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n",
        headers.join("\r\n")
    );
    let line = status_line(sidecar.listen_addr(), request.as_bytes()).await;
    assert!(line.contains(" 200 "), "{line}");
    let seen = mock.requests();
    assert_eq!(seen.len(), 1);
    assert_no_client_value(&seen[0]);
    let names: Vec<&str> = seen[0].headers.iter().map(|(n, _)| n.as_str()).collect();
    assert!(
        !names.iter().any(|n| n.contains("api_key")
            || n.contains("api-key")
            || n.contains("client")
            || n.contains("proxy")),
        "{names:?}"
    );
    assert_eq!(seen[0].header("x_request_id"), Some("kept"));
    assert!(!format!("{:?}", seen[0].headers).contains(TOKEN));
}
