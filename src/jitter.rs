//! Jitter: random delays that keep many sidecars (or many wake-ups) from acting in step, for
//! polls, reconnects, NOTIFY wake-ups and a watcher's backoff.

use std::time::Duration;

/// A uniformly random duration in `[0, limit)` (zero for a zero limit).
pub fn random_below(limit: Duration) -> Duration {
    let nanos = limit.as_nanos().min(u128::from(u64::MAX)) as u64;
    if nanos == 0 {
        return Duration::ZERO;
    }
    Duration::from_nanos(fastrand::u64(0..nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_delays_stay_below_their_limit_and_spread() {
        let limit = Duration::from_millis(500);
        let samples: Vec<Duration> = (0..1000).map(|_| random_below(limit)).collect();
        assert!(samples.iter().all(|d| *d < limit));
        let low = samples.iter().filter(|d| **d < limit / 2).count();
        assert!((300..700).contains(&low), "{low} of 1000 below the middle");
        assert_eq!(random_below(Duration::ZERO), Duration::ZERO);
    }
}
