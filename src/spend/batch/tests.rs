//! The batch adds up as LiteLLM's writer does, and keeps what it cannot write.

use super::*;

fn record(key: &str, team: Option<&str>, user: Option<&str>, spend: f64) -> SpendRecord {
    SpendRecord {
        request_id: format!("r-{key}-{spend}"),
        key: key.into(),
        user_id: user.map(Into::into),
        team_id: team.map(Into::into),
        end_user: None,
        model: "openai/gpt-4o".into(),
        model_id: Some("d1".into()),
        model_group: Some("gpt".into()),
        provider: "openai".into(),
        api_base: None,
        endpoint: "/chat/completions".into(),
        usage: Usage {
            prompt: 10,
            completion: 5,
            ..Usage::default()
        },
        spend,
        start_ms: 1_796_688_000_000,
        end_ms: 1_796_688_000_250,
        first_byte_ms: None,
        success: spend > 0.0,
    }
}

fn json(doc: &impl serde::Serialize) -> serde_json::Value {
    serde_json::to_value(doc).expect("serializes")
}

#[test]
fn dates_are_utc_calendar_days() {
    assert_eq!(date_of(0), "1970-01-01");
    assert_eq!(date_of(951_782_400_000), "2000-02-29");
    assert_eq!(date_of(1_796_688_000_000 - 1), "2026-12-07");
    assert_eq!(date_of(1_796_688_000_000), "2026-12-08");
}

#[test]
fn totals_are_added_per_key_team_user_member_and_daily_row() {
    let mut batch = Batch::default();
    batch.add(record("k1", Some("t1"), Some("u1"), 0.5), 10);
    batch.add(record("k1", Some("t1"), Some("u1"), 0.25), 10);
    batch.add(record("k2", None, None, 0.0), 10);
    let docs = batch.documents();
    assert_eq!(
        json(&docs.keys),
        serde_json::json!([{ "token": "k1", "cost": 0.75 }, { "token": "k2", "cost": 0.0 }])
    );
    assert_eq!(
        json(&docs.members),
        serde_json::json!([{ "user_id": "u1", "team_id": "t1", "cost": 0.75 }])
    );
    let daily_teams = json(&docs.daily_teams);
    let daily_teams = daily_teams.as_array().expect("rows");
    assert_eq!(daily_teams.len(), 2, "{daily_teams:?}");
    let k1 = &daily_teams[1];
    assert_eq!(
        (k1["entity"].as_str(), k1["api_requests"].as_u64()),
        (Some("t1"), Some(2))
    );
    assert_eq!(k1["successful_requests"], 2);
    assert_eq!(k1["prompt_tokens"], 20);
    // A key without a team is dated under team '' (LiteLLM's empty entity id).
    assert_eq!(daily_teams[0]["entity"], "");
    assert_eq!(daily_teams[0]["failed_requests"], 1);
    assert_eq!(docs.logs.len(), 3);
}

#[test]
fn logs_past_the_bound_are_counted_and_totals_are_kept() {
    let mut batch = Batch::default();
    for i in 0..5 {
        batch.add(record("k", None, None, f64::from(i)), 3);
    }
    assert_eq!((batch.len(), batch.logs_dropped), (3, 2));
    let keys = serde_json::to_value(&batch.documents().keys).expect("serializes");
    assert_eq!(keys[0]["cost"], 10.0);
}

#[test]
fn a_batch_travels_as_json_and_is_written_as_if_its_requests_were_added_here() {
    let mut watcher = Batch::default();
    watcher.add(record("k1", Some("t1"), Some("u1"), 0.5), 1);
    // Past the bound: kept only in the totals.
    watcher.add(record("k2", Some("t1"), Some("u2"), 0.25), 1);
    let wire = serde_json::to_string(&watcher).expect("serialize");
    let received: Batch = serde_json::from_str(&wire).expect("deserialize");
    assert_eq!(received, watcher);
    let named = received.overflow.named();
    assert_eq!(named.keys, ["k2"]);
    assert_eq!(named.teams, ["t1"]);
    assert_eq!(named.users, ["u2"]);

    let mut server = Batch::default();
    server.add(record("k1", Some("t1"), Some("u1"), 1.0), 10);
    server.absorb("w/b1".into(), received, 10);
    let mut direct = Batch::default();
    direct.add(record("k1", Some("t1"), Some("u1"), 1.0), 10);
    direct.add(record("k1", Some("t1"), Some("u1"), 0.5), 10);
    let merged = server.documents();
    assert_eq!(server.len(), 2);
    assert_eq!(server.logs_dropped, 1);
    // The overflowed request's spend is in the totals, beside the records'.
    direct.add(record("k2", Some("t1"), Some("u2"), 0.25), 2);
    let expected = direct.documents();
    assert_eq!(merged.keys, expected.keys);
    assert_eq!(merged.teams, expected.teams);
    assert_eq!(merged.members, expected.members);
    assert_eq!(merged.daily_users, expected.daily_users);
}

#[test]
fn a_watchers_batch_is_held_within_the_bound_and_can_be_left_out_whole() {
    let mut server = Batch::default();
    server.add(record("k1", Some("t1"), Some("u1"), 1.0), 3);
    let mut watcher = Batch::default();
    for spend in [0.5, 0.25, 0.125] {
        watcher.add(record("k2", Some("t2"), Some("u2"), spend), 10);
    }
    server.absorb("w/b1".into(), watcher, 3);
    // Three rows in all: the watcher's third request keeps only its spend.
    assert_eq!(server.len(), 3);
    assert_eq!(server.logs_dropped, 1);
    assert_eq!(server.absorbed_ids(), ["w/b1"]);
    let mut again = Batch::default();
    again.add(record("k2", Some("t2"), Some("u2"), 9.0), 10);
    server.absorb("w/b1".into(), again, 3);
    assert_eq!(server.absorbed_ids(), ["w/b1"], "an id is held once");
    let docs = server.documents();
    assert_eq!(docs.logs.len(), 3);
    let keys = serde_json::to_value(&docs.keys).expect("json");
    assert_eq!(
        keys,
        serde_json::json!([{"token": "k1", "cost": 1.0}, {"token": "k2", "cost": 0.875}])
    );

    assert_eq!(server.leave_out(&["w/other".into()]), 0);
    assert_eq!(server.leave_out(&["w/b1".into()]), 1);
    let docs = server.documents();
    assert_eq!(docs.logs.len(), 1);
    let keys = serde_json::to_value(&docs.keys).expect("json");
    assert_eq!(keys, serde_json::json!([{"token": "k1", "cost": 1.0}]));
    assert!(!server.is_empty());
}

#[test]
fn a_watchers_report_cannot_bring_batches_of_others() {
    let wire = r#"{"records":[],"absorbed":[{"id":"x/y","batch":{"records":[]}}]}"#;
    let batch: Batch = serde_json::from_str(wire).expect("unknown fields are ignored");
    assert!(batch.absorbed.is_empty());
}
