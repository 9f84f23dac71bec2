//! HTTP/1 framing a client may get wrong or unusual: repeated `Content-Length` values.

use crate::support::gateway::start_openai_only;
use crate::support::http::status_line;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_content_length_is_sent_upstream_once() {
    let (mock, sidecar, _dir) = start_openai_only(|config| {
        config["limits"] = json!({ "max_request_body_bytes": 1000 });
    })
    .await;
    let post = |lengths: &str, body: &str| {
        format!("POST /openai/x HTTP/1.1\r\nHost: a\r\n{lengths}Connection: close\r\n\r\n{body}")
    };
    for lengths in [
        "Content-Length: 2, 2\r\n",
        "Content-Length: 2,2\r\n",
        "Content-Length: 2\r\nContent-Length: 2\r\n",
        "Content-Length: 2\r\nContent-Length: 2, 2\r\n",
    ] {
        mock.clear();
        let line = status_line(sidecar.listen_addr(), post(lengths, "{}").as_bytes()).await;
        assert!(line.contains(" 200 "), "{lengths:?}: {line}");
        let seen = mock.requests();
        assert_eq!(seen.len(), 1, "{lengths:?}");
        assert_eq!(seen[0].header_all("content-length"), ["2"], "{lengths:?}");
        assert_eq!(seen[0].body, b"{}");
    }
    // Values that differ are refused; a repeated value over the body limit is refused before
    // anything is sent, as a single one is.
    mock.clear();
    for (lengths, expected) in [
        ("Content-Length: 2, 3\r\n", " 400 "),
        ("Content-Length: 2000, 2000\r\n", " 413 "),
        ("Content-Length: 2000\r\nContent-Length: 2000\r\n", " 413 "),
    ] {
        let line = status_line(sidecar.listen_addr(), post(lengths, "{}").as_bytes()).await;
        assert!(line.contains(expected), "{lengths:?}: {line}");
        assert!(mock.requests().is_empty(), "{lengths:?}: sent upstream");
    }
}
