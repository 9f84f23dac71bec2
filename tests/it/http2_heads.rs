//! `limits.max_request_header_bytes` over HTTP/2: heads within the limit are served, heads over it
//! get the sidecar's JSON 431, and heads far over it are refused by the HTTP/2 layer. Nothing
//! over the limit reaches the provider.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use tokio::net::TcpStream;

use crate::support::certs::TestCa;
use crate::support::free_port;
use crate::support::gateway::start_openai_only;
use crate::support::http::hyper_text;
use crate::support::wait_until_async;

/// The limit under test: above Pingora's own HTTP/2 default (64 KiB), so that default cannot
/// be what answers.
const LIMIT: usize = 128 * 1024;

/// Sends one GET with an `x-big` header of `size` bytes on a fresh HTTP/2 connection; the status
/// and body, or the error the client saw (a refused stream).
async fn get_with_header(port: u16, ca: &TestCa, size: usize) -> Result<(u16, String), String> {
    let tcp = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let config = ca.client_connector(&["h2"]).configure().expect("configure");
    let tls = tokio_boring::connect(config, "localhost", tcp)
        .await
        .expect("TLS handshake");
    assert_eq!(tls.ssl().selected_alpn_protocol(), Some(b"h2".as_slice()));
    let (mut sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
        .await
        .expect("h2 handshake");
    tokio::spawn(conn);
    let req = hyper::Request::get(format!("https://localhost:{port}/openai/x"))
        .header("x-big", "x".repeat(size))
        .body(Full::new(Bytes::new()))
        .expect("request");
    let exchange = async {
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        hyper_text(resp).await
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .unwrap_or_else(|_| Err("no answer within 10 s".to_string()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_heads_follow_max_request_header_bytes_with_the_json_431() {
    let _turn = crate::support::lock::shared().await;
    let server_ca = TestCa::new();
    let (cert, key) = server_ca.issue(&["localhost", "127.0.0.1"]);
    let certs = tempfile::tempdir().expect("tempdir");
    std::fs::write(certs.path().join("tls.crt"), cert).expect("write");
    std::fs::write(certs.path().join("tls.key"), key).expect("write");
    let port = free_port();
    let (mock, _sidecar, _dir) = start_openai_only(|config| {
        config["limits"] = json!({ "max_request_header_bytes": LIMIT });
        let tls = json!({
            "cert": certs.path().join("tls.crt"),
            "key": certs.path().join("tls.key"),
        });
        let listeners = config["listeners"].as_array_mut().expect("listeners");
        listeners.push(json!({ "address": format!("127.0.0.1:{port}"), "tls": tls }));
    })
    .await;
    let bound = wait_until_async(Duration::from_secs(10), || async {
        TcpStream::connect(("127.0.0.1", port)).await.is_ok()
    })
    .await;
    assert!(bound, "the TLS listener never accepted a connection");

    // Within the limit (and over Pingora's 64 KiB default): served.
    let within = get_with_header(port, &server_ca, 100 * 1024).await;
    assert_eq!(within.as_ref().map(|(s, _)| *s), Ok(200), "{within:?}");
    assert_eq!(mock.requests().len(), 1);
    assert_eq!(
        mock.requests()[0].header("x-big").map(str::len),
        Some(100 * 1024)
    );

    // Over the limit: the sidecar's own JSON 431, nothing sent.
    mock.clear();
    for size in [LIMIT + 1, 2 * LIMIT - 4096] {
        let over = get_with_header(port, &server_ca, size).await;
        let (status, body) = over.unwrap_or_else(|e| panic!("{size}: no answer: {e}"));
        assert_eq!(status, 431, "{size}: {body}");
        let json: serde_json::Value = serde_json::from_str(&body)
            .unwrap_or_else(|_| panic!("{size}: a bare 431, not the sidecar's JSON: {body:?}"));
        assert_eq!(json["error"]["code"], "request_headers_too_large", "{size}");
    }

    // Past the HTTP/2 layer's cap (README: 2 × the limit + 32 × (max_request_headers + 4), in
    // HTTP/2's count, which the value alone passes here): the h2 library refuses the head itself
    // with a bare 431, or, far past it, closes the connection. Nothing is sent either way.
    let cap = 2 * LIMIT + 32 * (100 + 4);
    let past = get_with_header(port, &server_ca, cap).await;
    assert_eq!(past.as_ref().map(|(s, _)| *s), Ok(431), "{past:?}");
    let far = get_with_header(port, &server_ca, 4 * LIMIT).await;
    assert!(
        !matches!(far, Ok((200, _))),
        "a head four times the limit was served: {far:?}"
    );
    assert!(mock.requests().is_empty(), "sent upstream");
}
