//! The spend writer on a bad day, against LiteLLM's real schema and a real PostgreSQL behind a
//! relay the test can cut and freeze: a batch that cannot be written is kept and written when
//! the database answers again; a batch whose commit landed but whose answer was lost (the
//! connection frozen at commit) is retried and recognised, never counted twice.

use std::sync::Arc;
use std::time::Duration;

use crate::support::litellm_db::LiteLlmDb;
use crate::support::pg::PgRelay;
use crate::support::wait_until_async;
use sidecar::db::session::Session;
use sidecar::db::Database;
use sidecar::secret::Secret;
use sidecar::spend::batch::{Batch, SpendRecord};
use sidecar::spend::writer::{Flushed, SpendTarget, SpendWriter, WriterSettings};
use sidecar::spend::Usage;

fn record(id: &str, spend: f64) -> SpendRecord {
    SpendRecord {
        request_id: id.into(),
        key: "k1".into(),
        user_id: None,
        team_id: None,
        end_user: None,
        model: "openai/gpt-4o".into(),
        model_id: None,
        model_group: Some("gpt".into()),
        provider: "openai".into(),
        api_base: None,
        endpoint: "/chat/completions".into(),
        usage: Usage::default(),
        spend,
        start_ms: 1_796_650_000_000,
        end_ms: 1_796_650_000_010,
        first_byte_ms: None,
        success: true,
    }
}

/// A session to `db` through `relay`, with a short query deadline.
fn session_through(db: &LiteLlmDb, relay: &PgRelay) -> Session {
    let url = format!(
        "postgresql://postgres@127.0.0.1:{}/{}?sslmode=disable",
        relay.port, db.name
    );
    let database = Database::new(&Secret::new(url), "public", None, Duration::from_secs(1))
        .expect("database settings");
    Session::new(database, None, Duration::from_secs(1), Arc::default())
}

async fn spend_and_logs(db: &LiteLlmDb) -> (f64, i64) {
    let row = db
        .client
        .query_one(
            r#"SELECT (SELECT spend FROM "LiteLLM_VerificationToken" WHERE token = 'k1'),
                      (SELECT count(*) FROM "LiteLLM_SpendLogs")"#,
            &[],
        )
        .await
        .expect("read the spend");
    (row.get(0), row.get(1))
}

/// LiteLLM's schema with one key, `k1`.
async fn database_with_key() -> LiteLlmDb {
    let db = LiteLlmDb::new().await;
    db.client
        .batch_execute(r#"INSERT INTO "LiteLLM_VerificationToken" (token) VALUES ('k1')"#)
        .await
        .expect("key row");
    db
}

/// A writer whose interval (an hour) never comes in a test: it writes when told to, or when
/// its batch of `max_pending_requests` is half full.
fn hourly_writer(max_pending_requests: usize) -> Arc<SpendWriter> {
    SpendWriter::new(WriterSettings {
        flush_interval: Duration::from_secs(3600),
        spend_logs: true,
        max_pending_requests,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spend_survives_an_outage_and_a_lost_commit_and_counts_once() {
    let _turn = crate::support::lock::shared().await;
    let db = database_with_key().await;
    let relay = PgRelay::start().await;
    let session = session_through(&db, &relay);
    let writer = hourly_writer(1000);

    // The database is unreachable: the batch is kept, and new spend goes on adding up.
    writer.record(record("r1", 1.0));
    relay.cut();
    assert_eq!(writer.flush(&session).await, Flushed::Kept);
    writer.record(record("r2", 2.0));
    assert_eq!(spend_and_logs(&db).await, (0.0, 0));
    relay.restore();
    assert_eq!(
        writer.flush(&session).await,
        Flushed::Written,
        "the kept batch"
    );
    assert_eq!(spend_and_logs(&db).await, (1.0, 1));
    assert_eq!(
        writer.flush(&session).await,
        Flushed::Written,
        "the pending one"
    );
    assert_eq!(spend_and_logs(&db).await, (3.0, 2));

    // The commit lands but its answer never comes back: the key's row is locked, so the write
    // waits inside the server; the relay freezes; the lock is released and the write commits
    // behind the frozen relay; the writer's deadline passes and it keeps the batch.
    let mut locker = db.connect().await;
    let lock = locker.transaction().await.expect("begin");
    lock.execute(
        r#"SELECT 1 FROM "LiteLLM_VerificationToken" WHERE token = 'k1' FOR UPDATE"#,
        &[],
    )
    .await
    .expect("lock the key row");
    writer.record(record("r3", 4.0));
    let flushing = tokio::spawn({
        let writer = writer.clone();
        async move { writer.flush(&session).await }
    });
    let waiting = wait_until_async(Duration::from_secs(10), || async {
        db.client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
                 AND wait_event_type = 'Lock'",
                &[],
            )
            .await
            .map(|r| r.get::<_, i64>(0) > 0)
            .unwrap_or(false)
    })
    .await;
    assert!(waiting, "the writer's statement waits on the row lock");
    relay.freeze();
    lock.commit().await.expect("release the row");
    let landed = wait_until_async(Duration::from_secs(10), || async {
        spend_and_logs(&db).await == (7.0, 3)
    })
    .await;
    assert!(landed, "the write committed behind the frozen relay");
    assert_eq!(
        flushing.await.expect("join"),
        Flushed::Kept,
        "no answer: kept"
    );
    relay.thaw();

    // Tried again with the same id: recognised as written, not counted twice.
    let session = session_through(&db, &relay);
    assert_eq!(writer.flush(&session).await, Flushed::Written);
    assert_eq!(spend_and_logs(&db).await, (7.0, 3));
    assert_eq!(writer.flush(&session).await, Flushed::Nothing);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_full_batch_is_written_before_the_interval() {
    let _turn = crate::support::lock::shared().await;
    let db = database_with_key().await;
    let relay = PgRelay::start().await;
    let session = Arc::new(session_through(&db, &relay));
    let writer = hourly_writer(10);
    let target = SpendTarget::Database(Arc::new(arc_swap::ArcSwapOption::from(Some(session))));
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let running = tokio::spawn({
        let writer = writer.clone();
        async move { writer.run(&target, shutdown).await }
    });
    // The interval's first tick writes nothing (nothing is pending yet); then four requests,
    // under half of the ten a batch may hold, wait for the interval (an hour).
    tokio::time::sleep(Duration::from_millis(200)).await;
    for i in 0..4 {
        writer.record(record(&format!("r{i}"), 1.0));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        spend_and_logs(&db).await,
        (0.0, 0),
        "under half full: not yet"
    );
    writer.record(record("r4", 1.0));
    let written = wait_until_async(Duration::from_secs(20), || async {
        spend_and_logs(&db).await == (5.0, 5)
    })
    .await;
    assert!(written, "half full: written long before the hour");
    stop.send(true).expect("stop");
    running.await.expect("the writer stops");
}

/// A watcher's batch taken by two serving instances (its first server's answer was lost, and
/// it sent the batch again to another, as a watcher that fails over does) is counted once,
/// whichever instance writes first; each instance's own requests are counted too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watchers_batch_taken_by_two_serving_instances_counts_once() {
    let _turn = crate::support::lock::shared().await;
    let db = database_with_key().await;
    let relay = PgRelay::start().await;
    let session = session_through(&db, &relay);
    let (first, second) = (hourly_writer(1000), hourly_writer(1000));
    let watchers = |id: &str, spend: f64| {
        let mut batch = Batch::default();
        batch.add(record(id, spend), 1000);
        batch
    };
    for round in ["a", "b"] {
        // In round a the first instance writes first, in round b the second.
        let (early, late) = if round == "a" {
            (&first, &second)
        } else {
            (&second, &first)
        };
        let id = format!("w1/batch-{round}");
        early.absorb(id.clone(), watchers(&format!("{round}-w"), 1.0));
        late.absorb(id, watchers(&format!("{round}-w"), 1.0));
        early.record(record(&format!("{round}-early"), 10.0));
        late.record(record(&format!("{round}-late"), 100.0));
        assert_eq!(early.flush(&session).await, Flushed::Written);
        assert_eq!(
            late.flush(&session).await,
            Flushed::Written,
            "the rest of the batch"
        );
    }
    // Per round: the watcher's 1 once, 10 and 100 from the instances' own requests.
    assert_eq!(spend_and_logs(&db).await, (222.0, 6));
    assert_eq!(first.flush(&session).await, Flushed::Nothing);
    assert_eq!(second.flush(&session).await, Flushed::Nothing);
}
