//! In-process mock LLM provider over TLS: owns the BoringSSL acceptor, the hyper 1 server
//! (HTTP/1.1 keep-alive, plus HTTP/2 when a client negotiates `h2` via ALPN), request
//! recording, connection counters, and the canned JSON / SSE / status responses.
//!
//! # What a request can ask of it
//!
//! A test steers each answer from the request itself, so the same mock serves every case and
//! the sidecar in between forwards the steering like any other header or path:
//!
//! | in the request | the answer |
//! | --- | --- |
//! | `x-mock-status: N` | status `N` (any valid code; the body is still the canned one below) |
//! | a path starting `/status/N/` | status `N`, for tests that control only a URL (a deployment's `api_base` such as `/status/503/v1`); the header wins when both are present |
//! | `x-mock-sse-events: N` | `text/event-stream` (chunked under HTTP/1.1): `N` events `data: {"i":k}` (`k` from 0) then `data: [DONE]`, each in its own frame |
//! | `x-mock-sse-delay-ms: M` | with `x-mock-sse-events`, a pause of `M` ms before every frame after the first (default 0) |
//! | `x-mock-provider-id: NAME: VALUE` | the answer carries the header `NAME: VALUE` (a provider's own request id) |
//! | `x-mock-usage: P C R` | the chat-completion JSON reports `P` prompt tokens (`R` of them cached) and `C` completion tokens (default `1 1 0`) |
//! | a path ending `/oauth2/v2.0/token` (Entra ID's token endpoint) | 200 `{"access_token": "entra-token-N", "expires_in": 3599}` (`N` counts token requests from 1); 401 OAuth2 `invalid_client` when the form's `client_secret` is `wrong-secret` (its `error_description` quotes the secret, as a careless endpoint might) |
//! | none of the above, a path ending `/embeddings` | 200 JSON in OpenAI's embeddings shape |
//! | none of the above | 200 JSON in OpenAI's chat-completion shape (`"id": "mock"`, the content `hello from the mock`) |
//!
//! Both JSON bodies echo the request body's `model` (or `null`) and carry the request's `path`.
//! A status that is not a number or not a valid code is ignored (200). Every request that gets
//! an answer is recorded first ([`MockProvider::requests`], in completion order, the body read
//! whole); with [`MockProvider::set_drop_reused_requests`] on, a request that is not the first
//! on its connection is neither recorded nor answered: the connection is closed.
//!
//! Besides the requests, the mock counts TCP connections, TLS handshakes (with each SNI),
//! connections open now and the most open at once.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use boring::pkey::PKey;
use boring::ssl::{AlpnError, NameType, SslAcceptor, SslMethod};
use boring::x509::X509;
use bytes::Bytes;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

use super::certs::TestCa;

type RespBody = UnsyncBoxBody<Bytes, Infallible>;

/// One request as the mock saw it.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    /// Method, e.g. `"POST"`.
    pub method: String,
    /// Path without the query, e.g. `"/v1/chat/completions"`.
    pub path: String,
    /// Raw query string without `?`, if any.
    pub query: Option<String>,
    /// Headers with lowercase names, in received order (values lossily UTF-8 decoded).
    /// Under HTTP/2 the authority is a pseudo-header and is not listed as `host`.
    pub headers: Vec<(String, String)>,
    /// The full request body.
    pub body: Vec<u8>,
    /// `"HTTP/1.1"` or `"HTTP/2.0"`.
    pub version: String,
}

impl RecordedRequest {
    /// First value of header `name` (case-insensitive), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.header_all(name).into_iter().next()
    }

    /// All values of header `name` (case-insensitive), in received order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The body decoded as UTF-8 (lossily).
    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

#[derive(Default)]
struct State {
    requests: Mutex<Vec<RecordedRequest>>,
    tcp_connections: AtomicUsize,
    tls_handshakes: AtomicUsize,
    /// The SNI of each completed handshake (`None`: the client sent none).
    server_names: Mutex<Vec<Option<String>>>,
    open_connections: AtomicUsize,
    max_open_connections: AtomicUsize,
    /// Shared so a test can sample several providers' totals.
    open_now: Arc<AtomicUsize>,
    drop_reused: AtomicBool,
    dropped_requests: AtomicUsize,
}

/// Decrements the open-connection gauge when a connection task ends (or is aborted).
struct OpenGuard(Arc<State>);

impl OpenGuard {
    fn new(state: Arc<State>) -> OpenGuard {
        state.tcp_connections.fetch_add(1, Ordering::SeqCst);
        state.open_now.fetch_add(1, Ordering::SeqCst);
        let now = state.open_connections.fetch_add(1, Ordering::SeqCst) + 1;
        state.max_open_connections.fetch_max(now, Ordering::SeqCst);
        OpenGuard(state)
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open_connections.fetch_sub(1, Ordering::SeqCst);
        self.0.open_now.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A running mock provider on `127.0.0.1:<random port>`; shuts down (listener and every
/// connection) when dropped.
pub struct MockProvider {
    addr: SocketAddr,
    state: Arc<State>,
    accept_task: JoinHandle<()>,
}

impl MockProvider {
    /// Starts the mock with a certificate for `localhost` and `127.0.0.1` issued by `ca`,
    /// offering ALPN `h2` and `http/1.1`.
    pub async fn start(ca: &TestCa) -> MockProvider {
        Self::start_with_alpn(ca, &["h2", "http/1.1"]).await
    }

    /// Starts the mock offering only ALPN `http/1.1`.
    pub async fn start_http1(ca: &TestCa) -> MockProvider {
        Self::start_with_alpn(ca, &["http/1.1"]).await
    }

    /// Starts the mock offering the given ALPN protocols, in server preference order
    /// (clients that send no ALPN always get HTTP/1.1).
    pub async fn start_with_alpn(ca: &TestCa, alpn: &[&str]) -> MockProvider {
        Self::start_with(ca, alpn, None).await
    }

    /// Starts the mock speaking at most `max` (e.g. TLS 1.2 only), HTTP/1.1.
    pub async fn start_with_max_tls(ca: &TestCa, max: boring::ssl::SslVersion) -> MockProvider {
        Self::start_with(ca, &["http/1.1"], Some(max)).await
    }

    /// Starts the mock with a certificate for `names` only (e.g. a name the sidecar does not
    /// connect by, to check host-name verification), HTTP/1.1.
    pub async fn start_with_cert_names(ca: &TestCa, names: &[&str]) -> MockProvider {
        let (cert_pem, key_pem) = ca.issue(names);
        Self::start_with_cert(&cert_pem, &key_pem).await
    }

    /// Starts the mock with exactly this certificate and key (PEM; e.g. an expired one),
    /// HTTP/1.1.
    pub async fn start_with_cert(cert_pem: &str, key_pem: &str) -> MockProvider {
        let acceptor = acceptor_builder_with(cert_pem, key_pem, &["http/1.1"], None);
        Self::listen(Arc::new(acceptor.build())).await
    }

    /// Starts the mock requiring a client certificate issued by `client_ca` (upstream mTLS).
    pub async fn start_requiring_client_cert(ca: &TestCa, client_ca: &TestCa) -> MockProvider {
        let mut acceptor = acceptor_builder(ca, &["http/1.1"], None);
        let client_root = X509::from_pem(client_ca.ca_cert_pem().as_bytes()).expect("client CA");
        acceptor
            .cert_store_mut()
            .add_cert(client_root)
            .expect("trust the client CA");
        acceptor.set_verify(
            boring::ssl::SslVerifyMode::PEER | boring::ssl::SslVerifyMode::FAIL_IF_NO_PEER_CERT,
        );
        Self::listen(Arc::new(acceptor.build())).await
    }

    async fn start_with(
        ca: &TestCa,
        alpn: &[&str],
        max: Option<boring::ssl::SslVersion>,
    ) -> MockProvider {
        Self::listen(Arc::new(acceptor_builder(ca, alpn, max).build())).await
    }

    async fn listen(acceptor: Arc<SslAcceptor>) -> MockProvider {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind mock provider listener");
        let addr = listener.local_addr().expect("mock provider local_addr");
        let state = Arc::new(State::default());
        let accept_task = tokio::spawn(accept_loop(listener, acceptor, state.clone()));
        MockProvider {
            addr,
            state,
            accept_task,
        }
    }

    /// The listening address (always 127.0.0.1).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://localhost:PORT`.
    pub fn base_url(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    /// `https://127.0.0.1:PORT` (an upstream given by IP).
    pub fn ip_url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The SNI sent in each completed TLS handshake, in order (`None`: no SNI).
    pub fn server_names(&self) -> Vec<Option<String>> {
        self.state.server_names.lock().expect("names lock").clone()
    }

    /// Snapshot of every request recorded so far, in completion order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.requests.lock().expect("requests lock").clone()
    }

    /// Forgets recorded requests (counters are kept).
    pub fn clear(&self) {
        self.state.requests.lock().expect("requests lock").clear();
    }

    /// Total TCP connections accepted.
    pub fn tcp_connections(&self) -> usize {
        self.state.tcp_connections.load(Ordering::SeqCst)
    }

    /// Total TLS handshakes completed.
    pub fn tls_handshakes(&self) -> usize {
        self.state.tls_handshakes.load(Ordering::SeqCst)
    }

    /// TCP connections currently open.
    pub fn open_connections(&self) -> usize {
        self.state.open_connections.load(Ordering::SeqCst)
    }

    /// When on, any request that is not the first on its connection is answered by closing the
    /// connection without a response: what a client sees when the provider closed a pooled
    /// connection just as the request was sent.
    pub fn set_drop_reused_requests(&self, on: bool) {
        self.state.drop_reused.store(on, Ordering::SeqCst);
    }

    /// Requests dropped by [`Self::set_drop_reused_requests`].
    pub fn dropped_requests(&self) -> usize {
        self.state.dropped_requests.load(Ordering::SeqCst)
    }

    /// The live open-connection gauge, to sample several providers together.
    pub fn open_counter(&self) -> Arc<AtomicUsize> {
        self.state.open_now.clone()
    }

    /// Peak number of simultaneously open TCP connections.
    pub fn max_open_connections(&self) -> usize {
        self.state.max_open_connections.load(Ordering::SeqCst)
    }
}

impl Drop for MockProvider {
    fn drop(&mut self) {
        // The accept task owns the JoinSet of connection tasks, so this aborts them all.
        self.accept_task.abort();
    }
}

fn acceptor_builder(
    ca: &TestCa,
    alpn: &[&str],
    max: Option<boring::ssl::SslVersion>,
) -> boring::ssl::SslAcceptorBuilder {
    let (cert_pem, key_pem) = ca.issue(&["localhost", "127.0.0.1"]);
    acceptor_builder_with(&cert_pem, &key_pem, alpn, max)
}

fn acceptor_builder_with(
    cert_pem: &str,
    key_pem: &str,
    alpn: &[&str],
    max: Option<boring::ssl::SslVersion>,
) -> boring::ssl::SslAcceptorBuilder {
    let cert = X509::from_pem(cert_pem.as_bytes()).expect("parse mock cert");
    let key = PKey::private_key_from_pem(key_pem.as_bytes()).expect("parse mock key");
    let mut builder =
        SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).expect("SslAcceptor builder");
    builder.set_certificate(&cert).expect("set mock cert");
    builder.set_private_key(&key).expect("set mock key");
    builder.check_private_key().expect("mock key matches cert");
    if max.is_some() {
        builder.set_max_proto_version(max).expect("max TLS version");
    }
    let prefs: Vec<Vec<u8>> = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    builder.set_alpn_select_callback(move |_, client| {
        prefs
            .iter()
            .find_map(|want| client_protocols(client).find(|offered| offered == want))
            .ok_or(AlpnError::NOACK)
    });
    builder
}

/// Splits a client's ALPN wire-format list into protocol names (borrowing from it).
fn client_protocols(mut wire: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        let (&len, rest) = wire.split_first()?;
        let name = rest.get(..usize::from(len))?;
        wire = &rest[usize::from(len)..];
        Some(name)
    })
}

async fn accept_loop(listener: TcpListener, acceptor: Arc<SslAcceptor>, state: Arc<State>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((tcp, _peer)) = accepted else { continue };
                let guard = OpenGuard::new(state.clone());
                connections.spawn(serve_connection(tcp, acceptor.clone(), guard));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve_connection(
    tcp: tokio::net::TcpStream,
    acceptor: Arc<SslAcceptor>,
    guard: OpenGuard,
) {
    let state = guard.0.clone();
    let Ok(tls) = tokio_boring::accept(&acceptor, tcp).await else {
        return;
    };
    let name = tls
        .ssl()
        .servername(NameType::HOST_NAME)
        .map(str::to_string);
    state.server_names.lock().expect("names lock").push(name);
    state.tls_handshakes.fetch_add(1, Ordering::SeqCst);
    let is_h2 = tls.ssl().selected_alpn_protocol() == Some(b"h2".as_slice());
    let io = TokioIo::new(tls);
    let served_on_connection = Arc::new(AtomicUsize::new(0));
    let svc = hyper::service::service_fn(move |req| {
        handle(
            state.clone(),
            served_on_connection.fetch_add(1, Ordering::SeqCst),
            req,
        )
    });
    // Connection errors (client resets, aborted streams) are expected in tests; ignore them.
    if is_h2 {
        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(io, svc)
            .await;
    } else {
        let _ = hyper::server::conn::http1::Builder::new()
            .keep_alive(true)
            .serve_connection(io, svc)
            .await;
    }
    drop(guard);
}

/// Returned to hyper to make it close the connection without answering.
#[derive(Debug)]
struct DroppedOnPurpose;

impl std::fmt::Display for DroppedOnPurpose {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped on purpose")
    }
}

impl std::error::Error for DroppedOnPurpose {}

async fn handle(
    state: Arc<State>,
    earlier_on_connection: usize,
    req: Request<Incoming>,
) -> Result<Response<RespBody>, Box<dyn std::error::Error + Send + Sync>> {
    if earlier_on_connection > 0 && state.drop_reused.load(Ordering::SeqCst) {
        state.dropped_requests.fetch_add(1, Ordering::SeqCst);
        return Err(Box::new(DroppedOnPurpose));
    }
    let (parts, body) = req.into_parts();
    let body = body.collect().await?.to_bytes();
    let recorded = RecordedRequest {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(str::to_string),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| {
                let value = String::from_utf8_lossy(v.as_bytes()).into_owned();
                (n.as_str().to_string(), value)
            })
            .collect(),
        body: body.to_vec(),
        version: format!("{:?}", parts.version),
    };
    // `x-mock-status: N`, or a path starting `/status/N/` (a deployment's api_base can say it).
    let path_status = recorded
        .path
        .strip_prefix("/status/")
        .and_then(|rest| rest.split('/').next());
    let status = recorded
        .header("x-mock-status")
        .or(path_status)
        .and_then(|s| s.trim().parse::<u16>().ok())
        .and_then(|code| StatusCode::from_u16(code).ok())
        .unwrap_or(StatusCode::OK);
    let sse_events = recorded
        .header("x-mock-sse-events")
        .and_then(|s| s.trim().parse::<usize>().ok());
    let delay = recorded
        .header("x-mock-sse-delay-ms")
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(Duration::from_millis)
        .unwrap_or(Duration::ZERO);
    let path = recorded.path.clone();
    let body_bytes = recorded.body.clone();
    let provider_id = recorded.header("x-mock-provider-id").map(str::to_string);
    let usage: Vec<u64> = recorded
        .header("x-mock-usage")
        .map(|u| {
            u.split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let (prompt, completion, cached) = match usage.as_slice() {
        [p, c, r] => (*p, *c, *r),
        _ => (1, 1, 0),
    };
    let token_form = path
        .ends_with("/oauth2/v2.0/token")
        .then(|| String::from_utf8_lossy(&recorded.body).into_owned());
    let token_requests = {
        let mut requests = state.requests.lock().expect("requests lock");
        requests.push(recorded);
        requests
            .iter()
            .filter(|r| r.path.ends_with("/oauth2/v2.0/token"))
            .count()
    };
    if let Some(form) = token_form {
        return Ok(entra_token_answer(&form, token_requests));
    }

    let mut builder = Response::builder().status(status);
    // `x-mock-provider-id: NAME: VALUE` answers with that header (a provider's own request id).
    if let Some((name, value)) = provider_id.as_deref().and_then(|h| h.split_once(": ")) {
        builder = builder.header(name, value);
    }
    let response = match sse_events {
        Some(n) => builder
            .header("content-type", "text/event-stream")
            .header("cache-control", "no-cache")
            .body(sse_body(n, delay)),
        None => {
            // OpenAI's shapes, for SDK clients: the `model` the request named is echoed back.
            let model = serde_json::from_slice::<serde_json::Value>(&body_bytes)
                .ok()
                .and_then(|b| b.get("model").cloned())
                .unwrap_or(serde_json::Value::Null);
            let json = if path.ends_with("/embeddings") {
                serde_json::json!({"object": "list", "model": model, "path": path,
                    "data": [{"object": "embedding", "index": 0, "embedding": [0.25, -0.5]}],
                    "usage": {"prompt_tokens": 1, "total_tokens": 1}})
            } else {
                serde_json::json!({"id": "mock", "object": "chat.completion", "path": path,
                    "model": model, "created": 0,
                    "choices": [{"index": 0, "finish_reason": "stop",
                        "message": {"role": "assistant", "content": "hello from the mock"}}],
                    "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                        "total_tokens": prompt + completion,
                        "prompt_tokens_details": {"cached_tokens": cached}}})
            };
            builder
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(json.to_string())).boxed_unsync())
        }
    };
    Ok(response.expect("build mock response"))
}

/// Entra ID's answer to a client-credentials grant (see the module docs).
fn entra_token_answer(form: &str, n: usize) -> Response<RespBody> {
    let (status, json) = if form.contains("client_secret=wrong-secret") {
        let description = "AADSTS7000215: Invalid client secret provided: wrong-secret";
        let body =
            serde_json::json!({ "error": "invalid_client", "error_description": description });
        (StatusCode::UNAUTHORIZED, body)
    } else {
        let token = format!("entra-token-{n}");
        let body = serde_json::json!({ "token_type": "Bearer", "expires_in": 3599, "access_token": token });
        (StatusCode::OK, body)
    };
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(json.to_string())).boxed_unsync())
        .expect("build the token answer")
}

/// `n` events `data: {"i":k}` then `data: [DONE]`, one frame each, `delay` before every
/// frame after the first. No length is known up front, so HTTP/1.1 uses chunked encoding.
fn sse_body(n: usize, delay: Duration) -> RespBody {
    let frames = futures_util::stream::unfold(0usize, move |k| async move {
        if k > n {
            return None;
        }
        if k > 0 && !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let text = if k < n {
            format!("data: {{\"i\":{k}}}\n\n")
        } else {
            "data: [DONE]\n\n".to_string()
        };
        Some((Ok::<_, Infallible>(Frame::data(Bytes::from(text))), k + 1))
    });
    StreamBody::new(frames).boxed_unsync()
}
