//! The real OpenAI Python SDK (pinned in `scripts/bootstrap.sh`, run from `target/sdk-venv`)
//! against a `dispatch: model` route: chat completions, a stream and embeddings, for aliases on
//! OpenAI, Azure, Anthropic's and Gemini's OpenAI-compatible APIs, and `models.list()`. The SDK
//! holds a placeholder key; each provider must see only its own.

use std::path::PathBuf;

use crate::support::db_gateway::*;
use crate::support::pg::TestDb;
use serde_json::Value;

/// The venv's Python; a missing venv is a failure that says how to make it, never a skip.
fn sdk_python() -> PathBuf {
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/sdk-venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `bash scripts/bootstrap.sh --postgres`, which makes the SDK's venv",
        python.display()
    );
    python
}

/// Runs `tests/sdk/openai_client.py` against `base_url` for `aliases`; returns what it saw.
pub async fn run_sdk(base_url: &str, aliases: &[&str]) -> Value {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/openai_client.py");
    let base_url = base_url.to_string();
    let aliases: Vec<String> = aliases.iter().map(|a| a.to_string()).collect();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(sdk_python())
            .arg(script)
            .arg(base_url)
            .args(aliases)
            .output()
    })
    .await
    .expect("join")
    .expect("run the SDK");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the SDK failed:\n{stderr}");
    serde_json::from_slice(&output.stdout).expect("the script's JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_python_sdk_works_through_one_base_url() {
    let _turn = crate::support::lock::shared().await;
    let e = env().await;
    let db = TestDb::new(true).await;
    let sidecar = crate::unified::start(&e, &db).await;
    let aliases = ["gpt", "azure-gpt", "claude", "gemini"];
    let seen = run_sdk(&format!("{}/v1", sidecar.base_url()), &aliases).await;
    let provider_models = [
        ("gpt", "gpt-4o-2024"),
        ("azure-gpt", "my-deploy"),
        ("claude", "claude-x"),
        ("gemini", "gemini-y"),
    ];
    for (alias, model) in provider_models {
        assert_eq!(seen["chat"][alias]["model"], model, "{alias}: {seen}");
        assert_eq!(seen["chat"][alias]["content"], "hello from the mock");
        assert_eq!(seen["stream"][alias], 3, "{alias}: three chunks streamed");
        assert_eq!(seen["embeddings"][alias]["model"], model);
        assert_eq!(
            seen["embeddings"][alias]["vector"],
            serde_json::json!([0.25, -0.5])
        );
    }
    let listed: Vec<&str> = seen["models"]
        .as_array()
        .expect("models")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(listed, ["azure-gpt", "claude", "gemini", "gpt", "split"]);

    let requests = e.mock.requests();
    assert_eq!(
        requests.len(),
        aliases.len() * 3,
        "chat, stream, embeddings per alias"
    );
    for request in &requests {
        let all_headers = format!("{:?}", request.headers);
        assert!(
            !all_headers.contains("sk-app-placeholder"),
            "the SDK's own key reached a provider: {}",
            request.path
        );
        let injected = request
            .header("authorization")
            .or(request.header("api-key"))
            .expect("a provider key");
        assert!(injected.contains("sk-"), "{}", request.path);
    }
}
