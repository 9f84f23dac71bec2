//! Vertex AI with a service account: LiteLLM's `vertex_credentials` (the account's JSON key, as a
//! string), `vertex_project` and `vertex_location`. An access token is minted with the JWT-bearer
//! grant (RFC 7523): an RS256-signed assertion (`iss` the account's `client_email`, `scope`
//! `https://www.googleapis.com/auth/cloud-platform`, `aud` its `token_uri`, one hour) posted to
//! the account's own `token_uri`, as Google's client libraries do. The token goes upstream as
//! `Authorization: Bearer`.
//!
//! The project is `vertex_project`, else the account's `project_id`; the location
//! `vertex_location`, else `us-central1` (LiteLLM's default). A `vertex_credentials` that is
//! not JSON but the path of a file that exists is read from that file (as LiteLLM does; at most
//! [`MAX_KEY_FILE_BYTES`], into a zeroizing buffer, whenever the snapshot is built: at start,
//! on a reload (SIGHUP), and when the rows change). Only service-account keys are served: an authorized-user or an
//! external-account JSON is refused, naming the field.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use boring::hash::MessageDigest;
use boring::pkey::{PKey, Private};
use boring::sign::Signer;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::token_client::{self, request_token, MintError};
use super::{shared, Mint, Minted, MintedCredential};
use crate::config::UpstreamUrl;
use crate::percent;
use crate::secret::Secret;

/// The scope Vertex AI tokens are asked for.
pub const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// Google's token endpoint, for a key that names none.
pub const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
/// LiteLLM's location when `vertex_location` is unset.
pub const DEFAULT_LOCATION: &str = "us-central1";
/// How long an assertion is valid (Google accepts at most an hour).
const ASSERTION_LIFETIME: Duration = Duration::from_secs(3600);

/// Where a Vertex deployment is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VertexPlace {
    /// The Google Cloud project.
    pub project: String,
    /// The region (`us-central1`) or `global`.
    pub location: String,
}

impl VertexPlace {
    /// Vertex's public base for the location (`https://{location}-aiplatform.googleapis.com`,
    /// `https://aiplatform.googleapis.com` for `global`).
    pub fn public_base(&self) -> String {
        if self.location == "global" {
            "https://aiplatform.googleapis.com".to_string()
        } else {
            format!("https://{}-aiplatform.googleapis.com", self.location)
        }
    }

    /// The OpenAI-compatible API's path below the base.
    pub fn openai_path(&self) -> String {
        format!(
            "/v1/projects/{}/locations/{}/endpoints/openapi",
            percent::encode(&self.project),
            percent::encode(&self.location)
        )
    }
}

/// The JWT-bearer grant of one service account.
struct JwtBearer {
    client_email: String,
    key_id: Option<String>,
    key: PKey<Private>,
    token_uri: String,
    token_url: UpstreamUrl,
}

impl JwtBearer {
    /// The signed assertion for a grant made now.
    fn assertion(&self) -> Result<Secret, MintError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let mut header = json!({ "alg": "RS256", "typ": "JWT" });
        if let Some(kid) = &self.key_id {
            header["kid"] = Value::from(kid.as_str());
        }
        let claims = json!({
            "iss": self.client_email,
            "scope": SCOPE,
            "aud": self.token_uri,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME.as_secs(),
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let failed = |_| MintError::Grant("cannot sign the service account's assertion".into());
        let mut signer = Signer::new(MessageDigest::sha256(), &self.key).map_err(failed)?;
        signer.update(signing_input.as_bytes()).map_err(failed)?;
        let signature = signer.sign_to_vec().map_err(failed)?;
        Ok(Secret::new(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature)
        )))
    }
}

#[async_trait::async_trait]
impl Mint for JwtBearer {
    fn kind(&self) -> &'static str {
        "vertex_service_account"
    }

    async fn mint(&self) -> Result<Minted, MintError> {
        let assertion = self.assertion()?;
        let form = format!(
            "grant_type={}&assertion={}",
            percent::encode("urn:ietf:params:oauth:grant-type:jwt-bearer"),
            assertion.expose()
        );
        request_token(&self.token_url, Bytes::from(form)).await
    }
}

/// The most a key file named by `vertex_credentials` may hold.
pub const MAX_KEY_FILE_BYTES: u64 = 64 * 1024;

/// The path `value` names, when it is not JSON but a file that exists.
fn key_file(value: &str) -> Option<&Path> {
    let value = value.trim();
    let path = Path::new(value);
    (!value.starts_with('{') && path.is_file()).then_some(path)
}

/// The fields of a service account's JSON key that the grant reads (the rest are ignored).
/// `private_key` is borrowed as raw JSON and unescaped by [`Secret::from_json_string`], so the
/// key's text is only ever held in buffers zeroized when dropped (BoringSSL clears what it frees,
/// so the parsed key is too).
#[derive(Deserialize)]
struct ServiceAccount<'a> {
    #[serde(rename = "type")]
    kind: Option<String>,
    client_email: Option<String>,
    #[serde(borrow)]
    private_key: Option<&'a RawValue>,
    private_key_id: Option<String>,
    token_uri: Option<String>,
    project_id: Option<String>,
}

/// The minted credential and place that `values` (a row's decrypted fields, from which the
/// Vertex fields are removed) describe, if they hold `vertex_credentials`. Errors name fields,
/// never values.
pub fn from_fields(
    name: &str,
    values: &mut HashMap<String, Secret>,
) -> Result<Option<(Arc<MintedCredential>, VertexPlace)>, String> {
    let project = values.remove("vertex_project").filter(|v| !v.is_empty());
    let location = values.remove("vertex_location").filter(|v| !v.is_empty());
    let Some(json) = values.remove("vertex_credentials") else {
        return Ok(None);
    };
    let json = match key_file(json.expose()) {
        Some(path) => Secret::read_file(path, MAX_KEY_FILE_BYTES)
            .map_err(|e| format!("vertex_credentials: {e}"))?,
        None => json,
    };
    let account: ServiceAccount = serde_json::from_str(json.expose()).map_err(|_| {
        "vertex_credentials: not a service account's JSON key, nor the path of a file".to_string()
    })?;
    if account.kind.as_deref() != Some("service_account") {
        return Err(
            "vertex_credentials: only service-account keys (\"type\": \"service_account\") are served"
                .into(),
        );
    }
    let client_email = account
        .client_email
        .ok_or("vertex_credentials: no client_email")?;
    let pem = account
        .private_key
        .ok_or("vertex_credentials: no private_key")?;
    let pem = Secret::from_json_string(pem.get())
        .ok_or("vertex_credentials: private_key is not a JSON string")?;
    let key = PKey::private_key_from_pem(pem.expose().as_bytes())
        .map_err(|_| "vertex_credentials: private_key is not a PEM private key")?;
    drop(pem);
    let token_uri = account
        .token_uri
        .unwrap_or_else(|| DEFAULT_TOKEN_URI.to_string());
    let token_url = token_client::token_url(&token_uri)
        .map_err(|e| format!("vertex_credentials: token_uri: {e}"))?;
    let project = project
        .map(|p| p.expose().to_string())
        .or(account.project_id)
        .ok_or("no vertex_project, and vertex_credentials has no project_id")?;
    let place = VertexPlace {
        project,
        location: location.map_or(DEFAULT_LOCATION.to_string(), |l| l.expose().to_string()),
    };
    let print: [u8; 32] = Sha256::new()
        .chain_update(b"vertex\0")
        .chain_update(json.expose().as_bytes())
        .finalize()
        .into();
    let key_id = account.private_key_id;
    let minted = shared(print, || {
        let grant = JwtBearer {
            client_email,
            key_id,
            key,
            token_uri,
            token_url,
        };
        MintedCredential::new(name.to_string(), Box::new(grant))
    });
    Ok(Some((minted, place)))
}

#[cfg(test)]
mod tests;
