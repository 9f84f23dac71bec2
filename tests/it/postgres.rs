//! Credentials from a real PostgreSQL holding LiteLLM's tables: every stored format, both
//! `litellm_params` shapes, credential resolution, round-robin, bad rows and a wrong salt key.
//! Each test has its own schema.

use crate::support::config::yaml;
use crate::support::db_gateway::*;
use crate::support::http::post;
use crate::support::pg::TestDb;
use crate::support::sidecar_process::SidecarProcess;
use serde_json::{json, Value};
use sidecar::credentials::cipher::{encrypt, Format};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_stored_format_and_params_shape_is_served() {
    let _turn = crate::support::lock::shared().await;
    let e = env().await;
    let db = TestDb::new(true).await;
    let upstream = e.mock.base_url();
    db.put_credential(
        "nacl-std",
        json!({ "api_key": nacl_standard("sk-nacl-std") }),
        "openai",
    )
    .await;
    db.put_credential(
        "nacl-url",
        json!({ "api_key": enc("sk-nacl-url", Format::Nacl) }),
        "openai",
    )
    .await;
    db.put_credential(
        "gcm-v2",
        json!({ "api_key": enc("sk-gcm-v2", Format::V2) }),
        "openai",
    )
    .await;
    db.put_credential(
        "gcm-v3",
        json!({ "api_key": enc("sk-gcm-v3", Format::V3) }),
        "openai",
    )
    .await;
    db.put_credential(
        "shared",
        json!({ "api_key": enc("sk-shared", Format::V3),
        "api_base": enc(&format!("{upstream}/ignored"), Format::V3) }),
        "openai",
    )
    .await;
    // A model as a JSON object, taking its key from a credential; its own api_base wins.
    db.put_model(
        "m-obj",
        "obj-model",
        json!({ "model": enc("openai/gpt-4o", Format::V3),
        "litellm_credential_name": enc("shared", Format::V3),
        "api_base": enc(&format!("{upstream}/v1"), Format::V3) }),
    )
    .await;
    // A model as a JSON string holding JSON, with its own key (Azure style).
    let params = json!({ "model": enc("azure/gpt-4o", Format::V3), "api_key": enc("sk-azure-model", Format::V2),
        "api_base": enc(&upstream, Format::V3), "api_version": enc("2024-10-21", Format::Nacl) });
    db.put_model("m-str", "str-model", Value::String(params.to_string()))
        .await;
    // Blocked deployments are never used.
    db.put_model(
        "m-blocked",
        "str-model",
        json!({ "model": enc("azure/gpt-4o", Format::V3),
        "api_key": enc("sk-blocked", Format::V3), "api_base": enc(&upstream, Format::V3) }),
    )
    .await;
    db.exec(r#"UPDATE {schema}."LiteLLM_ProxyModelTable" SET blocked = true WHERE model_id = 'm-blocked'"#).await;

    let mut routes = Vec::new();
    for name in ["nacl-std", "nacl-url", "gcm-v2", "gcm-v3"] {
        routes.push(credential_route(name, name, &upstream, "openai"));
    }
    routes.push(model_route("obj", "obj-model"));
    routes.push(model_route("str", "str-model"));
    let config = yaml(&gateway(&e, &db, &TestDb::url(None), "30s", false, routes));
    let sidecar = SidecarProcess::start_async(&config, &[], &[("LITELLM_SALT_KEY", SALT)]).await;

    for name in ["nacl-std", "nacl-url", "gcm-v2", "gcm-v3"] {
        let (status, key) = call(
            &e,
            &sidecar,
            &format!("/{name}/chat/completions"),
            "authorization",
        )
        .await;
        assert_eq!(status, 200, "{name}");
        assert_eq!(key, Some(format!("Bearer sk-{name}")), "{name}");
    }
    let (status, key) = call(&e, &sidecar, "/obj/chat/completions", "authorization").await;
    assert_eq!((status, key.as_deref()), (200, Some("Bearer sk-shared")));
    assert_eq!(
        e.mock.requests().last().expect("seen").path,
        "/v1/chat/completions",
        "row api_base won"
    );
    for _ in 0..3 {
        let (status, key) = call(
            &e,
            &sidecar,
            "/str/openai/deployments/d/chat/completions",
            "api-key",
        )
        .await;
        assert_eq!(
            (status, key.as_deref()),
            (200, Some("sk-azure-model")),
            "blocked row never used"
        );
        let query = e
            .mock
            .requests()
            .last()
            .expect("seen")
            .query
            .clone()
            .unwrap_or_default();
        assert!(query.contains("api-version=2024-10-21"), "{query}");
    }
    let logs = sidecar.output();
    for secret in [
        "sk-nacl-std",
        "sk-gcm-v3",
        "sk-shared",
        "sk-azure-model",
        "postgres@",
    ] {
        assert!(!logs.contains(secret), "{secret} in logs");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_of_one_model_rotate_and_old_schemas_without_blocked_load() {
    let _turn = crate::support::lock::shared().await;
    let e = env().await;
    let db = TestDb::new(false).await;
    let upstream = format!("{}/v1", e.mock.base_url());
    for (id, key) in [("d1", "sk-first"), ("d2", "sk-second")] {
        db.put_model(
            id,
            "pool",
            json!({ "model": enc("openai/gpt-4o", Format::V3),
            "api_key": enc(key, Format::V3), "api_base": enc(&upstream, Format::V3) }),
        )
        .await;
    }
    let config = yaml(&gateway(
        &e,
        &db,
        &TestDb::url(None),
        "30s",
        false,
        vec![model_route("pool", "pool")],
    ));
    let sidecar = SidecarProcess::start_async(&config, &[], &[("LITELLM_SALT_KEY", SALT)]).await;
    let mut keys = Vec::new();
    for _ in 0..4 {
        keys.push(
            call(&e, &sidecar, "/pool/chat/completions", "authorization")
                .await
                .1
                .expect("served"),
        );
    }
    assert_ne!(keys[0], keys[1], "round-robin: {keys:?}");
    assert_eq!(keys[0], keys[2]);
    assert_eq!(keys[1], keys[3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_row_fails_alone_and_a_wrong_key_is_named_loudly() {
    let _turn = crate::support::lock::shared().await;
    let e = env().await;
    let db = TestDb::new(true).await;
    let upstream = e.mock.base_url();
    db.put_credential(
        "good",
        json!({ "api_key": enc("sk-good", Format::V3) }),
        "openai",
    )
    .await;
    let mut tampered = encrypt("sk-tampered", Format::V3, &keys());
    tampered.replace_range(20..21, if &tampered[20..21] == "A" { "B" } else { "A" });
    db.put_credential("tampered", json!({ "api_key": tampered }), "openai")
        .await;
    let routes = vec![
        credential_route("good", "good", &upstream, "openai"),
        credential_route("tampered", "tampered", &upstream, "openai"),
    ];
    let config = yaml(&gateway(&e, &db, &TestDb::url(None), "30s", false, routes));

    let sidecar = SidecarProcess::start_async(&config, &[], &[("LITELLM_SALT_KEY", SALT)]).await;
    assert_eq!(
        call(&e, &sidecar, "/good/x", "authorization").await,
        (200, Some("Bearer sk-good".into()))
    );
    let before = e.mock.requests().len();
    let (status, body) = post(&sidecar, "/tampered/x").await;
    assert_eq!(status, 503);
    let body: Value = serde_json::from_str(&body).expect("JSON body");
    let message = body["error"]["message"].as_str().expect("message");
    assert!(
        message.contains("credential \"tampered\"") && message.contains("authentication failed"),
        "{message}"
    );
    assert_eq!(e.mock.requests().len(), before, "nothing sent upstream");
    assert!(
        sidecar
            .wait_for_output("left out credential tampered")
            .await,
        "{}",
        sidecar.output()
    );
    drop(sidecar);

    let wrong =
        SidecarProcess::start_async(&config, &[], &[("LITELLM_SALT_KEY", "not-the-key")]).await;
    assert_eq!(call(&e, &wrong, "/good/x", "authorization").await.0, 503);
    // Lines reach stderr through the logger's writer thread: wait for it, bounded.
    assert!(
        wrong
            .wait_for_output(
                "salt key (LITELLM_SALT_KEY, else LITELLM_MASTER_KEY) is probably wrong"
            )
            .await,
        "{}",
        wrong.output()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_with_wrong_json_shapes_are_left_out_by_name_and_the_rest_load() {
    let _turn = crate::support::lock::shared().await;
    let e = env().await;
    let db = TestDb::new(true).await;
    let upstream = e.mock.base_url();
    db.put_credential(
        "good",
        json!({ "api_key": enc("sk-good", Format::V3) }),
        "openai",
    )
    .await;
    let wrong_values = [
        ("values-array", json!([enc("sk-x", Format::V3)])),
        ("values-string", json!("sk-plain")),
        ("values-number", json!(42)),
        ("key-number", json!({ "api_key": 42 })),
        (
            "key-object",
            json!({ "api_key": { "nested": enc("sk-x", Format::V3) } }),
        ),
        (
            "key-missing",
            json!({ "api_base": enc("https://x", Format::V3) }),
        ),
        ("key-null", json!({ "api_key": null })),
    ];
    for (name, values) in &wrong_values {
        db.put_credential(name, values.clone(), "openai").await;
    }
    db.exec(r#"UPDATE {schema}."LiteLLM_CredentialsTable" SET credential_info = '[1,2]' WHERE credential_name = 'values-array'"#)
        .await;
    let wrong_params = [
        ("params-number", json!(7)),
        ("params-bad-json-string", json!("{\"model\": ")),
        ("params-array", json!([{ "model": "openai/gpt-4o" }])),
        (
            "params-no-model",
            json!({ "api_key": enc("sk-x", Format::V3) }),
        ),
        (
            "params-model-number",
            json!({ "model": 5, "api_key": enc("sk-x", Format::V3) }),
        ),
    ];
    for (i, (name, params)) in wrong_params.iter().enumerate() {
        db.put_model(&format!("m{i}"), name, params.clone()).await;
    }
    let mut routes = vec![credential_route("good", "good", &upstream, "openai")];
    for (name, _) in &wrong_values {
        routes.push(credential_route(name, name, &upstream, "openai"));
    }
    for (name, _) in &wrong_params {
        routes.push(model_route(name, name));
    }
    let config = yaml(&gateway(&e, &db, &TestDb::url(None), "30s", false, routes));
    let sidecar = SidecarProcess::start_async(&config, &[], &[("LITELLM_SALT_KEY", SALT)]).await;

    assert_eq!(
        call(&e, &sidecar, "/good/x", "authorization").await,
        (200, Some("Bearer sk-good".into()))
    );
    let before = e.mock.requests().len();
    for (name, _) in wrong_values.iter().chain(&wrong_params) {
        let (status, _) = call(&e, &sidecar, &format!("/{name}/x"), "authorization").await;
        assert_eq!(status, 503, "{name}");
    }
    assert_eq!(
        e.mock.requests().len(),
        before,
        "nothing sent for a malformed row"
    );
    for (name, _) in wrong_values.iter().chain(&wrong_params) {
        let named = sidecar.wait_for_output(name).await;
        assert!(named, "{name} named in the log:\n{}", sidecar.output());
    }
    let logs = sidecar.output();
    assert!(
        !logs.contains("sk-plain"),
        "a plaintext value is never logged"
    );
    assert!(
        !logs.contains("probably wrong"),
        "shape errors are not a wrong key:\n{logs}"
    );
}
