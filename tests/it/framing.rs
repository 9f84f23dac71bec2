//! HTTP/1 framing a client may get wrong or unusual: pipelined requests (several written before
//! the first answer is read) and repeated `Content-Length` values. Every exchange is bounded by
//! read timeouts: a client must get its answers or a close, never wait forever.

use std::net::SocketAddr;
use std::time::Duration;

use crate::support::gateway::start_openai_only;
use crate::support::http::status_line;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long the client waits for more bytes before it calls the connection hung.
const READ_PATIENCE: Duration = Duration::from_secs(5);

/// One HTTP/1.1 response as the client read it.
#[derive(Debug)]
struct Answer {
    status: u16,
    body: String,
}

/// What a raw client saw on its connection.
#[derive(Debug)]
struct Seen {
    answers: Vec<Answer>,
    /// The sidecar closed the connection (else the client stopped waiting after `READ_PATIENCE`
    /// with the connection still open).
    closed: bool,
    /// Bytes after the last complete answer (a cut-off response).
    leftover: String,
}

/// Reads answers from `stream` until `want` are complete, the sidecar closes, or nothing arrives
/// for `READ_PATIENCE`.
async fn read_answers(stream: &mut TcpStream, want: usize) -> Seen {
    let mut buf = Vec::new();
    let mut answers = Vec::new();
    let mut closed = false;
    while answers.len() < want {
        if let Some((answer, used)) = parse_answer(&buf) {
            answers.push(answer);
            buf.drain(..used);
            continue;
        }
        let mut chunk = [0u8; 8192];
        match tokio::time::timeout(READ_PATIENCE, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => break,
        }
    }
    Seen {
        answers,
        closed,
        leftover: String::from_utf8_lossy(&buf).into_owned(),
    }
}

/// One complete response at the start of `buf` (`Content-Length` or chunked), and its length.
fn parse_answer(buf: &[u8]) -> Option<(Answer, usize)> {
    let head_end = find(buf, b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let status = head.get(9..12)?.parse().ok()?;
    let rest = &buf[head_end..];
    let (body, used) = if head.contains("transfer-encoding: chunked") {
        parse_chunked(rest)?
    } else {
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(Some(0), |v| v.trim().parse().ok())?;
        (rest.get(..length)?.to_vec(), length)
    };
    let body = String::from_utf8_lossy(&body).into_owned();
    Some((Answer { status, body }, head_end + used))
}

/// A complete chunked body (no trailers) at the start of `rest`: its data and encoded length.
fn parse_chunked(rest: &[u8]) -> Option<(Vec<u8>, usize)> {
    let mut at = 0;
    let mut body = Vec::new();
    loop {
        let line_end = at + find(&rest[at..], b"\r\n")?;
        let size = std::str::from_utf8(&rest[at..line_end]).ok()?;
        let size = usize::from_str_radix(size.trim(), 16).ok()?;
        at = line_end + 2;
        if size == 0 {
            return (rest.get(at..at + 2)? == b"\r\n").then_some((body, at + 2));
        }
        body.extend_from_slice(rest.get(at..at + size)?);
        at += size + 2;
        rest.get(..at)?;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn request(method: &str, path: &str, extra: &str, body: &str) -> String {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: a\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Writes `first`, then (after `pause`, if any) `second`, and reads two answers.
async fn exchange(addr: SocketAddr, first: &str, pause: Option<Duration>, second: &str) -> Seen {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    match pause {
        None => {
            let both = format!("{first}{second}");
            stream.write_all(both.as_bytes()).await.expect("write");
        }
        Some(pause) => {
            stream.write_all(first.as_bytes()).await.expect("write");
            tokio::time::sleep(pause).await;
            stream.write_all(second.as_bytes()).await.expect("write");
        }
    }
    read_answers(&mut stream, 2).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_each_answered_in_order() {
    let _turn = crate::support::lock::shared().await;
    let (mock, sidecar, _dir) = start_openai_only(|_| {}).await;
    let stripped = "Authorization: Bearer client-bearer-token\r\n";
    let second = request("POST", "/openai/second", stripped, "{}");
    let head_only = "POST /openai/first HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n";
    let slow = "x-mock-sse-events: 3\r\nx-mock-sse-delay-ms: 300\r\n";
    // (shape, bytes before the pause, pause, bytes after it)
    let cases = [
        (
            "both in one write",
            request("GET", "/openai/first", "", ""),
            None,
            second.clone(),
        ),
        (
            "with a body, both in one write",
            request("POST", "/openai/first", "", "{}"),
            None,
            second.clone(),
        ),
        (
            "the first body and the next request in a later write",
            head_only.to_string(),
            Some(Duration::from_millis(200)),
            format!("{{}}{second}"),
        ),
        (
            "the next request while the first answer streams",
            request("POST", "/openai/first", slow, "{}"),
            Some(Duration::from_millis(150)),
            second.clone(),
        ),
    ];
    for (shape, first, pause, next) in &cases {
        mock.clear();
        let seen = exchange(sidecar.listen_addr(), first, *pause, next).await;
        let statuses: Vec<u16> = seen.answers.iter().map(|a| a.status).collect();
        assert_eq!(
            statuses,
            [200, 200],
            "{shape}: every pipelined request must be answered, in order ({seen:?})"
        );
        assert!(
            seen.leftover.is_empty(),
            "{shape}: a cut-off answer: {seen:?}"
        );
        // The mock answers JSON naming the path, or (asked to stream) events up to `[DONE]`.
        let first = &seen.answers[0].body;
        assert!(
            first.contains("/v1/first") || first.ends_with("data: [DONE]\n\n"),
            "{shape}: {seen:?}"
        );
        assert!(
            seen.answers[1].body.contains("/v1/second"),
            "{shape}: {seen:?}"
        );
        let upstream = mock.requests();
        let paths: Vec<&str> = upstream.iter().map(|r| r.path.as_str()).collect();
        assert_eq!(paths, ["/v1/first", "/v1/second"], "{shape}");
        for req in &upstream {
            assert_eq!(
                req.header_all("authorization"),
                ["Bearer sk-openai-SECRET-0001"],
                "{shape}: the client's credential replaced on every pipelined request"
            );
        }
    }
    // A refused request is answered and the connection closed: what follows it is not read.
    mock.clear();
    let refused = request("GET", "/nowhere", "", "");
    let seen = exchange(sidecar.listen_addr(), &refused, None, &second).await;
    assert_eq!(seen.answers.len(), 1, "{seen:?}");
    assert_eq!(seen.answers[0].status, 404);
    assert!(seen.closed, "closed after the refusal: {seen:?}");
    assert!(mock.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_content_length_is_sent_upstream_once() {
    let _turn = crate::support::lock::shared().await;
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
