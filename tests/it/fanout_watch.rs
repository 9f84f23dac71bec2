//! A watcher against hostile or broken fan-out servers (a scripted server on 127.0.0.1): one
//! that accepts and never answers, one that answers 60 MB, one that sends rows nobody asked
//! for; and what a watcher's start costs its server (one full snapshot, nothing orphaned).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use sidecar::credentials::cipher::Format;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::config::{self, yaml};
use crate::support::db_gateway::*;
use crate::support::http::admin_get;
use crate::support::sidecar_process::SidecarProcess;
use crate::support::{metric, wait_until_async};

/// What the scripted server does with one request.
#[derive(Clone)]
enum Act {
    /// Writes these bytes (a whole response) and reads the next request.
    Reply(Arc<Vec<u8>>),
    /// Never answers; counts the client closing the connection.
    Hang,
}

/// A fan-out server that answers from a script: `(request head, request number) → Act`.
struct Scripted {
    port: u16,
    heads: Arc<Mutex<Vec<String>>>,
    /// Held requests whose client closed the connection.
    closed_while_held: Arc<AtomicUsize>,
}

type Script = Arc<dyn Fn(&str, usize) -> Act + Send + Sync>;

impl Scripted {
    async fn start(script: Script) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let closed_while_held = Arc::new(AtomicUsize::new(0));
        let (h, c) = (heads.clone(), closed_while_held.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, script.clone(), h.clone(), c.clone()));
            }
        });
        Scripted {
            port,
            heads,
            closed_while_held,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().expect("lock").clone()
    }
}

async fn serve(
    mut stream: TcpStream,
    script: Script,
    heads: Arc<Mutex<Vec<String>>>,
    closed: Arc<AtomicUsize>,
) {
    let mut buf = Vec::new();
    loop {
        let mut chunk = [0u8; 4096];
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end + 4);
        let n = {
            let mut heads = heads.lock().expect("lock");
            heads.push(head.clone());
            heads.len() - 1
        };
        match script(&head, n) {
            Act::Reply(bytes) => {
                if stream.write_all(&bytes).await.is_err() {
                    return;
                }
            }
            Act::Hang => {
                while let Ok(n) = stream.read(&mut chunk).await {
                    if n == 0 {
                        break;
                    }
                }
                closed.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
    }
}

/// A 200 with `body` and entity tag `tag`.
fn snapshot(tag: &str, body: &[u8]) -> Act {
    let mut bytes = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\netag: \"{tag}\"\r\n\r\n",
        body.len()
    )
    .into_bytes();
    bytes.extend_from_slice(body);
    Act::Reply(Arc::new(bytes))
}

/// The rows of credential `mine` holding `key`, plus `others` rows nobody asked for (written
/// out directly: a million `Value`s would cost the test more than the watcher).
fn rows(key: &str, others: usize) -> Vec<u8> {
    let mine = json!({ "name": "mine", "values": { "api_key": enc(key, Format::Nacl) } });
    let mut out = format!("{{\"credentials\":[{mine}").into_bytes();
    for i in 0..others {
        out.extend_from_slice(
            format!(",{{\"name\":\"other-{i}\",\"values\":{{\"api_key\":\"x\"}}}}").as_bytes(),
        );
    }
    out.extend_from_slice(b"],\"models\":[]}");
    out
}

fn watcher_config(e: &Env, server: &str, wait: &str) -> String {
    yaml(&config::gateway(
        json!({ "ca_file": e.ca_file, "read_timeout": "5s" }),
        json!({ "watch": { "url": server, "token_env": "TEAM_TOKEN", "wait": wait } }),
        vec![credential_route(
            "mine",
            "mine",
            &e.mock.base_url(),
            "openai",
        )],
    ))
}

const WATCHER_ENV: &[(&str, &str)] = &[
    ("LITELLM_SALT_KEY", SALT),
    ("TEAM_TOKEN", "watch-token-0123456789"),
];

/// Starts a watcher; `Err` (with its output) when it does not serve within the harness's
/// deadline. A start that lost its port to a parallel test is tried again.
async fn start_watcher(config: &str) -> Result<SidecarProcess, String> {
    let config = config.to_string();
    tokio::task::spawn_blocking(move || {
        let mut attempts = 0;
        loop {
            attempts += 1;
            match SidecarProcess::try_start(&config, &[], WATCHER_ENV) {
                Err(e) if attempts < 3 && e.contains("in use") => continue,
                result => return result,
            }
        }
    })
    .await
    .expect("join")
}

async fn metrics(watcher: &SidecarProcess) -> String {
    admin_get(watcher, "/metrics").await.1
}

/// Peak resident memory of a process, in MiB.
fn peak_rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmHWM")
        / 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_answers_neither_blocks_the_start_nor_looks_fresh() {
    let _turn = crate::support::lock::shared().await;
    let e = env().await;
    // The start-up poll hangs; the poller's first poll is answered; the next answer stops
    // after its head and a few bytes of body; every later poll hangs.
    let body = rows("sk-mine-v1", 0);
    let stalled = Act::Reply(Arc::new(
        b"HTTP/1.1 200 OK\r\netag: \"t2\"\r\ncontent-length: 1000\r\n\r\n{\"cred".to_vec(),
    ));
    let server = Scripted::start(Arc::new(move |_, n| match n {
        1 => snapshot("t1", &body),
        2 => stalled.clone(),
        _ => Act::Hang,
    }))
    .await;
    let watcher = start_watcher(&watcher_config(&e, &server.url(), "1s"))
        .await
        .unwrap_or_else(|e| panic!("the start waits on a hung server: {e}"));
    assert!(
        watcher.wait_for_output("timed out after").await,
        "{}",
        watcher.output()
    );
    let ok = wait_until_async(DEADLINE, || async {
        call(&e, &watcher, "/mine/x", "authorization")
            .await
            .1
            .as_deref()
            == Some("Bearer sk-mine-v1")
    })
    .await;
    assert!(
        ok,
        "the poller never served the answer: {}",
        watcher.output()
    );

    // Every poll after that hangs: a WARN names the server, and the snapshot ages from the
    // last answer until /readyz calls it stale (wait 1 s: stale after 17 s).
    let stale = wait_until_async(Duration::from_secs(40), || async {
        let (_, body) = admin_get(&watcher, "/readyz").await;
        let report: Value = serde_json::from_str(&body).unwrap_or_default();
        !report["stale"].is_null()
    })
    .await;
    let page = metrics(&watcher).await;
    assert!(stale, "never stale: {page}\n{}", watcher.output());
    let age = metric(&page, "sidecar_credential_snapshot_age_seconds").unwrap_or(0.0);
    assert!(age >= 15.0, "snapshot_age {age}: {page}");
    assert!(
        metric(&page, "sidecar_watch_polls_total{result=\"timeout\"}").unwrap_or(0.0) >= 2.0,
        "{page}"
    );
    let output = watcher.output();
    let warned = output
        .lines()
        .any(|l| l.contains("WARN") && l.contains("timed out after") && l.contains(&server.url()));
    assert!(warned, "no WARN naming the hung server: {output}");
    assert!(
        output.contains("timed out after 5s reading the answer"),
        "{output}"
    );
    assert!(!output.contains("watch-token-0123456789"), "{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_60_mb_answer_is_refused_unread_and_a_restart_does_not_crash_loop() {
    let _turn = crate::support::lock::alone().await;
    let e = env().await;
    // 1.3 million rows nobody asked for: 60 MB declared, then 60 MB undeclared (read until
    // the server closes), alternately.
    let huge = Arc::new(rows("sk-mine-v1", 1_300_000));
    assert!(huge.len() > 60_000_000, "{}", huge.len());
    let declared = snapshot("big", &huge);
    let mut undeclared = b"HTTP/1.1 200 OK\r\netag: \"big\"\r\nconnection: close\r\n\r\n".to_vec();
    undeclared.extend_from_slice(&huge);
    let undeclared = Act::Reply(Arc::new(undeclared));
    let server = Scripted::start(Arc::new(move |_, n| {
        if n % 2 == 0 {
            declared.clone()
        } else {
            undeclared.clone()
        }
    }))
    .await;
    for round in 0..2 {
        let mut watcher = start_watcher(&watcher_config(&e, &server.url(), "1s"))
            .await
            .expect("start");
        // Several answers of each kind arrive and are refused.
        let refused = wait_until_async(DEADLINE, || async {
            metric(
                &metrics(&watcher).await,
                "sidecar_watch_polls_total{result=\"too_large\"}",
            )
            .unwrap_or(0.0)
                >= 3.0
        })
        .await;
        let peak = peak_rss_mib(watcher.pid());
        println!("round {round}: peak RSS {peak} MiB after 60 MB answers");
        assert!(refused, "answers not refused: {}", metrics(&watcher).await);
        assert!(watcher.try_exit_status().is_none(), "{}", watcher.output());
        assert!(peak < 100, "peak RSS {peak} MiB: {}", watcher.output());
        assert_eq!(call(&e, &watcher, "/mine/x", "authorization").await.0, 503);
        let output = watcher.output();
        assert!(output.contains("larger than max_answer_bytes"), "{output}");
        assert!(
            output.lines().count() < 100,
            "{} lines",
            output.lines().count()
        );
        watcher.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_not_asked_for_are_ignored_and_counted_once_per_answer() {
    let _turn = crate::support::lock::alone().await;
    let e = env().await;
    // 85,000 rows of 45 bytes: just under max_answer_bytes (4 MiB), the most a server can send.
    let body = rows("sk-mine-v1", 85_000);
    assert!(body.len() < 4 << 20, "{}", body.len());
    let server = Scripted::start(Arc::new(move |head, _| {
        if head.contains("if-none-match") {
            Act::Hang
        } else {
            snapshot("t1", &body)
        }
    }))
    .await;
    let watcher = start_watcher(&watcher_config(&e, &server.url(), "20s"))
        .await
        .expect("start");
    assert_eq!(
        call(&e, &watcher, "/mine/x", "authorization").await,
        (200, Some("Bearer sk-mine-v1".to_string())),
        "{}",
        watcher.output()
    );
    let output = watcher.output();
    let lines = output
        .lines()
        .filter(|l| l.contains("other-") || l.contains("did not ask for"));
    assert_eq!(lines.count(), 1, "lines about rows not asked for");
    let page = metrics(&watcher).await;
    assert_eq!(
        metric(&page, "sidecar_watch_unrequested_rows_total"),
        Some(85_000.0),
        "{page}"
    );
    let peak = peak_rss_mib(watcher.pid());
    println!("a 4 MiB answer of 85,000 rows not asked for: peak RSS {peak} MiB");
    assert!(peak < 150, "peak RSS {peak} MiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_costs_the_server_one_full_snapshot_and_leaves_no_poll_behind() {
    let _turn = crate::support::lock::shared().await;
    let e = env().await;
    let body = rows("sk-mine-v1", 0);
    // Tagless requests get the rows at once; a request with the tag is held.
    let server = Scripted::start(Arc::new(move |head, _| {
        if head.to_ascii_lowercase().contains("if-none-match: \"t1\"") {
            Act::Hang
        } else {
            snapshot("t1", &body)
        }
    }))
    .await;
    let watcher = start_watcher(&watcher_config(&e, &server.url(), "20s"))
        .await
        .expect("start");
    assert_eq!(
        call(&e, &watcher, "/mine/x", "authorization").await.0,
        200,
        "{}",
        watcher.output()
    );
    // The poller is up with the start-up answer's tag.
    let held = wait_until_async(DEADLINE, || async {
        server.heads().iter().any(|h| h.contains("\"t1\""))
    })
    .await;
    assert!(held, "{:?}", server.heads());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let heads = server.heads();
    let full = heads.iter().filter(|h| !h.contains("\"t1\"")).count();
    assert_eq!(full, 1, "full snapshots per start: {heads:#?}");
    assert_eq!(
        server.closed_while_held.load(Ordering::Relaxed),
        0,
        "a held poll was orphaned: {heads:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_servers_error_text_reaches_the_log_escaped_and_truncated() {
    let _turn = crate::support::lock::shared().await;
    let e = env().await;
    let forged = "[2026-01-01T00:00:00.000Z INFO  access] request route=forged status=200";
    let text = format!("refused\n{forged}\n{}", "x".repeat(10_000));
    let body = serde_json::to_vec(&json!({ "error": text })).expect("json");
    let mut answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    answer.extend_from_slice(&body);
    let answer = Act::Reply(Arc::new(answer));
    let server = Scripted::start(Arc::new(move |_, _| answer.clone())).await;
    let watcher = start_watcher(&watcher_config(&e, &server.url(), "1s"))
        .await
        .expect("start");
    assert!(
        watcher.wait_for_output("answered 503").await,
        "{}",
        watcher.output()
    );
    let output = watcher.output();
    assert!(
        !output.lines().any(|l| l.starts_with(forged)),
        "a forged line: {output}"
    );
    assert!(
        output.lines().all(|l| l.len() < 2_000),
        "the server's text went through unbounded"
    );
    assert!(output.contains("refused\\n[2026-01-01"), "{output}");
}
