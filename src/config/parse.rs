//! Reads a parsed YAML document into a [`Config`], collecting every error with its path.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde_yaml::Value;

use super::network;
use super::reader::{describe, Diagnostics, Section};
use super::schema::*;
use super::url::UpstreamUrl;
use super::Env;
use crate::identity::AllowedIdentity;
use crate::providers::AuthStyle;

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
];
const SERVER_KEYS: &[&str] = &[
    "threads",
    "grace_period",
    "graceful_shutdown_timeout",
    "pid_file",
    "upgrade_sock",
];
const ROUTE_KEYS: &[&str] = &[
    "name",
    "path_prefix",
    "host",
    "strip_prefix",
    "upstream",
    "provider",
    "auth_header",
    "auth_prefix",
    "credential",
    "model",
    "dispatch",
    "allowed_cidrs",
    "allowed_identities",
];
const LOG_KEYS: &[&str] = &["level", "format"];
const ADMIN_KEYS: &[&str] = &["address"];
const LIMIT_KEYS: &[&str] = &[
    "max_request_header_bytes",
    "max_request_headers",
    "max_request_body_bytes",
    "max_client_connections",
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
    let routes = parse_routes(&top, diag);
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
    if fanout.is_some() && credentials.postgres.is_none() {
        diag.error(
            "fanout",
            "serves the database rows, so it needs credentials.postgres",
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
    })
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

fn parse_routes(top: &Section<'_>, diag: &mut Diagnostics) -> Vec<RouteConfig> {
    let items = top.non_empty_list("routes", "route", diag);
    let mut names = HashSet::new();
    let mut matches = HashSet::new();
    let mut routes = Vec::new();
    for (path, item) in items {
        let Some(s) = Section::open(item, &path, ROUTE_KEYS, diag) else {
            continue;
        };
        if let Some(route) = parse_route(&s, diag) {
            if !names.insert(route.name.clone()) {
                diag.error(
                    s.path_of("name"),
                    format!("route name {:?} is used twice", route.name),
                );
            }
            let key = (route.host.clone(), route.path_prefix.clone());
            if !matches.insert(key) {
                diag.error(path, "another route matches the same host and path_prefix");
            }
            routes.push(route);
        }
    }
    routes
}

fn parse_route(s: &Section<'_>, diag: &mut Diagnostics) -> Option<RouteConfig> {
    let errors_before = diag.errors.len();
    let name = required(s, "name", diag);
    let backend = parse_backend(s, diag);
    // A credential route has no deployment to take its upstream and provider from.
    let needs_target = matches!(backend, Some(Backend::Credential(_)));
    let (upstream, auth) = parse_target(s, needs_target, diag);
    let (host, path_prefix, strip_prefix) = parse_match(s, diag);
    let allowed_cidrs = network::cidr_list(s, "allowed_cidrs", diag);
    let allowed_identities = s.parsed_list(
        "allowed_identities",
        "a typed name: uri:, dns:, email:, ip: or CN=",
        AllowedIdentity::parse,
        diag,
    );
    if diag.errors.len() > errors_before {
        return None;
    }
    Some(RouteConfig {
        allowed_cidrs,
        allowed_identities,
        name: name?,
        path_prefix,
        host,
        strip_prefix,
        upstream,
        auth,
        backend: backend?,
    })
}

/// A string the section must have.
fn required(s: &Section<'_>, key: &str, diag: &mut Diagnostics) -> Option<String> {
    let value = s.string(key, diag);
    if value.is_none() && !s.has(key) {
        diag.error(s.path_of(key), "required");
    }
    value
}

/// `credential`, `model` or `dispatch: model`: exactly one.
fn parse_backend(s: &Section<'_>, diag: &mut Diagnostics) -> Option<Backend> {
    let dispatch = s.string("dispatch", diag);
    match (
        s.string("credential", diag),
        s.string("model", diag),
        dispatch,
    ) {
        (Some(c), None, None) => Some(Backend::Credential(c)),
        (None, Some(m), None) => Some(Backend::Model(m)),
        (None, None, Some(d)) if d == "model" => {
            // Each request's deployment decides where it goes and how the key is presented.
            for key in ["upstream", "provider", "strip_prefix"] {
                if s.has(key) {
                    diag.error(
                        s.path_of(key),
                        "not used with dispatch: model (each deployment has its own)",
                    );
                }
            }
            Some(Backend::RequestModel)
        }
        (None, None, Some(d)) => {
            diag.error(
                s.path_of("dispatch"),
                format!("unknown dispatch {d:?} (the only one is model)"),
            );
            None
        }
        (None, None, None) => {
            if !s.has("credential") && !s.has("model") && !s.has("dispatch") {
                diag.error(s.path_of("credential"), "required (or model, or dispatch)");
            }
            None
        }
        _ => {
            diag.error(s.path(), "set one of credential, model and dispatch");
            None
        }
    }
}

/// `upstream` and `provider` (with `auth_header` / `auth_prefix`): required when `needed`.
fn parse_target(
    s: &Section<'_>,
    needed: bool,
    diag: &mut Diagnostics,
) -> (Option<UpstreamUrl>, Option<AuthStyle>) {
    let (upstream_text, provider) = if needed {
        (required(s, "upstream", diag), required(s, "provider", diag))
    } else {
        (s.string("upstream", diag), s.string("provider", diag))
    };
    let upstream = upstream_text.and_then(|text| {
        UpstreamUrl::parse(&text)
            .map_err(|e| diag.error(s.path_of("upstream"), e))
            .ok()
    });
    let header = s.string("auth_header", diag);
    let prefix = s.string("auth_prefix", diag);
    let auth = match provider {
        Some(p) => AuthStyle::from_config(&p, header.as_deref(), prefix.as_deref())
            .map_err(|e| diag.error(s.path_of("provider"), e))
            .ok(),
        None if header.is_some() || prefix.is_some() => {
            diag.error(s.path_of("auth_header"), "needs provider: header");
            None
        }
        None => None,
    };
    (upstream, auth)
}

/// What a request must match: `host`, `path_prefix` (at least one), and `strip_prefix`.
fn parse_match(s: &Section<'_>, diag: &mut Diagnostics) -> (Option<String>, Option<String>, bool) {
    let path_prefix = s.string("path_prefix", diag).map(|p| normalize_prefix(&p));
    if let Some(p) = &path_prefix {
        if !p.starts_with('/') {
            diag.error(s.path_of("path_prefix"), format!("{p:?} must start with /"));
        }
    }
    let host = s.string("host", diag).map(|h| h.to_ascii_lowercase());
    if path_prefix.is_none() && host.is_none() && !s.has("path_prefix") && !s.has("host") {
        diag.error(s.path(), "a route needs path_prefix, host, or both");
    }
    let strip_prefix = s.boolean("strip_prefix", diag).unwrap_or(false);
    if strip_prefix && path_prefix.is_none() {
        diag.error(s.path_of("strip_prefix"), "needs path_prefix");
    }
    (host, path_prefix, strip_prefix)
}

/// `/openai/` and `/openai` mean the same prefix; `/` stays `/`.
fn normalize_prefix(prefix: &str) -> String {
    let trimmed = prefix.trim_end_matches('/');
    if trimmed.is_empty() {
        "/".to_string()
    } else {
        trimmed.to_string()
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

pub(super) fn resolve(base_dir: &Path, path: &str) -> PathBuf {
    let path = Path::new(path);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base_dir.join(path)
    }
}

/// Records an error unless `path` is a readable file.
pub(super) fn checked_file(path: &Path, field: &str, diag: &mut Diagnostics) -> PathBuf {
    if let Err(e) = std::fs::File::open(path) {
        diag.error(field, format!("cannot read {}: {e}", path.display()));
    }
    path.to_path_buf()
}
