//! Route matching: `RouteTable::find(host, path)` over a table of 100 routes.
//!
//! `find` runs once per request, on the request path, before anything else is decided. It is a
//! linear scan in matching order (host routes first, then the longest `path_prefix`), so its cost
//! grows with the route count and with how far down the table a request's route sits. The table
//! here mixes 25 host+path routes with 75 path-only routes, as a sidecar serving many teams or
//! tenants might; the cases are the best hit (the first route in matching order), the worst hit
//! (the last route, after every host route and every longer prefix was tried), a host-route hit
//! (the last of the host routes, with a `:port` suffix to strip) and a miss (a full scan that
//! ends in a 404).

mod common;

use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use sidecar::config::Config;
use sidecar::routes::RouteTable;
use sidecar::upstream::Targets;

const ROUTES: usize = 100;
/// The Host a client sends to reach the sidecar itself (matches no host route).
const SIDECAR_HOST: &str = "localhost:4000";

/// 100 credential routes: every fourth matches `host` + `/v1`, the others a path prefix only
/// (three prefix shapes, so the table is sorted by more than one length).
fn config_yaml() -> String {
    let mut text = String::from("listeners: [{ address: \"127.0.0.1:4000\" }]\nroutes:\n");
    for i in 0..ROUTES {
        let matcher = if i % 4 == 3 {
            format!("host: svc-{i:02}.llm.internal, path_prefix: /v1")
        } else {
            match i % 3 {
                0 => format!("path_prefix: /team-{i:02}/openai/v1"),
                1 => format!("path_prefix: /team-{i:02}/openai"),
                _ => format!("path_prefix: /team-{i:02}"),
            }
        };
        text.push_str(&format!(
            "  - {{ name: r{i:02}, {matcher}, upstream: \"https://api{i}.example.com\", \
             provider: openai, credential: cred-{i:02} }}\n"
        ));
    }
    text
}

fn bench_routing(c: &mut Criterion) {
    let config =
        Config::from_yaml(&config_yaml(), Path::new("."), &|_: &str| None).expect("valid config");
    let targets = Targets::standalone(&config.upstream).expect("targets");
    let table = RouteTable::new(&config.routes, &targets, None);
    let order: Vec<_> = table.iter().cloned().collect();
    assert_eq!(order.len(), ROUTES);

    // A request for one route: its host (with a port, as clients send it) or the sidecar's,
    // and a realistic path under its prefix.
    let request_for = |route: &sidecar::routes::Route| -> (String, String) {
        let host = match &route.host {
            Some(h) => format!("{h}:443"),
            None => SIDECAR_HOST.to_string(),
        };
        let prefix = route
            .path_prefix
            .as_deref()
            .expect("every route has a prefix");
        (host, format!("{prefix}/chat/completions"))
    };
    let first = &order[0];
    let last = &order[ROUTES - 1];
    let last_host = order
        .iter()
        .rev()
        .find(|r| r.host.is_some())
        .expect("host routes");
    let cases = [
        ("hit_first", request_for(first), Some(first.name.as_str())),
        ("hit_last", request_for(last), Some(last.name.as_str())),
        (
            "hit_host_route",
            request_for(last_host),
            Some(last_host.name.as_str()),
        ),
        (
            "miss",
            (
                SIDECAR_HOST.to_string(),
                "/unknown-team/v1/chat/completions".to_string(),
            ),
            None,
        ),
    ];

    let mut group = c.benchmark_group("routing/find_100_routes");
    for (name, (host, path), expected) in &cases {
        let found = table.find(Some(host), path).map(|r| r.name.as_str());
        assert_eq!(found, *expected, "{name}: {host} {path}");
        group.bench_function(*name, |b| {
            b.iter(|| {
                table
                    .find(black_box(Some(host.as_str())), black_box(path.as_str()))
                    .is_some()
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = bench_routing
}
criterion_main!(benches);
