//! Soak: many requests at a fixed concurrency, one in ten streaming, through one sidecar; no
//! request may fail and the sidecar's resident memory must stay flat.
//!
//! CI runs a short form. The long form (documented in README "Tests"):
//! `SOAK_REQUESTS=200000 SOAK_CONCURRENCY=64 cargo test --release --test it soak -- --nocapture`.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::gateway::start_openai_only;
use serde_json::json;

fn knob(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Resident set size of `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_traffic_has_no_errors_and_flat_memory() {
    let _turn = crate::support::lock::alone().await;
    let total = knob("SOAK_REQUESTS", 5_000);
    let concurrency = knob("SOAK_CONCURRENCY", 16);
    let (mock, sidecar, _dir) = start_openai_only(|c| c["log"] = json!({ "level": "warn" })).await;
    let pid = sidecar.pid();
    let url = format!("{}/openai/chat/completions", sidecar.base_url());
    let client = reqwest::Client::new();
    let next = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(AtomicUsize::new(0));

    let done = Arc::new(AtomicBool::new(false));
    let sampler = tokio::spawn({
        let done = done.clone();
        async move {
            let mut samples = vec![rss_kib(pid)];
            while !done.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(100)).await;
                samples.push(rss_kib(pid));
            }
            samples
        }
    });
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, url, next, failures) =
                (client.clone(), url.clone(), next.clone(), failures.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= total {
                        break;
                    }
                    let mut req = client.post(&url).body(r#"{"model":"m"}"#);
                    if i % 10 == 0 {
                        req = req
                            .header("x-mock-sse-events", "3")
                            .header("x-mock-sse-delay-ms", "5");
                    }
                    let ok = match req.send().await {
                        Ok(resp) if resp.status() == 200 => resp.bytes().await.is_ok(),
                        _ => false,
                    };
                    if !ok {
                        failures.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.await.expect("worker");
    }
    done.store(true, Ordering::SeqCst);
    let samples = sampler.await.expect("sampler");
    assert_eq!(failures.load(Ordering::SeqCst), 0, "failed requests");
    assert_eq!(mock.requests().len(), total);
    eprintln!(
        "soak: {total} requests at concurrency {concurrency}; RSS KiB every 100 ms: {samples:?}"
    );
    // Flat: after the first quarter (pools, buffers and allocator arenas warming up), memory
    // may wobble but not climb with the request count.
    let warm = samples[samples.len() / 4];
    let last = *samples.last().expect("samples");
    assert!(
        last <= warm + 16 * 1024,
        "RSS grew from {warm} KiB to {last} KiB: {samples:?}"
    );
}
