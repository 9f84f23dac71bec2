//! Bedrock's native answers count: boto3's `bedrock-runtime` client with a LiteLLM key
//! (`x-api-key`, beside its placeholder signature) on a `model:` route to a Bedrock deployment
//! calls Converse, ConverseStream, InvokeModel and InvokeModelWithResponseStream, and the
//! Anthropic SDK with the same key sends a message and a stream through the `dispatch: model`
//! route's Messages API (InvokeModel and its stream, made SSE); the tokens the mock answered with
//! (each operation its own counts, the streams in AWS event-stream framing) reach
//! `sidecar_tokens_total` and LiteLLM's spend tables, priced by LiteLLM's map for the
//! deployment's cross-region model id.

use std::time::Duration;

use serde_json::{json, Value};
use sidecar::spend::cost::cost;
use sidecar::spend::prices::PriceMap;
use sidecar::spend::Usage;

use crate::support::aws::*;
use crate::support::config::{gateway, yaml};
use crate::support::db_gateway::{env_with_ca, SALT};
use crate::support::http::{admin_get, tokens_counted};
use crate::support::litellm_db::LiteLlmDb;
use crate::support::sidecar_process::SidecarProcess;
use crate::support::spend::value;
use crate::support::{litellm_venv, sha256_hex, wait_until_async};

const MODEL: &str = "us.anthropic.claude-3-5-sonnet-20240620-v1:0";
/// The client's LiteLLM key (the mock flags any request where it arrives).
const KEY: &str = "sk-app-placeholder-bedrock";

/// The (input, output) tokens the mock answers each operation with, in the clients' order
/// (boto3's four, then the Anthropic SDK's message and stream).
const ANSWERED: [(u64, u64); 6] = [(3, 2), (11, 7), (3, 2), (13, 9), (3, 2), (13, 9)];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bedrocks_native_answers_count_tokens_and_spend() {
    let _turn = crate::support::lock::shared().await;
    let (e, ca) = env_with_ca().await;
    let mock = AwsMock::start(
        &ca,
        json!({ "keys": { ROW_KEY_ID: { "secret": ROW_SECRET } }, "region": "us-east-1" }),
    )
    .await;
    let db = LiteLlmDb::new().await;
    let params = json!({ "model": format!("bedrock/{MODEL}"), "aws_access_key_id": ROW_KEY_ID,
                         "aws_secret_access_key": ROW_SECRET, "aws_region_name": "us-east-1",
                         "aws_bedrock_runtime_endpoint": mock.base() });
    let rows = json!({ "salt_key": SALT, "models": { "d-claude": params }, "credentials": {} });
    let stored = litellm_venv::ask("litellm_store_rows.py", rows).await;
    db.client
        .execute(
            r#"INSERT INTO "LiteLLM_ProxyModelTable"
                 (model_id, model_name, litellm_params, created_by, updated_by)
               VALUES ('d-claude', 'bedrock-claude', $1, 'test', 'test')"#,
            &[&stored["models"]["d-claude"]],
        )
        .await
        .expect("model row");
    db.client
        .execute(
            r#"INSERT INTO "LiteLLM_VerificationToken" (token, key_alias)
               VALUES ($1, 'bedrock-key')"#,
            &[&sha256_hex(KEY)],
        )
        .await
        .expect("key row");
    let route = json!({ "name": "bedrock", "path_prefix": "/bedrock", "strip_prefix": true,
                        "model": "bedrock-claude" });
    let unified = json!({ "name": "unified", "path_prefix": "/v1", "dispatch": "model" });
    let mut config = gateway(
        json!({ "ca_file": e.ca_file, "read_timeout": "5s" }),
        json!({ "postgres": { "url": db.url(), "schema": "public", "refresh_interval": "1h",
                              "connect_timeout": "1s" } }),
        vec![route, unified],
    );
    config["access"] = json!({ "litellm_keys": true });
    config["spend"] = json!({ "flush_interval": "300ms" });
    let mut sidecar =
        SidecarProcess::start_async(&yaml(&config), &[], &[("LITELLM_SALT_KEY", SALT)]).await;

    let args = vec![
        format!("{}/bedrock", sidecar.base_url()),
        "client-model".to_string(),
        KEY.to_string(),
    ];
    let seen = run_client_with(litellm_venv::python(), "bedrock_client.py", args).await;
    assert_eq!(seen["converse"]["usage"]["totalTokens"], 5, "{seen}");
    let python =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/google-venv/bin/python");
    let args = vec![sidecar.base_url(), "bedrock-claude".into(), KEY.into()];
    let seen = run_client_with(python, "anthropic_messages_client.py", args).await;
    assert_eq!(seen["streamed_text"], "hello", "{seen}");
    let stats = mock.stats();
    let requests = stats["requests"].as_array().expect("requests");
    assert_eq!(requests.len(), 6, "{stats}");
    for request in requests {
        assert_eq!(request["key_id"], ROW_KEY_ID, "{request}");
        assert_eq!(request["client_placeholder_seen"], false, "{request}");
    }

    // The metrics: every operation's tokens, by alias and key alias.
    let (prompt, completion) = ANSWERED
        .iter()
        .fold((0, 0), |(p, c), (i, o)| (p + i, c + o));
    let (_, metrics) = admin_get(&sidecar, "/metrics").await;
    let tokens = |kind| tokens_counted(&metrics, "bedrock-claude", Some("bedrock-key"), kind);
    assert_eq!(tokens("prompt"), Some(prompt), "{metrics}");
    assert_eq!(tokens("completion"), Some(completion), "{metrics}");

    // The spend: one row per request with its tokens, priced by the map's entry for the model.
    let count = r#"SELECT count(*) AS n FROM "LiteLLM_SpendLogs""#;
    let logged = wait_until_async(Duration::from_secs(15), || async {
        value(&db, count).await["n"] == 6
    })
    .await;
    assert!(logged, "six spend-log rows");
    let rows = value(
        &db,
        r#"SELECT jsonb_agg(jsonb_build_array(prompt_tokens, completion_tokens, model)
                            ORDER BY prompt_tokens) AS tokens,
                  jsonb_agg(spend ORDER BY prompt_tokens) AS spend
           FROM "LiteLLM_SpendLogs""#,
    )
    .await;
    let map = PriceMap::built_in().expect("map");
    let price = map.find(MODEL, "bedrock").expect("the model is priced");
    let mut answered = ANSWERED;
    answered.sort_unstable();
    let tokens: Vec<Value> = answered
        .iter()
        .map(|(input, output)| json!([input, output, format!("bedrock/{MODEL}")]))
        .collect();
    assert_eq!(rows["tokens"], Value::Array(tokens), "{rows}");
    let spends: Vec<f64> = answered
        .iter()
        .map(|&(prompt, completion)| {
            let usage = Usage {
                prompt,
                completion,
                ..Usage::default()
            };
            cost(price, &usage, "bedrock")
        })
        .collect();
    let written: Vec<f64> = serde_json::from_value(rows["spend"].clone()).expect("spends");
    for (written, expected) in written.iter().zip(&spends) {
        assert!(
            *expected > 0.0 && (written - expected).abs() < 1e-15,
            "{rows}: {spends:?}"
        );
    }
    let total: f64 = spends.iter().sum();
    let key = value(
        &db,
        &format!(
            r#"SELECT spend FROM "LiteLLM_VerificationToken" WHERE token = '{}'"#,
            sha256_hex(KEY)
        ),
    )
    .await;
    let spent = key["spend"].as_f64().unwrap_or(f64::NAN);
    assert!((spent - total).abs() < 1e-12, "{key} vs {total}");
    sidecar.stop();
}
