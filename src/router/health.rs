//! Deployment health for the router: failures counted per deployment and minute, and the
//! cooldown that takes a failing deployment out of its alias's rotation, with the LiteLLM
//! router's semantics: a 429 cools a deployment down at once (when its alias has another one to
//! take the traffic); answers of 5xx or failures to connect cool it down once they exceed
//! `router.allowed_fails` in the current minute; a cooldown lasts `router.cooldown_time`.
//!
//! A [`HealthBook`] keeps the health of the deployments that failed, by deployment id
//! (`model_id`), so a credential refresh, which rebuilds every `Deployment`, keeps it; a
//! deployment without an entry is healthy. The book belongs to the router (one per process, in
//! the server's state), and an entry leaves it once a newer snapshot no longer holds its
//! deployment ([`HealthBook::prune`]). A pick reads the book with one lock-free load and two
//! atomics per deployment; only a deployment's first failure and the first look at a newer
//! snapshot take the book's lock, and only requests take it.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use arc_swap::{ArcSwap, Guard};

use crate::config::RouterSettings;
use crate::credentials::Snapshot;

/// What went wrong with one attempt on a deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The provider answered 429.
    RateLimited,
    /// The provider answered 5xx, or could not be connected to.
    Unavailable,
}

/// One deployment's health.
#[derive(Debug, Default)]
pub struct DeploymentHealth {
    /// Milliseconds since [`now_ms`]'s epoch until which the deployment is cooling down (0:
    /// never).
    cooling_until: AtomicU64,
    /// Milliseconds since [`now_ms`]'s epoch of the last failure (0: none).
    last_failure: AtomicU64,
    /// The current minute (since [`now_ms`]'s epoch) and the failures counted in it.
    window: Mutex<(u64, u32)>,
}

impl DeploymentHealth {
    /// Whether the deployment is cooling down now.
    pub fn is_cooling(&self) -> bool {
        self.cooling_until.load(Ordering::Relaxed) > now_ms()
    }

    /// When it last failed (ms since the process's health epoch; 0 when never).
    pub fn last_failure(&self) -> u64 {
        self.last_failure.load(Ordering::Relaxed)
    }

    /// Records a failure; returns whether it starts a cooldown. `alone`: the alias has no other
    /// deployment, so a 429 alone does not cool it down (there is nowhere else to go).
    pub fn record(&self, failure: Failure, alone: bool, settings: &RouterSettings) -> bool {
        let now = now_ms();
        self.last_failure.store(now, Ordering::Relaxed);
        let over = {
            let mut window = self.window.lock().unwrap_or_else(|e| e.into_inner());
            let minute = now / 60_000;
            if window.0 != minute {
                *window = (minute, 0);
            }
            window.1 += 1;
            window.1 > settings.allowed_fails
        };
        let cool = over || (failure == Failure::RateLimited && !alone);
        if cool {
            let until = now + settings.cooldown_time.as_millis() as u64;
            self.cooling_until.fetch_max(until, Ordering::Relaxed);
        }
        cool
    }
}

/// The health entries by deployment id.
pub type Entries = HashMap<String, Arc<DeploymentHealth>>;

/// The health of every deployment that failed and is still in the newest snapshot seen.
#[derive(Debug, Default)]
pub struct HealthBook {
    /// Replaced whole on every change, so that picks read it without a lock.
    entries: ArcSwap<Entries>,
    /// The generation of the newest snapshot the entries were pruned against.
    pruned: AtomicU64,
    /// Held while `entries` is replaced.
    changing: Mutex<()>,
}

impl HealthBook {
    /// The entries now, for a pick.
    pub fn entries(&self) -> Guard<Arc<Entries>> {
        self.entries.load()
    }

    /// The health of deployment `id`, made on its first failure.
    pub fn entry(&self, id: &str) -> Arc<DeploymentHealth> {
        if let Some(health) = self.entries.load().get(id) {
            return health.clone();
        }
        let _changing = self.changing.lock().unwrap_or_else(|e| e.into_inner());
        let mut entries = Entries::clone(&self.entries.load());
        let health = entries.entry(id.to_string()).or_default().clone();
        self.entries.store(Arc::new(entries));
        health
    }

    /// When `snapshot` is newer than any seen before, drops the entries of the deployments it
    /// no longer holds. An entry made afterwards from an older snapshot (a request that
    /// started before the refresh) leaves with the next snapshot that lacks it.
    pub fn prune(&self, snapshot: &Snapshot) {
        if snapshot.generation <= self.pruned.load(Ordering::Relaxed) {
            return;
        }
        let _changing = self.changing.lock().unwrap_or_else(|e| e.into_inner());
        if snapshot.generation <= self.pruned.load(Ordering::Relaxed) {
            return;
        }
        self.pruned.store(snapshot.generation, Ordering::Relaxed);
        let current = self.entries.load();
        if current.is_empty() {
            return;
        }
        let held: HashSet<&str> = snapshot
            .models
            .values()
            .flat_map(|d| d.all())
            .map(|d| d.id.as_str())
            .collect();
        if current.keys().all(|id| held.contains(id.as_str())) {
            return;
        }
        let kept: Entries = current
            .iter()
            .filter(|(id, _)| held.contains(id.as_str()))
            .map(|(id, health)| (id.clone(), health.clone()))
            .collect();
        self.entries.store(Arc::new(kept));
    }
}

/// Milliseconds since the first call (never 0, so 0 can mean "never").
fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_429_cools_down_at_once_unless_alone_and_5xx_after_the_allowed_fails() {
        let settings = RouterSettings::default();
        let limited = DeploymentHealth::default();
        assert!(!limited.record(Failure::RateLimited, true, &settings));
        assert!(!limited.is_cooling(), "alone: nowhere else to go");
        assert!(limited.record(Failure::RateLimited, false, &settings));
        assert!(limited.is_cooling());

        let failing = DeploymentHealth::default();
        for _ in 0..settings.allowed_fails {
            assert!(!failing.record(Failure::Unavailable, false, &settings));
        }
        assert!(!failing.is_cooling());
        assert!(failing.record(Failure::Unavailable, false, &settings));
        assert!(failing.is_cooling());
        assert!(failing.last_failure() > 0);
    }

    #[test]
    fn a_cooldown_ends() {
        let settings = RouterSettings {
            allowed_fails: 0,
            cooldown_time: Duration::from_millis(30),
        };
        let health = DeploymentHealth::default();
        assert!(health.record(Failure::Unavailable, false, &settings));
        assert!(health.is_cooling());
        std::thread::sleep(Duration::from_millis(60));
        assert!(!health.is_cooling());
    }

    #[test]
    fn an_entry_is_the_same_every_time_and_entries_do_not_share() {
        let book = HealthBook::default();
        book.entry("a")
            .record(Failure::RateLimited, false, &RouterSettings::default());
        assert!(book.entry("a").is_cooling());
        assert!(!book.entry("b").is_cooling());
        assert_eq!(book.entries().len(), 2);
    }
}
