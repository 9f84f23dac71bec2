//! The admin listener: liveness, readiness that names what is missing, and the metrics page.

use std::collections::HashSet;
use std::time::Duration;

use crate::support::certs::TestCa;
use crate::support::config::LISTEN;
use crate::support::gateway::{
    gateway_config, start_gateway, start_openai_only, start_with_test_credentials, KEYS,
};
use crate::support::http::{self, admin_get, post};
use crate::support::mock_provider::MockProvider;
use crate::support::wait_until_async;
use serde_json::{json, Value};

struct Setup {
    _mock: MockProvider,
    sidecar: crate::support::sidecar_process::SidecarProcess,
    _ca_dir: tempfile::TempDir,
}

/// The test gateway (routes `missing` and `broken` cannot be served) or, with `only_openai`,
/// just its `openai` route.
async fn setup(only_openai: bool) -> Setup {
    let (mock, sidecar, ca_dir) = if only_openai {
        start_openai_only(|_| {}).await
    } else {
        start_gateway(|_| {}).await
    };
    Setup {
        sidecar,
        _mock: mock,
        _ca_dir: ca_dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_is_alive_and_readyz_names_the_routes_that_cannot_be_served() {
    let _turn = crate::support::lock::shared().await;
    let s = setup(false).await;
    assert_eq!(admin_get(&s.sidecar, "/healthz").await.0, 200);
    let (status, body) = admin_get(&s.sidecar, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    let report: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(report["ready"], false);
    let missing: HashSet<&str> = report["missing"]
        .as_array()
        .expect("missing list")
        .iter()
        .map(|m| m["route"].as_str().expect("route"))
        .collect();
    assert_eq!(missing, HashSet::from(["missing", "broken"]), "{body}");
    assert!(
        body.contains("absent-cred") && body.contains("broken-cred"),
        "{body}"
    );
    assert_eq!(
        report["unbound_listeners"].as_array().map(Vec::len),
        Some(0)
    );
    for (_, key, _) in KEYS {
        assert!(!body.contains(key));
    }
    assert_eq!(admin_get(&s.sidecar, "/nope").await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_200_when_every_route_can_be_served() {
    let _turn = crate::support::lock::shared().await;
    let s = setup(true).await;
    let (status, body) = admin_get(&s.sidecar, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("json")["ready"],
        true
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_while_a_proxy_listener_is_not_bound() {
    let _turn = crate::support::lock::shared().await;
    // Someone else holds the proxy port; the admin listener takes {PORT}, which the harness
    // waits for.
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken = squatter.local_addr().expect("addr");
    let ca = TestCa::new();
    let ca_dir = tempfile::tempdir().expect("tempdir");
    let mock = MockProvider::start_http1(&ca).await;
    let mut config = gateway_config(&mock.base_url(), &ca.write_ca_file(ca_dir.path()));
    config["listeners"][0]["address"] = json!(taken.to_string());
    config["admin"] = json!({ "address": LISTEN });
    let sidecar = start_with_test_credentials(&config).await;
    let (status, body) = http::get(&format!("{}/readyz", sidecar.base_url())).await;
    assert_eq!(status, 503);
    let report: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(
        report["unbound_listeners"][0],
        taken.to_string(),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_connections_and_credentials() {
    let _turn = crate::support::lock::shared().await;
    let s = setup(false).await;
    for _ in 0..3 {
        assert_eq!(post(&s.sidecar, "/openai/chat/completions").await.0, 200);
    }
    assert_eq!(post(&s.sidecar, "/missing/x").await.0, 503);
    // A provider's own 503, told apart from the sidecar's by `origin`.
    let provider_503 = reqwest::Client::new()
        .post(format!("{}/openai/chat/completions", s.sidecar.base_url()))
        .header("x-mock-status", "503")
        .body("{}")
        .send()
        .await
        .expect("request");
    assert_eq!(provider_503.status().as_u16(), 503);
    assert_eq!(post(&s.sidecar, "/nowhere").await.0, 404);

    // A request is counted in its logging phase, after the client has its response: wait (a
    // bounded time) until the last one is in, then read every figure from one page.
    let last = "sidecar_requests_total{origin=\"sidecar\",route=\"-\",status_class=\"4xx\"}";
    let counted = wait_until_async(Duration::from_secs(10), || async {
        let page = admin_get(&s.sidecar, "/metrics").await.1;
        crate::support::metric(&page, last).is_some()
    })
    .await;
    assert!(counted, "{last} never appeared");
    let (status, page) = admin_get(&s.sidecar, "/metrics").await;
    assert_eq!(status, 200);
    let value = |series: &str| {
        crate::support::metric(&page, series).unwrap_or_else(|| panic!("{series} in\n{page}"))
    };
    assert_eq!(
        value("sidecar_requests_total{origin=\"provider\",route=\"openai\",status_class=\"2xx\"}"),
        3.0
    );
    assert_eq!(
        value("sidecar_requests_total{origin=\"sidecar\",route=\"missing\",status_class=\"5xx\"}"),
        1.0
    );
    assert_eq!(
        value("sidecar_requests_total{origin=\"provider\",route=\"openai\",status_class=\"5xx\"}"),
        1.0
    );
    assert_eq!(
        value("sidecar_requests_total{origin=\"sidecar\",route=\"-\",status_class=\"4xx\"}"),
        1.0
    );
    assert_eq!(
        value("sidecar_upstream_ttfb_seconds_count{route=\"openai\"}"),
        4.0
    );
    assert_eq!(
        value("sidecar_request_duration_seconds_count{route=\"openai\"}"),
        4.0
    );
    // Four sequential requests to the provider: one new upstream connection, then the pooled one.
    let new = value("sidecar_upstream_connections_opened_total");
    let reuses = value("sidecar_upstream_connections_reused_total");
    assert_eq!((new, new + reuses), (1.0, 4.0), "{page}");
    assert_eq!(value("sidecar_upstream_connections{state=\"open\"}"), 1.0);
    assert_eq!(value("sidecar_upstream_connections{state=\"idle\"}"), 1.0);
    assert_eq!(value("sidecar_upstream_connections_limit"), 1000.0);
    assert_eq!(value("sidecar_upstream_cap_rejections_total"), 0.0);
    assert_eq!(
        value("sidecar_credential_snapshot_entries{kind=\"credential\"}"),
        5.0
    );
    assert_eq!(
        value("sidecar_credential_load_failures{kind=\"credential\",name=\"broken-cred\"}"),
        1.0
    );
    assert!(value("sidecar_credential_snapshot_age_seconds") >= 0.0);
    // The last success is a wall-clock time: after 2020, and not in the future by much.
    let last_success = value("sidecar_credential_last_success_timestamp_seconds");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    assert!(
        last_success > 1.6e9 && last_success <= now + 1.0,
        "{last_success}"
    );
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        value(&format!("sidecar_build_info{{version=\"{version}\"}}")),
        1.0
    );
    assert!(value("process_resident_memory_bytes") > 0.0);
    assert!(value("process_open_fds") > 0.0);
    for (_, key, _) in KEYS {
        assert!(!page.contains(key));
    }
    let (status, body) = admin_get(&s.sidecar, "/version").await;
    assert_eq!(status, 200);
    let body: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(body["version"], version);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_level_changes_at_runtime_from_loopback() {
    let _turn = crate::support::lock::shared().await;
    let s = setup(false).await;
    let client = reqwest::Client::new();
    let url = format!("{}/log-level", s.sidecar.admin_url());
    let (status, body) = admin_get(&s.sidecar, "/log-level").await;
    assert_eq!((status, body.contains("\"info\"")), (200, true), "{body}");
    // A trace line the proxy writes for every request appears only once the level is trace.
    assert_eq!(post(&s.sidecar, "/openai/chat/completions").await.0, 200);
    let response = client.put(&url).body("trace").send().await.expect("put");
    assert_eq!(response.status().as_u16(), 200);
    assert!(admin_get(&s.sidecar, "/log-level")
        .await
        .1
        .contains("\"trace\""));
    assert_eq!(post(&s.sidecar, "/openai/chat/completions").await.0, 200);
    assert!(
        s.sidecar.wait_for_output("request head read").await,
        "{}",
        s.sidecar.output()
    );
    let response = client.put(&url).body("loud").send().await.expect("put");
    assert_eq!(response.status().as_u16(), 400);
}

/// The access line follows `PUT /log-level`: gone at `warn`, back at `info`. The lines go out
/// through one writer in order, so once the line of the request made at `info` is out, the one
/// made at `warn` would be out before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_lines_stop_at_warn_and_come_back_at_info() {
    let _turn = crate::support::lock::shared().await;
    let s = setup(true).await;
    let client = reqwest::Client::new();
    let url = format!("{}/log-level", s.sidecar.admin_url());
    let request = |id: &'static str| {
        client
            .post(format!("{}/openai/chat/completions", s.sidecar.base_url()))
            .header("x-request-id", id)
            .body("{}")
            .send()
    };
    assert_eq!(request("before-warn").await.expect("post").status(), 200);
    assert!(s.sidecar.wait_for_output("request_id=before-warn").await);
    let put = |level: &'static str| client.put(&url).body(level).send();
    assert_eq!(put("warn").await.expect("put").status(), 200);
    assert_eq!(request("at-warn").await.expect("post").status(), 200);
    // The access line is decided in the request's last phase, which may end after the client
    // has its answer: the request is counted just before, so wait for that before `info`.
    let served = r#"sidecar_requests_total{origin="provider",route="openai",status_class="2xx"}"#;
    let ended = wait_until_async(Duration::from_secs(10), || async {
        crate::support::metric(&admin_get(&s.sidecar, "/metrics").await.1, served) == Some(2.0)
    })
    .await;
    assert!(ended, "the request at warn never ended");
    assert_eq!(put("info").await.expect("put").status(), 200);
    assert_eq!(request("at-info").await.expect("post").status(), 200);
    assert!(
        s.sidecar.wait_for_output("request_id=at-info").await,
        "{}",
        s.sidecar.output()
    );
    let output = s.sidecar.output();
    assert!(!output.contains("request_id=at-warn"), "{output}");
}
