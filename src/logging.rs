//! Log setup: `log.level` from the config, overridden by `RUST_LOG` when set.
//!
//! Pingora's own TRACE level prints raw upstream request bytes, injected credential included,
//! so TRACE records from `pingora*` targets are always dropped, whatever the level asked for.
//! Everything the sidecar logs itself names credentials, never their values.

use log::{LevelFilter, Log, Metadata, Record};

/// Wraps the real logger and drops the records that could carry secrets.
struct SecretSafeLogger {
    inner: env_logger::Logger,
}

/// Whether a record may be written at all.
fn allowed(metadata: &Metadata<'_>) -> bool {
    !(metadata.level() == log::Level::Trace && metadata.target().starts_with("pingora"))
}

impl Log for SecretSafeLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        allowed(metadata) && self.inner.enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        if allowed(record.metadata()) {
            self.inner.log(record);
        }
    }

    fn flush(&self) {
        self.inner.flush();
    }
}

/// Installs the logger (stderr, millisecond timestamps). Safe to call more than once; only the
/// first call takes effect.
pub fn init(level: LevelFilter) {
    let mut builder = env_logger::Builder::new();
    builder.filter_level(level).format_timestamp_millis();
    if let Ok(spec) = std::env::var("RUST_LOG") {
        builder.parse_filters(&spec);
    }
    let inner = builder.build();
    let max = inner.filter();
    if log::set_boxed_logger(Box::new(SecretSafeLogger { inner })).is_ok() {
        log::set_max_level(max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pingora_trace_is_never_allowed() {
        let meta = |level, target| Metadata::builder().level(level).target(target).build();
        assert!(!allowed(&meta(
            log::Level::Trace,
            "pingora_core::protocols::http::v1::client"
        )));
        assert!(allowed(&meta(
            log::Level::Debug,
            "pingora_core::protocols::http::v1::client"
        )));
        assert!(allowed(&meta(log::Level::Trace, "sidecar::proxy")));
    }
}
