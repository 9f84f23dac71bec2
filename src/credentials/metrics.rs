//! The credential snapshot's gauges (its size, its age, the names that failed to load), read
//! from the cache at scrape time.

use std::sync::{Arc, Mutex};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Gauge, IntGaugeVec, Opts};

use super::CredentialCache;

/// Registers the cache's collector. Call once.
pub fn register(cache: Arc<CredentialCache>) -> Result<(), String> {
    crate::metrics::register(CacheCollector::new(cache).map_err(|e| e.to_string())?)
}

/// The credential snapshot: its size, its age, and the names that failed to load.
struct CacheCollector {
    cache: Arc<CredentialCache>,
    loaded: IntGaugeVec,
    age: Gauge,
    failures: IntGaugeVec,
    last_success: Gauge,
    scrape: Mutex<()>,
}

impl CacheCollector {
    fn new(cache: Arc<CredentialCache>) -> prometheus::Result<CacheCollector> {
        Ok(CacheCollector {
            cache,
            loaded: IntGaugeVec::new(
                Opts::new(
                    "sidecar_credential_snapshot_entries",
                    "Entries in the credential snapshot, by kind (credential, model)",
                ),
                &["kind"],
            )?,
            age: Gauge::new(
                "sidecar_credential_snapshot_age_seconds",
                "Seconds since every credential source was last read successfully",
            )?,
            last_success: Gauge::new(
                "sidecar_credential_last_success_timestamp_seconds",
                "Unix time every credential source was last read successfully",
            )?,
            failures: IntGaugeVec::new(
                Opts::new(
                    "sidecar_credential_load_failures",
                    "1 for each credential or model that failed to decrypt or parse (names only)",
                ),
                &["kind", "name"],
            )?,
            scrape: Mutex::new(()),
        })
    }
}

impl Collector for CacheCollector {
    fn desc(&self) -> Vec<&Desc> {
        let mut descs = self.loaded.desc();
        descs.extend(self.age.desc());
        descs.extend(self.last_success.desc());
        descs.extend(self.failures.desc());
        descs
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let _scrape = self.scrape.lock().unwrap_or_else(|e| e.into_inner());
        let snapshot = self.cache.snapshot();
        let count = |n: usize| n as i64;
        self.loaded
            .with_label_values(&["credential"])
            .set(count(snapshot.credentials.len()));
        self.loaded
            .with_label_values(&["model"])
            .set(count(snapshot.models.len()));
        let age = self.cache.age();
        self.age.set(age.as_secs_f64());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        self.last_success.set(now.saturating_sub(age).as_secs_f64());
        self.failures.reset();
        for name in snapshot.credential_failures.keys() {
            self.failures
                .with_label_values(&["credential", name])
                .set(1);
        }
        for name in snapshot.model_failures.keys() {
            self.failures.with_label_values(&["model", name]).set(1);
        }
        let mut families = self.loaded.collect();
        families.extend(self.age.collect());
        families.extend(self.last_success.collect());
        families.extend(self.failures.collect());
        families
    }
}
