//! The suite's one lock, so the tests run in parallel except those that must run alone.
//!
//! libtest runs the tests of this crate on several threads of one process. Most of them only
//! wait (on a sidecar starting, on a stream, on the database) and share the machine well. A few
//! measure what a neighbour would disturb, or load the machine so that a neighbour's timing
//! suffers: the upstream connection cap and its waits, floods of thousands of connections, the
//! resident memory or open descriptors of a process, counts of log lines, drains and deadlines
//! of a second or so, the soak. Those take the lock exclusively with [`alone`]; every other test
//! takes it shared with [`shared`] (or [`shared_blocking`] outside an async runtime). A test
//! takes it in its first statement and holds the guard to its end (`let _turn = …;` drops
//! last, after the sidecars and mocks the test started).
//!
//! tokio's lock is fair: once a test waits for it exclusively, tests arriving later queue behind
//! it, so an `alone` test waits only for the tests already running. A test that panics releases
//! it while unwinding. `harness_selftest::every_test_takes_the_suite_lock` checks that no test
//! was written without it.

use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

static SUITE: RwLock<()> = RwLock::const_new(());

/// Waits until no other test runs, and keeps every other test out while the guard lives.
pub async fn alone() -> RwLockWriteGuard<'static, ()> {
    SUITE.write().await
}

/// Waits while a test that runs [`alone`] holds the lock; other shared tests run alongside.
pub async fn shared() -> RwLockReadGuard<'static, ()> {
    SUITE.read().await
}

/// [`shared`] for a test that is not async (it must not be called inside a runtime).
pub fn shared_blocking() -> RwLockReadGuard<'static, ()> {
    SUITE.blocking_read()
}
