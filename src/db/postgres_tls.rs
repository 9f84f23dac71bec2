//! TLS to Postgres over BoringSSL (the TLS library the proxy already links), with libpq's
//! `sslmode` semantics: `require` encrypts without verifying (unless a root certificate is
//! given, which makes it `verify-ca`, as in libpq), `verify-ca` checks the chain, `verify-full`
//! checks the chain and the host name.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};

use boring::error::ErrorStack;
use boring::ssl::{SslConnector, SslMethod, SslVerifyMode};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_boring::SslStream;
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};

/// How the connection to Postgres is secured (libpq's `sslmode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// No TLS.
    Disable,
    /// TLS when the server offers it, unverified (libpq's default).
    Prefer,
    /// TLS required, unverified (verified as `verify-ca` when a root certificate is given).
    Require,
    /// TLS required, certificate chain verified.
    VerifyCa,
    /// TLS required, chain and host name verified.
    VerifyFull,
}

impl SslMode {
    /// Parses libpq's spelling.
    pub fn parse(text: &str) -> Option<SslMode> {
        Some(match text {
            "disable" => SslMode::Disable,
            "prefer" | "allow" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return None,
        })
    }
}

/// Why TLS to the database cannot be set up (found before connecting).
#[derive(Debug, thiserror::Error)]
pub enum DbTlsError {
    /// BoringSSL could not make a connector.
    #[error("cannot set up TLS to the database: {0}")]
    Setup(ErrorStack),
    /// The root certificate file cannot be loaded.
    #[error("database root certificate {}: {error}", path.display())]
    RootCert {
        /// `sslrootcert`, else `credentials.postgres.ca_file`.
        path: PathBuf,
        /// BoringSSL's reason.
        error: ErrorStack,
    },
    /// The system's root certificates cannot be loaded.
    #[error("cannot load the system root certificates: {0}")]
    SystemRoots(ErrorStack),
}

/// A `MakeTlsConnect` for tokio-postgres built on BoringSSL.
#[derive(Clone)]
pub struct BoringTls {
    connector: SslConnector,
    verify_hostname: bool,
}

impl BoringTls {
    /// A connector for `mode`, trusting `root_cert` (PEM) or, when `None`, the system roots.
    pub fn new(mode: SslMode, root_cert: Option<&PathBuf>) -> Result<BoringTls, DbTlsError> {
        let mut builder = SslConnector::builder(SslMethod::tls()).map_err(DbTlsError::Setup)?;
        let verify_chain = matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull)
            || (mode == SslMode::Require && root_cert.is_some());
        if verify_chain {
            match root_cert {
                Some(path) => builder
                    .set_ca_file(path)
                    .map_err(|error| DbTlsError::RootCert {
                        path: path.clone(),
                        error,
                    })?,
                None => builder
                    .set_default_verify_paths()
                    .map_err(DbTlsError::SystemRoots)?,
            }
            builder.set_verify(SslVerifyMode::PEER);
        } else {
            builder.set_verify(SslVerifyMode::NONE);
        }
        Ok(BoringTls {
            connector: builder.build(),
            verify_hostname: mode == SslMode::VerifyFull,
        })
    }
}

impl<S> MakeTlsConnect<S> for BoringTls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = BoringStream<S>;
    type TlsConnect = BoringConnect;
    type Error = boring::error::ErrorStack;

    fn make_tls_connect(&mut self, domain: &str) -> Result<BoringConnect, Self::Error> {
        let mut config = self.connector.configure()?;
        config.set_verify_hostname(self.verify_hostname);
        config.set_use_server_name_indication(self.verify_hostname);
        Ok(BoringConnect {
            config,
            domain: domain.to_string(),
        })
    }
}

/// One pending TLS connection.
pub struct BoringConnect {
    config: boring::ssl::ConnectConfiguration,
    domain: String,
}

impl<S> TlsConnect<S> for BoringConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = BoringStream<S>;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = Pin<Box<dyn Future<Output = Result<BoringStream<S>, Self::Error>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let stream = tokio_boring::connect(self.config, &self.domain, stream)
                .await
                .map_err(|e| format!("TLS handshake with the database failed: {e}"))?;
            Ok(BoringStream(stream))
        })
    }
}

/// A TLS stream to Postgres.
pub struct BoringStream<S>(SslStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for BoringStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for BoringStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for BoringStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        // SCRAM channel binding is optional; without it SCRAM-SHA-256 still authenticates.
        ChannelBinding::none()
    }
}
