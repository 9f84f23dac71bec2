//! Upstream TLS material: the CA bundle providers are verified against, and per-endpoint
//! client certificates. (Pingora's `tls` is this same `boring` crate, so its certificates are
//! Pingora's.)

use std::path::Path;
use std::sync::Arc;

use boring::pkey::PKey;
use boring::x509::X509;
use pingora::utils::tls::CertKey;

use crate::config::EndpointTls;

/// One endpoint's loaded TLS material.
pub struct EndpointMaterial {
    /// Its CA bundle, when it has its own.
    pub ca: Option<Arc<Box<[X509]>>>,
    /// The client certificate it is shown.
    pub client_cert: Option<Arc<CertKey>>,
}

/// Loads an endpoint's CA bundle and client certificate; errors name the file.
pub fn endpoint_material(e: &EndpointTls) -> Result<EndpointMaterial, String> {
    let ca = e.ca_file.as_deref().map(load_ca_bundle).transpose()?;
    let client_cert = match (&e.client_cert, &e.client_key) {
        (Some(cert), Some(key)) => Some(load_client_cert(cert, key)?),
        _ => None,
    };
    Ok(EndpointMaterial { ca, client_cert })
}

/// Loads a client certificate chain and its key (PEM); errors name the file.
pub fn load_client_cert(cert: &Path, key: &Path) -> Result<Arc<CertKey>, String> {
    let pem = std::fs::read(cert).map_err(|err| format!("{}: {err}", cert.display()))?;
    let chain = X509::stack_from_pem(&pem)
        .ok()
        .filter(|c| !c.is_empty())
        .ok_or_else(|| format!("{}: no PEM certificate", cert.display()))?;
    let key_pem = std::fs::read(key).map_err(|err| format!("{}: {err}", key.display()))?;
    let key = PKey::private_key_from_pem(&key_pem)
        .map_err(|_| format!("{}: not a PEM private key", key.display()))?;
    Ok(Arc::new(CertKey::new(chain, key)))
}

/// Loads every certificate of a PEM bundle. An unreadable, empty or malformed file is an error
/// naming the file (Pingora would panic on it later).
pub fn load_ca_bundle(path: &Path) -> Result<Arc<Box<[X509]>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    let certs = X509::stack_from_pem(&pem)
        .map_err(|e| format!("{}: not a PEM certificate bundle: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificates found", path.display()));
    }
    Ok(Arc::new(certs.into_boxed_slice()))
}
