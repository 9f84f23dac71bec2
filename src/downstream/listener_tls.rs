//! Downstream TLS (BoringSSL): the listener's settings, the certificate served from an
//! `ArcSwap` so a changed file takes effect for new connections without dropping open ones, and
//! the client identity taken from a verified client certificate (mTLS; see [`crate::identity`]).
//!
//! Reload: a background service reads the certificate and key files every
//! `reload_interval`. Kubernetes updates a mounted Secret by swapping a symlink in the directory;
//! reading the paths follows it, so the new files are seen on the next read. A change that does
//! not parse (or a file that vanished) is logged and the old certificate keeps serving.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use boring::error::ErrorStack;
use boring::pkey::{PKey, Private};
use boring::ssl::{
    select_next_proto, AlpnError, SslAcceptor, SslMethod, SslVerifyMode, SslVersion,
};
use boring::x509::X509;
use pingora::listeners::TlsAccept;
use pingora::protocols::l4::stream::Stream as TcpStream;
use pingora::protocols::tls::server::handshake_with_callback;
use pingora::protocols::tls::TlsRef;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use pingora::tls::ext::{ssl_add_chain_cert, ssl_use_certificate, ssl_use_private_key};
use tracing::{error, info};

use crate::config::ListenerTls;
use crate::identity::ClientIdentity;

/// Why a listener's certificate, key or TLS settings cannot be used; names the file or the
/// setting.
#[derive(Debug, thiserror::Error)]
pub enum ListenerTlsError {
    /// The certificate or key file cannot be read.
    #[error("{}: {error}", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The certificate file holds no PEM certificate.
    #[error("{}: no PEM certificate", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The key file holds no PEM private key.
    #[error("{}: not a PEM private key", path.display())]
    NotAKey {
        /// The file.
        path: PathBuf,
    },
    /// The certificate is not the key's.
    #[error("{} does not match the key in {}", cert.display(), key.display())]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// BoringSSL could not make an acceptor.
    #[error("TLS setup: {0}")]
    Setup(ErrorStack),
    /// The minimum TLS version was refused.
    #[error("TLS minimum version: {0}")]
    MinVersion(ErrorStack),
    /// The cipher list was refused.
    #[error("TLS cipher list {list:?}: {error}")]
    Ciphers {
        /// `ciphers` as configured.
        list: String,
        /// BoringSSL's reason.
        error: ErrorStack,
    },
    /// The client CA bundle cannot be loaded.
    #[error("{}: {error}", path.display())]
    ClientCa {
        /// The file.
        path: PathBuf,
        /// BoringSSL's reason.
        error: ErrorStack,
    },
}

/// A certificate chain and its key, as read from disk.
struct CertKey {
    chain: Vec<X509>,
    key: PKey<Private>,
    /// The file contents they were parsed from, to notice changes.
    source: (Vec<u8>, Vec<u8>),
}

/// The certificate a TLS listener serves now.
pub struct CertStore {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: ArcSwap<CertKey>,
}

impl CertStore {
    /// Loads the certificate chain and key; errors name the file.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Arc<CertStore>, ListenerTlsError> {
        let loaded = read_cert_key(cert_path, key_path)?;
        Ok(Arc::new(CertStore {
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            current: ArcSwap::from_pointee(loaded),
        }))
    }

    /// Reads the files again; swaps in the new pair when they changed and are valid.
    /// `Ok(true)` when a new certificate was loaded.
    pub fn reload(&self) -> Result<bool, ListenerTlsError> {
        let cert = read(&self.cert_path)?;
        let key = read(&self.key_path)?;
        if self.current.load().source == (cert.clone(), key.clone()) {
            return Ok(false);
        }
        let parsed = parse_cert_key(&cert, &key, &self.cert_path, &self.key_path)?;
        self.current.store(Arc::new(parsed));
        Ok(true)
    }
}

fn read(path: &Path) -> Result<Vec<u8>, ListenerTlsError> {
    std::fs::read(path).map_err(|error| ListenerTlsError::Unreadable {
        path: path.to_path_buf(),
        error,
    })
}

fn read_cert_key(cert_path: &Path, key_path: &Path) -> Result<CertKey, ListenerTlsError> {
    let cert = read(cert_path)?;
    let key = read(key_path)?;
    parse_cert_key(&cert, &key, cert_path, key_path)
}

fn parse_cert_key(
    cert: &[u8],
    key: &[u8],
    cert_path: &Path,
    key_path: &Path,
) -> Result<CertKey, ListenerTlsError> {
    let chain = X509::stack_from_pem(cert)
        .ok()
        .filter(|c| !c.is_empty())
        .ok_or_else(|| ListenerTlsError::NoCertificate {
            path: cert_path.to_path_buf(),
        })?;
    let pkey = PKey::private_key_from_pem(key).map_err(|_| ListenerTlsError::NotAKey {
        path: key_path.to_path_buf(),
    })?;
    let matches = chain[0]
        .public_key()
        .map(|public| public.public_eq(&pkey))
        .unwrap_or(false);
    if !matches {
        return Err(ListenerTlsError::KeyMismatch {
            cert: cert_path.to_path_buf(),
            key: key_path.to_path_buf(),
        });
    }
    Ok(CertKey {
        chain,
        key: pkey,
        source: (cert.to_vec(), key.to_vec()),
    })
}

/// Serves the current certificate and records the client's identity.
struct Callbacks {
    store: Arc<CertStore>,
}

#[async_trait]
impl TlsAccept for Callbacks {
    async fn certificate_callback(&self, ssl: &mut TlsRef) {
        let current = self.store.current.load();
        let mut ok = ssl_use_certificate(ssl, &current.chain[0]).is_ok()
            && ssl_use_private_key(ssl, &current.key).is_ok();
        for intermediate in &current.chain[1..] {
            ok &= ssl_add_chain_cert(ssl, intermediate).is_ok();
        }
        if !ok {
            error!("TLS: could not set the certificate for a handshake");
        }
    }

    async fn handshake_complete_callback(
        &self,
        ssl: &TlsRef,
    ) -> Option<Arc<dyn std::any::Any + Send + Sync>> {
        crate::metrics::DOWNSTREAM_TLS_HANDSHAKES.inc();
        let cert = ssl.peer_certificate()?;
        Some(Arc::new(ClientIdentity::of(&cert)))
    }
}

/// A listener's TLS: the reloadable certificate, TLS 1.2+ (or 1.3 only), optional cipher list,
/// ALPN (h2 preferred, when `h2`, and http/1.1), optional client-certificate verification.
///
/// The handshake is done by [`super::GuardedApp`], not by Pingora's listener, so
/// that its deadline and its failures are ours to bound and count, and a connection that dies in
/// its handshake stops counting against the cap at once. It runs Pingora's own handshake
/// function with the same callbacks, so what the application sees is the same.
pub struct TlsAcceptor {
    acceptor: SslAcceptor,
    callbacks: Callbacks,
}

impl TlsAcceptor {
    /// The acceptor for a listener configured with `tls`, serving `store`'s certificate.
    pub fn new(
        tls: &ListenerTls,
        store: Arc<CertStore>,
        h2: bool,
    ) -> Result<TlsAcceptor, ListenerTlsError> {
        let mut builder = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls())
            .map_err(ListenerTlsError::Setup)?;
        let protocols: &'static [u8] = if h2 {
            b"\x02h2\x08http/1.1"
        } else {
            b"\x08http/1.1"
        };
        builder.set_alpn_select_callback(move |_, offered| {
            select_next_proto(protocols, offered).ok_or(AlpnError::NOACK)
        });
        let min = if tls.min_version_13 {
            SslVersion::TLS1_3
        } else {
            SslVersion::TLS1_2
        };
        builder
            .set_min_proto_version(Some(min))
            .map_err(ListenerTlsError::MinVersion)?;
        if let Some(ciphers) = &tls.ciphers {
            builder
                .set_cipher_list(ciphers)
                .map_err(|error| ListenerTlsError::Ciphers {
                    list: ciphers.clone(),
                    error,
                })?;
        }
        if let Some(ca) = &tls.client_ca {
            builder
                .set_ca_file(ca)
                .map_err(|error| ListenerTlsError::ClientCa {
                    path: ca.clone(),
                    error,
                })?;
            builder.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
        }
        Ok(TlsAcceptor {
            acceptor: builder.build(),
            callbacks: Callbacks { store },
        })
    }

    /// The server side of a TLS handshake on `stream`, a TCP connection as Pingora's listener
    /// hands it over.
    pub async fn handshake(&self, stream: Stream) -> pingora::Result<Stream> {
        let tcp = stream.into_any().downcast::<TcpStream>().map_err(|_| {
            pingora::Error::explain(
                pingora::ErrorType::InternalError,
                "a TLS listener's connection is not a TCP stream",
            )
        })?;
        let tls = handshake_with_callback(&self.acceptor, *tcp, &self.callbacks).await?;
        Ok(Box::new(tls))
    }
}

/// Re-reads every TLS listener's certificate every `interval`.
pub struct CertReloader {
    /// The stores to keep current.
    pub stores: Vec<Arc<CertStore>>,
    /// Time between reads.
    pub interval: Duration,
}

#[async_trait]
impl BackgroundService for CertReloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut failing: Vec<Option<String>> = vec![None; self.stores.len()];
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {}
                _ = shutdown.changed() => return,
            }
            for (store, failing) in self.stores.iter().zip(failing.iter_mut()) {
                match store.reload() {
                    Ok(true) => {
                        info!(
                            "TLS: loaded the new certificate {}",
                            store.cert_path.display()
                        );
                        *failing = None;
                    }
                    Ok(false) => *failing = None,
                    Err(e) => {
                        // Logged once per distinct failure.
                        let e = e.to_string();
                        if failing.as_ref() != Some(&e) {
                            error!("TLS: cannot reload the certificate ({e}); the previous one keeps serving");
                            *failing = Some(e);
                        }
                    }
                }
            }
        }
    }
}
