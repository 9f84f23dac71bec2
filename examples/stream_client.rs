//! The LLM benchmark's stream client: holds N streamed chat completions open at once through one
//! path (a proxy over plain HTTP, or the provider itself over TLS) and times every chunk. Cheap
//! on purpose (one thread, one task per stream, no HTTP library: the answer is only scanned), so
//! that thousands of streams measure the proxy, not the client.
//!
//! ```text
//! cargo run --release --example stream_client -- --url http://127.0.0.1:8080/openai/v1/stream \
//!     --streams 1000 --body-file body.json [--header 'Authorization: Bearer x'] \
//!     [--cacert ca.pem] [--ramp-ms 1000] [--timeout-s 60]
//! ```
//!
//! Each stream is its own connection: `POST` of the body, then the answer is read until
//! `data: [DONE]`. `bench_provider` writes `sent_us=<µs since the Unix epoch>` into every event
//! when it sends it; the client notes when the read that brought it returned, on the same clock,
//! so each chunk's delay is what the path added to it (plus the provider's and the client's own
//! scheduling, which the direct path measures alone). Streams start `--ramp-ms / N` apart.
//! Prints one JSON line: streams, ok, failed (with the first error), chunks, and the delay
//! percentiles (p50, p90, p99, p99.9, max, in ms) over every chunk of every stream.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use boring::ssl::{SslConnector, SslMethod};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// What the command line sets.
struct Options {
    host: String,
    port: u16,
    path: String,
    tls: bool,
    streams: usize,
    headers: Vec<String>,
    body: Vec<u8>,
    cacert: Option<String>,
    ramp: Duration,
    timeout: Duration,
}

/// The marker `bench_provider` puts in each event.
const MARKER: &[u8] = b"sent_us=";
/// The end of a stream.
const DONE: &[u8] = b"data: [DONE]";

fn parse_options() -> Result<Options, String> {
    let mut url = None;
    let mut options = Options {
        host: String::new(),
        port: 0,
        path: String::new(),
        tls: false,
        streams: 100,
        headers: Vec::new(),
        body: Vec::new(),
        cacert: None,
        ramp: Duration::from_secs(1),
        timeout: Duration::from_secs(60),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value:?}: {e}");
        match flag.as_str() {
            "--url" => url = Some(value),
            "--streams" => options.streams = value.parse().map_err(|e| bad(&e))?,
            "--header" => options.headers.push(value),
            "--body-file" => options.body = std::fs::read(&value).map_err(|e| bad(&e))?,
            "--cacert" => options.cacert = Some(value),
            "--ramp-ms" => {
                options.ramp = Duration::from_millis(value.parse().map_err(|e| bad(&e))?)
            }
            "--timeout-s" => {
                options.timeout = Duration::from_secs(value.parse().map_err(|e| bad(&e))?)
            }
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    let url = url.ok_or("--url is needed")?;
    let (tls, rest) = if let Some(rest) = url.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("http://") {
        (false, rest)
    } else {
        return Err(format!("--url {url:?}: http:// or https:// expected"));
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let (host, port) = authority
        .rsplit_once(':')
        .ok_or(format!("--url {url:?}: a port is needed"))?;
    options.host = host.to_string();
    options.port = port.parse().map_err(|e| format!("--url {url:?}: {e}"))?;
    options.path = if path.is_empty() { "/" } else { path }.to_string();
    options.tls = tls;
    Ok(options)
}

/// Microseconds since the Unix epoch (the clock `bench_provider` stamps events with).
fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_micros() as u64)
}

/// One request's bytes: head and body.
fn request_bytes(options: &Options) -> Vec<u8> {
    let mut head = format!(
        "POST {} HTTP/1.1\r\nHost: {}:{}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n",
        options.path,
        options.host,
        options.port,
        options.body.len()
    );
    for header in &options.headers {
        head.push_str(header);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(&options.body);
    bytes
}

/// The delays (µs) of one stream's chunks, or why it failed.
async fn one_stream(
    connection: impl AsyncRead + AsyncWrite + Unpin,
    request: &[u8],
) -> Result<Vec<u64>, String> {
    let mut connection = connection;
    connection
        .write_all(request)
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut delays = Vec::with_capacity(128);
    // What was read and not yet looked at: at most an event split across two reads.
    let mut pending: Vec<u8> = Vec::with_capacity(4096);
    let mut buffer = vec![0u8; 16 * 1024];
    let mut status_checked = false;
    loop {
        let n = connection
            .read(&mut buffer)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("closed before data: [DONE]".to_string());
        }
        let received = now_us();
        pending.extend_from_slice(&buffer[..n]);
        if !status_checked {
            if pending.len() < 12 {
                continue;
            }
            if !pending.starts_with(b"HTTP/1.1 200") {
                let line = pending.split(|b| *b == b'\r').next().unwrap_or_default();
                return Err(String::from_utf8_lossy(line).into_owned());
            }
            status_checked = true;
        }
        let mut looked = 0;
        while let Some(at) = find(&pending[looked..], MARKER) {
            let digits_start = looked + at + MARKER.len();
            let digits = pending[digits_start..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count();
            if digits_start + digits == pending.len() {
                break; // the number may go on in the next read
            }
            let sent: u64 = std::str::from_utf8(&pending[digits_start..digits_start + digits])
                .ok()
                .and_then(|text| text.parse().ok())
                .ok_or("a sent_us= without a number")?;
            delays.push(received.saturating_sub(sent));
            looked = digits_start + digits;
        }
        if find(&pending, DONE).is_some() {
            return Ok(delays);
        }
        // Keep what may hold the start of a marker cut by this read.
        let keep_from = looked.max(pending.len().saturating_sub(MARKER.len() + 24));
        pending.drain(..keep_from);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Connects (with TLS when the URL is `https://`) and runs one stream.
async fn stream(
    options: Arc<Options>,
    tls: Option<Arc<SslConnector>>,
    request: Arc<Vec<u8>>,
) -> Result<Vec<u64>, String> {
    let tcp = TcpStream::connect((options.host.as_str(), options.port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let work = async {
        match tls {
            Some(connector) => {
                let config = connector.configure().map_err(|e| format!("TLS: {e}"))?;
                let tls = tokio_boring::connect(config, "localhost", tcp)
                    .await
                    .map_err(|e| format!("TLS: {e}"))?;
                one_stream(tls, &request).await
            }
            None => one_stream(tcp, &request).await,
        }
    };
    tokio::time::timeout(options.timeout, work)
        .await
        .map_err(|_| format!("no data: [DONE] within {:?}", options.timeout))?
}

/// The value at `fraction` of sorted `values`, in milliseconds.
fn percentile_ms(sorted: &[u64], fraction: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() - 1) as f64 * fraction).round() as usize;
    sorted[index] as f64 / 1000.0
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), String> {
    let options = Arc::new(parse_options()?);
    let tls = if options.tls {
        let mut builder =
            SslConnector::builder(SslMethod::tls()).map_err(|e| format!("TLS: {e}"))?;
        if let Some(ca) = &options.cacert {
            builder
                .set_ca_file(ca)
                .map_err(|e| format!("--cacert {ca}: {e}"))?;
        }
        Some(Arc::new(builder.build()))
    } else {
        None
    };
    let request = Arc::new(request_bytes(&options));
    let spacing = options.ramp / options.streams.max(1) as u32;
    let started = std::time::Instant::now();
    let mut tasks = Vec::with_capacity(options.streams);
    for index in 0..options.streams {
        let start_at = tokio::time::Instant::now() + spacing * index as u32;
        let (options, tls, request) = (options.clone(), tls.clone(), request.clone());
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(start_at).await;
            stream(options, tls, request).await
        }));
    }
    let (mut delays, mut ok, mut failed, mut first_error) = (Vec::new(), 0, 0, None);
    for task in tasks {
        match task.await.map_err(|e| e.to_string()).and_then(|r| r) {
            Ok(stream_delays) => {
                ok += 1;
                delays.extend(stream_delays);
            }
            Err(error) => {
                failed += 1;
                first_error.get_or_insert(error);
            }
        }
    }
    delays.sort_unstable();
    let result = serde_json::json!({
        "streams": options.streams,
        "ok": ok,
        "failed": failed,
        "first_error": first_error,
        "chunks": delays.len(),
        "wall_s": started.elapsed().as_secs_f64(),
        "delay_ms": {
            "p50": percentile_ms(&delays, 0.5),
            "p90": percentile_ms(&delays, 0.9),
            "p99": percentile_ms(&delays, 0.99),
            "p999": percentile_ms(&delays, 0.999),
            "max": delays.last().map_or(0.0, |max| *max as f64 / 1000.0),
        },
    });
    println!("{result}");
    Ok(())
}
