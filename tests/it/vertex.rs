//! Vertex AI with a service account through a `dispatch: model` route, driven by the real OpenAI
//! Python SDK. The token endpoint is a Python process (`tests/sdk/google_token_server.py`, run
//! from `target/google-venv`) that makes the service account as Google issues it and checks each
//! JWT-bearer grant with google-auth's own `jwt.decode` (signature against the account's
//! certificate, audience, issuer, scope). The rows are written by the real LiteLLM package.
//! One mint serves every request; the mock Vertex sees the minted token on its OpenAI-compatible
//! path, on the native `:rawPredict` / `:streamRawPredict` paths the Anthropic SDK's Vertex
//! client sends through a `model:` route (with the deployment's model in the path) and that
//! Anthropic's Messages API on the dispatch route is sent to, and on Gemini's native
//! `:streamGenerateContent`. An account whose key the endpoint does not trust
//! fails closed with a 503 naming the credential and the cause; no key or token reaches the log,
//! `/config` or an error.

use std::path::PathBuf;
use std::process::Command;

use serde_json::{json, Value};

use crate::support::db_gateway::*;
use crate::support::http::admin_get;
use crate::support::litellm_venv;
use crate::support::pg::TestDb;
use crate::support::script_server::ScriptServer;
use crate::support::sidecar_process::SidecarProcess;

const OPENAPI: &str = "/v1/projects/proj-1/locations/us-central1/endpoints/openapi";

/// The token server process (`tests/sdk/google_token_server.py`), killed when dropped, and the
/// service accounts it made: one it trusts, one whose key it does not.
struct TokenServer {
    server: ScriptServer,
    account: String,
    rogue: String,
}

impl TokenServer {
    fn start(cert: &str, key: &str) -> TokenServer {
        let python =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/google-venv/bin/python");
        let files = [("cert.pem", cert), ("key.pem", key)];
        let server = ScriptServer::start(python, "google_token_server.py", &files, |dir| {
            ["cert.pem", "key.pem", "stats.json"]
                .map(|name| dir.join(name).into_os_string())
                .to_vec()
        });
        let account = |name: &str| server.started()[name].as_str().expect(name).to_string();
        let (account, rogue) = (account("account"), account("rogue"));
        TokenServer {
            server,
            account,
            rogue,
        }
    }

    /// What the server saw: mints and refused grants.
    fn stats(&self) -> Value {
        self.server.stats()
    }
}

/// Runs `tests/sdk/anthropic_vertex_client.py` against `base_url`; returns what it saw.
async fn run_anthropic_vertex(base_url: &str) -> Value {
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/google-venv/bin/python");
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/anthropic_vertex_client.py");
    let base_url = base_url.to_string();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python).arg(script).arg(base_url).output()
    })
    .await
    .expect("join")
    .expect("run the SDK");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the SDK failed:\n{stderr}");
    serde_json::from_slice(&output.stdout).expect("the script's JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vertex_tokens_are_minted_from_a_service_account_and_checked_by_google_auth() {
    let _turn = crate::support::lock::shared().await;
    let (e, ca) = env_with_ca().await;
    let (cert, key) = ca.issue(&["localhost"]);
    let server = tokio::task::spawn_blocking(move || TokenServer::start(&cert, &key))
        .await
        .expect("join");
    let db = TestDb::new(true).await;
    let base = e.mock.base_url();
    let vertex = |account: &str| {
        json!({ "model": "vertex_ai/gemini-2.0-flash", "vertex_credentials": account,
                "vertex_project": "proj-1", "vertex_location": "us-central1", "api_base": base })
    };
    let mut claude = vertex(&server.account);
    claude["model"] = json!("vertex_ai/claude-sonnet-4");
    claude["vertex_location"] = json!("us-east5");
    let rows = json!({ "salt_key": SALT, "models": {
        "d-vertex": vertex(&server.account), "d-rogue": vertex(&server.rogue), "d-claude": claude,
    } });
    let stored = litellm_venv::ask("litellm_store_rows.py", rows).await;
    db.put_model(
        "d-vertex",
        "vertex-gemini",
        stored["models"]["d-vertex"].clone(),
    )
    .await;
    db.put_model(
        "d-rogue",
        "vertex-rogue",
        stored["models"]["d-rogue"].clone(),
    )
    .await;
    db.put_model(
        "d-claude",
        "vertex-claude",
        stored["models"]["d-claude"].clone(),
    )
    .await;
    let route = json!({ "name": "unified", "path_prefix": "/v1", "dispatch": "model" });
    // Vertex's native API: the client's path, the deployment's model, the minted token.
    let native = json!({ "name": "vertex", "path_prefix": "/vertex", "strip_prefix": true,
                         "model": "vertex-claude", "upstream": base });
    let gemini = json!({ "name": "gemini", "path_prefix": "/gemini", "strip_prefix": true,
                         "model": "vertex-gemini", "upstream": base });
    let config = gateway(
        &e,
        &db,
        &TestDb::url(None),
        "30s",
        false,
        vec![route, native, gemini],
    );
    let sidecar = SidecarProcess::start_async(
        &crate::support::config::yaml(&config),
        &[],
        &[("LITELLM_SALT_KEY", SALT)],
    )
    .await;

    let seen =
        crate::openai_sdk::run_sdk(&format!("{}/v1", sidecar.base_url()), &["vertex-gemini"]).await;
    assert_eq!(
        seen["chat"]["vertex-gemini"]["model"], "google/gemini-2.0-flash",
        "{seen}"
    );
    assert_eq!(seen["stream"]["vertex-gemini"], 3);
    let stats = server.stats();
    assert_eq!(stats["mints"], 1, "one mint for three requests: {stats}");
    assert_eq!(stats["refusals"], json!([]), "{stats}");
    let requests = e.mock.requests();
    assert_eq!(requests.len(), 3);
    for request in &requests {
        assert!(request.path.starts_with(OPENAPI), "{}", request.path);
        assert_eq!(
            request.header("authorization"),
            Some("Bearer vertex-token-1")
        );
    }
    assert_eq!(requests[0].path, format!("{OPENAPI}/chat/completions"));

    // The Anthropic SDK's Vertex client on the native route: same account, same token.
    let anthropic = run_anthropic_vertex(&format!("{}/vertex/v1", sidecar.base_url())).await;
    assert_eq!(anthropic["status"], 200, "{anthropic}");
    assert_eq!(anthropic["stream_status"], 200, "{anthropic}");
    assert_eq!(
        anthropic["stream_events"], 4,
        "three events and [DONE]: {anthropic}"
    );
    let native_path =
        "/v1/projects/proj-1/locations/us-east5/publishers/anthropic/models/claude-sonnet-4";
    let native: Vec<_> = e.mock.requests().into_iter().skip(3).collect();
    assert_eq!(native.len(), 2);
    assert_eq!(native[0].path, format!("{native_path}:rawPredict"));
    assert_eq!(native[1].path, format!("{native_path}:streamRawPredict"));
    for request in &native {
        assert_eq!(
            request.header("authorization"),
            Some("Bearer vertex-token-1")
        );
        assert!(
            request.body_str().contains("\"anthropic_version\""),
            "{}",
            request.body_str()
        );
    }
    assert_eq!(
        server.stats()["mints"],
        1,
        "the same account's token is reused"
    );

    // Anthropic's Messages API on the dispatch route: Claude on Vertex through rawPredict and
    // streamRawPredict, the model in the path only, Vertex's anthropic_version, the same token.
    for stream in [false, true] {
        let response = e
            .client
            .post(format!("{}/v1/messages?beta=true", sidecar.base_url()))
            .header("x-api-key", "dummy-client-key")
            .header("x-mock-sse-events", "2")
            .json(
                &json!({ "model": "vertex-claude", "max_tokens": 8, "stream": stream,
                           "anthropic_version": "client-version", "messages": [] }),
            )
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), 200);
        let sent = e.mock.requests().pop().expect("sent");
        let method = if stream {
            "streamRawPredict"
        } else {
            "rawPredict"
        };
        assert_eq!(sent.path, format!("{native_path}:{method}"));
        assert_eq!(
            sent.query, None,
            "Google's APIs refuse a query they do not know"
        );
        assert_eq!(sent.header("authorization"), Some("Bearer vertex-token-1"));
        assert_eq!(sent.header("x-api-key"), None);
        let body: Value = serde_json::from_str(&sent.body_str()).expect("json");
        assert_eq!(body.get("model"), None, "{body}");
        assert_eq!(body["anthropic_version"], "vertex-2023-10-16", "{body}");
        assert_eq!(body["stream"], stream, "{body}");
    }

    // Gemini's native streaming API on a `model:` route: the path names the deployment's model
    // (without the publisher, which the path names itself), `alt=sse` is kept.
    let gemini_path = "/v1/projects/proj-1/locations/us-central1/publishers/google/models";
    let response = e
        .client
        .post(format!(
            "{}/gemini{gemini_path}/gemini-client:streamGenerateContent?alt=sse",
            sidecar.base_url()
        ))
        .header("authorization", "Bearer ya29.client-placeholder")
        .header("x-mock-sse-events", "2")
        .json(&json!({ "contents": [{ "role": "user", "parts": [{ "text": "hi" }] }] }))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    let streamed = response.text().await.expect("body");
    assert_eq!(streamed.matches("data: ").count(), 3, "{streamed}");
    let sent = e.mock.requests().pop().expect("sent");
    assert_eq!(
        sent.path,
        format!("{gemini_path}/gemini-2.0-flash:streamGenerateContent")
    );
    assert_eq!(sent.query.as_deref(), Some("alt=sse"));
    assert_eq!(sent.header("authorization"), Some("Bearer vertex-token-1"));

    // An account the endpoint does not trust: google-auth refuses the signature; the client
    // gets a 503 naming the credential and the cause.
    let response = e
        .client
        .post(format!("{}/v1/chat/completions", sidecar.base_url()))
        .json(&json!({ "model": "vertex-rogue", "messages": [] }))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 503);
    let body = response.text().await.expect("body");
    assert!(
        body.contains("d-rogue") && body.contains("invalid_grant"),
        "{body}"
    );
    let stats = server.stats();
    let refusals = stats["refusals"].as_array().expect("refusals");
    assert_eq!(refusals.len(), 1, "{stats}");
    assert!(
        refusals[0]
            .as_str()
            .unwrap_or_default()
            .contains("signature"),
        "{stats}"
    );
    assert_eq!(
        e.mock.requests().len(),
        8,
        "nothing sent for the rogue account"
    );

    let (_, config) = admin_get(&sidecar, "/config").await;
    let account: Value = serde_json::from_str(&server.account).expect("account");
    let key_line = account["private_key"]
        .as_str()
        .and_then(|pem| pem.lines().nth(1))
        .expect("a key line")
        .to_string();
    for (place, text) in [
        ("/config", config),
        ("the log", sidecar.output()),
        ("the 503", body),
    ] {
        for secret in [key_line.as_str(), "vertex-token-"] {
            assert!(!text.contains(secret), "{place} holds {secret}");
        }
    }
}
