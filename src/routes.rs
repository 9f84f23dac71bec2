//! The route table: which route a request belongs to, decided by Host and path prefix.
//!
//! Built once per config. Matching order: routes with a `host` before routes without; then the
//! longest `path_prefix`. Prefixes match on segment boundaries, so `/openai` takes `/openai` and
//! `/openai/v1/...` but never `/openaiX`.

use std::sync::Arc;

use http::HeaderName;

use crate::access::Cidr;
use crate::config::{Backend, RouteConfig, UpstreamUrl};
use crate::identity::AllowedIdentity;
use crate::providers::{AuthStyle, CLIENT_CREDENTIAL_HEADERS};
use crate::upstream::{Target, Targets};

/// One route, ready to serve.
#[derive(Debug)]
pub struct Route {
    /// The route's name (logs, errors).
    pub name: String,
    /// Host to match, lowercase, without port.
    pub host: Option<String>,
    /// Path prefix to match, without trailing slash (`/` matches everything).
    pub path_prefix: Option<String>,
    /// Remove the prefix before forwarding.
    pub strip_prefix: bool,
    /// Where the request goes; for model routes, overrides the deployment's upstream.
    pub upstream: Option<Arc<UpstreamUrl>>,
    /// The endpoint of `upstream`, shared by every route with the same scheme, host and port.
    pub target: Option<Arc<Target>>,
    /// How the key is presented; for model routes, overrides the deployment provider's style.
    pub auth: Option<AuthStyle>,
    /// What supplies the key.
    pub backend: Backend,
    /// Client networks allowed on this route; empty allows all.
    pub allowed_cidrs: Vec<Cidr>,
    /// mTLS identities allowed on this route (typed, see [`crate::identity`]); empty allows
    /// any client.
    pub allowed_identities: Vec<AllowedIdentity>,
    /// Headers removed from the client's request: every header that carries a credential for
    /// any supported provider or any configured route, so a client key never passes through.
    pub strip_headers: Arc<[HeaderName]>,
    /// The route's request metrics (resolved on first use).
    pub metrics: crate::metrics::RouteMetrics,
}

impl Route {
    fn from_config(c: &RouteConfig, targets: &Targets, strip_headers: &Arc<[HeaderName]>) -> Route {
        Route {
            metrics: crate::metrics::RouteMetrics::new(&c.name),
            strip_headers: strip_headers.clone(),
            target: c.upstream.as_ref().map(|u| targets.target_for(u)),
            name: c.name.clone(),
            host: c.host.clone(),
            path_prefix: c.path_prefix.clone(),
            strip_prefix: c.strip_prefix,
            upstream: c.upstream.clone().map(Arc::new),
            auth: c.auth.clone(),
            backend: c.backend.clone(),
            allowed_cidrs: c.allowed_cidrs.clone(),
            allowed_identities: c.allowed_identities.clone(),
        }
    }

    fn matches(&self, host: Option<&str>, path: &str) -> bool {
        let host_ok = match (&self.host, host) {
            (None, _) => true,
            (Some(want), Some(got)) => want.eq_ignore_ascii_case(got),
            (Some(_), None) => false,
        };
        host_ok
            && self
                .path_prefix
                .as_deref()
                .is_none_or(|p| prefix_matches(p, path))
    }

    /// `path` without the route's prefix (`/` and no prefix remove nothing). `path` must be a
    /// path this route matched.
    pub fn path_after_prefix<'a>(&self, path: &'a str) -> &'a str {
        match self.path_prefix.as_deref() {
            Some(prefix) if prefix != "/" => path.strip_prefix(prefix).unwrap_or(path),
            _ => path,
        }
    }

    /// The path to send to `upstream`: its base path, then the request path (with the route's
    /// prefix removed when `strip_prefix` is set). Always starts with `/`. `path` must be the
    /// path this route matched.
    pub fn upstream_path(&self, upstream: &UpstreamUrl, path: &str) -> String {
        let rest = if self.strip_prefix {
            self.path_after_prefix(path)
        } else {
            path
        };
        let joined = format!("{}{rest}", upstream.base_path);
        if joined.is_empty() {
            "/".to_string()
        } else {
            joined
        }
    }
}

/// `prefix` matches `path` at a segment boundary.
fn prefix_matches(prefix: &str, path: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// All routes, in matching order.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<Arc<Route>>,
}

impl RouteTable {
    /// Builds the table from validated route configs, registering each upstream in `targets`.
    /// `also_strip` names further headers to remove from every request (the client-token
    /// header).
    pub fn new(
        configs: &[RouteConfig],
        targets: &Targets,
        also_strip: Option<&HeaderName>,
    ) -> RouteTable {
        let mut strip_headers: Vec<HeaderName> = CLIENT_CREDENTIAL_HEADERS
            .iter()
            .map(|name| HeaderName::from_static(name))
            .chain(also_strip.cloned())
            .collect();
        for config in configs.iter().filter_map(|c| c.auth.as_ref()) {
            let name = config.header_name();
            if !strip_headers.contains(&name) {
                strip_headers.push(name);
            }
        }
        let strip_headers: Arc<[HeaderName]> = strip_headers.into();
        let mut routes: Vec<Arc<Route>> = configs
            .iter()
            .map(|c| Arc::new(Route::from_config(c, targets, &strip_headers)))
            .collect();
        routes.sort_by_key(|r| {
            (
                r.host.is_none(),
                std::cmp::Reverse(r.path_prefix.as_ref().map_or(0, String::len)),
            )
        });
        RouteTable { routes }
    }

    /// The route for a request to `host` (any port suffix is ignored) and `path`.
    pub fn find(&self, host: Option<&str>, path: &str) -> Option<&Arc<Route>> {
        let host = host.map(strip_port);
        self.routes.iter().find(|r| r.matches(host, path))
    }

    /// Every route, in matching order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Route>> {
        self.routes.iter()
    }
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn table(routes: &str) -> RouteTable {
        let text = format!("listeners: [{{ address: \"127.0.0.1:1\" }}]\nroutes:\n{routes}");
        let config = Config::from_yaml(&text, std::path::Path::new("."), &|_| None).expect("valid");
        let targets = Targets::standalone(&config.upstream).expect("targets");
        RouteTable::new(&config.routes, &targets, None)
    }

    fn found(t: &RouteTable, host: Option<&str>, path: &str) -> Option<String> {
        t.find(host, path).map(|r| r.name.clone())
    }

    #[test]
    fn host_routes_first_then_longest_prefix_on_segment_boundaries() {
        let t = table(
            "  - { name: all, path_prefix: /, upstream: \"https://a\", provider: openai, credential: c }\n\
             \x20 - { name: openai, path_prefix: /openai, upstream: \"https://a\", provider: openai, credential: c }\n\
             \x20 - { name: openai-v1, path_prefix: /openai/v1, upstream: \"https://a\", provider: openai, credential: c }\n\
             \x20 - { name: by-host, host: llm.internal, upstream: \"https://a\", provider: openai, credential: c }\n",
        );
        assert_eq!(
            found(&t, None, "/openai/v1/chat").as_deref(),
            Some("openai-v1")
        );
        assert_eq!(found(&t, None, "/openai/v2").as_deref(), Some("openai"));
        assert_eq!(found(&t, None, "/openai").as_deref(), Some("openai"));
        assert_eq!(found(&t, None, "/openaiX/v1").as_deref(), Some("all"));
        assert_eq!(
            found(&t, Some("LLM.internal:4000"), "/openai/v1").as_deref(),
            Some("by-host")
        );
    }

    #[test]
    fn every_route_strips_every_configured_auth_header() {
        let t = table(
            "  - { name: a, path_prefix: /a, upstream: \"https://a\", provider: openai, credential: c }\n\
             \x20 - { name: b, path_prefix: /b, upstream: \"https://b\", provider: header, auth_header: X-Custom, credential: c }\n",
        );
        let a = t.find(None, "/a").expect("route");
        let names: Vec<&str> = a.strip_headers.iter().map(|h| h.as_str()).collect();
        assert!(
            names.contains(&"x-custom") && names.contains(&"authorization"),
            "{names:?}"
        );
    }

    #[test]
    fn no_match_is_none() {
        let t = table("  - { name: a, path_prefix: /a, upstream: \"https://a\", provider: openai, credential: c }\n");
        assert_eq!(found(&t, None, "/b"), None);
        assert_eq!(found(&t, None, "/ab"), None);
    }

    #[test]
    fn upstream_path_strips_and_joins() {
        let t = table(
            "  - { name: s, path_prefix: /openai, strip_prefix: true, upstream: \"https://a/v1\", provider: openai, credential: c }\n\
             \x20 - { name: k, path_prefix: /keep, upstream: \"https://a/base\", provider: openai, credential: c }\n\
             \x20 - { name: r, path_prefix: /root, strip_prefix: true, upstream: \"https://a\", provider: openai, credential: c }\n",
        );
        let path = |route: &Route, p: &str| {
            route.upstream_path(route.upstream.as_ref().expect("upstream"), p)
        };
        let s = t.find(None, "/openai/chat").expect("route");
        assert_eq!(path(s, "/openai/chat/completions"), "/v1/chat/completions");
        assert_eq!(path(s, "/openai"), "/v1");
        let k = t.find(None, "/keep/x").expect("route");
        assert_eq!(path(k, "/keep/x"), "/base/keep/x");
        let r = t.find(None, "/root").expect("route");
        assert_eq!(path(r, "/root"), "/");
        assert_eq!(path(r, "/root/models"), "/models");
    }
}
