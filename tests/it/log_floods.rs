//! A flood of clients that close mid-head is a flood of Pingora ERROR records, one each: the log
//! holds a handful of lines for them (`logging::repeats`) and the metric counts every one.

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::support::gateway::start_openai_only;
use crate::support::http::admin_get;
use crate::support::{metric, wait_until_async};

/// Clients that close mid-head.
const CLIENTS: usize = 500;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_closing_mid_head_are_counted_and_logged_a_handful_of_times() {
    let _turn = crate::support::lock::alone().await;
    let (_mock, sidecar, _dir) = start_openai_only(|_| {}).await;
    let addr = sidecar.base_url().replace("http://", "");
    for _ in 0..CLIENTS / 50 {
        let mut closing = Vec::new();
        for _ in 0..50 {
            let addr = addr.clone();
            closing.push(tokio::spawn(async move {
                let mut stream = TcpStream::connect(&addr).await.expect("connect");
                stream
                    .write_all(b"POST /openai/chat/completions HTTP/1.1\r\nHost: x\r\nContent-")
                    .await
                    .expect("partial head");
                // Give the sidecar the bytes before the close.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }));
        }
        for task in closing {
            task.await.expect("client");
        }
    }
    let counted = wait_until_async(Duration::from_secs(10), || async {
        let page = admin_get(&sidecar, "/metrics").await.1;
        metric(&page, "sidecar_client_head_read_errors_total") == Some(CLIENTS as f64)
    })
    .await;
    let output = sidecar.output();
    let lines = output
        .lines()
        .filter(|l| l.contains("Fail to proxy"))
        .count();
    assert!(lines <= 3, "{lines} lines for {CLIENTS} clients:\n{output}");
    let page = admin_get(&sidecar, "/metrics").await.1;
    assert!(
        counted,
        "every client counted: {:?}",
        metric(&page, "sidecar_client_head_read_errors_total")
    );
    let suppressed = metric(
        &page,
        r#"sidecar_log_lines_suppressed_total{target="pingora_proxy"}"#,
    );
    assert_eq!(suppressed, Some((CLIENTS - lines) as f64), "{page}");
}
