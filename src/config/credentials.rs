//! Reads the `credentials` section: the salt-key variable, the local store, and LiteLLM's
//! database (`credentials.postgres`).

use std::path::Path;

use super::parse::{checked_file, resolve};
use super::reader::{Diagnostics, Section};
use super::schema::*;
use super::Env;
use crate::credentials::Secret;

pub(super) const CREDENTIAL_KEYS: &[&str] = &["salt_key_env", "local", "postgres"];
const POSTGRES_KEYS: &[&str] = &[
    "url",
    "schema",
    "refresh_interval",
    "listen",
    "channel",
    "ca_file",
    "connect_timeout",
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
    CredentialSettings {
        salt_key_env,
        local,
        postgres,
    }
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
