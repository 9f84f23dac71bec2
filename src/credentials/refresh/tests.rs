//! The refresher's rules on plain values and on tokio's paused clock: poll and backoff
//! timing, merge precedence, last-known-good, the wrong-key refusal, wake-ups.

use super::*;

#[test]
fn polls_spread_within_ten_percent_of_the_interval() {
    let interval = Duration::from_secs(30);
    let mut backoff = MIN_BACKOFF;
    let waits: Vec<Duration> = (0..200)
        .map(|_| next_wait(true, &mut backoff, interval))
        .collect();
    assert!(waits
        .iter()
        .all(|w| *w >= Duration::from_secs(27) && *w < Duration::from_secs(33)));
    let distinct: BTreeSet<Duration> = waits.into_iter().collect();
    assert!(distinct.len() > 100, "polls are not spread");
}

#[test]
fn failures_back_off_exponentially_with_jitter_then_reset() {
    let interval = Duration::from_secs(60);
    let mut backoff = MIN_BACKOFF;
    let mut ceilings = Vec::new();
    for _ in 0..7 {
        let ceiling = backoff.min(interval);
        let wait = next_wait(false, &mut backoff, interval);
        assert!(
            wait >= ceiling / 2 && wait < ceiling,
            "{wait:?} for {ceiling:?}"
        );
        ceilings.push(ceiling.as_secs());
    }
    assert_eq!(ceilings, [1, 2, 4, 8, 16, 30, 30]);
    next_wait(true, &mut backoff, interval);
    assert_eq!(backoff, MIN_BACKOFF);
}

#[test]
fn backoff_never_exceeds_a_short_interval() {
    let interval = Duration::from_secs(2);
    let mut backoff = Duration::from_secs(16);
    assert!(next_wait(false, &mut backoff, interval) < interval);
}

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::credentials::{Credential, Lookup, Secret};

/// A source that plays back a script of load results (the last one repeats), counting loads.
/// A failure is scripted as its text.
struct Scripted {
    name: &'static str,
    script: std::sync::Mutex<VecDeque<Result<LoadOutcome, &'static str>>>,
    loads: Arc<AtomicUsize>,
}

impl Scripted {
    fn new(
        name: &'static str,
        script: Vec<Result<LoadOutcome, &'static str>>,
    ) -> (Self, Arc<AtomicUsize>) {
        let loads = Arc::new(AtomicUsize::new(0));
        let source = Scripted {
            name,
            script: std::sync::Mutex::new(script.into()),
            loads: loads.clone(),
        };
        (source, loads)
    }
}

#[async_trait]
impl CredentialSource for Scripted {
    fn describe(&self) -> String {
        format!("scripted source {}", self.name)
    }

    async fn load(&self) -> Result<LoadOutcome, LoadError> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        let mut script = self.script.lock().expect("script");
        let next = if script.len() > 1 {
            script.pop_front()
        } else {
            script.front().cloned()
        };
        next.expect("a non-empty script")
            .map_err(|e| LoadError::External(e.into()))
    }
}

fn credential(name: &str, key: &str) -> Arc<Credential> {
    Arc::new(Credential {
        name: name.into(),
        provider: None,
        api_key: Secret::new(key.into()),
        api_base: None,
        api_version: None,
        header_values: Default::default(),
        aws: None,
        minted: None,
    })
}

fn loaded(entries: &[(&str, &str)]) -> Result<LoadOutcome, &'static str> {
    Ok(LoadOutcome {
        credentials: entries.iter().map(|(n, k)| credential(n, k)).collect(),
        rows: entries.len(),
        ..LoadOutcome::default()
    })
}

fn failing_row(name: &str, authentication: bool) -> LoadOutcome {
    let mut outcome = LoadOutcome {
        rows: 1,
        rows_failing_authentication: usize::from(authentication),
        ..LoadOutcome::default()
    };
    outcome
        .credential_failures
        .insert(name.into(), "api_key: cannot decrypt".into());
    outcome
}

fn key(cache: &CredentialCache, name: &str) -> Option<String> {
    match cache.snapshot().credential(name) {
        Lookup::Ready(c) => Some(c.api_key.expose().to_string()),
        _ => None,
    }
}

fn refresher(sources: Vec<Box<dyn CredentialSource>>) -> (Refresher, Arc<CredentialCache>) {
    let cache = Arc::new(CredentialCache::default());
    let refresher = Refresher::new(
        cache.clone(),
        sources,
        Duration::from_secs(30),
        Arc::default(),
    );
    (refresher, cache)
}

#[tokio::test]
async fn later_sources_win_and_a_failure_elsewhere_does_not_hide_a_loaded_name() {
    let (local, _) = Scripted::new("local", vec![loaded(&[("a", "local-a"), ("b", "local-b")])]);
    let mut db = failing_row("b", false);
    db.credentials.push(credential("a", "db-a"));
    db.rows += 1;
    let (db, _) = Scripted::new("db", vec![Ok(db)]);
    let (refresher, cache) = refresher(vec![Box::new(local), Box::new(db)]);
    assert!(refresher.refresh().await);
    assert_eq!(
        key(&cache, "a").as_deref(),
        Some("db-a"),
        "the later source wins"
    );
    assert_eq!(
        key(&cache, "b").as_deref(),
        Some("local-b"),
        "a name that failed in the later source but loaded in an earlier one is served"
    );
}

#[tokio::test]
async fn an_unreadable_source_and_a_row_that_stops_decrypting_keep_their_last_good_values() {
    let mut second = failing_row("a", false);
    second.credentials.push(credential("b", "b-2"));
    second.rows += 1;
    let (source, _) = Scripted::new(
        "db",
        vec![
            loaded(&[("a", "a-1"), ("b", "b-1")]),
            Err("database down"),
            Ok(second),
        ],
    );
    let (refresher, cache) = refresher(vec![Box::new(source)]);
    assert!(refresher.refresh().await);
    assert!(
        !refresher.refresh().await,
        "an unreadable source is a failed refresh"
    );
    assert_eq!(key(&cache, "a").as_deref(), Some("a-1"));
    assert!(refresher.refresh().await);
    assert_eq!(
        key(&cache, "a").as_deref(),
        Some("a-1"),
        "last good value kept"
    );
    assert_eq!(
        key(&cache, "b").as_deref(),
        Some("b-2"),
        "the others refresh"
    );
}

#[tokio::test]
async fn every_row_failing_authentication_is_refused_as_a_whole() {
    let (source, _) = Scripted::new(
        "db",
        vec![loaded(&[("a", "a-1")]), Ok(failing_row("a", true))],
    );
    let (refresher, cache) = refresher(vec![Box::new(source)]);
    assert!(refresher.refresh().await);
    assert!(
        !refresher.refresh().await,
        "a wrong salt key fails the refresh"
    );
    assert_eq!(key(&cache, "a").as_deref(), Some("a-1"));
    let refusal = ReadError::WrongKey {
        described: "scripted source db".into(),
        rows: 1,
    };
    assert_eq!(
        refusal.to_string(),
        "scripted source db: every one of its 1 rows failed to decrypt: the salt key \
         (LITELLM_SALT_KEY, else LITELLM_MASTER_KEY) is probably wrong"
    );
}

#[tokio::test]
async fn a_deleted_row_leaves_the_snapshot() {
    let (source, _) = Scripted::new(
        "db",
        vec![loaded(&[("a", "1"), ("b", "2")]), loaded(&[("b", "2")])],
    );
    let (refresher, cache) = refresher(vec![Box::new(source)]);
    refresher.refresh().await;
    refresher.refresh().await;
    assert!(matches!(cache.snapshot().credential("a"), Lookup::Missing));
    assert!(key(&cache, "b").is_some());
}

#[tokio::test(start_paused = true)]
async fn a_failing_source_is_retried_with_growing_backoff_and_a_wake_refreshes_at_once() {
    let (source, loads) = Scripted::new("db", vec![Err("database down")]);
    let (refresher, _) = refresher(vec![Box::new(source)]);
    let refresher = Arc::new(refresher);
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let running = tokio::spawn({
        let refresher = refresher.clone();
        async move { refresher.run(shutdown).await }
    });
    // Backoff ceilings 1, 2, 4, 8, 16, 30 (capped by the 30 s interval), 30 …, each wait drawn
    // from [ceiling / 2, ceiling): attempts at 0, then after 1 + 2 + 4 + 8 + 16 + 30 + 30 + 30 s
    // at the slowest (8 attempts by 120 s) and half of that at the fastest (12 by 120 s).
    tokio::time::sleep(Duration::from_secs(120)).await;
    let attempts = loads.load(Ordering::SeqCst);
    assert!((8..=12).contains(&attempts), "{attempts} attempts in 120 s");
    // A wake-up (NOTIFY, a lost connection, a fan-out answer) refreshes without waiting.
    refresher.wake().notify_one();
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(loads.load(Ordering::SeqCst), attempts + 1);
    stop.send(true).expect("shutdown");
    running.await.expect("the refresher stops on shutdown");
}

#[tokio::test(start_paused = true)]
async fn the_snapshot_ages_while_a_source_fails_and_is_fresh_again_when_it_recovers() {
    let (failing, _) = Scripted::new(
        "db",
        vec![
            loaded(&[("a", "a-1")]),
            Err("database down"),
            Err("database down"),
            loaded(&[("a", "a-2")]),
        ],
    );
    let (steady, _) = Scripted::new("local", vec![loaded(&[("b", "b-1")])]);
    let (refresher, cache) = refresher(vec![Box::new(steady), Box::new(failing)]);
    assert!(refresher.refresh().await);
    assert_eq!(cache.age(), Duration::ZERO);
    tokio::time::advance(Duration::from_secs(40)).await;
    assert!(!refresher.refresh().await);
    tokio::time::advance(Duration::from_secs(50)).await;
    assert!(!refresher.refresh().await);
    assert_eq!(
        cache.age(),
        Duration::from_secs(90),
        "one failing source of two leaves the snapshot unconfirmed since the last full success"
    );
    assert_eq!(key(&cache, "a").as_deref(), Some("a-1"), "served meanwhile");
    assert!(refresher.refresh().await);
    assert_eq!(cache.age(), Duration::ZERO);
    assert_eq!(key(&cache, "a").as_deref(), Some("a-2"));
}

#[tokio::test]
async fn an_unchanged_local_store_is_not_published_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("credentials.yaml");
    let write = |key: &str| {
        let text = format!(
            "credential_list:\n  - credential_name: a\n    credential_values:\n      \
             api_key: os.environ/{key}\n"
        );
        std::fs::write(&path, text).expect("write the store");
    };
    write("PATH");
    let targets = Arc::new(crate::upstream::test_targets());
    let local = crate::credentials::local::LocalStore::new(&path, None, targets);
    let (refresher, cache) = refresher(vec![Box::new(local)]);
    assert!(refresher.refresh().await);
    let first = cache.snapshot();
    assert!(refresher.refresh().await);
    assert!(
        Arc::ptr_eq(&first, &cache.snapshot()),
        "an unchanged file published a new snapshot"
    );
    write("HOME");
    assert!(refresher.refresh().await);
    assert!(
        !Arc::ptr_eq(&first, &cache.snapshot()),
        "a changed file is published"
    );
}
