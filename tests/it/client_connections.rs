//! Client connections held before any request is complete: a flood of half-open connections
//! (a partial request head, then nothing) neither starves the clients already connected nor
//! takes the sidecar's memory, and every one of them is closed by the sidecar within the head
//! deadline. Addresses outside `access.allowed_cidrs` are refused at accept.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::support::gateway::start_openai_only;
use crate::support::http::admin_get;
use crate::support::{closed_by_peer, metric, rss_kib};

/// Half-open connections opened, half of them from an address outside the allowed networks.
const HALF_OPEN: usize = 10_000;
/// `limits.max_client_connections` in this test.
const CAP: usize = 1_000;
/// What the flood may add to the sidecar's RSS: about 30 MiB was measured (the debug build the
/// tests run; 1,000 connections at the cap with their TLS handshakes in flight).
const FLOOD_GROWTH_LIMIT_KIB: u64 = 48 * 1024;

/// The `sidecar` container's memory limit in k8s/pod-sidecar/deployment.yaml, in KiB (`NNNMi`).
fn sidecar_memory_limit_kib() -> u64 {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/k8s/pod-sidecar/deployment.yaml"
    );
    let text = std::fs::read_to_string(path).expect("the pod-sidecar manifest");
    let manifest: serde_yaml::Value = serde_yaml::from_str(&text).expect("YAML");
    let pod = &manifest["spec"]["template"]["spec"];
    let containers = [&pod["initContainers"], &pod["containers"]];
    let sidecar = containers
        .iter()
        .filter_map(|list| list.as_sequence())
        .flatten()
        .find(|c| c["name"] == "sidecar")
        .expect("a container named sidecar");
    let limit = sidecar["resources"]["limits"]["memory"]
        .as_str()
        .expect("limits.memory");
    let mib: u64 = limit
        .strip_suffix("Mi")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("limits.memory {limit:?} is not NNNMi"));
    mib * 1024
}

/// Connects from `from` and sends the start of a request head, never the end.
async fn half_open(from: &str, to: std::net::SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(format!("{from}:0").parse().expect("address"))?;
    let mut stream = socket.connect(to).await?;
    // A refused connection may already be closed: the write can fail, which is fine.
    let _ = stream
        .write_all(b"POST /openai/chat/completions HTTP/1.1\r\nHost: sidecar\r\nContent-Ty")
        .await;
    Ok(stream)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_half_open_connections_neither_starve_clients_nor_exhaust_memory() {
    let _turn = crate::support::lock::alone().await;
    rlimit::increase_nofile_limit(HALF_OPEN as u64 + 1_000).expect("raise the fd limit");
    let (_mock, sidecar, _dir) = start_openai_only(|config| {
        config["access"] = json!({ "allowed_cidrs": ["127.0.0.1/32"] });
        config["limits"] = json!({ "max_client_connections": CAP, "request_head_timeout": "3s" });
    })
    .await;
    let pid = sidecar.pid();
    let url = format!("{}/openai/chat/completions", sidecar.base_url());
    let client = reqwest::Client::new();
    let first = client.post(&url).body("{}").send().await.expect("request");
    assert_eq!(first.status(), 200);
    let idle_rss = rss_kib(pid);

    // An application already connected keeps calling, one request at a time, kept alive.
    let stop = Arc::new(AtomicBool::new(false));
    let calls = tokio::spawn({
        let (stop, client, url) = (stop.clone(), client.clone(), url.clone());
        async move {
            let (mut served, mut failed) = (0usize, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                match client.post(&url).body("{}").send().await {
                    Ok(resp) if resp.status() == 200 => served += 1,
                    Ok(resp) => failed.push(resp.status().to_string()),
                    Err(e) => failed.push(e.to_string()),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (served, failed)
        }
    });

    let started = Instant::now();
    let mut held = Vec::with_capacity(HALF_OPEN);
    let mut peak_rss = idle_rss;
    let mut peak_open = 0.0f64;
    for i in 0..HALF_OPEN {
        let from = if i % 2 == 0 { "127.0.0.2" } else { "127.0.0.1" };
        if let Ok(stream) = half_open(from, sidecar.listen_addr()).await {
            held.push(stream);
        }
        if i % 1_000 == 999 {
            peak_rss = peak_rss.max(rss_kib(pid));
            let page = admin_get(&sidecar, "/metrics").await.1;
            let open = metric(&page, "sidecar_client_connections").expect("open connections");
            assert!(
                open <= CAP as f64,
                "{open} client connections open, cap {CAP}"
            );
            peak_open = peak_open.max(open);
        }
    }
    let flood = started.elapsed();
    peak_rss = peak_rss.max(rss_kib(pid));
    let opened = held.len();

    // Every half-open connection is closed by the sidecar: refused at once, or at the deadline.
    let closes = held
        .into_iter()
        .map(|s| tokio::spawn(closed_by_peer(s, Duration::from_secs(30))));
    let mut still_open = 0;
    for close in closes {
        if !close.await.expect("joined") {
            still_open += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let (served, failed) = calls.await.expect("joined");
    // The allocator hands freed pages back to the system after its decay time (about 10 s,
    // by its background thread): wait for that, a bounded time.
    let returned = idle_rss + (peak_rss - idle_rss) / 2;
    let mut after_rss = rss_kib(pid);
    let waiting = Instant::now();
    while after_rss >= returned && waiting.elapsed() < Duration::from_secs(40) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        after_rss = rss_kib(pid);
    }
    let returned_after = waiting.elapsed();
    let page = admin_get(&sidecar, "/metrics").await.1;
    let value = |series: &str| metric(&page, series).unwrap_or_else(|| panic!("{series}"));
    println!(
        "{opened} half-open connections in {flood:?}; peak {peak_open} open (cap {CAP}); RSS idle \
         {idle_rss} KiB, peak {peak_rss} KiB, after {after_rss} KiB ({returned_after:?} after \
         the last close); {served} requests served \
         meanwhile; refused at accept: {} by address, {} at the cap; {} head timeouts",
        value("sidecar_client_connections_refused_total{reason=\"address\"}"),
        value("sidecar_client_connections_refused_total{reason=\"limit\"}"),
        value("sidecar_client_head_timeouts_total"),
    );
    assert_eq!(still_open, 0, "connections the sidecar never closed");
    assert!(
        failed.is_empty(),
        "requests failed during the flood: {failed:?}"
    );
    assert!(served > 0);
    assert_eq!(
        value("sidecar_client_connections_refused_total{reason=\"address\"}"),
        (HALF_OPEN / 2) as f64,
        "every connection from outside the allowed networks is refused at accept"
    );
    assert!(value("sidecar_client_head_timeouts_total") >= 1.0);
    assert!(
        value("sidecar_client_connections") <= 1.0,
        "only the application's connection is left"
    );
    assert!(
        peak_rss - idle_rss < FLOOD_GROWTH_LIMIT_KIB,
        "the flood added {} KiB to RSS",
        peak_rss - idle_rss
    );
    let limit = sidecar_memory_limit_kib();
    assert!(
        peak_rss < limit,
        "peak RSS {peak_rss} KiB over the sidecar container's limit ({limit} KiB)"
    );
    assert!(
        after_rss < returned,
        "memory did not come back: idle {idle_rss}, peak {peak_rss}, after {after_rss} KiB"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_alive_connection_is_held_to_the_head_deadline_too() {
    let _turn = crate::support::lock::shared().await;
    let (_mock, sidecar, _dir) = start_openai_only(|config| {
        config["limits"] =
            json!({ "request_head_timeout": "2s", "client_keepalive_timeout": "1s" });
    })
    .await;
    let mut stream = TcpStream::connect(sidecar.listen_addr())
        .await
        .expect("connect");
    let request = "POST /openai/chat/completions HTTP/1.1\r\nHost: sidecar\r\n\
                   Content-Length: 2\r\n\r\n{}";
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut answer = [0u8; 4096];
    let n = stream.read(&mut answer).await.expect("read");
    assert!(
        answer[..n].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer[..n])
    );
    // Kept alive: the start of a second head, then nothing.
    stream
        .write_all(b"POST /openai/chat/completions HTTP/1.1\r\nHost: side")
        .await
        .expect("write");
    assert!(
        closed_by_peer(stream, Duration::from_secs(15)).await,
        "a partial second head kept the connection open"
    );
    let page = admin_get(&sidecar, "/metrics").await.1;
    assert_eq!(
        metric(&page, "sidecar_client_head_timeouts_total"),
        Some(1.0),
        "{page}"
    );
}
