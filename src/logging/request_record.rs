//! The access record: one line per request (target `access`, level INFO), in the same text and
//! JSON formats as every other line, written straight into the sink rather than as a `tracing`
//! event.
//!
//! Why not an event: it is written for every request, and its 17 fields went through tracing's
//! field visitor one dynamic call at a time, ~5,200 instructions per request (callgrind; see
//! benches/README.md). Formatted here from a plain list of fields, it costs ~3,300, timestamp
//! included. The same filter applies: the record is written when `access` is enabled at INFO
//! (`log.level`, `RUST_LOG`, `PUT /log-level`), decided when the filter changes, not per request.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};

use tracing::Level;

use super::format::{text_line, timestamp, write_text_value};
use super::ACCESS_TARGET;
use crate::config::LogFormat;

/// One field's value.
#[derive(Debug, Clone, Copy)]
pub enum Value<'a> {
    /// Text: written bare or quoted in text lines, a JSON string.
    Str(&'a str),
    /// A number.
    Int(i64),
    /// `true` or `false`.
    Bool(bool),
}

/// An access record: its fields, in the order they are written.
pub type Fields<'a> = [(&'static str, Value<'a>)];

/// Whether access records are written (the filter in force enables `access` at INFO).
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Decides again, from the filter in force, whether records are written (at start and when the
/// level changes).
pub(super) fn follow_filter() {
    let enabled = super::layer::wanted(&Level::INFO, ACCESS_TARGET);
    ENABLED.store(enabled, Ordering::Relaxed);
}

/// The message every access line carries.
const MESSAGE: &[u8] = b"request";

/// One thread's line buffers (no allocation per record once grown).
#[derive(Default)]
struct Buffers {
    line: Vec<u8>,
    fields: Vec<u8>,
}

thread_local! {
    static BUFFERS: RefCell<Buffers> = RefCell::new(Buffers::default());
}

/// Writes one access record, when records are enabled and logging has started.
pub fn write(fields: &Fields<'_>) {
    if !ENABLED.load(Ordering::Relaxed) {
        return;
    }
    let Some(format) = super::FORMAT.get() else {
        return;
    };
    let _ = BUFFERS.try_with(|buffers| {
        let Ok(mut buffers) = buffers.try_borrow_mut() else {
            return;
        };
        let Buffers {
            line,
            fields: scratch,
        } = &mut *buffers;
        line.clear();
        let ts = timestamp();
        let ts = ts.as_str();
        match format {
            LogFormat::Text => {
                scratch.clear();
                text_fields(scratch, fields);
                text_line(line, ts, &Level::INFO, ACCESS_TARGET, MESSAGE, scratch);
            }
            LogFormat::Json => json_line(line, ts, fields),
        }
        super::write_to_sink(line);
    });
}

/// ` key=value` for each field, as the text format writes fields.
fn text_fields(out: &mut Vec<u8>, fields: &Fields<'_>) {
    for (name, value) in fields {
        out.push(b' ');
        out.extend_from_slice(name.as_bytes());
        out.push(b'=');
        match value {
            Value::Str(text) => write_text_value(out, text),
            Value::Int(n) => out.extend_from_slice(itoa::Buffer::new().format(*n).as_bytes()),
            Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        }
    }
}

/// `{"ts":…,"level":"INFO","target":"access","message":"request",fields…}` and a newline.
fn json_line(out: &mut Vec<u8>, ts: &str, fields: &Fields<'_>) {
    out.extend_from_slice(b"{\"ts\":\"");
    out.extend_from_slice(ts.as_bytes());
    out.extend_from_slice(b"\",\"level\":\"INFO\",\"target\":\"");
    out.extend_from_slice(ACCESS_TARGET.as_bytes());
    out.extend_from_slice(b"\",\"message\":\"request\"");
    for (name, value) in fields {
        out.extend_from_slice(b",\"");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\":");
        match value {
            // serde_json escapes quotes, backslashes and control characters.
            Value::Str(text) => {
                let _ = serde_json::to_writer(&mut *out, text);
            }
            Value::Int(n) => out.extend_from_slice(itoa::Buffer::new().format(*n).as_bytes()),
            Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        }
    }
    out.extend_from_slice(b"}\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIELDS: &Fields<'static> = &[
        ("route", Value::Str("openai")),
        ("status", Value::Int(200)),
        ("ttfb_ms", Value::Int(-1)),
        ("path", Value::Str("/a b\"\n")),
        ("reused", Value::Bool(true)),
    ];

    #[test]
    fn a_text_record_is_the_text_format_s_line() {
        let mut fields = Vec::new();
        text_fields(&mut fields, FIELDS);
        let mut line = Vec::new();
        text_line(
            &mut line,
            "2026-12-04T03:08:42.123Z",
            &Level::INFO,
            ACCESS_TARGET,
            MESSAGE,
            &fields,
        );
        assert_eq!(
            String::from_utf8(line).expect("utf-8"),
            "[2026-12-04T03:08:42.123Z INFO  access] request route=openai status=200 \
             ttfb_ms=-1 path=\"/a b\\\"\\n\" reused=true\n"
        );
    }

    #[test]
    fn a_json_record_is_one_object_with_typed_members() {
        let mut line = Vec::new();
        json_line(&mut line, "2026-12-04T03:08:42.123Z", FIELDS);
        assert_eq!(line.last(), Some(&b'\n'));
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        let json: serde_json::Value = serde_json::from_slice(&line).expect("json");
        assert_eq!(json["ts"], "2026-12-04T03:08:42.123Z");
        assert_eq!(json["level"], "INFO");
        assert_eq!(json["target"], "access");
        assert_eq!(json["message"], "request");
        assert_eq!(json["route"], "openai");
        assert_eq!(json["status"], 200);
        assert_eq!(json["ttfb_ms"], -1);
        assert_eq!(json["path"], "/a b\"\n");
        assert_eq!(json["reused"], true);
    }
}
