//! Azure managed identity: a token for Azure OpenAI from the host's own identity, through Azure's
//! instance metadata service (IMDS), for Azure deployments whose row holds no key, token or Entra
//! ID fields, when the sidecar is told to (`AZURE_CREDENTIAL=ManagedIdentityCredential`, the
//! variable LiteLLM reads to choose its Azure credential type). `AZURE_CLIENT_ID` names a
//! user-assigned identity; without it the host's system-assigned identity is used, as
//! azure-identity's `ManagedIdentityCredential` does.
//!
//! The request is azure-identity's: `GET {imds}/metadata/identity/oauth2/token?api-version=
//! 2018-02-01&resource={resource}[&client_id={id}]` with `Metadata: true`, where `{resource}` is
//! the row's `azure_scope` (default `https://cognitiveservices.azure.com/.default`) without its
//! `/.default`. `{imds}` is `http://169.254.169.254`, the link-local address only the host's own
//! hypervisor answers, or `AZURE_POD_IDENTITY_AUTHORITY_HOST` (azure-identity's override), which
//! must be that address or `localhost` (for tests): the metadata service speaks plain HTTP, so
//! no other host may be asked. IMDS's answer is OAuth2's (`expires_in` as a string), and is
//! cached, refreshed and failed closed as every minted token is ([`super`]).
//!
//! Not served: App Service's and Container Apps' `IDENTITY_ENDPOINT`, Azure Arc, Cloud Shell,
//! and `DefaultAzureCredential`'s developer credentials (CLI, PowerShell, VS Code).

use std::sync::Arc;

use http::header::{HeaderName, HeaderValue};

use super::token_client::{self, oauth_error_code, read_token, MintError};
use super::{shared, Mint, Minted, MintedCredential};
use crate::config::UpstreamUrl;
use crate::percent;

/// The variable naming the Azure credential type, as LiteLLM reads it.
pub const CREDENTIAL_TYPE_ENV: &str = "AZURE_CREDENTIAL";
/// The credential type that asks for the host's managed identity.
pub const MANAGED_IDENTITY: &str = "ManagedIdentityCredential";
/// The variable naming a user-assigned identity's client id.
pub const CLIENT_ID_ENV: &str = "AZURE_CLIENT_ID";
/// azure-identity's override of the metadata service's address.
pub const IMDS_HOST_ENV: &str = "AZURE_POD_IDENTITY_AUTHORITY_HOST";
/// The metadata service's address.
pub const DEFAULT_IMDS_HOST: &str = "http://169.254.169.254";
/// IMDS's token path and the API version azure-identity asks for.
const TOKEN_PATH: &str = "/metadata/identity/oauth2/token";
const API_VERSION: &str = "2018-02-01";

/// The grant: one GET of the metadata service.
struct ImdsGrant {
    url: UpstreamUrl,
    /// The path and query asked for.
    target: String,
}

#[async_trait::async_trait]
impl Mint for ImdsGrant {
    fn kind(&self) -> &'static str {
        "azure_managed_identity"
    }

    async fn mint(&self) -> Result<Minted, MintError> {
        let metadata = (
            HeaderName::from_static("metadata"),
            HeaderValue::from_static("true"),
        );
        let (status, body) = token_client::get(&self.url, &self.target, &[metadata]).await?;
        if status != 200 {
            return Err(MintError::Refused {
                endpoint: self.url.host_header().to_string(),
                status,
                code: oauth_error_code(&body),
            });
        }
        read_token(&self.url, &body)
    }
}

/// Whether the sidecar is told to use the host's managed identity (`AZURE_CREDENTIAL`).
pub fn enabled() -> bool {
    std::env::var(CREDENTIAL_TYPE_ENV).is_ok_and(|v| v.trim() == MANAGED_IDENTITY)
}

/// The managed-identity credential named `name` for `scope`, shared with every deployment that
/// asks for the same identity and resource; an error names the variable that is wrong.
pub fn credential(name: &str, scope: &str) -> Result<Arc<MintedCredential>, String> {
    let host = std::env::var(IMDS_HOST_ENV)
        .ok()
        .filter(|h| !h.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_IMDS_HOST.to_string());
    let url =
        token_client::metadata_service_url(&host).map_err(|e| format!("{IMDS_HOST_ENV}: {e}"))?;
    let client_id = std::env::var(CLIENT_ID_ENV)
        .ok()
        .filter(|c| !c.trim().is_empty());
    let target = target(scope, client_id.as_deref());
    let print = super::entra::fingerprint(&["azure_managed_identity", &host, &target]);
    Ok(shared(print, || {
        MintedCredential::new(name.to_string(), Box::new(ImdsGrant { url, target }))
    }))
}

/// IMDS's path and query for `scope` and an optional user-assigned identity.
fn target(scope: &str, client_id: Option<&str>) -> String {
    let resource = scope.strip_suffix("/.default").unwrap_or(scope);
    let mut target = format!(
        "{TOKEN_PATH}?api-version={API_VERSION}&resource={}",
        percent::encode(resource)
    );
    if let Some(id) = client_id {
        target.push_str(&format!("&client_id={}", percent::encode(id)));
    }
    target
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_is_azure_identitys() {
        assert_eq!(
            target("https://cognitiveservices.azure.com/.default", None),
            "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fcognitiveservices.azure.com"
        );
        assert!(target("api://x", Some("a b")).ends_with("&resource=api%3A%2F%2Fx&client_id=a%20b"));
    }
}
