//! Self-tests for the integration harness in `tests/it/support/`: exercises `TestCa` and
//! `MockProvider` directly over TLS (no sidecar binary involved), plus the polling helpers.

use std::time::{Duration, Instant};

use crate::support::certs::TestCa;
use crate::support::mock_provider::MockProvider;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};

type Body = Full<Bytes>;

/// Opens one TLS connection to the mock, verifying `server_name` against the test CA.
async fn tls_connect(
    mock: &MockProvider,
    ca: &TestCa,
    alpn: &[&str],
    server_name: &str,
) -> tokio_boring::SslStream<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect(mock.addr())
        .await
        .expect("connect to mock");
    let config = ca
        .client_connector(alpn)
        .configure()
        .expect("client TLS config");
    tokio_boring::connect(config, server_name, tcp)
        .await
        .expect("TLS handshake with mock (certificate must verify)")
}

/// One HTTP/1.1 connection (keep-alive) to the mock.
async fn h1_connection(mock: &MockProvider, ca: &TestCa) -> http1::SendRequest<Body> {
    let tls = tls_connect(mock, ca, &["http/1.1"], "localhost").await;
    let (sender, conn) = http1::handshake(TokioIo::new(tls))
        .await
        .expect("HTTP/1.1 handshake");
    tokio::spawn(conn);
    sender
}

fn request(method: &str, uri: &str, headers: &[(&str, &str)], body: &str) -> Request<Body> {
    let mut builder = Request::builder()
        .method(method)
        .uri(uri)
        .header("host", "localhost");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("build request")
}

async fn body_text(response: Response<hyper::body::Incoming>) -> String {
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("read body")
        .to_bytes();
    String::from_utf8(bytes.to_vec()).expect("UTF-8 body")
}

#[tokio::test]
async fn records_method_path_query_headers_and_body() {
    let _turn = crate::support::lock::shared().await;
    let ca = TestCa::new();
    let mock = MockProvider::start(&ca).await;
    assert!(mock.base_url().starts_with("https://localhost:"));
    let mut sender = h1_connection(&mock, &ca).await;

    let req = request(
        "POST",
        "/v1/chat/completions?api-version=2024-02-01&x=1",
        &[
            ("Authorization", "Bearer sk-test"),
            ("X-Multi", "a"),
            ("x-multi", "b"),
        ],
        r#"{"model":"gpt-4o"}"#,
    );
    let response = sender.send_request(req).await.expect("send request");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let json: serde_json::Value = serde_json::from_str(&body_text(response).await).expect("JSON");
    assert_eq!(json["object"], "chat.completion");
    assert_eq!(json["path"], "/v1/chat/completions");
    assert_eq!(
        json["model"], "gpt-4o",
        "the model the request named, echoed"
    );
    assert_eq!(json["choices"][0]["message"]["role"], "assistant");

    let recorded = mock.requests();
    assert_eq!(recorded.len(), 1);
    let r = &recorded[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/v1/chat/completions");
    assert_eq!(r.query.as_deref(), Some("api-version=2024-02-01&x=1"));
    assert_eq!(r.header("AUTHORIZATION"), Some("Bearer sk-test"));
    assert_eq!(r.header_all("x-multi"), vec!["a", "b"]);
    assert_eq!(r.header("host"), Some("localhost"));
    assert!(r.headers.iter().all(|(n, _)| *n == n.to_ascii_lowercase()));
    assert_eq!(r.body, br#"{"model":"gpt-4o"}"#);
    assert_eq!(r.version, "HTTP/1.1");

    mock.clear();
    assert!(mock.requests().is_empty());
}

#[tokio::test]
async fn keepalive_reuses_one_connection_and_handshake() {
    let _turn = crate::support::lock::shared().await;
    let ca = TestCa::new();
    let mock = MockProvider::start(&ca).await;
    let mut sender = h1_connection(&mock, &ca).await;
    for path in ["/first", "/second"] {
        let response = sender
            .send_request(request("GET", path, &[], ""))
            .await
            .expect("send request");
        assert_eq!(response.status(), 200);
        assert!(body_text(response).await.contains(path));
    }
    assert_eq!(mock.requests().len(), 2);
    assert_eq!(mock.tcp_connections(), 1);
    assert_eq!(mock.tls_handshakes(), 1);
    assert_eq!(mock.open_connections(), 1);

    drop(sender);
    let closed =
        crate::support::wait_until(Duration::from_secs(5), || mock.open_connections() == 0).await;
    assert!(
        closed,
        "mock still reports an open connection after the client closed"
    );
    assert_eq!(mock.max_open_connections(), 1);

    // A second connection is a new TCP connection and a new handshake.
    let mut sender = h1_connection(&mock, &ca).await;
    let response = sender
        .send_request(request("GET", "/third", &[], ""))
        .await
        .expect("send request");
    assert_eq!(response.status(), 200);
    assert_eq!(mock.tcp_connections(), 2);
    assert_eq!(mock.tls_handshakes(), 2);
}

#[tokio::test]
async fn sse_events_arrive_separately_with_delay() {
    let _turn = crate::support::lock::alone().await;
    const EVENTS: usize = 4;
    const DELAY_MS: u64 = 150;
    let ca = TestCa::new();
    let mock = MockProvider::start(&ca).await;
    let mut sender = h1_connection(&mock, &ca).await;
    let req = request(
        "POST",
        "/v1/chat/completions",
        &[
            ("x-mock-sse-events", &EVENTS.to_string()),
            ("x-mock-sse-delay-ms", &DELAY_MS.to_string()),
        ],
        r#"{"stream":true}"#,
    );
    let response = sender.send_request(req).await.expect("send request");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert_eq!(response.headers()["transfer-encoding"], "chunked");

    // Collect complete events (terminated by a blank line) with their arrival times.
    let mut body = response.into_body();
    let mut pending = String::new();
    let mut events: Vec<(String, Instant)> = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.expect("body frame");
        let Some(data) = frame.data_ref() else {
            continue;
        };
        pending.push_str(std::str::from_utf8(data).expect("UTF-8 event data"));
        while let Some(end) = pending.find("\n\n") {
            events.push((pending[..end].to_string(), Instant::now()));
            pending.drain(..end + 2);
        }
    }
    let texts: Vec<&str> = events.iter().map(|(t, _)| t.as_str()).collect();
    let mut expected: Vec<String> = (0..EVENTS)
        .map(|k| format!("data: {{\"i\":{k}}}"))
        .collect();
    expected.push("data: [DONE]".to_string());
    assert_eq!(texts, expected);
    assert!(pending.is_empty(), "trailing partial event: {pending:?}");

    let gap = events[EVENTS - 1].1 - events[0].1;
    let min_gap = Duration::from_millis(DELAY_MS * (EVENTS as u64 - 1) * 8 / 10);
    assert!(
        gap >= min_gap,
        "events were not spaced out: {gap:?} < {min_gap:?}"
    );
}

#[tokio::test]
async fn status_override_and_ip_san_verification() {
    let _turn = crate::support::lock::shared().await;
    let ca = TestCa::new();
    let mock = MockProvider::start(&ca).await;
    // Certificate verification against the IP SAN (server name "127.0.0.1").
    let tls = tls_connect(&mock, &ca, &[], "127.0.0.1").await;
    let (mut sender, conn) = http1::handshake(TokioIo::new(tls))
        .await
        .expect("HTTP/1.1 handshake");
    tokio::spawn(conn);
    let response = sender
        .send_request(request("POST", "/v1/x", &[("x-mock-status", "429")], "{}"))
        .await
        .expect("send request");
    assert_eq!(response.status(), 429);
    assert!(body_text(response).await.contains("/v1/x"));
    assert_eq!(mock.requests()[0].body, b"{}");
}

#[tokio::test]
async fn h2_is_negotiated_via_alpn() {
    let _turn = crate::support::lock::shared().await;
    let ca = TestCa::new();
    let mock = MockProvider::start(&ca).await;
    let tls = tls_connect(&mock, &ca, &["h2", "http/1.1"], "localhost").await;
    assert_eq!(tls.ssl().selected_alpn_protocol(), Some(b"h2".as_slice()));
    let (mut sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
        .await
        .expect("HTTP/2 handshake");
    tokio::spawn(conn);
    let req = Request::builder()
        .method("GET")
        .uri(format!("{}/v1/models", mock.base_url()))
        .body(Full::new(Bytes::new()))
        .expect("build request");
    let response = sender.send_request(req).await.expect("send h2 request");
    assert_eq!(response.status(), 200);
    assert_eq!(mock.requests()[0].version, "HTTP/2.0");

    // A mock limited to HTTP/1.1 does not select h2.
    let mock1 = MockProvider::start_http1(&ca).await;
    let tls = tls_connect(&mock1, &ca, &["h2", "http/1.1"], "localhost").await;
    assert_eq!(
        tls.ssl().selected_alpn_protocol(),
        Some(b"http/1.1".as_slice())
    );
}

#[tokio::test]
async fn helpers_free_port_wait_until_and_ca_file() {
    let _turn = crate::support::lock::shared().await;
    let port = crate::support::free_port();
    assert_ne!(port, 0);
    std::net::TcpListener::bind(("127.0.0.1", port)).expect("free_port is bindable");

    let start = Instant::now();
    let mut calls = 0;
    let ok = crate::support::wait_until(Duration::from_secs(5), || {
        calls += 1;
        calls == 3
    })
    .await;
    assert!(ok);
    assert!(start.elapsed() >= Duration::from_millis(30));
    assert!(!crate::support::wait_until(Duration::from_millis(60), || false).await);

    let ca = TestCa::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = ca.write_ca_file(dir.path());
    let pem = std::fs::read_to_string(&path).expect("read CA file");
    assert_eq!(pem, ca.ca_cert_pem());
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
}

#[tokio::test]
async fn sidecar_try_start_reports_early_exit_with_output() {
    let _turn = crate::support::lock::shared().await;
    // Any build of the binary must exit on a config that is not even YAML.
    let result = crate::support::sidecar_process::SidecarProcess::try_start(
        "listen: [unterminated {PORT}\n",
        &[("credentials.yaml", "dir: {DIR}\n")],
        &[],
    );
    match result {
        Ok(mut process) => {
            process.stop();
            panic!(
                "sidecar started on a garbage config; output:\n{}",
                process.output()
            );
        }
        Err(e) => assert!(e.contains("exited before listening"), "{e}"),
    }
}

/// The `.rs` files under `dir`, its subdirectories included.
fn rust_files(dir: &std::path::Path, found: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// Every test of this crate takes the suite's lock in its first statement (`support/lock.rs`):
/// one written without it would run beside the tests that must run alone.
#[test]
fn every_test_takes_the_suite_lock() {
    let _turn = crate::support::lock::shared_blocking();
    let root = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it"));
    let mut files = Vec::new();
    rust_files(root, &mut files);
    let (mut tests, mut without) = (0, Vec::new());
    for file in files
        .iter()
        .filter(|f| !f.starts_with(root.join("support")))
    {
        let text = std::fs::read_to_string(file).expect("read a test file");
        let lines: Vec<&str> = text.lines().collect();
        for (at, line) in lines.iter().enumerate() {
            let line = line.trim();
            if !(line.starts_with("#[tokio::test") || line == "#[test]") {
                continue;
            }
            tests += 1;
            // The body opens on the first line after the attribute that ends with `{`.
            let body = (at + 1..lines.len()).find(|&i| lines[i].trim_end().ends_with('{'));
            let first = body.and_then(|i| lines.get(i + 1)).map(|l| l.trim());
            if !first.is_some_and(|l| l.starts_with("let _turn = crate::support::lock::")) {
                without.push(format!("{}:{}", file.display(), at + 1));
            }
        }
    }
    assert!(
        tests > 100,
        "only {tests} tests found under {}",
        root.display()
    );
    assert!(
        without.is_empty(),
        "tests without the suite lock: {without:#?}"
    );
}
