//! The end of every request: one structured access-log record (target `access`) and the
//! request metrics. Fields name the route, the upstream host and the client address; never a
//! query string (it may hold a client's key), a header value or a credential.

use std::time::Duration;

use log::info;
use pingora::proxy::Session;
use pingora::Error;

use super::RequestCtx;
use crate::logging::ACCESS_TARGET;
use crate::metrics;

/// Writes the access line and records the request's metrics.
pub fn finish(session: &Session, e: Option<&Error>, ctx: &RequestCtx) {
    let status = session.response_written().map_or(0, |r| r.status.as_u16());
    let req = session.req_header();
    let route = super::route_name(ctx);
    let total = ctx.started.elapsed();
    metrics::record_request(route, status, ctx.upstream_ttfb, total);

    let client = session
        .client_addr()
        .map_or_else(|| "-".to_string(), |a| a.to_string());
    let upstream = ctx
        .binding
        .as_ref()
        .map_or_else(|| "-".to_string(), |b| b.upstream.host_header());
    let reused = ctx
        .reused_connection
        .map_or("-", |r| if r { "true" } else { "false" });
    let ttfb_ms = ctx.upstream_ttfb.map_or(-1, millis);
    let error = e.map_or("-", |e| e.etype.as_str());
    let downstream = session.as_downstream();
    info!(
        target: ACCESS_TARGET,
        route = route,
        method = req.method.as_str(),
        path = req.uri.path(),
        status = status,
        upstream = upstream.as_str(),
        reused = reused,
        retried = ctx.retried,
        ttfb_ms = ttfb_ms,
        duration_ms = millis(total),
        bytes_in = downstream.body_bytes_read() as u64,
        bytes_out = downstream.body_bytes_sent() as u64,
        client = client.as_str(),
        error = error;
        "request"
    );
}

/// Whole milliseconds, for log fields (`-1` marks "none" for the optional ones).
fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
