//! Reads `routes`: which requests each route takes (`host`, `path_prefix`) and what serves them
//! (`credential`, `model` or `dispatch: model`, with `upstream` and `provider`).

use std::collections::HashSet;

use super::reader::{cidr_list, Diagnostics, Section};
use super::schema::*;
use super::url::UpstreamUrl;
use crate::identity::AllowedIdentity;
use crate::providers::AuthStyle;

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

pub fn parse_routes(top: &Section<'_>, diag: &mut Diagnostics) -> Vec<RouteConfig> {
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
    let allowed_cidrs = cidr_list(s, "allowed_cidrs", diag);
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
