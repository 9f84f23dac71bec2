//! `aws_role_name` on a Bedrock deployment: STS `AssumeRole` (signed with the row's keys, checked
//! by botocore in `support::aws`'s mock) once for a burst of requests, every request signed with
//! the temporary keys, and 503 naming the credential and the cause once STS refuses and the keys
//! expired; no secret in `/config`, `/readyz`, the 503 or the trace log.

use std::time::Duration;

use serde_json::json;

use crate::support::aws::*;
use crate::support::db_gateway::*;
use crate::support::http::admin_get;
use crate::support::pg::TestDb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_is_assumed_once_for_a_burst_and_fails_closed_once_sts_refuses_after_expiry() {
    let _turn = crate::support::lock::shared().await;
    let (e, ca) = env_with_ca().await;
    let keys = json!({ ROW_KEY_ID: { "secret": ROW_SECRET } });
    let mock = AwsMock::start(
        &ca,
        json!({ "keys": keys, "region": "us-east-1", "sts_lifetime": 20 }),
    )
    .await;
    let db = TestDb::new(true).await;
    let role = "arn:aws:iam::123456789012:role/bedrock-caller";
    let row = json!({ "model": "bedrock/openai.gpt-oss-20b-1:0", "aws_access_key_id": ROW_KEY_ID,
                      "aws_secret_access_key": ROW_SECRET, "aws_region_name": "us-east-1",
                      "aws_role_name": role, "aws_session_name": "sidecar-test",
                      "aws_sts_endpoint": format!("{}/", mock.base()), "api_base": mock.base() });
    put_rows(&db, &[("d-role", "bedrock-role", row)], &[]).await;
    let unified = json!({ "name": "unified", "path_prefix": "/v1", "dispatch": "model" });
    let sidecar = start_sidecar(&e, &db, vec![unified]).await;
    let url = format!("{}/v1/chat/completions", sidecar.base_url());
    let body = json!({ "model": "bedrock-role", "messages": [] });

    // A burst of concurrent requests: one AssumeRole, every request signed with its keys (they
    // live 20 s: the burst ends long before their refresh window opens at 15 s).
    let burst = (0..20).map(|_| {
        let (client, url, body) = (e.client.clone(), url.clone(), body.clone());
        tokio::spawn(async move {
            client
                .post(url)
                .json(&body)
                .send()
                .await
                .map(|r| r.status())
        })
    });
    for outcome in futures_util::future::join_all(burst).await {
        assert_eq!(outcome.expect("join").expect("send"), 200);
    }
    let stats = mock.stats();
    assert_eq!(
        stats["assumed"].as_array().map(Vec::len),
        Some(1),
        "{stats}"
    );
    assert_eq!(stats["assumed"][0]["role"], role);
    assert_eq!(stats["assumed"][0]["session"], "sidecar-test");
    let requests = stats["requests"].as_array().expect("requests");
    assert_eq!(
        requests[0]["key_id"], ROW_KEY_ID,
        "AssumeRole signed with the row's keys"
    );
    for request in &requests[1..] {
        assert_eq!(request["key_id"], "ASIATEMP1", "{request}");
        assert_eq!(request["token"], "temp-token-1", "{request}");
    }
    let (_, ready) = admin_get(&sidecar, "/readyz").await;
    assert!(
        ready.contains("aws_assume_role") && ready.contains("expires_at"),
        "{ready}"
    );

    // STS refuses from now on; once the keys expired, requests fail closed naming the cause.
    mock.refuse_sts();
    tokio::time::sleep(Duration::from_secs(21)).await;
    let response = e.client.post(&url).json(&body).send().await.expect("send");
    assert_eq!(response.status(), 503);
    let refused = response.text().await.expect("body");
    assert!(
        refused.contains("credential_unavailable")
            && refused.contains("d-role")
            && refused.contains("AccessDenied"),
        "{refused}"
    );
    let stats = mock.stats();
    let requests = stats["requests"].as_array().expect("requests");
    assert_eq!(requests.len(), 22, "{stats}");
    assert_eq!(
        requests[21]["path"], "/",
        "the refused AssumeRole; nothing reached Bedrock"
    );
    let (_, config) = admin_get(&sidecar, "/config").await;
    assert!(config.contains("assumed_role"), "{config}");
    let secrets = [ROW_SECRET, "temp-secret-", "temp-token-"];
    for (place, text) in [
        ("/config", config),
        ("/readyz", ready),
        ("the 503", refused),
        ("the log", sidecar.output()),
    ] {
        assert_no_secret(place, &text, &secrets);
    }
}
