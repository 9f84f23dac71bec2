//! Log setup: `log.level` from the config, overridden by `RUST_LOG` when set; lines on stderr as
//! text (`log.format: text`) or one JSON object per line (`log.format: json`).
//!
//! Structured fields travel as `log` key-values (the access line is one `access` record with
//! `route`, `status`, … fields), so both formats carry the same data: text writes them as
//! `key=value`, JSON as members of the line's object.
//!
//! Other crates' DEBUG and TRACE records are always dropped, whatever the level asked for:
//! Pingora's print raw request heads (a client's `Authorization` and token included), upstream
//! request bytes (the injected credential) and response bodies; tokio-postgres prints statement
//! parameters. Their INFO and above are kept, with anything after `buf:` (the raw head Pingora
//! attaches to a parse error) replaced by `[request bytes redacted]`. Everything the sidecar
//! logs itself names credentials, never their values.
//!
//! Lines are formatted by the thread that logs and written by a writer thread, many per write
//! ([`sink`]): the access line is written for every request, and a request must not wait for
//! stderr.

mod format;
mod sink;

use std::cell::RefCell;
use std::io::Write;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use log::{LevelFilter, Log, Metadata, Record};

use crate::config::LogFormat;
use format::{json_line, write_text};
use sink::Sink;

/// The one sink every line goes through (its writer thread starts with [`init`]).
static SINK: Sink = Sink::new();

/// The target of the access records (one per request).
pub const ACCESS_TARGET: &str = "access";

/// Filters records (the level asked for, and the secret rules below), formats them and hands
/// the line to the [`Sink`].
struct SecretSafeLogger {
    format: LogFormat,
}

/// The level filter in force: from `log.level` / `RUST_LOG` at start, replaced by
/// [`set_level`] (the admin's `PUT /log-level`). One atomic load per log call.
static FILTER: std::sync::LazyLock<ArcSwap<env_filter::Filter>> =
    std::sync::LazyLock::new(|| ArcSwap::from_pointee(env_filter::Builder::new().build()));

/// Whether a record comes from another crate than the sidecar.
fn foreign(metadata: &Metadata<'_>) -> bool {
    let target = metadata.target();
    !(target == "sidecar" || target.starts_with("sidecar::") || target == ACCESS_TARGET)
}

/// Whether a record may be written at all.
fn allowed(metadata: &Metadata<'_>) -> bool {
    metadata.level() <= log::Level::Info || !foreign(metadata)
}

/// Where raw request bytes start in another crate's message, if anywhere.
const RAW_BYTES_MARKER: &str = "buf:";

/// Another crate's message with the raw request bytes cut off, when it carries any.
fn redacted(message: &str) -> Option<String> {
    let at = message.find(RAW_BYTES_MARKER)?;
    Some(format!("{}[request bytes redacted]", &message[..at]))
}

thread_local! {
    /// Each thread formats its lines here (no allocation per line once it has grown).
    static LINE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

impl SecretSafeLogger {
    fn write(&self, record: &Record<'_>) {
        let ts = humantime::format_rfc3339_millis(SystemTime::now());
        LINE.with(|line| {
            let mut line = line.borrow_mut();
            line.clear();
            let written = match self.format {
                LogFormat::Text => write_text(&mut line, &ts, record),
                LogFormat::Json => writeln!(line, "{}", json_line(&ts.to_string(), record)),
            };
            if written.is_ok() {
                SINK.push(&line);
            }
        });
    }
}

impl Log for SecretSafeLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        allowed(metadata) && FILTER.load().enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        if !allowed(record.metadata()) || !FILTER.load().matches(record) {
            return;
        }
        if !foreign(record.metadata()) {
            return self.write(record);
        }
        // Formatted once: checked for raw bytes, then written as it is or cut.
        let message = record.args().to_string();
        let message = redacted(&message).unwrap_or(message);
        self.write(&record.to_builder().args(format_args!("{message}")).build());
    }

    fn flush(&self) {
        SINK.flush();
    }
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
    if log::set_boxed_logger(Box::new(SecretSafeLogger { format })).is_ok() {
        FILTER.store(std::sync::Arc::new(filter));
        log::set_max_level(max);
        if threaded {
            let _ = std::thread::Builder::new()
                .name("log writer".into())
                .spawn(|| SINK.run_writer());
        }
    }
}

/// Replaces the level in force (`RUST_LOG`'s directives included) with `level`, for every
/// target, until the next restart. Other crates' DEBUG and TRACE records stay dropped.
pub fn set_level(level: LevelFilter) {
    FILTER.store(std::sync::Arc::new(
        env_filter::Builder::new().filter_level(level).build(),
    ));
    log::set_max_level(level);
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
mod tests {
    use super::*;

    #[test]
    fn other_crates_debug_and_trace_are_never_allowed() {
        let meta = |level, target| Metadata::builder().level(level).target(target).build();
        let pingora = "pingora_core::protocols::http::v1::server";
        assert!(!allowed(&meta(log::Level::Trace, pingora)));
        assert!(!allowed(&meta(log::Level::Debug, pingora)));
        assert!(!allowed(&meta(log::Level::Debug, "tokio_postgres::query")));
        assert!(allowed(&meta(log::Level::Info, pingora)));
        assert!(allowed(&meta(log::Level::Error, pingora)));
        assert!(allowed(&meta(log::Level::Trace, "sidecar::proxy")));
        assert!(allowed(&meta(log::Level::Info, ACCESS_TARGET)));
    }

    #[test]
    fn raw_request_bytes_in_other_crates_messages_are_cut_off() {
        let message = "Fail to proxy: Downstream InvalidHTTPHeader context: buf: \
                       GET / HTTP/1.1\\r\\nAuthorization: Bearer sk-secret";
        let cut = redacted(message).expect("redacted");
        assert_eq!(
            cut,
            "Fail to proxy: Downstream InvalidHTTPHeader context: [request bytes redacted]"
        );
        assert_eq!(redacted("Fail to proxy: connection refused"), None);
    }
}
