//! Repetitive records from other crates, written at most once per [`WINDOW`] each. Pingora logs
//! one ERROR line per client that closes its connection mid-head (5,000 lines for 5,000
//! connections): a flood of connections must not become a flood of lines, which would drown the
//! log and, past the sink's buffer, push out the lines that matter.
//!
//! Records are told apart by their target and the start of their message (up to the first digit,
//! at most [`KEY_BYTES`]: addresses, ports and counts vary between otherwise equal records). The
//! first of a kind is written; the others within the window are counted in
//! `sidecar_log_lines_suppressed_total{target}` and not written; the first one after the window
//! is written with `suppressed=N`, how many were left out since the last line of its kind. The
//! sidecar's own records are never held back (they are written once per change of state).
//!
//! Pingora's line for a request head that could not be read is also counted, whatever the
//! window decides, in `sidecar_client_head_read_errors_total`.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use super::throttle::Throttle;

/// How often one kind of record is written at most.
pub const WINDOW: Duration = Duration::from_secs(10);

/// How much of a message tells records apart.
const KEY_BYTES: usize = 48;

/// How many kinds are tracked at once; past it, kinds whose window ended are forgotten, and a
/// new kind is written without being tracked if none has.
const MAX_KINDS: usize = 512;

/// What Pingora 0.9 (`pingora-proxy`, `HttpProxy::process_new_http`) writes when a client's
/// request head cannot be read (closed, reset, unreadable).
const HEAD_READ_ERROR: &str = ", downstream session type:";

/// Whether to write a record.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Write it; `suppressed` of its kind were left out since the last one written.
    Write {
        /// How many were not written.
        suppressed: u64,
    },
    /// Leave it out (counted).
    Suppress,
}

/// The windows of the kinds seen recently.
#[derive(Default)]
pub struct Repeats {
    kinds: Mutex<HashMap<String, Throttle>>,
}

impl Repeats {
    /// Whether to write a record of `target` with `message` at `now`.
    pub fn check(&self, target: &str, message: &[u8], now: Instant) -> Verdict {
        let mut kinds = self.kinds.lock().unwrap_or_else(|e| e.into_inner());
        let key = kind(target, message);
        if let Some(throttle) = kinds.get_mut(&key) {
            return match throttle.allow_at(now) {
                Some(suppressed) => Verdict::Write { suppressed },
                None => Verdict::Suppress,
            };
        }
        if kinds.len() >= MAX_KINDS {
            kinds.retain(|_, t| t.within_interval(now));
        }
        if kinds.len() < MAX_KINDS {
            let mut throttle = Throttle::new(WINDOW);
            throttle.allow_at(now);
            kinds.insert(key, throttle);
        }
        Verdict::Write { suppressed: 0 }
    }
}

/// `target`, then the message up to its first digit (at most [`KEY_BYTES`]).
fn kind(target: &str, message: &[u8]) -> String {
    let end = message
        .iter()
        .take(KEY_BYTES)
        .position(u8::is_ascii_digit)
        .unwrap_or(message.len().min(KEY_BYTES));
    format!("{target}\0{}", String::from_utf8_lossy(&message[..end]))
}

/// The process's windows.
static REPEATS: LazyLock<Repeats> = LazyLock::new(Repeats::default);

/// Decides for another crate's record of `target` with `message`, and counts it.
pub fn observe(target: &str, message: &[u8]) -> Verdict {
    if target.starts_with("pingora_proxy") && contains(message, HEAD_READ_ERROR.as_bytes()) {
        crate::metrics::CLIENT_HEAD_READ_ERRORS.inc();
    }
    let verdict = REPEATS.check(target, message, Instant::now());
    if verdict == Verdict::Suppress {
        crate::metrics::suppressed_log_line(target);
    }
    verdict
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_kind_per_window_then_the_count_left_out() {
        let repeats = Repeats::default();
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let closed = |port: u16| {
            format!("Fail to proxy: Downstream ConnectionClosed from 127.0.0.1:{port}").into_bytes()
        };
        let pingora = "pingora_proxy";
        assert_eq!(
            repeats.check(pingora, &closed(1000), at(0)),
            Verdict::Write { suppressed: 0 }
        );
        for i in 0..4_999u16 {
            let verdict = repeats.check(pingora, &closed(1001 + i), at(u64::from(i)));
            assert_eq!(verdict, Verdict::Suppress);
        }
        // Another kind, or another target, has its own window.
        assert_eq!(
            repeats.check(pingora, b"H2 handshake error", at(10)),
            Verdict::Write { suppressed: 0 }
        );
        assert_eq!(
            repeats.check("pingora_core", &closed(1), at(10)),
            Verdict::Write { suppressed: 0 }
        );
        // The window over, the next one is written with the count of those left out.
        let after = WINDOW.as_millis() as u64;
        assert_eq!(
            repeats.check(pingora, &closed(7), at(after)),
            Verdict::Write { suppressed: 4_999 }
        );
        assert_eq!(
            repeats.check(pingora, &closed(8), at(after + 1)),
            Verdict::Suppress
        );
    }

    #[test]
    fn the_kinds_tracked_are_bounded() {
        let repeats = Repeats::default();
        let now = Instant::now();
        for i in 0..MAX_KINDS * 2 {
            let message = format!("kind {}", "x".repeat(i % KEY_BYTES));
            let target = format!("crate_{i}");
            assert!(matches!(
                repeats.check(&target, message.as_bytes(), now),
                Verdict::Write { .. }
            ));
        }
        let kinds = repeats.kinds.lock().expect("lock").len();
        assert_eq!(kinds, MAX_KINDS);
    }
}
