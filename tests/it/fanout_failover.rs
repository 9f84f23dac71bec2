//! Fan-out with real serving sidecars over a real PostgreSQL: watchers move to another server
//! when theirs goes, come back within seconds when a server returns after an outage, and a
//! server releases the long polls whose watchers went away.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sidecar::credentials::cipher::Format;
use tokio::io::AsyncWriteExt;

use crate::fanout::{install_notify, mine_route, seed, server_config, TOKEN_A};
use crate::support::config::{self, yaml};
use crate::support::db_gateway::*;
use crate::support::http::admin_get;
use crate::support::pg::TestDb;
use crate::support::sidecar_process::SidecarProcess;
use crate::support::{free_port, metric, wait_until, wait_until_async};

const SERVER_ENV: &[(&str, &str)] = &[("LITELLM_SALT_KEY", SALT)];
const WATCHER_ENV: &[(&str, &str)] = &[("LITELLM_SALT_KEY", SALT), ("TEAM_TOKEN", TOKEN_A)];

/// A watcher of `watch` (`url` or `urls`), holding each poll up to 20 s.
fn watcher_config(e: &Env, watch: Value) -> String {
    let mut watch = watch;
    watch["token_env"] = json!("TEAM_TOKEN");
    watch["wait"] = json!("20s");
    yaml(&config::gateway(
        json!({ "ca_file": e.ca_file, "read_timeout": "5s" }),
        json!({ "watch": watch }),
        vec![mine_route(e)],
    ))
}

async fn rotate(db: &TestDb, key: &str) {
    db.put_credential(
        "mine",
        json!({ "api_key": enc(key, Format::Nacl) }),
        "openai",
    )
    .await;
}

/// For each watcher in turn, how long after `since` it first served `key` (`None`: not within
/// 40 s). Watchers are asked one after the other, so each figure is an upper bound.
async fn served_after(
    e: &Env,
    watchers: &[SidecarProcess],
    key: &str,
    since: Instant,
) -> Vec<Option<Duration>> {
    let expected = format!("Bearer {key}");
    let mut took = Vec::new();
    for watcher in watchers {
        let ok = wait_until_async(Duration::from_secs(40), || async {
            call(e, watcher, "/mine/x", "authorization")
                .await
                .1
                .as_deref()
                == Some(&expected)
        })
        .await;
        took.push(ok.then(|| since.elapsed()));
    }
    took
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_move_to_another_server_when_theirs_goes() {
    let _turn = crate::support::lock::alone().await;
    let e = env().await;
    let db = TestDb::new(true).await;
    seed(&db).await;
    let ports = [free_port(), free_port()];
    let confs = ports.map(|p| server_config(&e, &db, &TestDb::url(None), p, false));
    install_notify(&confs[0]);
    let mut servers = Vec::new();
    for conf in &confs {
        servers.push(SidecarProcess::start_async(&yaml(conf), &[], SERVER_ENV).await);
    }
    let urls: Vec<String> = ports
        .iter()
        .map(|p| format!("http://127.0.0.1:{p}"))
        .collect();
    let mut watchers = Vec::new();
    for _ in 0..4 {
        let conf = watcher_config(&e, json!({ "urls": urls }));
        watchers.push(SidecarProcess::start_async(&conf, &[], WATCHER_ENV).await);
    }
    for w in &watchers {
        assert_eq!(
            call(&e, w, "/mine/x", "authorization").await.1.as_deref(),
            Some("Bearer sk-mine-v1"),
            "{}",
            w.output()
        );
    }

    // One server goes; a key rotates: every watcher serves it, whichever server it was on.
    servers[0].stop();
    let rotated = Instant::now();
    rotate(&db, "sk-mine-v2").await;
    let took = served_after(&e, &watchers, "sk-mine-v2", rotated).await;
    println!("one of two servers gone, UPDATE → each watcher serves it: {took:?}");
    for (w, t) in watchers.iter().zip(&took) {
        assert!(
            t.is_some_and(|t| t < Duration::from_secs(8)),
            "{took:?}: {}",
            w.output()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_back_from_an_outage_is_used_within_seconds() {
    let _turn = crate::support::lock::alone().await;
    let e = env().await;
    let db = TestDb::new(true).await;
    seed(&db).await;
    let port = free_port();
    let conf = yaml(&server_config(&e, &db, &TestDb::url(None), port, false));
    let mut server = SidecarProcess::start_async(&conf, &[], SERVER_ENV).await;
    let watch = json!({ "url": format!("http://127.0.0.1:{port}") });
    let mut watchers = Vec::new();
    for _ in 0..4 {
        let conf = watcher_config(&e, watch.clone());
        watchers.push(SidecarProcess::start_async(&conf, &[], WATCHER_ENV).await);
    }
    for w in &watchers {
        assert_eq!(
            call(&e, w, "/mine/x", "authorization").await.0,
            200,
            "{}",
            w.output()
        );
    }
    // A 20 s outage, during which the key rotates.
    server.stop();
    rotate(&db, "sk-mine-v2").await;
    tokio::time::sleep(Duration::from_secs(20)).await;
    let _server = SidecarProcess::start_async(&conf, &[], SERVER_ENV).await;
    let back = Instant::now();
    let took = served_after(&e, &watchers, "sk-mine-v2", back).await;
    println!("after a 20 s outage, server back → each watcher serves the rotated key: {took:?}");
    for (w, t) in watchers.iter().zip(&took) {
        assert!(
            t.is_some_and(|t| t < Duration::from_secs(8)),
            "{took:?}: {}",
            w.output()
        );
    }
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

fn rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        / 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_long_polls_release_their_descriptors_at_once() {
    let _turn = crate::support::lock::alone().await;
    let e = env().await;
    let db = TestDb::new(true).await;
    seed(&db).await;
    let port = free_port();
    let conf = server_config(&e, &db, &TestDb::url(None), port, false);
    let server = SidecarProcess::start_async(&yaml(&conf), &[], SERVER_ENV).await;
    let url = format!("http://127.0.0.1:{port}/v1/snapshot?credential=mine");
    let mut tag = None;
    let end = Instant::now() + DEADLINE;
    while tag.is_none() && Instant::now() < end {
        if let Ok(r) = e.client.get(&url).bearer_auth(TOKEN_A).send().await {
            tag = r
                .headers()
                .get("etag")
                .and_then(|t| t.to_str().ok())
                .map(str::to_string);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let tag = tag.expect("no 200 from the fan-out endpoint");

    let pid = server.pid();
    let (fds_before, rss_before) = (open_fds(pid), rss_mib(pid));
    let request = format!(
        "GET /v1/snapshot?credential=mine&wait=120 HTTP/1.1\r\nhost: x\r\n\
         authorization: Bearer {TOKEN_A}\r\nif-none-match: {tag}\r\n\r\n"
    );
    let mut polls = Vec::new();
    for _ in 0..300 {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        s.write_all(request.as_bytes()).await.expect("write");
        polls.push(s);
    }
    let held = wait_until(DEADLINE, || open_fds(pid) >= fds_before + 290).await;
    let (fds_held, rss_held) = (open_fds(pid), rss_mib(pid));
    assert!(
        held,
        "the polls were not held: {fds_before} → {fds_held} fds"
    );
    drop(polls);
    let closed = Instant::now();
    let released = wait_until(Duration::from_secs(10), || open_fds(pid) <= fds_before + 10).await;
    println!(
        "300 held polls: {fds_before} → {fds_held} fds, {rss_before} → {rss_held} MiB; \
         closed by their clients: {} fds after {:?}, {} MiB",
        open_fds(pid),
        closed.elapsed(),
        rss_mib(pid)
    );
    assert!(
        released,
        "300 polls closed by their clients (wait=120) still hold {} fds (before: {fds_before})",
        open_fds(pid)
    );
    let (_, page) = admin_get(&server, "/metrics").await;
    assert_eq!(
        metric(&page, "sidecar_fanout_requests_total{result=\"abandoned\"}"),
        Some(300.0),
        "{page}"
    );
}
