//! AWS credentials as LiteLLM stores them (`aws_*` fields on model and credential rows), and the
//! signature they put on each Bedrock request.
//!
//! - [`sigv4`]: the SigV4 signer (canonical request, derived key kept per day).
//! - [`sts`]: STS `AssumeRole` for `aws_role_name`, a [`crate::minted::Mint`] whose temporary keys
//!   the minted cache holds and renews ahead of expiry, off the request path.
//! - [`bedrock`]: Bedrock's model ids (`bedrock/converse/…`), regions and runtime endpoint.
//! - [`eventstream`]: AWS event-stream framing, read from Bedrock's stream answers.
//!
//! Read from a row: `aws_access_key_id` with `aws_secret_access_key` (and `aws_session_token`),
//! `aws_region_name`, `aws_role_name` (with `aws_session_name`, `aws_external_id`,
//! `aws_sts_endpoint`), `aws_bedrock_runtime_endpoint`. Refused, naming the field:
//! `aws_profile_name` and `aws_web_identity_token` (files and federation the sidecar does not
//! read), a key id without its secret or the reverse, a role without keys to assume it with
//! (the sidecar does not use its host's own AWS identity). The secret access key and the session
//! token are [`Secret`]s: never printed, zeroized when the snapshot lets go of them.

pub mod bedrock;
pub mod eventstream;
pub mod sigv4;
pub mod sts;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use http::header::{HeaderName, HeaderValue, AUTHORIZATION, HOST};
use pingora::http::RequestHeader;
use serde_json::{json, Value};

use crate::minted::{MintedCredential, Unavailable};
use crate::secret::Secret;
use sigv4::Keys;

/// The service name Bedrock's runtime API is signed for.
pub const BEDROCK_SERVICE: &str = "bedrock";

/// Fields LiteLLM may store that ask for an AWS identity the sidecar does not take.
const REFUSED_FIELDS: [(&str, &str); 2] = [
    (
        "aws_profile_name",
        "profiles from ~/.aws files are not read",
    ),
    (
        "aws_web_identity_token",
        "web identity federation is not supported; store keys (and aws_role_name)",
    ),
];

/// Request headers of a client's own signature, removed before the request is signed again.
const CLIENT_SIGNATURE_HEADERS: [&str; 3] =
    ["x-amz-date", "x-amz-security-token", "x-amz-content-sha256"];

/// Where a credential's keys come from.
#[derive(Debug, Clone)]
enum KeySource {
    /// Keys stored on the row (`aws_session_token` included when set).
    Stored(Arc<Keys>),
    /// Temporary keys from STS `AssumeRole`, held by the minted cache.
    AssumedRole(Arc<MintedCredential>),
}

/// AWS credentials that sign requests: the keys and the region they sign for.
#[derive(Debug, Clone)]
pub struct AwsCredential {
    keys: KeySource,
    /// `aws_region_name`, when the row sets it (a deployment always has one).
    pub region: Option<String>,
    /// `aws_bedrock_runtime_endpoint`, when the row sets it.
    pub runtime_endpoint: Option<String>,
}

impl AwsCredential {
    /// The same keys signing for `region`.
    pub fn in_region(&self, region: String) -> AwsCredential {
        AwsCredential {
            region: Some(region),
            ..self.clone()
        }
    }

    /// The minted credential holding assumed-role keys, if the keys are assumed.
    pub fn minted(&self) -> Option<&Arc<MintedCredential>> {
        match &self.keys {
            KeySource::AssumedRole(minted) => Some(minted),
            KeySource::Stored(_) => None,
        }
    }

    /// Kind and region, for `/config` (never a key).
    pub fn report(&self) -> Value {
        let keys = match &self.keys {
            KeySource::Stored(keys) if keys.has_session_token() => "session_keys",
            KeySource::Stored(_) => "access_keys",
            KeySource::AssumedRole(_) => "assumed_role",
        };
        json!({ "kind": "aws_sigv4", "keys": keys, "region": self.region })
    }

    /// Signs `req` (already rewritten: its final path, query and `Host`) and `body` (as sent)
    /// for `service`: removes any signature headers the client sent and sets `X-Amz-Date`,
    /// `X-Amz-Security-Token` (with temporary keys) and `Authorization`, both secret ones marked
    /// sensitive. Fails, naming the credential, when assumed keys are not held.
    pub fn sign(
        &self,
        name: &str,
        req: &mut RequestHeader,
        body: &[u8],
        service: &str,
    ) -> Result<(), Unavailable> {
        let keys = match &self.keys {
            KeySource::Stored(keys) => keys.clone(),
            KeySource::AssumedRole(minted) => minted.aws_keys()?,
        };
        let unavailable = |cause: &str| Unavailable {
            credential: name.to_string(),
            cause: cause.to_string(),
        };
        let region = self
            .region
            .as_deref()
            .ok_or_else(|| unavailable("no region"))?;
        for header in CLIENT_SIGNATURE_HEADERS {
            req.remove_header(header);
        }
        drop_presigned_params(req).map_err(|_| unavailable("the request target is not a URI"))?;
        let host = req
            .headers
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let request = sigv4::Request {
            method: req.method.as_str(),
            path: req.uri.path(),
            query: req.uri.query(),
            host: &host,
            body,
        };
        let signed = keys.sign(&request, region, service, SystemTime::now());
        let failed = |_| unavailable("the signature cannot be sent in a header");
        let date = HeaderValue::from_str(&signed.amz_date).map_err(failed)?;
        let authorization = signed.authorization.to_header_value("").map_err(failed)?;
        let mut set = |name: &'static str, value: HeaderValue| {
            req.insert_header(HeaderName::from_static(name), value)
                .map_err(|_| unavailable("cannot set the signature headers"))
        };
        set("x-amz-date", date)?;
        if let Some(token) = &signed.security_token {
            set(
                "x-amz-security-token",
                token.to_header_value("").map_err(failed)?,
            )?;
        }
        req.insert_header(AUTHORIZATION, authorization)
            .map_err(|_| unavailable("cannot set the signature headers"))
    }
}

/// Removes a client's presigned-URL parameters (`X-Amz-Signature`, `X-Amz-Credential`,
/// `X-Amz-Security-Token`, … in any case or encoding) from `req`'s query: one signature per
/// request, the sidecar's, and no client token sent on.
fn drop_presigned_params(req: &mut RequestHeader) -> Result<(), http::uri::InvalidUri> {
    let Some(query) = req.uri.query() else {
        return Ok(());
    };
    let presigned = |pair: &&str| {
        let name = crate::percent::decode(pair.split('=').next().unwrap_or(""));
        name.as_bytes()
            .get(..6)
            .is_some_and(|p| p.eq_ignore_ascii_case(b"x-amz-"))
    };
    if !query.split('&').any(|pair| presigned(&pair)) {
        return Ok(());
    }
    let kept: Vec<&str> = query.split('&').filter(|p| !presigned(p)).collect();
    let target = match kept.join("&") {
        rest if rest.is_empty() => req.uri.path().to_string(),
        rest => format!("{}?{rest}", req.uri.path()),
    };
    req.set_uri(http::Uri::try_from(target)?);
    Ok(())
}

/// The AWS credential that a row's decrypted `values` describe, if they hold any `aws_*` key
/// field; the fields read are removed from `values`. `name` names the credential in reports.
/// Errors name fields, never values.
pub fn from_fields(
    name: &str,
    values: &mut HashMap<String, Secret>,
) -> Result<Option<AwsCredential>, String> {
    for (field, why) in REFUSED_FIELDS {
        if values.get(field).is_some_and(|v| !v.is_empty()) {
            return Err(format!("{field}: {why}"));
        }
    }
    let mut take = |field: &str| values.remove(field).filter(|v| !v.is_empty());
    let key_id = take("aws_access_key_id");
    let secret = take("aws_secret_access_key");
    let token = take("aws_session_token");
    let region = take("aws_region_name").map(|r| r.expose().to_string());
    let role = take("aws_role_name");
    let session_name = take("aws_session_name");
    let external_id = take("aws_external_id");
    let sts_endpoint = take("aws_sts_endpoint");
    let runtime_endpoint = take("aws_bedrock_runtime_endpoint").map(|e| e.expose().to_string());
    if let Some(region) = &region {
        bedrock::check_region(region).map_err(|e| format!("aws_region_name: {e}"))?;
    }
    let stored = match (key_id, secret) {
        (Some(id), Some(secret)) => Keys::new(id.expose().to_string(), secret, token),
        (Some(_), None) => {
            return Err("aws_access_key_id is set without aws_secret_access_key".into())
        }
        (None, Some(_)) => {
            return Err("aws_secret_access_key is set without aws_access_key_id".into())
        }
        (None, None) if role.is_some() => {
            return Err(
                "aws_role_name needs aws_access_key_id and aws_secret_access_key to \
                        assume it with (the host's own AWS identity is not used)"
                    .into(),
            )
        }
        (None, None) if token.is_some() => {
            return Err("aws_session_token is set without aws_access_key_id".into())
        }
        (None, None) => return Ok(None),
    };
    let keys = match role {
        None => KeySource::Stored(Arc::new(stored)),
        Some(role) => {
            let region = region
                .as_deref()
                .ok_or("aws_role_name needs aws_region_name (STS is called in that region)")?;
            let assume = sts::AssumeRole {
                role_arn: role.expose().to_string(),
                session_name: session_name.map(|s| s.expose().to_string()),
                external_id: external_id.map(|s| s.expose().to_string()),
                endpoint: sts_endpoint.map(|s| s.expose().to_string()),
                region: region.to_string(),
                keys: stored,
            };
            KeySource::AssumedRole(sts::minted(name, assume)?)
        }
    };
    Ok(Some(AwsCredential {
        keys,
        region,
        runtime_endpoint,
    }))
}

#[cfg(test)]
mod tests;
