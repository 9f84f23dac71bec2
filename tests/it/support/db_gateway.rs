//! Shared pieces of the Postgres integration tests: encrypted values, a gateway config over a
//! test schema, and request helpers that report what the mock provider received.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sidecar::credentials::cipher::{encrypt, Format, Keys};
use sidecar::credentials::Secret;

use super::certs::TestCa;
use super::config::{self, yaml};
use super::http::post;
use super::mock_provider::MockProvider;
use super::pg::TestDb;
use super::sidecar_process::SidecarProcess;
use super::wait_until_async;

pub const SALT: &str = "sk-pg-test-salt";
/// Generous: these deadlines bound a poll; the latencies themselves are printed, not asserted.
pub const DEADLINE: Duration = Duration::from_secs(15);

pub fn keys() -> Keys {
    Keys::derive(&Secret::new(SALT.to_string()))
}

pub fn enc(value: &str, format: Format) -> Value {
    Value::String(encrypt(value, format, &keys()))
}

/// The standard-alphabet spelling of a NaCl value (older LiteLLM releases wrote it).
pub fn nacl_standard(value: &str) -> Value {
    let stored = encrypt(value, Format::Nacl, &keys())
        .replace('-', "+")
        .replace('_', "/");
    Value::String(stored)
}

pub struct Env {
    /// The mock provider.
    pub mock: MockProvider,
    _ca_dir: tempfile::TempDir,
    /// The CA file the sidecar trusts.
    pub ca_file: String,
    /// An HTTP client.
    pub client: reqwest::Client,
}

pub async fn env() -> Env {
    env_with_ca().await.0
}

/// [`env`], and the CA its files trust (to issue certificates for other test servers).
pub async fn env_with_ca() -> (Env, TestCa) {
    let ca = TestCa::new();
    let ca_dir = tempfile::tempdir().expect("tempdir");
    let ca_file = ca.write_ca_file(ca_dir.path()).display().to_string();
    let env = Env {
        mock: MockProvider::start_http1(&ca).await,
        _ca_dir: ca_dir,
        ca_file,
        client: reqwest::Client::new(),
    };
    (env, ca)
}

/// A gateway over `db`'s schema (at `url`, polled every `refresh`, with `LISTEN` when `listen`)
/// with `routes`; the postgres settings are `config["credentials"]["postgres"]`.
pub fn gateway(
    e: &Env,
    db: &TestDb,
    url: &str,
    refresh: &str,
    listen: bool,
    routes: Vec<Value>,
) -> Value {
    config::gateway(
        json!({ "ca_file": e.ca_file, "read_timeout": "5s" }),
        json!({ "postgres": {
            "url": url, "schema": db.schema, "refresh_interval": refresh, "listen": listen,
            "connect_timeout": "1s",
        } }),
        routes,
    )
}

/// A route `/name` to `upstream`'s `/v1` with `provider`'s auth and the credential row `credential`.
pub fn credential_route(name: &str, credential: &str, upstream: &str, provider: &str) -> Value {
    config::route(name, &format!("{upstream}/v1"), provider, credential)
}

/// A route `/name` to the deployments of the model row(s) named `model`.
pub fn model_route(name: &str, model: &str) -> Value {
    json!({ "name": name, "path_prefix": format!("/{name}"), "strip_prefix": true, "model": model })
}

/// Sends a request to `path`; returns the status and the injected header the provider saw (or
/// `None` when nothing new reached it).
pub async fn call(
    e: &Env,
    sidecar: &SidecarProcess,
    path: &str,
    header: &str,
) -> (u16, Option<String>) {
    let before = e.mock.requests().len();
    let (status, _) = post(sidecar, path).await;
    let seen = e.mock.requests();
    let injected = (seen.len() > before)
        .then(|| {
            seen.last()
                .and_then(|r| r.header(header).map(str::to_string))
        })
        .flatten();
    (status, injected)
}

/// Polls until a request to `path` injects `expected`; returns how long that took.
pub async fn wait_for_key(
    e: &Env,
    sidecar: &SidecarProcess,
    path: &str,
    header: &str,
    expected: &str,
) -> Option<Duration> {
    let started = Instant::now();
    let ok = wait_until_async(DEADLINE, || async {
        call(e, sidecar, path, header).await.1.as_deref() == Some(expected)
    })
    .await;
    ok.then(|| started.elapsed())
}

/// Runs `sidecar -c CONFIG db COMMAND` (`install-notify`, `uninstall-notify`) with `config` (a
/// gateway whose `{DIR}` and `{PORT}` get throwaway values) and asserts that it succeeded.
pub fn db_command(config: &Value, command: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = dir.path().join("gateway.yaml");
    let text = yaml(config)
        .replace("{DIR}", &dir.path().display().to_string())
        .replace("{PORT}", "1");
    std::fs::write(&conf, text).expect("write the config");
    let out = SidecarProcess::run_cli(
        &["-c", conf.to_str().expect("utf-8"), "db", command],
        None,
        &[],
    );
    assert!(
        out.status.success(),
        "db {command}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
