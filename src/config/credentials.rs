//! Reads the `credentials` section: the salt-key variable, the local store, LiteLLM's
//! database (`credentials.postgres`) or another sidecar's fan-out endpoint (`credentials.watch`).

use std::path::Path;

use super::reader::Env;
use super::reader::{checked_file, resolve, Diagnostics, Section};
use super::schema::*;
use crate::secret::Secret;

pub(super) const CREDENTIAL_KEYS: &[&str] = &["salt_key_env", "local", "postgres", "watch"];
const WATCH_KEYS: &[&str] = &[
    "url",
    "urls",
    "token_env",
    "ca_file",
    "client_cert",
    "client_key",
    "wait",
    "max_answer_bytes",
    "litellm_keys",
];
const POSTGRES_KEYS: &[&str] = &[
    "url",
    "schema",
    "refresh_interval",
    "listen",
    "channel",
    "ca_file",
    "connect_timeout",
    "query_timeout",
    "full_check_interval",
    "notify_jitter",
];

pub(super) fn parse_credentials(
    s: Option<Section<'_>>,
    base_dir: &Path,
    env: &Env,
    diag: &mut Diagnostics,
) -> CredentialSettings {
    let salt_key_env = s
        .as_ref()
        .and_then(|s| s.string("salt_key_env", diag))
        .unwrap_or_else(|| DEFAULT_SALT_KEY_ENV.to_string());
    let local = s
        .as_ref()
        .and_then(|s| s.string("local", diag))
        .map(|path| checked_file(&resolve(base_dir, &path), "credentials.local", diag));
    let postgres = s
        .as_ref()
        .and_then(|s| s.section("postgres", POSTGRES_KEYS, diag))
        .and_then(|p| parse_postgres(&p, base_dir, env, diag));
    let watch = s
        .as_ref()
        .and_then(|s| s.section("watch", WATCH_KEYS, diag))
        .and_then(|w| parse_watch(&w, base_dir, diag));
    if let (Some(s), Some(_), Some(_)) = (s.as_ref(), &postgres, &watch) {
        diag.error(
            s.path_of("watch"),
            "credentials.watch and credentials.postgres exclude each other: a watcher takes \
             the database rows from its fan-out server, not from the database",
        );
    }
    CredentialSettings {
        salt_key_env,
        local,
        postgres,
        watch,
    }
}

fn parse_watch(s: &Section<'_>, base_dir: &Path, diag: &mut Diagnostics) -> Option<WatchSettings> {
    let mut written: Vec<(String, String)> = Vec::new();
    if let Some(url) = s.string("url", diag) {
        written.push((s.path_of("url"), url));
    }
    for (path, value) in s.list("urls", diag) {
        match value.as_str() {
            Some(url) => written.push((path, url.to_string())),
            None => diag.error(path, "expected a string (https://host[:port])"),
        }
    }
    if written.is_empty() && !s.has("url") && !s.has("urls") {
        diag.error(
            s.path_of("url"),
            "required (the fan-out server, e.g. https://sidecar-fanout:9443; or `urls`, a list)",
        );
    }
    let mut servers: Vec<FanoutServer> = Vec::new();
    for (path, url) in written {
        let url = url.trim_end_matches('/').to_string();
        match parse_fanout_url(&url) {
            Ok(_) if servers.iter().any(|s| s.url == url) => {
                diag.error(path, format!("{url:?} is listed twice"))
            }
            Ok((tls, host, port)) => servers.push(FanoutServer {
                url,
                tls,
                host,
                port,
            }),
            Err(problem) => diag.error(path, problem),
        }
    }
    if servers.is_empty() {
        return None;
    }
    let file = |key: &str, diag: &mut Diagnostics| {
        s.string(key, diag)
            .map(|p| checked_file(&resolve(base_dir, &p), &s.path_of(key), diag))
    };
    let ca_file = file("ca_file", diag);
    let client_cert = file("client_cert", diag);
    let client_key = file("client_key", diag);
    if client_cert.is_some() != client_key.is_some() {
        diag.error(s.path(), "client_cert and client_key go together");
    }
    Some(WatchSettings {
        servers,
        token_env: s
            .string("token_env", diag)
            .unwrap_or_else(|| DEFAULT_WATCH_TOKEN_ENV.to_string()),
        ca_file,
        client_cert,
        client_key,
        wait: s.duration("wait", diag).unwrap_or(DEFAULT_WATCH_WAIT),
        max_answer_bytes: s
            .number(
                "max_answer_bytes",
                64 * 1024,
                MAX_WATCH_MAX_ANSWER_BYTES,
                diag,
            )
            .unwrap_or(DEFAULT_WATCH_MAX_ANSWER_BYTES),
        litellm_keys: super::fanout::parse_key_grant(s, "litellm_keys", diag)
            .unwrap_or(KeyGrant::All),
    })
}

/// `https://host[:port]`, or `http://` to a loopback address only (the rows are ciphertext,
/// but the watcher's token is not). Errors say what is wrong with the URL.
fn parse_fanout_url(url: &str) -> Result<(bool, String, u16), String> {
    let shape =
        || format!("{url:?} must be a scheme and host only, e.g. https://sidecar-fanout:9443");
    let (tls, authority) = match url.split_once("://") {
        Some(("https", rest)) => (true, rest),
        Some(("http", rest)) => (false, rest),
        _ => return Err(format!("{url:?} must start with https://")),
    };
    if authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
        return Err(shape());
    }
    let (host, port) = match authority.strip_prefix('[') {
        Some(rest) => {
            let (host, after) = rest.split_once(']').ok_or_else(shape)?;
            (host, after)
        }
        // `host` or `host:port`; the port part keeps its `:`.
        None => authority.split_at(authority.find(':').unwrap_or(authority.len())),
    };
    let port = match port.strip_prefix(':') {
        Some(p) => p
            .parse::<u16>()
            .map_err(|_| format!("{url:?}: the port must be a number"))?,
        None if port.is_empty() => {
            if tls {
                443
            } else {
                80
            }
        }
        None => return Err(shape()),
    };
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|a| a.is_loopback());
    if !tls && !loopback {
        return Err(format!(
            "{url:?}: plain http is allowed to a loopback address only; use https"
        ));
    }
    Ok((tls, host.to_ascii_lowercase(), port))
}

fn parse_postgres(
    s: &Section<'_>,
    base_dir: &Path,
    env: &Env,
    diag: &mut Diagnostics,
) -> Option<PostgresSettings> {
    let url = s
        .string("url", diag)
        .or_else(|| env(DATABASE_URL_ENV).filter(|v| !v.is_empty()));
    if url.is_none() && !s.has("url") {
        diag.error(
            s.path_of("url"),
            format!("required (or set {DATABASE_URL_ENV})"),
        );
    }
    let identifier = |key: &str, default: &str, diag: &mut Diagnostics| {
        let value = s.string(key, diag).unwrap_or_else(|| default.to_string());
        if !is_identifier(&value) {
            diag.error(
                s.path_of(key),
                format!("{value:?} must be a plain SQL identifier (letters, digits, _)"),
            );
        }
        value
    };
    let schema = identifier("schema", DEFAULT_DB_SCHEMA, diag);
    let channel = identifier("channel", DEFAULT_NOTIFY_CHANNEL, diag);
    let ca_file = s
        .string("ca_file", diag)
        .map(|path| checked_file(&resolve(base_dir, &path), &s.path_of("ca_file"), diag));
    Some(PostgresSettings {
        url: Secret::new(url?),
        schema,
        refresh_interval: s
            .duration("refresh_interval", diag)
            .unwrap_or(DEFAULT_REFRESH_INTERVAL),
        listen: s.boolean("listen", diag).unwrap_or(false),
        channel,
        ca_file,
        connect_timeout: s
            .duration("connect_timeout", diag)
            .unwrap_or(DEFAULT_DB_CONNECT_TIMEOUT),
        query_timeout: s
            .duration("query_timeout", diag)
            .unwrap_or(DEFAULT_DB_QUERY_TIMEOUT),
        full_check_interval: s
            .duration("full_check_interval", diag)
            .unwrap_or(DEFAULT_FULL_CHECK_INTERVAL),
        notify_jitter: s
            .duration("notify_jitter", diag)
            .unwrap_or(DEFAULT_NOTIFY_JITTER),
    })
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 63
}
