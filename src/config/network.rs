//! Reads the network-facing sections: `listeners` (plain and TLS), `upstream` (timeouts, the
//! connection cap, TLS per endpoint) and `access` (client networks and tokens).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::reader::Env;
use super::reader::{checked_file, cidr_list, resolve, Diagnostics, Section};
use super::schema::*;
use crate::access::ClientTokens;

pub(super) const ACCESS_KEYS: &[&str] = &["allowed_cidrs", "client_tokens", "litellm_keys"];
pub(super) const TOKEN_KEYS: &[&str] = &["header", "sha256"];
pub(super) const LISTENER_KEYS: &[&str] = &["address", "tls"];
pub(super) const LISTENER_TLS_KEYS: &[&str] = &[
    "cert",
    "key",
    "min_version",
    "ciphers",
    "client_ca",
    "reload_interval",
];
pub(super) const UPSTREAM_KEYS: &[&str] = &[
    "connect_timeout",
    "tls_handshake_timeout",
    "read_timeout",
    "write_timeout",
    "idle_timeout",
    "keepalive_pool_size",
    "max_connections",
    "pool_wait_timeout",
    "ca_file",
    "dns_refresh_interval",
    "min_tls_version",
    "endpoints",
];
pub(super) const ENDPOINT_KEYS: &[&str] = &[
    "host",
    "ca_file",
    "client_cert",
    "client_key",
    "min_tls_version",
    "insecure_skip_verify",
];

pub(super) fn parse_listener_tls(
    t: &Section<'_>,
    base_dir: &Path,
    env: &Env,
    diag: &mut Diagnostics,
) -> Option<ListenerTls> {
    let file = |key: &str, env_name: &str, diag: &mut Diagnostics| {
        let path = match t.string(key, diag) {
            Some(p) => resolve(base_dir, &p),
            None => match env(env_name).filter(|v| !v.is_empty()) {
                Some(p) => PathBuf::from(p),
                None => {
                    diag.error(t.path_of(key), format!("required (or set {env_name})"));
                    return None;
                }
            },
        };
        Some(checked_file(&path, &t.path_of(key), diag))
    };
    let cert = file("cert", CERT_FILE_ENV, diag);
    let key = file("key", KEY_FILE_ENV, diag);
    let min_version_13 = match t.string("min_version", diag).as_deref() {
        None | Some("1.2") => false,
        Some("1.3") => true,
        Some(other) => {
            diag.error(
                t.path_of("min_version"),
                format!("{other:?} must be \"1.2\" or \"1.3\""),
            );
            false
        }
    };
    let client_ca = t
        .string("client_ca", diag)
        .map(|p| checked_file(&resolve(base_dir, &p), &t.path_of("client_ca"), diag));
    Some(ListenerTls {
        cert: cert?,
        key: key?,
        min_version_13,
        ciphers: t.string("ciphers", diag),
        client_ca,
        reload_interval: t
            .duration("reload_interval", diag)
            .unwrap_or(DEFAULT_CERT_RELOAD_INTERVAL),
    })
}

pub(super) fn parse_listeners(
    top: &Section<'_>,
    base_dir: &Path,
    env: &Env,
    diag: &mut Diagnostics,
) -> Vec<Listener> {
    let items = top.non_empty_list("listeners", "listener", diag);
    let mut seen = HashSet::new();
    let mut listeners = Vec::new();
    for (path, item) in items {
        let Some(s) = Section::open(item, &path, LISTENER_KEYS, diag) else {
            continue;
        };
        let Some(address) = s.string("address", diag) else {
            if !s.has("address") {
                diag.error(s.path_of("address"), "required");
            }
            continue;
        };
        if address.parse::<SocketAddr>().is_err() {
            diag.error(
                s.path_of("address"),
                format!("{address:?} is not IP:PORT (e.g. 127.0.0.1:4000 or [::1]:4000)"),
            );
        } else if !seen.insert(address.clone()) {
            diag.error(s.path_of("address"), format!("{address} is listed twice"));
        }
        let tls = s
            .section("tls", LISTENER_TLS_KEYS, diag)
            .and_then(|t| parse_listener_tls(&t, base_dir, env, diag));
        listeners.push(Listener { address, tls });
    }
    listeners
}

pub(super) fn parse_upstream(
    s: Option<Section<'_>>,
    base_dir: &Path,
    env: &Env,
    diag: &mut Diagnostics,
) -> UpstreamSettings {
    let mut dur = |key, default| {
        s.as_ref()
            .and_then(|s| s.duration(key, diag))
            .unwrap_or(default)
    };
    let connect_timeout = dur("connect_timeout", DEFAULT_CONNECT_TIMEOUT);
    let tls_handshake_timeout = dur("tls_handshake_timeout", DEFAULT_TLS_HANDSHAKE_TIMEOUT);
    let read_timeout = dur("read_timeout", DEFAULT_READ_TIMEOUT);
    let write_timeout = dur("write_timeout", DEFAULT_WRITE_TIMEOUT);
    let idle_timeout = dur("idle_timeout", DEFAULT_IDLE_TIMEOUT);
    let dns_refresh_interval = dur("dns_refresh_interval", DEFAULT_DNS_REFRESH_INTERVAL);
    let pool_wait_timeout = dur("pool_wait_timeout", DEFAULT_POOL_WAIT_TIMEOUT);
    let max_connections = s
        .as_ref()
        .and_then(|s| s.number("max_connections", 1, 1_000_000, diag))
        .unwrap_or(DEFAULT_MAX_CONNECTIONS) as usize;
    let keepalive_pool_size = s
        .as_ref()
        .and_then(|s| s.number("keepalive_pool_size", 1, 1_000_000, diag))
        .unwrap_or(DEFAULT_KEEPALIVE_POOL_SIZE) as usize;
    let ca_file = match s.as_ref().and_then(|s| s.string("ca_file", diag)) {
        Some(path) => Some(checked_file(
            &resolve(base_dir, &path),
            "upstream.ca_file",
            diag,
        )),
        None => env(CA_FILE_ENV)
            .filter(|v| !v.is_empty())
            .map(|path| checked_file(Path::new(&path), CA_FILE_ENV, diag)),
    };
    let min_tls_version_13 = s
        .as_ref()
        .and_then(|s| tls_version(s, "min_tls_version", diag))
        .unwrap_or(false);
    let mut endpoints = Vec::new();
    if let Some(s) = s.as_ref() {
        for (path, v) in s.list("endpoints", diag) {
            if let Some(e) = Section::open(v, &path, ENDPOINT_KEYS, diag) {
                endpoints.extend(parse_endpoint(&e, base_dir, diag));
            }
        }
    }
    UpstreamSettings {
        min_tls_version_13,
        endpoints,
        connect_timeout,
        tls_handshake_timeout,
        read_timeout,
        write_timeout,
        idle_timeout,
        keepalive_pool_size,
        max_connections,
        pool_wait_timeout,
        ca_file,
        dns_refresh_interval,
    }
}

/// `"1.2"` → `false`, `"1.3"` → `true`.
fn tls_version(s: &Section<'_>, key: &str, diag: &mut Diagnostics) -> Option<bool> {
    match s.string(key, diag)?.as_str() {
        "1.2" => Some(false),
        "1.3" => Some(true),
        other => {
            diag.error(
                s.path_of(key),
                format!("{other:?} must be \"1.2\" or \"1.3\""),
            );
            None
        }
    }
}

fn parse_endpoint(e: &Section<'_>, base_dir: &Path, diag: &mut Diagnostics) -> Option<EndpointTls> {
    let host_text = e.string("host", diag);
    if host_text.is_none() && !e.has("host") {
        diag.error(e.path_of("host"), "required (host or host:port)");
    }
    let file = |key: &str, diag: &mut Diagnostics| {
        e.string(key, diag)
            .map(|p| checked_file(&resolve(base_dir, &p), &e.path_of(key), diag))
    };
    let ca_file = file("ca_file", diag);
    let client_cert = file("client_cert", diag);
    let client_key = file("client_key", diag);
    if client_cert.is_some() != client_key.is_some() {
        diag.error(e.path(), "client_cert and client_key go together");
    }
    let (host, port) = match host_text?.rsplit_once(':') {
        Some((h, p)) => match p.parse::<u16>() {
            Ok(port) => (h.to_ascii_lowercase(), Some(port)),
            Err(_) => {
                diag.error(e.path_of("host"), "the port after ':' is not a number");
                return None;
            }
        },
        None => (e.string("host", diag)?.to_ascii_lowercase(), None),
    };
    Some(EndpointTls {
        host,
        port,
        ca_file,
        client_cert,
        client_key,
        min_tls_version_13: tls_version(e, "min_tls_version", diag),
        insecure_skip_verify: e.boolean("insecure_skip_verify", diag).unwrap_or(false),
    })
}

pub(super) fn parse_access(s: Option<Section<'_>>, diag: &mut Diagnostics) -> AccessSettings {
    let Some(s) = s else {
        return AccessSettings::default();
    };
    let client_tokens = s.section("client_tokens", TOKEN_KEYS, diag).and_then(|t| {
        let header_text = t
            .string("header", diag)
            .unwrap_or_else(|| DEFAULT_TOKEN_HEADER.to_string());
        let header = http::HeaderName::from_bytes(header_text.as_bytes())
            .map_err(|_| {
                diag.error(
                    t.path_of("header"),
                    format!("{header_text:?} is not a header name"),
                )
            })
            .ok();
        let missing = t
            .value("sha256")
            .is_none_or(|v| v.as_sequence().is_some_and(|l| l.is_empty()));
        if missing {
            diag.error(t.path_of("sha256"), "at least one token hash is required");
        }
        let hashes = t.parsed_list(
            "sha256",
            "a SHA-256 hex digest",
            ClientTokens::parse_hash,
            diag,
        );
        Some(ClientTokens {
            header: header?,
            hashes,
        })
    });
    let litellm_keys = s.boolean("litellm_keys", diag).unwrap_or(false);
    if litellm_keys && client_tokens.is_some() {
        diag.error(
            s.path_of("litellm_keys"),
            "both read the client's Authorization header; use litellm_keys or client_tokens",
        );
    }
    AccessSettings {
        allowed_cidrs: cidr_list(&s, "allowed_cidrs", diag),
        client_tokens,
        litellm_keys,
    }
}
