//! Live refresh against a real PostgreSQL: NOTIFY and polling, deletes, the database going away
//! and coming back, and starting without it. Each test has its own schema.

use std::time::Duration;

use crate::support::config::yaml;
use crate::support::db_gateway::*;
use crate::support::http::{admin_get, post};
use crate::support::pg::{PgRelay, TestDb};
use crate::support::sidecar_process::SidecarProcess;
use crate::support::wait_until_async;
use serde_json::json;
use sidecar::credentials::cipher::Format;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_arrive_by_notify_and_by_polling() {
    let _turn = crate::support::lock::shared().await;
    let e = env().await;
    let db = TestDb::new(true).await;
    let upstream = e.mock.base_url();
    db.put_credential(
        "live",
        json!({ "api_key": enc("sk-v1", Format::V3) }),
        "openai",
    )
    .await;
    let routes = vec![credential_route("live", "live", &upstream, "openai")];

    // NOTIFY: polling is an hour apart, so only the trigger can bring the change.
    let notify = gateway(&e, &db, &TestDb::url(None), "1h", true, routes.clone());
    for _ in 0..2 {
        db_command(&notify, "install-notify"); // idempotent
    }
    let sidecar =
        SidecarProcess::start_async(&yaml(&notify), &[], &[("LITELLM_SALT_KEY", SALT)]).await;
    assert_eq!(
        call(&e, &sidecar, "/live/x", "authorization")
            .await
            .1
            .as_deref(),
        Some("Bearer sk-v1")
    );
    assert!(
        wait_until_async(DEADLINE, || async {
            sidecar.output().contains("listening for changes")
        })
        .await
    );
    db.put_credential(
        "live",
        json!({ "api_key": enc("sk-v2", Format::V3) }),
        "openai",
    )
    .await;
    let took = wait_for_key(&e, &sidecar, "/live/x", "authorization", "Bearer sk-v2").await;
    println!("UPDATE → provider with NOTIFY: {took:?}");
    assert!(took.is_some(), "the NOTIFY did not bring the new key");
    drop(sidecar);

    // Polling alone, with the triggers removed.
    db_command(&notify, "uninstall-notify");
    let polling = gateway(&e, &db, &TestDb::url(None), "1s", false, routes);
    let sidecar =
        SidecarProcess::start_async(&yaml(&polling), &[], &[("LITELLM_SALT_KEY", SALT)]).await;
    assert_eq!(
        call(&e, &sidecar, "/live/x", "authorization")
            .await
            .1
            .as_deref(),
        Some("Bearer sk-v2")
    );
    db.put_credential(
        "live",
        json!({ "api_key": enc("sk-v3", Format::V3) }),
        "openai",
    )
    .await;
    let took = wait_for_key(&e, &sidecar, "/live/x", "authorization", "Bearer sk-v3").await;
    println!("UPDATE → provider polling every 1s: {took:?}");
    assert!(took.is_some(), "polling did not bring the new key");

    // A deleted row disappears at the next refresh.
    db.exec(r#"DELETE FROM {schema}."LiteLLM_CredentialsTable" WHERE credential_name = 'live'"#)
        .await;
    assert!(
        wait_until_async(DEADLINE, || async {
            call(&e, &sidecar, "/live/x", "authorization").await.0 == 503
        })
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_going_away_never_fails_a_request_the_cache_can_serve() {
    let _turn = crate::support::lock::shared().await;
    let e = env().await;
    let db = TestDb::new(true).await;
    let upstream = e.mock.base_url();
    db.put_credential(
        "steady",
        json!({ "api_key": enc("sk-steady", Format::V3) }),
        "openai",
    )
    .await;
    let relay = PgRelay::start().await;
    let routes = vec![credential_route("steady", "steady", &upstream, "openai")];
    let config = gateway(&e, &db, &TestDb::url(Some(&relay)), "1s", false, routes);
    let sidecar =
        SidecarProcess::start_async(&yaml(&config), &[], &[("LITELLM_SALT_KEY", SALT)]).await;
    assert_eq!(
        call(&e, &sidecar, "/steady/x", "authorization").await.0,
        200
    );

    relay.cut();
    assert!(
        wait_until_async(DEADLINE, || async {
            sidecar
                .output()
                .contains("serving its last good credentials")
        })
        .await,
        "{}",
        sidecar.output()
    );
    for _ in 0..20 {
        let (status, key) = call(&e, &sidecar, "/steady/x", "authorization").await;
        assert_eq!(
            (status, key.as_deref()),
            (200, Some("Bearer sk-steady")),
            "served from the last good snapshot"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Visible to monitoring, yet still ready: the last good snapshot is meant to serve.
    let (_, page) = admin_get(&sidecar, "/metrics").await;
    let failures = "sidecar_credential_refreshes_total{result=\"failure\"}";
    assert!(
        crate::support::metric(&page, failures).is_some_and(|n| n >= 1.0),
        "{page}"
    );
    let age = crate::support::metric(&page, "sidecar_credential_snapshot_age_seconds");
    assert!(age.is_some_and(|s| s >= 1.0), "{page}");
    assert_eq!(admin_get(&sidecar, "/readyz").await.0, 200);

    db.put_credential(
        "steady",
        json!({ "api_key": enc("sk-after", Format::V3) }),
        "openai",
    )
    .await;
    relay.restore();
    let took = wait_for_key(
        &e,
        &sidecar,
        "/steady/x",
        "authorization",
        "Bearer sk-after",
    )
    .await;
    assert!(
        took.is_some(),
        "the cache caught up after the database came back"
    );
    assert!(sidecar.wait_for_output("readable again").await);
    let logs = sidecar.output();
    assert_eq!(
        logs.matches("serving its last good credentials").count(),
        1,
        "one line per state change:\n{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_without_the_database_and_catches_up() {
    let _turn = crate::support::lock::shared().await;
    let e = env().await;
    let db = TestDb::new(true).await;
    let upstream = e.mock.base_url();
    db.put_credential(
        "late",
        json!({ "api_key": enc("sk-late", Format::V3) }),
        "openai",
    )
    .await;
    let relay = PgRelay::start().await;
    relay.cut();
    let routes = vec![credential_route("late", "late", &upstream, "openai")];
    let config = gateway(&e, &db, &TestDb::url(Some(&relay)), "1s", false, routes);
    let sidecar =
        SidecarProcess::start_async(&yaml(&config), &[], &[("LITELLM_SALT_KEY", SALT)]).await;
    let (status, body) = post(&sidecar, "/late/x").await;
    assert_eq!(status, 503);
    assert!(body.contains("credential \\\"late\\\" not loaded yet"));
    relay.restore();
    assert!(
        wait_for_key(&e, &sidecar, "/late/x", "authorization", "Bearer sk-late")
            .await
            .is_some()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_that_stops_decrypting_keeps_its_last_good_value_while_others_refresh() {
    let _turn = crate::support::lock::shared().await;
    let e = env().await;
    let db = TestDb::new(true).await;
    let upstream = e.mock.base_url();
    db.put_credential(
        "stable",
        json!({ "api_key": enc("sk-stable-1", Format::V3) }),
        "openai",
    )
    .await;
    db.put_credential(
        "other",
        json!({ "api_key": enc("sk-other-1", Format::V3) }),
        "openai",
    )
    .await;
    let routes = vec![
        credential_route("stable", "stable", &upstream, "openai"),
        credential_route("other", "other", &upstream, "openai"),
    ];
    let config = gateway(&e, &db, &TestDb::url(None), "1s", false, routes);
    let sidecar =
        SidecarProcess::start_async(&yaml(&config), &[], &[("LITELLM_SALT_KEY", SALT)]).await;
    assert_eq!(
        call(&e, &sidecar, "/stable/x", "authorization").await,
        (200, Some("Bearer sk-stable-1".into()))
    );

    // `stable` is overwritten with something that does not decrypt; `other` rotates.
    db.put_credential(
        "stable",
        json!({ "api_key": "v3:gcm:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA" }),
        "openai",
    )
    .await;
    db.put_credential(
        "other",
        json!({ "api_key": enc("sk-other-2", Format::V3) }),
        "openai",
    )
    .await;
    let took = wait_for_key(
        &e,
        &sidecar,
        "/other/x",
        "authorization",
        "Bearer sk-other-2",
    )
    .await;
    assert!(took.is_some(), "the healthy row refreshed");
    assert_eq!(
        call(&e, &sidecar, "/stable/x", "authorization").await,
        (200, Some("Bearer sk-stable-1".into())),
        "the failing row serves its last good value"
    );
    assert!(
        sidecar
            .wait_for_output("stable no longer loads; keeping its last good value")
            .await,
        "{}",
        sidecar.output()
    );
}

/// The value of `series` on the sidecar's metrics page (0 when absent).
async fn metric_value(sidecar: &SidecarProcess, series: &str) -> f64 {
    let (_, page) = admin_get(sidecar, "/metrics").await;
    crate::support::metric(&page, series).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_carries_listen_and_polls_and_unchanged_polls_read_only_the_version_row() {
    let _turn = crate::support::lock::shared().await;
    let e = env().await;
    let db = TestDb::new(true).await;
    let upstream = e.mock.base_url();
    db.put_credential(
        "live",
        json!({ "api_key": enc("sk-one-1", Format::Nacl) }),
        "openai",
    )
    .await;
    let app = format!("conn_{}", db.schema);
    let url = format!("{}&application_name={app}", TestDb::url(None));
    let routes = vec![credential_route("live", "live", &upstream, "openai")];
    let mut config = gateway(&e, &db, &url, "100ms", true, routes);
    let postgres = &mut config["credentials"]["postgres"];
    postgres["full_check_interval"] = json!("1s");
    postgres["notify_jitter"] = json!("50ms");
    db_command(&config, "install-notify");
    let sidecar =
        SidecarProcess::start_async(&yaml(&config), &[], &[("LITELLM_SALT_KEY", SALT)]).await;
    assert!(sidecar.wait_for_output("listening for changes").await);
    let connections = || async {
        db.client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                &[&app],
            )
            .await
            .expect("count")
            .get::<_, i64>(0)
    };

    // Polling every 100 ms for 3 s: one connection throughout; the version row is read on
    // every poll, both tables are hashed about once a second.
    let version = "sidecar_credential_change_checks_total{kind=\"version\"}";
    let full = "sidecar_credential_change_checks_total{kind=\"full\"}";
    let (v0, f0) = (
        metric_value(&sidecar, version).await,
        metric_value(&sidecar, full).await,
    );
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(connections().await, 1, "{}", sidecar.output());
    }
    let (v1, f1) = (
        metric_value(&sidecar, version).await,
        metric_value(&sidecar, full).await,
    );
    println!(
        "in 3 s: {} version checks, {} full checks",
        v1 - v0,
        f1 - f0
    );
    assert!(v1 - v0 >= 10.0, "version checks: {v0} → {v1}");
    assert!(
        f1 - f0 <= (v1 - v0) / 3.0,
        "full checks {f0} → {f1}, version {v0} → {v1}"
    );

    // A change through the triggers (NOTIFY and version row) is served on the same connection.
    db.put_credential(
        "live",
        json!({ "api_key": enc("sk-one-2", Format::Nacl) }),
        "openai",
    )
    .await;
    let took = wait_for_key(&e, &sidecar, "/live/x", "authorization", "Bearer sk-one-2").await;
    assert!(took.is_some(), "{}", sidecar.output());
    // A change the triggers never see (as pg_restore or logical replication apply it) is caught
    // by the full check.
    db.exec(&format!(
        r#"SET session_replication_role = replica;
           UPDATE {{schema}}."LiteLLM_CredentialsTable" SET credential_values = '{}'::jsonb
             WHERE credential_name = 'live';
           SET session_replication_role = origin;"#,
        json!({ "api_key": enc("sk-one-3", Format::Nacl) })
    ))
    .await;
    let took = wait_for_key(&e, &sidecar, "/live/x", "authorization", "Bearer sk-one-3").await;
    println!("UPDATE without triggers → served via the full check: {took:?}");
    assert!(took.is_some(), "{}", sidecar.output());
    assert_eq!(connections().await, 1, "{}", sidecar.output());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_carries_postgres_own_error_text() {
    let _turn = crate::support::lock::shared().await;
    let e = env().await;
    let db = TestDb::new(true).await;
    let missing = format!("no_such_db_{}", std::process::id());
    let url = TestDb::url(None).replace("/test?", &format!("/{missing}?"));
    let routes = vec![credential_route("x", "x", &e.mock.base_url(), "openai")];
    let config = gateway(&e, &db, &url, "1h", true, routes);
    let sidecar =
        SidecarProcess::start_async(&yaml(&config), &[], &[("LITELLM_SALT_KEY", SALT)]).await;
    let expected = format!("FATAL 3D000: database \"{missing}\" does not exist");
    assert!(
        sidecar.wait_for_output(&expected).await,
        "{}",
        sidecar.output()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_stops_answering_mid_query_is_cut_at_query_timeout_and_serving_goes_on() {
    let _turn = crate::support::lock::shared().await;
    let e = env().await;
    let db = TestDb::new(true).await;
    db.put_credential(
        "frozen",
        json!({ "api_key": enc("sk-frozen-1", Format::Nacl) }),
        "openai",
    )
    .await;
    let relay = PgRelay::start().await;
    let routes = vec![credential_route(
        "frozen",
        "frozen",
        &e.mock.base_url(),
        "openai",
    )];
    let mut config = gateway(&e, &db, &TestDb::url(Some(&relay)), "200ms", false, routes);
    config["credentials"]["postgres"]["query_timeout"] = json!("1s");
    let sidecar =
        SidecarProcess::start_async(&yaml(&config), &[], &[("LITELLM_SALT_KEY", SALT)]).await;
    assert_eq!(
        call(&e, &sidecar, "/frozen/x", "authorization").await.0,
        200
    );

    // The path freezes mid-conversation: the next poll's round trip never completes.
    relay.freeze();
    assert!(
        sidecar.wait_for_output("(query_timeout)").await,
        "no deadline fired: {}",
        sidecar.output()
    );
    for _ in 0..5 {
        assert_eq!(
            call(&e, &sidecar, "/frozen/x", "authorization").await,
            (200, Some("Bearer sk-frozen-1".to_string()))
        );
    }
    relay.thaw();
    db.put_credential(
        "frozen",
        json!({ "api_key": enc("sk-frozen-2", Format::Nacl) }),
        "openai",
    )
    .await;
    let took = wait_for_key(
        &e,
        &sidecar,
        "/frozen/x",
        "authorization",
        "Bearer sk-frozen-2",
    )
    .await;
    assert!(took.is_some(), "{}", sidecar.output());
}
