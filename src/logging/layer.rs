//! The `tracing-subscriber` layer that writes log lines: it filters events (the level in force
//! and the secret rules), holds back other crates' repetitive records
//! ([`super::repeats`]), formats them ([`format`](super::format)) and hands each line
//! to the [`Sink`](super::sink::Sink).
//!
//! Filtering costs nothing per event for the sidecar's own callsites: whether a callsite is
//! enabled is decided once, when it registers, from the filter in force, and decided again for
//! every callsite when the level changes ([`super::set_level`] rebuilds tracing's interest
//! cache). `log` records (Pingora, tokio-postgres) all come through tracing-log's few shared
//! callsites, so those are asked per record, by the record's own target: one `ArcSwap` load.

use std::cell::RefCell;

use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_log::{AsLog, AsTrace, NormalizeEvent};
use tracing_subscriber::layer::{Context, Layer};

use super::format::{json_line, text_line, timestamp, JsonFields, TextFields};
use super::repeats::{self, Verdict};
use super::{ACCESS_TARGET, FILTER};
use crate::config::LogFormat;

/// Writes the lines of the events it lets through to `out` (the sink, or a test's buffer).
pub struct LineLayer {
    pub(super) format: LogFormat,
    pub(super) out: fn(&[u8]),
}

/// Whether an event comes from another crate than the sidecar.
fn foreign(target: &str) -> bool {
    !(target == "sidecar" || target.starts_with("sidecar::") || target == ACCESS_TARGET)
}

/// Whether an event may be written at all: other crates' DEBUG and TRACE never are.
pub(super) fn allowed(level: &Level, target: &str) -> bool {
    *level <= Level::INFO || !foreign(target)
}

/// Whether the filter in force (`log.level`, `RUST_LOG`, `PUT /log-level`) lets it through.
pub(super) fn wanted(level: &Level, target: &str) -> bool {
    let metadata = log::Metadata::builder()
        .level(level.as_log())
        .target(target)
        .build();
    FILTER.load().enabled(&metadata)
}

/// tracing-log's callsites, shared by every `log` record of a level (their target is `log`;
/// the record's own is in its fields).
fn is_log_callsite(metadata: &Metadata<'_>) -> bool {
    metadata.target() == "log" && metadata.fields().field("log.target").is_some()
}

/// Where raw request bytes start in another crate's message, if anywhere.
const RAW_BYTES_MARKER: &[u8] = b"buf:";
/// What replaces them.
const REDACTED: &[u8] = b"[request bytes redacted]";

/// Cuts another crate's message at the raw request bytes Pingora attaches to a parse error.
pub(super) fn redact(message: &mut Vec<u8>) {
    if let Some(at) = message
        .windows(RAW_BYTES_MARKER.len())
        .position(|w| w == RAW_BYTES_MARKER)
    {
        message.truncate(at);
        message.extend_from_slice(REDACTED);
    }
}

/// One thread's buffers (no allocation per line once they have grown).
#[derive(Default)]
struct Buffers {
    line: Vec<u8>,
    message: Vec<u8>,
    fields: Vec<u8>,
    scratch: String,
}

thread_local! {
    static BUFFERS: RefCell<Buffers> = RefCell::new(Buffers::default());
}

impl LineLayer {
    fn write(&self, event: &Event<'_>, level: &Level, target: &str, bridged: bool) {
        let ts = timestamp();
        let redacting = foreign(target);
        match self.format {
            LogFormat::Text => {
                // A field's `Debug` that logs would find the buffers in use: that line is lost.
                let _ = BUFFERS.try_with(|buffers| {
                    let Ok(mut buffers) = buffers.try_borrow_mut() else {
                        return;
                    };
                    let Buffers {
                        line,
                        message,
                        fields,
                        scratch,
                    } = &mut *buffers;
                    line.clear();
                    message.clear();
                    fields.clear();
                    event.record(&mut TextFields {
                        message,
                        fields,
                        scratch,
                        bridged,
                    });
                    if redacting {
                        redact(message);
                        match repeats::observe(target, message) {
                            Verdict::Suppress => return,
                            Verdict::Write { suppressed: 0 } => {}
                            Verdict::Write { suppressed } => {
                                fields.extend_from_slice(b" suppressed=");
                                let mut count = itoa::Buffer::new();
                                fields.extend_from_slice(count.format(suppressed).as_bytes());
                            }
                        }
                    }
                    text_line(line, ts.as_str(), level, target, message, fields);
                    (self.out)(line);
                });
            }
            LogFormat::Json => {
                let mut collected = JsonFields::default();
                event.record(&mut collected);
                if redacting {
                    let mut message = std::mem::take(&mut collected.message).into_bytes();
                    redact(&mut message);
                    match repeats::observe(target, &message) {
                        Verdict::Suppress => return,
                        Verdict::Write { suppressed: 0 } => {}
                        Verdict::Write { suppressed } => {
                            collected
                                .fields
                                .insert("suppressed".into(), suppressed.into());
                        }
                    }
                    collected.message = String::from_utf8_lossy(&message).into_owned();
                }
                let mut line = json_line(ts.as_str(), level, target, collected);
                line.push('\n');
                (self.out)(line.as_bytes());
            }
        }
    }
}

impl<S: Subscriber> Layer<S> for LineLayer {
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        if is_log_callsite(metadata) {
            return Interest::sometimes();
        }
        let (level, target) = (metadata.level(), metadata.target());
        if allowed(level, target) && wanted(level, target) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn enabled(&self, metadata: &Metadata<'_>, _ctx: Context<'_, S>) -> bool {
        // Asked per record for `log` records, with their own target (the other callsites were
        // decided when they registered).
        let (level, target) = (metadata.level(), metadata.target());
        allowed(level, target) && wanted(level, target)
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(FILTER.load().filter().as_trace())
    }

    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let normalized = event.normalized_metadata();
        let metadata = normalized.as_ref().unwrap_or_else(|| event.metadata());
        let (level, target) = (metadata.level(), metadata.target());
        // Checked again: a `log` record's own target is only known here.
        if allowed(level, target) {
            self.write(event, level, target, normalized.is_some());
        }
    }
}
