//! No secret leaves the process except in the injected upstream header: a full traffic mix
//! (every provider style, client credentials of every kind, client tokens right, wrong and
//! missing, every sidecar error, a stream, an upstream error, a reload) at the most verbose log
//! level, then every credential value and client token is looked for in stdout, stderr, the
//! admin pages and every response body.

use std::time::Duration;

use crate::support::certs::TestCa;
use crate::support::config::yaml;
use crate::support::gateway::{credentials_yaml, gateway_config, CLIENT_SECRETS, KEYS, SALT_KEY};
use crate::support::http::admin_get;
use crate::support::mock_provider::MockProvider;
use crate::support::sidecar_process::SidecarProcess;
use crate::support::wait_until;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// The client token the sidecar accepts (the config holds only its hash).
const TOKEN: &str = "tok-CLIENT-TOKEN-7777";

/// One request of the mix: path, client token, extra headers.
type Step = (
    &'static str,
    Option<&'static str>,
    &'static [(&'static str, &'static str)],
);

/// Every value that must never be printed.
fn secrets() -> Vec<&'static str> {
    let mut all: Vec<&str> = KEYS.iter().map(|(_, key, _)| *key).collect();
    all.extend(CLIENT_SECRETS);
    all.extend([TOKEN, "tok-WRONG-8888", SALT_KEY]);
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_credential_or_token_appears_in_logs_metrics_or_error_bodies() {
    let ca = TestCa::new();
    let ca_dir = tempfile::tempdir().expect("tempdir");
    let mock = MockProvider::start_http1(&ca).await;
    let hash: String = Sha256::digest(TOKEN.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut config = gateway_config(&mock.base_url(), &ca.write_ca_file(ca_dir.path()));
    config["server"]["grace_period"] = json!("1s");
    config["server"]["graceful_shutdown_timeout"] = json!("2s");
    config["access"] =
        json!({ "client_tokens": { "header": "x-sidecar-token", "sha256": [hash] } });
    config["log"] = json!({ "level": "trace", "format": "json" });
    let mut sidecar = SidecarProcess::start_async(
        &yaml(&config),
        &[("credentials.yaml", &credentials_yaml())],
        &[("LITELLM_SALT_KEY", SALT_KEY), ("RUST_LOG", "trace")],
    )
    .await;
    let client = reqwest::Client::new();
    let base = sidecar.base_url();
    let mut bodies = Vec::new();
    let send = |path: &str, token: Option<&str>, extra: &[(&str, &str)]| {
        let mut req = client
            .post(format!("{base}{path}?key={}", CLIENT_SECRETS[3]))
            .header("Authorization", format!("Bearer {}", CLIENT_SECRETS[0]))
            .header("x-api-key", CLIENT_SECRETS[1])
            .header("api-key", CLIENT_SECRETS[2])
            .header("x-goog-api-key", CLIENT_SECRETS[3])
            .header("X-Custom-Key", CLIENT_SECRETS[4])
            .body(r#"{"model":"m"}"#);
        if let Some(token) = token {
            req = req.header("x-sidecar-token", token);
        }
        for (name, value) in extra {
            req = req.header(*name, *value);
        }
        async move {
            let resp = req.send().await.expect("request");
            let status = resp.status().as_u16();
            (status, resp.text().await.expect("body"))
        }
    };
    let mut statuses = Vec::new();
    let mix: [Step; 12] = [
        ("/openai/chat/completions", Some(TOKEN), &[]),
        ("/anthropic/v1/messages", Some(TOKEN), &[]),
        ("/azure/chat/completions", Some(TOKEN), &[]),
        ("/gemini/models/x:generateContent", Some(TOKEN), &[]),
        ("/custom/v1/complete", Some(TOKEN), &[]),
        (
            "/openai/chat/completions",
            Some(TOKEN),
            &[("x-mock-sse-events", "3"), ("x-mock-sse-delay-ms", "10")],
        ),
        (
            "/openai/chat/completions",
            Some(TOKEN),
            &[("x-mock-status", "500")],
        ),
        ("/missing/x", Some(TOKEN), &[]),
        ("/broken/x", Some(TOKEN), &[]),
        ("/nowhere", Some(TOKEN), &[]),
        ("/openai/chat/completions", None, &[]),
        ("/openai/chat/completions", Some("tok-WRONG-8888"), &[]),
    ];
    for (path, token, extra) in mix {
        let (status, body) = send(path, token, extra).await;
        statuses.push(status);
        bodies.push(body);
    }
    assert_eq!(
        statuses,
        [200, 200, 200, 200, 200, 200, 500, 503, 503, 404, 401, 403],
        "{bodies:?}"
    );
    assert_eq!(mock.requests().len(), 7, "refused requests sent nothing");

    // A reload (credential sources re-read), then the admin pages.
    sidecar.signal("HUP");
    assert!(
        wait_until(Duration::from_secs(10), || sidecar
            .output()
            .contains("config reload: applied"))
        .await
    );
    for page in ["/metrics", "/readyz", "/healthz"] {
        bodies.push(admin_get(&sidecar, page).await.1);
    }
    assert!(sidecar.stop().success());

    let output = sidecar.output();
    assert!(
        output.contains("Sending header to upstream"),
        "trace/debug lines are on"
    );
    for secret in secrets() {
        assert!(!output.contains(secret), "{secret} in the process output");
        for body in &bodies {
            assert!(
                !body.contains(secret),
                "{secret} in a response body: {body}"
            );
        }
    }
    // The access lines are JSON, one per request, with their fields.
    let access: Vec<Value> = output
        .lines()
        .filter(|l| l.contains("\"target\":\"access\""))
        .map(|l| serde_json::from_str(l).expect("access line is JSON"))
        .collect();
    assert_eq!(access.len(), 12, "{output}");
    assert_eq!(access[0]["route"], "openai");
    assert_eq!(access[0]["status"], 200);
    assert!(access.iter().all(|a| a["client"]
        .as_str()
        .is_some_and(|c| c.starts_with("127.0.0.1:"))));
}
