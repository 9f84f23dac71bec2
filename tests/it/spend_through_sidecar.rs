//! Traffic through the sidecar counts in LiteLLM: a sidecar over LiteLLM's real schema (every
//! migration of the pinned LiteLLM), with LiteLLM keys and a `dispatch: model` route, writes
//! each request's spend back: the key's, team's, user's, member's and end user's spend, the daily tables
//! (successes and failures), one spend-log row per request; what is pending when it is told to
//! stop is written before it exits; and a key whose spend reaches its budget is refused.

use std::time::Duration;

use crate::support::config::{gateway, yaml};
use crate::support::db_gateway::{env, Env, SALT};
use crate::support::litellm_db::LiteLlmDb;
use crate::support::sidecar_process::SidecarProcess;
use crate::support::spend::{insert_gpt_deployment, one_request_cost, value, USAGE};
use crate::support::{sha256_hex, wait_until_async};
use serde_json::{json, Value};

/// `sk-fleet`'s budget, in requests.
const FLEET_BUDGET: f64 = 6.5;

/// LiteLLM rows: deployment `gpt` (openai/gpt-4o on the mock), team `t1` with member `u1`, and
/// keys `sk-team` (user u1, team t1), `sk-small` (a budget of 2.5 requests) and `sk-fleet` (a
/// budget of 6.5 requests).
async fn seed(e: &Env, db: &LiteLlmDb) {
    insert_gpt_deployment(e, db).await;
    let budget = 2.5 * one_request_cost();
    let fleet_budget = FLEET_BUDGET * one_request_cost();
    db.client
        .batch_execute(&format!(
            r#"INSERT INTO "LiteLLM_TeamTable" (team_id, members_with_roles)
                 VALUES ('t1', '[{{"user_id": "u1", "role": "user"}}]');
               INSERT INTO "LiteLLM_UserTable" (user_id) VALUES ('u1');
               INSERT INTO "LiteLLM_VerificationToken" (token, key_alias, user_id, team_id)
                 VALUES ('{}', 'team-key', 'u1', 't1');
               INSERT INTO "LiteLLM_VerificationToken" (token, key_alias, max_budget)
                 VALUES ('{}', 'small', {budget});
               INSERT INTO "LiteLLM_VerificationToken" (token, key_alias, max_budget)
                 VALUES ('{}', 'fleet', {fleet_budget});"#,
            sha256_hex("sk-team"),
            sha256_hex("sk-small"),
            sha256_hex("sk-fleet"),
        ))
        .await
        .expect("key rows");
}

async fn start(e: &Env, db: &LiteLlmDb, flush: &str) -> SidecarProcess {
    let routes = vec![json!({ "name": "v1", "path_prefix": "/v1", "dispatch": "model" })];
    let mut config = gateway(
        json!({ "ca_file": e.ca_file, "read_timeout": "5s" }),
        json!({ "postgres": { "url": db.url(), "schema": "public", "refresh_interval": "1h",
                              "listen": true, "notify_jitter": "10ms", "connect_timeout": "1s" } }),
        routes,
    );
    config["access"] = json!({ "litellm_keys": true });
    config["spend"] = json!({ "flush_interval": flush });
    // A quick stop: the SIGTERM test waits for the exit.
    config["server"]["grace_period"] = json!("1s");
    config["server"]["graceful_shutdown_timeout"] = json!("1s");
    crate::support::db_gateway::db_command(&config, "install-notify");
    SidecarProcess::start_async(&yaml(&config), &[], &[("LITELLM_SALT_KEY", SALT)]).await
}

/// Sends a chat request with `key`; `fail` makes the provider answer 500.
async fn send(e: &Env, sidecar: &SidecarProcess, key: &str, fail: bool) -> u16 {
    let mut request = e
        .client
        .post(format!("{}/v1/chat/completions", sidecar.base_url()))
        .header("authorization", format!("Bearer {key}"))
        .header(
            "x-mock-usage",
            format!("{} {} {}", USAGE.0, USAGE.1, USAGE.2),
        )
        .body(r#"{"model":"gpt","user":"customer-1","messages":[{"role":"user","content":"hi"}]}"#);
    if fail {
        request = request.header("x-mock-status", "500");
    }
    request.send().await.expect("request").status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_through_the_sidecar_are_written_to_litellms_spend_tables() {
    let _turn = crate::support::lock::shared().await;
    let e = env().await;
    let db = LiteLlmDb::new().await;
    seed(&e, &db).await;
    let mut sidecar = start(&e, &db, "300ms").await;
    for _ in 0..4 {
        assert_eq!(send(&e, &sidecar, "sk-team", false).await, 200);
    }
    assert_eq!(send(&e, &sidecar, "sk-team", true).await, 500);
    let logged = wait_until_async(Duration::from_secs(15), || async {
        value(&db, r#"SELECT count(*) AS n FROM "LiteLLM_SpendLogs""#).await["n"] == 5
    })
    .await;
    assert!(logged, "five spend-log rows");
    let each = one_request_cost();
    let expected = 4.0 * each;
    let key = value(
        &db,
        &format!(
            r#"SELECT spend, total_spend FROM "LiteLLM_VerificationToken" WHERE token = '{}'"#,
            sha256_hex("sk-team")
        ),
    )
    .await;
    let close = |v: &Value| (v.as_f64().unwrap_or(f64::NAN) - expected).abs() < 1e-12;
    assert!(
        close(&key["spend"]) && close(&key["total_spend"]),
        "{key} vs {expected}"
    );
    for sql in [
        r#"SELECT spend FROM "LiteLLM_TeamTable" WHERE team_id = 't1'"#,
        r#"SELECT spend FROM "LiteLLM_UserTable" WHERE user_id = 'u1'"#,
        r#"SELECT spend FROM "LiteLLM_TeamMembership" WHERE user_id = 'u1' AND team_id = 't1'"#,
        // The body's `user`: LiteLLM's end user, its row made on first use.
        r#"SELECT spend FROM "LiteLLM_EndUserTable" WHERE user_id = 'customer-1'"#,
        r#"SELECT spend FROM "LiteLLM_DailyEndUserSpend" WHERE end_user_id = 'customer-1'
           AND api_key IN (SELECT token FROM "LiteLLM_VerificationToken" WHERE key_alias = 'team-key')"#,
    ] {
        let row = value(&db, sql).await;
        assert!(close(&row["spend"]), "{sql}: {row} vs {expected}");
    }
    let daily = value(
        &db,
        r#"SELECT api_requests, successful_requests, failed_requests, prompt_tokens,
                  completion_tokens, cache_read_input_tokens, model_group, custom_llm_provider
           FROM "LiteLLM_DailyTeamSpend" WHERE team_id = 't1'"#,
    )
    .await;
    assert_eq!(
        daily,
        json!({ "api_requests": 5, "successful_requests": 4, "failed_requests": 1,
                "prompt_tokens": 4000, "completion_tokens": 800, "cache_read_input_tokens": 1200,
                "model_group": "gpt", "custom_llm_provider": "openai" })
    );
    let logs = value(
        &db,
        r#"SELECT count(*) FILTER (WHERE status = 'failure' AND spend = 0) AS failures,
                  count(*) FILTER (WHERE messages = '{}'::jsonb AND response = '{}'::jsonb) AS empty,
                  count(DISTINCT request_id) AS ids, min(model) AS model, min(model_id) AS model_id
           FROM "LiteLLM_SpendLogs""#,
    )
    .await;
    assert_eq!(
        logs,
        json!({ "failures": 1, "empty": 5, "ids": 5, "model": "openai/gpt-4o", "model_id": "d-gpt" })
    );

    // A key over its budget is refused once its spend is written (the budget trigger NOTIFYs).
    let mut served = 0;
    for _ in 0..10 {
        match send(&e, &sidecar, "sk-small", false).await {
            200 => served += 1,
            422 => break,
            other => panic!("unexpected status {other}"),
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let refused = wait_until_async(Duration::from_secs(10), || async {
        send(&e, &sidecar, "sk-small", false).await == 422
    })
    .await;
    assert!(refused, "a key past its budget is refused");
    println!("sk-small: {served} requests served on a budget of 2.5 (overshoot: the requests of one flush interval)");
    assert!(
        served >= 3,
        "{served}: the budget allows at least three requests to start"
    );
    sidecar.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spend_pending_at_sigterm_is_written_before_exit() {
    let _turn = crate::support::lock::shared().await;
    let e = env().await;
    let db = LiteLlmDb::new().await;
    seed(&e, &db).await;
    let mut sidecar = start(&e, &db, "1h").await;
    assert_eq!(send(&e, &sidecar, "sk-team", false).await, 200);
    let count = r#"SELECT count(*) AS n FROM "LiteLLM_SpendLogs""#;
    assert_eq!(
        value(&db, count).await["n"],
        0,
        "nothing before the first flush"
    );
    let status = sidecar.stop();
    assert!(status.success(), "{status:?}");
    assert_eq!(value(&db, count).await["n"], 1, "written on the way out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_closes_across_a_fleet_sharing_one_key() {
    let _turn = crate::support::lock::shared().await;
    let e = env().await;
    let db = LiteLlmDb::new().await;
    seed(&e, &db).await;
    let flush = "500ms";
    let mut fleet = Vec::new();
    for _ in 0..3 {
        fleet.push(start(&e, &db, flush).await);
    }
    // Every sidecar sends with the key, one request every 100 ms, until it is refused (or 60
    // requests each, a bound the test fails on).
    let served: Vec<usize> = futures_util::future::join_all(fleet.iter().map(|sidecar| {
        let e = &e;
        async move {
            let mut served = 0;
            for _ in 0..60 {
                match send(e, sidecar, "sk-fleet", false).await {
                    200 => served += 1,
                    422 => return Some(served),
                    other => panic!("unexpected status {other}"),
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            None
        }
    }))
    .await
    .into_iter()
    .enumerate()
    .map(|(i, n)| {
        n.unwrap_or_else(|| {
            panic!(
                "sidecar {i} still serves the key past its budget; its log:\n{}",
                fleet[i].output()
            )
        })
    })
    .collect();
    let total: usize = served.iter().sum();
    println!(
        "3 sidecars, flush {flush}, 30 requests/s in all: {total} served on a budget of \
         {FLEET_BUDGET} requests ({served:?} per sidecar)"
    );
    assert!(
        total as f64 >= FLEET_BUDGET,
        "{total}: the budget allows at least {FLEET_BUDGET} requests"
    );
    for mut sidecar in fleet {
        sidecar.stop();
    }
}
