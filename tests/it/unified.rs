//! `dispatch: model` routes: one base URL, the body's `model` picking the alias; each provider
//! reached through its OpenAI-compatible API with its own key; `/models`; the errors.

use crate::support::config::yaml;
use crate::support::db_gateway::*;
use crate::support::mock_provider::RecordedRequest;
use crate::support::pg::TestDb;
use crate::support::sidecar_process::SidecarProcess;
use serde_json::{json, Value};
use sidecar::credentials::cipher::Format;

/// A sidecar with one `dispatch: model` route at `/v1` over these deployments (all on the mock):
/// `gpt` (OpenAI), `azure-gpt`, `claude` (Anthropic), `gemini`, and `split` (two OpenAI
/// deployments weighted 3:1).
pub async fn start(e: &Env, db: &TestDb) -> SidecarProcess {
    let base = e.mock.base_url();
    let deployment = |model: &str, key: &str, api_base: &str| {
        json!({ "model": enc(model, Format::Nacl), "api_key": enc(key, Format::Nacl),
                "api_base": enc(api_base, Format::Nacl) })
    };
    db.put_model(
        "d-gpt",
        "gpt",
        deployment("openai/gpt-4o-2024", "sk-openai", &format!("{base}/v1")),
    )
    .await;
    let mut azure = deployment("azure/my-deploy", "sk-azure", &base);
    azure["api_version"] = enc("2024-10-21", Format::Nacl);
    db.put_model("d-azure", "azure-gpt", azure).await;
    db.put_model(
        "d-claude",
        "claude",
        deployment("anthropic/claude-x", "sk-anthropic", &base),
    )
    .await;
    db.put_model(
        "d-gemini",
        "gemini",
        deployment("gemini/gemini-y", "sk-gemini", &base),
    )
    .await;
    let mut heavy = deployment("openai/heavy", "sk-heavy", &format!("{base}/v1"));
    heavy["weight"] = json!(3);
    db.put_model("d-heavy", "split", heavy).await;
    db.put_model(
        "d-light",
        "split",
        deployment("openai/light", "sk-light", &format!("{base}/v1")),
    )
    .await;
    let route = json!({ "name": "unified", "path_prefix": "/v1", "dispatch": "model" });
    let mut config = gateway(e, db, &TestDb::url(None), "30s", false, vec![route]);
    // Small enough that a client sending more still has all of it in the socket buffers when the
    // 413 comes back (a client still writing when the sidecar closes may see a reset instead).
    config["limits"] = json!({ "max_request_body_bytes": 256 * 1024 });
    SidecarProcess::start_async(&yaml(&config), &[], &[("LITELLM_SALT_KEY", SALT)]).await
}

/// POSTs `body` to `path`, with a client key that must never pass; returns the status, the
/// response body and what the provider received, if anything.
async fn send(
    e: &Env,
    sidecar: &SidecarProcess,
    path: &str,
    body: String,
) -> (u16, String, Option<RecordedRequest>) {
    let before = e.mock.requests().len();
    let response = e
        .client
        .post(format!("{}{path}", sidecar.base_url()))
        .header("authorization", "Bearer sk-client-should-not-pass")
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    let seen = e.mock.requests();
    (status, text, seen.get(before).cloned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_alias_reaches_its_provider_with_its_key_and_model() {
    let _turn = crate::support::lock::shared().await;
    let e = env().await;
    let db = TestDb::new(true).await;
    let sidecar = start(&e, &db).await;
    // (alias, path, expected upstream path, auth header, expected value, upstream model)
    let cases = [
        (
            "gpt",
            "/v1/chat/completions",
            "/v1/chat/completions",
            "authorization",
            "Bearer sk-openai",
            "gpt-4o-2024",
        ),
        (
            "gpt",
            "/v1/embeddings",
            "/v1/embeddings",
            "authorization",
            "Bearer sk-openai",
            "gpt-4o-2024",
        ),
        (
            "azure-gpt",
            "/v1/chat/completions",
            "/openai/deployments/my-deploy/chat/completions",
            "api-key",
            "sk-azure",
            "my-deploy",
        ),
        (
            "claude",
            "/v1/chat/completions",
            "/v1/chat/completions",
            "authorization",
            "Bearer sk-anthropic",
            "claude-x",
        ),
        (
            "gemini",
            "/v1/chat/completions",
            "/v1beta/openai/chat/completions",
            "authorization",
            "Bearer sk-gemini",
            "gemini-y",
        ),
    ];
    for (alias, path, upstream_path, header, value, model) in cases {
        // `model` after a large message, as the OpenAI Python SDK orders it; over 64 KiB, so
        // Pingora's retry buffer alone could not have carried it.
        let filler = "x".repeat(100 * 1024);
        let body = format!(
            r#"{{"messages":[{{"role":"user","content":"{filler}"}}],"model":"{alias}","temperature":0.5}}"#
        );
        let (status, text, seen) = send(&e, &sidecar, path, body.clone()).await;
        assert_eq!(status, 200, "{alias}: {text}");
        let seen = seen.unwrap_or_else(|| panic!("{alias}: nothing reached the provider"));
        assert_eq!(seen.path, upstream_path, "{alias}");
        assert_eq!(seen.header(header), Some(value), "{alias}");
        let credential_headers = ["authorization", "api-key", "x-api-key"];
        for other in credential_headers.iter().filter(|h| **h != header) {
            assert_eq!(seen.header(other), None, "{alias}: {other} passed");
        }
        let expected = body.replace(
            &format!(r#""model":"{alias}""#),
            &format!(r#""model":"{model}""#),
        );
        assert!(
            seen.body == expected.as_bytes(),
            "{alias}: the body differs beyond model"
        );
        if alias == "azure-gpt" {
            assert_eq!(seen.query.as_deref(), Some("api-version=2024-10-21"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_share_an_alias_and_models_lists_the_aliases() {
    let _turn = crate::support::lock::shared().await;
    let e = env().await;
    let db = TestDb::new(true).await;
    let sidecar = start(&e, &db).await;
    let mut heavy = 0;
    for _ in 0..8 {
        let (status, text, seen) = send(
            &e,
            &sidecar,
            "/v1/chat/completions",
            r#"{"model":"split"}"#.into(),
        )
        .await;
        assert_eq!(status, 200, "{text}");
        let seen = seen.expect("sent");
        if seen.header("authorization") == Some("Bearer sk-heavy") {
            assert_eq!(seen.body_str(), r#"{"model":"heavy"}"#);
            heavy += 1;
        }
    }
    assert_eq!(heavy, 6, "weight 3 against 1 takes 6 of 8");

    let (status, text) =
        crate::support::http::get(&format!("{}/v1/models", sidecar.base_url())).await;
    assert_eq!(status, 200, "{text}");
    let list: Value = serde_json::from_str(&text).expect("json");
    let ids: Vec<&str> = list["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert_eq!(ids, ["azure-gpt", "claude", "gemini", "gpt", "split"]);
    assert_eq!(list["object"], "list");
    let (status, _) =
        crate::support::http::get(&format!("{}/v1/models/claude", sidecar.base_url())).await;
    assert_eq!(status, 200);
    let (status, _) =
        crate::support::http::get(&format!("{}/v1/models/nope", sidecar.base_url())).await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bodies_and_unknown_models_are_answered_here_and_send_nothing() {
    let _turn = crate::support::lock::shared().await;
    let e = env().await;
    let db = TestDb::new(true).await;
    let sidecar = start(&e, &db).await;
    let cases = [
        (
            "/v1/chat/completions",
            "not json",
            400,
            "invalid_request_error",
        ),
        (
            "/v1/chat/completions",
            r#"{"messages":[]}"#,
            400,
            "invalid_request_error",
        ),
        (
            "/v1/chat/completions",
            r#"{"model":"gpt","model":"claude"}"#,
            400,
            "invalid_request_error",
        ),
        (
            "/v1/chat/completions",
            r#"{"model":"unknown-alias"}"#,
            404,
            "model_not_found",
        ),
        ("/v1/files", r#"{"model":"gpt"}"#, 404, "unknown_url"),
    ];
    for (path, body, status, code) in cases {
        let (got, text, seen) = send(&e, &sidecar, path, body.into()).await;
        assert_eq!(got, status, "{body}: {text}");
        let error: Value = serde_json::from_str(&text).expect("json error");
        assert_eq!(error["error"]["code"], code, "{body}");
        // OpenAI's and LiteLLM's type for a request the client must fix, in their four fields.
        assert_eq!(error["error"]["type"], "invalid_request_error", "{body}");
        assert!(error["error"].get("param").is_some(), "{body}: {text}");
        assert!(seen.is_none(), "{body}: something reached the provider");
    }
    let over = format!(r#"{{"model":"gpt","x":"{}"}}"#, "y".repeat(400 * 1024));
    let (status, _, seen) = send(&e, &sidecar, "/v1/chat/completions", over).await;
    assert_eq!(status, 413);
    assert!(seen.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_model_list_serves_without_a_database() {
    let _turn = crate::support::lock::shared().await;
    let e = env().await;
    let base = e.mock.base_url();
    let store = format!(
        "model_list:\n\
         - model_name: local-gpt\n  litellm_params: {{ model: openai/gpt-local, api_base: \"{base}/v1\", api_key: os.environ/LOCAL_GPT_KEY }}\n"
    );
    let route = json!({ "name": "unified", "path_prefix": "/v1", "dispatch": "model" });
    let config = crate::support::config::gateway(
        json!({ "ca_file": e.ca_file }),
        crate::support::config::local_credentials(),
        vec![route],
    );
    let sidecar = SidecarProcess::start_async(
        &yaml(&config),
        &[("credentials.yaml", &store)],
        &[("LOCAL_GPT_KEY", "sk-local-file")],
    )
    .await;
    let (status, text, seen) = send(
        &e,
        &sidecar,
        "/v1/chat/completions",
        r#"{"model":"local-gpt"}"#.into(),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let seen = seen.expect("sent");
    assert_eq!(seen.header("authorization"), Some("Bearer sk-local-file"));
    assert_eq!(seen.body_str(), r#"{"model":"gpt-local"}"#);
}

/// POSTs `body` chunked (no `Content-Length`), in 8 KiB pieces.
async fn send_chunked(e: &Env, sidecar: &SidecarProcess, body: String) -> u16 {
    let pieces: Vec<Result<Vec<u8>, std::io::Error>> = body
        .into_bytes()
        .chunks(8 * 1024)
        .map(|c| Ok(c.to_vec()))
        .collect();
    let response = e
        .client
        .post(format!("{}/v1/chat/completions", sidecar.base_url()))
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            pieces,
        )))
        .send()
        .await
        .expect("request");
    response.status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_body_is_dispatched_up_to_pingoras_replay_buffer() {
    let _turn = crate::support::lock::shared().await;
    let e = env().await;
    let db = TestDb::new(true).await;
    let sidecar = start(&e, &db).await;
    let small = format!(r#"{{"x":"{}","model":"gpt"}}"#, "a".repeat(40 * 1024));
    assert_eq!(send_chunked(&e, &sidecar, small.clone()).await, 200);
    let seen = e.mock.requests().pop().expect("sent");
    let rewritten = small.replace(r#""model":"gpt""#, r#""model":"gpt-4o-2024""#);
    let length = rewritten.len().to_string();
    assert_eq!(
        seen.header("content-length"),
        Some(length.as_str()),
        "framed by length"
    );
    assert_eq!(seen.body_str(), rewritten);
    let before = e.mock.requests().len();
    let large = format!(r#"{{"x":"{}","model":"gpt"}}"#, "a".repeat(100 * 1024));
    assert_eq!(send_chunked(&e, &sidecar, large).await, 413);
    assert_eq!(e.mock.requests().len(), before, "nothing sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_body_reaches_the_provider_byte_for_byte_but_its_model() {
    let _turn = crate::support::lock::shared().await;
    let e = env().await;
    let db = TestDb::new(true).await;
    let sidecar = start(&e, &db).await;
    // 200 KB of prompt, with escapes, a nested `model` and the alias inside a string; `model`
    // first, last and in a pretty-printed body (line breaks between tokens).
    let prose = r#"a \"quoted\" \"model\":\"gpt\" line\nbreak, caf\u00e9 \ud83d\ude00 "#;
    let content = prose.repeat(200 * 1024 / prose.len());
    let messages = format!(
        r#"[{{"role":"user","content":"{content}","model":"inner"}},{{"n":[1,-2.5e3,true,null]}}]"#
    );
    let bodies = [
        format!(r#"{{"model":"gpt","messages":{messages},"user":"u-1"}}"#),
        format!(r#"{{"messages":{messages},"stream":false,"model":"gpt"}}"#),
        format!("{{\n  \"messages\": {messages},\n  \"model\" : \"gpt\"\n}}\n"),
    ];
    for body in bodies {
        let (status, _, seen) = send(&e, &sidecar, "/v1/chat/completions", body.clone()).await;
        assert_eq!(status, 200);
        let seen = seen.expect("sent");
        let at = body.rfind(r#""gpt""#).expect("model value");
        let want = format!(r#"{}"gpt-4o-2024"{}"#, &body[..at], &body[at + 5..]);
        assert_eq!(seen.body_str().len(), want.len());
        assert!(seen.body_str() == want, "only the model value changed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_prompt_streams_to_the_end_after_its_body_is_released() {
    let _turn = crate::support::lock::shared().await;
    let e = env().await;
    let db = TestDb::new(true).await;
    let sidecar = start(&e, &db).await;
    // The body kept for a retry is dropped once the answer's head is in; the stream goes on,
    // and the connection serves the next request with a body of its own.
    let content = "a long prompt, held while the answer streams. ".repeat(200 * 1024 / 46);
    let body = format!(r#"{{"model":"gpt","stream":true,"messages":[{{"content":"{content}"}}]}}"#);
    for round in 0..2 {
        let before = e.mock.requests().len();
        let response = e
            .client
            .post(format!("{}/v1/chat/completions", sidecar.base_url()))
            .header("content-type", "application/json")
            .header("x-mock-sse-events", "4")
            .header("x-mock-sse-delay-ms", "50")
            .body(body.clone())
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 200, "round {round}");
        let text = response.text().await.expect("the whole stream");
        for i in 0..4 {
            assert!(
                text.contains(&format!(r#"{{"i":{i}}}"#)),
                "event {i}: {text}"
            );
        }
        assert!(text.contains("data: [DONE]"), "{text}");
        let seen = e.mock.requests();
        assert_eq!(seen.len(), before + 1, "sent once");
        let want = body.replacen(r#""gpt""#, r#""gpt-4o-2024""#, 1);
        assert!(
            seen[before].body_str() == want,
            "the whole body, its model rewritten"
        );
    }
}
