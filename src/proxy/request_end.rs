//! The end of every request: one structured access-log record (target `access`, written by
//! [`crate::logging::request_record`]), the request metrics, and the end of its trace span when the
//! OTLP exporter is on. Fields name the route, the upstream host, the client address and a
//! LiteLLM key's alias (or the start of its digest); never a query string (it may hold a
//! client's key), a header value or a credential.

use std::time::Duration;

use pingora::protocols::l4::socket::SocketAddr;
use pingora::proxy::Session;
use pingora::Error;

use super::RequestCtx;
use crate::logging::request_record::{self, Value::*};
use crate::metrics::{self, Origin};

/// Writes the access line, records the request's metrics and ends its span.
pub fn finish(session: &Session, e: Option<&Error>, ctx: &mut RequestCtx) {
    let span = ctx.span.take();
    let ctx = &*ctx;
    let status = session.response_written().map_or(0, |r| r.status.as_u16());
    let req = session.req_header();
    let route = super::route_name(ctx);
    let total = ctx.started.elapsed();
    // The provider's answer reached the client unless the sidecar answered itself.
    let origin = if ctx.upstream_ttfb.is_some() && ctx.reply.is_none() {
        Origin::Provider
    } else {
        Origin::Sidecar
    };
    let route_metrics = ctx.route.as_ref().map(|r| &r.metrics);
    metrics::record_request(route_metrics, status, origin, ctx.upstream_ttfb, total);

    let client = client_text(session.client_addr());
    let upstream = ctx.binding().map_or("-", |b| b.upstream.host_header());
    let reused = ctx
        .reused_connection
        .map_or("-", |r| if r { "true" } else { "false" });
    let ttfb_ms = ctx.upstream_ttfb.map_or(-1, millis);
    if let Some(span) = span {
        span.finish(&crate::otel::Outcome {
            route,
            method: req.method.as_str(),
            status,
            origin: origin.as_str(),
            request_id: ctx.request_id.as_str(),
            upstream,
            model: model(ctx),
            error: e.map(|e| e.etype.as_str()),
        });
    }
    let error = e.map_or("-", |e| e.etype.as_str());
    let downstream = session.as_downstream();
    let key = ctx.litellm_key.as_ref().map_or("-", |k| k.label.as_str());
    let upstream_request_id = ctx.upstream_request_id.as_ref();
    request_record::write(&[
        ("route", Str(route)),
        ("method", Str(req.method.as_str())),
        ("path", Str(req.uri.path())),
        ("status", Int(status.into())),
        ("upstream", Str(upstream)),
        ("reused", Str(reused)),
        ("retried", Bool(ctx.retried)),
        ("ttfb_ms", Int(ttfb_ms)),
        ("duration_ms", Int(millis(total))),
        ("bytes_in", Int(count(downstream.body_bytes_read()))),
        ("bytes_out", Int(count(downstream.body_bytes_sent()))),
        ("client", Str(client.as_str())),
        ("key", Str(key)),
        ("request_id", Str(ctx.request_id.as_str())),
        (
            "upstream_request_id",
            Str(upstream_request_id
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")),
        ),
        ("error", Str(error)),
    ]);
}

/// A byte count as a log field.
fn count(bytes: usize) -> i64 {
    i64::try_from(bytes).unwrap_or(i64::MAX)
}

/// The model alias: the one the client asked for on a `dispatch: model` route, else the
/// route's own.
fn model(ctx: &RequestCtx) -> Option<&str> {
    if let Some(request) = ctx.model_request() {
        return Some(&request.alias);
    }
    match &ctx.route.as_ref()?.backend {
        crate::config::Backend::Model(alias) => Some(alias),
        _ => None,
    }
}

/// The client's `ip:port` (`-` when unknown). IPv4 is written with `itoa`: std's `Display`
/// goes through `fmt` padding, about 2,000 instructions for every request's line.
fn client_text(addr: Option<&SocketAddr>) -> String {
    match addr.and_then(|a| a.as_inet()) {
        Some(std::net::SocketAddr::V4(v4)) => {
            let mut text = String::with_capacity(21);
            let mut digits = itoa::Buffer::new();
            for (i, octet) in v4.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    text.push('.');
                }
                text.push_str(digits.format(octet));
            }
            text.push(':');
            text.push_str(digits.format(v4.port()));
            text
        }
        _ => addr.map_or_else(|| "-".to_string(), |a| a.to_string()),
    }
}

/// Whole milliseconds, for log fields (`-1` marks "none" for the optional ones).
fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_is_written_as_display_writes_it() {
        for text in [
            "127.0.0.1:80",
            "10.200.3.45:65535",
            "0.0.0.0:0",
            "[::1]:8443",
        ] {
            let addr = SocketAddr::Inet(text.parse().expect("address"));
            assert_eq!(client_text(Some(&addr)), addr.to_string());
        }
        assert_eq!(client_text(None), "-");
    }
}
