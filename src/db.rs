//! The connection to LiteLLM's Postgres database: connection-string handling (libpq's `sslmode`
//! and `sslrootcert`, which tokio-postgres does not parse), the one connection a running sidecar
//! holds ([`session`]), and the SQL over LiteLLM's tables ([`litellm`]).
//!
//! The connection string carries a password: it lives in a [`Secret`] and is never logged; logs
//! name the database by host, port and database name only.

mod error;
pub mod keys;
pub mod litellm;
pub mod postgres_tls;
pub mod session;
pub mod sql;

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::percent;
use crate::secret::Secret;
pub use error::DbError;
use postgres_tls::{BoringTls, SslMode};

/// `application_name` when the connection string sets none: the sidecar's connections are
/// then easy to count in `pg_stat_activity`.
pub const DEFAULT_APPLICATION_NAME: &str = "sidecar";

/// Where the database is and how to reach it.
#[derive(Clone)]
pub struct Database {
    pg_config: tokio_postgres::Config,
    tls: BoringTls,
    /// Schema holding LiteLLM's tables, unquoted.
    pub schema: String,
    described: String,
}

impl Database {
    /// Parses `url` (URL or `key=value` form; `sslmode` and `sslrootcert` understood as libpq
    /// does, default `prefer`), trusting `ca_file` for verification when the URL names no root
    /// certificate.
    pub fn new(
        url: &Secret,
        schema: &str,
        ca_file: Option<&PathBuf>,
        connect_timeout: Duration,
    ) -> Result<Database, DbError> {
        let (rest, mode, root_cert) = split_tls_options(url.expose()).map_err(DbError::Settings)?;
        let mut pg_config = tokio_postgres::Config::from_str(&rest).map_err(|e| {
            DbError::Settings(format!("the database connection string is invalid: {e}"))
        })?;
        pg_config.connect_timeout(connect_timeout);
        if pg_config.get_application_name().is_none() {
            pg_config.application_name(DEFAULT_APPLICATION_NAME);
        }
        pg_config.ssl_mode(match mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        });
        let root_cert = root_cert.or_else(|| ca_file.cloned());
        let tls = BoringTls::new(mode, root_cert.as_ref())?;
        let described = describe(&pg_config);
        Ok(Database {
            pg_config,
            tls,
            schema: schema.to_string(),
            described,
        })
    }

    /// `host:port/dbname`, for logs (no user, no password).
    pub fn describe(&self) -> &str {
        &self.described
    }

    /// One direct connection (CLI commands).
    pub async fn connect(&self) -> Result<tokio_postgres::Client, DbError> {
        let (client, connection) = self
            .pg_config
            .connect(self.tls.clone())
            .await
            .map_err(|e| self.connect_error(error::pg_error(&e)))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }
}

impl Database {
    fn connect_error(&self, reason: String) -> DbError {
        DbError::Connect {
            at: self.described.clone(),
            reason,
        }
    }
}

fn describe(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".to_string(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config.get_dbname().unwrap_or("(default)");
    format!("{host}:{port}/{db}")
}

/// Removes `sslmode` and `sslrootcert` from a connection string (URL or `key=value` form),
/// returning them parsed.
fn split_tls_options(url: &str) -> Result<(String, SslMode, Option<PathBuf>), String> {
    let mut mode = SslMode::Prefer;
    let mut root = None;
    let mut take = |key: &str, value: &str| -> Result<bool, String> {
        match key {
            "sslmode" => {
                mode = SslMode::parse(value).ok_or_else(|| {
                    format!("sslmode={value} is not one of disable, prefer, require, verify-ca, verify-full")
                })?;
                Ok(true)
            }
            "sslrootcert" => {
                root = Some(PathBuf::from(percent::decode(value).as_ref()));
                Ok(true)
            }
            _ => Ok(false),
        }
    };
    let rest = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        match url.split_once('?') {
            Some((base, query)) => {
                let mut kept = Vec::new();
                for pair in query.split('&').filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    if !take(k, v)? {
                        kept.push(pair);
                    }
                }
                if kept.is_empty() {
                    base.to_string()
                } else {
                    format!("{base}?{}", kept.join("&"))
                }
            }
            None => url.to_string(),
        }
    } else {
        let mut kept = Vec::new();
        for token in url.split_whitespace() {
            let (k, v) = token.split_once('=').unwrap_or((token, ""));
            if !take(k.trim(), v.trim_matches('\''))? {
                kept.push(token);
            }
        }
        kept.join(" ")
    };
    Ok((rest, mode, root))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_and_root_cert_are_taken_out_of_urls() {
        let (rest, mode, root) =
            split_tls_options("postgresql://u:p@db:5432/x?sslmode=verify-full&application_name=s&sslrootcert=%2Fetc%2Fca.pem")
                .expect("valid");
        assert_eq!(rest, "postgresql://u:p@db:5432/x?application_name=s");
        assert_eq!(mode, SslMode::VerifyFull);
        assert_eq!(root, Some(PathBuf::from("/etc/ca.pem")));
        let (rest, mode, _) = split_tls_options("postgres://db/x").expect("valid");
        assert_eq!((rest.as_str(), mode), ("postgres://db/x", SslMode::Prefer));
    }

    #[test]
    fn sslmode_and_root_cert_are_taken_out_of_key_value_strings() {
        let (rest, mode, root) =
            split_tls_options("host=db dbname=x sslmode=require sslrootcert=/ca.pem")
                .expect("valid");
        assert_eq!(rest, "host=db dbname=x");
        assert_eq!(mode, SslMode::Require);
        assert_eq!(root, Some(PathBuf::from("/ca.pem")));
    }

    #[test]
    fn connections_are_named_sidecar_unless_the_url_names_them() {
        let open = |url: &str| {
            let db = Database::new(
                &Secret::new(url.into()),
                "public",
                None,
                Duration::from_secs(1),
            );
            db.expect("valid").pg_config
        };
        let unnamed = open("postgres://db/x?sslmode=disable");
        assert_eq!(
            unnamed.get_application_name(),
            Some(DEFAULT_APPLICATION_NAME)
        );
        let named = open("postgres://db/x?application_name=billing&sslmode=disable");
        assert_eq!(named.get_application_name(), Some("billing"));
        let key_value = open("host=db dbname=x application_name=kv sslmode=disable");
        assert_eq!(key_value.get_application_name(), Some("kv"));
    }

    #[test]
    fn unknown_sslmode_is_an_error_without_the_url() {
        let err = split_tls_options("postgres://u:hunter2@db/x?sslmode=maybe").unwrap_err();
        assert!(
            err.contains("sslmode=maybe") && !err.contains("hunter2"),
            "{err}"
        );
    }
}
