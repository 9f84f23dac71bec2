//! The typed, validated configuration: what the rest of the program reads.
//!
//! Built only by [`super::parse`], so every value here has passed validation. Defaults are the
//! `DEFAULT_*` constants beside the fields they fill. This file holds the whole [`Config`], the
//! process-level settings (server, admin, log), the client limits and the router's; the network
//! sides, the credential sources and the routes have a file each, re-exported here.

mod credentials;
mod network;
mod routes;
mod spend;

use std::time::Duration;

pub use credentials::*;
pub use network::*;
pub use routes::*;
pub use spend::*;

/// Worker threads for the proxy service: one, the best CPU per request and tail latency
/// measured for the pod form (a core or less; README "Threads"). `auto` is for the node form.
pub const DEFAULT_THREADS: u64 = 1;
/// How long SIGTERM waits before stopping new connections (Kubernetes gives 30 s in total).
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(10);
/// How long in-flight requests get to finish after the grace period.
pub const DEFAULT_GRACEFUL_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// Pingora's pid file.
pub const DEFAULT_PID_FILE: &str = "/tmp/sidecar.pid";
/// Socket used to hand listeners to a new process during a zero-downtime upgrade.
pub const DEFAULT_UPGRADE_SOCK: &str = "/tmp/sidecar_upgrade.sock";
/// Log level when neither `log.level` nor `RUST_LOG` is set.
pub const DEFAULT_LOG_LEVEL: log::LevelFilter = log::LevelFilter::Info;
/// Largest request head (request line plus headers) accepted, in bytes.
pub const DEFAULT_MAX_REQUEST_HEADER_BYTES: u64 = 32 * 1024;
/// Most request headers accepted.
pub const DEFAULT_MAX_REQUEST_HEADERS: u64 = 100;
/// Largest request body accepted, in bytes (prompts with inline images run to megabytes).
pub const DEFAULT_MAX_REQUEST_BODY_BYTES: u64 = 32 * 1024 * 1024;
/// Default `limits.max_client_connections`: ample for one application (the pod form), and
/// within the pod manifest's memory limit even if every one is held open (see README).
pub const DEFAULT_MAX_CLIENT_CONNECTIONS: u64 = 1024;
/// Default `limits.tls_handshake_timeout` (Pingora's own is 60 s; a real client needs a few
/// round trips).
pub const DEFAULT_CLIENT_TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default `limits.request_head_timeout`.
pub const DEFAULT_REQUEST_HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Default `limits.client_keepalive_timeout`.
pub const DEFAULT_CLIENT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(60);
/// The admin listener (`/healthz`, `/readyz`, `/metrics`): loopback only unless configured.
pub const DEFAULT_ADMIN_ADDRESS: &str = "127.0.0.1:9901";

/// The whole configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Pingora server settings.
    pub server: ServerSettings,
    /// Where clients connect.
    pub listeners: Vec<Listener>,
    /// How the sidecar talks to providers.
    pub upstream: UpstreamSettings,
    /// Where credentials come from.
    pub credentials: CredentialSettings,
    /// Request routing, first match by specificity.
    pub routes: Vec<RouteConfig>,
    /// Who may use the sidecar.
    pub access: AccessSettings,
    /// Request size limits.
    pub limits: Limits,
    /// The admin listener.
    pub admin: AdminSettings,
    /// Serving the database rows to other sidecars, when configured.
    pub fanout: Option<FanoutSettings>,
    /// Logging.
    pub log: LogSettings,
    /// How `dispatch: model` routes cool failing deployments down.
    pub router: RouterSettings,
    /// What is written back to LiteLLM's spend tables.
    pub spend: SpendSettings,
    /// SHA-256 (hex) of the YAML text this config was read from: `GET /config` reports it, so
    /// an operator can tell which version of the file each instance has in force.
    pub digest: String,
}

/// What one client may cost: request sizes (checked before anything is sent upstream), open
/// connections and how long a request head may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Request line plus header names and values, in bytes; larger heads get 431.
    pub max_request_header_bytes: u64,
    /// Number of request headers; more get 431.
    pub max_request_headers: u64,
    /// Request body, in bytes (declared or streamed); larger bodies get 413.
    pub max_request_body_bytes: u64,
    /// Client connections open at once on the proxy listeners (TLS handshakes included). At
    /// the cap, a connection that has not sent a request yet (else the longest idle one) is
    /// closed to make room; only when every one is serving is a new one refused.
    pub max_client_connections: u64,
    /// Client connections open at once from one client address (`None`: no such limit; set it
    /// on a node-local proxy so one pod cannot take the node's whole cap).
    pub max_client_connections_per_source: Option<u64>,
    /// How long a client's TLS handshake may take (shortened as the cap fills).
    pub tls_handshake_timeout: Duration,
    /// How long a client may take to send a whole request head once its connection is handed
    /// over (after the TLS handshake); past it the connection is closed. HTTP/2 connections
    /// must open their first stream within it. Shortened as the cap fills.
    pub request_head_timeout: Duration,
    /// How long a kept-alive client connection may stay idle between requests (the head
    /// deadline then applies on top).
    pub client_keepalive_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_header_bytes: DEFAULT_MAX_REQUEST_HEADER_BYTES,
            max_request_headers: DEFAULT_MAX_REQUEST_HEADERS,
            max_request_body_bytes: DEFAULT_MAX_REQUEST_BODY_BYTES,
            max_client_connections: DEFAULT_MAX_CLIENT_CONNECTIONS,
            max_client_connections_per_source: None,
            tls_handshake_timeout: DEFAULT_CLIENT_TLS_HANDSHAKE_TIMEOUT,
            request_head_timeout: DEFAULT_REQUEST_HEAD_TIMEOUT,
            client_keepalive_timeout: DEFAULT_CLIENT_KEEPALIVE_TIMEOUT,
        }
    }
}

/// LiteLLM's `DEFAULT_ALLOWED_FAILS`: failures tolerated per minute before a cooldown.
pub const DEFAULT_ALLOWED_FAILS: u32 = 3;
/// LiteLLM's `DEFAULT_COOLDOWN_TIME_SECONDS`.
pub const DEFAULT_COOLDOWN_TIME: Duration = Duration::from_secs(5);

/// The router's settings (`router:` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouterSettings {
    /// Failures (5xx, connect errors) a deployment may have in a minute before it cools down.
    pub allowed_fails: u32,
    /// How long a cooled-down deployment is left out of its alias's rotation.
    pub cooldown_time: Duration,
}

impl Default for RouterSettings {
    fn default() -> Self {
        RouterSettings {
            allowed_fails: DEFAULT_ALLOWED_FAILS,
            cooldown_time: DEFAULT_COOLDOWN_TIME,
        }
    }
}

/// The admin listener: probes and metrics, separate from the proxy listeners.
#[derive(Debug, Clone)]
pub struct AdminSettings {
    /// `IP:PORT` it listens on (plain HTTP).
    pub address: String,
}

/// Pingora's own server settings.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Worker threads of the proxy service (`auto` in the file: the CPUs this process may
    /// use, counting its cgroup's CPU quota).
    pub threads: usize,
    /// After SIGTERM (listeners closed at once), how long in-flight requests get to finish;
    /// what still runs at its end is cut.
    pub grace_period: Duration,
    /// After the grace period, the longest the runtimes may take to stop (blocking work).
    pub graceful_shutdown_timeout: Duration,
    /// Pid file written by the server.
    pub pid_file: String,
    /// Unix socket used by `-u` upgrades to take over the listeners.
    pub upgrade_sock: String,
}

/// Logging settings.
#[derive(Debug, Clone)]
pub struct LogSettings {
    /// Level for the sidecar's own log lines; `RUST_LOG`, when set, wins.
    pub level: log::LevelFilter,
    /// How each line is written.
    pub format: LogFormat,
}

/// The shape of log lines on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// `timestamp LEVEL target: message key=value …`, for people.
    #[default]
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}
