//! The two line formats: text (`[ts LEVEL target] message key=value …`) and JSON (one object
//! per line). Fields are the event's `tracing` fields; both formats carry the same data.
//!
//! A `tracing` event hands its fields to a visitor in declaration order, the message last
//! (`info!(route = …, "request")`), so the text visitor writes the message and the fields into
//! two buffers that the line puts together. `log` records bridged by tracing-log carry their
//! origin as `log.target`, `log.file`, … fields: those are not written (the target is the
//! line's own).
//!
//! A text line is one line whatever its values hold: the message and the target are written
//! with control characters (C0 with `\n` and `\r`, DEL, C1) and the Unicode line and paragraph
//! separators escaped ([`write_escaped`]), field values are bare or quoted with Rust's string
//! escapes (which escape the same characters), so a value from outside (a path, a header, a
//! peer's error text) cannot start a forged line. JSON lines are escaped by `serde_json`
//! (quotes, backslashes, C0).

use std::cell::RefCell;
use std::fmt::{Debug, Write as _};
use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
            write_escaped(self.message, value);
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
            self.scratch.clear();
            let _ = write!(self.scratch, "{value:?}");
            write_escaped(self.message, self.scratch);
        } else if self.key(field) {
            self.scratch.clear();
            let _ = write!(self.scratch, "{value:?}");
            write_text_value(self.fields, self.scratch);
        }
    }
}

/// Appends `text` with every character that could end a line or forge one escaped as Rust
/// writes it (`\n`, `\r`, `\t`, `\u{1b}`, `\u{2028}`): control characters (C0, DEL, C1) and
/// the Unicode line and paragraph separators. Text without them (nearly every message) is
/// copied as it is after one pass over its bytes.
pub fn write_escaped(out: &mut Vec<u8>, text: &str) {
    // C0 and DEL are single bytes; C1 (U+0080–U+009F) starts with 0xC2, U+2028/9 with 0xE2.
    let suspect = |b: u8| b < 0x20 || b == 0x7f || b == 0xc2 || b == 0xe2;
    if !text.bytes().any(suspect) {
        out.extend_from_slice(text.as_bytes());
        return;
    }
    let mut utf8 = [0u8; 4];
    for c in text.chars() {
        if breaks_lines(c) {
            let _ = write!(out, "{}", c.escape_default());
        } else {
            out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
        }
    }
}

/// Whether a character is escaped in text lines (see [`write_escaped`]).
fn breaks_lines(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')
}

/// A field's value as text lines write it: bare, or quoted with Rust's string escapes.
pub fn write_text_value(out: &mut Vec<u8>, value: &str) {
    if is_bare(value) {
        out.extend_from_slice(value.as_bytes());
    } else {
        let _ = write!(out, "{value:?}");
    }
}

/// Whether a text value can be written without quotes: one table look-up per byte (the access
/// line checks ~150 bytes of values per request).
fn is_bare(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| BARE[usize::from(b)])
}

/// The bytes a value may have and be written without quotes: `[A-Za-z0-9-_.:/[]@]`.
static BARE: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || matches!(c, b'-' | b'_' | b'.' | b':' | b'/' | b'[' | b']' | b'@');
        b += 1;
    }
    table
};

/// `[ts LEVEL target] message fields` and a newline, appended to `out`.
pub fn text_line(
    out: &mut Vec<u8>,
    ts: &str,
    level: &Level,
    target: &str,
    message: &[u8],
    fields: &[u8],
) {
    out.push(b'[');
    out.extend_from_slice(ts.as_bytes());
    out.push(b' ');
    out.extend_from_slice(padded_level(level).as_bytes());
    out.push(b' ');
    write_escaped(out, target);
    out.extend_from_slice(b"] ");
    out.extend_from_slice(message);
    out.extend_from_slice(fields);
    out.push(b'\n');
}

/// A line's timestamp, RFC 3339 in UTC with milliseconds (`2026-12-04T03:08:42.123Z`, as
/// `humantime` writes it). The date and time are formatted once per second per thread and only
/// the milliseconds after that: a calendar conversion per line cost ~600 instructions.
#[derive(Default)]
pub struct Timestamps {
    /// The second `text` was formatted for.
    second: u64,
    text: String,
}

/// Where the milliseconds are in a timestamp of a four-digit year.
const MILLIS_AT: std::ops::Range<usize> = 20..23;

impl Timestamps {
    /// `now` as text.
    pub fn format(&mut self, now: SystemTime) -> &str {
        let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        let (second, millis) = (since.as_secs(), since.subsec_millis());
        if self.text.is_empty() || second != self.second {
            self.text.clear();
            let whole = UNIX_EPOCH + Duration::from_secs(second);
            let _ = write!(self.text, "{}", humantime::format_rfc3339_millis(whole));
            self.second = second;
        }
        if self.text.len() == MILLIS_AT.end + 1 {
            let digits = [
                b'0' + (millis / 100) as u8,
                b'0' + (millis / 10 % 10) as u8,
                b'0' + (millis % 10) as u8,
            ];
            let digits = std::str::from_utf8(&digits).unwrap_or("000");
            self.text.replace_range(MILLIS_AT, digits);
        } else {
            // A year past 9999: formatted whole, every time.
            self.text.clear();
            let _ = write!(self.text, "{}", humantime::format_rfc3339_millis(now));
        }
        &self.text
    }
}

/// A formatted timestamp, copied out of the thread's [`Timestamps`].
pub struct Stamp {
    bytes: [u8; 32],
    len: usize,
}

impl Stamp {
    fn copy_of(text: &str) -> Stamp {
        let mut bytes = [0u8; 32];
        let len = text.len().min(bytes.len());
        bytes[..len].copy_from_slice(&text.as_bytes()[..len]);
        Stamp { bytes, len }
    }

    /// The timestamp as text.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or("-")
    }
}

thread_local! {
    static TIMESTAMPS: RefCell<Timestamps> = RefCell::new(Timestamps::default());
}

/// The current time as a line's timestamp (see [`Timestamps`]).
pub fn timestamp() -> Stamp {
    let now = SystemTime::now();
    TIMESTAMPS
        .try_with(|t| Some(Stamp::copy_of(t.try_borrow_mut().ok()?.format(now))))
        .ok()
        .flatten()
        .unwrap_or_else(|| Stamp::copy_of(&humantime::format_rfc3339_millis(now).to_string()))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_values_are_the_documented_bytes() {
        let documented = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:/[]@";
        for b in 0..=255u8 {
            assert_eq!(
                BARE[usize::from(b)],
                documented.as_bytes().contains(&b),
                "byte {b}"
            );
        }
        assert!(is_bare("127.0.0.1:443") && is_bare("/v1/chat"));
        assert!(!is_bare("") && !is_bare("a b") && !is_bare("a\"b") && !is_bare("é"));
    }

    #[test]
    fn values_and_messages_cannot_break_a_line() {
        let forged = "x\n[2026-12-04T03:08:42.123Z INFO  access] forged\r\u{0}\u{1b}\u{7f}\u{85}\u{2028}\u{2029}é";
        let mut message = Vec::new();
        write_escaped(&mut message, forged);
        let mut value = Vec::new();
        write_text_value(&mut value, forged);
        for written in [&message, &value] {
            let text = String::from_utf8(written.clone()).expect("utf-8");
            assert!(!text.chars().any(breaks_lines), "{text:?}");
            assert!(text.contains("\\n[2026") && text.contains('é'), "{text}");
        }
        let mut clean = Vec::new();
        write_escaped(&mut clean, "route openai: 200 ok é");
        assert_eq!(clean, "route openai: 200 ok é".as_bytes());
    }

    #[test]
    fn cached_timestamps_read_as_humantime_writes_them() {
        let mut timestamps = Timestamps::default();
        let start = UNIX_EPOCH + Duration::from_millis(1_796_354_922_007);
        // Within one second (the cached date and time), across seconds and back again.
        for offset_ms in [0, 5, 120, 999, 1_000, 1_001, 61_337, 86_400_000, 3] {
            let at = start + Duration::from_millis(offset_ms);
            let expected = humantime::format_rfc3339_millis(at).to_string();
            assert_eq!(timestamps.format(at), expected, "{offset_ms} ms later");
        }
        assert_eq!(timestamp().as_str().len(), "2026-12-04T03:08:42.123Z".len());
    }
}
