//! Hostile requests, written byte for byte: oversized and malformed heads, smuggling shapes,
//! requests naming another host, control and non-UTF-8 bytes, path tricks, oversized bodies.
//! Each gets a 4xx (never a crash, never a key sent anywhere but the route's upstream).

use std::net::TcpListener;

use crate::support::gateway::start_gateway;
use crate::support::http::status_line;
use crate::support::mock_provider::MockProvider;
use crate::support::sidecar_process::SidecarProcess;

fn post(path: &str, headers: &str, body: &str) -> Vec<u8> {
    format!("POST {path} HTTP/1.1\r\nHost: a\r\n{headers}Connection: close\r\n\r\n{body}")
        .into_bytes()
}

/// The test gateway with request bodies limited to 1,000 bytes.
async fn setup() -> (MockProvider, SidecarProcess, tempfile::TempDir) {
    start_gateway(|config| {
        config["limits"] = serde_json::json!({ "max_request_body_bytes": 1000 });
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_oversized_and_smuggling_requests_are_refused_and_send_nothing() {
    let _turn = crate::support::lock::alone().await;
    let (mock, sidecar, _dir) = setup().await;
    let big = "x".repeat(40_000);
    let huge = "x".repeat(2_000_000);
    let many: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    let chunk = "y".repeat(2000);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "header over the limit",
            post(
                "/openai/x",
                &format!("X-Big: {big}\r\nContent-Length: 0\r\n"),
                "",
            ),
            "431",
        ),
        (
            "head over Pingora's 1 MiB",
            post("/openai/x", &format!("X-Big: {huge}\r\n"), ""),
            "400",
        ),
        (
            "too many headers",
            post("/openai/x", &format!("{many}Content-Length: 0\r\n"), ""),
            "431",
        ),
        (
            "URI over 1 MiB",
            format!("GET /openai/{huge} HTTP/1.1\r\nHost: a\r\n\r\n").into_bytes(),
            "400",
        ),
        ("not HTTP", b"HELLO THERE\r\n\r\n".to_vec(), "400"),
        (
            "unknown version",
            b"GET /openai/x HTTP/9.9\r\nHost: a\r\n\r\n".to_vec(),
            "400",
        ),
        (
            "declared body over the limit",
            post("/openai/x", "Content-Length: 5000\r\n", ""),
            "413",
        ),
        (
            "chunked body over the limit",
            post(
                "/openai/x",
                "Transfer-Encoding: chunked\r\n",
                &format!("7d0\r\n{chunk}\r\n0\r\n\r\n"),
            ),
            "413",
        ),
        (
            "duplicate Content-Length",
            post(
                "/openai/x",
                "Content-Length: 2\r\nContent-Length: 30\r\n",
                "{}",
            ),
            "400",
        ),
        (
            "obs-fold",
            post("/openai/x", "X-Fold: a\r\n b\r\nContent-Length: 0\r\n", ""),
            "400",
        ),
        (
            "bare CR in a header",
            post("/openai/x", "X-A: b\rc\r\nContent-Length: 0\r\n", ""),
            "400",
        ),
        (
            "non-UTF-8 path",
            b"POST /openai/\xff\xfe HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n".to_vec(),
            "400",
        ),
        (
            "dot segments",
            post("/openai/../../anthropic/x", "Content-Length: 0\r\n", ""),
            "400",
        ),
        (
            "dot segments into a route",
            post("/anthropic/../openai/x", "Content-Length: 0\r\n", ""),
            "400",
        ),
        (
            "encoded slash",
            post("/openai%2F..%2Fanthropic/x", "Content-Length: 0\r\n", ""),
            "400",
        ),
        (
            "encoded dots",
            post("/openai/%2e%2e/x", "Content-Length: 0\r\n", ""),
            "400",
        ),
        (
            "encoded prefix",
            post("/%6Fpenai/x", "Content-Length: 0\r\n", ""),
            "404",
        ),
    ];
    let mut outcomes = Vec::new();
    for (name, bytes, expected) in &cases {
        let line = status_line(sidecar.listen_addr(), bytes).await;
        outcomes.push(format!("{name}: {line}"));
        assert!(
            line.contains(&format!(" {expected} ")),
            "{name}: expected {expected}, got {line:?}"
        );
        assert!(
            mock.requests().is_empty(),
            "{name}: something reached the provider"
        );
    }
    eprintln!("{}", outcomes.join("\n"));
    // Still serving, and the JSON error bodies named the limit.
    let ok = status_line(
        sidecar.listen_addr(),
        &post("/openai/x", "Content-Length: 2\r\n", "{}"),
    )
    .await;
    assert!(ok.contains(" 200 "), "{ok}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_naming_another_host_still_goes_only_to_the_routes_upstream() {
    let _turn = crate::support::lock::alone().await;
    let (mock, sidecar, _dir) = setup().await;
    // Anything that reaches this listener would be a key sent elsewhere.
    let decoy = TcpListener::bind("127.0.0.1:0").expect("decoy");
    decoy.set_nonblocking(true).expect("nonblocking");
    let d = decoy.local_addr().expect("addr");
    let cases = [
        format!("POST http://{d}/openai/x HTTP/1.1\r\nHost: {d}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
        format!("POST /openai/x HTTP/1.1\r\nHost: {d}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
        format!("POST https://{d}/openai/x HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
        format!("POST /openai/x HTTP/1.1\r\nHost: a\r\nX-Forwarded-Host: {d}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
    ];
    let mut forwarded = 0;
    for case in &cases {
        // Pingora refuses an `https://` absolute form on a plain listener (400); the rest are
        // served, by the route's upstream.
        let line = status_line(sidecar.listen_addr(), case.as_bytes()).await;
        assert!(
            line.contains(" 200 ") || line.contains(" 400 "),
            "{case:?}: {line}"
        );
        forwarded += usize::from(line.contains(" 200 "));
    }
    assert!(forwarded >= 3, "{forwarded}");
    assert!(
        decoy.accept().is_err(),
        "the decoy host received a connection"
    );
    let upstream_host = format!("localhost:{}", mock.addr().port());
    let seen = mock.requests();
    assert_eq!(seen.len(), forwarded);
    for req in &seen {
        assert_eq!(req.header("host"), Some(upstream_host.as_str()));
        assert_eq!(req.path, "/v1/x");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_with_transfer_encoding_is_framed_once_and_smuggles_nothing() {
    let _turn = crate::support::lock::shared().await;
    let (mock, sidecar, _dir) = setup().await;
    // Pingora drops Content-Length when Transfer-Encoding is present (RFC 9112 §6.3) and frames
    // the upstream request itself, so the provider cannot read the bytes differently.
    let smuggle = "0\r\n\r\nPOST /openai/smuggled HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n";
    let line = status_line(
        sidecar.listen_addr(),
        &post(
            "/openai/x",
            "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n",
            smuggle,
        ),
    )
    .await;
    assert!(line.contains(" 200 "), "{line}");
    let seen = mock.requests();
    assert_eq!(seen.len(), 1, "one request upstream");
    assert_eq!(seen[0].path, "/v1/x");
    assert!(seen[0].body.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_utf8_header_bytes_are_carried_not_fatal() {
    let _turn = crate::support::lock::shared().await;
    let (mock, sidecar, _dir) = setup().await;
    let line = status_line(
        sidecar.listen_addr(),
        b"POST /openai/x HTTP/1.1\r\nHost: a\r\nX-A: \xff\xfe\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(line.contains(" 200 "), "{line}");
    assert_eq!(mock.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_segments_with_path_parameters_are_refused_and_send_nothing() {
    let _turn = crate::support::lock::shared().await;
    // Servlet containers (Tomcat, Jetty) drop `;parameters` from a segment before resolving dot
    // segments, so `/v1/..;/x` is `/x` to them: the same escape from the route's base path as
    // `/v1/../x`.
    let (mock, sidecar, _dir) = setup().await;
    for path in [
        "/openai/..;/anthropic/x",
        "/openai/..;jsessionid=1/x",
        "/openai/.;/x",
        "/openai/x/..%3B/y",
        "/openai/..;",
    ] {
        let line = status_line(
            sidecar.listen_addr(),
            &post(path, "Content-Length: 0\r\n", ""),
        )
        .await;
        assert!(line.contains(" 400 "), "{path}: expected 400, got {line:?}");
        assert!(
            mock.requests().is_empty(),
            "{path}: something reached the provider"
        );
    }
}
