//! The load benchmark's stand-in for an LLM provider: a lean HTTPS server (BoringSSL, HTTP/1.1
//! keep-alive, and HTTP/2 when the client offers `h2` in ALPN) whose answers are shaped by flags, and a plain-HTTP stats port the benchmark
//! driver reads between runs. Started by `benches/load.sh`; not a test double with recording
//! (see `tests/it/support/mock_provider.rs` for that), but a fast one that counts.
//!
//! ```text
//! cargo run --release --example bench_provider -- --listen direct=127.0.0.1:18443 \
//!     --listen sidecar=127.0.0.1:18445 --stats 127.0.0.1:18444 --ca-out /tmp/bench-ca.pem \
//!     --key sk-bench [--expect-model sidecar-model=bench-model] \
//!     [--response-bytes 1024] [--latency-ms 0] [--stream-events 20] [--stream-ms 2000]
//! ```
//!
//! - `POST /v1/chat/completions` (any path but `/v1/stream`): waits `--latency-ms`, then a JSON
//!   body of `--response-bytes` bytes with a content-length.
//! - `/v1/stream`, or a body asking for `"stream": true` (looked for in its first and last
//!   `STREAM_FLAG_WINDOW` bytes, where clients write it): `--stream-events` SSE events
//!   (OpenAI's `chat.completion.chunk`) spread evenly over `--stream-ms`, then `data: [DONE]`
//!   (chunked). Each event's content is `sent_us=<microseconds since the Unix epoch>` when it
//!   was written, so a client on the same machine measures each chunk's delay
//!   (`examples/stream_client.rs`).
//! - A request whose `authorization` is not `Bearer <--key>` gets 401 and is counted.
//! - `--expect-model NAME=MODEL`: on listener NAME, a request whose body does not hold
//!   `"model":"MODEL"` (as a `dispatch: model` route rewrites it) gets 400 and is counted as
//!   `wrong_model`.
//! - Each `--listen NAME=ADDRESS` is a port with its own counters, so each client of the
//!   benchmark (direct, sidecar, nginx) is counted apart: `GET http://<--stats>/` → JSON, by
//!   name, of TLS handshakes, HTTP/2 connections, connections open now and at peak, requests,
//!   unauthorized, wrong_model;
//!   `POST http://<--stats>/reset-peak` sets every peak to what is open now;
//!   `POST http://<--stats>/stream?events=N&ms=M` makes later streamed answers N events over M
//!   ms (the LLM benchmark's two workloads share one provider).

#[allow(dead_code)] // the benchmark uses only the CA and certificate issuing of the test helper
#[path = "../tests/it/support/certs.rs"]
mod certs;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use boring::pkey::PKey;
use boring::ssl::{SslAcceptor, SslMethod};
use boring::x509::X509;
use bytes::Bytes;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// What the command line sets.
struct Options {
    listen: Vec<(String, SocketAddr)>,
    expect_model: Vec<(String, String)>,
    stats: SocketAddr,
    ca_out: String,
    key: String,
    response_bytes: usize,
    latency: Duration,
    stream_events: u32,
    stream_duration: Duration,
}

/// Counters read through the stats port.
#[derive(Default)]
struct Counters {
    handshakes: AtomicU64,
    h2_connections: AtomicU64,
    open: AtomicU64,
    peak_open: AtomicU64,
    requests: AtomicU64,
    unauthorized: AtomicU64,
    wrong_model: AtomicU64,
}

impl Counters {
    fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "handshakes": self.handshakes.load(Ordering::Relaxed),
            "h2_connections": self.h2_connections.load(Ordering::Relaxed),
            "open": self.open.load(Ordering::Relaxed),
            "peak_open": self.peak_open.load(Ordering::Relaxed),
            "requests": self.requests.load(Ordering::Relaxed),
            "unauthorized": self.unauthorized.load(Ordering::Relaxed),
            "wrong_model": self.wrong_model.load(Ordering::Relaxed),
        })
    }
}

/// Counts a TCP connection as open for as long as it lives.
struct OpenConnection(Arc<Counters>);

impl OpenConnection {
    fn new(counters: Arc<Counters>) -> OpenConnection {
        let now = counters.open.fetch_add(1, Ordering::Relaxed) + 1;
        counters.peak_open.fetch_max(now, Ordering::Relaxed);
        OpenConnection(counters)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How requests are answered, shared by every listener.
struct Answers {
    expected_auth: String,
    json: Bytes,
    latency: Duration,
    /// The shape of a streamed answer, which the stats port can change between runs.
    stream: StreamShape,
}

/// How many events a streamed answer has, and the time before each.
struct StreamShape {
    events: AtomicU32,
    gap_us: AtomicU64,
}

impl StreamShape {
    fn set(&self, events: u32, duration: Duration) {
        self.events.store(events, Ordering::Relaxed);
        let gap = duration / events.max(1);
        self.gap_us.store(gap.as_micros() as u64, Ordering::Relaxed);
    }

    fn get(&self) -> (u32, Duration) {
        let gap = Duration::from_micros(self.gap_us.load(Ordering::Relaxed));
        (self.events.load(Ordering::Relaxed), gap)
    }
}

fn parse_options() -> Result<Options, String> {
    let mut options = Options {
        listen: Vec::new(),
        expect_model: Vec::new(),
        stats: "127.0.0.1:18444".parse().expect("literal address"),
        ca_out: "bench-ca.pem".to_string(),
        key: "sk-bench".to_string(),
        response_bytes: 1024,
        latency: Duration::ZERO,
        stream_events: 20,
        stream_duration: Duration::from_secs(2),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value:?}: {e}");
        let millis = |v: &str| v.parse::<u64>().map(Duration::from_millis);
        match flag.as_str() {
            "--listen" => {
                let (name, address) = value.split_once('=').ok_or(bad(&"expected NAME=ADDRESS"))?;
                let address = address.parse().map_err(|e| bad(&e))?;
                options.listen.push((name.to_string(), address));
            }
            "--expect-model" => {
                let (name, model) = value.split_once('=').ok_or(bad(&"expected NAME=MODEL"))?;
                options
                    .expect_model
                    .push((name.to_string(), model.to_string()));
            }
            "--stats" => options.stats = value.parse().map_err(|e| bad(&e))?,
            "--ca-out" => options.ca_out = value,
            "--key" => options.key = value,
            "--response-bytes" => options.response_bytes = value.parse().map_err(|e| bad(&e))?,
            "--latency-ms" => options.latency = millis(&value).map_err(|e| bad(&e))?,
            "--stream-events" => options.stream_events = value.parse().map_err(|e| bad(&e))?,
            "--stream-ms" => options.stream_duration = millis(&value).map_err(|e| bad(&e))?,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if options.listen.is_empty() {
        return Err("at least one --listen NAME=ADDRESS is needed".to_string());
    }
    for (name, _) in &options.expect_model {
        if !options.listen.iter().any(|(listener, _)| listener == name) {
            return Err(format!("--expect-model {name}: no --listen {name}=…"));
        }
    }
    if options.stream_events == 0 {
        return Err("--stream-events must be at least 1".to_string());
    }
    Ok(options)
}

/// A JSON chat-completion body padded to `size` bytes (or the smallest valid one, if larger),
/// with a `usage` object as every provider's answer has (the sidecar reads it on model routes
/// and for LiteLLM keys).
fn completion_json(size: usize) -> Bytes {
    let head = r#"{"id":"bench","object":"chat.completion","created":0,"model":"bench-model","choices":[{"index":0,"finish_reason":"stop","message":{"role":"assistant","content":""#;
    let tail =
        r#""}}],"usage":{"prompt_tokens":1000,"completion_tokens":200,"total_tokens":1200}}"#;
    let padding = size.saturating_sub(head.len() + tail.len());
    Bytes::from(format!("{head}{}{tail}", "x".repeat(padding)))
}

/// A certificate for `localhost` and `127.0.0.1` from a fresh CA whose PEM goes to `ca_out`.
fn acceptor(ca_out: &str) -> Result<SslAcceptor, String> {
    let ca = certs::TestCa::new();
    std::fs::write(ca_out, ca.ca_cert_pem()).map_err(|e| format!("write {ca_out}: {e}"))?;
    let (cert_pem, key_pem) = ca.issue(&["localhost", "127.0.0.1"]);
    let tls_error = |e: boring::error::ErrorStack| format!("TLS setup: {e}");
    let cert = X509::from_pem(cert_pem.as_bytes()).map_err(tls_error)?;
    let key = PKey::private_key_from_pem(key_pem.as_bytes()).map_err(tls_error)?;
    let mut builder = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).map_err(tls_error)?;
    builder.set_certificate(&cert).map_err(tls_error)?;
    builder.set_private_key(&key).map_err(tls_error)?;
    // HTTP/2 for a client that offers it (as providers' edges do), else HTTP/1.1.
    builder.set_alpn_select_callback(|_, offered| {
        boring::ssl::select_next_proto(b"\x02h2\x08http/1.1", offered)
            .ok_or(boring::ssl::AlpnError::NOACK)
    });
    Ok(builder.build())
}

/// What one listener checks beyond the key: the `"model":"…"` its bodies must hold, if any.
type ExpectedModel = Option<Arc<[u8]>>;

async fn serve_tls(
    tcp: TcpStream,
    acceptor: Arc<SslAcceptor>,
    answers: Arc<Answers>,
    counters: Arc<Counters>,
    expected_model: ExpectedModel,
) {
    let _open = OpenConnection::new(counters.clone());
    let _ = tcp.set_nodelay(true);
    let Ok(tls) = tokio_boring::accept(&acceptor, tcp).await else {
        return;
    };
    counters.handshakes.fetch_add(1, Ordering::Relaxed);
    let h2 = tls.ssl().selected_alpn_protocol() == Some(b"h2");
    if h2 {
        counters.h2_connections.fetch_add(1, Ordering::Relaxed);
    }
    let service = hyper::service::service_fn(move |request| {
        answer(
            answers.clone(),
            counters.clone(),
            expected_model.clone(),
            request,
        )
    });
    // Clients closing mid-stream is normal under load; nothing to report.
    if h2 {
        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(tls), service)
            .await;
    } else {
        let _ = hyper::server::conn::http1::Builder::new()
            .keep_alive(true)
            .serve_connection(TokioIo::new(tls), service)
            .await;
    }
}

async fn answer(
    answers: Arc<Answers>,
    counters: Arc<Counters>,
    expected_model: ExpectedModel,
    request: Request<Incoming>,
) -> Result<Response<Body>, hyper::Error> {
    counters.requests.fetch_add(1, Ordering::Relaxed);
    let (parts, body) = request.into_parts();
    let body = body.collect().await?.to_bytes();
    let authorized = parts
        .headers
        .get("authorization")
        .is_some_and(|v| v.as_bytes() == answers.expected_auth.as_bytes());
    if !authorized {
        counters.unauthorized.fetch_add(1, Ordering::Relaxed);
        return Ok(json_response(
            StatusCode::UNAUTHORIZED,
            r#"{"error":"bad key"}"#,
        ));
    }
    if let Some(needle) = &expected_model {
        if !body.windows(needle.len()).any(|w| w == &needle[..]) {
            counters.wrong_model.fetch_add(1, Ordering::Relaxed);
            return Ok(json_response(
                StatusCode::BAD_REQUEST,
                r#"{"error":"unexpected model"}"#,
            ));
        }
    }
    if parts.uri.path() == "/v1/stream" || asks_for_stream(&body) {
        let response = Response::builder()
            .header("content-type", "text/event-stream")
            .header("cache-control", "no-cache")
            .body({
                let (events, gap) = answers.stream.get();
                sse_body(events, gap)
            })
            .expect("static response parts");
        return Ok(response);
    }
    if !answers.latency.is_zero() {
        tokio::time::sleep(answers.latency).await;
    }
    Ok(json_response(StatusCode::OK, answers.json.clone()))
}

fn json_response(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(body.into()).boxed_unsync())
        .expect("static response parts")
}

/// How far into each end of a body `"stream": true` is looked for: clients write it first (after
/// `model`) or last (the OpenAI SDK, after `messages`), and a 300 KB prompt is not scanned whole.
const STREAM_FLAG_WINDOW: usize = 1024;

/// Whether a chat-completion body asks for a streamed answer (`"stream":true`, with or without
/// a space after the colon).
fn asks_for_stream(body: &[u8]) -> bool {
    let head = &body[..body.len().min(STREAM_FLAG_WINDOW)];
    let tail = &body[body.len().saturating_sub(STREAM_FLAG_WINDOW)..];
    [head, tail].iter().any(|part| {
        part.windows(b"\"stream\":".len())
            .enumerate()
            .filter(|(_, w)| w == b"\"stream\":")
            .any(|(at, w)| part[at + w.len()..].trim_ascii_start().starts_with(b"true"))
    })
}

/// Microseconds since the Unix epoch: the clock every process on the machine shares.
fn now_us() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_micros())
}

/// `events` SSE events with `gap` before each, then `data: [DONE]`. Each is a whole OpenAI
/// `chat.completion.chunk` (gateways such as LiteLLM parse them) whose content carries the time
/// it was written.
fn sse_body(events: u32, gap: Duration) -> Body {
    let frames = futures_util::stream::unfold(0u32, move |sent| async move {
        if sent > events {
            return None;
        }
        let text = if sent < events {
            tokio::time::sleep(gap).await;
            let finish = if sent + 1 == events {
                r#""stop""#
            } else {
                "null"
            };
            format!(
                "data: {{\"id\":\"bench\",\"object\":\"chat.completion.chunk\",\"created\":0,\
                 \"model\":\"bench-model\",\"choices\":[{{\"index\":0,\"delta\":{{\"role\":\
                 \"assistant\",\"content\":\"sent_us={} \"}},\"finish_reason\":{finish}}}]}}\n\n",
                now_us()
            )
        } else {
            "data: [DONE]\n\n".to_string()
        };
        Some((Ok(Frame::data(Bytes::from(text))), sent + 1))
    });
    StreamBody::new(frames).boxed_unsync()
}

/// Counters of every listener, by name.
type AllCounters = Arc<Vec<(String, Arc<Counters>)>>;

fn stats_json(all: &AllCounters) -> String {
    let by_name: serde_json::Map<String, serde_json::Value> = all
        .iter()
        .map(|(name, counters)| (name.clone(), counters.to_json()))
        .collect();
    serde_json::Value::Object(by_name).to_string()
}

/// `events` and `ms` of `POST /stream?events=N&ms=M`.
fn stream_shape(query: &str) -> Option<(u32, Duration)> {
    let mut events = None;
    let mut millis = None;
    for pair in query.split('&') {
        match pair.split_once('=')? {
            ("events", value) => events = value.parse().ok().filter(|n| *n > 0),
            ("ms", value) => millis = value.parse().ok().map(Duration::from_millis),
            _ => return None,
        }
    }
    Some((events?, millis?))
}

async fn serve_stats(listener: TcpListener, counters: AllCounters, answers: Arc<Answers>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let (counters, answers) = (counters.clone(), answers.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let (counters, answers) = (counters.clone(), answers.clone());
                async move {
                    if request.uri().path() == "/stream" {
                        let shape = stream_shape(request.uri().query().unwrap_or_default());
                        let Some((events, duration)) = shape else {
                            let usage = r#"{"error":"POST /stream?events=N&ms=M"}"#;
                            return Ok(json_response(StatusCode::BAD_REQUEST, usage));
                        };
                        answers.stream.set(events, duration);
                    }
                    if request.uri().path() == "/reset-peak" {
                        for (_, one) in counters.iter() {
                            let open = one.open.load(Ordering::Relaxed);
                            one.peak_open.store(open, Ordering::Relaxed);
                        }
                    }
                    Ok::<_, Infallible>(json_response(StatusCode::OK, stats_json(&counters)))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let options = parse_options()?;
    let acceptor = Arc::new(acceptor(&options.ca_out)?);
    let answers = Arc::new(Answers {
        expected_auth: format!("Bearer {}", options.key),
        json: completion_json(options.response_bytes),
        latency: options.latency,
        stream: StreamShape {
            events: AtomicU32::new(0),
            gap_us: AtomicU64::new(0),
        },
    });
    answers
        .stream
        .set(options.stream_events, options.stream_duration);
    let mut all = Vec::new();
    for (name, address) in &options.listen {
        let listener = bind(*address).await?;
        let counters = Arc::new(Counters::default());
        all.push((name.clone(), counters.clone()));
        let expected_model = options
            .expect_model
            .iter()
            .find(|(listener, _)| listener == name)
            .map(|(_, model)| Arc::from(format!(r#""model":"{model}""#).into_bytes()));
        tokio::spawn(accept_loop(
            listener,
            acceptor.clone(),
            answers.clone(),
            counters,
            expected_model,
        ));
    }
    let stats = bind(options.stats).await?;
    tokio::spawn(serve_stats(stats, Arc::new(all), answers));
    println!("bench_provider ready (stats on http://{})", options.stats);
    std::future::pending::<()>().await;
    Ok(())
}

async fn bind(address: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(address)
        .await
        .map_err(|e| format!("bind {address}: {e}"))
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: Arc<SslAcceptor>,
    answers: Arc<Answers>,
    counters: Arc<Counters>,
    expected_model: ExpectedModel,
) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            // Out of file descriptors under a connection storm: back off instead of spinning.
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        };
        let connection = serve_tls(
            tcp,
            acceptor.clone(),
            answers.clone(),
            counters.clone(),
            expected_model.clone(),
        );
        tokio::spawn(connection);
    }
}
