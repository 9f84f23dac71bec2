//! A throttle for a repeated log line: the first is written at once, then at most one per
//! interval, each written one told how many were held back since the last. Used by the
//! watcher's warnings and by the hold-back of other crates' repetitive records.

use std::time::{Duration, Instant};

/// Allows one line per interval and counts the ones held back.
#[derive(Debug)]
pub struct Throttle {
    interval: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    /// A throttle allowing one line per `interval` (the first at once).
    pub const fn new(interval: Duration) -> Throttle {
        Throttle {
            interval,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(lines held back since the last one)` when a line may be written now.
    pub fn allow(&mut self) -> Option<u64> {
        self.allow_at(Instant::now())
    }

    /// [`Self::allow`] at `now`.
    pub fn allow_at(&mut self, now: Instant) -> Option<u64> {
        if self.within_interval(now) {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }

    /// Whether a line was written less than the interval before `now`.
    pub fn within_interval(&self, now: Instant) -> bool {
        self.last
            .is_some_and(|last| now.saturating_duration_since(last) < self.interval)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_throttle_allows_one_line_per_interval_and_counts_the_rest() {
        let mut t = Throttle::new(Duration::from_secs(3600));
        let start = Instant::now();
        assert_eq!(t.allow_at(start), Some(0));
        assert_eq!(t.allow_at(start), None);
        assert_eq!(t.allow_at(start + Duration::from_secs(10)), None);
        assert!(t.within_interval(start + Duration::from_secs(3599)));
        assert_eq!(t.allow_at(start + Duration::from_secs(3601)), Some(2));
    }
}
