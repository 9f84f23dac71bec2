//! LiteLLM virtual keys served to watchers: a serving sidecar reads LiteLLM's key and team
//! tables and hands each watcher the keys its grant covers (all, or those of named teams); a
//! watcher with `access.litellm_keys` and `credentials.watch` refuses exactly as the serving
//! sidecar (a database reader) does, and a key blocked or a budget reached in LiteLLM reaches
//! it through the same long poll.

use crate::fanout::install_notify;
use crate::litellm_keys::call_with;
use crate::support::config::{self, yaml};
use crate::support::db_gateway::*;
use crate::support::pg::TestDb;
use crate::support::sidecar_process::SidecarProcess;
use crate::support::{free_port, sha256_hex, wait_until_async};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use sidecar::credentials::cipher::Format;

const TOKEN_TEAM_A: &str = "watch-token-keys-team-a-0123";
const TOKEN_ALL: &str = "watch-token-keys-all-456789";

/// LiteLLM's `hash_token`.
fn digest(key: &str) -> String {
    format!("{:x}", Sha256::digest(key.as_bytes()))
}

/// LiteLLM's rows: teams `t-a` and `t-b`, keys in each (as LiteLLM writes them: the digest)
/// and one without a team; a `gpt` deployment on the mock provider.
async fn seed(e: &Env, db: &TestDb) {
    let base = format!("{}/v1", e.mock.base_url());
    let params = json!({ "model": enc("openai/gpt-x", Format::Nacl),
        "api_key": enc("sk-provider", Format::Nacl), "api_base": enc(&base, Format::Nacl) });
    db.put_model("d-gpt", "gpt", params).await;
    db.exec(
        r#"INSERT INTO {schema}."LiteLLM_TeamTable" (team_id, models, blocked) VALUES
        ('t-a', ARRAY[]::text[], false), ('t-b', ARRAY[]::text[], false)"#,
    )
    .await;
    for (key, team, columns, values) in [
        ("sk-a", "t-a", "", ""),
        ("sk-a-budget", "t-a", ", max_budget, spend", ", 1.0, 0.5"),
        ("sk-a-spent", "t-a", ", max_budget, spend", ", 1.0, 1.5"),
        ("sk-a-expired", "t-a", ", expires", ", '2020-01-01'"),
        ("sk-a-other-model", "t-a", ", models", ", ARRAY['claude']"),
        ("sk-b", "t-b", "", ""),
    ] {
        db.exec(&format!(
            r#"INSERT INTO {{schema}}."LiteLLM_VerificationToken" (token, key_alias, team_id{columns})
               VALUES ('{}', 'app-{}', '{team}'{values})"#,
            digest(key),
            key.trim_start_matches("sk-")
        ))
        .await;
    }
    db.exec(&format!(
        r#"INSERT INTO {{schema}}."LiteLLM_VerificationToken" (token, key_alias) VALUES ('{}', 'x')"#,
        digest("sk-no-team")
    ))
    .await;
}

/// `(status, error.type)` of a chat request with `key` to the `gpt` route.
async fn outcome(e: &Env, sidecar: &SidecarProcess, key: &str) -> (u16, Value) {
    let (status, body, _) = call_with(e, sidecar, "/gpt/chat/completions", key, "gpt").await;
    (status, body["error"]["type"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_enforce_the_keys_their_grant_covers_as_a_database_reader_does() {
    let _turn = crate::support::lock::shared().await;
    let e = env().await;
    let db = TestDb::new(true).await;
    seed(&e, &db).await;
    let fanout_port = free_port();
    let mut server_conf = gateway(
        &e,
        &db,
        &TestDb::url(None),
        "1h",
        true,
        vec![model_route("gpt", "gpt")],
    );
    server_conf["access"] = json!({ "litellm_keys": true });
    server_conf["spend"] = json!({ "enabled": false });
    server_conf["credentials"]["postgres"]["notify_jitter"] = json!("20ms");
    server_conf["fanout"] = json!({
        "address": format!("127.0.0.1:{fanout_port}"),
        "watchers": [
            { "name": "team-a", "token_sha256": sha256_hex(TOKEN_TEAM_A), "models": ["gpt"],
              "litellm_keys": { "teams": ["t-a"] } },
            { "name": "all", "token_sha256": sha256_hex(TOKEN_ALL), "litellm_keys": "all" },
        ],
    });
    install_notify(&server_conf);
    let server =
        SidecarProcess::start_async(&yaml(&server_conf), &[], &[("LITELLM_SALT_KEY", SALT)]).await;

    // The endpoint: the grant decides which key rows travel; asking beyond it is refused.
    let snapshot = |query: &str, token: &str| {
        e.client
            .get(format!(
                "http://127.0.0.1:{fanout_port}/v1/snapshot?{query}"
            ))
            .bearer_auth(token)
            .send()
    };
    let ready = wait_until_async(DEADLINE, || async {
        let r = snapshot("team=t-a", TOKEN_TEAM_A).await;
        r.is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert!(
        ready,
        "the fan-out endpoint never answered: {}",
        server.output()
    );
    for (query, token, status) in [
        ("keys=all", TOKEN_TEAM_A, 403),
        ("team=t-a&team=t-b", TOKEN_TEAM_A, 403),
        ("keys=all", TOKEN_ALL, 200),
        ("model=gpt&team=t-a", TOKEN_ALL, 403),
    ] {
        let r = snapshot(query, token).await.expect("request");
        assert_eq!(
            r.status(),
            status,
            "{query}: {}",
            r.text().await.unwrap_or_default()
        );
    }
    let body = snapshot("team=t-a", TOKEN_TEAM_A)
        .await
        .expect("request")
        .text()
        .await
        .expect("body");
    let rows: Value = serde_json::from_str(&body).expect("json");
    let mut tokens: Vec<&str> = rows["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .filter_map(|k| k["token"].as_str())
        .collect();
    tokens.sort_unstable();
    let mut expected: Vec<String> = [
        "sk-a",
        "sk-a-budget",
        "sk-a-spent",
        "sk-a-expired",
        "sk-a-other-model",
    ]
    .iter()
    .map(|k| digest(k))
    .collect();
    expected.sort_unstable();
    assert_eq!(tokens, expected, "{body}");
    assert_eq!(
        rows["teams"],
        json!([{ "team_id": "t-a", "models": [], "blocked": false,
        "max_budget": null, "spend": 0.0 }])
    );
    assert!(!body.contains("sk-"), "a key in the clear: {body}");
    let all: Value = snapshot("keys=all", TOKEN_ALL)
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(all["keys"].as_array().map(Vec::len), Some(7));

    // A watcher of team t-a, enforcing keys from the server.
    let mut watcher_conf = config::gateway(
        json!({ "ca_file": e.ca_file, "read_timeout": "5s" }),
        json!({ "watch": {
            "url": format!("http://127.0.0.1:{fanout_port}"), "token_env": "WATCH_TOKEN",
            "wait": "20s", "litellm_keys": { "teams": ["t-a"] } } }),
        vec![model_route("gpt", "gpt")],
    );
    watcher_conf["access"] = json!({ "litellm_keys": true });
    watcher_conf["spend"] = json!({ "enabled": false });
    let watcher = SidecarProcess::start_async(
        &yaml(&watcher_conf),
        &[],
        &[("LITELLM_SALT_KEY", SALT), ("WATCH_TOKEN", TOKEN_TEAM_A)],
    )
    .await;

    // The same answer as the database reader for every key of its teams.
    for key in [
        "sk-a",
        "sk-a-budget",
        "sk-a-spent",
        "sk-a-expired",
        "sk-a-other-model",
    ] {
        let (from_server, from_watcher) = (
            outcome(&e, &server, key).await,
            outcome(&e, &watcher, key).await,
        );
        assert_eq!(from_watcher, from_server, "{key}: {}", watcher.output());
    }
    assert_eq!(outcome(&e, &watcher, "sk-a").await.0, 200);
    // Keys outside its grant never reached it: refused as unknown, as the server refuses a key
    // LiteLLM does not have.
    let unknown = outcome(&e, &server, "sk-nobody-has-this").await;
    assert_ne!(unknown.0, 200);
    for key in ["sk-b", "sk-no-team"] {
        assert_eq!(outcome(&e, &server, key).await.0, 200, "{key}");
        assert_eq!(outcome(&e, &watcher, key).await, unknown, "{key}");
    }

    // Blocked, or its budget reached, in LiteLLM: refused by the watcher through the long poll.
    db.exec(&format!(
        r#"UPDATE {{schema}}."LiteLLM_VerificationToken" SET blocked = true WHERE token = '{}'"#,
        digest("sk-a")
    ))
    .await;
    db.exec(&format!(
        r#"UPDATE {{schema}}."LiteLLM_VerificationToken" SET spend = 1.25 WHERE token = '{}'"#,
        digest("sk-a-budget")
    ))
    .await;
    for key in ["sk-a", "sk-a-budget"] {
        let refused = wait_until_async(DEADLINE, || async {
            outcome(&e, &watcher, key).await.0 != 200
        })
        .await;
        assert!(refused, "{key} still served: {}", watcher.output());
        assert_eq!(
            outcome(&e, &watcher, key).await,
            outcome(&e, &server, key).await,
            "{key}"
        );
    }
}
