//! Why a watch round trip to one server address failed: a [`Problem`] and the address it
//! happened at, named once, at the start of the text (`fan-out server https://… (10.0.0.5:9443):
//! timed out after 5s waiting for the answer`). A server's or Pingora's words reach the text
//! through [`bounded`], so they can neither flood a log line nor start a new one.

use std::fmt;
use std::time::Duration;

/// Longest piece of a server's error text that reaches a log line.
const MAX_REASON_CHARS: usize = 200;

/// What went wrong in one round trip.
#[derive(Debug, thiserror::Error)]
pub(super) enum Problem {
    /// A step did not finish within its deadline.
    #[error("timed out after {deadline:?} {step}")]
    Timeout {
        /// The step's deadline.
        deadline: Duration,
        /// What did not finish, e.g. `waiting for the answer`.
        step: &'static str,
    },
    /// No connection (TCP or TLS) could be made.
    #[error("cannot connect: {}", bounded(&.0.to_string()))]
    Connect(pingora::BError),
    /// The request could not be written.
    #[error("cannot send the request: {}", bounded(&.0.to_string()))]
    Send(pingora::BError),
    /// No response head could be read.
    #[error("no answer: {}", bounded(&.0.to_string()))]
    NoAnswer(pingora::BError),
    /// The response head was read but is missing.
    #[error("no response head")]
    NoResponseHead,
    /// The body could not be read.
    #[error("reading the answer: {}", bounded(&.0.to_string()))]
    Read(pingora::BError),
    /// The answer is larger than `max_answer_bytes` (declared or read so far).
    #[error("answer larger than max_answer_bytes ({limit} bytes); not read")]
    TooLarge {
        /// `credentials.watch.max_answer_bytes`.
        limit: u64,
    },
    /// A 200 without an entity tag.
    #[error("answer without an ETag")]
    NoTag,
    /// Another status than 200 or 304, with the `error` text of its JSON body, if any.
    #[error("answered {status}: {}", bounded(.reason))]
    Refused {
        /// The status.
        status: u16,
        /// The server's `error` text, empty when it sent none.
        reason: String,
    },
    /// The answer is not the rows' JSON.
    #[error("the snapshot is not valid JSON rows: {}", bounded(&.0.to_string()))]
    NotRows(serde_json::Error),
    /// The request could not be built (no server is involved yet).
    #[error("fan-out request: {0}")]
    Request(pingora::BError),
    /// A header of the request has a value that cannot be sent (no server is involved yet).
    #[error("fan-out request: invalid {0} header")]
    Header(String),
}

/// Why a round trip to one server address failed.
#[derive(Debug)]
pub(super) struct Failure {
    /// The address, as `Endpoint::describe` names it.
    pub server: String,
    /// What went wrong there.
    pub problem: Problem,
    /// The connection came from the pool (a failure may only mean the server had closed it).
    pub reused: bool,
}

impl Failure {
    /// `problem` at `server`, on a new connection.
    pub fn new(server: &str, problem: Problem) -> Failure {
        Failure {
            server: server.to_string(),
            problem,
            reused: false,
        }
    }

    /// The label of `sidecar_watch_polls_total`: `timeout`, `too_large` or `error`.
    pub fn kind(&self) -> &'static str {
        match self.problem {
            Problem::Timeout { .. } => "timeout",
            Problem::TooLarge { .. } => "too_large",
            _ => "error",
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.problem {
            Problem::Request(_) | Problem::Header(_) => write!(f, "{}", self.problem),
            Problem::Refused { .. } => write!(f, "{} {}", self.server, self.problem),
            problem => write!(f, "{}: {problem}", self.server),
        }
    }
}

impl std::error::Error for Failure {}

/// A server's text as it may reach a log line: at most [`MAX_REASON_CHARS`] characters, control
/// characters escaped (`\n` stays two characters, it never starts a line).
pub(super) fn bounded(text: &str) -> String {
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == MAX_REASON_CHARS {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_text_is_bounded_and_cannot_start_a_log_line() {
        let forged = "bad\n[2026-01-01 INFO access] 200 GET /x\r\u{1b}[31m";
        let shown = bounded(forged);
        assert!(!shown.chars().any(char::is_control), "{shown:?}");
        assert!(shown.starts_with("bad\\n[2026"), "{shown:?}");
        let long = bounded(&"x".repeat(10_000));
        assert_eq!(long.chars().count(), MAX_REASON_CHARS + 1);
    }

    #[test]
    fn the_server_is_named_once_before_what_went_wrong() {
        let s = "fan-out server https://a:9443 (10.0.0.5:9443)";
        let text = |problem| Failure::new(s, problem).to_string();
        assert_eq!(
            text(Problem::TooLarge { limit: 10 }),
            format!("{s}: answer larger than max_answer_bytes (10 bytes); not read")
        );
        let refused = Problem::Refused {
            status: 403,
            reason: "not\nallowed".into(),
        };
        assert_eq!(text(refused), format!("{s} answered 403: not\\nallowed"));
        let header = Problem::Header("authorization".into());
        assert_eq!(
            text(header),
            "fan-out request: invalid authorization header"
        );
    }
}
