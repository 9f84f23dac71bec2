//! A watcher's batch is vouched for against its grant, and taken once per id.

use std::time::Duration;

use super::*;
use crate::db::keys::{KeyRow, TeamRow};
use crate::spend::batch::SpendRecord;
use crate::spend::writer::WriterSettings;
use crate::spend::Usage;

fn key(token: &str, team: Option<&str>, user: Option<&str>) -> KeyRow {
    KeyRow {
        token: token.into(),
        alias: None,
        models: Vec::new(),
        expires: None,
        blocked: false,
        max_budget: None,
        spend: 0.0,
        team_id: team.map(Into::into),
        rpm_limit: None,
        tpm_limit: None,
        user_id: user.map(Into::into),
    }
}

fn team(id: &str) -> TeamRow {
    TeamRow {
        id: id.into(),
        models: Vec::new(),
        blocked: false,
        max_budget: None,
        spend: 0.0,
    }
}

fn record(key: &str, team: Option<&str>, user: Option<&str>) -> SpendRecord {
    SpendRecord {
        request_id: format!("r-{key}"),
        key: key.into(),
        user_id: user.map(Into::into),
        team_id: team.map(Into::into),
        end_user: None,
        model: "openai/gpt-4o".into(),
        model_id: None,
        model_group: Some("gpt".into()),
        provider: "openai".into(),
        api_base: None,
        endpoint: "/chat/completions".into(),
        usage: Usage::default(),
        spend: 0.5,
        start_ms: 1_796_688_000_000,
        end_ms: 1_796_688_000_100,
        first_byte_ms: None,
        success: true,
    }
}

fn rows() -> StoredRows {
    StoredRows {
        keys: vec![
            key("aaaaaaaa-key-of-a", Some("t-a"), Some("u-a")),
            key("bbbbbbbb-key-of-b", Some("t-b"), Some("u-b")),
        ],
        teams: vec![team("t-a"), team("t-b")],
        ..StoredRows::default()
    }
}

#[test]
fn records_get_their_keys_team_and_user_and_keys_outside_the_grant_refuse_the_batch() {
    let grant = KeyGrant::Teams(vec!["t-a".into()]);
    let mut batch = Batch::default();
    // The watcher claims another team and user for its key: the key's row wins.
    batch.add(record("aaaaaaaa-key-of-a", Some("t-b"), Some("u-b")), 10);
    vouch(&mut batch, &rows(), &grant).expect("covered");
    assert_eq!(batch.records[0].team_id.as_deref(), Some("t-a"));
    assert_eq!(batch.records[0].user_id.as_deref(), Some("u-a"));

    let mut other = Batch::default();
    other.add(record("aaaaaaaa-key-of-a", None, None), 10);
    other.add(record("bbbbbbbb-key-of-b", Some("t-b"), None), 10);
    other.add(record("cccccccc-unknown", None, None), 10);
    assert_eq!(
        vouch(&mut other, &rows(), &grant),
        Err(vec![
            "key bbbbbbbb…".to_string(),
            "key cccccccc…".to_string()
        ])
    );
    // Totals past the bound are checked too: their key, team and user.
    let mut overflow = Batch::default();
    overflow.add(record("aaaaaaaa-key-of-a", Some("t-a"), Some("u-a")), 0);
    assert!(vouch(&mut overflow, &rows(), &grant).is_ok());
    let mut overflow = Batch::default();
    overflow.add(record("aaaaaaaa-key-of-a", Some("t-b"), Some("u-b")), 0);
    assert_eq!(
        vouch(&mut overflow, &rows(), &grant),
        Err(vec!["team t-b".to_string(), "user u-b".to_string()])
    );
    assert!(
        vouch(&mut other, &rows(), &KeyGrant::All).is_err(),
        "unknown key"
    );
}

#[test]
fn a_batch_id_is_taken_once_and_the_memory_is_bounded() {
    let writer = SpendWriter::new(WriterSettings {
        flush_interval: Duration::from_secs(10),
        spend_logs: true,
        max_pending_requests: 100,
    });
    let receipts = Receipts::default();
    let batch = || {
        let mut b = Batch::default();
        b.add(record("aaaaaaaa-key-of-a", Some("t-a"), Some("u-a")), 10);
        b
    };
    assert!(receipts.take("w", "id-1", batch(), &writer));
    assert!(!receipts.take("w", "id-1", batch(), &writer), "a retry");
    // Another watcher's ids are its own.
    assert!(receipts.take("v", "id-1", batch(), &writer));
    assert_eq!(writer.take_pending().len(), 2);
    for i in 0..REMEMBERED_IDS {
        assert!(receipts.take("w", &format!("more-{i}"), batch(), &writer));
    }
    let remembered = receipts.taken.lock().expect("lock")["w"].len();
    assert_eq!(remembered, REMEMBERED_IDS);
    assert!(valid_id("0123abcdef-x") && !valid_id("") && !valid_id("a b"));
    assert!(!valid_id(&"a".repeat(65)));
}
