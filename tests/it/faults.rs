//! Faults on the provider side: it refuses connections, stalls past the read timeout, resets in
//! the middle of a response; and a credential rotated while a long stream is in flight. Each
//! failure is a JSON error (or a cut stream) for that request only: the sidecar keeps serving.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use crate::support::config::route;
use crate::support::gateway::{credentials_yaml_rotating_openai, start_openai_only};
use crate::support::http::post;
use crate::support::mock_provider::MockProvider;
use crate::support::sidecar_process::SidecarProcess;
use crate::support::wait_until;
use futures_util::StreamExt;
use serde_json::json;

/// A sidecar with route `/openai` to the TLS mock and route `/raw` to `raw_upstream`
/// (plain HTTP), with a 1 s read timeout.
async fn start(raw_upstream: &str) -> (MockProvider, SidecarProcess, tempfile::TempDir) {
    start_openai_only(|config| {
        config["upstream"]["read_timeout"] = json!("1s");
        let raw = route("raw", raw_upstream, "openai", "openai-cred");
        config["routes"]
            .as_array_mut()
            .expect("routes")
            .insert(0, raw);
    })
    .await
}

/// Serves each accepted connection with `serve` on its own thread, for `accepts` connections.
fn raw_upstream(accepts: usize, serve: fn(std::net::TcpStream)) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    std::thread::spawn(move || {
        for stream in listener.incoming().take(accepts).flatten() {
            std::thread::spawn(move || serve(stream));
        }
    });
    url
}

/// Reads the request head, so the sidecar has sent everything.
fn read_head(stream: &mut std::net::TcpStream) {
    let mut seen = Vec::new();
    let mut byte = [0u8; 1];
    while !seen.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
        seen.push(byte[0]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_refusing_connections_gets_502_json_and_the_rest_keeps_working() {
    let _turn = crate::support::lock::alone().await;
    let closed = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", closed.local_addr().expect("addr"));
    drop(closed);
    let (_mock, sidecar, _dir) = start(&url).await;
    let (status, body) = post(&sidecar, "/raw/x").await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("upstream_connect_refused"), "{body}");
    assert_eq!(post(&sidecar, "/openai/x").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_stalling_past_the_read_timeout_gets_504_json() {
    let _turn = crate::support::lock::alone().await;
    let url = raw_upstream(4, |mut stream| {
        read_head(&mut stream);
        std::thread::sleep(Duration::from_secs(5));
    });
    let (_mock, sidecar, _dir) = start(&url).await;
    let (status, body) = post(&sidecar, "/raw/x").await;
    assert_eq!(status, 504, "{body}");
    assert!(body.contains("upstream_timeout"), "{body}");
    assert_eq!(post(&sidecar, "/openai/x").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_resetting_mid_response_cuts_that_stream_only() {
    let _turn = crate::support::lock::alone().await;
    let url = raw_upstream(4, |mut stream| {
        read_head(&mut stream);
        let _ = stream.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n\
              f\r\ndata: {\"i\":0}\n\n\r\n",
        );
        std::thread::sleep(Duration::from_millis(200));
        // A reset, not a clean close: linger 0 makes close(2) send RST.
        let socket = socket2::SockRef::from(&stream);
        let _ = socket.set_linger(Some(Duration::ZERO));
    });
    let (_mock, sidecar, _dir) = start(&url).await;
    let resp = reqwest::Client::new()
        .post(format!("{}/raw/x", sidecar.base_url()))
        .body("{}")
        .send()
        .await
        .expect("response header");
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let first = body.next().await.expect("first event").expect("chunk");
    assert!(String::from_utf8_lossy(&first).contains("\"i\":0"));
    let mut cut = false;
    while let Some(chunk) = body.next().await {
        cut |= chunk.is_err();
    }
    assert!(
        cut,
        "the client must see the stream end abnormally, not as complete"
    );
    assert_eq!(post(&sidecar, "/openai/x").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_rotated_during_a_long_stream_leaves_the_stream_whole() {
    let _turn = crate::support::lock::alone().await;
    let (mock, sidecar, _dir) = start("http://127.0.0.1:9").await;
    let resp = reqwest::Client::new()
        .post(format!("{}/openai/chat/completions", sidecar.base_url()))
        .header("x-mock-sse-events", "8")
        .header("x-mock-sse-delay-ms", "250")
        .body("{}")
        .send()
        .await
        .expect("stream");
    let mut body = resp.bytes_stream();
    let mut text =
        String::from_utf8_lossy(&body.next().await.expect("first").expect("chunk")).into_owned();

    let rotated = credentials_yaml_rotating_openai("sk-openai-NEXT-0010");
    std::fs::write(sidecar.dir().join("credentials.yaml"), rotated).expect("write");
    sidecar.signal("HUP");
    assert!(
        wait_until(Duration::from_secs(10), || sidecar
            .output()
            .contains("config reload: credential sources read"))
        .await
    );
    assert_eq!(post(&sidecar, "/openai/x").await.0, 200);

    while let Some(chunk) = body.next().await {
        text += &String::from_utf8_lossy(&chunk.expect("the stream is not cut"));
    }
    assert_eq!(text.matches("data:").count(), 9, "{text}");
    let keys_seen: Vec<String> = mock
        .requests()
        .iter()
        .map(|r| r.header("authorization").unwrap_or("-").to_string())
        .collect();
    assert_eq!(
        keys_seen,
        ["Bearer sk-openai-SECRET-0001", "Bearer sk-openai-NEXT-0010"],
        "the stream kept its key; the next request carried the new one"
    );
}
