//! The router of `dispatch: model` routes: a deployment answering 429 is cooled down and the
//! request retried on another before the client sees anything; 5xx answers and refused
//! connections cool a deployment down past `router.allowed_fails`; an alias with one deployment
//! passes the provider's answer on; streams pass through unchanged.

use crate::support::config::yaml;
use crate::support::db_gateway::*;
use crate::support::http::admin_get;
use crate::support::pg::TestDb;
use crate::support::sidecar_process::SidecarProcess;
use serde_json::json;
use sidecar::credentials::cipher::Format;

/// A sidecar with a `dispatch: model` route at `/v1` over `deployments` (id, alias, api_base
/// path on the mock or a full URL, key), with `router.allowed_fails: 1`.
async fn start(e: &Env, db: &TestDb, deployments: &[(&str, &str, &str, &str)]) -> SidecarProcess {
    for (id, alias, base, key) in deployments {
        let api_base = if base.starts_with("https://") {
            base.to_string()
        } else {
            format!("{}{base}", e.mock.base_url())
        };
        let params = json!({ "model": enc(&format!("openai/{id}"), Format::Nacl),
            "api_key": enc(key, Format::Nacl), "api_base": enc(&api_base, Format::Nacl) });
        db.put_model(id, alias, params).await;
    }
    let route = json!({ "name": "unified", "path_prefix": "/v1", "dispatch": "model" });
    let mut config = gateway(e, db, &TestDb::url(None), "30s", false, vec![route]);
    config["router"] = json!({ "allowed_fails": 1, "cooldown_time": "60s" });
    SidecarProcess::start_async(&yaml(&config), &[], &[("LITELLM_SALT_KEY", SALT)]).await
}

/// Sends `count` chat requests for `alias`; returns their statuses.
async fn chat(e: &Env, sidecar: &SidecarProcess, alias: &str, count: usize) -> Vec<u16> {
    let mut statuses = Vec::new();
    for _ in 0..count {
        let response = e
            .client
            .post(format!("{}/v1/chat/completions", sidecar.base_url()))
            .body(format!(r#"{{"model":"{alias}","messages":[]}}"#))
            .send()
            .await
            .expect("request");
        statuses.push(response.status().as_u16());
    }
    statuses
}

/// Requests the provider received with `key`.
fn received_with(e: &Env, key: &str) -> usize {
    let bearer = format!("Bearer {key}");
    e.mock
        .requests()
        .iter()
        .filter(|r| r.header("authorization") == Some(bearer.as_str()))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_is_retried_on_another_deployment_and_cools_its_deployment_down() {
    let _turn = crate::support::lock::shared().await;
    let e = env().await;
    let db = TestDb::new(true).await;
    let sidecar = start(
        &e,
        &db,
        &[
            ("d-limited", "flaky", "/status/429/v1", "sk-limited"),
            ("d-good", "flaky", "/v1", "sk-good"),
        ],
    )
    .await;
    let statuses = chat(&e, &sidecar, "flaky", 6).await;
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    assert_eq!(
        received_with(&e, "sk-limited"),
        1,
        "cooled down after one 429"
    );
    assert_eq!(received_with(&e, "sk-good"), 6);
    // The retry sends the body again with the second deployment's model (of another length).
    for request in e.mock.requests() {
        let model = match request.header("authorization") {
            Some("Bearer sk-good") => "d-good",
            Some("Bearer sk-limited") => "d-limited",
            _ => continue,
        };
        let want = format!(r#"{{"model":"{model}","messages":[]}}"#);
        assert_eq!(
            request.body_str(),
            want,
            "each attempt names its deployment's model"
        );
    }
    let metrics = admin_get(&sidecar, "/metrics").await.1;
    let cooldowns = r#"sidecar_model_cooldowns_total{deployment="d-limited",model="flaky"} 1"#;
    assert!(metrics.contains(cooldowns), "{metrics}");
    let attempts =
        r#"sidecar_model_attempts_total{deployment="d-limited",model="flaky",outcome="4xx"} 1"#;
    assert!(metrics.contains(attempts), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_and_refused_connections_cool_down_past_the_allowed_fails() {
    let _turn = crate::support::lock::shared().await;
    let e = env().await;
    let db = TestDb::new(true).await;
    let sidecar = start(
        &e,
        &db,
        &[
            ("d-broken", "broken", "/status/503/v1", "sk-broken"),
            ("d-ok", "broken", "/v1", "sk-ok"),
            ("d-dead", "dead", "https://127.0.0.1:1/v1", "sk-dead"),
            ("d-alive", "dead", "/v1", "sk-alive"),
        ],
    )
    .await;
    let statuses = chat(&e, &sidecar, "broken", 8).await;
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    // allowed_fails 1: the second failure within the minute starts the cooldown.
    assert_eq!(received_with(&e, "sk-broken"), 2);
    let statuses = chat(&e, &sidecar, "dead", 8).await;
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    let metrics = admin_get(&sidecar, "/metrics").await.1;
    let refused = r#"sidecar_model_attempts_total{deployment="d-dead",model="dead",outcome="connect_error"} 2"#;
    assert!(metrics.contains(refused), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_deployment_passes_its_answer_on_and_streams_pass_through() {
    let _turn = crate::support::lock::shared().await;
    let e = env().await;
    let db = TestDb::new(true).await;
    let sidecar = start(
        &e,
        &db,
        &[
            ("d-only", "only", "/status/429/v1", "sk-only"),
            ("d-stream", "stream", "/v1", "sk-stream"),
        ],
    )
    .await;
    let statuses = chat(&e, &sidecar, "only", 3).await;
    assert_eq!(
        statuses,
        [429, 429, 429],
        "nowhere else to go: the provider's answer"
    );
    assert_eq!(received_with(&e, "sk-only"), 3, "never cooled down alone");

    let response = e
        .client
        .post(format!("{}/v1/chat/completions", sidecar.base_url()))
        .header("x-mock-sse-events", "3")
        .body(r#"{"model":"stream","stream":true}"#)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status().as_u16(), 200);
    let text = response.text().await.expect("body");
    assert_eq!(
        text.matches("data: ").count(),
        4,
        "three events and [DONE]: {text}"
    );
}
