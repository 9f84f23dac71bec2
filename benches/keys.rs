//! The cost `access.litellm_keys` adds to a request: taking the presented key from the head,
//! one SHA-256 of it and one map lookup among 10,000 keys (`admit`), then the model check and the
//! `rpm_limit` count. The whole-request cost is measured by the load benchmark.

mod common;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use pingora::http::RequestHeader;
use sha2::{Digest, Sha256};
use sidecar::access::litellm_keys::KeyTable;
use sidecar::db::keys::KeyRow;

const KEYS: usize = 10_000;

fn table() -> KeyTable {
    let rows = (0..KEYS)
        .map(|i| KeyRow {
            token: format!(
                "{:x}",
                Sha256::digest(format!("sk-bench-{i:05}").as_bytes())
            ),
            alias: Some(format!("app-{i}")),
            models: vec!["gpt-4o".to_string(), "claude".to_string()],
            expires: None,
            blocked: false,
            max_budget: Some(1e9),
            spend: 1.0,
            team_id: None,
            rpm_limit: (i == 1234).then_some(i64::MAX),
            tpm_limit: None,
            user_id: None,
        })
        .collect();
    KeyTable::new(rows, Vec::new())
}

fn bench_keys(c: &mut Criterion) {
    let table = table();
    let mut req = RequestHeader::build("POST", b"/v1/chat/completions", None).expect("head");
    req.insert_header("authorization", "Bearer sk-bench-01234")
        .expect("header");
    // Check once that the bench measures a real, successful lookup.
    let key = table.admit(&req).expect("a known key");
    assert_eq!(key.label, "app-1234");
    c.bench_function("keys/admit (hash + lookup + checks)", |b| {
        b.iter(|| table.admit(black_box(&req)).expect("admitted"))
    });
    c.bench_function("keys/admit + model check + rpm count", |b| {
        b.iter(|| {
            let key = table.admit(black_box(&req)).expect("admitted");
            key.check_model(black_box("claude")).expect("allowed");
            key.take_request().expect("under the limit");
        })
    });
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = bench_keys
}
criterion_main!(benches);
