//! The key table's checks, one rule at a time.

use super::*;

fn digest(key: &str) -> String {
    format!("{:x}", Sha256::digest(key.as_bytes()))
}

fn key(token: &str, f: impl FnOnce(&mut KeyRow)) -> KeyRow {
    let mut row = KeyRow {
        token: digest(token),
        alias: None,
        models: vec![],
        expires: None,
        blocked: false,
        max_budget: None,
        spend: 0.0,
        team_id: None,
        rpm_limit: None,
        tpm_limit: None,
        user_id: None,
    };
    f(&mut row);
    row
}

fn request(header: &str, value: &str) -> RequestHeader {
    let mut req = RequestHeader::build("POST", b"/v1/chat/completions", None).expect("req");
    req.insert_header(header.to_string(), value)
        .expect("header");
    req
}

fn refusal(table: &KeyTable, token: &str) -> Option<(u16, String)> {
    match table.admit(&request("authorization", &format!("Bearer {token}"))) {
        Ok(_) => None,
        Err(r) => Some((r.status, r.message)),
    }
}

#[test]
fn keys_are_found_by_digest_and_refused_as_litellm_refuses_them() {
    let team = TeamRow {
        id: "t1".into(),
        models: vec!["gpt".into()],
        blocked: false,
        max_budget: Some(10.0),
        spend: 1.0,
    };
    let blocked_team = TeamRow {
        id: "t2".into(),
        blocked: true,
        ..team.clone()
    };
    let table = KeyTable::new(
        vec![
            key("sk-good", |k| k.alias = Some("app".into())),
            key("sk-blocked", |k| k.blocked = true),
            key("sk-expired", |k| k.expires = Some(1.0)),
            key("sk-later", |k| k.expires = Some(now() + 3600.0)),
            key("sk-spent", |k| (k.max_budget, k.spend) = (Some(5.0), 5.0)),
            key("sk-team", |k| k.team_id = Some("t1".into())),
            key("sk-team-blocked", |k| k.team_id = Some("t2".into())),
        ],
        vec![team, blocked_team],
    );
    assert_eq!(refusal(&table, "sk-good"), None);
    assert_eq!(refusal(&table, "sk-later"), None);
    assert_eq!(refusal(&table, "sk-team"), None);
    assert_eq!(refusal(&table, "sk-unknown").map(|r| r.0), Some(401));
    assert_eq!(refusal(&table, "sk-blocked").map(|r| r.0), Some(401));
    assert!(refusal(&table, "sk-expired").is_some_and(|r| r.1.contains("Expired")));
    assert_eq!(refusal(&table, "sk-spent").map(|r| r.0), Some(422));
    assert!(refusal(&table, "sk-team-blocked").is_some_and(|r| r.1.contains("t2")));
    let via_x_api_key = table.admit(&request("x-api-key", "sk-good"));
    assert_eq!(via_x_api_key.expect("accepted").label, "app");
    for (status, message) in ["sk-unknown", "sk-blocked", "sk-spent"]
        .iter()
        .filter_map(|k| refusal(&table, k))
    {
        assert!(!message.contains("sk-"), "{status}: {message}");
    }
}

#[test]
fn models_are_checked_against_the_key_and_its_team() {
    let team = TeamRow {
        id: "t1".into(),
        models: vec!["gpt".into(), "claude".into()],
        blocked: false,
        max_budget: None,
        spend: 0.0,
    };
    let table = KeyTable::new(
        vec![
            key("sk-any", |_| {}),
            key("sk-gpt", |k| k.models = vec!["gpt".into()]),
            key("sk-all", |k| k.models = vec![ALL_MODELS.into()]),
            key("sk-team", |k| k.team_id = Some("t1".into())),
        ],
        vec![team],
    );
    let admitted = |token: &str| {
        table
            .admit(&request("authorization", &format!("Bearer {token}")))
            .expect("admitted")
    };
    assert!(admitted("sk-any").check_model("anything").is_ok());
    assert!(admitted("sk-all").check_model("anything").is_ok());
    assert!(admitted("sk-gpt").check_model("gpt").is_ok());
    assert_eq!(
        admitted("sk-gpt")
            .check_model("claude")
            .map_err(|r| r.status),
        Err(403)
    );
    assert!(admitted("sk-team").check_model("claude").is_ok());
    let team_refusal = admitted("sk-team").check_model("gemini").expect_err("team");
    assert!(
        team_refusal.message.contains("Team=t1"),
        "{}",
        team_refusal.message
    );
}

#[test]
fn rpm_limits_count_per_minute_and_say_when_to_retry() {
    let table = KeyTable::new(vec![key("sk-rpm-test", |k| k.rpm_limit = Some(2))], vec![]);
    let key = table
        .admit(&request("authorization", "Bearer sk-rpm-test"))
        .expect("admitted");
    // A request at the very end of a minute may start the next window: allow one retry.
    let taken = (0..3).filter(|_| key.take_request().is_ok()).count();
    assert!(taken == 2 || taken == 3, "{taken}");
    let refusal = (0..3)
        .find_map(|_| key.take_request().err())
        .expect("refused past the limit");
    assert_eq!(refusal.status, 429);
    assert!(refusal.retry_after.is_some_and(|s| (1..=60).contains(&s)));
}

#[test]
fn tpm_limits_count_the_tokens_answers_used() {
    let table = KeyTable::new(
        vec![key("sk-tpm-test", |k| k.tpm_limit = Some(100))],
        vec![],
    );
    let key = table
        .admit(&request("authorization", "Bearer sk-tpm-test"))
        .expect("admitted");
    assert!(key.take_request().is_ok());
    key.add_tokens(150);
    // Unless a minute ended in between, the tokens are over the limit now.
    let refused = (0..2).any(|_| {
        key.take_request()
            .is_err_and(|r| r.status == 429 && r.message.contains("tpm_limit"))
    });
    assert!(refused);
}
