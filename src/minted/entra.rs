//! Azure OpenAI with Microsoft Entra ID: LiteLLM's `tenant_id`, `client_id` and `client_secret`
//! (the client-credentials grant at `{authority}/{tenant_id}/oauth2/v2.0/token`, scope
//! `azure_scope`, default `https://cognitiveservices.azure.com/.default`), or a fixed
//! `azure_ad_token`. The token goes upstream as `Authorization: Bearer` instead of `api-key`.
//!
//! As LiteLLM decides: an `api_key` wins over both; the three Entra fields over a fixed token.
//! The authority host is `AZURE_AUTHORITY_HOST` (as Azure's own SDKs read it), default
//! `https://login.microsoftonline.com`. An `azure_ad_token` of the form `oidc/…` with
//! `tenant_id` and `client_id` is a federated credential (Azure Workload Identity, see
//! [`super::federated`]). `azure_username` and `azure_password` with `client_id` are the
//! resource-owner password grant, in the `organizations` tenant, as LiteLLM (through
//! azure-identity) asks for it. A row with none of these uses the host's managed identity when
//! the sidecar is told to (see [`super::managed_identity`]); `DefaultAzureCredential`'s other
//! sources are not served.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::federated::{AssertionSource, FederatedGrant};
use super::token_client::{self, request_token, MintError};
use super::{shared, FixedToken, Mint, Minted, MintedCredential};
use crate::config::UpstreamUrl;
use crate::percent;
use crate::secret::Secret;

/// Where Entra ID issues tokens unless `AZURE_AUTHORITY_HOST` says otherwise.
pub const DEFAULT_AUTHORITY_HOST: &str = "https://login.microsoftonline.com";
/// The environment variable naming the authority host (Azure's SDKs read the same).
pub const AUTHORITY_HOST_ENV: &str = "AZURE_AUTHORITY_HOST";
/// The scope Azure OpenAI tokens are asked for unless `azure_scope` says otherwise.
pub const DEFAULT_SCOPE: &str = "https://cognitiveservices.azure.com/.default";

/// A grant whose form is the same at every mint: client credentials with a secret
/// (`entra_id`), or a user's name and password (`entra_id_password`).
struct FormGrant {
    kind: &'static str,
    token_url: UpstreamUrl,
    form: Secret,
}

impl FormGrant {
    /// The credential `name` minting with `form` at `url` (parsed: `token_url`), shared with
    /// every deployment whose grant is the same.
    fn shared(
        name: &str,
        kind: &'static str,
        url: &str,
        token_url: UpstreamUrl,
        form: Secret,
    ) -> Arc<MintedCredential> {
        let print = fingerprint(&[kind, url, form.expose()]);
        shared(print, || {
            let grant = FormGrant {
                kind,
                token_url,
                form,
            };
            MintedCredential::new(name.to_string(), Box::new(grant))
        })
    }
}

/// The tenant LiteLLM's username-and-password flow uses (azure-identity's default for it).
const PASSWORD_TENANT: &str = "organizations";

#[async_trait::async_trait]
impl Mint for FormGrant {
    fn kind(&self) -> &'static str {
        self.kind
    }

    async fn mint(&self) -> Result<Minted, MintError> {
        let form = Bytes::copy_from_slice(self.form.expose().as_bytes());
        request_token(&self.token_url, form).await
    }
}

/// The minted credential named `name` that `values` (a row's decrypted fields, from which the
/// Entra fields are removed) describe, if any: the three Entra fields, else `azure_ad_token`.
/// `authority` is the authority host (see [`authority_host`]). Errors name fields, never values.
pub fn from_fields(
    name: &str,
    values: &mut HashMap<String, Secret>,
    authority: &str,
) -> Result<Option<Arc<MintedCredential>>, String> {
    let mut take = |field: &str| values.remove(field).filter(|v| !v.is_empty());
    let (tenant, client, secret) = (take("tenant_id"), take("client_id"), take("client_secret"));
    let fixed = take("azure_ad_token");
    let (username, password) = (take("azure_username"), take("azure_password"));
    let scope = take("azure_scope");
    if username.is_some() != password.is_some() || (username.is_some() && client.is_none()) {
        return Err("azure_username, azure_password and client_id must be set together".into());
    }
    let scope = scope.as_ref().map_or(DEFAULT_SCOPE, |s| s.expose());
    let token_url = |tenant: &str| {
        let url = format!(
            "{}/{}/oauth2/v2.0/token",
            authority.trim_end_matches('/'),
            percent::encode(tenant)
        );
        token_client::token_url(&url)
            .map(|parsed| (url, parsed))
            .map_err(|e| e.to_string())
    };
    match (tenant, client, secret, fixed, username.zip(password)) {
        (Some(tenant), Some(client), Some(secret), _, _) => {
            let (url, token_url) = token_url(tenant.expose())?;
            let form = Secret::new(format!(
                "grant_type=client_credentials&client_id={}&client_secret={}&scope={}",
                percent::encode(client.expose()),
                percent::encode(secret.expose()),
                percent::encode(scope),
            ));
            Ok(Some(FormGrant::shared(
                name, "entra_id", &url, token_url, form,
            )))
        }
        // LiteLLM's order: client credentials, then a user's name and password (in the
        // `organizations` tenant, as azure-identity asks), then a federated token.
        (_, Some(client), None, _, Some((username, password))) => {
            let (url, token_url) = token_url(PASSWORD_TENANT)?;
            let form = Secret::new(format!(
                "grant_type=password&client_id={}&username={}&password={}&scope={}",
                percent::encode(client.expose()),
                percent::encode(username.expose()),
                percent::encode(password.expose()),
                percent::encode(scope),
            ));
            let grant = FormGrant::shared(name, "entra_id_password", &url, token_url, form);
            Ok(Some(grant))
        }
        (tenant, client, None, Some(token), _) if token.expose().starts_with("oidc/") => {
            let source = AssertionSource::parse(token.expose())?;
            let from_env = |var: &str| std::env::var(var).ok().filter(|v| !v.is_empty());
            let tenant = tenant.map(|t| t.expose().to_string());
            let client = client.map(|c| c.expose().to_string());
            let (Some(tenant), Some(client_id)) = (
                tenant.or_else(|| from_env("AZURE_TENANT_ID")),
                client.or_else(|| from_env("AZURE_CLIENT_ID")),
            ) else {
                return Err("azure_ad_token: an oidc/ token needs tenant_id and client_id (on the row, or AZURE_TENANT_ID and AZURE_CLIENT_ID)".into());
            };
            let (url, token_url) = token_url(&tenant)?;
            let print = fingerprint(&["entra_oidc", &url, &client_id, scope, token.expose()]);
            Ok(Some(shared(print, || {
                let grant = FederatedGrant {
                    token_url,
                    client_id,
                    scope: scope.to_string(),
                    source,
                };
                MintedCredential::new(name.to_string(), Box::new(grant))
            })))
        }
        (None, None, None, Some(token), _) => {
            let print = fingerprint(&["azure_ad_token", name, token.expose()]);
            Ok(Some(shared(print, || {
                MintedCredential::new(name.to_string(), Box::new(FixedToken(token)))
            })))
        }
        (None, None, None, None, _) => Ok(None),
        _ => Err("tenant_id, client_id and client_secret must be set together".into()),
    }
}

/// The authority host: `AZURE_AUTHORITY_HOST`, else Entra ID's public one.
pub fn authority_host() -> String {
    std::env::var(AUTHORITY_HOST_ENV)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| DEFAULT_AUTHORITY_HOST.to_string())
}

/// SHA-256 over `parts`, each length-prefixed.
pub(super) fn fingerprint(parts: &[&str]) -> [u8; 32] {
    let mut digest = Sha256::new();
    for part in parts {
        digest.update((part.len() as u64).to_be_bytes());
        digest.update(part.as_bytes());
    }
    digest.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::secret::fields as values;

    #[test]
    fn three_fields_make_a_client_credentials_grant_and_leave_the_others() {
        let mut row = values(&[
            ("tenant_id", "t-1"),
            ("client_id", "c-1"),
            ("client_secret", "s3cret"),
            ("api_version", "2024-10-21"),
        ]);
        let minted = from_fields("az", &mut row, "https://login.example.com/")
            .expect("valid")
            .expect("a grant");
        assert_eq!(minted.report()["grant"], "entra_id");
        assert_eq!(minted.report()["state"], "not_minted_yet");
        assert!(row.contains_key("api_version") && !row.contains_key("client_secret"));
        assert!(!format!("{minted:?}").contains("s3cret"));
    }

    #[test]
    fn partial_grants_and_oidc_tokens_from_elsewhere_are_refused() {
        let mut partial = values(&[("tenant_id", "t"), ("client_id", "c")]);
        assert!(from_fields("a", &mut partial, DEFAULT_AUTHORITY_HOST)
            .unwrap_err()
            .contains("together"));
        let mut oidc = values(&[
            ("tenant_id", "t"),
            ("client_id", "c"),
            ("azure_ad_token", "oidc/github/my-audience"),
        ]);
        let err = from_fields("a", &mut oidc, DEFAULT_AUTHORITY_HOST).unwrap_err();
        assert!(
            err.contains("oidc/github/") && !err.contains("my-audience"),
            "{err}"
        );
        let federated = values(&[
            ("tenant_id", "t"),
            ("client_id", "c"),
            ("azure_ad_token", "oidc/env/FED_TOKEN"),
        ]);
        let minted = from_fields("a", &mut federated.clone(), DEFAULT_AUTHORITY_HOST)
            .expect("valid")
            .expect("a grant");
        assert_eq!(minted.report()["grant"], "entra_id_federated");
        let mut secret_wins = federated;
        secret_wins.insert("client_secret".into(), Secret::new("s".into()));
        let minted = from_fields("b", &mut secret_wins, DEFAULT_AUTHORITY_HOST)
            .expect("valid")
            .expect("a grant");
        assert_eq!(minted.report()["grant"], "entra_id", "as in LiteLLM");
        assert!(from_fields("a", &mut values(&[]), DEFAULT_AUTHORITY_HOST)
            .expect("valid")
            .is_none());
    }

    #[test]
    fn a_users_name_and_password_make_a_password_grant_after_client_credentials() {
        let mut row = values(&[
            ("client_id", "c"),
            ("azure_username", "u@example.com"),
            ("azure_password", "pw-secret"),
        ]);
        let minted = from_fields("p", &mut row, DEFAULT_AUTHORITY_HOST)
            .expect("valid")
            .expect("a grant");
        assert_eq!(minted.report()["grant"], "entra_id_password");
        assert!(!format!("{minted:?}").contains("pw-secret"));
        for partial in [
            &[("client_id", "c"), ("azure_username", "u")][..],
            &[("azure_username", "u"), ("azure_password", "p")][..],
        ] {
            let err = from_fields("p", &mut values(partial), DEFAULT_AUTHORITY_HOST).unwrap_err();
            assert!(err.contains("together"), "{err}");
        }
    }

    #[test]
    fn an_ip_literal_authority_is_refused() {
        let mut row = values(&[
            ("tenant_id", "t"),
            ("client_id", "c"),
            ("client_secret", "s"),
        ]);
        let err = from_fields("a", &mut row, "https://127.0.0.1:8443").unwrap_err();
        assert!(err.contains("host name"), "{err}");
    }

    #[tokio::test]
    async fn a_fixed_token_is_sent_as_a_bearer_token() {
        let mut row = values(&[("azure_ad_token", "eyJfixed")]);
        let minted = from_fields("fixed", &mut row, DEFAULT_AUTHORITY_HOST)
            .expect("valid")
            .expect("a token");
        minted.ready().await.expect("ready");
        let header = minted.header().expect("usable");
        assert_eq!(header.as_bytes(), b"Bearer eyJfixed");
        assert!(header.is_sensitive());
    }
}
