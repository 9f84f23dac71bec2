//! AWS Signature Version 4 (`AWS4-HMAC-SHA256`) for one request, as AWS verifies it for services
//! other than S3: the canonical request (method; the path as sent, normalized and encoded once
//! more; the query's parameters decoded, encoded and sorted; the signed headers; the body's
//! SHA-256), the string to sign over its digest and the credential scope
//! (`{date}/{region}/{service}/aws4_request`), and the signature with the key derived from the
//! secret access key for that scope.
//!
//! The signed headers are `host`, `x-amz-date` and, with a session token, `x-amz-security-token`:
//! what AWS requires, and nothing a proxy or tracer may add later (`traceparent`,
//! `x-request-id`). No `x-amz-content-sha256` is sent, so the service hashes the body it
//! receives, and the signature holds only for the body actually sent.
//!
//! HMAC-SHA256 comes from the `hmac` crate over `sha2` (both RustCrypto, already in the tree
//! through `hkdf`): pure Rust, a context on the stack per HMAC, where BoringSSL's `HMAC_CTX`
//! through `boring` would allocate one per call (five HMACs a signature). The key derived for a
//! day, region and service (four HMACs) is kept per [`Keys`] and made again when the day changes;
//! it is zeroized when replaced or dropped, like the secret it comes from.

use std::sync::Mutex;
use std::time::SystemTime;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::percent;
use crate::secret::Secret;

/// The algorithm's name in the `Authorization` header and the string to sign.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// One set of AWS credentials, and the signing key last derived from them.
pub struct Keys {
    /// The access key id (`AKIA…`, `ASIA…` for temporary ones): not secret, it names the key.
    pub access_key_id: String,
    secret_access_key: Secret,
    session_token: Option<Secret>,
    /// `{date}/{region}/{service}` and the key derived for it.
    derived: Mutex<Option<(String, Zeroizing<[u8; 32]>)>>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("access_key_id", &self.access_key_id)
            .field("session_token", &self.session_token.is_some())
            .finish_non_exhaustive()
    }
}

/// What a request to sign consists of, as it is sent.
pub struct Request<'a> {
    /// `GET`, `POST`, …
    pub method: &'a str,
    /// The path as sent (percent-encoded as on the wire).
    pub path: &'a str,
    /// The query as sent, without `?`.
    pub query: Option<&'a str>,
    /// The `Host` header's value.
    pub host: &'a str,
    /// The body as sent.
    pub body: &'a [u8],
}

/// The headers a signature adds. Their values are secret where they hold the signature or the
/// session token: [`Secret`]s, made into sensitive header values by the caller.
pub struct Signed {
    /// `X-Amz-Date`: the signing time, `YYYYMMDDTHHMMSSZ`.
    pub amz_date: String,
    /// `X-Amz-Security-Token`, with temporary credentials.
    pub security_token: Option<Secret>,
    /// `Authorization: AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…`.
    pub authorization: Secret,
}

impl Keys {
    /// Credentials from their parts; `session_token` with temporary credentials.
    pub fn new(
        access_key_id: String,
        secret_access_key: Secret,
        session_token: Option<Secret>,
    ) -> Keys {
        Keys {
            access_key_id,
            secret_access_key,
            session_token,
            derived: Mutex::new(None),
        }
    }

    /// Feeds every part of the keys, the secret ones too, into `digest` (each length-prefixed):
    /// what tells one set of keys from another, for a fingerprint that is only ever a digest.
    pub fn digest_into(&self, digest: &mut Sha256) {
        let token = self.session_token.as_ref().map_or("", Secret::expose);
        for part in [&self.access_key_id, self.secret_access_key.expose(), token] {
            digest.update((part.len() as u64).to_be_bytes());
            digest.update(part.as_bytes());
        }
    }

    /// Whether requests carry a session token.
    pub fn has_session_token(&self) -> bool {
        self.session_token.is_some()
    }

    /// Signs `request` for `service` in `region` at `now`.
    pub fn sign(
        &self,
        request: &Request<'_>,
        region: &str,
        service: &str,
        now: SystemTime,
    ) -> Signed {
        let amz_date = amz_date(now);
        let date = &amz_date[..8];
        let token = self.session_token.as_ref().map(Secret::expose);
        let signed_headers = if token.is_some() {
            "host;x-amz-date;x-amz-security-token"
        } else {
            "host;x-amz-date"
        };
        let mut canonical = String::with_capacity(256 + request.path.len());
        canonical.push_str(request.method);
        canonical.push('\n');
        canonical.push_str(&canonical_path(request.path));
        canonical.push('\n');
        canonical.push_str(&canonical_query(request.query.unwrap_or("")));
        canonical.push_str("\nhost:");
        canonical.push_str(request.host.trim());
        canonical.push_str("\nx-amz-date:");
        canonical.push_str(&amz_date);
        if let Some(token) = token {
            canonical.push_str("\nx-amz-security-token:");
            canonical.push_str(token.trim());
        }
        canonical.push_str("\n\n");
        canonical.push_str(signed_headers);
        canonical.push('\n');
        canonical.push_str(&hex::encode(Sha256::digest(request.body)));
        let scope = format!("{date}/{region}/{service}/aws4_request");
        let string_to_sign = format!(
            "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
            hex::encode(Sha256::digest(canonical.as_bytes()))
        );
        let key = self.signing_key(date, region, service);
        let signature = hex::encode(hmac(&key[..], string_to_sign.as_bytes()));
        Signed {
            authorization: Secret::new(format!(
                "{ALGORITHM} Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
                self.access_key_id
            )),
            security_token: self.session_token.clone(),
            amz_date,
        }
    }

    /// The key for `date`, `region` and `service`: the one derived last when it is for the same
    /// scope, else derived now (and kept).
    fn signing_key(&self, date: &str, region: &str, service: &str) -> Zeroizing<[u8; 32]> {
        let scope = format!("{date}/{region}/{service}");
        let mut derived = self.derived.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((kept, key)) = derived.as_ref() {
            if *kept == scope {
                return key.clone();
            }
        }
        let secret = Zeroizing::new(format!("AWS4{}", self.secret_access_key.expose()));
        let mut key = Zeroizing::new(hmac(secret.as_bytes(), date.as_bytes()));
        for part in [region, service, "aws4_request"] {
            *key = hmac(&key[..], part.as_bytes());
        }
        *derived = Some((scope, key.clone()));
        key
    }
}

/// HMAC-SHA256 of `data` under `key`.
#[allow(clippy::expect_used, reason = "HMAC takes a key of any length")]
fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// `now` as SigV4 writes it: `YYYYMMDDTHHMMSSZ`, UTC.
pub fn amz_date(now: SystemTime) -> String {
    humantime::format_rfc3339_seconds(now)
        .to_string()
        .replace(['-', ':'], "")
}

/// The canonical path: `path` (as sent) without empty, `.` and `..` segments, then encoded once
/// more (`%3A` becomes `%253A`), as AWS and botocore compute it for every service but S3.
fn canonical_path(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            other => segments.push(other),
        }
    }
    let mut normalized = String::with_capacity(path.len() + 1);
    normalized.push('/');
    normalized.push_str(&segments.join("/"));
    if path.ends_with('/') && !segments.is_empty() {
        normalized.push('/');
    }
    percent::encode_path(&normalized)
}

/// The canonical query: each `name=value` decoded and encoded as SigV4 encodes (everything but
/// unreserved characters), sorted by name then value, joined by `&`.
fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let canonical = |part: &str| percent::encode(&percent::decode(part));
            (canonical(name), canonical(value))
        })
        .collect();
    pairs.sort();
    let pairs: Vec<String> = pairs.into_iter().map(|(n, v)| format!("{n}={v}")).collect();
    pairs.join("&")
}

#[cfg(test)]
mod tests;
