//! The typed, validated configuration: what the rest of the program reads.
//!
//! Built only by [`super::parse`], so every value here has passed validation. Defaults are the
//! `DEFAULT_*` constants beside the fields they fill.

use std::path::PathBuf;
use std::time::Duration;

use crate::access::{Cidr, ClientTokens};
use crate::identity::AllowedIdentity;
use crate::providers::AuthStyle;
use crate::secret::Secret;

use super::url::UpstreamUrl;

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
/// TCP connect timeout to a provider.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// TCP connect plus TLS handshake, in total.
pub const DEFAULT_TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for the next bytes from a provider (time to first token, gaps in a stream).
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(600);
/// Longest wait to write to a provider.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an idle pooled connection is kept.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Idle keepalive connections kept in the pool, across all upstreams.
pub const DEFAULT_KEEPALIVE_POOL_SIZE: u64 = 256;
/// How often a TLS listener's certificate files are checked for changes.
pub const DEFAULT_CERT_RELOAD_INTERVAL: Duration = Duration::from_secs(2);
/// The environment variables LiteLLM uses for its certificate and key.
pub const CERT_FILE_ENV: &str = "SSL_CERTFILE_PATH";
/// See [`CERT_FILE_ENV`].
pub const KEY_FILE_ENV: &str = "SSL_KEYFILE_PATH";
/// Upstream TCP connections open at once, across all upstreams, idle ones included.
pub const DEFAULT_MAX_CONNECTIONS: u64 = 1000;
/// How long a request waits for a connection slot at the cap before a 503.
pub const DEFAULT_POOL_WAIT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often upstream host names are resolved again.
pub const DEFAULT_DNS_REFRESH_INTERVAL: Duration = Duration::from_secs(30);
/// The environment variable holding LiteLLM's salt key.
pub const DEFAULT_SALT_KEY_ENV: &str = "LITELLM_SALT_KEY";
/// Where LiteLLM falls back to when the salt key variable is unset.
pub const MASTER_KEY_ENV: &str = "LITELLM_MASTER_KEY";
/// The environment variable naming a CA bundle for upstream TLS when `upstream.ca_file` is unset.
pub const CA_FILE_ENV: &str = "SSL_CERT_FILE";
/// How often the database is polled for changes.
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(30);
/// The schema holding LiteLLM's tables.
pub const DEFAULT_DB_SCHEMA: &str = "public";
/// The channel `db install-notify` triggers NOTIFY on, and the sidecar LISTENs to.
pub const DEFAULT_NOTIFY_CHANNEL: &str = "sidecar_credentials_changed";
/// Connect timeout to the database.
pub const DEFAULT_DB_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a database round trip (or a connect) may take before it counts as failed.
pub const DEFAULT_DB_QUERY_TIMEOUT: Duration = Duration::from_secs(10);
/// How often both tables are hashed in full, to catch changes the version triggers missed.
pub const DEFAULT_FULL_CHECK_INTERVAL: Duration = Duration::from_secs(300);
/// A `NOTIFY` starts a refresh after a random delay below this (a trigger reaches every
/// listening sidecar at once).
pub const DEFAULT_NOTIFY_JITTER: Duration = Duration::from_millis(500);
/// The environment variable holding a watcher's fan-out token when `credentials.watch.token_env`
/// is unset.
pub const DEFAULT_WATCH_TOKEN_ENV: &str = "SIDECAR_WATCH_TOKEN";
/// How long a fan-out server holds a watch request open when nothing changes.
pub const DEFAULT_WATCH_WAIT: Duration = Duration::from_secs(30);
/// Largest answer a watcher accepts from a fan-out server. A stored row is about 0.3 KiB (a
/// credential: name and one encrypted key) to 1.5 KiB (a model row with its encrypted
/// `litellm_params`), and a watcher receives only the rows its routes name, typically a few
/// dozen: 4 MiB holds about 3,000 of the largest rows.
pub const DEFAULT_WATCH_MAX_ANSWER_BYTES: u64 = 4 * 1024 * 1024;
/// Upper bound of `credentials.watch.max_answer_bytes`.
pub const MAX_WATCH_MAX_ANSWER_BYTES: u64 = 256 * 1024 * 1024;
/// The environment variable holding the database URL when `credentials.postgres.url` is unset.
pub const DATABASE_URL_ENV: &str = "DATABASE_URL";
/// The header client tokens are presented in when `access.client_tokens.header` is unset.
pub const DEFAULT_TOKEN_HEADER: &str = "authorization";
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
/// Default `fanout.max_connections`: a serving replica holds one long poll per watcher.
pub const DEFAULT_FANOUT_MAX_CONNECTIONS: u64 = 4096;
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

/// A listener: plain HTTP, or TLS when `tls` is set.
#[derive(Debug, Clone)]
pub struct Listener {
    /// `IP:PORT` to bind, e.g. `127.0.0.1:4000`.
    pub address: String,
    /// TLS termination, when set.
    pub tls: Option<ListenerTls>,
}

/// A TLS listener's settings.
#[derive(Debug, Clone)]
pub struct ListenerTls {
    /// Certificate chain (PEM); `SSL_CERTFILE_PATH` when unset.
    pub cert: PathBuf,
    /// Private key (PEM); `SSL_KEYFILE_PATH` when unset.
    pub key: PathBuf,
    /// Accept TLS 1.3 only (`min_version: "1.3"`); the default minimum is 1.2.
    pub min_version_13: bool,
    /// OpenSSL-style cipher list for TLS 1.2 (TLS 1.3 suites are fixed by BoringSSL).
    pub ciphers: Option<String>,
    /// CA bundle client certificates must chain to; when set, a client certificate is required.
    pub client_ca: Option<PathBuf>,
    /// How often the certificate and key files are checked for changes.
    pub reload_interval: Duration,
}

/// Upstream (provider-side) connection settings, shared by every route.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// TCP connect plus TLS handshake timeout.
    pub tls_handshake_timeout: Duration,
    /// Longest wait between bytes read from the provider.
    pub read_timeout: Duration,
    /// Longest wait to write to the provider.
    pub write_timeout: Duration,
    /// How long an idle pooled connection stays open.
    pub idle_timeout: Duration,
    /// Idle pooled connections kept across all upstreams.
    pub keepalive_pool_size: usize,
    /// Upstream TCP connections open at once, across all upstreams, idle ones included.
    pub max_connections: usize,
    /// How long a request waits for a connection slot at the cap.
    pub pool_wait_timeout: Duration,
    /// CA bundle (PEM) for verifying providers; `None` → system roots.
    pub ca_file: Option<PathBuf>,
    /// Lowest TLS version accepted from providers (1.2 or 1.3).
    pub min_tls_version_13: bool,
    /// Per-endpoint TLS settings (private CAs, client certificates, …).
    pub endpoints: Vec<EndpointTls>,
    /// How often upstream host names are resolved again.
    pub dns_refresh_interval: Duration,
}

/// TLS settings for one upstream endpoint, matched by host (and port, when given).
#[derive(Debug, Clone)]
pub struct EndpointTls {
    /// Host name the settings apply to (lowercase).
    pub host: String,
    /// Port, when the settings apply to one port only.
    pub port: Option<u16>,
    /// CA bundle for this endpoint (replaces `upstream.ca_file`).
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain (PEM) presented to this endpoint (mTLS).
    pub client_cert: Option<PathBuf>,
    /// Key of `client_cert` (PEM).
    pub client_key: Option<PathBuf>,
    /// Accept TLS 1.3 only from this endpoint.
    pub min_tls_version_13: Option<bool>,
    /// Do not verify this endpoint's certificate. Named to be noticed; warned about at start.
    pub insecure_skip_verify: bool,
}

/// Where credentials come from.
#[derive(Debug, Clone)]
pub struct CredentialSettings {
    /// Name of the environment variable holding the salt key.
    pub salt_key_env: String,
    /// The local credential store file, if any (relative paths are resolved against the config
    /// file's directory).
    pub local: Option<PathBuf>,
    /// LiteLLM's Postgres database, if configured.
    pub postgres: Option<PostgresSettings>,
    /// Another sidecar's fan-out endpoint to take the database rows from, instead of Postgres.
    pub watch: Option<WatchSettings>,
}

/// One fan-out server a watcher may take the rows from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FanoutServer {
    /// Its base URL (`https://host:port`; `http://` on loopback only), as written.
    pub url: String,
    /// `https`.
    pub tls: bool,
    /// Its host (a name or an IP address, without brackets). Every address a name resolves to
    /// counts as a server of its own (a headless Service lists every serving replica).
    pub host: String,
    /// Its port.
    pub port: u16,
}

/// Taking the credential rows from fan-out servers (other sidecars) instead of the database.
#[derive(Debug, Clone)]
pub struct WatchSettings {
    /// The servers (`url` and `urls`, in the order written; at least one). A watcher starts at
    /// one at random and moves to another when its server fails.
    pub servers: Vec<FanoutServer>,
    /// The environment variable holding this watcher's token.
    pub token_env: String,
    /// CA bundle the server's certificate is verified against (else `upstream.ca_file`, else
    /// the system roots).
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain (PEM) for a server that requires mTLS.
    pub client_cert: Option<PathBuf>,
    /// Key of `client_cert` (PEM).
    pub client_key: Option<PathBuf>,
    /// How long the server may hold each watch request open when nothing changes.
    pub wait: Duration,
    /// Largest answer accepted from a server, in bytes (declared or streamed); a larger one is
    /// refused unread and the last rows stay in use.
    pub max_answer_bytes: u64,
}

impl WatchSettings {
    /// The servers' URLs, comma-separated (for logs and the source's description).
    pub fn urls(&self) -> String {
        let urls: Vec<&str> = self.servers.iter().map(|s| s.url.as_str()).collect();
        urls.join(", ")
    }
}

/// Serving the database rows to other sidecars (`fanout`): this instance holds the database
/// connection, watchers hold none.
#[derive(Debug, Clone)]
pub struct FanoutSettings {
    /// `IP:PORT` of the fan-out listener.
    pub address: String,
    /// TLS for the listener (required unless `address` is a loopback address).
    pub tls: Option<ListenerTls>,
    /// Who may watch, and which rows each one receives.
    pub watchers: Vec<WatcherGrant>,
    /// Connections open at once on the fan-out listener (the proxy listener's overload policy
    /// and deadlines apply, with `limits`' timeouts).
    pub max_connections: u64,
    /// Connections open at once from one address on the fan-out listener (`None`: no limit).
    pub max_connections_per_source: Option<u64>,
}

/// One watcher's identity and what it may receive (least privilege: a compromised pod gets its
/// own keys, not the fleet's).
#[derive(Debug, Clone)]
pub struct WatcherGrant {
    /// A name for logs.
    pub name: String,
    /// SHA-256 of the watcher's token (the token itself never appears in config).
    pub token_sha256: [u8; 32],
    /// Credential names it may receive.
    pub credentials: Vec<String>,
    /// Model aliases it may receive (with the credentials their rows link to).
    pub models: Vec<String>,
}

/// Reading credentials and model deployments from LiteLLM's database.
#[derive(Debug, Clone)]
pub struct PostgresSettings {
    /// Connection string (URL or `key=value`; libpq's `sslmode`/`sslrootcert` understood).
    pub url: Secret,
    /// Schema holding LiteLLM's tables.
    pub schema: String,
    /// How often the tables are read again.
    pub refresh_interval: Duration,
    /// Also `LISTEN` for the triggers `sidecar db install-notify` installs.
    pub listen: bool,
    /// The NOTIFY channel.
    pub channel: String,
    /// Root certificate for `sslmode=verify-ca`/`verify-full` when the URL names none.
    pub ca_file: Option<PathBuf>,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Deadline of every round trip (server `statement_timeout`, socket and client side).
    pub query_timeout: Duration,
    /// How often both tables are hashed in full (the version row is read on every poll).
    pub full_check_interval: Duration,
    /// A `NOTIFY` starts a refresh after a random delay below this.
    pub notify_jitter: Duration,
}

/// One route: which requests it takes and where they go with which key.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    /// Unique name, used in logs and errors.
    pub name: String,
    /// Path prefix to match, on segment boundaries (`/openai` matches `/openai/v1`, not
    /// `/openaiX`).
    pub path_prefix: Option<String>,
    /// Host to match (case-insensitive, port ignored).
    pub host: Option<String>,
    /// Remove `path_prefix` before forwarding.
    pub strip_prefix: bool,
    /// Where matching requests go. Required for credential routes; for model routes it
    /// overrides the deployment's `api_base`.
    pub upstream: Option<UpstreamUrl>,
    /// How the provider expects the credential. Required for credential routes; for model
    /// routes it overrides the style derived from the deployment's provider.
    pub auth: Option<AuthStyle>,
    /// What supplies the key.
    pub backend: Backend,
    /// Client networks allowed on this route (in addition to `access.allowed_cidrs`); empty
    /// allows everyone the global list allows.
    pub allowed_cidrs: Vec<Cidr>,
    /// mTLS client identities allowed on this route, each naming its type (`uri:`, `dns:`,
    /// `email:`, `ip:`, `CN=`) and matching only a name of that type; empty allows any client.
    pub allowed_identities: Vec<AllowedIdentity>,
}

/// What supplies a route's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// A named credential (local store or `"LiteLLM_CredentialsTable"`).
    Credential(String),
    /// A LiteLLM model alias (`"LiteLLM_ProxyModelTable"`), its deployments used round-robin.
    Model(String),
    /// `dispatch: model`: OpenAI's JSON endpoints under the route's prefix, each request's
    /// `model` naming the alias (LiteLLM proxy style; see `proxy::unified`).
    RequestModel,
}

/// Client access control (the node-local form).
#[derive(Debug, Clone, Default)]
pub struct AccessSettings {
    /// Client networks allowed to use any route; empty allows everyone.
    pub allowed_cidrs: Vec<Cidr>,
    /// Client tokens required on every request, when set.
    pub client_tokens: Option<ClientTokens>,
    /// LiteLLM virtual keys required on every request (read from LiteLLM's key and team
    /// tables; see `access::litellm_keys`).
    pub litellm_keys: bool,
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
