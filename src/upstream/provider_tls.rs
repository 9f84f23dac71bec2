//! Upstream TLS material: the CA bundle providers are verified against, and per-endpoint
//! client certificates. (Pingora's `tls` is this same `boring` crate, so its certificates are
//! Pingora's.)

use std::path::{Path, PathBuf};
use std::sync::Arc;

use boring::error::ErrorStack;
use boring::pkey::PKey;
use boring::x509::X509;
use pingora::utils::tls::CertKey;

use crate::config::EndpointTls;

/// Why a TLS file could not be loaded; every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsFileError {
    /// A client certificate or key file cannot be read.
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
    /// A CA bundle cannot be read.
    #[error("{}: cannot read: {error}", path.display())]
    BundleUnreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// A CA bundle is not PEM.
    #[error("{}: not a PEM certificate bundle: {error}", path.display())]
    NotABundle {
        /// The file.
        path: PathBuf,
        /// BoringSSL's reason.
        error: ErrorStack,
    },
    /// A CA bundle holds no certificate.
    #[error("{}: no certificates found", path.display())]
    EmptyBundle {
        /// The file.
        path: PathBuf,
    },
}

/// One endpoint's loaded TLS material.
pub struct EndpointMaterial {
    /// Its CA bundle, when it has its own.
    pub ca: Option<Arc<Box<[X509]>>>,
    /// The client certificate it is shown.
    pub client_cert: Option<Arc<CertKey>>,
}

/// Loads an endpoint's CA bundle and client certificate; errors name the file.
pub fn endpoint_material(e: &EndpointTls) -> Result<EndpointMaterial, TlsFileError> {
    let ca = e.ca_file.as_deref().map(load_ca_bundle).transpose()?;
    let client_cert = match (&e.client_cert, &e.client_key) {
        (Some(cert), Some(key)) => Some(load_client_cert(cert, key)?),
        _ => None,
    };
    Ok(EndpointMaterial { ca, client_cert })
}

/// Loads a client certificate chain and its key (PEM); errors name the file.
pub fn load_client_cert(cert: &Path, key: &Path) -> Result<Arc<CertKey>, TlsFileError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|error| TlsFileError::Unreadable {
            path: path.to_path_buf(),
            error,
        })
    };
    let chain = X509::stack_from_pem(&read(cert)?)
        .ok()
        .filter(|c| !c.is_empty())
        .ok_or_else(|| TlsFileError::NoCertificate {
            path: cert.to_path_buf(),
        })?;
    let key = PKey::private_key_from_pem(&read(key)?).map_err(|_| TlsFileError::NotAKey {
        path: key.to_path_buf(),
    })?;
    Ok(Arc::new(CertKey::new(chain, key)))
}

/// Loads every certificate of a PEM bundle. An unreadable, empty or malformed file is an error
/// naming the file (Pingora would panic on it later).
pub fn load_ca_bundle(path: &Path) -> Result<Arc<Box<[X509]>>, TlsFileError> {
    let pem = std::fs::read(path).map_err(|error| TlsFileError::BundleUnreadable {
        path: path.to_path_buf(),
        error,
    })?;
    let certs = X509::stack_from_pem(&pem).map_err(|error| TlsFileError::NotABundle {
        path: path.to_path_buf(),
        error,
    })?;
    if certs.is_empty() {
        return Err(TlsFileError::EmptyBundle {
            path: path.to_path_buf(),
        });
    }
    Ok(Arc::new(certs.into_boxed_slice()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundle_errors_name_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing.pem");
        let text = load_ca_bundle(&missing).expect_err("missing").to_string();
        assert!(
            text.starts_with(&format!("{}: cannot read: ", missing.display())),
            "{text}"
        );
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").expect("write");
        assert_eq!(
            load_ca_bundle(&empty).expect_err("empty").to_string(),
            format!("{}: no certificates found", empty.display())
        );
        let text = load_client_cert(&empty, &missing)
            .expect_err("no certificate")
            .to_string();
        assert_eq!(text, format!("{}: no PEM certificate", empty.display()));
    }
}
