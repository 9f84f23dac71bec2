//! The OTLP exporter against a real OTLP/HTTP receiver: the request's span arrives (by SIGTERM
//! at the latest) as a child of the client's `traceparent`, with its attributes and without any
//! key, and the provider sees the sidecar's span as its parent. Off, nothing is exported and
//! the client's trace headers reach the provider as they were sent. Exports are counted, and a
//! collector that is down shows in that count.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

use serde_json::{json, Value as Json};

use crate::support::gateway::{start_openai_only_with_env, CLIENT_SECRETS, KEYS};
use crate::support::http::admin_get;
use crate::support::{free_port, metric, wait_until_async};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN_ID: &str = "00f067aa0ba902b7";
const TRACESTATE: &str = "vendor=opaque";

/// An OTLP/HTTP receiver: every `POST /v1/traces` body, decoded.
#[derive(Clone, Default)]
struct Receiver {
    exports: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
}

impl Receiver {
    async fn start() -> (Receiver, SocketAddr) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let receiver = Receiver::default();
        let serving = receiver.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let receiver = serving.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let receiver = receiver.clone();
                        async move { Ok::<_, Infallible>(receiver.handle(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (receiver, addr)
    }

    async fn handle(&self, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        let protobuf = req
            .headers()
            .get("content-type")
            .is_some_and(|v| v == "application/x-protobuf");
        let path_ok = req.method() == hyper::Method::POST && req.uri().path() == "/v1/traces";
        let body = req.into_body().collect().await.expect("body").to_bytes();
        let status = match ExportTraceServiceRequest::decode(body) {
            Ok(export) if protobuf && path_ok => {
                self.exports.lock().expect("lock").push(export);
                200
            }
            _ => 400,
        };
        let mut response = Response::new(Full::new(Bytes::new()));
        *response.status_mut() = hyper::StatusCode::from_u16(status).expect("status");
        response
            .headers_mut()
            .insert("content-type", "application/x-protobuf".parse().expect("v"));
        response
    }

    fn exports(&self) -> Vec<ExportTraceServiceRequest> {
        self.exports.lock().expect("lock").clone()
    }

    fn spans(&self) -> Vec<Span> {
        self.exports()
            .into_iter()
            .flat_map(|e| e.resource_spans)
            .flat_map(|r| r.scope_spans)
            .flat_map(|s| s.spans)
            .collect()
    }
}

/// A span attribute's value as text (strings as they are, integers in decimal).
fn attribute(span: &Span, key: &str) -> Option<String> {
    let value = span
        .attributes
        .iter()
        .find(|a| a.key == key)?
        .value
        .clone()?;
    match value.value? {
        Value::StringValue(s) => Some(s),
        Value::IntValue(n) => Some(n.to_string()),
        other => Some(format!("{other:?}")),
    }
}

/// A short grace period, so SIGTERM ends the sidecar well within the harness's deadline.
fn quick_stop(config: &mut Json) {
    config["server"]["grace_period"] = json!("100ms");
    config["server"]["graceful_shutdown_timeout"] = json!("1s");
}

/// Sends one request with the client's trace context, a client key and a request id.
async fn send(base_url: &str) {
    let response = reqwest::Client::new()
        .post(format!("{base_url}/openai/chat/completions"))
        .header("traceparent", format!("00-{TRACE_ID}-{CLIENT_SPAN_ID}-01"))
        .header("tracestate", TRACESTATE)
        .header("authorization", format!("Bearer {}", CLIENT_SECRETS[0]))
        .header("x-request-id", "otlp-req-1")
        .body(r#"{"model":"gpt-4o"}"#)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status().as_u16(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_requests_span_joins_the_clients_trace_and_is_flushed_on_sigterm() {
    let _turn = crate::support::lock::shared().await;
    let (receiver, addr) = Receiver::start().await;
    let endpoint = format!("http://{addr}");
    // A minute's batch delay: the span can only arrive through the flush at SIGTERM.
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "60000"),
        ("OTEL_SERVICE_NAME", "sidecar-under-test"),
    ];
    let (mock, mut sidecar, _dir) = start_openai_only_with_env(quick_stop, &env).await;
    send(&sidecar.base_url()).await;
    let status = sidecar.stop();
    assert!(status.success(), "{status:?}\n{}", sidecar.output());

    let spans = receiver.spans();
    let span = spans
        .iter()
        .find(|s| hex::encode(&s.trace_id) == TRACE_ID)
        .unwrap_or_else(|| {
            panic!(
                "no span of the client's trace: {spans:?}\n{}",
                sidecar.output()
            )
        });
    assert_eq!(hex::encode(&span.parent_span_id), CLIENT_SPAN_ID);
    assert_eq!(span.name, "proxy.request");
    assert_eq!(span.kind, SpanKind::Server as i32);
    assert_eq!(attribute(span, "sidecar.route").as_deref(), Some("openai"));
    assert_eq!(
        attribute(span, "http.request.method").as_deref(),
        Some("POST")
    );
    assert_eq!(
        attribute(span, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(
        attribute(span, "sidecar.origin").as_deref(),
        Some("provider")
    );
    assert_eq!(
        attribute(span, "sidecar.request_id").as_deref(),
        Some("otlp-req-1")
    );
    assert!(attribute(span, "server.address").is_some(), "{span:?}");
    let service = receiver.exports()[0].resource_spans[0]
        .resource
        .as_ref()
        .map(|r| format!("{r:?}"))
        .unwrap_or_default();
    assert!(service.contains("sidecar-under-test"), "{service}");

    // Nothing exported names a key: not the client's, not the one injected.
    let exported = format!("{:?}", receiver.exports());
    for secret in CLIENT_SECRETS
        .iter()
        .chain(KEYS.iter().map(|(_, key, _)| key))
    {
        assert!(!exported.contains(secret), "{secret} exported: {exported}");
    }

    // The provider's parent is the sidecar's span, in the same trace.
    let seen = mock.requests().pop().expect("sent");
    let sidecar_span = hex::encode(&span.span_id);
    assert_eq!(
        seen.header("traceparent"),
        Some(format!("00-{TRACE_ID}-{sidecar_span}-01").as_str())
    );
    assert_ne!(sidecar_span, CLIENT_SPAN_ID);
    assert_eq!(seen.header("tracestate"), Some(TRACESTATE));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_nothing_is_exported_and_the_clients_trace_headers_pass_unchanged() {
    let _turn = crate::support::lock::shared().await;
    let (receiver, addr) = Receiver::start().await;
    let endpoint = format!("http://{addr}");
    let disabled = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "10"),
        ("OTEL_SDK_DISABLED", "true"),
    ];
    for env in [&[][..], &disabled[..]] {
        let (mock, mut sidecar, _dir) = start_openai_only_with_env(quick_stop, env).await;
        send(&sidecar.base_url()).await;
        let seen = mock.requests().pop().expect("sent");
        assert_eq!(
            seen.header("traceparent"),
            Some(format!("00-{TRACE_ID}-{CLIENT_SPAN_ID}-01").as_str()),
            "{env:?}"
        );
        assert_eq!(seen.header("tracestate"), Some(TRACESTATE));
        assert!(sidecar.stop().success());
        assert!(receiver.exports().is_empty(), "{env:?}: exported");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_are_counted_and_a_collector_that_is_down_shows_as_failed() {
    let _turn = crate::support::lock::shared().await;
    let (receiver, addr) = Receiver::start().await;
    let up = format!("http://{addr}");
    let down = format!("http://127.0.0.1:{}", free_port());
    for (endpoint, result) in [(up, "exported"), (down, "failed")] {
        let env = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
        ];
        let (_mock, mut sidecar, _dir) = start_openai_only_with_env(quick_stop, &env).await;
        send(&sidecar.base_url()).await;
        let series = format!("sidecar_otlp_spans_total{{result=\"{result}\"}}");
        let counted = wait_until_async(Duration::from_secs(15), || async {
            let page = admin_get(&sidecar, "/metrics").await.1;
            metric(&page, &series).is_some_and(|spans| spans >= 1.0)
        })
        .await;
        let page = admin_get(&sidecar, "/metrics").await.1;
        assert!(counted, "{series} never counted:\n{page}");
        assert!(sidecar.stop().success());
    }
    assert!(!receiver.spans().is_empty());
}
