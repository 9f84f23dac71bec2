//! Shared integration-test harness: owns the submodule tree (`certs`, `config`, `http`,
//! `mock_provider`, `sidecar_process`, `lock`, ...) and small polling/port helpers. `tests/it/main.rs` declares it once for every module.
#![allow(dead_code)]

pub mod aws;
pub mod certs;
pub mod config;
pub mod db_gateway;
pub mod gateway;
pub mod http;
pub mod litellm_db;
pub mod litellm_venv;
pub mod lock;
pub mod mock_provider;
pub mod pg;
pub mod script_server;
pub mod sidecar_process;
pub mod spend;

use std::future::Future;
use std::net::TcpListener;
use std::time::{Duration, Instant};

/// SHA-256 of `text` as lowercase hex: what a config's `sha256` token digests hold.
pub fn sha256_hex(text: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Interval between polls in [`wait_until`] and [`wait_until_async`].
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// The ports [`free_port`] hands out: below Linux's ephemeral range (32768 up), so that no
/// outgoing connection is given one as its source port between the check and the bind.
const PORTS: std::ops::Range<u16> = 12_000..32_000;

/// A TCP port on 127.0.0.1 that was free a moment ago and that no other caller in this test
/// process was given: ports are handed out in turn from a random start (another test process
/// on the machine starts elsewhere), each checked by binding it. Binding port 0 instead gave
/// the same port to two servers of one test now and then (the kernel may hand a port out
/// again as soon as the probe closes), and took ports from the range outgoing connections use.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let span = u32::from(PORTS.end - PORTS.start);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        fastrand::u32(..span),
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..span {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed) % span;
        let port = PORTS.start + u16::try_from(offset).expect("offset < span");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {PORTS:?} on 127.0.0.1");
}

/// Polls `f` every 20 ms until it returns `true` (→ `true`) or `deadline` elapses (→ `false`).
/// `f` is always evaluated once more at the deadline, so a slow scheduler cannot cause a miss.
pub async fn wait_until<F>(deadline: Duration, mut f: F) -> bool
where
    F: FnMut() -> bool,
{
    wait_until_async(deadline, move || std::future::ready(f())).await
}

/// Like [`wait_until`], but the predicate is async (e.g. it performs a request).
pub async fn wait_until_async<F, Fut>(deadline: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let end = Instant::now() + deadline;
    loop {
        if f().await {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// The value of the sample named exactly `series` (name plus labels) on a Prometheus page.
pub fn metric(page: &str, series: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// The resident memory of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Whether the sidecar closed `stream` (end of stream or reset) within `limit`.
pub async fn closed_by_peer(mut stream: tokio::net::TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 512];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(
            deadline,
            tokio::io::AsyncReadExt::read(&mut stream, &mut buf),
        )
        .await
        {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}
