//! A reload never waits on the database: with a refresh stuck on a locked table or on a frozen
//! network path (for up to its query_timeout), a SIGHUP that narrows `access.allowed_cidrs`
//! takes effect while the database is still stalled.

use std::net::IpAddr;
use std::time::Duration;

use serde_json::json;
use sidecar::credentials::cipher::Format;

use crate::support::config::{edit_file, yaml};
use crate::support::db_gateway::*;
use crate::support::pg::{self, PgRelay, TestDb};
use crate::support::sidecar_process::SidecarProcess;
use crate::support::wait_until_async;

/// Whether a request from `from` gets no answer at all (closed at accept).
async fn refused_from(sidecar: &SidecarProcess, from: &str) -> bool {
    reqwest::Client::builder()
        .local_address(from.parse::<IpAddr>().expect("ip"))
        .timeout(Duration::from_secs(2))
        .build()
        .expect("client")
        .post(format!("{}/live/x", sidecar.base_url()))
        .body("{}")
        .send()
        .await
        .is_err()
}

/// A sidecar over `db` (through `relay` when given), polling every 200 ms with a 30 s
/// query_timeout, open to 127.0.0.1 and 127.0.0.2; one request from .2 is served.
async fn start(e: &Env, db: &TestDb, relay: Option<&PgRelay>) -> SidecarProcess {
    db.put_credential(
        "live",
        json!({ "api_key": enc("sk-live", Format::Nacl) }),
        "openai",
    )
    .await;
    let routes = vec![credential_route(
        "live",
        "live",
        &e.mock.base_url(),
        "openai",
    )];
    let mut config = gateway(e, db, &TestDb::url(relay), "200ms", false, routes);
    config["credentials"]["postgres"]["query_timeout"] = json!("30s");
    config["access"] = json!({ "allowed_cidrs": ["127.0.0.1/32", "127.0.0.2/32"] });
    let sidecar =
        SidecarProcess::start_async(&yaml(&config), &[], &[("LITELLM_SALT_KEY", SALT)]).await;
    assert!(
        !refused_from(&sidecar, "127.0.0.2").await,
        "{}",
        sidecar.output()
    );
    sidecar
}

/// Narrows the allowed networks to 127.0.0.1 and reloads; returns whether 127.0.0.2 was refused
/// within `within` (far below the stall).
async fn narrowing_applies(sidecar: &SidecarProcess, within: Duration) -> bool {
    edit_file(&sidecar.dir().join("gateway.yaml"), |config| {
        config["access"]["allowed_cidrs"] = json!(["127.0.0.1/32"]);
    });
    sidecar.signal("HUP");
    wait_until_async(within, || refused_from(sidecar, "127.0.0.2")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_applies_while_a_refresh_waits_on_a_locked_table() {
    let _turn = crate::support::lock::alone().await;
    let e = env().await;
    let db = TestDb::new(true).await;
    let sidecar = start(&e, &db, None).await;
    // Without the change-version table every poll hashes the tables: it queues behind the lock.
    let locker = pg::connect().await;
    locker
        .batch_execute(&format!(
            "BEGIN; LOCK TABLE \"{}\".\"LiteLLM_CredentialsTable\" IN ACCESS EXCLUSIVE MODE",
            db.schema
        ))
        .await
        .expect("lock");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let applied = narrowing_applies(&sidecar, Duration::from_secs(8)).await;
    locker.batch_execute("ROLLBACK").await.expect("unlock");
    assert!(
        applied,
        "the reload waited for the database:\n{}",
        sidecar.output()
    );
    // Log lines reach stderr through the logger's writer thread: wait (bounded) for it.
    assert!(sidecar.wait_for_output("config reload: applied").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_applies_while_a_refresh_waits_on_a_frozen_database_path() {
    let _turn = crate::support::lock::alone().await;
    let e = env().await;
    let db = TestDb::new(true).await;
    let relay = PgRelay::start().await;
    let sidecar = start(&e, &db, Some(&relay)).await;
    relay.freeze();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let applied = narrowing_applies(&sidecar, Duration::from_secs(8)).await;
    relay.thaw();
    assert!(
        applied,
        "the reload waited for the database:\n{}",
        sidecar.output()
    );
}
