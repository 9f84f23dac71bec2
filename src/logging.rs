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

use std::fmt::Display;
use std::io::{self, Write};

use log::kv::{Key, Value, VisitSource};
use log::{LevelFilter, Log, Metadata, Record};
use serde_json::{Map, Value as Json};

use crate::config::LogFormat;

/// Wraps the real logger and drops the records that could carry secrets.
struct SecretSafeLogger {
    inner: env_logger::Logger,
}

/// The target of the access records (one per request).
pub const ACCESS_TARGET: &str = "access";

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

impl Log for SecretSafeLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        allowed(metadata) && self.inner.enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        if !allowed(record.metadata()) {
            return;
        }
        if !foreign(record.metadata()) {
            return self.inner.log(record);
        }
        match redacted(&record.args().to_string()) {
            None => self.inner.log(record),
            Some(message) => self
                .inner
                .log(&record.to_builder().args(format_args!("{message}")).build()),
        }
    }

    fn flush(&self) {
        self.inner.flush();
    }
}

/// Installs the logger on stderr. Safe to call more than once; only the first call takes effect.
pub fn init(level: LevelFilter, format: LogFormat) {
    let mut builder = env_logger::Builder::new();
    builder.filter_level(level);
    if let Ok(spec) = std::env::var("RUST_LOG") {
        builder.parse_filters(&spec);
    }
    builder.format(move |buf, record| {
        let ts = buf.timestamp_millis();
        match format {
            LogFormat::Text => write_text(buf, &ts, record),
            LogFormat::Json => writeln!(buf, "{}", json_line(&ts.to_string(), record)),
        }
    });
    let inner = builder.build();
    let max = inner.filter();
    if log::set_boxed_logger(Box::new(SecretSafeLogger { inner })).is_ok() {
        log::set_max_level(max);
    }
}

/// `[ts LEVEL target] message key=value …` and a newline, written straight into `out`: the
/// access line is written for every request, so numbers, booleans and borrowed strings are not
/// copied on the way. Values with spaces or quotes are quoted.
fn write_text(out: &mut impl Write, ts: &dyn Display, record: &Record<'_>) -> io::Result<()> {
    write!(
        out,
        "[{ts} {:<5} {}] {}",
        record.level(),
        record.target(),
        record.args()
    )?;
    let mut fields = TextFields { out, failed: None };
    let _ = record.key_values().visit(&mut fields);
    if let Some(error) = fields.failed {
        return Err(error);
    }
    writeln!(out)
}

/// Writes each key-value as ` key=value`; keeps the first write error.
struct TextFields<'a, W: Write> {
    out: &'a mut W,
    failed: Option<io::Error>,
}

impl<'kvs, W: Write> VisitSource<'kvs> for TextFields<'_, W> {
    fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), log::kv::Error> {
        let out = &mut *self.out;
        let written = if let Some(n) = value.to_u64() {
            write!(out, " {key}={n}")
        } else if let Some(n) = value.to_i64() {
            write!(out, " {key}={n}")
        } else if let Some(b) = value.to_bool() {
            write!(out, " {key}={b}")
        } else if let Some(f) = value.to_f64() {
            write!(out, " {key}={}", Json::from(f))
        } else if let Some(s) = value.to_borrowed_str() {
            write_text_value(out, &key, s)
        } else {
            write_text_value(out, &key, &value.to_string())
        };
        written.map_err(|error| {
            self.failed = Some(error);
            log::kv::Error::msg("log line not written")
        })
    }
}

fn write_text_value(out: &mut impl Write, key: &Key<'_>, value: &str) -> io::Result<()> {
    if is_bare(value) {
        write!(out, " {key}={value}")
    } else {
        write!(out, " {key}={value:?}")
    }
}

/// `{"ts":…,"level":…,"target":…,"message":…, fields…}`.
fn json_line(ts: &str, record: &Record<'_>) -> String {
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
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:/[]@".contains(c))
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
