//! The admin listener, separate from the proxy listeners (default `127.0.0.1:9901`):
//!
//! - `GET /healthz`: 200 while the process serves HTTP at all (liveness);
//! - `GET /readyz`: 200 when every listener is bound and every credential or model a route
//!   references is loaded; otherwise 503 with a JSON list of what is missing. A snapshot older
//!   than the stale limit (database unreachable) is reported but does not fail readiness: the
//!   last good copy is meant to keep serving, and failing every replica at once when Postgres
//!   blips would turn a database outage into a traffic outage;
//! - `GET /metrics`: Prometheus text, served by `pingora-prometheus` ([`crate::metrics`]);
//! - `GET /version`; `GET` and `PUT /log-level`;
//! - `GET /config`: the routes, access rules, credentials and models in force, redacted
//!   ([`config_view`]).
//!
//! `PUT /log-level` and `GET /config` answer loopback clients only (as Linkerd's admin does):
//! the admin port may listen on every address for the kubelet and Prometheus, which need
//! neither. In Kubernetes, reach them with `kubectl port-forward`.

pub mod config_view;
pub mod listeners;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::{Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use pingora_prometheus::PrometheusHttpApp;
use serde_json::{json, Value};

use crate::credentials::{CredentialCache, Snapshot};
use crate::live_config::SharedLiveConfig;
use crate::router::{bind, Router};

/// What the admin endpoints look at.
pub struct AdminApp {
    /// The routes in force (readiness checks each one).
    pub live_config: SharedLiveConfig,
    /// The credential snapshot.
    pub cache: Arc<CredentialCache>,
    /// The model router (a `model:` route's readiness is its next deployment's).
    pub router: Arc<Router>,
    /// The proxy listeners that must be bound.
    pub listeners: Vec<SocketAddr>,
    /// With a database: a snapshot not confirmed for this long is reported stale.
    pub stale_after: Option<Duration>,
}

impl AdminApp {
    /// The readiness verdict and its JSON report.
    pub fn readiness(&self) -> (bool, Value) {
        let snapshot = self.cache.snapshot();
        let live_config = self.live_config.load();
        // Binding a model route advances its round-robin by one; harmless at probe rates.
        let missing: Vec<Value> = live_config
            .routes
            .iter()
            .filter_map(|route| {
                let reason = bind(route, &snapshot, &self.router).err()?.to_string();
                Some(json!({ "route": route.name, "reason": reason }))
            })
            .collect();
        let unbound: Vec<String> = listeners::unbound(&self.listeners)
            .iter()
            .map(|a| a.to_string())
            .collect();
        let age = self.cache.age();
        let stale = self.stale_after.filter(|limit| age > *limit).map(|limit| {
            json!({
                "snapshot_age_seconds": age.as_secs(),
                "limit_seconds": limit.as_secs(),
                "note": "credential sources unreadable; serving the last good snapshot",
            })
        });
        let ready = missing.is_empty() && unbound.is_empty();
        let report = json!({
            "ready": ready,
            "missing": missing,
            "unbound_listeners": unbound,
            "stale": stale,
            // Shown, not counted against readiness: a token endpoint's outage affects only the
            // routes that use it, and each such request is answered 503 naming the cause.
            "minted_credentials": crate::minted::report(),
            "aws_credentials": aws_credentials(&snapshot),
        });
        (ready, report)
    }
}

/// Each credential and deployment that signs with AWS keys: its kind and region (assumed roles'
/// state and expiry are in `minted_credentials`), never a key.
fn aws_credentials(snapshot: &Snapshot) -> Vec<Value> {
    let credentials = snapshot.credentials.values().map(|c| c.as_ref());
    let deployments = snapshot
        .models
        .values()
        .flat_map(|d| d.all().iter().map(|d| d.credential.as_ref()));
    let mut all: Vec<Value> = credentials
        .chain(deployments)
        .filter_map(|c| {
            let mut report = c.aws.as_ref()?.report();
            report["name"] = Value::from(c.name.as_str());
            Some(report)
        })
        .collect();
    all.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    all
}

/// `PUT /log-level` with a level (`off`, `error`, `warn`, `info`, `debug`, `trace`) in the body:
/// changes the level in force until the next restart.
async fn put_log_level(session: &mut ServerSession) -> Response<Vec<u8>> {
    if let Some(refusal) = loopback_only(session, "the log level can only be changed") {
        return refusal;
    }
    let mut text = Vec::new();
    while let Ok(Some(chunk)) = session.read_request_body().await {
        text.extend_from_slice(&chunk);
        if text.len() > 64 {
            break;
        }
    }
    let wanted = String::from_utf8_lossy(&text).trim().to_string();
    match wanted.parse::<log::LevelFilter>() {
        Ok(level) if text.len() <= 64 => {
            crate::logging::set_level(level);
            tracing::warn!("admin: log level set to {level} (until the next restart)");
            json_response(
                StatusCode::OK,
                &json!({ "level": level.to_string().to_lowercase() }),
            )
        }
        _ => {
            let body = json!({ "error": "expected one of off, error, warn, info, debug, trace" });
            json_response(StatusCode::BAD_REQUEST, &body)
        }
    }
}

/// 403 unless the client is on loopback; `what` says what was refused.
fn loopback_only(session: &ServerSession, what: &str) -> Option<Response<Vec<u8>>> {
    let from_loopback = session
        .client_addr()
        .and_then(|a| a.as_inet())
        .is_some_and(|a| is_loopback(a.ip()));
    let body = json!({ "error": format!("{what} from loopback only (use kubectl port-forward)") });
    (!from_loopback).then(|| json_response(StatusCode::FORBIDDEN, &body))
}

/// Loopback, IPv4-mapped IPv6 included.
fn is_loopback(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or(v6.is_loopback(), |v4| v4.is_loopback()),
        v4 => v4.is_loopback(),
    }
}

#[allow(
    clippy::expect_used,
    reason = "the status is given and the only header is a constant"
)]
fn json_response(status: StatusCode, body: &Value) -> Response<Vec<u8>> {
    let body = body.to_string().into_bytes();
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::CONTENT_LENGTH, body.len())
        .body(body)
        .expect("static response parts are valid")
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        if req.method == Method::PUT && req.uri.path() == "/log-level" {
            return put_log_level(session).await;
        }
        if req.method != Method::GET && req.method != Method::HEAD {
            let body = json!({ "error": "the admin endpoints answer GET only" });
            return json_response(StatusCode::METHOD_NOT_ALLOWED, &body);
        }
        match req.uri.path() {
            "/healthz" => json_response(StatusCode::OK, &json!({ "status": "alive" })),
            "/readyz" => {
                let (ready, report) = self.readiness();
                let status = if ready {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                json_response(status, &report)
            }
            "/metrics" => PrometheusHttpApp.response(session).await,
            "/log-level" => json_response(
                StatusCode::OK,
                &json!({ "level": crate::logging::level().to_string().to_lowercase() }),
            ),
            "/config" => loopback_only(session, "the config can be read").unwrap_or_else(|| {
                let report = config_view::config_report(
                    &self.live_config.load(),
                    &self.cache.snapshot(),
                    self.cache.age(),
                );
                json_response(StatusCode::OK, &report)
            }),
            "/version" => json_response(
                StatusCode::OK,
                &json!({ "name": env!("CARGO_PKG_NAME"), "version": env!("CARGO_PKG_VERSION") }),
            ),
            other => json_response(
                StatusCode::NOT_FOUND,
                &json!({ "error": format!("no admin endpoint {other:?}; try /healthz, /readyz, /metrics, /version, /log-level, /config") }),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_counts_as_loopback() {
        for (ip, expected) in [
            ("127.0.0.1", true),
            ("127.1.2.3", true),
            ("::1", true),
            ("::ffff:127.0.0.1", true),
            ("10.0.0.1", false),
            ("::ffff:10.0.0.1", false),
            ("fd00::1", false),
        ] {
            assert_eq!(is_loopback(ip.parse().expect("ip")), expected, "{ip}");
        }
    }
}
