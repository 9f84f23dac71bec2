//! Certificate verification for upstreams addressed by an IP literal (`https://10.0.0.5:8443`).
//!
//! Pingora 0.9's BoringSSL connector checks a peer's SNI as a DNS name (an IP never matches a
//! DNS SAN) and turns verification off entirely when the SNI is empty. RFC 6066 forbids IP
//! literals in SNI, so such a target is given an empty SNI (none is sent) and its certificate is
//! verified here instead, by Pingora's `upstream_tls_handshake_complete_hook`: after the
//! handshake, the peer's chain is checked against the same trust the connector would use and the
//! IP against the certificate's IP SANs. The hook cannot fail a connection, so it leaves an
//! [`IpVerdict`] in the TLS digest, which the proxy checks before anything is sent (pooled
//! connections carry the same digest, so every request is checked).

use std::any::Any;
use std::net::IpAddr;
use std::sync::Arc;

use boring::ssl::SslRef;
use boring::stack::{Stack, StackRef};
use boring::x509::store::{X509Store, X509StoreBuilder, X509StoreRef};
use boring::x509::{X509Ref, X509StoreContext, X509};
use pingora::protocols::tls::{HandshakeCompleteHook, SslDigest};

/// Why an IP upstream's certificate was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertRefusal {
    /// No verdict: no TLS, or a connection the hook never saw.
    #[error("the certificate was not verified")]
    NotVerified,
    /// The upstream presented no certificate.
    #[error("the upstream presented no certificate")]
    NoCertificate,
    /// The target's CA bundle could not be made into a trust store (BoringSSL's error).
    #[error("the CA bundle cannot be used: {0}")]
    UnusableBundle(String),
    /// The chain or the IP did not verify: BoringSSL's reason, e.g. "IP address mismatch",
    /// "certificate has expired".
    #[error("{0}")]
    Rejected(&'static str),
    /// The chain did not verify and BoringSSL gave no reason.
    #[error("certificate verification failed")]
    Unexplained,
    /// BoringSSL failed while verifying (its error).
    #[error("certificate verification failed: {0}")]
    Failed(String),
    /// BoringSSL could not set the verification up (its error).
    #[error("{0}")]
    Setup(String),
}

/// The outcome of verifying an IP upstream's certificate after a handshake: `Ok`, or why it
/// was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpVerdict(pub Result<(), CertRefusal>);

/// The verdict the hook left in a connection's TLS digest: `Err` with the reason when it is
/// not OK, or when there is none (no TLS, or a connection the hook never saw).
pub fn verdict(ssl: Option<&SslDigest>) -> Result<(), CertRefusal> {
    match ssl.and_then(|d| d.extension.get::<IpVerdict>()) {
        Some(IpVerdict(result)) => result.clone(),
        None => Err(CertRefusal::NotVerified),
    }
}

/// Where the trusted roots for an IP target come from.
enum Trust {
    /// The target's CA bundle (endpoint `ca_file`, else `upstream.ca_file` / `SSL_CERT_FILE`),
    /// as Pingora would install it on the connection.
    Bundle(X509Store),
    /// No bundle: the connector's own store, which Pingora fills from the system default paths.
    Connector,
    /// The bundle could not be made into a store; every connection is refused with this reason.
    Broken(CertRefusal),
}

/// The hook verifying the certificate of an upstream at `ip` against `ca` (the target's bundle)
/// or, with none, the store of the connector that made the connection.
pub fn ip_verify_hook(ip: IpAddr, ca: Option<&[X509]>) -> HandshakeCompleteHook {
    let trust = match ca {
        Some(certs) => bundle_store(certs).map_or_else(Trust::Broken, Trust::Bundle),
        None => Trust::Connector,
    };
    Arc::new(move |ssl: &SslRef| -> Option<Arc<dyn Any + Send + Sync>> {
        Some(Arc::new(IpVerdict(verify_peer(ssl, ip, &trust))))
    })
}

/// Verifies the certificate chain the peer of `ssl` presented, for `ip`, against `trust`.
fn verify_peer(ssl: &SslRef, ip: IpAddr, trust: &Trust) -> Result<(), CertRefusal> {
    let store = match trust {
        Trust::Bundle(store) => &**store,
        Trust::Connector => ssl.ssl_context().cert_store(),
        Trust::Broken(reason) => return Err(reason.clone()),
    };
    let leaf = ssl.peer_certificate().ok_or(CertRefusal::NoCertificate)?;
    match ssl.peer_cert_chain() {
        Some(chain) => verify_chain(store, &leaf, chain, ip),
        None => {
            let empty = Stack::new().map_err(|e| CertRefusal::Setup(e.to_string()))?;
            verify_chain(store, &leaf, &empty, ip)
        }
    }
}

/// Verifies `leaf` (with the untrusted intermediates in `chain`) against `trust` for the IP
/// address `ip`: `Err` holds BoringSSL's reason.
///
/// The SSL-server purpose (extended key usage) is not checked: the `boring` crate exposes no
/// safe way to set it, and this crate forbids `unsafe`.
pub fn verify_chain(
    trust: &X509StoreRef,
    leaf: &X509Ref,
    chain: &StackRef<X509>,
    ip: IpAddr,
) -> Result<(), CertRefusal> {
    let mut context = X509StoreContext::new().map_err(|e| CertRefusal::Setup(e.to_string()))?;
    let outcome = context.init(trust, leaf, chain, |c| {
        c.verify_param_mut().set_ip(ip)?;
        let verified = c.verify_cert()?;
        Ok((verified, c.verify_result()))
    });
    match outcome {
        Ok((true, _)) => Ok(()),
        Ok((false, Err(reason))) => Err(CertRefusal::Rejected(reason.error_string())),
        Ok((false, Ok(()))) => Err(CertRefusal::Unexplained),
        Err(stack) => Err(CertRefusal::Failed(stack.to_string())),
    }
}

/// A trust store holding exactly `certs`.
fn bundle_store(certs: &[X509]) -> Result<X509Store, CertRefusal> {
    let broken = |e: boring::error::ErrorStack| CertRefusal::UnusableBundle(e.to_string());
    let mut builder = X509StoreBuilder::new().map_err(broken)?;
    for cert in certs {
        builder.add_cert(cert.clone()).map_err(broken)?;
    }
    Ok(builder.build())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, Certificate, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose,
        SanType,
    };

    struct Ca {
        cert: Certificate,
        key: KeyPair,
    }

    /// A CA named `name` (distinct names, or one CA would pass for the other's issuer).
    fn ca(name: &str) -> Ca {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let cert = params.self_signed(&key).expect("self-sign");
        Ca { cert, key }
    }

    fn issue(ca: &Ca, sans: Vec<SanType>, expired: bool) -> X509 {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        // A name of its own, or the leaf would look self-signed.
        params
            .distinguished_name
            .push(DnType::CommonName, "unit-test server");
        params.subject_alt_names = sans;
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let cert = params.signed_by(&key, &ca.cert, &ca.key).expect("sign");
        X509::from_der(cert.der()).expect("der")
    }

    fn store(ca: &Ca) -> X509Store {
        bundle_store(&[X509::from_der(ca.cert.der()).expect("der")]).expect("store")
    }

    fn verify(trusted: &Ca, leaf: &X509, ip: &str) -> Result<(), CertRefusal> {
        let chain = Stack::new().expect("stack");
        verify_chain(&store(trusted), leaf, &chain, ip.parse().expect("ip"))
    }

    fn ip_san(ip: &str) -> SanType {
        SanType::IpAddress(ip.parse().expect("ip"))
    }

    #[test]
    fn only_verified_tls_targets_given_by_ip_are_checked_after_the_handshake() {
        use crate::config::{Config, UpstreamUrl};
        let text = "listeners: [{ address: \"127.0.0.1:1\" }]\n\
            upstream: { endpoints: [{ host: 10.0.0.9, insecure_skip_verify: true }] }\n\
            routes: [{ name: a, path_prefix: /a, upstream: \"https://a\", provider: openai, credential: c }]\n";
        let config = Config::from_yaml(text, std::path::Path::new("."), &|_| None).expect("valid");
        let targets = crate::upstream::Targets::standalone(&config.upstream).expect("targets");
        let checked = |url: &str| {
            let url = UpstreamUrl::parse(url).expect("url");
            targets.target_for(&url).verified_after_handshake()
        };
        assert!(checked("https://127.0.0.1:8443"));
        assert!(checked("https://[::1]:8443"));
        assert!(
            !checked("https://localhost:8443"),
            "BoringSSL verifies host names"
        );
        assert!(!checked("http://127.0.0.1:8080"), "no TLS");
        assert!(
            !checked("https://10.0.0.9"),
            "verification off for the endpoint"
        );
    }

    #[test]
    fn a_missing_verdict_is_a_refusal() {
        assert!(verdict(None).is_err());
    }

    #[test]
    fn an_ip_san_from_a_trusted_ca_is_accepted_for_v4_and_v6() {
        let ca = ca("unit-test CA");
        let leaf = issue(&ca, vec![ip_san("127.0.0.1"), ip_san("::1")], false);
        assert_eq!(verify(&ca, &leaf, "127.0.0.1"), Ok(()));
        assert_eq!(verify(&ca, &leaf, "::1"), Ok(()));
    }

    #[test]
    fn another_ip_or_a_dns_name_only_is_an_ip_mismatch() {
        let ca = ca("unit-test CA");
        let leaf = issue(&ca, vec![ip_san("127.0.0.1")], false);
        assert_eq!(
            verify(&ca, &leaf, "127.0.0.2").unwrap_err().to_string(),
            "IP address mismatch"
        );
        let dns = SanType::DnsName("127.0.0.1".try_into().expect("name"));
        let leaf = issue(&ca, vec![dns], false);
        assert_eq!(
            verify(&ca, &leaf, "127.0.0.1").unwrap_err().to_string(),
            "IP address mismatch"
        );
    }

    #[test]
    fn an_unknown_issuer_and_an_expired_certificate_say_so() {
        let (ca, other) = (ca("unit-test CA"), ca("another CA"));
        let leaf = issue(&ca, vec![ip_san("127.0.0.1")], false);
        let reason = verify(&other, &leaf, "127.0.0.1").unwrap_err().to_string();
        assert_eq!(reason, "unable to get local issuer certificate");
        let expired = issue(&ca, vec![ip_san("127.0.0.1")], true);
        let reason = verify(&ca, &expired, "127.0.0.1").unwrap_err().to_string();
        assert_eq!(reason, "certificate has expired");
    }
}
