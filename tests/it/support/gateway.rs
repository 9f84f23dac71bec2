//! A ready-made gateway for integration tests: one route per provider style, all pointing at
//! one mock provider, with credentials encrypted in each LiteLLM format.

use std::path::Path;

use serde_json::{json, Value};
use sidecar::credentials::cipher::{encrypt, Format, Keys};
use sidecar::credentials::Secret;

use super::certs::TestCa;
use super::config::{extend, gateway, local_credentials, route, yaml};
use super::mock_provider::MockProvider;
use super::sidecar_process::SidecarProcess;

/// The salt key the test credentials are encrypted with.
pub const SALT_KEY: &str = "sk-test-salt-key";

/// The keys the sidecar injects, one per route (credential name, key, stored format).
pub const KEYS: [(&str, &str, Format); 5] = [
    ("openai-cred", "sk-openai-SECRET-0001", Format::V3),
    ("anthropic-cred", "sk-ant-SECRET-0002", Format::V2),
    ("azure-cred", "azure-SECRET-0003", Format::Nacl),
    ("gemini-cred", "gemini-SECRET-0004", Format::V3),
    ("custom-cred", "custom-SECRET-0005", Format::V3),
];

/// Client-side credentials the tests send, which must never reach the provider.
pub const CLIENT_SECRETS: [&str; 5] = [
    "client-bearer-token",
    "client-x-api-key",
    "client-api-key",
    "client-goog-key",
    "client-custom-key",
];

/// The test gateway: routes `/openai`, `/anthropic`, `/azure`, `/gemini`, `/custom` (header
/// `X-Custom-Key` with prefix `Token `), `/missing` (credential not in the store) and `/broken`
/// (credential that does not decrypt), all to `upstream`, trusting `ca_file`.
pub fn gateway_config(upstream: &str, ca_file: &Path) -> Value {
    let upstream = format!("{upstream}/v1");
    let mut custom = route("custom", &upstream, "header", "custom-cred");
    extend(
        &mut custom,
        json!({ "auth_header": "X-Custom-Key", "auth_prefix": "Token " }),
    );
    let routes = vec![
        route("openai", &upstream, "openai", "openai-cred"),
        route("anthropic", &upstream, "anthropic", "anthropic-cred"),
        route("azure", &upstream, "azure", "azure-cred"),
        route("gemini", &upstream, "gemini", "gemini-cred"),
        custom,
        route("missing", &upstream, "openai", "absent-cred"),
        route("broken", &upstream, "openai", "broken-cred"),
    ];
    gateway(
        json!({ "ca_file": ca_file, "read_timeout": "5s" }),
        local_credentials(),
        routes,
    )
}

/// `config` (a [`gateway_config`]) with only the route named `name`.
pub fn only_route(mut config: Value, name: &str) -> Value {
    config["routes"]
        .as_array_mut()
        .expect("routes")
        .retain(|r| r["name"] == name);
    config
}

/// The local credential store: every entry of [`KEYS`] (Azure's with an `api_version`), plus
/// `broken-cred` whose key is not valid ciphertext.
fn credentials() -> Value {
    let keys = Keys::derive(&Secret::new(SALT_KEY.to_string()));
    let mut list: Vec<Value> = KEYS
        .iter()
        .map(|&(name, key, format)| {
            let mut values = json!({ "api_key": encrypt(key, format, &keys) });
            if name == "azure-cred" {
                values["api_version"] = json!(encrypt("2024-10-21", Format::V3, &keys));
            }
            json!({ "credential_name": name, "credential_values": values })
        })
        .collect();
    list.push(json!({
        "credential_name": "broken-cred",
        "credential_values": { "api_key": "v3:gcm:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA" },
    }));
    json!({ "credential_list": list })
}

/// `credentials.yaml` text: the local credential store (see [`credentials`]).
pub fn credentials_yaml() -> String {
    yaml(&credentials())
}

/// [`credentials_yaml`] with `openai-cred` rotated to `new_key` (the old value kept under an
/// unused field, as a rotation in place would leave the row).
pub fn credentials_yaml_rotating_openai(new_key: &str) -> String {
    let keys = Keys::derive(&Secret::new(SALT_KEY.to_string()));
    let mut store = credentials();
    let openai = store["credential_list"]
        .as_array_mut()
        .expect("credential_list")
        .iter_mut()
        .find(|c| c["credential_name"] == "openai-cred")
        .expect("openai-cred");
    let values = &mut openai["credential_values"];
    values["previous"] = values["api_key"].take();
    values["api_key"] = json!(encrypt(new_key, Format::V3, &keys));
    yaml(&store)
}

/// A TLS mock provider and a sidecar with every route of [`gateway_config`] in front of it, the
/// config passed through `edit` first. Keep the returned directory (the CA file).
pub async fn start_gateway(
    edit: impl FnOnce(&mut Value),
) -> (MockProvider, SidecarProcess, tempfile::TempDir) {
    start_gateway_with_env(edit, &[]).await
}

/// [`start_gateway`], the sidecar started with `env` too.
pub async fn start_gateway_with_env(
    edit: impl FnOnce(&mut Value),
    env: &[(&str, &str)],
) -> (MockProvider, SidecarProcess, tempfile::TempDir) {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let mock = MockProvider::start_http1(&ca).await;
    let mut config = gateway_config(&mock.base_url(), &ca.write_ca_file(dir.path()));
    edit(&mut config);
    let sidecar = start_with_test_credentials_and_env(&config, env).await;
    (mock, sidecar, dir)
}

/// [`start_gateway`] with only the `openai` route of [`gateway_config`].
pub async fn start_openai_only(
    edit: impl FnOnce(&mut Value),
) -> (MockProvider, SidecarProcess, tempfile::TempDir) {
    start_openai_only_with_env(edit, &[]).await
}

/// [`start_openai_only`], the sidecar started with `env` too.
pub async fn start_openai_only_with_env(
    edit: impl FnOnce(&mut Value),
    env: &[(&str, &str)],
) -> (MockProvider, SidecarProcess, tempfile::TempDir) {
    let only_openai = |config: &mut Value| {
        *config = only_route(config.take(), "openai");
        edit(config);
    };
    start_gateway_with_env(only_openai, env).await
}

/// Starts the sidecar with `config`, the test credential store beside it, and its salt key.
pub async fn start_with_test_credentials(config: &Value) -> SidecarProcess {
    start_with_test_credentials_and_env(config, &[]).await
}

/// [`start_with_test_credentials`], the sidecar started with `env` too.
pub async fn start_with_test_credentials_and_env(
    config: &Value,
    env: &[(&str, &str)],
) -> SidecarProcess {
    let mut env = env.to_vec();
    env.push(("LITELLM_SALT_KEY", SALT_KEY));
    SidecarProcess::start_async(
        &yaml(config),
        &[("credentials.yaml", &credentials_yaml())],
        &env,
    )
    .await
}
