//! `GET /config`: what is in force now, after the last reload and the last credential refresh,
//! as names, shapes and fingerprints, never a value.
//!
//! - `config`: the SHA-256 of the file the routes came from and when they went into force, so
//!   an operator can check that a reload took (and that every replica runs the same file);
//! - `routes`: each route as matched and forwarded (host, prefix, upstream, auth header, what
//!   supplies the key, who may call it);
//! - `access`: the client rules (token header and how many tokens, never the tokens' hashes);
//! - `credentials` and `models`: what the snapshot holds, with a fingerprint of each key: the
//!   first 8 hex digits of its SHA-256, the length the access log uses for LiteLLM keys. Enough
//!   to see that a rotation reached an instance, far too little to check a guess of the key;
//! - `failures`: names that did not load and why (the reasons name fields, never values).

use std::time::{Duration, SystemTime};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::config::{Backend, UpstreamUrl};
use crate::credentials::{Credential, Snapshot};
use crate::live_config::LiveConfig;
use crate::routes::Route;

/// The report `GET /config` answers with.
pub fn config_report(
    live_config: &LiveConfig,
    snapshot: &Snapshot,
    snapshot_age: Duration,
) -> Value {
    let mut credentials: Vec<Value> = snapshot
        .credentials
        .values()
        .map(|c| credential(c))
        .collect();
    credentials.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    let mut models: Vec<Value> = snapshot
        .models
        .iter()
        .map(|(alias, deployments)| {
            let list: Vec<Value> = deployments
                .all()
                .iter()
                .map(|d| {
                    json!({
                        "model_id": d.id,
                        "provider": d.provider,
                        "model": d.model,
                        "upstream": d.upstream.as_deref().map(UpstreamUrl::to_string),
                        "weight": d.weight,
                        "credential": d.credential.name,
                        "key_fingerprint": key_fingerprint(&d.credential),
                        "minted": d.credential.minted.as_ref().map(|m| m.name()),
                        "aws": d.credential.aws.as_ref().map(|a| a.report()),
                    })
                })
                .collect();
            json!({ "alias": alias, "deployments": list })
        })
        .collect();
    models.sort_by(|a, b| a["alias"].as_str().cmp(&b["alias"].as_str()));
    json!({
        "config": {
            "sha256": live_config.config_digest,
            "loaded_at": humantime::format_rfc3339_seconds(live_config.loaded_at).to_string(),
            "loaded_seconds_ago": SystemTime::now()
                .duration_since(live_config.loaded_at)
                .unwrap_or_default()
                .as_secs(),
        },
        "routes": live_config.routes.iter().map(|r| route(r)).collect::<Vec<_>>(),
        "access": {
            "allowed_cidrs": live_config.access.allowed_cidrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "client_tokens": live_config.access.client_tokens.as_ref().map(|t| json!({
                "header": t.header.as_str(),
                "count": t.hashes.len(),
            })),
            "litellm_keys": live_config.access.litellm_keys.then(|| json!({
                "loaded": snapshot.litellm_keys.as_ref().map(|k| k.len()),
            })),
        },
        "credentials": {
            "snapshot_age_seconds": snapshot_age.as_secs(),
            "entries": credentials,
        },
        "models": models,
        "minted_credentials": crate::minted::report(),
        "failures": {
            "credentials": sorted_pairs(&snapshot.credential_failures, "name"),
            "models": sorted_pairs(&snapshot.model_failures, "alias"),
        },
    })
}

fn route(route: &Route) -> Value {
    let (kind, name) = match &route.backend {
        Backend::Credential(name) => ("credential", Some(name.as_str())),
        Backend::Model(alias) => ("model", Some(alias.as_str())),
        Backend::RequestModel => ("dispatch_model", None),
    };
    json!({
        "name": route.name,
        "host": route.host,
        "path_prefix": route.path_prefix,
        "strip_prefix": route.strip_prefix,
        "upstream": route.upstream.as_deref().map(UpstreamUrl::to_string),
        "auth_header": route.auth.as_ref().map(|a| a.header_name().to_string()),
        "backend": { "kind": kind, "name": name },
        "allowed_cidrs": route.allowed_cidrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "allowed_identities": route.allowed_identities.iter().map(ToString::to_string).collect::<Vec<_>>(),
    })
}

fn credential(credential: &Credential) -> Value {
    json!({
        "name": credential.name,
        "provider": credential.provider,
        // `api_base` is shown as the sidecar reads it (scheme, host, port, path), or redacted
        // (user info and query values replaced) when it cannot be read, so neither is echoed.
        "api_base": credential.api_base.as_deref().map(|base| {
            UpstreamUrl::parse(base).map_or_else(|_| crate::config::redacted(base), |u| u.to_string())
        }),
        "api_version": credential.api_version,
        "key_fingerprint": key_fingerprint(credential),
        "minted": credential.minted.as_ref().map(|m| m.name()),
        "aws": credential.aws.as_ref().map(|a| a.report()),
    })
}

/// The key's [fingerprint]; `None` for a minted token (see `minted_credentials`) or AWS keys
/// (see `aws`).
fn key_fingerprint(credential: &Credential) -> Option<String> {
    (credential.minted.is_none() && credential.aws.is_none())
        .then(|| fingerprint(credential.api_key.expose()))
}

/// The first 8 hex digits of the key's SHA-256.
fn fingerprint(key: &str) -> String {
    hex::encode(&Sha256::digest(key.as_bytes())[..4])
}

fn sorted_pairs(map: &std::collections::HashMap<String, String>, key: &str) -> Vec<Value> {
    let mut pairs: Vec<(&String, &String)> = map.iter().collect();
    pairs.sort();
    pairs
        .into_iter()
        .map(|(name, reason)| json!({ key: name, "reason": reason }))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fingerprint_is_eight_hex_digits_of_the_sha256() {
        // SHA-256("abc") = ba7816bf…
        assert_eq!(fingerprint("abc"), "ba7816bf");
    }
}
