//! The poller: one long poll open at a time, on the long-lived runtime, moving to another
//! server address whenever the one in use fails.
//!
//! A failure moves on at once to the next address; only when every address failed in a row
//! does the poller sleep, with a backoff capped at [`MAX_BACKOFF`] (so a server that comes back
//! is used within seconds, not after a long backoff), and resolve the names again. Polls start
//! at least [`MIN_POLL_GAP`] apart, so a server answering at once, again and again, cannot spin
//! the watcher. Warnings are rate-limited ([`Throttle`]).

use std::sync::Arc;
use std::time::Duration;

use tracing::warn;

use super::endpoints::{resolve, Rotation};
use super::Shared;
use crate::jitter::random_below;
pub(super) use crate::logging::throttle::Throttle;

/// First delay after every address failed in a row.
const MIN_BACKOFF: Duration = Duration::from_millis(500);
/// Longest delay after every address failed in a row: a server that comes back is used
/// within this (drawn from its upper half).
pub const MAX_BACKOFF: Duration = Duration::from_secs(3);
/// Shortest time between the starts of two polls.
const MIN_POLL_GAP: Duration = Duration::from_millis(250);
/// At most one warning of a kind per this long.
pub(super) const WARN_INTERVAL: Duration = Duration::from_secs(30);

/// ` (N similar lines held back)` when N > 0.
pub(super) fn held_back(n: u64) -> String {
    if n == 0 {
        String::new()
    } else {
        format!(" ({n} similar lines held back)")
    }
}

/// Long-polls until aborted (the task is aborted when its source is dropped).
pub(super) async fn poll_forever(shared: Arc<Shared>) {
    let mut rotation = Rotation::default();
    let mut backoff = MIN_BACKOFF;
    // Addresses that failed in a row since the last answer or the last full round.
    let mut failures = 0;
    let mut retried_reused = false;
    let mut warnings = Throttle::new(WARN_INTERVAL);
    let mut last_start: Option<tokio::time::Instant> = None;
    loop {
        if failures >= rotation.len() {
            if failures > 0 {
                tokio::time::sleep(backoff / 2 + random_below(backoff / 2)).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            failures = 0;
            let (endpoints, problems) = resolve(&shared.servers).await;
            rotation.replace(endpoints);
            if rotation.len() == 0 {
                shared.round_failed(&problems.join("; "), &mut warnings);
                failures = 1;
                continue;
            }
            if !problems.is_empty() {
                if let Some(n) = warnings.allow() {
                    warn!("credentials: {}{}", problems.join("; "), held_back(n));
                }
            }
        }
        let Some(endpoint) = rotation.current().cloned() else {
            continue;
        };
        if let Some(last) = last_start {
            tokio::time::sleep_until(last + MIN_POLL_GAP).await;
        }
        last_start = Some(tokio::time::Instant::now());
        let tag = shared.tag();
        let wait = shared.client.settings.wait;
        let answer = shared
            .client
            .poll(&endpoint, tag.as_deref(), wait, true)
            .await;
        match answer.and_then(|a| shared.accept(&endpoint, a)) {
            Ok(()) => {
                backoff = MIN_BACKOFF;
                failures = 0;
                retried_reused = false;
            }
            // A pooled connection the server had closed: once more on a new one.
            Err(f) if f.reused && !retried_reused => retried_reused = true,
            Err(f) => {
                retried_reused = false;
                failures += 1;
                shared.count_failure(&f);
                rotation.advance();
                if failures >= rotation.len() {
                    shared.round_failed(&f.to_string(), &mut warnings);
                } else if let Some(n) = warnings.allow() {
                    let next = rotation.current().map(|e| e.describe()).unwrap_or_default();
                    warn!("credentials: {f}; trying {next}{}", held_back(n));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_back_lines_are_named_only_when_there_are_some() {
        assert_eq!(held_back(2), " (2 similar lines held back)");
        assert_eq!(held_back(0), "");
    }
}
