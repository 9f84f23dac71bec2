//! The in-memory credential snapshot and the lock-free cache that serves it.
//!
//! A [`Snapshot`] is built completely off the request path (decryption included), then published
//! with one atomic [`CredentialCache::publish`]. Readers take an `Arc` to the current snapshot and
//! keep it for the whole request, so a refresh never changes a request halfway through. The
//! request path never decrypts and never takes a lock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
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
    /// Its place in the order of publication (1 for the first snapshot published, 0 before),
    /// so that the router can tell a newer snapshot from an older one a request still holds.
    pub generation: u64,
}

/// The deployments of one model alias, and the router's place among them for this snapshot:
/// the order it serves them in (made on its first pick) and its position in that order (see
/// `router`).
#[derive(Debug, Default)]
pub struct Deployments {
    list: Vec<Arc<Deployment>>,
    order: OnceLock<Vec<usize>>,
    next: AtomicUsize,
}

impl Deployments {
    /// The deployments of one alias.
    pub fn new(list: Vec<Arc<Deployment>>) -> Deployments {
        Deployments {
            list,
            order: OnceLock::new(),
            next: AtomicUsize::new(0),
        }
    }

    /// Every deployment.
    pub fn all(&self) -> &[Arc<Deployment>] {
        &self.list
    }

    /// The order the router serves them in (indices into [`all`](Self::all)), made by `make`
    /// the first time it is asked for.
    pub fn order(&self, make: impl FnOnce(&[Arc<Deployment>]) -> Vec<usize>) -> &[usize] {
        self.order.get_or_init(|| make(&self.list))
    }

    /// The router's next turn: a count of turns taken from this snapshot, which the router
    /// reads modulo its order's length.
    pub fn next_turn(&self) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed)
    }
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
}

/// The current snapshot, swapped atomically, and when it was last known to match its sources.
pub struct CredentialCache {
    current: ArcSwap<Snapshot>,
    /// Snapshots published so far.
    published: AtomicU64,
    /// When every source was last read successfully (the process start until then).
    fresh_at: Mutex<Instant>,
}

impl Default for CredentialCache {
    fn default() -> Self {
        CredentialCache {
            current: ArcSwap::from_pointee(Snapshot::default()),
            published: AtomicU64::new(0),
            fresh_at: Mutex::new(Instant::now()),
        }
    }
}

impl CredentialCache {
    /// The snapshot in force now. Cheap and lock-free; hold it for a whole request.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Replaces the snapshot, numbering it after the last; requests already holding the old one
    /// keep it.
    pub fn publish(&self, mut snapshot: Snapshot) {
        snapshot.generation = self.published.fetch_add(1, Ordering::Relaxed) + 1;
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
            aws: None,
            minted: None,
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
        assert_eq!((held.generation, cache.snapshot().generation), (1, 2));
        assert!(matches!(held.credential("a"), Lookup::Ready(c) if c.api_key.expose() == "old"));
        assert!(
            matches!(cache.snapshot().credential("a"), Lookup::Ready(c) if c.api_key.expose() == "new")
        );
    }
}
