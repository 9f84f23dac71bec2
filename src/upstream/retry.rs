//! When a failed upstream request may be sent again.
//!
//! Pingora 0.9 never retries a non-idempotent request, so an LLM `POST` that lands on a pooled
//! connection the provider closed a moment earlier would become a 502. We retry such a request
//! once, and only when retrying cannot duplicate work the provider did: the connection was
//! reused (a fresh connection failing is a real failure), Pingora classed the error as "peer
//! dropped a reused connection" (or the request could not even be written), the request
//! body is still fully buffered, and no answer has come back (once its head has, the client has
//! it, and the body kept for a retry may be gone: see `RequestCtx::release_retry_body`).

use pingora::{ErrorType, RetryType};

/// The facts the retry decision needs.
#[derive(Debug, Clone, Copy)]
pub struct FailedAttempt<'a> {
    /// The connection came from the keepalive pool.
    pub reused: bool,
    /// This request was already retried once.
    pub already_retried: bool,
    /// Pingora's body buffer could not hold the whole request body.
    pub body_truncated: bool,
    /// The upstream's response head had arrived.
    pub answered: bool,
    /// What went wrong.
    pub error_type: &'a ErrorType,
    /// How Pingora classed the error.
    pub retry_class: &'a RetryType,
}

/// Whether to send the request again on a new connection.
pub fn should_retry(a: FailedAttempt<'_>) -> bool {
    let stale_connection = matches!(a.retry_class, RetryType::ReusedOnly)
        || matches!(a.error_type, ErrorType::WriteError);
    a.reused && !a.already_retried && !a.body_truncated && !a.answered && stale_connection
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt<'a>(error_type: &'a ErrorType, retry_class: &'a RetryType) -> FailedAttempt<'a> {
        FailedAttempt {
            reused: true,
            already_retried: false,
            body_truncated: false,
            answered: false,
            error_type,
            retry_class,
        }
    }

    #[test]
    fn retries_once_on_a_stale_pooled_connection() {
        let closed = ErrorType::ConnectionClosed;
        let reused_only = RetryType::ReusedOnly;
        assert!(should_retry(attempt(&closed, &reused_only)));
        assert!(!should_retry(FailedAttempt {
            already_retried: true,
            ..attempt(&closed, &reused_only)
        }));
        assert!(!should_retry(FailedAttempt {
            reused: false,
            ..attempt(&closed, &reused_only)
        }));
        assert!(!should_retry(FailedAttempt {
            body_truncated: true,
            ..attempt(&closed, &reused_only)
        }));
    }

    #[test]
    fn never_retries_once_the_answer_head_came_back() {
        // The client has that head; a second attempt would answer it twice.
        let answered = |error_type, retry_class| FailedAttempt {
            answered: true,
            ..attempt(error_type, retry_class)
        };
        let reused_only = RetryType::ReusedOnly;
        assert!(!should_retry(answered(
            &ErrorType::ConnectionClosed,
            &reused_only
        )));
        let no = RetryType::Decided(false);
        assert!(!should_retry(answered(&ErrorType::WriteError, &no)));
    }

    #[test]
    fn never_retries_errors_that_may_have_reached_the_provider() {
        let no = RetryType::Decided(false);
        assert!(!should_retry(attempt(&ErrorType::ReadTimedout, &no)));
        assert!(!should_retry(attempt(&ErrorType::InvalidHTTPHeader, &no)));
        assert!(should_retry(attempt(&ErrorType::WriteError, &no)));
    }
}
