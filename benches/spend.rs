//! The cost spend tracking adds to a request with a LiteLLM key, at its end: the price lookup
//! in LiteLLM's map (about 2,600 priced models), the cost arithmetic, and the record added to
//! the pending batch (the key's, team's and user's totals, three daily rows, the spend-log row).
//! The write itself is off the request path (one statement per flush interval).

mod common;

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use sidecar::spend::cost::cost;
use sidecar::spend::deployment_prices::DeploymentPricing;
use sidecar::spend::prices::PriceMap;
use sidecar::spend::tracker::{DeploymentRef, Finished, SpendNames, SpendTracker};
use sidecar::spend::writer::{SpendWriter, WriterSettings};
use sidecar::spend::Usage;

/// Records per tracker before a fresh one (a flush interval's worth at a high rate).
const PER_BATCH: u64 = 2_000;

fn tracker() -> SpendTracker {
    let writer = SpendWriter::new(WriterSettings {
        flush_interval: Duration::from_secs(10),
        spend_logs: true,
        max_pending_requests: PER_BATCH as usize,
    });
    SpendTracker::new(writer, PriceMap::built_in().expect("price map"))
}

/// Drops what `tracker` has pending (as a flush would take it), outside the measured time.
fn drain(tracker: &SpendTracker) {
    drop(tracker.writer().take_pending());
}

fn bench_spend(c: &mut Criterion) {
    let map = PriceMap::built_in().expect("price map");
    let usage = Usage {
        prompt: 12_000,
        completion: 800,
        cache_read: 4_096,
        ..Usage::default()
    };
    c.bench_function("spend/price lookup + cost", |b| {
        b.iter(|| {
            let price = map
                .find(black_box("gpt-4o"), black_box("openai"))
                .expect("priced");
            cost(price, black_box(&usage), "openai")
        })
    });
    let pricing = DeploymentPricing::default();
    let names = SpendNames::default();
    let (key, user, team): (Arc<str>, Arc<str>, Arc<str>) = (
        "88f0a2c6f1a5e3b9d7c4e2a1f0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1".into(),
        "user-42".into(),
        "team-7".into(),
    );
    let done = Finished {
        request_id: "0f3c2a9e-5b7d-4e21-9a11-3c0e9d8b7a65",
        key: (&key, Some(&user), Some(&team)),
        deployment: Some(DeploymentRef {
            id: "d-gpt-1",
            provider: "openai",
            model: "gpt-4o",
            api_base: Some("https://api.openai.com/v1"),
            pricing: &pricing,
            names: &names,
        }),
        alias: Some("gpt"),
        end_user: Some("customer-7"),
        endpoint: "/chat/completions",
        usage: Some(usage),
        answered_by: Some("gpt-4o-2024-08-06"),
        elapsed: Duration::from_millis(850),
        first_byte: Some(Duration::from_millis(320)),
        success: true,
    };
    c.bench_function("spend/record (price + cost + add to the batch)", |b| {
        let tracker = tracker();
        b.iter_custom(|iterations| {
            let mut spent = Duration::ZERO;
            let mut left = iterations;
            while left > 0 {
                drain(&tracker);
                let n = left.min(PER_BATCH);
                let start = Instant::now();
                for _ in 0..n {
                    tracker.record(black_box(&done));
                }
                spent += start.elapsed();
                left -= n;
            }
            spent
        })
    });
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = bench_spend
}
criterion_main!(benches);
