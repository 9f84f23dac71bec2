//! Spend written into LiteLLM's real schema (every migration of the pinned LiteLLM, see
//! `support/litellm_db.rs`): the key's, team's, user's, team member's and end user's spend as
//! increments, the daily user, team and end-user rows, and one spend-log row per request with
//! no content; a batch written twice (a retry after a lost commit) counts once.

use crate::support::litellm_db::LiteLlmDb;
use sidecar::spend::batch::{Batch, SpendRecord};
use sidecar::spend::flush::{write, SpendTables, Written};
use sidecar::spend::Usage;

fn record(id: &str, key: &str, team: Option<&str>, user: Option<&str>, spend: f64) -> SpendRecord {
    SpendRecord {
        request_id: id.into(),
        key: key.into(),
        user_id: user.map(Into::into),
        team_id: team.map(Into::into),
        end_user: Some("customer-1".into()),
        model: "openai/gpt-4o".into(),
        model_id: Some("deployment-1".into()),
        model_group: Some("gpt".into()),
        provider: "openai".into(),
        api_base: Some("https://api.openai.com/v1".into()),
        endpoint: "/chat/completions".into(),
        usage: Usage {
            prompt: 100,
            completion: 20,
            cache_read: 30,
            ..Usage::default()
        },
        spend,
        start_ms: 1_796_650_000_000,
        end_ms: 1_796_650_000_400,
        first_byte_ms: Some(1_796_650_000_100),
        success: spend > 0.0,
    }
}

async fn number(db: &LiteLlmDb, sql: &str) -> f64 {
    db.client
        .query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_lands_in_litellms_tables_once() {
    let _turn = crate::support::lock::shared().await;
    let db = LiteLlmDb::new().await;
    db.client
        .batch_execute(
            r#"INSERT INTO "LiteLLM_TeamTable" (team_id, members_with_roles)
                 VALUES ('t1', '[{"user_id": "u1", "role": "user"}]');
               INSERT INTO "LiteLLM_UserTable" (user_id) VALUES ('u1');
               INSERT INTO "LiteLLM_VerificationToken" (token, user_id, team_id) VALUES ('k1', 'u1', 't1');
               INSERT INTO "LiteLLM_VerificationToken" (token) VALUES ('k2');"#,
        )
        .await
        .expect("LiteLLM rows");
    let tables = SpendTables::discover(&db.client, "public")
        .await
        .expect("discover");
    assert_eq!(
        tables.missing(),
        Vec::<&str>::new(),
        "LiteLLM's schema has every table"
    );
    let statement = tables.statement(true);

    let mut batch = Batch::default();
    batch.add(record("req-1", "k1", Some("t1"), Some("u1"), 0.25), 100);
    batch.add(record("req-2", "k1", Some("t1"), Some("u1"), 0.5), 100);
    batch.add(record("req-3", "k2", None, None, 0.0), 100);
    let written = write(&db.client, &statement, "public", "batch-1", &batch).await;
    assert_eq!(written.expect("write"), Written::Fresh);
    // The same batch again, as after a commit whose answer was lost: nothing more is counted.
    let written = write(&db.client, &statement, "public", "batch-1", &batch).await;
    assert_eq!(written.expect("rewrite"), Written::Duplicate);

    let key = r#"SELECT spend FROM "LiteLLM_VerificationToken" WHERE token = 'k1'"#;
    assert_eq!(number(&db, key).await, 0.75);
    let total = r#"SELECT total_spend FROM "LiteLLM_VerificationToken" WHERE token = 'k1'"#;
    assert_eq!(number(&db, total).await, 0.75);
    let team = r#"SELECT spend FROM "LiteLLM_TeamTable" WHERE team_id = 't1'"#;
    assert_eq!(number(&db, team).await, 0.75);
    let user = r#"SELECT spend FROM "LiteLLM_UserTable" WHERE user_id = 'u1'"#;
    assert_eq!(number(&db, user).await, 0.75);
    let member = r#"SELECT spend + total_spend FROM "LiteLLM_TeamMembership"
                    WHERE user_id = 'u1' AND team_id = 't1'"#;
    assert_eq!(number(&db, member).await, 1.5);
    let end_user = r#"SELECT spend FROM "LiteLLM_EndUserTable" WHERE user_id = 'customer-1'"#;
    assert_eq!(number(&db, end_user).await, 0.75);
    let daily_team = r#"SELECT api_requests::float8, successful_requests::float8,
                              failed_requests::float8, prompt_tokens::float8, spend,
                              cache_read_input_tokens::float8
                       FROM "LiteLLM_DailyTeamSpend"
                       WHERE team_id = 't1' AND date = '2026-12-07' AND api_key = 'k1'
                         AND model = 'openai/gpt-4o' AND custom_llm_provider = 'openai'"#;
    let row = db
        .client
        .query_one(daily_team, &[])
        .await
        .expect("daily team row");
    let counts: Vec<f64> = (0..6).map(|i| row.get(i)).collect();
    assert_eq!(counts, vec![2.0, 2.0, 0.0, 200.0, 0.75, 60.0]);
    // A key without a team is dated under team '' and user '' (LiteLLM's empty entity).
    let no_team = r#"SELECT failed_requests::float8 FROM "LiteLLM_DailyTeamSpend"
                     WHERE team_id = '' AND api_key = 'k2'"#;
    assert_eq!(number(&db, no_team).await, 1.0);
    let daily_user = r#"SELECT count(*)::float8 FROM "LiteLLM_DailyUserSpend""#;
    assert_eq!(number(&db, daily_user).await, 2.0);
    let daily_end_user = r#"SELECT api_requests::float8 FROM "LiteLLM_DailyEndUserSpend"
                            WHERE end_user_id = 'customer-1' AND api_key = 'k1'"#;
    assert_eq!(number(&db, daily_end_user).await, 2.0);
    let logs = db
        .client
        .query(
            r#"SELECT request_id, status, model_group, messages::text, response::text,
                      request_duration_ms, "startTime"::text
               FROM "LiteLLM_SpendLogs" ORDER BY request_id"#,
            &[],
        )
        .await
        .expect("spend logs");
    assert_eq!(logs.len(), 3);
    assert_eq!(logs[0].get::<_, String>(0), "req-1");
    assert_eq!(logs[0].get::<_, String>(1), "success");
    assert_eq!(logs[2].get::<_, String>(1), "failure");
    assert_eq!(logs[0].get::<_, String>(2), "gpt");
    assert_eq!(
        (logs[0].get::<_, String>(3), logs[0].get::<_, String>(4)),
        ("{}".to_string(), "{}".to_string()),
        "no content in a spend log"
    );
    assert_eq!(logs[0].get::<_, Option<i32>>(5), Some(400));
    assert_eq!(logs[0].get::<_, String>(6), "2026-12-07 13:26:40");
    // Every other column of a row, as LiteLLM's own writer fills it.
    let row = db
        .client
        .query_one(
            r#"SELECT api_key, spend, total_tokens, prompt_tokens, completion_tokens,
                      "completionStartTime"::text, model, model_id, custom_llm_provider,
                      api_base, "user", team_id, end_user, call_type
               FROM "LiteLLM_SpendLogs" WHERE request_id = 'req-1'"#,
            &[],
        )
        .await
        .expect("a spend log");
    assert_eq!(row.get::<_, String>(0), "k1");
    assert_eq!(row.get::<_, f64>(1), 0.25);
    let tokens: (i32, Option<i32>, Option<i32>) = (row.get(2), row.get(3), row.get(4));
    assert_eq!(tokens, (120, Some(100), Some(20)));
    assert_eq!(
        row.get::<_, Option<String>>(5).as_deref(),
        Some("2026-12-07 13:26:40.1")
    );
    let names: Vec<Option<String>> = (6..14).map(|i| row.get(i)).collect();
    let expected = [
        "openai/gpt-4o",
        "deployment-1",
        "openai",
        "https://api.openai.com/v1",
        "u1",
        "t1",
        "customer-1",
        "acompletion",
    ];
    assert_eq!(names, expected.map(|n| Some(n.to_string())));

    // The next batch adds to the same rows.
    let mut next = Batch::default();
    next.add(record("req-4", "k1", Some("t1"), Some("u1"), 0.25), 100);
    let written = write(&db.client, &statement, "public", "batch-2", &next).await;
    assert_eq!(written.expect("write"), Written::Fresh);
    assert_eq!(number(&db, key).await, 1.0);
    let requests = r#"SELECT api_requests::float8 FROM "LiteLLM_DailyTeamSpend"
                      WHERE team_id = 't1' AND api_key = 'k1'"#;
    assert_eq!(number(&db, requests).await, 3.0);
}
