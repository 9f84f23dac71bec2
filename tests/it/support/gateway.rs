//! A ready-made gateway for integration tests: one route per provider style, all pointing at
//! one mock provider, with credentials encrypted in each LiteLLM format.

use std::path::Path;

use sidecar::credentials::cipher::{encrypt, Format, Keys};

use super::certs::TestCa;
use super::mock_provider::MockProvider;
use super::sidecar_process::SidecarProcess;
use sidecar::credentials::Secret;

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

/// `gateway.yaml` text: routes `/openai`, `/anthropic`, `/azure`, `/gemini`, `/custom` (header
/// `X-Custom-Key` with prefix `Token `), `/missing` (credential not in the store) and `/broken`
/// (credential that does not decrypt), all to `upstream`, trusting `ca_file`.
pub fn gateway_yaml(upstream: &str, ca_file: &Path) -> String {
    let route = |name: &str, provider: &str, credential: &str, extra: &str| {
        format!(
            "  - {{ name: {name}, path_prefix: /{name}, strip_prefix: true, upstream: \"{upstream}/v1\", provider: {provider}, credential: {credential}{extra} }}\n"
        )
    };
    let mut routes = String::new();
    routes += &route("openai", "openai", "openai-cred", "");
    routes += &route("anthropic", "anthropic", "anthropic-cred", "");
    routes += &route("azure", "azure", "azure-cred", "");
    routes += &route("gemini", "gemini", "gemini-cred", "");
    routes += &route(
        "custom",
        "header",
        "custom-cred",
        ", auth_header: X-Custom-Key, auth_prefix: \"Token \"",
    );
    routes += &route("missing", "openai", "absent-cred", "");
    routes += &route("broken", "openai", "broken-cred", "");
    format!(
        "server: {{ threads: 1, pid_file: \"{{DIR}}/sidecar.pid\", upgrade_sock: \"{{DIR}}/upgrade.sock\" }}\n\
         listeners: [{{ address: \"127.0.0.1:{{PORT}}\" }}]\n\
         upstream: {{ ca_file: \"{}\", read_timeout: 5s }}\n\
         credentials: {{ local: credentials.yaml }}\n\
         routes:\n{routes}",
        ca_file.display()
    )
}

/// `config` (a [`gateway_yaml`]) with only the route named `name`.
pub fn only_route(config: &str, name: &str) -> String {
    let keep = format!("name: {name},");
    config
        .lines()
        .filter(|l| !l.starts_with("  - ") || l.contains(&keep))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// `credentials.yaml` text with every entry of [`KEYS`] (Azure's with an `api_version`), plus
/// `broken-cred` whose key is not valid ciphertext.
pub fn credentials_yaml() -> String {
    let keys = Keys::derive(&Secret::new(SALT_KEY.to_string()));
    let mut text = String::from("credential_list:\n");
    for (name, key, format) in KEYS {
        text += &format!(
            "  - credential_name: {name}\n    credential_values:\n      api_key: \"{}\"\n",
            encrypt(key, format, &keys)
        );
        if name == "azure-cred" {
            text += &format!(
                "      api_version: \"{}\"\n",
                encrypt("2024-10-21", Format::V3, &keys)
            );
        }
    }
    text += "  - credential_name: broken-cred\n    credential_values:\n      api_key: \"v3:gcm:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"\n";
    text
}

/// [`credentials_yaml`] with `openai-cred` rotated to `new_key` (the old value kept under an
/// unused field, as a rotation in place would leave the row).
pub fn credentials_yaml_rotating_openai(new_key: &str) -> String {
    let keys = Keys::derive(&Secret::new(SALT_KEY.to_string()));
    credentials_yaml().replacen(
        "credential_name: openai-cred\n    credential_values:\n      api_key: \"",
        &format!(
            "credential_name: openai-cred\n    credential_values:\n      api_key: \"{}\"\n      previous: \"",
            encrypt(new_key, Format::V3, &keys)
        ),
        1,
    )
}

/// A TLS mock provider and a sidecar with only the `openai` route of [`gateway_yaml`] in front
/// of it, the config passed through `edit` first. Keep the returned directory (the CA file).
pub async fn start_openai_only(
    edit: impl FnOnce(String) -> String,
) -> (MockProvider, SidecarProcess, tempfile::TempDir) {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let mock = MockProvider::start_http1(&ca).await;
    let config = only_route(
        &gateway_yaml(&mock.base_url(), &ca.write_ca_file(dir.path())),
        "openai",
    );
    let sidecar = start_with_test_credentials(&edit(config)).await;
    (mock, sidecar, dir)
}

/// Starts the sidecar with `config`, the test credential store beside it, and its salt key.
pub async fn start_with_test_credentials(config: &str) -> SidecarProcess {
    SidecarProcess::start_async(
        config,
        &[("credentials.yaml", &credentials_yaml())],
        &[("LITELLM_SALT_KEY", SALT_KEY)],
    )
    .await
}
