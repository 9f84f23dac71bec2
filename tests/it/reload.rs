//! Config reload on SIGHUP: new routes and rotated credentials go live without a restart; an
//! invalid file is rejected with its errors logged and the running config keeps serving.

use std::time::Duration;

use crate::support::config::{edit_file, extend};
use crate::support::gateway::{credentials_yaml_rotating_openai, start_openai_only};
use crate::support::http::admin_get;
use crate::support::mock_provider::MockProvider;
use crate::support::sidecar_process::SidecarProcess;
use crate::support::{wait_until, wait_until_async};
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
