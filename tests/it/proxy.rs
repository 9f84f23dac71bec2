//! End-to-end proxy tests: the real `sidecar` binary between a real HTTP client and the
//! in-process TLS mock provider.

use std::time::{Duration, Instant};

use crate::support::gateway::{start_gateway_with_env, CLIENT_SECRETS, KEYS};
use crate::support::mock_provider::MockProvider;
use crate::support::sidecar_process::SidecarProcess;
use futures_util::StreamExt;

struct Setup {
    mock: MockProvider,
    sidecar: SidecarProcess,
    client: reqwest::Client,
    _ca_dir: tempfile::TempDir,
}

/// The test gateway, the sidecar started with `extra_env` too.
async fn setup(extra_env: &[(&str, &str)]) -> Setup {
    let (mock, sidecar, ca_dir) = start_gateway_with_env(|_| {}, extra_env).await;
    Setup {
        mock,
        sidecar,
        client: reqwest::Client::new(),
        _ca_dir: ca_dir,
    }
}

/// Writes `request` verbatim to the sidecar and reads until it closes the connection.
async fn raw_exchange(s: &Setup, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(s.sidecar.listen_addr())
        .await
        .expect("connect");
    stream.write_all(request).await.expect("write");
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .await
        .expect("read until close");
    String::from_utf8_lossy(&response).into_owned()
}

fn with_client_credentials(req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    req.header("Authorization", format!("Bearer {}", CLIENT_SECRETS[0]))
        .header("x-api-key", CLIENT_SECRETS[1])
        .header("api-key", CLIENT_SECRETS[2])
        .header("x-goog-api-key", CLIENT_SECRETS[3])
        .header("X-Custom-Key", CLIENT_SECRETS[4])
        .header("Proxy-Authorization", PROXY_AUTHORIZATION)
        .header("Content-Type", "application/json")
}

/// A client's proxy credential: meant for a proxy, never for the provider.
const PROXY_AUTHORIZATION: &str = "Basic cHJveHktdXNlcjpwcm94eS1wYXNz";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injects_each_provider_credential_and_strips_the_clients() {
    let _turn = crate::support::lock::shared().await;
    // The most verbose log level, to show that no key reaches the logs even there.
    let s = setup(&[("RUST_LOG", "trace")]).await;
    let expected = [
        ("openai", "authorization", format!("Bearer {}", KEYS[0].1)),
        ("anthropic", "x-api-key", KEYS[1].1.to_string()),
        ("azure", "api-key", KEYS[2].1.to_string()),
        ("gemini", "x-goog-api-key", KEYS[3].1.to_string()),
        ("custom", "x-custom-key", format!("Token {}", KEYS[4].1)),
    ];
    for (route, _, _) in &expected {
        let url = format!(
            "{}/{route}/chat/completions?key={}&stream=true",
            s.sidecar.base_url(),
            CLIENT_SECRETS[3]
        );
        let resp = with_client_credentials(s.client.post(url))
            .body(r#"{"model":"m"}"#)
            .send()
            .await
            .expect("request through sidecar");
        assert_eq!(
            resp.status(),
            200,
            "{route}: {}",
            resp.text().await.unwrap_or_default()
        );
    }
    let seen = s.mock.requests();
    assert_eq!(seen.len(), expected.len());
    let host = format!("localhost:{}", s.mock.addr().port());
    for ((route, header, value), req) in expected.iter().zip(&seen) {
        assert_eq!(
            req.header_all(header),
            [value.as_str()],
            "{route}: injected header"
        );
        assert_eq!(
            req.path, "/v1/chat/completions",
            "{route}: prefix stripped, base path added"
        );
        assert_eq!(
            req.header("host"),
            Some(host.as_str()),
            "{route}: Host is the upstream's"
        );
        assert_eq!(req.body_str(), r#"{"model":"m"}"#);
        let query = req.query.clone().unwrap_or_default();
        assert!(
            query.contains("stream=true") && !query.contains("key="),
            "{route}: query {query}"
        );
        assert!(
            req.header("proxy-authorization").is_none(),
            "{route}: Proxy-Authorization forwarded"
        );
        let everything = format!("{:?} {query}", req.headers);
        assert!(!everything.contains(PROXY_AUTHORIZATION));
        for secret in CLIENT_SECRETS {
            assert!(
                !everything.contains(secret),
                "{route}: client credential {secret} forwarded"
            );
        }
    }
    assert_eq!(seen[1].header("anthropic-version"), Some("2023-06-01"));
    assert!(seen[2]
        .query
        .as_deref()
        .unwrap_or("")
        .contains("api-version=2024-10-21"));

    assert!(
        s.sidecar.wait_for_output("route=openai").await,
        "access log missing"
    );
    let logs = s.sidecar.output();
    assert!(
        !logs.contains("Sending header to upstream"),
        "Pingora's debug lines (raw headers) are dropped:\n{logs}"
    );
    for (_, key, _) in KEYS {
        assert!(
            !logs.contains(key),
            "key {key} appeared in the sidecar's output"
        );
    }
    for secret in CLIENT_SECRETS {
        assert!(
            !logs.contains(secret),
            "client credential {secret} appeared in the output"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_credentials_and_unknown_paths_fail_closed_with_json() {
    let _turn = crate::support::lock::shared().await;
    let s = setup(&[]).await;
    let cases = [
        (
            "/missing/chat/completions",
            503,
            "credential_unavailable",
            "absent-cred",
        ),
        (
            "/broken/chat/completions",
            503,
            "credential_unavailable",
            "broken-cred",
        ),
        (
            "/nowhere/v1/models",
            404,
            "route_not_found",
            "/nowhere/v1/models",
        ),
    ];
    for (path, status, code, named) in cases {
        let resp =
            with_client_credentials(s.client.post(format!("{}{path}", s.sidecar.base_url())))
                .body("{}")
                .send()
                .await
                .expect("request");
        assert_eq!(resp.status(), status, "{path}");
        let body: serde_json::Value = resp.json().await.expect("JSON error body");
        assert_eq!(body["error"]["code"], code, "{path}");
        let message = body["error"]["message"].as_str().expect("message");
        assert!(message.contains(named), "{path}: {message}");
        for (_, key, _) in KEYS {
            assert!(!message.contains(key));
        }
    }
    assert!(
        s.mock.requests().is_empty(),
        "nothing may reach the provider"
    );
    assert_eq!(s.mock.tcp_connections(), 0, "not even a connection");
    assert!(
        s.sidecar.wait_for_output("route=missing method=POST").await
            && s.sidecar.wait_for_output("status=503").await,
        "refusals are logged with their route:\n{}",
        s.sidecar.output()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_is_refused_with_a_pointer_to_base_urls() {
    let _turn = crate::support::lock::shared().await;
    let s = setup(&[]).await;
    let response = raw_exchange(
        &s,
        b"CONNECT api.openai.com:443 HTTP/1.1\r\nHost: api.openai.com:443\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 405"), "{response}");
    assert!(
        response.contains("\"code\":\"connect_not_supported\""),
        "{response}"
    );
    assert!(response.contains("base URL"), "{response}");
    assert_eq!(s.mock.tcp_connections(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_form_and_foreign_host_cannot_steer_the_key() {
    let _turn = crate::support::lock::shared().await;
    let s = setup(&[]).await;
    let response = raw_exchange(
        &s,
        b"GET http://evil.example/openai/models HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let seen = s.mock.requests();
    assert_eq!(seen.len(), 1, "the key went only to the route's upstream");
    assert_eq!(seen[0].path, "/v1/models");
    assert_eq!(
        seen[0].header("host"),
        Some(format!("localhost:{}", s.mock.addr().port()).as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_sequential_requests_share_one_upstream_handshake() {
    let _turn = crate::support::lock::shared().await;
    let s = setup(&[]).await;
    for i in 0..50 {
        let resp = s
            .client
            .post(format!("{}/openai/chat/completions", s.sidecar.base_url()))
            .body(format!("{{\"n\":{i}}}"))
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 200);
        resp.bytes().await.expect("body");
    }
    assert_eq!(s.mock.requests().len(), 50);
    assert_eq!(
        s.mock.tls_handshakes(),
        1,
        "one TLS handshake for 50 requests"
    );
    assert_eq!(
        s.mock.tcp_connections(),
        1,
        "one TCP connection for 50 requests"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_events_arrive_one_by_one() {
    let _turn = crate::support::lock::alone().await;
    let s = setup(&[]).await;
    let events = 5;
    let delay_ms = 200;
    let resp = s
        .client
        .post(format!("{}/openai/chat/completions", s.sidecar.base_url()))
        .header("x-mock-sse-events", events.to_string())
        .header("x-mock-sse-delay-ms", delay_ms.to_string())
        .body(r#"{"stream":true}"#)
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut arrivals = Vec::new();
    let mut text = String::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.expect("chunk");
        let chunk = String::from_utf8_lossy(&chunk).into_owned();
        for _ in 0..chunk.matches("data:").count() {
            arrivals.push(Instant::now());
        }
        text += &chunk;
    }
    assert_eq!(
        arrivals.len(),
        events + 1,
        "every event and [DONE]:\n{text}"
    );
    assert!(text.ends_with("data: [DONE]\n\n"));
    // Each event arrives on its own, about `delay_ms` after the previous one: had the proxy
    // buffered the stream, they would all arrive at once.
    for pair in arrivals.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= Duration::from_millis(delay_ms * 6 / 10),
            "events arrived together: gap {gap:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_on_a_connection_the_provider_just_closed_is_retried_once() {
    let _turn = crate::support::lock::shared().await;
    let s = setup(&[]).await;
    let url = format!("{}/openai/chat/completions", s.sidecar.base_url());
    let first = s.client.post(&url).body("{}").send().await.expect("first");
    assert_eq!(first.status(), 200);
    first.bytes().await.expect("body");

    s.mock.set_drop_reused_requests(true);
    let second = s
        .client
        .post(&url)
        .body(r#"{"n":2}"#)
        .send()
        .await
        .expect("second");
    assert_eq!(
        second.status(),
        200,
        "{}",
        second.text().await.unwrap_or_default()
    );
    assert_eq!(
        s.mock.dropped_requests(),
        1,
        "the pooled connection was tried first"
    );
    assert_eq!(s.mock.tcp_connections(), 2, "then one new connection");
    let seen = s.mock.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(
        seen[1].body_str(),
        r#"{"n":2}"#,
        "the retried POST carried its body"
    );
}
