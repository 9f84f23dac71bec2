//! The network sides' settings: the listeners clients connect to (plain or TLS) and the
//! connections to providers (timeouts, the connection cap, TLS per endpoint).

use std::path::PathBuf;
use std::time::Duration;

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
/// The environment variable naming a CA bundle for upstream TLS when `upstream.ca_file` is unset.
pub const CA_FILE_ENV: &str = "SSL_CERT_FILE";

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
