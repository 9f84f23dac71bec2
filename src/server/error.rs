//! Why the sidecar did not start. Every variant's text is what the operator reads after
//! `sidecar:` on stderr: it names the file, listener or database, never a secret.

use crate::db::DbError;
use crate::downstream::listener_tls::ListenerTlsError;
use crate::sources::SourceError;
use crate::upstream::provider_tls::TlsFileError;

/// A start-up failure; the process exits 1 before any listener opens.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// An upstream's TLS material (CA bundle, client certificate and key).
    #[error(transparent)]
    Upstream(TlsFileError),
    /// A TLS listener's address does not parse.
    #[error("{what} listener {address}: {error}")]
    ListenerAddress {
        /// Which listener (`proxy`, `fanout`).
        what: String,
        /// Its address as configured.
        address: String,
        /// Why it does not parse.
        error: std::net::AddrParseError,
    },
    /// A listener's certificate, key, client CA or TLS settings.
    #[error(transparent)]
    ListenerTls(ListenerTlsError),
    /// A credential source cannot be built (the local store, the database settings, the
    /// watch settings).
    #[error(transparent)]
    Credentials(#[from] SourceError),
    /// The price map `spend.prices_file` names cannot be read.
    #[error("spend.prices_file: {0}")]
    Prices(crate::spend::prices::PriceMapError),
    /// The metrics registry refused a collector.
    #[error("{0}")]
    Metrics(String),
    /// The start-up runtime could not be made.
    #[error("cannot start runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

impl From<DbError> for StartError {
    fn from(e: DbError) -> StartError {
        StartError::Credentials(SourceError::Database(e))
    }
}
