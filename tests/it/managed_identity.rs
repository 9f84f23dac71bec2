//! Azure OpenAI with the host's managed identity: a LiteLLM row with no key, token or Entra ID
//! fields, the sidecar told `AZURE_CREDENTIAL=ManagedIdentityCredential` with a user-assigned
//! identity's `AZURE_CLIENT_ID`, and the metadata service (`tests/sdk/imds_mock.py`, on
//! loopback through `AZURE_POD_IDENTITY_AUTHORITY_HOST`) checking each token request as IMDS
//! does (`Metadata: true`, no `X-Forwarded-For`, the identity and the resource). A burst of
//! requests costs one token request; a resource the identity has no token for fails closed,
//! naming the credential and the cause, with nothing sent; no token reaches the log, `/config`
//! or an error.

use serde_json::{json, Value};

use crate::support::aws::put_rows;
use crate::support::db_gateway::*;
use crate::support::http::admin_get;
use crate::support::litellm_venv;
use crate::support::pg::TestDb;
use crate::support::script_server::ScriptServer;
use crate::support::sidecar_process::SidecarProcess;

const CLIENT_ID: &str = "mi-client-0001";

/// The metadata service mock (`tests/sdk/imds_mock.py`), killed when dropped.
struct Imds(ScriptServer);

impl Imds {
    fn start(config: Value) -> Imds {
        Imds(ScriptServer::start(
            litellm_venv::python(),
            "imds_mock.py",
            &[],
            |dir| vec![dir.join("stats.json").into(), config.to_string().into()],
        ))
    }

    fn requests(&self) -> Vec<Value> {
        self.0.stats()["requests"]
            .as_array()
            .expect("requests")
            .clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_tokens_come_from_the_hosts_managed_identity_once_per_burst() {
    let _turn = crate::support::lock::shared().await;
    let e = env().await;
    let imds = Imds::start(json!({ "client_id": CLIENT_ID,
                                   "resource": "https://cognitiveservices.azure.com" }));
    let db = TestDb::new(true).await;
    let azure = json!({ "model": "azure/my-gpt", "api_base": e.mock.base_url(),
                        "api_version": "2024-06-01" });
    let mut elsewhere = azure.clone();
    elsewhere["azure_scope"] = json!("api://not-granted/.default");
    let rows = [
        ("d-mi", "azure-mi", azure),
        ("d-elsewhere", "azure-elsewhere", elsewhere),
    ];
    put_rows(&db, &rows, &[]).await;
    let route = json!({ "name": "unified", "path_prefix": "/v1", "dispatch": "model" });
    let mut config = gateway(&e, &db, &TestDb::url(None), "30s", false, vec![route]);
    config["log"] = json!({ "level": "trace" });
    let imds_host = format!("http://localhost:{}", imds.0.port());
    let sidecar = SidecarProcess::start_async(
        &crate::support::config::yaml(&config),
        &[],
        &[
            ("LITELLM_SALT_KEY", SALT),
            ("RUST_LOG", "trace"),
            ("AZURE_CREDENTIAL", "ManagedIdentityCredential"),
            ("AZURE_CLIENT_ID", CLIENT_ID),
            ("AZURE_POD_IDENTITY_AUTHORITY_HOST", &imds_host),
        ],
    )
    .await;

    // A burst: one token request, every request sent with the token.
    let chat = |model: &str| {
        e.client
            .post(format!("{}/v1/chat/completions", sidecar.base_url()))
            .json(&json!({ "model": model, "messages": [] }))
            .send()
    };
    let burst: Vec<_> = (0..20).map(|_| chat("azure-mi")).collect();
    for response in futures_util::future::join_all(burst).await {
        assert_eq!(response.expect("send").status(), 200);
    }
    let asked = imds.requests();
    assert_eq!(asked.len(), 1, "one token request for the burst: {asked:?}");
    assert_eq!(asked[0]["metadata"], "true");
    assert_eq!(asked[0]["forwarded"], false);
    let query = asked[0]["query"].as_str().expect("query");
    assert!(
        query.contains(&format!("client_id={CLIENT_ID}")) && query.contains("api-version="),
        "{query}"
    );
    let sent = e.mock.requests();
    assert_eq!(sent.len(), 20);
    for request in &sent {
        assert_eq!(request.path, "/openai/deployments/my-gpt/chat/completions");
        assert_eq!(request.header("authorization"), Some("Bearer mi-token-1"));
        assert_eq!(request.header("api-key"), None);
    }

    // A resource the identity has no token for: IMDS refuses, the client gets a 503 naming the
    // credential and the cause, and nothing is sent.
    let response = chat("azure-elsewhere").await.expect("send");
    assert_eq!(response.status(), 503);
    let refused = response.text().await.expect("body");
    assert!(
        refused.contains("d-elsewhere") && refused.contains("HTTP 400: invalid_request"),
        "{refused}"
    );
    assert_eq!(e.mock.requests().len(), 20);
    assert!(imds.requests()[1]["query"]
        .as_str()
        .is_some_and(|q| q.contains("resource=api%3A%2F%2Fnot-granted")));

    let (_, config) = admin_get(&sidecar, "/config").await;
    assert!(config.contains("azure_managed_identity"), "{config}");
    for (place, text) in [
        ("/config", config),
        ("the 503", refused),
        ("the log", sidecar.output()),
    ] {
        assert!(!text.contains("mi-token-"), "{place} holds a token");
    }
}
