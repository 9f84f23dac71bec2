//! What every criterion bench shares: one measurement setup, short enough for a 2-core shared
//! machine and steady enough to compare runs (20 samples, 1 s warm-up, 2 s measured).

use std::time::Duration;

use criterion::Criterion;

/// The criterion settings every bench runs with.
pub fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
}
