//! Where credentials come from (the local store, LiteLLM's database, a fan-out server) and
//! serving the database rows to other sidecars (`fanout`).

use std::path::PathBuf;
use std::time::Duration;

use super::ListenerTls;
use crate::secret::Secret;

/// The environment variable holding LiteLLM's salt key.
pub const DEFAULT_SALT_KEY_ENV: &str = "LITELLM_SALT_KEY";
/// Where LiteLLM falls back to when the salt key variable is unset.
pub const MASTER_KEY_ENV: &str = "LITELLM_MASTER_KEY";
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
/// Default `fanout.max_connections`: a serving replica holds one long poll per watcher.
pub const DEFAULT_FANOUT_MAX_CONNECTIONS: u64 = 4096;

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
    /// The LiteLLM keys this watcher asks for, when `access.litellm_keys` is on (default: all;
    /// the server's grant must cover what is asked).
    pub litellm_keys: KeyGrant,
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
    /// LiteLLM keys (and their teams' rows) it may receive (`None`: none).
    pub litellm_keys: Option<KeyGrant>,
}

/// Which LiteLLM virtual keys a watcher receives (`litellm_keys: all | {teams: [..]}`): every
/// key and team, or the keys of the named teams and those teams' rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyGrant {
    /// Every key and every team.
    All,
    /// The keys whose `team_id` is listed, and those teams.
    Teams(Vec<String>),
}

impl KeyGrant {
    /// Whether the keys of `team` (`None`: a key without a team) are covered.
    pub fn covers_team(&self, team: Option<&str>) -> bool {
        match self {
            KeyGrant::All => true,
            KeyGrant::Teams(teams) => team.is_some_and(|t| teams.iter().any(|n| n == t)),
        }
    }

    /// Whether this grant covers everything `asked` asks for.
    pub fn covers(&self, asked: &KeyGrant) -> bool {
        match (self, asked) {
            (KeyGrant::All, _) => true,
            (KeyGrant::Teams(_), KeyGrant::All) => false,
            (KeyGrant::Teams(_), KeyGrant::Teams(asked)) => {
                asked.iter().all(|t| self.covers_team(Some(t)))
            }
        }
    }
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
