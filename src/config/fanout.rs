//! Reads the `fanout` section: the listener other sidecars watch for the database rows, and
//! the grant of each watcher (its token's SHA-256, the names and the LiteLLM keys it may
//! receive).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;

use super::network::{parse_listener_tls, LISTENER_TLS_KEYS};
use super::reader::Env;
use super::reader::{Diagnostics, Section};
use super::schema::*;
use crate::access::ClientTokens;

pub(super) const FANOUT_KEYS: &[&str] = &[
    "address",
    "tls",
    "watchers",
    "max_connections",
    "max_connections_per_source",
];
const WATCHER_KEYS: &[&str] = &[
    "name",
    "token_sha256",
    "credentials",
    "models",
    "litellm_keys",
];
const KEY_GRANT_KEYS: &[&str] = &["teams"];

/// `litellm_keys: all | {teams: [..]}` under `key` in `s` (absent: `None`).
pub(super) fn parse_key_grant(
    s: &Section<'_>,
    key: &str,
    diag: &mut Diagnostics,
) -> Option<KeyGrant> {
    let value = s.value(key)?;
    if value.as_str() == Some("all") {
        return Some(KeyGrant::All);
    }
    if value.is_string() {
        diag.error(s.path_of(key), "expected `all` or {teams: [team_id, …]}");
        return None;
    }
    let grant = s.section(key, KEY_GRANT_KEYS, diag)?;
    let teams = grant.parsed_list(
        "teams",
        "a team_id",
        |t| Ok::<_, String>(t.to_string()),
        diag,
    );
    if teams.is_empty() {
        diag.error(
            grant.path_of("teams"),
            "at least one team_id is required (or `litellm_keys: all`)",
        );
        return None;
    }
    Some(KeyGrant::Teams(teams))
}

pub(super) fn parse_fanout(
    s: Option<Section<'_>>,
    base_dir: &Path,
    env: &Env,
    taken: &[&str],
    diag: &mut Diagnostics,
) -> Option<FanoutSettings> {
    let s = s?;
    let address = s.string("address", diag);
    if address.is_none() && !s.has("address") {
        diag.error(s.path_of("address"), "required (e.g. 0.0.0.0:9443)");
    }
    let tls = s
        .section("tls", LISTENER_TLS_KEYS, diag)
        .and_then(|t| parse_listener_tls(&t, base_dir, env, diag));
    if let Some(address) = &address {
        match address.parse::<SocketAddr>() {
            Err(_) => diag.error(
                s.path_of("address"),
                format!("{address:?} is not IP:PORT (e.g. 0.0.0.0:9443)"),
            ),
            Ok(a) if tls.is_none() && !a.ip().is_loopback() && !s.has("tls") => diag.error(
                s.path_of("tls"),
                format!(
                    "required: {address} is reachable from other hosts, and watchers send their \
                     tokens (plain HTTP is allowed on loopback addresses only)"
                ),
            ),
            Ok(_) if taken.contains(&address.as_str()) => diag.error(
                s.path_of("address"),
                format!("{address} is already a proxy or admin listener"),
            ),
            Ok(_) => {}
        }
    }
    let items = s.non_empty_list("watchers", "watcher", diag);
    let mut names = HashSet::new();
    let mut tokens = HashSet::new();
    let mut watchers = Vec::new();
    for (path, item) in items {
        let Some(w) = Section::open(item, &path, WATCHER_KEYS, diag) else {
            continue;
        };
        let name = w.string("name", diag);
        match &name {
            None if !w.has("name") => diag.error(w.path_of("name"), "required"),
            Some(n) if !names.insert(n.clone()) => {
                diag.error(w.path_of("name"), format!("{n:?} is listed twice"))
            }
            _ => {}
        }
        let token = w.string("token_sha256", diag);
        if token.is_none() && !w.has("token_sha256") {
            diag.error(
                w.path_of("token_sha256"),
                "required (the SHA-256 hex digest of the watcher's token: \
                 printf %s \"$TOKEN\" | sha256sum)",
            );
        }
        let token = token.and_then(|t| match ClientTokens::parse_hash(&t) {
            Ok(hash) if !tokens.insert(hash) => {
                diag.error(w.path_of("token_sha256"), "two watchers share this token");
                None
            }
            Ok(hash) => Some(hash),
            Err(e) => {
                diag.error(w.path_of("token_sha256"), e);
                None
            }
        });
        let names_under = |key: &str, diag: &mut Diagnostics| {
            w.parsed_list(key, "a name", |n| Ok::<_, String>(n.to_string()), diag)
        };
        let credentials = names_under("credentials", diag);
        let models = names_under("models", diag);
        let litellm_keys = parse_key_grant(&w, "litellm_keys", diag);
        if credentials.is_empty() && models.is_empty() && !w.has("litellm_keys") {
            diag.error(
                w.path(),
                "grants nothing: list the credentials, models and/or litellm_keys this watcher \
                 may receive",
            );
        }
        if let (Some(name), Some(token_sha256)) = (name, token) {
            watchers.push(WatcherGrant {
                name,
                token_sha256,
                credentials,
                models,
                litellm_keys,
            });
        }
    }
    let max_connections = s
        .number("max_connections", 1, 1_000_000, diag)
        .unwrap_or(DEFAULT_FANOUT_MAX_CONNECTIONS);
    let max_connections_per_source = s.number("max_connections_per_source", 1, 1_000_000, diag);
    Some(FanoutSettings {
        address: address?,
        tls,
        watchers,
        max_connections,
        max_connections_per_source,
    })
}
