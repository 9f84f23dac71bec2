//! Anthropic's Messages API on a `dispatch: model` route, driven by the real Anthropic SDK with
//! its base URL at the sidecar: a Claude deployment on Bedrock answers through InvokeModel (the
//! mock verifies the signature with botocore and refuses a body with keys Bedrock's Claude does
//! not take, as Bedrock does) and its event stream reaches the SDK as Anthropic's SSE; a
//! `bedrock/mantle/` deployment gets Bedrock's Anthropic-compatible endpoint with its Bedrock API
//! key; an `anthropic/` deployment gets `/v1/messages` with the row's key, and its alias's
//! `openai/` deployment never does; an `openai/` one alone is refused, naming it, with nothing
//! sent. Rows are written by the real LiteLLM package.

use std::path::PathBuf;

use serde_json::{json, Value};

use crate::support::aws::*;
use crate::support::db_gateway::*;
use crate::support::http::{admin_get, tokens_counted};
use crate::support::pg::TestDb;

const CLAUDE: &str = "anthropic.claude-3-haiku-20240307-v1:0";
const ANTHROPIC_KEY: &str = "sk-ant-row-key-Qx7Mbq";
const OPENAI_KEY: &str = "sk-openai-row-key-T2fp";
const MANTLE_KEY: &str = "bedrock-api-key-mantle-ABSK9";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_anthropic_sdk_reaches_claude_on_bedrock_and_anthropic_through_one_route() {
    let _turn = crate::support::lock::shared().await;
    let (e, ca) = env_with_ca().await;
    let mock = AwsMock::start(
        &ca,
        json!({ "keys": { ROW_KEY_ID: { "secret": ROW_SECRET } }, "api_keys": [MANTLE_KEY],
                "region": "us-east-1" }),
    )
    .await;
    let db = TestDb::new(true).await;
    let provider = e.mock.base_url();
    let rows = [
        (
            "d-bedrock",
            "claude-bedrock",
            json!({ "model": format!("bedrock/{CLAUDE}"), "aws_access_key_id": ROW_KEY_ID,
                    "aws_secret_access_key": ROW_SECRET, "aws_region_name": "us-east-1",
                    "aws_bedrock_runtime_endpoint": mock.base() }),
        ),
        (
            "d-mantle",
            "claude-mantle",
            json!({ "model": "bedrock/mantle/anthropic.claude-mythos-preview", "api_key": MANTLE_KEY,
                    "aws_region_name": "us-east-1", "aws_bedrock_runtime_endpoint": mock.base() }),
        ),
        (
            "d-anthropic",
            "claude-direct",
            json!({ "model": "anthropic/claude-3-5-haiku-20241022", "api_key": ANTHROPIC_KEY,
                    "api_base": provider }),
        ),
        // The same alias on OpenAI too: Messages API requests never go there.
        (
            "d-direct-openai",
            "claude-direct",
            json!({ "model": "openai/gpt-4o-mini", "api_key": OPENAI_KEY,
                    "api_base": format!("{provider}/v1") }),
        ),
        (
            "d-gpt",
            "gpt",
            json!({ "model": "openai/gpt-4o-mini", "api_key": OPENAI_KEY,
                    "api_base": format!("{provider}/v1") }),
        ),
    ];
    put_rows(&db, &rows, &[]).await;
    let unified = json!({ "name": "unified", "path_prefix": "/v1", "dispatch": "model" });
    let sidecar = start_sidecar(&e, &db, vec![unified]).await;

    // The Anthropic SDK, base URL at the sidecar, a placeholder key: one message, one stream.
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/google-venv/bin/python");
    let seen = run_client(
        python.clone(),
        "anthropic_messages_client.py",
        sidecar.base_url(),
        "claude-bedrock",
    )
    .await;
    assert_eq!(seen["text"], "hello", "{seen}");
    assert_eq!(seen["echo"], "bedrock-2023-05-31", "{seen}");
    assert_eq!(seen["usage"]["input_tokens"], 3, "{seen}");
    let events: Vec<&str> = seen["stream"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(events.first(), Some(&"message_start"), "{seen}");
    assert_eq!(events.last(), Some(&"message_stop"), "{seen}");
    assert!(events.contains(&"content_block_delta"), "{seen}");
    assert_eq!(seen["streamed_text"], "hello", "{seen}");
    assert_eq!(seen["streamed_usage"]["output_tokens"], 9, "{seen}");

    // Bedrock saw InvokeModel and its stream, signed with the row's keys (botocore verified),
    // with the body Claude on Bedrock takes: no model, no stream, the beta header in the body.
    let stats = mock.stats();
    let requests = stats["requests"].as_array().expect("requests");
    assert_invoke_and_stream(requests, CLAUDE, ROW_KEY_ID);
    assert_eq!(
        requests[0]["body_keys"],
        json!(["anthropic_version", "max_tokens", "messages"])
    );
    assert_eq!(
        requests[1]["body_keys"],
        json!([
            "anthropic_beta",
            "anthropic_version",
            "max_tokens",
            "messages"
        ])
    );
    assert_eq!(requests[1]["accept"], "application/vnd.amazon.eventstream");

    // Bedrock's Mantle endpoint: Anthropic's API passes as it is (model id in the body, the
    // version in a header), with the row's Bedrock API key; an OpenAI endpoint is refused there.
    let seen = run_client(
        python,
        "anthropic_messages_client.py",
        sidecar.base_url(),
        "claude-mantle",
    )
    .await;
    assert_eq!(seen["text"], "mantle", "{seen}");
    assert_eq!(seen["streamed_text"], "mantle", "{seen}");
    assert_eq!(seen["streamed_usage"]["output_tokens"], 4, "{seen}");
    let stats = mock.stats();
    let mantle = &stats["requests"].as_array().expect("requests")[2..];
    assert_eq!(mantle.len(), 2, "{stats}");
    for request in mantle {
        assert_eq!(request["path"], "/anthropic/v1/messages", "{request}");
        assert_eq!(request["key_id"], "bearer", "{request}");
        assert_eq!(
            request["model"], "anthropic.claude-mythos-preview",
            "{request}"
        );
        assert!(
            request["anthropic_version"].is_string(),
            "the SDK's: {request}"
        );
        assert_eq!(request["client_placeholder_seen"], false, "{request}");
    }
    // A client that sends no version gets Anthropic's default, which Mantle requires; Claude
    // Code's `?beta=true` does not reach Bedrock.
    let response = e
        .client
        .post(format!("{}/v1/messages?beta=true", sidecar.base_url()))
        .json(&json!({ "model": "claude-mantle", "max_tokens": 8, "messages": [] }))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    let stats = mock.stats();
    assert_eq!(
        stats["requests"][4]["anthropic_version"], "2023-06-01",
        "{stats}"
    );
    assert_eq!(stats["requests"][4]["path"], "/anthropic/v1/messages");
    let response = e
        .client
        .post(format!("{}/v1/chat/completions", sidecar.base_url()))
        .json(&json!({ "model": "claude-mantle", "messages": [] }))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 400);
    let body = response.text().await.expect("body");
    assert!(
        body.contains("Mantle") && body.contains("d-mantle"),
        "{body}"
    );
    assert_eq!(mock.stats()["requests"].as_array().map(Vec::len), Some(5));

    // The tokens of both answers count for the alias (the stream's read from the SSE made).
    let (_, metrics) = admin_get(&sidecar, "/metrics").await;
    let tokens = |kind| tokens_counted(&metrics, "claude-bedrock", None, kind);
    assert_eq!(tokens("prompt"), Some(3 + 13), "{metrics}");
    assert_eq!(tokens("completion"), Some(2 + 9), "{metrics}");

    // An anthropic/ deployment: /v1/messages below its api_base, the row's key as x-api-key,
    // the deployment's model in the body; the client's key never reaches it.
    let messages = |alias: &str| {
        e.client
            .post(format!("{}/v1/messages?beta=true", sidecar.base_url()))
            .header("x-api-key", "dummy-client-key")
            .header("anthropic-version", "2023-06-01")
            .json(&json!({ "model": alias, "max_tokens": 8,
                           "messages": [{ "role": "user", "content": "hi" }] }))
            .send()
    };
    for _ in 0..4 {
        let response = messages("claude-direct").await.expect("send");
        assert_eq!(response.status(), 200);
    }
    let received = e.mock.requests();
    assert_eq!(received.len(), 4);
    for request in &received {
        assert_eq!(
            request.path, "/v1/messages",
            "only the anthropic/ deployment takes it"
        );
    }
    assert_eq!(
        received[0].query.as_deref(),
        Some("beta=true"),
        "Anthropic takes it"
    );
    assert_eq!(received[0].header("x-api-key"), Some(ANTHROPIC_KEY));
    assert_eq!(received[0].header("anthropic-version"), Some("2023-06-01"));
    let body: Value = serde_json::from_str(&received[0].body_str()).expect("json");
    assert_eq!(body["model"], "claude-3-5-haiku-20241022");

    // An openai/ deployment does not take the Messages API: refused naming it, nothing sent.
    let response = messages("gpt").await.expect("send");
    assert_eq!(response.status(), 400);
    let refused = response.text().await.expect("body");
    assert!(
        refused.contains("unsupported_model_api") && refused.contains("d-gpt"),
        "{refused}"
    );
    assert_eq!(e.mock.requests().len(), 4);
    assert_eq!(mock.stats()["requests"].as_array().map(Vec::len), Some(5));

    let secrets = [ROW_SECRET, ANTHROPIC_KEY, OPENAI_KEY, MANTLE_KEY];
    assert_no_secret("the 400", &refused, &secrets);
    assert_no_secret("the log", &sidecar.output(), &secrets);
}
