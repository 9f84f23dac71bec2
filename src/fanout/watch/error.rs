//! Why a watch source cannot be built (its settings) or read (no server answered, nothing
//! received yet). One round trip's failure is a [`super::failure::Failure`]; this is the
//! source's view of them.

use std::time::Duration;

use crate::credentials::source::LoadError;
use crate::upstream::provider_tls::TlsFileError;

/// Why a watch source cannot be built or read.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// `credentials.watch.token_env` names a variable that is unset or empty.
    #[error("credentials.watch: the token variable {variable} is not set")]
    NoToken {
        /// The variable's name.
        variable: String,
    },
    /// The CA bundle or the client certificate cannot be loaded.
    #[error(transparent)]
    Tls(#[from] TlsFileError),
    /// At start, no address answered: each one's failure (and each host that did not
    /// resolve), in the order tried.
    #[error("{}", .0.join("; "))]
    Unanswered(Vec<String>),
    /// At start, the servers took longer than the start-up deadline.
    #[error("{described}: no answer within {deadline:?} at start")]
    StartTimedOut {
        /// The source, as it describes itself.
        described: String,
        /// The start-up deadline.
        deadline: Duration,
    },
    /// No server answered in the poller's last full round: the last failure's text.
    #[error("{0}")]
    Failing(String),
    /// No answer has been received yet.
    #[error("{described}: no snapshot received yet")]
    NothingReceived {
        /// The source, as it describes itself.
        described: String,
    },
}

impl From<WatchError> for LoadError {
    fn from(e: WatchError) -> LoadError {
        LoadError::External(Box::new(e))
    }
}
