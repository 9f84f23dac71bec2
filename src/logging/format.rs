//! The two line formats: text (`[ts LEVEL target] message key=value …`) and JSON (one object
//! per line). Fields are the record's `log` key-values; both formats carry the same data.

use std::fmt::Display;
use std::io::{self, Write};

use log::kv::{Key, Value, VisitSource};
use log::Record;
use serde_json::{Map, Value as Json};

/// `[ts LEVEL target] message key=value …` and a newline, appended to `out`. The access line is
/// written for every request, so it is written byte by byte where it can be: names, static
/// messages and borrowed strings are copied as they are and integers with `itoa`, not through
/// `fmt`. Values with anything but `[A-Za-z0-9-_.:/[]@]` are quoted (Rust's string escapes).
pub fn write_text(out: &mut Vec<u8>, ts: &dyn Display, record: &Record<'_>) -> io::Result<()> {
    write!(out, "[{ts} ")?;
    out.extend_from_slice(padded_level(record.level()).as_bytes());
    out.push(b' ');
    out.extend_from_slice(record.target().as_bytes());
    out.extend_from_slice(b"] ");
    match record.args().as_str() {
        Some(message) => out.extend_from_slice(message.as_bytes()),
        None => out.write_fmt(*record.args())?,
    }
    let mut fields = TextFields { out, failed: None };
    let _ = record.key_values().visit(&mut fields);
    if let Some(error) = fields.failed {
        return Err(error);
    }
    out.push(b'\n');
    Ok(())
}

/// The level as `{:<5}` writes it.
fn padded_level(level: log::Level) -> &'static str {
    match level {
        log::Level::Error => "ERROR",
        log::Level::Warn => "WARN ",
        log::Level::Info => "INFO ",
        log::Level::Debug => "DEBUG",
        log::Level::Trace => "TRACE",
    }
}

/// Appends each key-value as ` key=value`; keeps the first write error.
struct TextFields<'a> {
    out: &'a mut Vec<u8>,
    failed: Option<io::Error>,
}

impl<'kvs> VisitSource<'kvs> for TextFields<'_> {
    fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), log::kv::Error> {
        let out = &mut *self.out;
        out.push(b' ');
        out.extend_from_slice(key.as_str().as_bytes());
        out.push(b'=');
        let written = if let Some(n) = value.to_u64() {
            out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
            Ok(())
        } else if let Some(n) = value.to_i64() {
            out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
            Ok(())
        } else if let Some(b) = value.to_bool() {
            out.extend_from_slice(if b { b"true" } else { b"false" });
            Ok(())
        } else if let Some(f) = value.to_f64() {
            write!(out, "{}", Json::from(f))
        } else if let Some(s) = value.to_borrowed_str() {
            write_text_value(out, s)
        } else {
            write_text_value(out, &value.to_string())
        };
        written.map_err(|error| {
            self.failed = Some(error);
            log::kv::Error::msg("log line not written")
        })
    }
}

fn write_text_value(out: &mut Vec<u8>, value: &str) -> io::Result<()> {
    if is_bare(value) {
        out.extend_from_slice(value.as_bytes());
        Ok(())
    } else {
        write!(out, "{value:?}")
    }
}

/// `{"ts":…,"level":…,"target":…,"message":…, fields…}`.
pub fn json_line(ts: &str, record: &Record<'_>) -> String {
    let mut object = Map::new();
    object.insert("ts".into(), ts.into());
    object.insert("level".into(), record.level().as_str().into());
    object.insert("target".into(), record.target().into());
    object.insert("message".into(), record.args().to_string().into());
    for (key, value) in fields(record) {
        object.insert(key, value);
    }
    Json::Object(object).to_string()
}

/// Whether a text value can be written without quotes.
fn is_bare(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(b, b'-' | b'_' | b'.' | b':' | b'/' | b'[' | b']' | b'@')
        })
}

/// The record's key-values as JSON values (numbers and booleans kept as such).
fn fields(record: &Record<'_>) -> Vec<(String, Json)> {
    struct Collect(Vec<(String, Json)>);
    impl<'kvs> VisitSource<'kvs> for Collect {
        fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), log::kv::Error> {
            let json = if let Some(n) = value.to_u64() {
                Json::from(n)
            } else if let Some(n) = value.to_i64() {
                Json::from(n)
            } else if let Some(b) = value.to_bool() {
                Json::from(b)
            } else if let Some(f) = value.to_f64() {
                Json::from(f)
            } else {
                Json::from(value.to_string())
            };
            self.0.push((key.as_str().to_string(), json));
            Ok(())
        }
    }
    let mut collect = Collect(Vec::new());
    let _ = record.key_values().visit(&mut collect);
    collect.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use log::kv::Value;

    #[test]
    fn both_formats_carry_the_fields() {
        let kvs: [(&str, Value<'_>); 4] = [
            ("route", Value::from("openai")),
            ("status", Value::from(200u64)),
            ("path", Value::from("/a b")),
            ("reused", Value::from(true)),
        ];
        let record = Record::builder()
            .target("access")
            .level(log::Level::Info)
            .args(format_args!("request"))
            .key_values(&kvs)
            .build();
        let mut text = Vec::new();
        write_text(&mut text, &"T", &record).expect("written");
        assert_eq!(
            String::from_utf8(text).expect("utf-8"),
            "[T INFO  access] request route=openai status=200 path=\"/a b\" reused=true\n"
        );
        let json: Json = serde_json::from_str(&json_line("T", &record)).expect("json");
        assert_eq!(json["route"], "openai");
        assert_eq!(json["status"], 200);
        assert_eq!(json["reused"], true);
        assert_eq!(json["message"], "request");
        assert_eq!(json["level"], "INFO");
    }
}
