//! Client access control for the node-local form: which client addresses may use the sidecar
//! (globally and per route), and optional client tokens.
//!
//! The config holds only SHA-256 hashes of tokens; a presented token is hashed and compared with
//! every configured hash in constant time. Tokens are never logged; the token header is removed
//! before forwarding (it is in every route's strip list).

pub mod litellm_keys;

use std::net::IpAddr;

use http::HeaderName;
use ipnet::IpNet;
use pingora::http::RequestHeader;
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

/// An IP network, `ADDR/PREFIX` (an [`IpNet`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr(IpNet);

impl std::fmt::Display for Cidr {
    /// `ADDR/PREFIX`, as `ipnet` prints it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl Cidr {
    /// Parses `10.0.0.0/8`, `::1/128`, or a bare address (a single host).
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let text = text.trim();
        if let Ok(addr) = text.parse::<IpAddr>() {
            return Ok(Cidr(IpNet::from(addr)));
        }
        let (addr, _) = text.split_once('/').unwrap_or((text, ""));
        let max = match addr.trim().parse::<IpAddr>() {
            Ok(IpAddr::V4(_)) => 32,
            Ok(IpAddr::V6(_)) => 128,
            Err(_) => return Err(format!("{text:?} is not an IP network like 10.0.0.0/8")),
        };
        text.parse::<IpNet>()
            .map(Cidr)
            .map_err(|_| format!("{text:?}: prefix length must be 0 to {max}"))
    }

    /// Whether `ip` is inside this network (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.0.contains(&ip)
    }
}

/// Whether `ip` is allowed by `list` (an empty list allows everyone).
pub fn allowed(list: &[Cidr], ip: IpAddr) -> bool {
    list.is_empty() || list.iter().any(|c| c.contains(ip))
}

/// Client tokens: where they are presented and the hashes accepted.
#[derive(Debug, Clone)]
pub struct ClientTokens {
    /// The header carrying the token (`authorization` means `Authorization: Bearer TOKEN`).
    pub header: HeaderName,
    /// SHA-256 of each accepted token.
    pub hashes: Vec<[u8; 32]>,
}

/// The outcome of a token check.
#[derive(Debug, PartialEq, Eq)]
pub enum TokenCheck {
    /// A configured token was presented.
    Accepted,
    /// No token was presented (401).
    Missing,
    /// A token was presented that matches none (403).
    Rejected,
}

impl ClientTokens {
    /// Parses a hex SHA-256 digest.
    pub fn parse_hash(text: &str) -> Result<[u8; 32], String> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut out).map_err(|_| {
            "must be a SHA-256 digest: 64 hex digits (e.g. from `printf %s TOKEN | sha256sum`)"
                .to_string()
        })?;
        Ok(out)
    }

    /// Checks the token `req` presents. Every configured hash is compared, in constant time.
    pub fn check(&self, req: &RequestHeader) -> TokenCheck {
        let Some(value) = req.headers.get(&self.header).map(|v| v.as_bytes()) else {
            return TokenCheck::Missing;
        };
        let token = if self.header == http::header::AUTHORIZATION {
            match value.get(..7) {
                Some(scheme) if scheme.eq_ignore_ascii_case(b"bearer ") => &value[7..],
                _ => return TokenCheck::Rejected,
            }
        } else {
            value
        };
        if token.is_empty() {
            return TokenCheck::Missing;
        }
        let presented: [u8; 32] = Sha256::digest(token).into();
        // Every hash is compared (no early exit), each in constant time.
        let matched = self
            .hashes
            .iter()
            .fold(Choice::from(0), |seen, hash| seen | hash.ct_eq(&presented));
        if bool::from(matched) {
            TokenCheck::Accepted
        } else {
            TokenCheck::Rejected
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_match_v4_v6_and_mapped_addresses() {
        let net = Cidr::parse("10.1.0.0/16").expect("valid");
        assert!(net.contains("10.1.200.3".parse().expect("ip")));
        assert!(!net.contains("10.2.0.1".parse().expect("ip")));
        assert!(net.contains("::ffff:10.1.0.9".parse().expect("ip")));
        assert!(Cidr::parse("0.0.0.0/0")
            .expect("valid")
            .contains("8.8.8.8".parse().expect("ip")));
        let host = Cidr::parse("127.0.0.1").expect("valid");
        assert!(host.contains("127.0.0.1".parse().expect("ip")));
        assert!(!host.contains("127.0.0.2".parse().expect("ip")));
        assert!(Cidr::parse("fd00::/8")
            .expect("valid")
            .contains("fd12::1".parse().expect("ip")));
        for bad in ["10.0.0.0/33", "nope", "::/129", "1.2.3.4/x"] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
        assert!(allowed(&[], "1.2.3.4".parse().expect("ip")));
    }

    #[test]
    fn tokens_are_checked_by_hash() {
        let hash = |t: &str| -> [u8; 32] { Sha256::digest(t.as_bytes()).into() };
        let tokens = ClientTokens {
            header: http::header::AUTHORIZATION,
            hashes: vec![hash("tok-a"), hash("tok-b")],
        };
        let req = |value: Option<&str>| {
            let mut r = RequestHeader::build("GET", b"/", None).expect("request");
            if let Some(v) = value {
                r.insert_header("authorization", v).expect("header");
            }
            r
        };
        assert_eq!(
            tokens.check(&req(Some("Bearer tok-b"))),
            TokenCheck::Accepted
        );
        assert_eq!(
            tokens.check(&req(Some("bearer tok-a"))),
            TokenCheck::Accepted
        );
        assert_eq!(
            tokens.check(&req(Some("Bearer tok-c"))),
            TokenCheck::Rejected
        );
        assert_eq!(
            tokens.check(&req(Some("Basic dG9rLWE="))),
            TokenCheck::Rejected
        );
        assert_eq!(tokens.check(&req(None)), TokenCheck::Missing);
        let hex: String = hash("tok-a").iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            ClientTokens::parse_hash(&hex).expect("valid"),
            hash("tok-a")
        );
        assert!(ClientTokens::parse_hash("abc").is_err());
        assert!(ClientTokens::parse_hash(&"zz".repeat(32)).is_err());
    }
}
