//! AWS Bedrock through the sidecar, driven by the real clients: boto3's `bedrock-runtime` client
//! (placeholder credentials, `endpoint_url` at a `model:` route) for Converse, ConverseStream,
//! InvokeModel and InvokeModelWithResponseStream, the Anthropic SDK's Bedrock client on the same
//! route, and the OpenAI SDK on a `dispatch: model` route for Bedrock's OpenAI-compatible API.
//! The provider (`support::aws`) verifies every signature with botocore's own `SigV4Auth` and the
//! real keys and answers the stream operations in AWS event-stream framing (boto3 decodes them
//! here). The rows are written by the real LiteLLM package (its encryption, its field names).

use std::path::PathBuf;

use serde_json::{json, Value};

use crate::support::aws::*;
use crate::support::db_gateway::*;
use crate::support::http::admin_get;
use crate::support::litellm_venv;
use crate::support::pg::TestDb;

const CLAUDE: &str = "anthropic.claude-3-haiku-20240307-v1:0";
const SESSION_KEY_ID: &str = "ASIAROWSESSION000001";
const SESSION_SECRET: &str = "row-session-secret-K7MDENG";
const SESSION_TOKEN: &str = "row-session-token-FwoGZXIvYXdz";
const API_KEY: &str = "bedrock-api-key-ABSKQmVkcm9jaw";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boto3_and_the_openai_sdk_reach_bedrock_signed_with_the_rows_keys() {
    let _turn = crate::support::lock::shared().await;
    let (e, ca) = env_with_ca().await;
    let keys = json!({ ROW_KEY_ID: { "secret": ROW_SECRET },
                       SESSION_KEY_ID: { "secret": SESSION_SECRET, "token": SESSION_TOKEN } });
    let mock = AwsMock::start(
        &ca,
        json!({ "keys": keys, "api_keys": [API_KEY], "region": "us-east-1" }),
    )
    .await;
    let db = TestDb::new(true).await;
    let endpoint = mock.base();
    let region = "us-east-1";
    let keyed = |model: &str, key_id: &str, secret: &str| {
        json!({ "model": model, "aws_access_key_id": key_id, "aws_secret_access_key": secret,
                "aws_region_name": region, "api_base": endpoint })
    };
    let mut claude = keyed(
        &format!("bedrock/converse/{CLAUDE}"),
        ROW_KEY_ID,
        ROW_SECRET,
    );
    let base = claude.as_object_mut().and_then(|c| c.remove("api_base"));
    claude["aws_bedrock_runtime_endpoint"] = base.expect("a base");
    let mut session = keyed(
        "bedrock/openai.gpt-oss-20b-1:0",
        SESSION_KEY_ID,
        SESSION_SECRET,
    );
    session["aws_session_token"] = json!(SESSION_TOKEN);
    let api_key = json!({ "model": "bedrock/openai.gpt-oss-120b-1:0", "api_key": API_KEY,
                          "aws_region_name": region, "aws_bedrock_runtime_endpoint": endpoint });
    let wrong = keyed(
        "bedrock/openai.gpt-oss-20b-1:0",
        ROW_KEY_ID,
        "not-the-secret",
    );
    let broken = json!({ "model": "bedrock/x", "aws_access_key_id": ROW_KEY_ID,
                         "aws_region_name": region });
    let rows = [
        ("d-claude", "bedrock-claude", claude),
        ("d-session", "bedrock-gpt", session),
        ("d-key", "bedrock-key", api_key),
        ("d-wrong", "bedrock-wrong", wrong),
        ("d-broken", "bedrock-broken", broken),
        (
            "d-linked",
            "bedrock-linked",
            json!({ "model": "bedrock/meta.llama3-8b-instruct-v1:0",
                                               "litellm_credential_name": "aws-prod" }),
        ),
    ];
    // A credential row with AWS keys, as LiteLLM's /credentials endpoint stores it.
    let credential = json!({ "aws_access_key_id": ROW_KEY_ID, "aws_secret_access_key": ROW_SECRET,
                             "aws_region_name": region, "aws_bedrock_runtime_endpoint": endpoint });
    put_rows(&db, &rows, &[("aws-prod", credential)]).await;
    let native = json!({ "name": "bedrock", "path_prefix": "/bedrock", "strip_prefix": true,
                         "model": "bedrock-claude" });
    let unified = json!({ "name": "unified", "path_prefix": "/v1", "dispatch": "model" });
    let by_credential = credential_route("awscred", "aws-prod", &endpoint, "openai");
    let sidecar = start_sidecar(&e, &db, vec![native, unified, by_credential]).await;

    // boto3 with placeholder keys and another model id: the sidecar pins the deployment's model
    // in the path, drops the client's signature and signs again with the row's keys.
    let boto3 = litellm_venv::python();
    let base_url = format!("{}/bedrock", sidecar.base_url());
    let seen = run_client(boto3, "bedrock_client.py", base_url.clone(), "client-model").await;
    assert_eq!(seen["converse"]["text"], "hello", "{seen}");
    assert_eq!(seen["converse"]["usage"]["totalTokens"], 5, "{seen}");
    let kinds: Vec<&str> = seen["converse_stream"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e.as_object()?.keys().next().map(String::as_str))
        .collect();
    let want = [
        "messageStart",
        "contentBlockDelta",
        "contentBlockDelta",
        "contentBlockStop",
        "messageStop",
        "metadata",
    ];
    assert_eq!(kinds, want, "boto3 decoded the mock's event stream: {seen}");
    assert_eq!(
        seen["converse_stream"][2]["contentBlockDelta"]["delta"]["text"],
        "lo"
    );
    assert_eq!(seen["invoke"]["echo"], "bedrock-2023-05-31", "{seen}");
    assert_eq!(seen["invoke_stream"][3]["delta"]["text"], "lo", "{seen}");
    let stats = mock.stats();
    let requests = stats["requests"].as_array().expect("requests").clone();
    let encoded = CLAUDE.replace(':', "%3A");
    let operations = [
        "converse",
        "converse-stream",
        "invoke",
        "invoke-with-response-stream",
    ];
    assert_eq!(requests.len(), 4, "{stats}");
    for (request, operation) in requests.iter().zip(operations) {
        assert_eq!(
            request["path"],
            format!("/model/{encoded}/{operation}"),
            "{stats}"
        );
        assert_eq!(
            request["key_id"], ROW_KEY_ID,
            "verified by botocore: {request}"
        );
        assert_eq!(
            request["token"],
            Value::Null,
            "the client's session token is dropped"
        );
        assert_eq!(request["client_placeholder_seen"], false, "{request}");
    }

    // The Anthropic SDK's Bedrock client on the same route: InvokeModel and its stream.
    let google_venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/google-venv");
    let anthropic = google_venv.join("bin/python");
    let seen = run_client(anthropic, "anthropic_bedrock_client.py", base_url, "claude").await;
    assert_eq!(seen["text"], "hello", "{seen}");
    assert_eq!(seen["streamed_text"], "hello", "{seen}");
    assert_eq!(seen["stream"][0], "message_start", "{seen}");
    let stats = mock.stats();
    let requests = &stats["requests"].as_array().expect("requests")[4..];
    assert_invoke_and_stream(requests, CLAUDE, ROW_KEY_ID);

    // The OpenAI SDK on Bedrock's OpenAI-compatible API: SigV4 with a session token, and a
    // Bedrock API key as Bearer.
    let sdk = crate::openai_sdk::run_sdk(
        &format!("{}/v1", sidecar.base_url()),
        &["bedrock-gpt", "bedrock-key"],
    )
    .await;
    assert_eq!(
        sdk["chat"]["bedrock-gpt"]["model"], "openai.gpt-oss-20b-1:0",
        "{sdk}"
    );
    assert_eq!(
        sdk["chat"]["bedrock-key"]["model"], "openai.gpt-oss-120b-1:0",
        "{sdk}"
    );
    assert_eq!(sdk["stream"]["bedrock-gpt"], 3, "{sdk}");
    let stats = mock.stats();
    let openai: Vec<&Value> = stats["requests"].as_array().expect("requests")[6..]
        .iter()
        .collect();
    assert_eq!(
        openai.len(),
        6,
        "chat, stream and embeddings for each: {stats}"
    );
    assert_eq!(openai[0]["path"], "/openai/v1/chat/completions");
    for request in &openai[..3] {
        assert_eq!(request["key_id"], SESSION_KEY_ID, "{request}");
        assert_eq!(request["token"], SESSION_TOKEN, "{request}");
    }
    for request in &openai[3..] {
        assert_eq!(request["key_id"], "bearer", "{request}");
        assert_eq!(request["client_placeholder_seen"], false, "{request}");
    }

    // The mock's check bites: a row whose secret is not the key's is refused by botocore.
    let chat = |model: &str| {
        e.client
            .post(format!("{}/v1/chat/completions", sidecar.base_url()))
            .json(&json!({ "model": model, "messages": [] }))
            .send()
    };
    assert_eq!(chat("bedrock-wrong").await.expect("send").status(), 403);
    let stats = mock.stats();
    assert_eq!(
        stats["requests"][12]["failure"], "signature mismatch",
        "{stats}"
    );

    // A row with a key id and no secret is refused naming the field; nothing is sent.
    let response = chat("bedrock-broken").await.expect("send");
    assert_eq!(response.status(), 503);
    let refused = response.text().await.expect("body");
    assert!(refused.contains("aws_secret_access_key"), "{refused}");
    assert_eq!(mock.stats()["requests"].as_array().map(Vec::len), Some(13));

    // The credential row's keys sign for the deployment that links it; a credential: route to
    // it cannot sign (its body is not read before sending) and answers 503.
    assert_eq!(chat("bedrock-linked").await.expect("send").status(), 200);
    let stats = mock.stats();
    assert_eq!(stats["requests"][13]["key_id"], ROW_KEY_ID, "{stats}");
    let response = e
        .client
        .post(format!("{}/awscred/chat/completions", sidecar.base_url()))
        .json(&json!({ "model": "x", "messages": [] }))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 503);
    let body = response.text().await.expect("body");
    assert!(body.contains("holds AWS keys"), "{body}");
    assert_eq!(mock.stats()["requests"].as_array().map(Vec::len), Some(14));

    let (_, config) = admin_get(&sidecar, "/config").await;
    assert!(
        config.contains("\"aws_sigv4\"") && config.contains("session_keys"),
        "{config}"
    );
    let (_, ready) = admin_get(&sidecar, "/readyz").await;
    assert!(
        ready.contains("\"aws_credentials\"") && ready.contains("access_keys"),
        "{ready}"
    );
    let secrets = [ROW_SECRET, SESSION_SECRET, SESSION_TOKEN, API_KEY];
    for (place, text) in [
        ("/config", config),
        ("the 503", refused),
        ("/readyz", ready),
        ("the log", sidecar.output()),
    ] {
        assert_no_secret(place, &text, &secrets);
    }
}
