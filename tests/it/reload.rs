//! Config reload on SIGHUP: new routes and rotated credentials go live without a restart; an
//! invalid file is rejected with its errors logged and the running config keeps serving.

use std::time::Duration;

use crate::support::config::{edit_file, extend};
use crate::support::gateway::KEYS;
use crate::support::gateway::{credentials_yaml_rotating_openai, start_openai_only};
use crate::support::http::admin_get;
use crate::support::mock_provider::MockProvider;
use crate::support::sidecar_process::SidecarProcess;
use crate::support::{sha256_hex, wait_until, wait_until_async};
use serde_json::{json, Value};

struct Setup {
    mock: MockProvider,
    sidecar: SidecarProcess,
    client: reqwest::Client,
    _ca_dir: tempfile::TempDir,
}

/// The test gateway with only its `openai` route.
async fn setup() -> Setup {
    let (mock, sidecar, dir) = start_openai_only(|_| {}).await;
    Setup {
        sidecar,
        mock,
        client: reqwest::Client::new(),
        _ca_dir: dir,
    }
}

impl Setup {
    async fn status(&self, path: &str) -> u16 {
        let url = format!("{}{path}", self.sidecar.base_url());
        match self.client.post(url).body("{}").send().await {
            Ok(resp) => resp.status().as_u16(),
            Err(_) => 0,
        }
    }

    /// Rewrites the sidecar's `gateway.yaml` through `edit`.
    fn edit_config(&self, edit: impl FnOnce(&mut Value)) {
        edit_file(&self.sidecar.dir().join("gateway.yaml"), edit);
    }

    /// The `authorization` header of the last request the provider received.
    fn last_authorization(&self) -> Option<String> {
        let requests = self.mock.requests();
        let last = requests.last()?;
        last.headers
            .iter()
            .find(|(name, _)| name == "authorization")
            .map(|(_, v)| v.clone())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_adds_routes_and_rotates_credentials_without_a_restart() {
    let _turn = crate::support::lock::shared().await;
    let s = setup().await;
    let pid = s.sidecar.pid();
    assert_eq!(s.status("/openai/chat/completions").await, 200);
    assert_eq!(s.status("/anthropic/v1/messages").await, 404);

    // A new route, and openai-cred rotated in the local store.
    s.edit_config(|config| {
        let routes = config["routes"].as_array_mut().expect("routes");
        let openai = routes.iter().find(|r| r["name"] == "openai");
        let mut anthropic = openai.expect("openai route").clone();
        extend(
            &mut anthropic,
            json!({ "name": "anthropic", "path_prefix": "/anthropic",
                    "provider": "anthropic", "credential": "anthropic-cred" }),
        );
        routes.push(anthropic);
    });
    let rotated = credentials_yaml_rotating_openai("sk-openai-ROTATED-0009");
    std::fs::write(s.sidecar.dir().join("credentials.yaml"), rotated).expect("write");
    s.sidecar.signal("HUP");

    let applied = wait_until_async(Duration::from_secs(10), || async {
        s.status("/anthropic/v1/messages").await == 200
    })
    .await;
    assert!(applied, "new route never served:\n{}", s.sidecar.output());
    assert_eq!(s.status("/openai/chat/completions").await, 200);
    assert_eq!(
        s.last_authorization().as_deref(),
        Some("Bearer sk-openai-ROTATED-0009")
    );
    assert!(s.sidecar.wait_for_output("config reload: applied").await);
    assert_eq!(s.sidecar.pid(), pid);
    assert!(s.sidecar.output().lines().all(|l| !l.contains("ROTATED")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_config_on_sighup_is_rejected_and_the_running_one_keeps_serving() {
    let _turn = crate::support::lock::shared().await;
    let s = setup().await;
    s.edit_config(|config| {
        config["upstream"]["read_timeout"] = json!("soon");
        config["routez"] = json!([]);
    });
    s.sidecar.signal("HUP");
    let rejected = wait_until(Duration::from_secs(10), || {
        s.sidecar
            .output()
            .contains("rejected; the running config stays in force")
    })
    .await;
    assert!(rejected, "{}", s.sidecar.output());
    let output = s.sidecar.output();
    assert!(output.contains("upstream.read_timeout"), "{output}");
    assert!(output.contains("routez"), "{output}");
    assert_eq!(s.status("/openai/chat/completions").await, 200);
    let (_, metrics) = admin_get(&s.sidecar, "/metrics").await;
    assert!(
        metrics.contains("sidecar_config_reloads_total{result=\"rejected\"} 1"),
        "{metrics}"
    );
}

/// `GET /config`, parsed.
async fn config_in_force(sidecar: &SidecarProcess) -> Value {
    let (status, body) = admin_get(sidecar, "/config").await;
    assert_eq!(status, 200, "{body}");
    for (_, key, _) in KEYS {
        assert!(!body.contains(key), "/config printed a key: {body}");
    }
    assert!(!body.contains("ROTATED"), "/config printed a key: {body}");
    serde_json::from_str(&body).expect("json")
}

/// The `key_fingerprint` `/config` reports for credential `name`.
fn fingerprint_of(config: &Value, name: &str) -> String {
    let entries = config["credentials"]["entries"]
        .as_array()
        .expect("entries");
    let entry = entries.iter().find(|c| c["name"] == name).expect(name);
    entry["key_fingerprint"]
        .as_str()
        .expect("fingerprint")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_config_endpoint_shows_what_a_reload_put_in_force_without_a_key() {
    let _turn = crate::support::lock::shared().await;
    let s = setup().await;
    let file = s.sidecar.dir().join("gateway.yaml");
    let digest_of_file = || sha256_hex(&std::fs::read_to_string(&file).expect("config"));
    let before = config_in_force(&s.sidecar).await;
    assert_eq!(before["config"]["sha256"], digest_of_file());
    let names: Vec<&str> = before["routes"]
        .as_array()
        .expect("routes")
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(names, ["openai"]);
    assert_eq!(before["routes"][0]["backend"]["name"], "openai-cred");
    assert_eq!(before["routes"][0]["auth_header"], "authorization");
    let old_key = KEYS[0].1;
    assert_eq!(
        fingerprint_of(&before, "openai-cred"),
        sha256_hex(old_key)[..8]
    );

    s.edit_config(|config| {
        config["routes"][0]["name"] = json!("openai-renamed");
    });
    let rotated = credentials_yaml_rotating_openai("sk-openai-ROTATED-0010");
    std::fs::write(s.sidecar.dir().join("credentials.yaml"), rotated).expect("write");
    s.sidecar.signal("HUP");
    let rotated_fingerprint = sha256_hex("sk-openai-ROTATED-0010")[..8].to_string();
    let applied = wait_until_async(Duration::from_secs(10), || async {
        let now = config_in_force(&s.sidecar).await;
        now["config"]["sha256"] == digest_of_file()
            && fingerprint_of(&now, "openai-cred") == rotated_fingerprint
    })
    .await;
    let after = config_in_force(&s.sidecar).await;
    assert!(applied, "/config never showed the reload: {after}");
    assert_ne!(after["config"]["sha256"], before["config"]["sha256"]);
    assert_eq!(after["routes"][0]["name"], "openai-renamed");
}
