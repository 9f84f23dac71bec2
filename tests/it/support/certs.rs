//! Per-test-run certificate authority: owns generating a throwaway CA with rcgen, issuing
//! server certificates signed by it, and building BoringSSL clients that trust it.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use boring::ssl::{SslConnector, SslMethod};
use boring::x509::X509;
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};

/// A freshly generated CA (ECDSA P-256) that lives only in memory for one test run.
pub struct TestCa {
    cert: Certificate,
    key: KeyPair,
}

impl TestCa {
    /// Generates a new self-signed CA certificate and key.
    pub fn new() -> TestCa {
        let key = KeyPair::generate().expect("generate CA key pair");
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "sidecar integration-test CA");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("self-sign CA certificate");
        TestCa { cert, key }
    }

    /// The CA certificate in PEM form (what a client adds to its trust store).
    pub fn ca_cert_pem(&self) -> String {
        self.cert.pem()
    }

    /// Issues a certificate (server or client) for `names`, signed by this CA; returns
    /// `(cert_pem, key_pem)`.
    /// Each name that parses as an IP address becomes an IP SAN, every other one a DNS SAN.
    /// The first name is also used as the subject common name.
    pub fn issue(&self, names: &[&str]) -> (String, String) {
        assert!(!names.is_empty(), "TestCa::issue needs at least one name");
        self.issue_with_sans(names[0], sans_for(names))
    }

    /// Like [`Self::issue`], but the certificate expired (valid during 2020 only).
    pub fn issue_expired(&self, names: &[&str]) -> (String, String) {
        assert!(
            !names.is_empty(),
            "TestCa::issue_expired needs at least one name"
        );
        let mut params = server_params(names[0], sans_for(names));
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2020, 12, 31);
        self.sign(params)
    }

    /// Issues a certificate with subject common name `common_name` and exactly the subject
    /// alternative names `sans` (of any type: a DNS SAN may hold any IA5 text, as a hostile
    /// issuer's could); returns `(cert_pem, key_pem)`.
    pub fn issue_with_sans(&self, common_name: &str, sans: Vec<SanType>) -> (String, String) {
        self.sign(server_params(common_name, sans))
    }

    /// Signs a certificate with `params` and a fresh key; returns `(cert_pem, key_pem)`.
    fn sign(&self, params: CertificateParams) -> (String, String) {
        let key = KeyPair::generate().expect("generate server key pair");
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("sign server certificate with the test CA");
        (cert.pem(), key.serialize_pem())
    }

    /// Writes the CA certificate PEM to `dir/test-ca.pem` and returns that path.
    pub fn write_ca_file(&self, dir: &Path) -> PathBuf {
        let path = dir.join("test-ca.pem");
        std::fs::write(&path, self.ca_cert_pem())
            .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }

    /// A BoringSSL client connector that trusts only this CA and offers ALPN `alpn`
    /// (e.g. `&["http/1.1"]`, or `&[]` for no ALPN).
    pub fn client_connector(&self, alpn: &[&str]) -> SslConnector {
        let mut builder = SslConnector::builder(SslMethod::tls()).expect("SslConnector builder");
        let ca = X509::from_pem(self.ca_cert_pem().as_bytes()).expect("parse CA PEM");
        builder
            .cert_store_mut()
            .add_cert(ca)
            .expect("add CA to client trust store");
        if !alpn.is_empty() {
            builder
                .set_alpn_protos(&alpn_wire(alpn))
                .expect("set client ALPN");
        }
        builder.build()
    }
}

impl Default for TestCa {
    fn default() -> Self {
        TestCa::new()
    }
}

/// Encodes protocol names in the ALPN wire format (each prefixed by its length byte).
pub fn alpn_wire(protocols: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in protocols {
        let len = u8::try_from(p.len()).expect("ALPN protocol name longer than 255 bytes");
        out.push(len);
        out.extend_from_slice(p.as_bytes());
    }
    out
}

/// A server (and client) certificate's parameters: subject common name `common_name`, exactly
/// the subject alternative names `sans`, valid from now (rcgen's default).
fn server_params(common_name: &str, sans: Vec<SanType>) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.subject_alt_names = sans;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    // Both purposes, so the same helper issues mTLS client certificates.
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    params
}

/// The SANs for `names`: each that parses as an IP address an IP SAN, every other a DNS SAN.
fn sans_for(names: &[&str]) -> Vec<SanType> {
    names
        .iter()
        .map(|name| match name.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(
                (*name)
                    .try_into()
                    .unwrap_or_else(|e| panic!("invalid DNS name {name:?}: {e}")),
            ),
        })
        .collect()
}
