//! A URL that came from the database is shown without its user info or query values
//! (`config::redacted`): model rows whose decrypted `api_base` carries a secret in either place
//! cannot load, and the reason they give is in the 503 body, `/readyz`, `/config` and the log
//! at trace level; a credential row's `api_base` is in `/config`. The secret is in none of them.

use crate::support::config::yaml;
use crate::support::db_gateway::*;
use crate::support::http::admin_get;
use crate::support::pg::TestDb;
use crate::support::sidecar_process::SidecarProcess;
use serde_json::json;
use sidecar::credentials::cipher::Format;

const SECRET: &str = "SECRET-IN-URL-5150";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_in_api_base_reach_no_body_page_or_log() {
    let _turn = crate::support::lock::shared().await;
    let e = env().await;
    let db = TestDb::new(true).await;
    let host = e.mock.base_url().replace("https://", "");
    let bases = [
        ("userinfo", format!("https://svc:{SECRET}@{host}/v1")),
        ("query", format!("https://{host}/v1?api-key={SECRET}")),
    ];
    for (alias, base) in &bases {
        let params = json!({ "model": enc("openai/gpt", Format::Nacl), "api_key": enc("sk-provider", Format::Nacl),
            "api_base": enc(base, Format::Nacl) });
        db.put_model(&format!("d-{alias}"), alias, params).await;
    }
    let values = json!({ "api_key": enc("sk-provider", Format::Nacl),
        "api_base": enc(&bases[1].1, Format::Nacl) });
    db.put_credential("cred", values, "openai").await;
    let routes = vec![
        model_route("userinfo", "userinfo"),
        model_route("query", "query"),
        json!({ "name": "v1", "path_prefix": "/v1", "dispatch": "model" }),
    ];
    let mut config = gateway(&e, &db, &TestDb::url(None), "1h", false, routes);
    config["log"] = json!({ "level": "trace" });
    config["server"]["grace_period"] = json!("1s");
    config["server"]["graceful_shutdown_timeout"] = json!("2s");
    let env = [("LITELLM_SALT_KEY", SALT), ("RUST_LOG", "trace")];
    let mut sidecar = SidecarProcess::start_async(&yaml(&config), &[], &env).await;

    let mut shown = Vec::new();
    for path in ["/userinfo/chat/completions", "/query/chat/completions"] {
        let response = e
            .client
            .post(format!("{}{path}", sidecar.base_url()))
            .body(r#"{"model":"x"}"#)
            .send()
            .await
            .expect("request");
        assert_eq!(response.status().as_u16(), 503, "{path}");
        shown.push(response.text().await.expect("body"));
    }
    for page in ["/readyz", "/config"] {
        shown.push(admin_get(&sidecar, page).await.1);
    }
    let text = shown.join("\n");
    assert!(!text.contains(SECRET), "the secret is shown: {text}");
    assert!(
        text.contains("REDACTED@") && text.contains("api-key=REDACTED"),
        "the reasons name the URLs, redacted: {text}"
    );
    assert!(sidecar.stop().success());
    let log = sidecar.output();
    assert!(log.contains("REDACTED"), "the log names the URLs: {log}");
    assert!(!log.contains(SECRET), "the secret in the log: {log}");
}
