//! The layer's rules and both line formats, through a subscriber of the tests' own.

use std::cell::RefCell;

use tracing::Level;
use tracing_subscriber::layer::SubscriberExt;

use super::layer::{allowed, redact, LineLayer};
use super::*;

thread_local! {
    static CAPTURED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

fn capture(line: &[u8]) {
    CAPTURED.with(|c| c.borrow_mut().extend_from_slice(line));
}

/// The lines `log` writes in `format`, at every level.
fn lines(format: LogFormat, log: impl FnOnce()) -> String {
    FILTER.store(Arc::new(
        env_filter::Builder::new()
            .filter_level(LevelFilter::Trace)
            .build(),
    ));
    CAPTURED.with(|c| c.borrow_mut().clear());
    let subscriber = tracing_subscriber::registry().with(LineLayer {
        format,
        out: capture,
    });
    tracing::subscriber::with_default(subscriber, log);
    CAPTURED.with(|c| String::from_utf8(c.borrow().clone()).expect("utf-8"))
}

#[test]
fn other_crates_debug_and_trace_are_never_allowed() {
    let pingora = "pingora_core::protocols::http::v1::server";
    assert!(!allowed(&Level::TRACE, pingora));
    assert!(!allowed(&Level::DEBUG, pingora));
    assert!(!allowed(&Level::DEBUG, "tokio_postgres::query"));
    assert!(!allowed(&Level::TRACE, "h2::codec"));
    assert!(allowed(&Level::INFO, pingora));
    assert!(allowed(&Level::ERROR, pingora));
    assert!(allowed(&Level::TRACE, "sidecar::proxy"));
    assert!(allowed(&Level::INFO, ACCESS_TARGET));
}

#[test]
fn raw_request_bytes_in_other_crates_messages_are_cut_off() {
    let mut message = b"Fail to proxy: Downstream InvalidHTTPHeader context: buf: \
                        GET / HTTP/1.1\\r\\nAuthorization: Bearer sk-secret"
        .to_vec();
    redact(&mut message);
    assert_eq!(
        String::from_utf8(message).expect("utf-8"),
        "Fail to proxy: Downstream InvalidHTTPHeader context: [request bytes redacted]"
    );
    let mut clean = b"Fail to proxy: connection refused".to_vec();
    redact(&mut clean);
    assert_eq!(clean, b"Fail to proxy: connection refused");
}

#[test]
fn both_formats_carry_the_fields() {
    let access = || {
        tracing::info!(
            target: ACCESS_TARGET,
            route = "openai",
            status = 200u64,
            ttfb_ms = -1i64,
            path = "/a b",
            reused = true,
            "request"
        )
    };
    let text = lines(LogFormat::Text, access);
    let (_, rest) = text.split_once(' ').expect("timestamp");
    assert_eq!(
        rest,
        "INFO  access] request route=openai status=200 ttfb_ms=-1 path=\"/a b\" reused=true\n"
    );
    let json = lines(LogFormat::Json, access);
    let json: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(json["route"], "openai");
    assert_eq!(json["status"], 200);
    assert_eq!(json["ttfb_ms"], -1);
    assert_eq!(json["reused"], true);
    assert_eq!(json["message"], "request");
    assert_eq!(json["level"], "INFO");
    assert_eq!(json["target"], "access");
}

#[test]
fn formatted_messages_and_other_crates_lines() {
    let route = "anthropic";
    let text = lines(LogFormat::Text, || {
        tracing::warn!("route {route}: could not send");
        tracing::info!(target: "pingora_core::server", "bad head buf: Authorization: k");
        // A `log` record through tracing-log's bridge: its own target, and not the `log.*`
        // fields the bridge adds.
        let _ = tracing_log::format_trace(
            &log::Record::builder()
                .level(log::Level::Info)
                .target("pingora_core::server")
                .line(Some(189))
                .args(format_args!("starting"))
                .build(),
        );
        tracing::debug!(target: "h2::codec", "frame with a key");
    });
    assert!(text.contains("WARN  sidecar::logging::tests] route anthropic: could not send\n"));
    assert!(text.contains("pingora_core::server] bad head [request bytes redacted]\n"));
    assert!(text.contains("pingora_core::server] starting\n"), "{text}");
    assert!(
        !text.contains("Authorization") && !text.contains("frame"),
        "{text}"
    );
}

/// Records whose values try to start a line of their own (a peer's error text, a decoded query
/// value, a header value): in the message, in a field and in a bridged `log` record. `tag` makes
/// the bridged record unlike earlier ones (other crates' repeated records are held back).
fn forging(tag: &'static str) -> impl Fn() {
    move || {
        let forged =
            "boom\n[2026-12-04T03:08:42.123Z INFO  access] request route=x status=200\r\u{2028}";
        tracing::warn!(peer = forged, "fan-out server answered: {forged}");
        tracing::info!(target: ACCESS_TARGET, path = forged, "request");
        let _ = tracing_log::format_trace(
            &log::Record::builder()
                .level(log::Level::Error)
                .target("pingora_proxy")
                .args(format_args!("Fail to proxy ({tag}): {forged}"))
                .build(),
        );
    }
}

#[test]
fn a_forged_line_in_any_value_stays_on_its_own_line() {
    let text = lines(LogFormat::Text, forging("text"));
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(
        !text.contains('\r') && !text.contains('\u{2028}'),
        "{text:?}"
    );
    assert!(
        !text.lines().any(|l| l.starts_with("[2026-12-04")),
        "{text}"
    );
    let json = lines(LogFormat::Json, forging("json"));
    assert_eq!(json.lines().count(), 3, "{json}");
    for line in json.lines() {
        let object: serde_json::Value = serde_json::from_str(line).expect("one object per line");
        assert!(object.to_string().contains("boom"), "{line}");
    }
}

#[test]
fn another_crates_repeated_record_is_written_once_per_window_and_counted() {
    let before = crate::metrics::CLIENT_HEAD_READ_ERRORS.get();
    let text = lines(LogFormat::Text, || {
        for port in 0..500 {
            let _ = tracing_log::format_trace(
                &log::Record::builder()
                    .level(log::Level::Error)
                    .target("pingora_proxy")
                    .args(format_args!(
                        "Fail to proxy: Downstream ConnectionClosed (unit test) from \
                         127.0.0.1:{port}, downstream session type: HTTP/1.1"
                    ))
                    .build(),
            );
        }
        tracing::warn!("the sidecar's own lines are never held back");
        tracing::warn!("the sidecar's own lines are never held back");
    });
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(crate::metrics::CLIENT_HEAD_READ_ERRORS.get() >= before + 500);
}
