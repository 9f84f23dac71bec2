//! The optional OTLP trace exporter: one span per proxied request, exported over OTLP/HTTP
//! (protobuf) to a collector. Off unless `OTEL_EXPORTER_OTLP_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set; `OTEL_SDK_DISABLED=true` or
//! `OTEL_TRACES_EXPORTER=none` keep it off. The other standard variables are read by the
//! OpenTelemetry SDK as it documents them (`OTEL_EXPORTER_OTLP_HEADERS`, `…_TIMEOUT`,
//! `OTEL_BSP_*`, `OTEL_TRACES_SAMPLER`, `OTEL_RESOURCE_ATTRIBUTES`); `OTEL_SERVICE_NAME` defaults
//! to `sidecar`.
//!
//! The span (`proxy.request`, kind server) is a child of the client's W3C `traceparent` /
//! `tracestate`, and the request sent to the provider carries a `traceparent` naming it, so the
//! provider's spans join under it. With the exporter off, no span exists and the client's headers
//! pass through untouched.
//!
//! The span is an OpenTelemetry span kept in the request's state, not a `tracing` span bridged
//! by tracing-opentelemetry: a request's phases are separate calls that a `tracing` span would
//! have to be entered and left around, the bridge would export the events logged inside it
//! (messages that are reviewed for the log, not for a third party), and with the exporter off
//! nothing at all is done per request (one `OnceLock` read).
//!
//! Spans are exported by the SDK's batch processor on a thread of its own, never on Pingora's
//! request threads; [`shutdown`] exports what is left when the process stops.
//!
//! A span's attributes name the route, method, status, origin, request id, upstream host and
//! model alias; never a header value, a key or a credential.

use std::sync::{LazyLock, OnceLock};
use std::time::Duration;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt, Tracer as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider, Span, SpanData, SpanExporter};
use opentelemetry_sdk::Resource;
use pingora::http::RequestHeader;
use tracing::{info, warn};

static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();
static TRACER: OnceLock<SdkTracer> = OnceLock::new();
static PROPAGATOR: LazyLock<TraceContextPropagator> = LazyLock::new(TraceContextPropagator::new);

/// The service name when neither `OTEL_SERVICE_NAME` nor `OTEL_RESOURCE_ATTRIBUTES` names one.
const SERVICE_NAME: &str = "sidecar";

/// Why the exporter stays off, or `Ok` when it starts.
fn wanted(var: impl Fn(&str) -> Option<String>) -> Result<(), &'static str> {
    let set = |name: &str| var(name).filter(|v| !v.trim().is_empty());
    if set("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
        return Err("OTEL_SDK_DISABLED is true");
    }
    if set("OTEL_TRACES_EXPORTER").is_some_and(|v| !v.trim().eq_ignore_ascii_case("otlp")) {
        return Err("OTEL_TRACES_EXPORTER is not otlp");
    }
    let endpoint = set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .or_else(|| set("OTEL_EXPORTER_OTLP_ENDPOINT"))
        .ok_or("no OTEL_EXPORTER_OTLP_ENDPOINT")?;
    // The exporter's HTTP client has no TLS stack of its own (the proxy's is BoringSSL): a
    // collector is reached over plain HTTP, as a node-local agent or a pod's own is.
    if !endpoint.trim().starts_with("http://") {
        return Err("the OTLP endpoint is not an http:// URL (https is not supported)");
    }
    let protocol =
        set("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").or_else(|| set("OTEL_EXPORTER_OTLP_PROTOCOL"));
    if protocol.is_some_and(|p| p.trim() != "http/protobuf") {
        return Err("OTEL_EXPORTER_OTLP_PROTOCOL is not http/protobuf");
    }
    Ok(())
}

/// Starts the exporter when the environment asks for it (see the module docs); logs why not
/// when an endpoint is set but cannot be used. Not with `-d`: the fork would lose the export
/// thread.
pub fn init(daemon: bool) {
    let var = |name: &str| std::env::var(name).ok();
    match wanted(var) {
        Ok(()) if daemon => warn!("OTLP trace export is not available with -d; not started"),
        Ok(()) => start(),
        Err(why)
            if var("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
                || var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some() =>
        {
            warn!("OTLP trace export not started: {why}");
        }
        Err(_) => {}
    }
}

fn start() {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build();
    let exporter = match exporter {
        Ok(exporter) => exporter,
        Err(error) => return warn!("OTLP trace export not started: {error}"),
    };
    let mut resource = Resource::builder().build();
    let unnamed = resource
        .get(&opentelemetry::Key::new("service.name"))
        .is_none_or(|name| name.as_str().starts_with("unknown_service"));
    if unnamed {
        resource = Resource::builder().with_service_name(SERVICE_NAME).build();
    }
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(CountingExporter(exporter))
        .with_resource(resource)
        .build();
    let tracer = opentelemetry::trace::TracerProvider::tracer(&provider, "sidecar");
    if PROVIDER.set(provider).is_ok() && TRACER.set(tracer).is_ok() {
        info!("OTLP trace export on: one span per proxied request");
    }
}

/// The OTLP exporter, counting the spans it sent and those it could not
/// (`sidecar_otlp_spans_total`): with the SDK's own error logs off, that counter is how a
/// collector that is down shows.
#[derive(Debug)]
struct CountingExporter(opentelemetry_otlp::SpanExporter);

impl SpanExporter for CountingExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len() as u64;
        let result = self.0.export(batch).await;
        let outcome = if result.is_ok() { "exported" } else { "failed" };
        crate::metrics::OTLP_SPANS
            .with_label_values(&[outcome])
            .inc_by(spans);
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.0.set_resource(resource);
    }
}

/// Exports the spans not yet sent and stops the export thread: call before the process exits.
pub fn shutdown() {
    if let Some(provider) = PROVIDER.get() {
        if let Err(error) = provider.shutdown() {
            warn!("OTLP trace export: {error}");
        }
    }
}

/// Reads a request's trace context headers.
struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// Writes trace context headers on the request to the provider (the first error is kept).
struct HeaderInjector<'a> {
    request: &'a mut RequestHeader,
    failed: Option<Box<pingora::Error>>,
}

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        // An empty `tracestate` is no header at all.
        if value.is_empty() {
            return;
        }
        if let Err(error) = self.request.insert_header(key.to_string(), value) {
            self.failed.get_or_insert(error);
        }
    }
}

/// A proxied request's span, while the exporter is on. Boxed: an SDK span is ~280 bytes, and the
/// request state that holds it is moved with Pingora's request future on every request, exporter
/// on or off.
pub struct RequestSpan(Box<Span>);

/// What a finished request's span records.
pub struct Outcome<'a> {
    /// The route's name (`-` before one matched).
    pub route: &'a str,
    /// The request's method.
    pub method: &'a str,
    /// The status sent to the client (0 when none was).
    pub status: u16,
    /// `sidecar` when the sidecar answered, `provider` when the provider's answer passed.
    pub origin: &'static str,
    /// The request's id (see `proxy::request_id`).
    pub request_id: &'a str,
    /// The upstream host (`-` when none was chosen).
    pub upstream: &'a str,
    /// The model alias, when the route or the request names one.
    pub model: Option<&'a str>,
    /// Pingora's name for the error the request ended with.
    pub error: Option<&'static str>,
}

impl RequestSpan {
    /// The request's span, a child of the client's trace context; `None` with the exporter off.
    pub fn start(request: &RequestHeader) -> Option<RequestSpan> {
        let tracer = TRACER.get()?;
        let parent = PROPAGATOR.extract(&HeaderExtractor(&request.headers));
        let span = tracer
            .span_builder("proxy.request")
            .with_kind(SpanKind::Server)
            .start_with_context(tracer, &parent);
        Some(RequestSpan(Box::new(span)))
    }

    /// Names this span as the parent on the request to the provider (`traceparent`, and
    /// `tracestate` as the client sent it).
    pub fn inject(&self, upstream: &mut RequestHeader) -> pingora::Result<()> {
        let context = Context::new().with_remote_span_context(self.0.span_context().clone());
        let mut injector = HeaderInjector {
            request: upstream,
            failed: None,
        };
        PROPAGATOR.inject_context(&context, &mut injector);
        injector.failed.map_or(Ok(()), Err)
    }

    /// Records the request's outcome and ends the span (the batch processor exports it).
    pub fn finish(mut self, outcome: &Outcome<'_>) {
        let span = &mut self.0;
        span.set_attribute(KeyValue::new("sidecar.route", outcome.route.to_string()));
        span.set_attribute(KeyValue::new(
            "http.request.method",
            outcome.method.to_string(),
        ));
        span.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(outcome.status),
        ));
        span.set_attribute(KeyValue::new("sidecar.origin", outcome.origin));
        span.set_attribute(KeyValue::new(
            "sidecar.request_id",
            outcome.request_id.to_string(),
        ));
        if outcome.upstream != "-" {
            span.set_attribute(KeyValue::new(
                "server.address",
                outcome.upstream.to_string(),
            ));
        }
        if let Some(model) = outcome.model {
            span.set_attribute(KeyValue::new("gen_ai.request.model", model.to_string()));
        }
        if let Some(error) = outcome.error {
            span.set_attribute(KeyValue::new("error.type", error));
        }
        if outcome.status >= 500 || outcome.status == 0 {
            span.set_status(Status::error(""));
        }
        span.end();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn on_only_with_an_endpoint_and_not_disabled() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318");
        assert!(wanted(env(&[])).is_err());
        assert!(wanted(env(&[endpoint])).is_ok());
        assert!(wanted(env(&[(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://c:4318/v1/traces"
        )]))
        .is_ok());
        assert!(wanted(env(&[endpoint, ("OTEL_SDK_DISABLED", "TRUE")])).is_err());
        assert!(wanted(env(&[endpoint, ("OTEL_SDK_DISABLED", "false")])).is_ok());
        assert!(wanted(env(&[endpoint, ("OTEL_TRACES_EXPORTER", "none")])).is_err());
        assert!(wanted(env(&[endpoint, ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")])).is_err());
        assert!(wanted(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c:4318")])).is_err());
    }

    #[test]
    fn with_the_exporter_off_there_is_no_span() {
        let mut request = RequestHeader::build("POST", b"/x", None).expect("head");
        request
            .insert_header(
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            )
            .expect("header");
        assert!(RequestSpan::start(&request).is_none());
    }
}
