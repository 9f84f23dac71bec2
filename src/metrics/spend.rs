//! Metrics of the spend writer (`spend/writer.rs`): batches by result, requests waiting, and
//! spend-log rows left out past the bound. Costs are not exported: they are in LiteLLM's tables.

#![allow(
    clippy::expect_used,
    reason = "metric names, help texts and label sets are constants: a failure is a programming error that every test run would show"
)]

use std::sync::LazyLock;

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts};

use super::registered;

/// Spend batches by result: `written`, `duplicate` (a retried batch whose first try had
/// landed: not counted again), `failed` (kept for the next flush); on a fan-out watcher `sent`
/// (taken by its server) and `refused` (refused for good by it: logged, not kept).
pub static BATCHES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    registered(
        IntCounterVec::new(
            Opts::new(
                "sidecar_spend_batches_total",
                "Spend batches by result (written, duplicate: a retry whose first try had landed, failed: kept for the next flush; a fan-out watcher's: sent, refused)",
            ),
            &["result"],
        )
        .expect("valid metric"),
    )
});

/// Requests whose spend waits in the pending batch.
pub static PENDING_REQUESTS: LazyLock<IntGauge> = LazyLock::new(|| {
    registered(
        IntGauge::new(
            "sidecar_spend_pending_requests",
            "Requests whose spend waits for the next flush",
        )
        .expect("valid metric"),
    )
});

/// Spend-log rows left out because a batch held `spend.max_pending_requests` already (their
/// spend is still counted in the totals).
pub static LOGS_DROPPED: LazyLock<IntCounter> = LazyLock::new(|| {
    registered(
        IntCounter::new(
            "sidecar_spend_logs_dropped_total",
            "Spend-log rows left out past spend.max_pending_requests (their spend is still counted)",
        )
        .expect("valid metric"),
    )
});

/// Spend reports from fan-out watchers, on their serving instance, by result: `taken` (added to
/// this instance's pending batch), `duplicate` (a batch id taken before: not added again),
/// `refused` (keys outside the watcher's grant, or not a batch), `too_large`, `unauthorized`,
/// `unavailable` (no spend writer here, or no rows read yet).
pub static FANOUT_REPORTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    registered(
        IntCounterVec::new(
            Opts::new(
                "sidecar_fanout_spend_reports_total",
                "Spend reports from fan-out watchers, by result",
            ),
            &["result"],
        )
        .expect("valid metric"),
    )
});
