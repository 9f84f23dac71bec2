//! Watchers' spend goes to their serving instance, which writes it to LiteLLM's real schema
//! with its own flushes: the key's, team's, user's and member's spend, the daily tables and the
//! spend logs count every watcher's requests; a watcher's pending spend is sent when it is told
//! to stop; a batch sent twice is added once; a watcher may report spend only for the keys its
//! grant covers; and a budget reached through watchers is refused by them.

use std::time::Duration;

use crate::support::config::{gateway, yaml};
use crate::support::db_gateway::{env, model_route, Env, SALT};
use crate::support::litellm_db::LiteLlmDb;
use crate::support::sidecar_process::SidecarProcess;
use crate::support::spend::{insert_gpt_deployment, one_request_cost, value, USAGE};
use crate::support::{free_port, metric, sha256_hex, wait_until_async};
use serde_json::{json, Value};
use sidecar::spend::batch::{Batch, SpendRecord};
use sidecar::spend::Usage;

const TOKEN: &str = "watch-token-spend-team-t1-0123";
/// Deployment `gpt`; team `t1` with member `u1`; keys `sk-team` (u1, t1), `sk-small` (t1, a
/// budget of 2.5 requests) and `sk-outside` (team t2, not granted to the watchers).
async fn seed(e: &Env, db: &LiteLlmDb) {
    insert_gpt_deployment(e, db).await;
    let budget = 2.5 * one_request_cost();
    db.client
        .batch_execute(&format!(
            r#"INSERT INTO "LiteLLM_TeamTable" (team_id, members_with_roles)
                 VALUES ('t1', '[{{"user_id": "u1", "role": "user"}}]'), ('t2', '[]');
               INSERT INTO "LiteLLM_UserTable" (user_id) VALUES ('u1');
               INSERT INTO "LiteLLM_VerificationToken" (token, key_alias, user_id, team_id)
                 VALUES ('{}', 'team-key', 'u1', 't1');
               INSERT INTO "LiteLLM_VerificationToken" (token, key_alias, team_id, max_budget)
                 VALUES ('{}', 'small', 't1', {budget});
               INSERT INTO "LiteLLM_VerificationToken" (token, key_alias, team_id)
                 VALUES ('{}', 'outside', 't2');"#,
            sha256_hex("sk-team"),
            sha256_hex("sk-small"),
            sha256_hex("sk-outside"),
        ))
        .await
        .expect("key rows");
}

/// The serving instance: the database, keys, spend every 300 ms, the fan-out listener.
async fn serving(e: &Env, db: &LiteLlmDb, fanout_port: u16) -> SidecarProcess {
    let mut config = gateway(
        json!({ "ca_file": e.ca_file, "read_timeout": "5s" }),
        json!({ "postgres": { "url": db.url(), "schema": "public", "refresh_interval": "1h",
                              "listen": true, "notify_jitter": "10ms", "connect_timeout": "1s" } }),
        vec![model_route("gpt", "gpt")],
    );
    config["access"] = json!({ "litellm_keys": true });
    config["spend"] = json!({ "flush_interval": "300ms" });
    config["server"]["grace_period"] = json!("1s");
    config["server"]["graceful_shutdown_timeout"] = json!("1s");
    crate::support::db_gateway::db_command(&config, "install-notify");
    config["fanout"] = json!({
        "address": format!("127.0.0.1:{fanout_port}"),
        "watchers": [{ "name": "team-t1", "token_sha256": sha256_hex(TOKEN), "models": ["gpt"],
                       "litellm_keys": { "teams": ["t1"] } }],
    });
    SidecarProcess::start_async(&yaml(&config), &[], &[("LITELLM_SALT_KEY", SALT)]).await
}

/// A watcher of team t1's keys, flushing its spend every `flush`.
async fn watcher(e: &Env, fanout_port: u16, flush: &str) -> SidecarProcess {
    let mut config = gateway(
        json!({ "ca_file": e.ca_file, "read_timeout": "5s" }),
        json!({ "watch": { "url": format!("http://127.0.0.1:{fanout_port}"),
                           "token_env": "WATCH_TOKEN", "wait": "20s",
                           "litellm_keys": { "teams": ["t1"] } } }),
        vec![model_route("gpt", "gpt")],
    );
    config["access"] = json!({ "litellm_keys": true });
    config["spend"] = json!({ "flush_interval": flush });
    config["server"]["grace_period"] = json!("1s");
    config["server"]["graceful_shutdown_timeout"] = json!("1s");
    SidecarProcess::start_async(
        &yaml(&config),
        &[],
        &[("LITELLM_SALT_KEY", SALT), ("WATCH_TOKEN", TOKEN)],
    )
    .await
}

async fn send(e: &Env, sidecar: &SidecarProcess, key: &str, fail: bool) -> u16 {
    let mut request = e
        .client
        .post(format!("{}/gpt/chat/completions", sidecar.base_url()))
        .header("authorization", format!("Bearer {key}"))
        .header(
            "x-mock-usage",
            format!("{} {} {}", USAGE.0, USAGE.1, USAGE.2),
        )
        .body(r#"{"model":"gpt","messages":[{"role":"user","content":"hi"}]}"#);
    if fail {
        request = request.header("x-mock-status", "500");
    }
    request.send().await.expect("request").status().as_u16()
}

async fn logs(db: &LiteLlmDb) -> i64 {
    value(db, r#"SELECT count(*) AS n FROM "LiteLLM_SpendLogs""#).await["n"]
        .as_i64()
        .unwrap_or(-1)
}

async fn server_metric(server: &SidecarProcess, series: &str) -> f64 {
    let page = crate::support::http::admin_get(server, "/metrics").await.1;
    metric(&page, series).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_spend_is_written_by_their_serving_instance() {
    let _turn = crate::support::lock::shared().await;
    let e = env().await;
    let db = LiteLlmDb::new().await;
    seed(&e, &db).await;
    let fanout_port = free_port();
    let server = serving(&e, &db, fanout_port).await;
    let quick = watcher(&e, fanout_port, "200ms").await;
    let mut slow = watcher(&e, fanout_port, "1h").await;

    for _ in 0..3 {
        assert_eq!(
            send(&e, &quick, "sk-team", false).await,
            200,
            "{}",
            quick.output()
        );
        assert_eq!(
            send(&e, &slow, "sk-team", false).await,
            200,
            "{}",
            slow.output()
        );
    }
    assert_eq!(send(&e, &quick, "sk-team", true).await, 500);
    // The key outside the watchers' grant never reached them.
    assert_eq!(send(&e, &quick, "sk-outside", false).await, 401);
    let quick_ones =
        wait_until_async(Duration::from_secs(15), || async { logs(&db).await == 4 }).await;
    assert!(
        quick_ones,
        "the quick watcher's 4 requests: {}",
        server.output()
    );
    // The slow watcher's spend waits for its flush: it is sent when the watcher is stopped.
    assert_eq!(logs(&db).await, 4);
    assert!(slow.stop().success());
    let all = wait_until_async(Duration::from_secs(15), || async { logs(&db).await == 7 }).await;
    assert!(
        all,
        "the slow watcher's 3 requests, sent at SIGTERM: {}",
        slow.output()
    );

    let expected = 6.0 * one_request_cost();
    let close = |v: &Value| (v.as_f64().unwrap_or(f64::NAN) - expected).abs() < 1e-12;
    for sql in [
        format!(
            r#"SELECT spend FROM "LiteLLM_VerificationToken" WHERE token = '{}'"#,
            sha256_hex("sk-team")
        ),
        r#"SELECT spend FROM "LiteLLM_TeamTable" WHERE team_id = 't1'"#.to_string(),
        r#"SELECT spend FROM "LiteLLM_UserTable" WHERE user_id = 'u1'"#.to_string(),
        r#"SELECT spend FROM "LiteLLM_TeamMembership" WHERE user_id = 'u1' AND team_id = 't1'"#
            .to_string(),
    ] {
        let row = value(&db, &sql).await;
        assert!(close(&row["spend"]), "{sql}: {row} vs {expected}");
    }
    let daily = value(
        &db,
        r#"SELECT sum(api_requests) AS api, sum(successful_requests) AS ok,
                  sum(failed_requests) AS failed FROM "LiteLLM_DailyTeamSpend" WHERE team_id = 't1'"#,
    )
    .await;
    assert_eq!(daily, json!({ "api": 7, "ok": 6, "failed": 1 }));
    // Written by the serving instance alone: every batch in the database is one of its writes,
    // or a watcher's batch it took (remembered by `{watcher}/{id}`, so that another serving
    // instance would not count it again).
    let batches = value(
        &db,
        r#"SELECT count(*) FILTER (WHERE batch_id NOT LIKE '%/%') AS own,
                  count(*) FILTER (WHERE batch_id LIKE 'team-t1/%') AS watchers
           FROM "Sidecar_SpendBatches""#,
    )
    .await;
    let written = server_metric(&server, "sidecar_spend_batches_total{result=\"written\"}").await;
    assert_eq!(
        batches["own"].as_f64(),
        Some(written),
        "{}",
        server.output()
    );
    let taken = server_metric(
        &server,
        "sidecar_fanout_spend_reports_total{result=\"taken\"}",
    )
    .await;
    assert!(taken >= 2.0, "reports from both watchers: {taken}");
    assert_eq!(
        batches["watchers"].as_f64(),
        Some(taken),
        "every batch taken"
    );

    // A budget reached through the watchers' spend is refused by them.
    let mut served = 0;
    for _ in 0..20 {
        match send(&e, &quick, "sk-small", false).await {
            200 => served += 1,
            422 => break,
            other => panic!("unexpected status {other}: {}", quick.output()),
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let refused = wait_until_async(Duration::from_secs(10), || async {
        send(&e, &quick, "sk-small", false).await == 422
    })
    .await;
    assert!(
        refused,
        "sk-small still served after {served}: {}",
        quick.output()
    );
    println!("sk-small through a watcher: {served} requests served on a budget of 2.5");
    assert!(
        served >= 3,
        "{served}: the budget allows at least three requests"
    );
}

/// A report of one request with `key`'s digest, under `id`.
fn report(id: &str, key: &str) -> Value {
    let mut batch = Batch::default();
    batch.add(
        SpendRecord {
            request_id: format!("req-{id}"),
            key: sha256_hex(key).into(),
            user_id: None,
            team_id: None,
            end_user: None,
            model: "openai/gpt-4o".into(),
            model_id: Some("d-gpt".into()),
            model_group: Some("gpt".into()),
            provider: "openai".into(),
            api_base: None,
            endpoint: "/chat/completions".into(),
            usage: Usage::default(),
            spend: 0.25,
            start_ms: 1_796_688_000_000,
            end_ms: 1_796_688_000_100,
            first_byte_ms: None,
            success: true,
        },
        10,
    );
    json!({ "id": id, "batch": batch })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_is_added_once_and_only_for_granted_keys() {
    let _turn = crate::support::lock::shared().await;
    let e = env().await;
    let db = LiteLlmDb::new().await;
    seed(&e, &db).await;
    let fanout_port = free_port();
    let server = serving(&e, &db, fanout_port).await;
    let post = |body: Value, token: &str| {
        e.client
            .post(format!("http://127.0.0.1:{fanout_port}/v1/spend"))
            .bearer_auth(token)
            .json(&body)
            .send()
    };
    let ready = wait_until_async(Duration::from_secs(15), || async {
        post(report("first-try", "sk-team"), TOKEN)
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert!(ready, "never taken: {}", server.output());
    // The same batch again (its acknowledgement lost): acknowledged, not added.
    let again = post(report("first-try", "sk-team"), TOKEN)
        .await
        .expect("post");
    assert_eq!(again.status(), 200);
    assert_eq!(
        again.json::<Value>().await.expect("json")["duplicate"],
        true
    );
    for (body, token, status) in [
        (report("outside", "sk-outside"), TOKEN, 403),
        (report("unknown", "sk-nobody-has"), TOKEN, 403),
        (report("stranger", "sk-team"), "not-a-watcher", 401),
        (json!({ "id": "x y", "batch": {} }), TOKEN, 400),
    ] {
        let r = post(body, token).await.expect("post");
        assert_eq!(r.status(), status, "{}", r.text().await.unwrap_or_default());
    }
    let key = format!(
        r#"SELECT spend FROM "LiteLLM_VerificationToken" WHERE token = '{}'"#,
        sha256_hex("sk-team")
    );
    let written = wait_until_async(Duration::from_secs(15), || async {
        value(&db, &key).await["spend"].as_f64() == Some(0.25)
    })
    .await;
    assert!(written, "{}", value(&db, &key).await);
    // Its team and user come from the key's row, though the report named none.
    let team = value(
        &db,
        r#"SELECT spend FROM "LiteLLM_TeamTable" WHERE team_id = 't1'"#,
    )
    .await;
    assert_eq!(team["spend"].as_f64(), Some(0.25));
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        value(&db, &key).await["spend"].as_f64(),
        Some(0.25),
        "added once"
    );
    assert_eq!(logs(&db).await, 1);
    let outside = value(
        &db,
        &format!(
            r#"SELECT coalesce(spend, 0) AS spend FROM "LiteLLM_VerificationToken" WHERE token = '{}'"#,
            sha256_hex("sk-outside")
        ),
    )
    .await;
    assert_eq!(outside["spend"].as_f64(), Some(0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watchers_spend_waits_out_its_servers_outage_and_is_written_once() {
    let _turn = crate::support::lock::shared().await;
    let e = env().await;
    let db = LiteLlmDb::new().await;
    seed(&e, &db).await;
    let fanout_port = free_port();
    let mut server = serving(&e, &db, fanout_port).await;
    let quick = watcher(&e, fanout_port, "200ms").await;
    assert_eq!(send(&e, &quick, "sk-team", false).await, 200);
    let first = wait_until_async(Duration::from_secs(15), || async { logs(&db).await == 1 }).await;
    assert!(first, "{}", server.output());

    // The server goes away: the watcher keeps serving from its last rows and keeps its spend.
    assert!(server.stop().success());
    for _ in 0..2 {
        assert_eq!(send(&e, &quick, "sk-team", false).await, 200);
    }
    assert!(
        quick
            .wait_for_output("could not be written, kept for the next flush")
            .await,
        "{}",
        quick.output()
    );
    assert_eq!(logs(&db).await, 1);
    // Back: the kept batch is sent and written, once.
    let server = serving(&e, &db, fanout_port).await;
    let all = wait_until_async(Duration::from_secs(20), || async { logs(&db).await == 3 }).await;
    assert!(all, "{}\n{}", quick.output(), server.output());
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(logs(&db).await, 3, "written once");
    let key = value(
        &db,
        &format!(
            r#"SELECT spend FROM "LiteLLM_VerificationToken" WHERE token = '{}'"#,
            sha256_hex("sk-team")
        ),
    )
    .await;
    let expected = 3.0 * one_request_cost();
    assert!(
        (key["spend"].as_f64().unwrap_or(f64::NAN) - expected).abs() < 1e-12,
        "{key} vs {expected}"
    );
}
