//! Azure OpenAI with Microsoft Entra ID through a `dispatch: model` route, driven by the real
//! OpenAI Python SDK: rows written as the real LiteLLM writes them (its `LiteLLM_Params`, its
//! encryption) with `tenant_id`/`client_id`/`client_secret` (on the model row, or on a credential
//! row it links) or a fixed `azure_ad_token`. The mock's token endpoint (at
//! `AZURE_AUTHORITY_HOST`, over TLS with the test CA) sees the client-credentials grant; the mock
//! Azure sees `Authorization: Bearer` and no `api-key`. A grant the endpoint refuses fails closed
//! with a 503 that names the credential and the cause, and no secret or token is in the log, the
//! error, `/config` or `/readyz`.

use serde_json::{json, Value};

use crate::support::db_gateway::*;
use crate::support::http::admin_get;
use crate::support::litellm_venv;
use crate::support::mock_provider::RecordedRequest;
use crate::support::pg::TestDb;
use crate::support::sidecar_process::SidecarProcess;

const SECRET: &str = "entra-client-secret-value";
const LINKED_SECRET: &str = "linked-client-secret-value";
const FIXED_TOKEN: &str = "eyJ-fixed-ad-token";
const TOKEN_PATH: &str = "/tenant-1/oauth2/v2.0/token";

/// Writes the rows through LiteLLM's own package and starts a sidecar over them.
async fn start(e: &Env, db: &TestDb) -> SidecarProcess {
    let base = e.mock.base_url();
    let azure = |extra: Value| {
        let mut params =
            json!({ "model": "azure/my-deploy", "api_base": base, "api_version": "2024-10-21" });
        for (k, v) in extra.as_object().expect("object") {
            params[k] = v.clone();
        }
        params
    };
    let rows = json!({
        "salt_key": SALT,
        "models": {
            "d-entra": azure(json!({ "tenant_id": "tenant-1", "client_id": "client-1", "client_secret": SECRET })),
            "d-fixed": azure(json!({ "azure_ad_token": FIXED_TOKEN })),
            "d-linked": azure(json!({ "litellm_credential_name": "az-entra" })),
            "d-refused": azure(json!({ "tenant_id": "tenant-1", "client_id": "client-1", "client_secret": "wrong-secret" })),
        },
        "credentials": {
            "az-entra": { "tenant_id": "tenant-1", "client_id": "client-2", "client_secret": LINKED_SECRET },
        },
    });
    let stored = litellm_venv::ask("litellm_store_rows.py", rows).await;
    db.put_credential(
        "az-entra",
        stored["credentials"]["az-entra"].clone(),
        "azure",
    )
    .await;
    for (id, alias) in [
        ("d-entra", "azure-entra"),
        ("d-fixed", "azure-fixed"),
        ("d-linked", "azure-linked"),
        ("d-refused", "azure-refused"),
    ] {
        db.put_model(id, alias, stored["models"][id].clone()).await;
    }
    let route = json!({ "name": "unified", "path_prefix": "/v1", "dispatch": "model" });
    let config = gateway(e, db, &TestDb::url(None), "30s", false, vec![route]);
    let env = [("LITELLM_SALT_KEY", SALT), ("AZURE_AUTHORITY_HOST", &base)];
    SidecarProcess::start_async(&crate::support::config::yaml(&config), &[], &env).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entra_id_tokens_are_minted_once_and_sent_as_bearer_tokens() {
    let _turn = crate::support::lock::shared().await;
    let e = env().await;
    let db = TestDb::new(true).await;
    let sidecar = start(&e, &db).await;
    let aliases = ["azure-entra", "azure-fixed", "azure-linked"];
    let seen = crate::openai_sdk::run_sdk(&format!("{}/v1", sidecar.base_url()), &aliases).await;
    for alias in aliases {
        assert_eq!(seen["chat"][alias]["model"], "my-deploy", "{alias}: {seen}");
        assert_eq!(seen["stream"][alias], 3, "{alias}: three chunks streamed");
    }

    let requests = e.mock.requests();
    let (grants, calls): (Vec<_>, Vec<_>) = requests.iter().partition(|r| r.path == TOKEN_PATH);
    // One mint per grant for nine requests (chat, stream, embeddings per alias); none for the
    // fixed token.
    assert_eq!(grants.len(), 2, "{grants:?}");
    for (client, secret) in [("client-1", SECRET), ("client-2", LINKED_SECRET)] {
        let form = format!(
            "grant_type=client_credentials&client_id={client}&client_secret={secret}\
             &scope=https%3A%2F%2Fcognitiveservices.azure.com%2F.default"
        );
        assert_eq!(
            grants.iter().filter(|g| g.body_str() == form).count(),
            1,
            "{grants:?}"
        );
    }
    assert_eq!(calls.len(), 9);
    let mut bearers: Vec<&str> = calls
        .iter()
        .map(|r| {
            assert!(r.header("api-key").is_none(), "{}", r.path);
            assert!(
                r.path.starts_with("/openai/deployments/my-deploy/"),
                "{}",
                r.path
            );
            assert_eq!(r.query.as_deref(), Some("api-version=2024-10-21"));
            r.header("authorization").expect("a bearer token")
        })
        .collect();
    bearers.sort();
    bearers.dedup();
    let fixed = format!("Bearer {FIXED_TOKEN}");
    assert_eq!(
        bearers,
        [
            "Bearer entra-token-1",
            "Bearer entra-token-2",
            fixed.as_str()
        ]
    );

    // Refused: 503 naming the credential and the cause; the secret the endpoint echoed is not.
    let response = e
        .client
        .post(format!("{}/v1/chat/completions", sidecar.base_url()))
        .header("authorization", "Bearer sk-client")
        .json(&json!({ "model": "azure-refused", "messages": [] }))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 503);
    let body = response.text().await.expect("body");
    assert!(body.contains("credential_unavailable"), "{body}");
    assert!(
        body.contains("d-refused") && body.contains("invalid_client"),
        "{body}"
    );
    assert!(!body.contains("wrong-secret"), "{body}");

    let (_, config) = admin_get(&sidecar, "/config").await;
    let (_, ready) = admin_get(&sidecar, "/readyz").await;
    let report: Value = serde_json::from_str(&config).expect("JSON");
    let minted = report["minted_credentials"].as_array().expect("listed");
    let state = |name: &str| {
        minted
            .iter()
            .find(|m| m["name"].as_str().is_some_and(|n| n.contains(name)))
            .map(|m| m["state"].as_str().unwrap_or_default().to_string())
    };
    assert_eq!(state("d-entra").as_deref(), Some("valid"), "{config}");
    assert_eq!(state("az-entra").as_deref(), Some("valid"), "{config}");
    assert_eq!(state("d-refused").as_deref(), Some("failing"), "{config}");
    assert!(ready.contains("minted_credentials"), "{ready}");
    let metrics = admin_get(&sidecar, "/metrics").await.1;
    assert!(
        metrics.contains("sidecar_minted_token_mints_total{credential=\"model azure-entra (d-entra)\",outcome=\"ok\",phase=\"first\"} 1"),
        "{metrics}"
    );
    for (place, text) in [
        ("/config", config),
        ("/readyz", ready),
        ("the log", sidecar.output()),
        ("/metrics", metrics),
    ] {
        for secret in [
            SECRET,
            LINKED_SECRET,
            "wrong-secret",
            FIXED_TOKEN,
            "entra-token-",
        ] {
            assert!(!text.contains(secret), "{place} holds {secret}");
        }
    }
}

/// Azure Workload Identity: `azure_ad_token: oidc/file/…` (and `oidc/env/…`) with `tenant_id`
/// and `client_id`, and a user's `azure_username`/`azure_password`; rows written by the real
/// LiteLLM. The platform's token is read at the mint
/// and sent as the client assertion; a file that is not there yet fails closed, naming the
/// file, and the next mint (after the retry pause) reads it once it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn federated_tokens_are_read_at_each_mint_and_exchanged_for_bearer_tokens() {
    let _turn = crate::support::lock::shared().await;
    let e = env().await;
    let db = TestDb::new(true).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let token_file = dir.path().join("azure-identity-token");
    let base = e.mock.base_url();
    let federated = |source: String| {
        json!({ "model": "azure/my-deploy", "api_base": base, "api_version": "2024-10-21",
                "tenant_id": "tenant-1", "client_id": "client-fed", "azure_ad_token": source })
    };
    let rows = json!({
        "salt_key": SALT,
        "models": {
            "d-file": federated(format!("oidc/file/{}", token_file.display())),
            "d-env": federated("oidc/env/SIDECAR_TEST_FEDERATED_TOKEN".into()),
            "d-password": { "model": "azure/my-deploy", "api_base": base, "api_version": "2024-10-21",
                            "client_id": "client-user", "azure_username": "ann@example.com",
                            "azure_password": "user-password-value" },
        },
        "credentials": {},
    });
    let stored = litellm_venv::ask("litellm_store_rows.py", rows).await;
    db.put_model("d-file", "azure-file", stored["models"]["d-file"].clone())
        .await;
    db.put_model("d-env", "azure-env", stored["models"]["d-env"].clone())
        .await;
    db.put_model(
        "d-password",
        "azure-password",
        stored["models"]["d-password"].clone(),
    )
    .await;
    let route = json!({ "name": "unified", "path_prefix": "/v1", "dispatch": "model" });
    let config = gateway(&e, &db, &TestDb::url(None), "30s", false, vec![route]);
    let allowed = dir.path().display().to_string();
    let env = [
        ("LITELLM_SALT_KEY", SALT),
        ("AZURE_AUTHORITY_HOST", base.as_str()),
        ("LITELLM_OIDC_ALLOWED_CREDENTIAL_DIRS", allowed.as_str()),
        ("SIDECAR_TEST_FEDERATED_TOKEN", "eyJ-from-env"),
    ];
    let sidecar =
        SidecarProcess::start_async(&crate::support::config::yaml(&config), &[], &env).await;
    let chat = |alias: &'static str| {
        e.client
            .post(format!("{}/v1/chat/completions", sidecar.base_url()))
            .header("authorization", "Bearer sk-client")
            .json(&json!({ "model": alias, "messages": [] }))
            .send()
    };

    // No token on disk yet: 503, naming the file, nothing sent to the provider.
    let response = chat("azure-file").await.expect("send");
    assert_eq!(response.status(), 503);
    let body = response.text().await.expect("body");
    assert!(
        body.contains("credential_unavailable") && body.contains("azure-identity-token"),
        "{body}"
    );
    std::fs::write(&token_file, "eyJ-from-file\n").expect("the platform writes its token");
    let mut status = 0;
    for _ in 0..40 {
        status = chat("azure-file").await.expect("send").status().as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert_eq!(
        status,
        200,
        "read once the file is there: {}",
        sidecar.output()
    );
    assert_eq!(chat("azure-env").await.expect("send").status(), 200);
    assert_eq!(chat("azure-env").await.expect("send").status(), 200);
    assert_eq!(chat("azure-password").await.expect("send").status(), 200);

    let requests = e.mock.requests();
    let password_path = "/organizations/oauth2/v2.0/token";
    let (password_grants, requests): (Vec<RecordedRequest>, Vec<RecordedRequest>) =
        requests.into_iter().partition(|r| r.path == password_path);
    let forms: Vec<String> = password_grants.iter().map(|g| g.body_str()).collect();
    assert_eq!(
        forms,
        [
            "grant_type=password&client_id=client-user&username=ann%40example.com\
          &password=user-password-value\
          &scope=https%3A%2F%2Fcognitiveservices.azure.com%2F.default"
        ],
        "LiteLLM's username-and-password grant, in the organizations tenant"
    );
    let (grants, calls): (Vec<_>, Vec<_>) = requests.iter().partition(|r| r.path == TOKEN_PATH);
    let form = |assertion: &str| {
        format!(
            "grant_type=client_credentials&client_id=client-fed\
             &scope=https%3A%2F%2Fcognitiveservices.azure.com%2F.default\
             &client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer\
             &client_assertion={assertion}"
        )
    };
    let forms: Vec<String> = grants.iter().map(|g| g.body_str()).collect();
    assert_eq!(
        forms,
        [form("eyJ-from-file"), form("eyJ-from-env")],
        "one grant each, the file's token trimmed"
    );
    assert_eq!(calls.len(), 4, "nothing sent while the token was missing");
    for call in calls {
        let bearer = call.header("authorization").expect("a bearer token");
        assert!(bearer.starts_with("Bearer entra-token-"), "{bearer}");
        assert!(call.header("api-key").is_none());
    }
    let (_, config) = admin_get(&sidecar, "/config").await;
    for text in [config, sidecar.output()] {
        for secret in [
            "eyJ-from-file",
            "eyJ-from-env",
            "user-password-value",
            "entra-token-",
        ] {
            assert!(!text.contains(secret), "{secret} shown");
        }
    }
}
