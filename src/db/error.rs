//! What can go wrong with the database, each variant with the text operators read in logs, in
//! `sidecar -t` and in the CLI: where (host, port and database name, never the connection
//! string), what was being done, and Postgres's own words (`FATAL 53300: sorry, too many clients
//! already`). No variant holds a credential or a row's value.

use std::time::Duration;

use super::postgres_tls::DbTlsError;

/// A database failure.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The connection string or its TLS options are wrong (found before connecting).
    #[error("{0}")]
    Settings(String),
    /// TLS to the database cannot be set up (found before connecting).
    #[error(transparent)]
    Tls(#[from] DbTlsError),
    /// No connection could be made to `at` (`host:port/dbname`).
    #[error("cannot connect to the database at {at}: {reason}")]
    Connect {
        /// `host:port/dbname`.
        at: String,
        /// Postgres's or the network's words.
        reason: String,
    },
    /// Connected, but the session set-up (`statement_timeout`, `LISTEN`) failed.
    #[error("database {at}: cannot set up the session (statement_timeout, LISTEN): {reason}")]
    Setup {
        /// `host:port/dbname`.
        at: String,
        /// Postgres's words.
        reason: String,
    },
    /// No answer within `query_timeout`; the connection is dropped and made again.
    #[error("database {at}: no answer within {timeout:?} (query_timeout); reconnecting")]
    Timeout {
        /// `host:port/dbname`.
        at: String,
        /// `credentials.postgres.query_timeout`.
        timeout: Duration,
    },
    /// A statement failed: `what` was being done.
    #[error("{what}: {reason}")]
    Query {
        /// What was being done, e.g. `cannot read the credentials table`.
        what: &'static str,
        /// Postgres's words.
        reason: String,
    },
}

impl DbError {
    /// Whether the database could not be reached at all (the CLI's exit code 3), as opposed to a
    /// wrong setting or a failed statement.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, DbError::Connect { .. } | DbError::Timeout { .. })
    }

    /// A failed statement, with Postgres's own text.
    pub fn query(what: &'static str, e: &tokio_postgres::Error) -> DbError {
        DbError::Query {
            what,
            reason: pg_error(e),
        }
    }

    /// Whether the text already names the database (a failed statement does not).
    pub fn names_the_database(&self) -> bool {
        !matches!(
            self,
            DbError::Query { .. } | DbError::Settings(_) | DbError::Tls(_)
        )
    }
}

/// An error as Postgres said it: `SEVERITY CODE: message (detail; hint)` for server errors (the
/// text `tokio_postgres` prints for those is only "db error"), the cause chain otherwise.
pub fn pg_error(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut text = format!("{} {}: {}", db.severity(), db.code().code(), db.message());
        let extra: Vec<&str> = [db.detail(), db.hint()].into_iter().flatten().collect();
        if !extra.is_empty() {
            text += &format!(" ({})", extra.join("; "));
        }
        return text;
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text += &format!(": {cause_text}");
        }
        source = cause.source();
    }
    text
}
