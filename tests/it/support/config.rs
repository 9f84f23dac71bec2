//! Sidecar configs for tests, built as JSON values (`serde_json::json!`) and written as YAML:
//! a test changes a field by assigning to it (`config["upstream"]["read_timeout"] = json!("1s")`),
//! never by editing text. The `{DIR}` and `{PORT}` placeholders stay inside string values;
//! [`super::sidecar_process::SidecarProcess`] fills them in when it writes `gateway.yaml`.

use std::path::Path;

use serde_json::{json, Value};

/// The proxy listener's address: the port the harness picks for each sidecar.
pub const LISTEN: &str = "127.0.0.1:{PORT}";

/// `config` as YAML text, what the sidecar reads.
pub fn yaml(config: &Value) -> String {
    serde_yaml::to_string(config).expect("config serializes to YAML")
}

/// A config with one thread (pid file and upgrade socket in the sidecar's own directory), one
/// listener on [`LISTEN`], and the given `upstream`, `credentials` and `routes` sections.
pub fn gateway(upstream: Value, credentials: Value, routes: Vec<Value>) -> Value {
    json!({
        "server": { "threads": 1, "pid_file": "{DIR}/sidecar.pid", "upgrade_sock": "{DIR}/upgrade.sock" },
        "listeners": [{ "address": LISTEN }],
        "upstream": upstream,
        "credentials": credentials,
        "routes": routes,
    })
}

/// The `credentials` section for a local store in `credentials.yaml` beside the config.
pub fn local_credentials() -> Value {
    json!({ "local": "credentials.yaml" })
}

/// A route `/name` (the prefix stripped) to `upstream`, authenticated the `provider` way with
/// the credential named `credential`.
pub fn route(name: &str, upstream: &str, provider: &str, credential: &str) -> Value {
    json!({
        "name": name, "path_prefix": format!("/{name}"), "strip_prefix": true,
        "upstream": upstream, "provider": provider, "credential": credential,
    })
}

/// Sets each field of the object `extra` on the object `target` (replacing one already there).
pub fn extend(target: &mut Value, extra: Value) {
    let target = target.as_object_mut().expect("an object to extend");
    for (key, value) in extra.as_object().expect("an object of fields").clone() {
        target.insert(key, value);
    }
}

/// Rewrites the YAML config at `path` (a running sidecar's `gateway.yaml`, placeholders already
/// filled in) through `edit`.
pub fn edit_file(path: &Path, edit: impl FnOnce(&mut Value)) {
    let text = std::fs::read_to_string(path).expect("read the config");
    let mut config: Value = serde_yaml::from_str(&text).expect("the config is YAML");
    edit(&mut config);
    std::fs::write(path, yaml(&config)).expect("write the config");
}
