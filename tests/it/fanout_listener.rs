//! The fan-out listener under unauthenticated floods: it has the proxy
//! listener's protections, its own cap (`fanout.max_connections`) and the head deadline, so
//! thousands of partial heads neither stay open nor grow the process, and a watcher's poll is
//! answered meanwhile.

use std::time::Duration;

use serde_json::json;
use sidecar::credentials::cipher::Format;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::support::config::yaml;
use crate::support::db_gateway::*;
use crate::support::http::admin_get;
use crate::support::pg::TestDb;
use crate::support::sidecar_process::SidecarProcess;
use crate::support::{closed_by_peer, free_port, metric, rss_kib, sha256_hex, wait_until_async};

const TOKEN: &str = "watch-token-listener-test-0123456789";
/// `fanout.max_connections` in this test.
const CAP: usize = 500;
/// Partial heads sent.
const FLOOD: usize = 3_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_heads_on_the_fanout_listener_are_capped_and_closed_while_watchers_are_served() {
    let _turn = crate::support::lock::alone().await;
    rlimit::increase_nofile_limit(FLOOD as u64 + 1_000).expect("raise the fd limit");
    let e = env().await;
    let db = TestDb::new(true).await;
    db.put_credential(
        "mine",
        json!({ "api_key": enc("sk-mine-v1", Format::Nacl) }),
        "openai",
    )
    .await;
    let port = free_port();
    let mut config = gateway(
        &e,
        &db,
        &TestDb::url(None),
        "1h",
        false,
        vec![credential_route(
            "mine",
            "mine",
            &e.mock.base_url(),
            "openai",
        )],
    );
    config["limits"] = json!({ "request_head_timeout": "2s" });
    config["fanout"] = json!({
        "address": format!("127.0.0.1:{port}"),
        "max_connections": CAP,
        "watchers": [{ "name": "w", "token_sha256": sha256_hex(TOKEN), "credentials": ["mine"] }],
    });
    let server =
        SidecarProcess::start_async(&yaml(&config), &[], &[("LITELLM_SALT_KEY", SALT)]).await;
    let poll = || {
        e.client
            .get(format!(
                "http://127.0.0.1:{port}/v1/snapshot?credential=mine"
            ))
            .bearer_auth(TOKEN)
            .timeout(Duration::from_secs(10))
            .send()
    };
    let ready = wait_until_async(DEADLINE, || async {
        poll().await.is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert!(ready, "the fan-out endpoint never answered");
    let idle_rss = rss_kib(server.pid());

    let mut held = Vec::with_capacity(FLOOD);
    for _ in 0..FLOOD {
        if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)).await {
            let _ = stream
                .write_all(b"GET /v1/snapshot?credential=mine HTTP/1.1\r\nAuthoriz")
                .await;
            held.push(stream);
        }
    }
    let page = admin_get(&server, "/metrics").await.1;
    let open = metric(&page, "sidecar_fanout_client_connections").expect("gauge");
    let answered = poll()
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| e.to_string());
    let peak_rss = rss_kib(server.pid());

    let closes = held
        .into_iter()
        .map(|s| tokio::spawn(closed_by_peer(s, Duration::from_secs(20))));
    let mut still_open = 0;
    for close in closes {
        if !close.await.expect("joined") {
            still_open += 1;
        }
    }
    let page = admin_get(&server, "/metrics").await.1;
    let value = |series: &str| metric(&page, series).unwrap_or_else(|| panic!("{series}"));
    println!(
        "{FLOOD} partial heads on the fan-out listener: {open} open at the end of the flood (cap \
         {CAP}); RSS idle {idle_rss} KiB, peak {peak_rss} KiB; poll during the flood: \
         {answered:?}; evicted {}, head timeouts {}",
        value("sidecar_fanout_client_connections_evicted_total{phase=\"unserved\"}"),
        value("sidecar_fanout_client_head_timeouts_total"),
    );
    assert!(open <= CAP as f64, "{open} open past the cap {CAP}");
    assert_eq!(answered, Ok(200), "a watcher's poll was kept out");
    assert_eq!(still_open, 0, "partial heads the sidecar never closed");
    // Every connection past the cap had to leave: evicted or timed out.
    let left = value("sidecar_fanout_client_connections_evicted_total{phase=\"unserved\"}")
        + value("sidecar_fanout_client_head_timeouts_total");
    assert!(left >= (FLOOD - CAP) as f64, "{left}");
}
