//! Log setup: `log.level` from the config, overridden by `RUST_LOG` when set; lines on stderr as
//! text (`log.format: text`) or one JSON object per line (`log.format: json`).
//!
//! The sidecar logs with `tracing`; a `tracing-subscriber` registry carries one layer of ours
//! (`layer`) that writes the lines. Pingora and tokio-postgres log with `log`: tracing-log's
//! bridge turns their records into events for the same layer. Structured fields stay fields
//! (the access line is one `access` event with `route`, `status`, … fields), so both formats
//! carry the same data: text writes them as `key=value`, JSON as members of the line's object.
//!
//! Other crates' DEBUG and TRACE events are always dropped, whatever the level asked for:
//! Pingora's print raw request heads (a client's `Authorization` and token included), upstream
//! request bytes (the injected credential) and response bodies; tokio-postgres prints statement
//! parameters; h2 (through `tracing`) prints frames. Their INFO and above are kept, with anything
//! after `buf:` (the raw head Pingora attaches to a parse error) replaced by
//! `[request bytes redacted]`. Everything the sidecar logs itself names credentials, never their
//! values.
//!
//! No span is opened per request for logging: the request's trace span, when the OTLP exporter
//! is on, is an OpenTelemetry span kept in the request's state (see [`crate::otel`]).
//!
//! The access record is the exception: written for every request, it is formatted straight from
//! a list of fields ([`request_record`]), in the same formats and under the same filter, not as a
//! `tracing` event.
//!
//! Lines are formatted by the thread that logs and written by a writer thread, many per write
//! (`sink`): the access line is written for every request, and a request must not wait for
//! stderr.

mod format;
mod layer;
mod repeats;
pub mod request_record;
mod sink;
pub mod throttle;

use std::sync::Arc;

use arc_swap::ArcSwap;
use log::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;

use crate::config::LogFormat;
use layer::LineLayer;
use sink::Sink;

/// The one sink every line goes through (its writer thread starts with [`init`]).
static SINK: Sink = Sink::new();

/// The target of the access records (one per request).
pub const ACCESS_TARGET: &str = "access";

/// The line format, set once by [`init`] (access records are written only after it).
static FORMAT: std::sync::OnceLock<LogFormat> = std::sync::OnceLock::new();

/// The level filter in force: from `log.level` / `RUST_LOG` at start, replaced by
/// [`set_level`] (the admin's `PUT /log-level`). Read when a callsite registers, and once per
/// `log` record.
static FILTER: std::sync::LazyLock<ArcSwap<env_filter::Filter>> =
    std::sync::LazyLock::new(|| ArcSwap::from_pointee(env_filter::Builder::new().build()));

/// The most verbose `log` record that can be written: other crates' DEBUG and TRACE never are,
/// and every `log` record is another crate's, so their macros stop at INFO for nothing.
fn log_max(level: LevelFilter) -> LevelFilter {
    level.min(LevelFilter::Info)
}

fn write_to_sink(line: &[u8]) {
    SINK.push(line);
}

/// Installs the logger on stderr and, when `threaded`, starts its writer thread (not before a
/// fork: `-d`). Safe to call more than once; only the first call takes effect.
pub fn init(level: LevelFilter, format: LogFormat, threaded: bool) {
    let mut filter = env_filter::Builder::new();
    filter.filter_level(level);
    if let Ok(spec) = std::env::var("RUST_LOG") {
        filter.parse(&spec);
    }
    let filter = filter.build();
    let max = filter.filter();
    FILTER.store(Arc::new(filter));
    let subscriber = tracing_subscriber::registry().with(LineLayer {
        format,
        out: write_to_sink,
    });
    if tracing::subscriber::set_global_default(subscriber).is_err() {
        return;
    }
    let _ = FORMAT.set(format);
    request_record::follow_filter();
    let _ = tracing_log::LogTracer::builder()
        .with_max_level(log_max(max))
        .init();
    if threaded {
        let _ = std::thread::Builder::new()
            .name("log writer".into())
            .spawn(|| SINK.run_writer());
    }
}

/// Replaces the level in force (`RUST_LOG`'s directives included) with `level`, for every
/// target, until the next restart. Other crates' DEBUG and TRACE records stay dropped.
pub fn set_level(level: LevelFilter) {
    FILTER.store(Arc::new(
        env_filter::Builder::new().filter_level(level).build(),
    ));
    log::set_max_level(log_max(level));
    request_record::follow_filter();
    // Every callsite is asked again (see `layer`), and tracing's max level follows.
    tracing::callsite::rebuild_interest_cache();
}

/// The most verbose level in force.
pub fn level() -> LevelFilter {
    FILTER.load().filter()
}

/// Writes every buffered line now: call before the process exits.
pub fn flush() {
    SINK.flush();
}

#[cfg(test)]
mod tests;
