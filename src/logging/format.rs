//! The two line formats: text (`[ts LEVEL target] message key=value …`) and JSON (one object
//! per line). Fields are the event's `tracing` fields; both formats carry the same data.
//!
//! A `tracing` event hands its fields to a visitor in declaration order, the message last
//! (`info!(route = …, "request")`), so the text visitor writes the message and the fields into
//! two buffers that the line puts together. `log` records bridged by tracing-log carry their
//! origin as `log.target`, `log.file`, … fields: those are not written (the target is the
//! line's own).

use std::fmt::{self, Debug, Write as _};
use std::io::{self, Write};

use serde_json::{Map, Value as Json};
use tracing::field::{Field, Visit};
use tracing::Level;

/// The level as `{:<5}` writes it.
pub fn padded_level(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARN ",
        Level::INFO => "INFO ",
        Level::DEBUG => "DEBUG",
        Level::TRACE => "TRACE",
    }
}

/// Whether a field is tracing-log's record of where a `log` record came from.
fn is_log_origin(field: &Field) -> bool {
    field.name().starts_with("log.")
}

/// Collects a text line's message and ` key=value` fields. The access line is written for every
/// request, so it is written byte by byte where it can be: names and borrowed strings are copied
/// as they are and integers with `itoa`, not through `fmt`. Values with anything but
/// `[A-Za-z0-9-_.:/[]@]` are quoted (Rust's string escapes).
pub struct TextFields<'a> {
    /// The message, as written.
    pub message: &'a mut Vec<u8>,
    /// ` key=value` for each other field.
    pub fields: &'a mut Vec<u8>,
    /// For values that only `Debug`/`Display` can write (reused, no allocation once grown).
    pub scratch: &'a mut String,
    /// Whether the event is a bridged `log` record (whose `log.*` fields are left out): only
    /// those are checked, the access line's 17 fields are not.
    pub bridged: bool,
}

impl TextFields<'_> {
    /// Writes ` key=` and returns true, unless the field is not written.
    #[inline]
    fn key(&mut self, field: &Field) -> bool {
        if self.bridged && is_log_origin(field) {
            return false;
        }
        self.fields.push(b' ');
        self.fields.extend_from_slice(field.name().as_bytes());
        self.fields.push(b'=');
        true
    }
}

impl Visit for TextFields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.extend_from_slice(value.as_bytes());
        } else if self.key(field) {
            write_text_value(self.fields, value);
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.key(field) {
            self.fields
                .extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if self.key(field) {
            self.fields
                .extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.key(field) {
            self.fields
                .extend_from_slice(if value { b"true" } else { b"false" });
        }
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if self.key(field) {
            let _ = write!(self.fields, "{}", Json::from(value));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        if field.name() == "message" {
            // `format_args!` messages: their `Debug` is their `Display`.
            let _ = write!(self.message, "{value:?}");
        } else if self.key(field) {
            self.scratch.clear();
            let _ = write!(self.scratch, "{value:?}");
            write_text_value(self.fields, self.scratch);
        }
    }
}

fn write_text_value(out: &mut Vec<u8>, value: &str) {
    if is_bare(value) {
        out.extend_from_slice(value.as_bytes());
    } else {
        let _ = write!(out, "{value:?}");
    }
}

/// Whether a text value can be written without quotes.
fn is_bare(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(b, b'-' | b'_' | b'.' | b':' | b'/' | b'[' | b']' | b'@')
        })
}

/// `[ts LEVEL target] message fields` and a newline, appended to `out`.
pub fn text_line(
    out: &mut Vec<u8>,
    ts: &dyn fmt::Display,
    level: &Level,
    target: &str,
    message: &[u8],
    fields: &[u8],
) -> io::Result<()> {
    write!(out, "[{ts} ")?;
    out.extend_from_slice(padded_level(level).as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b"] ");
    out.extend_from_slice(message);
    out.extend_from_slice(fields);
    out.push(b'\n');
    Ok(())
}

/// Collects a JSON line's members: the message and each field (numbers and booleans kept as
/// such).
#[derive(Default)]
pub struct JsonFields {
    /// The message.
    pub message: String,
    /// Every other field.
    pub fields: Map<String, Json>,
}

impl JsonFields {
    fn insert(&mut self, field: &Field, value: Json) {
        if !is_log_origin(field) {
            self.fields.insert(field.name().into(), value);
        }
    }
}

impl Visit for JsonFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.insert(field, value.into());
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.insert(field, value.into());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.insert(field, value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.insert(field, value.into());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.insert(field, value.into());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            self.insert(field, format!("{value:?}").into());
        }
    }
}

/// `{"ts":…,"level":…,"target":…,"message":…, fields…}`.
pub fn json_line(ts: &str, level: &Level, target: &str, collected: JsonFields) -> String {
    let mut object = collected.fields;
    object.insert("ts".into(), ts.into());
    object.insert("level".into(), level.as_str().into());
    object.insert("target".into(), target.into());
    object.insert("message".into(), collected.message.into());
    Json::Object(object).to_string()
}
