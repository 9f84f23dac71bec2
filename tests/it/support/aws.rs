//! The Bedrock tests' pieces: the mock Bedrock runtime and STS (`tests/sdk/bedrock_mock.py`,
//! from `target/litellm-venv`, verifying every signature with botocore), the real clients run as
//! scripts, rows written by the real LiteLLM package, and the no-secret check.

use std::path::PathBuf;
use std::process::Command;

use serde_json::{json, Value};

use super::certs::TestCa;
use super::db_gateway::*;
use super::litellm_venv;
use super::pg::TestDb;
use super::script_server::ScriptServer;
use super::sidecar_process::SidecarProcess;

/// A row's real keys, which only the mock and the rows know.
pub const ROW_KEY_ID: &str = "AKIAROWKEY0000000001";
pub const ROW_SECRET: &str = "row-secret-wJalrXUtnFEMI";

/// The mock Bedrock and STS process, killed when dropped.
pub struct AwsMock(ScriptServer);

impl AwsMock {
    pub async fn start(ca: &TestCa, config: Value) -> AwsMock {
        let (cert, key) = ca.issue(&["localhost"]);
        tokio::task::spawn_blocking(move || {
            let files = [("c.pem", cert.as_str()), ("k.pem", key.as_str())];
            AwsMock(ScriptServer::start(
                litellm_venv::python(),
                "bedrock_mock.py",
                &files,
                |dir| {
                    let path = |name: &str| dir.join(name).into_os_string();
                    vec![
                        path("c.pem"),
                        path("k.pem"),
                        path("stats.json"),
                        config.to_string().into(),
                    ]
                },
            ))
        })
        .await
        .expect("join")
    }

    pub fn base(&self) -> String {
        format!("https://localhost:{}", self.0.port())
    }

    /// What the mock saw: `requests` (path, key id, failure) and `assumed` roles.
    pub fn stats(&self) -> Value {
        self.0.stats()
    }

    /// From now on, STS refuses every AssumeRole (403 AccessDenied).
    pub fn refuse_sts(&self) {
        std::fs::write(self.0.path("stats.json.refuse-sts"), "").expect("flag");
    }
}

/// Runs the client `tests/sdk/{script}` with `python` against `base_url` asking for `model`;
/// returns what it printed.
pub async fn run_client(python: PathBuf, script: &str, base_url: String, model: &str) -> Value {
    run_client_with(python, script, vec![base_url, model.to_string()]).await
}

/// Runs `script` (in tests/sdk) with `python` and `args`; returns the JSON it prints.
pub async fn run_client_with(python: PathBuf, script: &str, args: Vec<String>) -> Value {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sdk")
        .join(script);
    assert!(
        python.exists(),
        "{} is missing: run `bash scripts/bootstrap.sh --postgres`",
        python.display()
    );
    let output =
        tokio::task::spawn_blocking(move || Command::new(python).arg(script).args(args).output())
            .await
            .expect("join")
            .expect("run the client");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the client failed:\n{stderr}");
    serde_json::from_slice(&output.stdout).expect("the script's JSON")
}

/// Asserts that `requests` (the mock's records) are InvokeModel then its stream for `model`,
/// each signed with `key_id` (botocore verified) and free of any client placeholder credential.
pub fn assert_invoke_and_stream(requests: &[Value], model: &str, key_id: &str) {
    assert_eq!(requests.len(), 2, "{requests:?}");
    let encoded = model.replace(':', "%3A");
    for (request, operation) in requests
        .iter()
        .zip(["invoke", "invoke-with-response-stream"])
    {
        let path = format!("/model/{encoded}/{operation}");
        assert_eq!(request["path"], path, "{request}");
        assert_eq!(request["key_id"], key_id, "{request}");
        assert_eq!(request["failure"], Value::Null, "{request}");
        assert_eq!(request["client_placeholder_seen"], false, "{request}");
    }
}

/// Writes `models` (model id → (alias, plain litellm_params)) and `credentials` (name → plain
/// credential_values, provider `bedrock`) as LiteLLM stores them.
pub async fn put_rows(db: &TestDb, models: &[(&str, &str, Value)], credentials: &[(&str, Value)]) {
    let plain: serde_json::Map<String, Value> = models
        .iter()
        .map(|(id, _, params)| (id.to_string(), params.clone()))
        .collect();
    let plain_credentials: serde_json::Map<String, Value> = credentials
        .iter()
        .map(|(name, values)| (name.to_string(), values.clone()))
        .collect();
    let rows = json!({ "salt_key": SALT, "models": plain, "credentials": plain_credentials });
    let stored = litellm_venv::ask("litellm_store_rows.py", rows).await;
    for (name, _) in credentials {
        let values = stored["credentials"][*name].clone();
        db.put_credential(name, values, "bedrock").await;
    }
    for (id, alias, _) in models {
        db.put_model(id, alias, stored["models"][*id].clone()).await;
    }
}

/// A sidecar over `db` with `routes`, its log at trace level.
pub async fn start_sidecar(e: &Env, db: &TestDb, routes: Vec<Value>) -> SidecarProcess {
    let mut config = gateway(e, db, &TestDb::url(None), "30s", false, routes);
    config["log"] = json!({ "level": "trace" });
    SidecarProcess::start_async(
        &crate::support::config::yaml(&config),
        &[],
        &[("LITELLM_SALT_KEY", SALT), ("RUST_LOG", "trace")],
    )
    .await
}

/// Asserts that no secret appears in `text` (named `place`; the log with its trace lines on).
pub fn assert_no_secret(place: &str, text: &str, secrets: &[&str]) {
    if place == "the log" {
        assert!(text.contains("request head read"), "trace lines are on");
    }
    for secret in secrets
        .iter()
        .chain(&["AWS4-HMAC-SHA256 Credential", "Signature=", "dummy-"])
    {
        assert!(!text.contains(secret), "{place} holds {secret}");
    }
}
