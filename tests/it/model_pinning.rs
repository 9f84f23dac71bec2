//! A route bound to one alias decides the model (`proxy::pinned`): a LiteLLM key limited to
//! `gpt` on the `model: gpt` route cannot make the provider run another model, whether the body
//! names it, the path names it (Gemini's `/models/{model}:method`, Azure's `/deployments/{name}`),
//! the query names it (`?model=`) or a body the sidecar cannot see into might (not JSON, or
//! JSON naming a provider object with a model of its own); and it cannot use a credential route, which names no
//! model. The mock provider records what it received: the model asked for never reaches it.

use crate::litellm_keys::{call_with, start};
use crate::support::db_gateway::*;
use crate::support::pg::TestDb;

const EXPENSIVE: &str = "o1-pro-EXPENSIVE";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_limited_to_models_reaches_no_other_model_on_any_path() {
    let _turn = crate::support::lock::shared().await;
    let e = env().await;
    let db = TestDb::new(true).await;
    let sidecar = start(&e, &db).await;

    // The body names another model: the deployment's replaces it.
    let (status, body, sent) = call_with(
        &e,
        &sidecar,
        "/gpt/chat/completions",
        "sk-gpt-only",
        EXPENSIVE,
    )
    .await;
    assert_eq!((status, sent), (200, true), "{body}");
    let received = e.mock.requests().pop().expect("received");
    assert_eq!(received.body_str(), r#"{"model":"gpt-x"}"#);

    // The path names another model.
    for (path, upstream) in [
        (
            format!("/gpt/models/{EXPENSIVE}:generateContent"),
            "/v1/models/gpt-x:generateContent",
        ),
        (
            format!("/gpt/openai/deployments/{EXPENSIVE}/chat/completions"),
            "/v1/openai/deployments/gpt-x/chat/completions",
        ),
    ] {
        let status = post(&e, &sidecar, &path, "sk-gpt-only", "application/json", "{}").await;
        assert_eq!(status, 200, "{path}");
        let received = e.mock.requests().pop().expect("received");
        assert_eq!(received.path, upstream);
    }

    // The query names another model (OpenAI's realtime API).
    let status = e
        .client
        .get(format!(
            "{}/gpt/realtime?model={EXPENSIVE}&x=1",
            sidecar.base_url()
        ))
        .header("authorization", "Bearer sk-gpt-only")
        .send()
        .await
        .expect("request")
        .status();
    assert_eq!(status, 200);
    let received = e.mock.requests().pop().expect("received");
    assert_eq!(received.query.as_deref(), Some("model=gpt-x&x=1"));

    // A body the sidecar cannot read may name any model: refused for a limited key, forwarded
    // unchanged for a key that may call every model.
    let form = format!(
        "--b\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\n{EXPENSIVE}\r\n--b--\r\n"
    );
    let multipart = "multipart/form-data; boundary=b";
    let before = e.mock.requests().len();
    let status = post(
        &e,
        &sidecar,
        "/gpt/audio/transcriptions",
        "sk-gpt-only",
        multipart,
        &form,
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(e.mock.requests().len(), before, "nothing sent");
    let status = post(
        &e,
        &sidecar,
        "/gpt/audio/transcriptions",
        "sk-good",
        multipart,
        &form,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(e.mock.requests().pop().expect("received").body_str(), form);

    // JSON without a model on a path without one names an object at the provider that has its
    // own (a batch's input file, an assistant): refused for a limited key.
    let batch = r#"{"input_file_id":"file-1","endpoint":"/v1/chat/completions"}"#;
    let json = "application/json";
    let before = e.mock.requests().len();
    let status = post(&e, &sidecar, "/gpt/batches", "sk-gpt-only", json, batch).await;
    assert_eq!(status, 403);
    assert_eq!(e.mock.requests().len(), before, "nothing sent");
    assert_eq!(
        post(&e, &sidecar, "/gpt/batches", "sk-good", json, batch).await,
        200
    );

    // A credential route names no model: a key limited to models (or whose team is) may not
    // use it; a key allowed every model may.
    for key in ["sk-gpt-only", "sk-team"] {
        let (status, body, sent) =
            call_with(&e, &sidecar, "/raw/chat/completions", key, EXPENSIVE).await;
        assert_eq!((status, sent), (403, false), "{key}: {body}");
        assert_eq!(body["error"]["type"], "key_model_access_denied", "{body}");
    }
    let (status, _, _) = call_with(&e, &sidecar, "/raw/chat/completions", "sk-good", "x").await;
    assert_eq!(status, 200);

    // A model route's requests still count against a key's rpm_limit (2), once accepted: a
    // minute may end among them, so six cross it.
    let statuses: Vec<u16> = rpm_statuses(&e, &sidecar).await;
    assert!(statuses.contains(&429), "{statuses:?}");

    // Whatever was tried, the expensive model never reached the provider on a limited key.
    let leaked: Vec<_> = e
        .mock
        .requests()
        .into_iter()
        .filter(|r| r.header("authorization").is_some())
        .filter(|r| {
            let query = r.query.clone().unwrap_or_default();
            r.path.contains(EXPENSIVE)
                || query.contains(EXPENSIVE)
                || r.body_str().contains(EXPENSIVE)
        })
        .filter(|r| !r.body_str().starts_with("--b"))
        .collect();
    assert!(leaked.is_empty(), "{leaked:?}");
}

/// POSTs `body` to `path` with `key`; returns the status.
async fn post(
    e: &Env,
    sidecar: &crate::support::sidecar_process::SidecarProcess,
    path: &str,
    key: &str,
    content_type: &str,
    body: &str,
) -> u16 {
    e.client
        .post(format!("{}{path}", sidecar.base_url()))
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", content_type)
        .body(body.to_string())
        .send()
        .await
        .expect("request")
        .status()
        .as_u16()
}

/// Six requests with the `sk-rpm` key on the `model: gpt` route; their statuses.
async fn rpm_statuses(
    e: &Env,
    sidecar: &crate::support::sidecar_process::SidecarProcess,
) -> Vec<u16> {
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(
            call_with(e, sidecar, "/gpt/chat/completions", "sk-rpm", "x")
                .await
                .0,
        );
    }
    statuses
}
