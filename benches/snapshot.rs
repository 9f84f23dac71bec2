//! Credential lookup from the lock-free snapshot, with and without a concurrent publisher.
//!
//! Every request takes the current snapshot (`CredentialCache::snapshot`, an `ArcSwap` load plus
//! an `Arc` clone) and looks its credential up by name; a refresh publishes a whole new snapshot
//! with one atomic store. The design promise is that a refresh never blocks or slows the request
//! path, so the benches compare two reader threads doing lookups in a 1,000-credential snapshot
//! alone (`readers_only`) against the same readers while a writer thread publishes fresh
//! snapshots back to back (`writer_continuous`, far more often than any real refresh) or once a
//! millisecond (`writer_every_1ms`). `one_reader_only` is the uncontended floor: the gap between
//! it and `readers_only` is the two readers' `Arc` clones contending for one reference count.
//! A snapshot whose last reader lets go is dropped by that
//! reader, as in the proxy.
//!
//! The time reported is per lookup, as seen by one reader: each reader times its own N lookups
//! and the mean of the two is returned for N iterations (both readers run at once, so the
//! throughput is twice the reciprocal). On a 2-core machine, the continuous writer is a third
//! busy thread, so that case also includes the readers losing CPU time to it.

mod common;

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use sidecar::credentials::{Credential, CredentialCache, Lookup, Secret, Snapshot};

const CREDENTIALS: usize = 1_000;

/// The decrypted credentials a refresh would produce (decryption itself is in `cipher`).
fn credentials() -> HashMap<String, Arc<Credential>> {
    (0..CREDENTIALS)
        .map(|i| {
            let name = format!("team-{i:04}-openai");
            let credential = Credential {
                name: name.clone(),
                provider: Some("openai".to_string()),
                api_key: Secret::new(format!(
                    "sk-proj-{i:04}-T3BlbkFJuVwXyZ0123456789abcdefghijkl"
                )),
                api_base: Some(format!("https://api{i}.example.com/v1")),
                api_version: None,
                header_values: Default::default(),
                aws: None,
                minted: None,
            };
            (name, Arc::new(credential))
        })
        .collect()
}

/// A fresh snapshot, built the way a refresh builds one: a new map over decrypted credentials.
fn snapshot(credentials: &HashMap<String, Arc<Credential>>) -> Snapshot {
    Snapshot {
        credentials: credentials.clone(),
        ..Snapshot::default()
    }
}

/// How the writer publishes while the readers run.
#[derive(Clone, Copy)]
enum Writer {
    None,
    Continuous,
    Every(Duration),
}

/// Runs `readers` threads doing `iters` lookups each; returns the mean per-reader time.
fn run(
    cache: &CredentialCache,
    creds: &HashMap<String, Arc<Credential>>,
    names: &[String],
    readers: usize,
    writer: Writer,
    iters: u64,
) -> Duration {
    let parties = readers + usize::from(!matches!(writer, Writer::None));
    let start = Barrier::new(parties);
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        if !matches!(writer, Writer::None) {
            let (start, done) = (&start, &done);
            s.spawn(move || {
                let mut next = snapshot(creds);
                start.wait();
                while !done.load(Ordering::Relaxed) {
                    cache.publish(next);
                    next = snapshot(creds);
                    if let Writer::Every(pause) = writer {
                        std::thread::sleep(pause);
                    }
                }
            });
        }
        let threads: Vec<_> = (0..readers)
            .map(|t| {
                let start = &start;
                s.spawn(move || {
                    let mut total = 0usize;
                    let mut k = t * (CREDENTIALS / readers);
                    start.wait();
                    let began = Instant::now();
                    for _ in 0..iters {
                        let snap = cache.snapshot();
                        match snap.credential(black_box(&names[k])) {
                            Lookup::Ready(c) => total += c.api_key.expose().len(),
                            _ => panic!("credential {} missing", names[k]),
                        }
                        k += 1;
                        if k == names.len() {
                            k = 0;
                        }
                    }
                    black_box(total);
                    began.elapsed()
                })
            })
            .collect();
        let elapsed: Duration = threads.into_iter().map(|r| r.join().expect("reader")).sum();
        done.store(true, Ordering::Relaxed);
        elapsed / readers as u32
    })
}

fn bench_snapshot(c: &mut Criterion) {
    let creds = credentials();
    let names: Vec<String> = {
        let mut names: Vec<String> = creds.keys().cloned().collect();
        names.sort();
        names
    };
    let cache = CredentialCache::default();
    cache.publish(snapshot(&creds));

    let mut group = c.benchmark_group("snapshot/lookup_1000_credentials");
    for (name, readers, writer) in [
        ("one_reader_only", 1, Writer::None),
        ("readers_only", 2, Writer::None),
        ("writer_continuous", 2, Writer::Continuous),
        (
            "writer_every_1ms",
            2,
            Writer::Every(Duration::from_millis(1)),
        ),
    ] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| run(&cache, &creds, &names, readers, writer, iters))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = bench_snapshot
}
criterion_main!(benches);
