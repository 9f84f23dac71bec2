//! mTLS client identities: the names a verified client certificate carries, each with its type
//! (subject alternative names of type URI, DNS, email and IP address; the subject CN), and the
//! typed `routes[].allowed_identities` entries they are compared with.
//!
//! An entry names its type (`uri:`, `dns:`, `email:`, `ip:`, `CN=`) and matches only a name of
//! that type: a CA that vouched for a DNS name or an email address has not vouched for a SPIFFE
//! ID spelled the same. Comparison is exact, never by prefix or substring; DNS names, and the
//! domain of an email address, ignore ASCII case as DNS does.

use std::fmt;
use std::net::IpAddr;

use boring::nid::Nid;
use boring::x509::X509Ref;

/// A subject alternative name of one of the types the sidecar compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SanName {
    /// `uniformResourceIdentifier`, e.g. a SPIFFE ID `spiffe://cluster/ns/app/sa/web`.
    Uri(String),
    /// `dNSName`.
    Dns(String),
    /// `rfc822Name`, an email address.
    Email(String),
    /// `iPAddress`.
    Ip(IpAddr),
}

impl SanName {
    /// Whether `self` and `other` are the same name of the same type.
    fn same_as(&self, other: &SanName) -> bool {
        match (self, other) {
            (SanName::Uri(a), SanName::Uri(b)) => a == b,
            (SanName::Dns(a), SanName::Dns(b)) => a.eq_ignore_ascii_case(b),
            (SanName::Email(a), SanName::Email(b)) => same_email(a, b),
            (SanName::Ip(a), SanName::Ip(b)) => a == b,
            _ => false,
        }
    }
}

/// Email addresses: the local part exactly, the domain ignoring ASCII case.
fn same_email(a: &str, b: &str) -> bool {
    match (a.rsplit_once('@'), b.rsplit_once('@')) {
        (Some((local_a, domain_a)), Some((local_b, domain_b))) => {
            local_a == local_b && domain_a.eq_ignore_ascii_case(domain_b)
        }
        _ => a == b,
    }
}

/// The identity of a client that presented a verified certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientIdentity {
    /// The subject CN, when the subject has exactly one (two would make `CN=` ambiguous).
    pub common_name: Option<String>,
    /// The subject alternative names of the compared types, in certificate order; other types
    /// (otherName, directoryName, registeredID) are left out.
    pub alt_names: Vec<SanName>,
}

impl ClientIdentity {
    /// The names of a (verified) client certificate.
    pub fn of(cert: &X509Ref) -> ClientIdentity {
        let mut common_names = cert.subject_name().entries_by_nid(Nid::COMMONNAME);
        let first = common_names.next();
        let common_name = match (first, common_names.next()) {
            (Some(only), None) => only.data().as_utf8().ok().map(|s| s.to_string()),
            _ => None,
        };
        let alt_names = cert
            .subject_alt_names()
            .map(|names| {
                names
                    .iter()
                    .filter_map(|n| {
                        if let Some(uri) = n.uri() {
                            Some(SanName::Uri(uri.to_string()))
                        } else if let Some(dns) = n.dnsname() {
                            Some(SanName::Dns(dns.to_string()))
                        } else if let Some(email) = n.email() {
                            Some(SanName::Email(email.to_string()))
                        } else {
                            n.ipaddress().and_then(ip_of)
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        ClientIdentity {
            common_name,
            alt_names,
        }
    }
}

/// An `iPAddress` SAN: 4 bytes (IPv4) or 16 (IPv6); anything else is ignored.
fn ip_of(bytes: &[u8]) -> Option<SanName> {
    let ip = match bytes.len() {
        4 => IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?),
        16 => IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?),
        _ => return None,
    };
    Some(SanName::Ip(ip))
}

/// One `routes[].allowed_identities` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedIdentity {
    /// `CN=name`: the subject common name.
    CommonName(String),
    /// `uri:`, `dns:`, `email:` or `ip:`: a subject alternative name of that type.
    San(SanName),
}

/// The type prefixes an entry may start with (ASCII case ignored).
const TYPES: [&str; 5] = ["uri:", "dns:", "email:", "ip:", "CN="];

impl AllowedIdentity {
    /// Reads an entry; the error says what is wrong and what to write instead.
    pub fn parse(entry: &str) -> Result<AllowedIdentity, String> {
        let Some((kind, value)) = split_type(entry) else {
            let suggested = suggest_type(entry);
            let others: Vec<&str> = TYPES.into_iter().filter(|t| *t != suggested).collect();
            return Err(format!(
                "{entry:?} has no type: write {suggested}{entry} (or {}, for a name of \
                 another type)",
                others.join(", ")
            ));
        };
        if value.is_empty() {
            return Err(format!("{kind} needs a value"));
        }
        if value.trim() != value {
            return Err(format!("{entry:?}: remove the spaces around the name"));
        }
        let dns_like = kind == "dns:" || kind == "CN=";
        if dns_like && value.contains('*') {
            return Err(format!(
                "wildcards are not supported (entries match exactly): list each name instead \
                 of {value:?}"
            ));
        }
        Ok(match kind {
            "CN=" => AllowedIdentity::CommonName(value.to_string()),
            "uri:" => AllowedIdentity::San(SanName::Uri(value.to_string())),
            "dns:" => AllowedIdentity::San(SanName::Dns(value.to_ascii_lowercase())),
            "email:" if value.contains('@') => {
                AllowedIdentity::San(SanName::Email(value.to_string()))
            }
            "email:" => return Err(format!("{value:?} is not an email address (user@domain)")),
            _ => match value.parse::<IpAddr>() {
                Ok(ip) => AllowedIdentity::San(SanName::Ip(ip)),
                Err(_) => return Err(format!("{value:?} is not an IP address")),
            },
        })
    }

    /// Whether this entry names `client`: a name of the entry's type, compared exactly.
    pub fn matches(&self, client: &ClientIdentity) -> bool {
        match self {
            AllowedIdentity::CommonName(cn) => client.common_name.as_deref() == Some(cn.as_str()),
            AllowedIdentity::San(want) => client.alt_names.iter().any(|san| san.same_as(want)),
        }
    }
}

/// The entry's type (as written in [`TYPES`]) and the rest, or `None` when it has no known type.
fn split_type(entry: &str) -> Option<(&'static str, &str)> {
    TYPES.into_iter().find_map(|kind| {
        let head = entry.get(..kind.len())?;
        head.eq_ignore_ascii_case(kind)
            .then(|| (kind, &entry[kind.len()..]))
    })
}

/// The type an untyped entry most likely meant.
fn suggest_type(entry: &str) -> &'static str {
    if entry.parse::<IpAddr>().is_ok() {
        "ip:"
    } else if entry.contains("://") || entry.starts_with("spiffe:") {
        "uri:"
    } else if entry.contains('@') {
        "email:"
    } else {
        "dns:"
    }
}

impl fmt::Display for AllowedIdentity {
    /// The entry as written in the config (type prefix, then the name).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AllowedIdentity::CommonName(cn) => write!(f, "CN={cn}"),
            AllowedIdentity::San(SanName::Uri(v)) => write!(f, "uri:{v}"),
            AllowedIdentity::San(SanName::Dns(v)) => write!(f, "dns:{v}"),
            AllowedIdentity::San(SanName::Email(v)) => write!(f, "email:{v}"),
            AllowedIdentity::San(SanName::Ip(v)) => write!(f, "ip:{v}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client identity with this CN and these SANs.
    fn client(cn: Option<&str>, sans: Vec<SanName>) -> ClientIdentity {
        ClientIdentity {
            common_name: cn.map(str::to_string),
            alt_names: sans,
        }
    }

    /// A valid entry.
    fn entry(text: &str) -> AllowedIdentity {
        AllowedIdentity::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn each_entry_matches_only_names_of_its_type() {
        let text = "spiffe://x/alice";
        let as_each_type = [
            client(Some(text), vec![]),
            client(None, vec![SanName::Dns(text.into())]),
            client(None, vec![SanName::Email(text.into())]),
            client(None, vec![SanName::Uri(text.into())]),
        ];
        let matching = |e: &str| -> Vec<usize> {
            let e = entry(e);
            (0..as_each_type.len())
                .filter(|&i| e.matches(&as_each_type[i]))
                .collect()
        };
        assert_eq!(matching("CN=spiffe://x/alice"), [0]);
        assert_eq!(matching("uri:spiffe://x/alice"), [3]);
        let ip = client(None, vec![SanName::Dns("10.0.0.1".into())]);
        assert!(!entry("ip:10.0.0.1").matches(&ip));
        let ip = client(None, vec![SanName::Ip("10.0.0.1".parse().expect("ip"))]);
        assert!(entry("ip:10.0.0.1").matches(&ip));
        assert!(!entry("dns:10.0.0.1").matches(&ip));
    }

    #[test]
    fn comparison_is_exact_except_for_dns_case() {
        let c = client(
            Some("Web"),
            vec![
                SanName::Uri("spiffe://x/ns/app/sa/web".into()),
                SanName::Dns("Web.Internal".into()),
                SanName::Email("Alice@Example.COM".into()),
                SanName::Ip("fd00::1".parse().expect("ip")),
            ],
        );
        for yes in [
            "uri:spiffe://x/ns/app/sa/web",
            "dns:web.internal",
            "DNS:WEB.INTERNAL",
            "email:Alice@example.com",
            "ip:fd00:0::1",
            "CN=Web",
            "cn=Web",
        ] {
            assert!(entry(yes).matches(&c), "{yes}");
        }
        for no in [
            "uri:spiffe://x/ns/app/sa/we",
            "uri:spiffe://x/ns/app/sa/web/",
            "uri:SPIFFE://x/ns/app/sa/web",
            "uri:spiffe://x/ns/app",
            "dns:internal",
            "dns:eb.internal",
            "email:alice@example.com",
            "ip:fd00::2",
            "ip:253.0.0.1",
            "CN=web",
            "CN=We",
        ] {
            assert!(!entry(no).matches(&c), "{no}");
        }
    }

    /// A self-signed certificate with these subject CNs and SANs (`dns`, `uri`, `email`, `ip`).
    fn cert(common_names: &[&str], sans: &[(&str, &str)]) -> boring::x509::X509 {
        use boring::ec::{EcGroup, EcKey};
        use boring::hash::MessageDigest;
        use boring::pkey::PKey;
        use boring::x509::extension::SubjectAlternativeName;
        use boring::x509::{X509Name, X509};
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).expect("group");
        let key = PKey::from_ec_key(EcKey::generate(&group).expect("key")).expect("pkey");
        let mut name = X509Name::builder().expect("name");
        for cn in common_names {
            name.append_entry_by_nid(Nid::COMMONNAME, cn).expect("cn");
        }
        let name = name.build();
        let mut b = X509::builder().expect("builder");
        b.set_subject_name(&name).expect("subject");
        b.set_issuer_name(&name).expect("issuer");
        b.set_pubkey(&key).expect("pubkey");
        let now = boring::asn1::Asn1Time::days_from_now(0).expect("now");
        let later = boring::asn1::Asn1Time::days_from_now(1).expect("later");
        b.set_not_before(&now).expect("not before");
        b.set_not_after(&later).expect("not after");
        if !sans.is_empty() {
            let mut alt = SubjectAlternativeName::new();
            for (kind, value) in sans {
                match *kind {
                    "dns" => alt.dns(value),
                    "uri" => alt.uri(value),
                    "email" => alt.email(value),
                    _ => alt.ip(value),
                };
            }
            let ext = alt.build(&b.x509v3_context(None, None)).expect("san");
            b.append_extension(&ext).expect("append");
        }
        b.sign(&key, MessageDigest::sha256()).expect("sign");
        b.build()
    }

    #[test]
    fn a_certificate_gives_each_name_with_its_type() {
        let c = cert(
            &["web"],
            &[
                ("uri", "spiffe://x/web"),
                ("dns", "web.internal"),
                ("email", "web@x.internal"),
                ("ip", "10.0.0.1"),
                ("ip", "fd00::1"),
            ],
        );
        assert_eq!(
            ClientIdentity::of(&c),
            client(
                Some("web"),
                vec![
                    SanName::Uri("spiffe://x/web".into()),
                    SanName::Dns("web.internal".into()),
                    SanName::Email("web@x.internal".into()),
                    SanName::Ip("10.0.0.1".parse().expect("ip")),
                    SanName::Ip("fd00::1".parse().expect("ip")),
                ]
            )
        );
    }

    #[test]
    fn a_common_name_counts_only_when_the_subject_has_exactly_one() {
        let two = ClientIdentity::of(&cert(&["a", "b"], &[]));
        assert_eq!(two.common_name, None);
        assert!(!entry("CN=a").matches(&two) && !entry("CN=b").matches(&two));
        let none = ClientIdentity::of(&cert(&[], &[("dns", "a")]));
        assert!(!entry("CN=a").matches(&none));
    }

    #[test]
    fn entries_print_as_written() {
        for text in [
            "uri:spiffe://x/a",
            "dns:a.internal",
            "email:a@b.c",
            "ip:10.0.0.1",
            "CN=a",
        ] {
            assert_eq!(entry(text).to_string(), text);
        }
    }

    #[test]
    fn untyped_entries_get_the_likely_type_suggested() {
        let error = AllowedIdentity::parse("spiffe://x/alice").expect_err("untyped");
        assert_eq!(
            error,
            "\"spiffe://x/alice\" has no type: write uri:spiffe://x/alice (or dns:, email:, \
             ip:, CN=, for a name of another type)"
        );
        for (text, suggested) in [
            ("fd00::1", "ip:fd00::1"),
            ("a@b.c", "email:a@b.c"),
            ("web", "dns:web"),
            ("https://a/b", "uri:https://a/b"),
        ] {
            let error = AllowedIdentity::parse(text).expect_err(text);
            assert!(error.contains(&format!("write {suggested} ")), "{error}");
        }
    }
}
