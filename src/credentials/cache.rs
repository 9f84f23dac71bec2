//! The in-memory credential snapshot and the lock-free cache that serves it.
//!
//! A [`Snapshot`] is built completely off the request path (decryption included), then published
//! with one atomic [`CredentialCache::publish`]. Readers take an `Arc` to the current snapshot and
//! keep it for the whole request, so a refresh never changes a request halfway through. The
//! request path never decrypts and never takes a lock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

// tokio's clock: the real one in production, the paused one in the refresher's unit tests.
use tokio::time::Instant;

use arc_swap::ArcSwap;

use super::models::Deployment;
use super::Credential;
use crate::access::litellm_keys::KeyTable;

/// An immutable set of decrypted credentials and model deployments, plus the names that failed
/// to load and why.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Credentials by name.
    pub credentials: HashMap<String, Arc<Credential>>,
    /// Model aliases → their deployments, used round-robin.
    pub models: HashMap<String, Deployments>,
    /// Credential names that failed to load → why (fields named, never values).
    pub credential_failures: HashMap<String, String>,
    /// Model aliases none of whose deployments loaded → why.
    pub model_failures: HashMap<String, String>,
    /// LiteLLM's virtual keys, when `access.litellm_keys` is on and they have been read.
    pub litellm_keys: Option<Arc<KeyTable>>,
}

/// The deployments of one model alias, the order they are served in, and the position in it.
#[derive(Debug, Default)]
pub struct Deployments {
    list: Vec<Arc<Deployment>>,
    /// Indices into `list`, one cycle of the weighted round-robin.
    schedule: Vec<usize>,
    next: AtomicUsize,
}

/// Length of one weighted cycle: shares are honoured to within 1/`WEIGHTED_CYCLE`.
const WEIGHTED_CYCLE: usize = 1000;

impl Deployments {
    /// Deployments served in proportion to their `weight` (round-robin when the weights are
    /// equal), interleaved rather than in runs.
    pub fn new(list: Vec<Arc<Deployment>>) -> Deployments {
        Deployments {
            schedule: weighted_schedule(&list.iter().map(|d| d.weight).collect::<Vec<_>>()),
            list,
            next: AtomicUsize::new(0),
        }
    }

    /// Every deployment.
    pub fn all(&self) -> &[Arc<Deployment>] {
        &self.list
    }
}

/// One cycle of smooth weighted round-robin (nginx's): each step every entry gains its weight,
/// the richest is picked and pays the total. Computed once per snapshot, so a pick is one
/// atomic increment.
fn weighted_schedule(weights: &[f64]) -> Vec<usize> {
    if weights.windows(2).all(|w| w[0] == w[1]) {
        return (0..weights.len()).collect();
    }
    let total: f64 = weights.iter().sum();
    let mut credit = vec![0.0; weights.len()];
    (0..WEIGHTED_CYCLE)
        .map(|_| {
            let mut best = 0;
            for (i, w) in weights.iter().enumerate() {
                credit[i] += w;
                if credit[i] > credit[best] {
                    best = i;
                }
            }
            credit[best] -= total;
            best
        })
        .collect()
}

/// The result of looking a credential or model up by name.
#[derive(Debug)]
pub enum Lookup<'a, T> {
    /// Loaded and ready to use.
    Ready(T),
    /// Present in a source but unusable; the reason names fields, never values.
    Failed(&'a str),
    /// Not in any source (or not loaded yet).
    Missing,
}

impl Snapshot {
    /// Looks up a credential.
    pub fn credential(&self, name: &str) -> Lookup<'_, &Arc<Credential>> {
        if let Some(c) = self.credentials.get(name) {
            Lookup::Ready(c)
        } else if let Some(reason) = self.credential_failures.get(name) {
            Lookup::Failed(reason)
        } else {
            Lookup::Missing
        }
    }

    /// Picks the next deployment of a model alias (weighted round-robin).
    pub fn deployment(&self, model: &str) -> Lookup<'_, &Arc<Deployment>> {
        self.pick(model, None)
    }

    /// Picks the next deployment of a model alias that is not cooling down and is not
    /// `exclude` (the one a retry moves away from); when every one is cooling down, the one that
    /// failed least recently, `exclude` only when it is the alias's only deployment.
    pub fn pick(&self, model: &str, exclude: Option<&str>) -> Lookup<'_, &Arc<Deployment>> {
        match self.models.get(model) {
            Some(d) if !d.list.is_empty() => {
                let start = d.next.fetch_add(1, Ordering::Relaxed);
                let usable = |i: usize| exclude != Some(d.list[i].id.as_str());
                let ready = (0..d.schedule.len())
                    .map(|k| d.schedule[(start + k) % d.schedule.len()])
                    .find(|&i| usable(i) && !d.list[i].health.is_cooling());
                let fallback = || {
                    (0..d.list.len())
                        .filter(|&i| usable(i) || d.list.len() == 1)
                        .min_by_key(|&i| d.list[i].health.last_failure())
                        .unwrap_or(0)
                };
                Lookup::Ready(&d.list[ready.unwrap_or_else(fallback)])
            }
            _ => match self.model_failures.get(model) {
                Some(reason) => Lookup::Failed(reason),
                None => Lookup::Missing,
            },
        }
    }
}

/// The current snapshot, swapped atomically, and when it was last known to match its sources.
pub struct CredentialCache {
    current: ArcSwap<Snapshot>,
    /// When every source was last read successfully (the process start until then).
    fresh_at: Mutex<Instant>,
}

impl Default for CredentialCache {
    fn default() -> Self {
        CredentialCache {
            current: ArcSwap::from_pointee(Snapshot::default()),
            fresh_at: Mutex::new(Instant::now()),
        }
    }
}

impl CredentialCache {
    /// The snapshot in force now. Cheap and lock-free; hold it for a whole request.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Replaces the snapshot; requests already holding the old one keep it.
    pub fn publish(&self, snapshot: Snapshot) {
        self.current.store(Arc::new(snapshot));
    }

    /// Records that every source was just read successfully (the snapshot is current).
    pub fn mark_fresh(&self) {
        self.mark_fresh_at(Instant::now());
    }

    /// Records that every source was confirmed current at `at` (a watcher's last answer).
    pub fn mark_fresh_at(&self, at: Instant) {
        *self.fresh_at.lock().unwrap_or_else(|e| e.into_inner()) = at;
    }

    /// How long since every source was last read successfully: how stale the snapshot may be.
    pub fn age(&self) -> Duration {
        self.fresh_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::Secret;

    fn credential(name: &str, key: &str) -> Credential {
        Credential {
            name: name.into(),
            provider: None,
            api_key: Secret::new(key.into()),
            api_base: None,
            api_version: None,
            header_values: Default::default(),
        }
    }

    fn snapshot(credentials: Vec<Credential>) -> Snapshot {
        Snapshot {
            credentials: credentials
                .into_iter()
                .map(|c| (c.name.clone(), Arc::new(c)))
                .collect(),
            ..Snapshot::default()
        }
    }

    #[test]
    fn a_credential_makes_each_header_value_once_and_shares_it() {
        use crate::providers::AuthStyle;
        let c = credential("a", "sk-1");
        let first = c.header_value(&AuthStyle::OpenAi).expect("valid");
        let again = c.header_value(&AuthStyle::OpenAi).expect("valid");
        assert_eq!(first.as_bytes(), b"Bearer sk-1");
        // The same bytes, not a copy of the key per request.
        assert_eq!(first.as_bytes().as_ptr(), again.as_bytes().as_ptr());
        let plain = c.header_value(&AuthStyle::Azure).expect("valid");
        assert_eq!(plain.as_bytes(), b"sk-1");
        let custom = AuthStyle::from_config("header", Some("X-Key"), Some("Token ")).expect("ok");
        assert_eq!(
            c.header_value(&custom).expect("valid").as_bytes(),
            b"Token sk-1"
        );
        assert!(credential("b", "bad\r\nkey")
            .header_value(&AuthStyle::OpenAi)
            .is_none());
    }

    #[test]
    fn lookups_distinguish_ready_failed_and_missing() {
        let mut snap = snapshot(vec![credential("good", "k1")]);
        snap.credential_failures
            .insert("bad".into(), "api_key: cannot decrypt".into());
        assert!(matches!(snap.credential("good"), Lookup::Ready(c) if c.api_key.expose() == "k1"));
        assert!(matches!(snap.credential("bad"), Lookup::Failed(r) if r.contains("decrypt")));
        assert!(matches!(snap.credential("other"), Lookup::Missing));
    }

    #[test]
    fn readers_keep_their_snapshot_across_a_publish() {
        let cache = CredentialCache::default();
        cache.publish(snapshot(vec![credential("a", "old")]));
        let held = cache.snapshot();
        cache.publish(snapshot(vec![credential("a", "new")]));
        assert!(matches!(held.credential("a"), Lookup::Ready(c) if c.api_key.expose() == "old"));
        assert!(
            matches!(cache.snapshot().credential("a"), Lookup::Ready(c) if c.api_key.expose() == "new")
        );
    }

    fn deployment(id: &str, weight: f64) -> Arc<Deployment> {
        Arc::new(Deployment {
            id: id.into(),
            provider: "openai".into(),
            model: id.into(),
            model_json: format!("{id:?}"),
            weight,
            health: crate::credentials::health::for_deployment(id),
            credential: Arc::new(credential(id, id)),
            upstream: None,
            target: None,
            auth: None,
        })
    }

    #[test]
    fn deployments_rotate_round_robin() {
        let deployment = |id: &str| deployment(id, 1.0);
        let mut snap = Snapshot::default();
        snap.models.insert(
            "m".into(),
            Deployments::new(vec![deployment("a"), deployment("b")]),
        );
        let picks: Vec<String> = (0..4)
            .map(|_| match snap.deployment("m") {
                Lookup::Ready(d) => d.id.clone(),
                _ => panic!("ready"),
            })
            .collect();
        assert_eq!(picks, ["a", "b", "a", "b"]);
        assert!(matches!(snap.deployment("other"), Lookup::Missing));
    }

    #[test]
    fn weights_share_requests_in_proportion_and_interleaved() {
        let mut snap = Snapshot::default();
        snap.models.insert(
            "m".into(),
            Deployments::new(vec![deployment("a", 3.0), deployment("b", 1.0)]),
        );
        let picks: Vec<String> = (0..WEIGHTED_CYCLE)
            .map(|_| match snap.deployment("m") {
                Lookup::Ready(d) => d.id.clone(),
                _ => panic!("ready"),
            })
            .collect();
        let a = picks.iter().filter(|p| *p == "a").count();
        assert_eq!(a, WEIGHTED_CYCLE * 3 / 4, "a's share");
        // Interleaved: never more than three a's in a row.
        assert!(!picks.windows(4).any(|w| w.iter().all(|p| p == "a")));
    }

    #[test]
    fn cooling_deployments_are_skipped_and_the_least_recently_failed_tried_last() {
        use crate::config::RouterSettings;
        use crate::credentials::health::Failure;
        let settings = RouterSettings::default();
        let (a, b) = (deployment("pick-a", 1.0), deployment("pick-b", 1.0));
        let mut snap = Snapshot::default();
        snap.models
            .insert("m".into(), Deployments::new(vec![a.clone(), b.clone()]));
        let picked = |snap: &Snapshot, exclude: Option<&str>| match snap.pick("m", exclude) {
            Lookup::Ready(d) => d.id.clone(),
            _ => panic!("ready"),
        };
        a.health.record(Failure::RateLimited, false, &settings);
        for _ in 0..4 {
            assert_eq!(picked(&snap, None), "pick-b", "a is cooling");
        }
        assert_eq!(
            picked(&snap, Some("pick-b")),
            "pick-a",
            "the retry takes what is left"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
        b.health.record(Failure::RateLimited, false, &settings);
        // Both cooling: a failed first, so a is tried.
        for _ in 0..4 {
            assert_eq!(picked(&snap, None), "pick-a");
        }
    }
}
