//! Deployment health for the router: failures counted per deployment and minute, and the
//! cooldown that takes a failing deployment out of its alias's rotation, with the LiteLLM
//! router's semantics: a 429 cools a deployment down at once (when its alias has another one to
//! take the traffic); answers of 5xx or failures to connect cool it down once they exceed
//! `router.allowed_fails` in the current minute; a cooldown lasts `router.cooldown_time`.
//!
//! Health is kept by deployment id (`model_id`) for the life of the process, so a credential
//! refresh, which rebuilds every [`super::models::Deployment`], keeps it. A pick reads two
//! atomics per deployment; only a failure takes a lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, OnceLock};
use std::time::Instant;

use crate::config::RouterSettings;
use crate::named_state::NamedState;

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
    /// Milliseconds since [`epoch`] until which the deployment is cooling down (0: never).
    cooling_until: AtomicU64,
    /// Milliseconds since [`epoch`] of the last failure (0: none).
    last_failure: AtomicU64,
    /// The current minute (since [`epoch`]) and the failures counted in it.
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

/// The health of deployment `id`, shared by every snapshot that holds it.
pub fn for_deployment(id: &str) -> Arc<DeploymentHealth> {
    static HEALTH: LazyLock<NamedState<DeploymentHealth>> = LazyLock::new(Default::default);
    HEALTH.get(id)
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
    fn health_outlives_a_snapshot() {
        let a = for_deployment("health-test-a");
        a.record(Failure::RateLimited, false, &RouterSettings::default());
        assert!(for_deployment("health-test-a").is_cooling());
        assert!(!for_deployment("health-test-b").is_cooling());
    }
}
