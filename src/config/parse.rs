//! Reads a parsed YAML document into a [`Config`], collecting every error with its path.

use std::path::Path;

use serde_yaml::Value;

use super::network;
use super::reader::Env;
use super::reader::{describe, Diagnostics, Section};
use super::schema::*;

const TOP_KEYS: &[&str] = &[
    "server",
    "listeners",
    "upstream",
    "credentials",
    "routes",
    "access",
    "limits",
    "admin",
    "log",
    "fanout",
    "router",
    "spend",
];
const SERVER_KEYS: &[&str] = &[
    "threads",
    "grace_period",
    "graceful_shutdown_timeout",
    "pid_file",
    "upgrade_sock",
];
const ROUTER_KEYS: &[&str] = &["allowed_fails", "cooldown_time"];
const LOG_KEYS: &[&str] = &["level", "format"];
const ADMIN_KEYS: &[&str] = &["address"];
const LIMIT_KEYS: &[&str] = &[
    "max_request_header_bytes",
    "max_request_headers",
    "max_request_body_bytes",
    "max_client_connections",
    "max_client_connections_per_source",
    "tls_handshake_timeout",
    "request_head_timeout",
    "client_keepalive_timeout",
];

/// Reads `doc`; relative file paths are resolved against `base_dir` (the config file's folder).
/// `env` looks up environment variables (injected so tests need not touch the process's).
pub fn parse(doc: &Value, base_dir: &Path, env: &Env, diag: &mut Diagnostics) -> Option<Config> {
    let top = Section::open(doc, "", TOP_KEYS, diag)?;
    let server = parse_server(top.section("server", SERVER_KEYS, diag), diag);
    let listeners = network::parse_listeners(&top, base_dir, env, diag);
    let upstream = network::parse_upstream(
        top.section("upstream", network::UPSTREAM_KEYS, diag),
        base_dir,
        env,
        diag,
    );
    let credentials = super::credentials::parse_credentials(
        top.section("credentials", super::credentials::CREDENTIAL_KEYS, diag),
        base_dir,
        env,
        diag,
    );
    let routes = super::routes::parse_routes(&top, diag);
    let router = parse_router(top.section("router", ROUTER_KEYS, diag), diag);
    let access = network::parse_access(top.section("access", network::ACCESS_KEYS, diag), diag);
    let limits = parse_limits(top.section("limits", LIMIT_KEYS, diag), diag);
    let admin = parse_admin(top.section("admin", ADMIN_KEYS, diag), &listeners, diag);
    let log = parse_log(top.section("log", LOG_KEYS, diag), diag);
    let taken: Vec<&str> = listeners
        .iter()
        .map(|l| l.address.as_str())
        .chain([admin.address.as_str()])
        .collect();
    let fanout = super::fanout::parse_fanout(
        top.section("fanout", super::fanout::FANOUT_KEYS, diag),
        base_dir,
        env,
        &taken,
        diag,
    );
    // Spend is written for the keys this instance enforces, and for those it serves to
    // watchers (their spend comes back to it).
    let serves_keys = fanout
        .as_ref()
        .is_some_and(|f| f.watchers.iter().any(|w| w.litellm_keys.is_some()));
    let spend = super::spend::parse_spend(
        top.section("spend", super::spend::SPEND_KEYS, diag),
        access.litellm_keys || serves_keys,
        base_dir,
        diag,
    );
    if spend.enabled
        && credentials.watch.is_some()
        && spend.max_pending_requests > crate::fanout::MAX_WATCHER_PENDING_REQUESTS
    {
        diag.error(
            "spend.max_pending_requests",
            format!(
                "at most {} on a watcher: its batch goes to its fan-out server in one request",
                crate::fanout::MAX_WATCHER_PENDING_REQUESTS
            ),
        );
    }
    if fanout.is_some() && credentials.postgres.is_none() {
        diag.error(
            "fanout",
            "serves the database rows, so it needs credentials.postgres",
        );
    }
    if access.litellm_keys && credentials.postgres.is_none() && credentials.watch.is_none() {
        diag.error(
            "access.litellm_keys",
            "LiteLLM's keys are read from its database: needs credentials.postgres (or \
             credentials.watch, from a fan-out server whose grant covers them)",
        );
    }
    let by_model = routes
        .iter()
        .position(|r| r.backend == Backend::RequestModel);
    if let (Some(i), Some(_)) = (by_model, &credentials.watch) {
        diag.error(
            format!("routes[{i}].dispatch"),
            "needs every alias, and a watcher receives only those its routes name; use \
             credentials.postgres or the local store",
        );
    }
    if !diag.is_empty() {
        return None;
    }
    Some(Config {
        server,
        listeners,
        upstream,
        credentials,
        routes,
        access,
        limits,
        admin,
        log,
        fanout,
        router,
        spend,
        // Filled in by `Config::from_yaml`, which has the text.
        digest: String::new(),
    })
}

/// `router`: LiteLLM's cooldown settings for `dispatch: model` routes.
fn parse_router(s: Option<Section<'_>>, diag: &mut Diagnostics) -> RouterSettings {
    let defaults = RouterSettings::default();
    let Some(s) = s else { return defaults };
    RouterSettings {
        allowed_fails: s
            .number("allowed_fails", 0, 1_000_000, diag)
            .map_or(defaults.allowed_fails, |n| n as u32),
        cooldown_time: s
            .duration("cooldown_time", diag)
            .unwrap_or(defaults.cooldown_time),
    }
}

fn parse_limits(s: Option<Section<'_>>, diag: &mut Diagnostics) -> Limits {
    let defaults = Limits::default();
    let Some(s) = s else {
        return defaults;
    };
    let mut get = |key, min, max, default| s.number(key, min, max, diag).unwrap_or(default);
    Limits {
        // Pingora itself refuses heads over 1 MiB and more than 256 headers.
        max_request_header_bytes: get(
            "max_request_header_bytes",
            1024,
            1024 * 1024,
            defaults.max_request_header_bytes,
        ),
        max_request_headers: get("max_request_headers", 1, 256, defaults.max_request_headers),
        max_request_body_bytes: get(
            "max_request_body_bytes",
            0,
            u64::MAX,
            defaults.max_request_body_bytes,
        ),
        max_client_connections: get(
            "max_client_connections",
            1,
            1_000_000,
            defaults.max_client_connections,
        ),
        max_client_connections_per_source: s.number(
            "max_client_connections_per_source",
            1,
            1_000_000,
            diag,
        ),
        tls_handshake_timeout: s
            .duration("tls_handshake_timeout", diag)
            .unwrap_or(defaults.tls_handshake_timeout),
        request_head_timeout: s
            .duration("request_head_timeout", diag)
            .unwrap_or(defaults.request_head_timeout),
        client_keepalive_timeout: s
            .duration("client_keepalive_timeout", diag)
            .unwrap_or(defaults.client_keepalive_timeout),
    }
}

fn parse_admin(
    s: Option<Section<'_>>,
    listeners: &[Listener],
    diag: &mut Diagnostics,
) -> AdminSettings {
    let address = s
        .as_ref()
        .and_then(|s| {
            let address = s.string("address", diag)?;
            if address.parse::<std::net::SocketAddr>().is_err() {
                diag.error(
                    s.path_of("address"),
                    format!("{address:?} is not IP:PORT (e.g. 127.0.0.1:9901)"),
                );
            } else if listeners.iter().any(|l| l.address == address) {
                diag.error(
                    s.path_of("address"),
                    format!(
                        "{address} is also a proxy listener; the admin listener needs its own port"
                    ),
                );
            }
            Some(address)
        })
        .unwrap_or_else(|| DEFAULT_ADMIN_ADDRESS.to_string());
    AdminSettings { address }
}

/// `server.threads`: a number, or `auto` for the CPUs this process may use (std reads the
/// affinity mask and the cgroup's CPU quota, so a pod limited to 1.5 CPUs gets 1).
fn parse_threads(s: &Section<'_>, diag: &mut Diagnostics) -> Option<usize> {
    let value = s.value("threads")?;
    if value.as_str() == Some("auto") {
        return Some(std::thread::available_parallelism().map_or(1, |n| n.get()));
    }
    match value.as_u64() {
        Some(n @ 1..=1024) => Some(n as usize),
        _ => {
            diag.error(
                s.path_of("threads"),
                format!(
                    "expected a whole number from 1 to 1024 or \"auto\", found {}",
                    describe(value)
                ),
            );
            None
        }
    }
}

fn parse_server(s: Option<Section<'_>>, diag: &mut Diagnostics) -> ServerSettings {
    let get_dur = |key, d, diag: &mut Diagnostics| {
        s.as_ref().and_then(|s| s.duration(key, diag)).unwrap_or(d)
    };
    ServerSettings {
        threads: s
            .as_ref()
            .and_then(|s| parse_threads(s, diag))
            .unwrap_or(DEFAULT_THREADS as usize),
        grace_period: get_dur("grace_period", DEFAULT_GRACE_PERIOD, diag),
        graceful_shutdown_timeout: get_dur(
            "graceful_shutdown_timeout",
            DEFAULT_GRACEFUL_SHUTDOWN_TIMEOUT,
            diag,
        ),
        pid_file: s
            .as_ref()
            .and_then(|s| s.string("pid_file", diag))
            .unwrap_or_else(|| DEFAULT_PID_FILE.to_string()),
        upgrade_sock: s
            .as_ref()
            .and_then(|s| s.string("upgrade_sock", diag))
            .unwrap_or_else(|| DEFAULT_UPGRADE_SOCK.to_string()),
    }
}

fn parse_log(s: Option<Section<'_>>, diag: &mut Diagnostics) -> LogSettings {
    let level = s.as_ref().and_then(|s| {
        let text = s.string("level", diag)?;
        text.parse::<log::LevelFilter>()
            .map_err(|_| {
                diag.error(
                    s.path_of("level"),
                    format!("{text:?} is not one of off, error, warn, info, debug, trace"),
                )
            })
            .ok()
    });
    let format = s
        .as_ref()
        .and_then(|s| match s.string("format", diag)?.as_str() {
            "text" => Some(LogFormat::Text),
            "json" => Some(LogFormat::Json),
            other => {
                diag.error(
                    s.path_of("format"),
                    format!("{other:?} is not one of text, json"),
                );
                None
            }
        });
    LogSettings {
        level: level.unwrap_or(DEFAULT_LOG_LEVEL),
        format: format.unwrap_or_default(),
    }
}
