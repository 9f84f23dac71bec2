//! Client access control: allowed networks (global and per route) and client tokens, checked
//! before anything is sent upstream; the token never reaches the provider or the logs.

use std::net::IpAddr;

use crate::support::certs::TestCa;
use crate::support::config::{extend, gateway, local_credentials, route};
use crate::support::gateway::start_with_test_credentials;
use crate::support::http::admin_get;
use crate::support::metric;
use crate::support::mock_provider::MockProvider;
use crate::support::sha256_hex;
use crate::support::sidecar_process::SidecarProcess;
use serde_json::{json, Value};

const TOKEN: &str = "client-token-7f3a9c";

/// A sidecar with the `access` section given and routes `/open` and `/narrow` (the latter with
/// the fields of `narrow_extra`).
async fn start(
    access: Value,
    narrow_extra: Value,
) -> (MockProvider, SidecarProcess, tempfile::TempDir) {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_file = ca.write_ca_file(dir.path());
    let mock = MockProvider::start_http1(&ca).await;
    let u = mock.base_url();
    let mut narrow = route("narrow", &u, "openai", "openai-cred");
    extend(&mut narrow, narrow_extra);
    let mut config = gateway(
        json!({ "ca_file": ca_file }),
        local_credentials(),
        vec![route("open", &u, "openai", "openai-cred"), narrow],
    );
    config["access"] = access;
    let sidecar = start_with_test_credentials(&config).await;
    (mock, sidecar, dir)
}

async fn status(
    sidecar: &SidecarProcess,
    from: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let client = reqwest::Client::builder()
        .local_address(from.parse::<IpAddr>().expect("ip"))
        .build()
        .expect("client");
    let mut req = client
        .post(format!("{}{path}", sidecar.base_url()))
        .body("{}");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_networks_are_enforced_globally_and_per_route() {
    let _turn = crate::support::lock::shared().await;
    let (mock, sidecar, _dir) = start(
        json!({ "allowed_cidrs": ["127.0.0.1/32", "127.0.0.2/32"] }),
        json!({ "allowed_cidrs": ["127.0.0.1/32"] }),
    )
    .await;
    assert_eq!(status(&sidecar, "127.0.0.1", "/open/x", &[]).await.0, 200);
    assert_eq!(status(&sidecar, "127.0.0.1", "/narrow/x", &[]).await.0, 200);
    assert_eq!(status(&sidecar, "127.0.0.2", "/open/x", &[]).await.0, 200);
    let (code, body) = status(&sidecar, "127.0.0.2", "/narrow/x", &[]).await;
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("client_not_allowed"));
    assert!(
        sidecar
            .wait_for_output("denied a request from 127.0.0.2")
            .await,
        "{}",
        sidecar.output()
    );
    // Outside access.allowed_cidrs the connection is closed at accept: no answer at all.
    let refused = reqwest::Client::builder()
        .local_address("127.0.0.3".parse::<IpAddr>().expect("ip"))
        .build()
        .expect("client")
        .post(format!("{}/open/x", sidecar.base_url()))
        .body("{}")
        .send()
        .await;
    assert!(refused.is_err(), "{refused:?}");
    assert_eq!(mock.requests().len(), 3, "denied requests sent nothing");
    let page = admin_get(&sidecar, "/metrics").await.1;
    let series = "sidecar_client_connections_refused_total{reason=\"address\"}";
    assert_eq!(metric(&page, series), Some(1.0), "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_tokens_are_checked_by_hash_and_never_forwarded() {
    let _turn = crate::support::lock::shared().await;
    let access = json!({
        "client_tokens": { "header": "x-sidecar-token", "sha256": [sha256_hex(TOKEN)] },
    });
    let (mock, sidecar, _dir) = start(access, json!({})).await;
    let (code, body) = status(&sidecar, "127.0.0.1", "/open/x", &[]).await;
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("x-sidecar-token"), "{body}");
    let (code, _) = status(
        &sidecar,
        "127.0.0.1",
        "/open/x",
        &[("x-sidecar-token", "wrong-token")],
    )
    .await;
    assert_eq!(code, 403);
    assert!(
        mock.requests().is_empty(),
        "nothing forwarded without a valid token"
    );
    let (code, body) = status(
        &sidecar,
        "127.0.0.1",
        "/open/x",
        &[("x-sidecar-token", TOKEN)],
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let seen = mock.requests();
    assert_eq!(seen.len(), 1);
    assert!(
        seen[0].header("x-sidecar-token").is_none(),
        "the token is removed before forwarding"
    );
    let logs = sidecar.output();
    assert!(
        !logs.contains(TOKEN) && !logs.contains("wrong-token"),
        "tokens never logged:\n{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_in_authorization_work_too() {
    let _turn = crate::support::lock::shared().await;
    let access = json!({ "client_tokens": { "sha256": [sha256_hex(TOKEN)] } });
    let (mock, sidecar, _dir) = start(access, json!({})).await;
    let bearer = format!("Bearer {TOKEN}");
    assert_eq!(
        status(
            &sidecar,
            "127.0.0.1",
            "/open/x",
            &[("authorization", &bearer)]
        )
        .await
        .0,
        200
    );
    assert_eq!(
        status(
            &sidecar,
            "127.0.0.1",
            "/open/x",
            &[("authorization", "Bearer nope")]
        )
        .await
        .0,
        403
    );
    let seen = mock.requests();
    assert_eq!(seen.len(), 1);
    assert!(
        seen[0]
            .header("authorization")
            .is_some_and(|v| !v.contains(TOKEN)),
        "replaced by the provider key"
    );
}
