//! The header strip + inject step: `proxy::rewrite::rewrite_request` on a realistic request.
//!
//! Every forwarded request goes through it, on the request path: rewrite the path and query
//! (strip the route prefix, drop client `key=` parameters), remove every header that could carry
//! a client credential (`authorization`, `x-api-key`, `api-key`, `x-goog-api-key`, ...), inject
//! the route's key, add `anthropic-version` when missing and point `Host` at the upstream. The
//! request carries 10 headers, including a client `Authorization` and `x-api-key` to strip, as an
//! SDK sends them. The per-iteration clone of the request is done outside the timed region
//! (`iter_batched`), and the rewritten request is dropped outside it too.

mod common;

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use pingora::http::RequestHeader;
use sidecar::config::Config;
use sidecar::credentials::{Credential, Secret};
use sidecar::proxy::rewrite::rewrite_request;
use sidecar::router::Binding;
use sidecar::routes::{Route, RouteTable};
use sidecar::upstream::Targets;

/// A realistic provider key (51 characters).
const API_KEY: &str = "sk-AbCdEfGhIjKlMnOpQrStT3BlbkFJuVwXyZ0123456789abcd";

const CONFIG: &str = "listeners: [{ address: \"127.0.0.1:4000\" }]
routes:
  - { name: openai, path_prefix: /openai, strip_prefix: true, upstream: \"https://api.openai.com\", provider: openai, credential: openai-key }
  - { name: anthropic, path_prefix: /anthropic, strip_prefix: true, upstream: \"https://api.anthropic.com\", provider: anthropic, credential: anthropic-key }
";

fn route(table: &RouteTable, name: &str) -> Arc<Route> {
    table
        .iter()
        .find(|r| r.name == name)
        .expect("route in config")
        .clone()
}

fn binding(route: &Route) -> Binding {
    let name = match &route.backend {
        sidecar::config::Backend::Credential(name) => name.clone(),
        other => panic!("credential route expected, got {other:?}"),
    };
    Binding {
        credential: Arc::new(Credential {
            name,
            provider: None,
            api_key: Secret::new(API_KEY.to_string()),
            api_base: None,
            api_version: None,
            header_values: Default::default(),
            aws: None,
            minted: None,
        }),
        upstream: route.upstream.clone().expect("upstream"),
        target: route.target.clone().expect("target"),
        auth: route.auth.clone().expect("provider"),
        path: None,
        model: None,
    }
}

/// What an SDK sends to the sidecar: its own placeholder credentials, JSON, the usual extras.
fn client_request(target: &str, extra: (&'static str, &str)) -> RequestHeader {
    let mut req = RequestHeader::build("POST", target.as_bytes(), None).expect("request");
    for (name, value) in [
        ("Host", "localhost:4000"),
        (
            "Authorization",
            "Bearer sk-client-placeholder-0000000000000000",
        ),
        ("x-api-key", "sk-client-placeholder-0000000000000000"),
        ("Content-Type", "application/json"),
        ("Content-Length", "1832"),
        ("Accept", "application/json"),
        ("Accept-Encoding", "gzip, deflate, br"),
        ("User-Agent", "OpenAI/Python 1.54.4"),
        ("X-Request-Id", "4f1c2b7e-9a0d-4e8b-b1c3-5d6e7f8a9b0c"),
        extra,
    ] {
        req.append_header(name, value).expect("header");
    }
    req
}

fn bench_rewrite(c: &mut Criterion) {
    let config = Config::from_yaml(CONFIG, Path::new("."), &|_: &str| None).expect("valid config");
    let targets = Targets::standalone(&config.upstream).expect("targets");
    let table = RouteTable::new(&config.routes, &targets, None);

    let cases = [
        (
            "openai",
            client_request(
                "/openai/v1/chat/completions?stream=true",
                ("OpenAI-Organization", "org-placeholder"),
            ),
            "authorization",
        ),
        (
            "anthropic",
            client_request(
                "/anthropic/v1/messages?beta=true",
                ("anthropic-version", "2023-06-01"),
            ),
            "x-api-key",
        ),
    ];

    let mut group = c.benchmark_group("rewrite/rewrite_request");
    for (name, request, injected) in &cases {
        let route = route(&table, name);
        let binding = binding(&route);

        // Check once that the bench measures a real, successful rewrite.
        let mut check = request.clone();
        rewrite_request(&mut check, &route, &binding, None).expect("rewrite");
        let value = check.headers.get(*injected).expect("injected header");
        assert!(value.to_str().expect("ascii").ends_with(API_KEY), "{name}");
        assert_eq!(check.headers.get_all(*injected).iter().count(), 1, "{name}");
        assert!(check.uri.path().starts_with("/v1/"), "{name}");

        group.bench_function(*name, |b| {
            b.iter_batched(
                || request.clone(),
                |mut req| {
                    rewrite_request(
                        black_box(&mut req),
                        black_box(&route),
                        black_box(&binding),
                        None,
                    )
                    .expect("rewrite");
                    req
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = bench_rewrite
}
criterion_main!(benches);
