//! Entra ID with a federated credential (Azure Workload Identity): LiteLLM's
//! `azure_ad_token: oidc/{source}/{name}` with `tenant_id` and `client_id`. The token the pod's
//! platform issues it (a Kubernetes projected service-account token, rotated on disk) is read
//! afresh at every mint and posted as the client assertion of a client-credentials grant
//! (`client_assertion_type` `urn:ietf:params:oauth:client-assertion-type:jwt-bearer`), which
//! Entra ID exchanges for an access token, as LiteLLM and Azure's SDKs do.
//!
//! The sources a pod has, as LiteLLM names them: `oidc/file/{absolute path}` (the path must be
//! inside `LITELLM_OIDC_ALLOWED_CREDENTIAL_DIRS`, comma-separated, default `/var/run/secrets`
//! and `/run/secrets`: LiteLLM's allowlist, checked again on the resolved path at each read so a
//! link cannot lead out of it), `oidc/env/{VAR}` (the token in a variable) and
//! `oidc/env_path/{VAR}` (a variable naming the file, as `AZURE_FEDERATED_TOKEN_FILE` does).
//! LiteLLM's other sources (`google`, `github`, `circleci`, …) fetch from a CI or cloud
//! metadata service a sidecar does not run on: refused, naming the source. `tenant_id` and
//! `client_id` default to `AZURE_TENANT_ID` and `AZURE_CLIENT_ID`, which the workload-identity
//! webhook sets in the pod, as LiteLLM reads them.

use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::token_client::{request_token, MintError};
use super::{Mint, Minted};
use crate::config::UpstreamUrl;
use crate::percent;
use crate::secret::Secret;

/// The environment variable listing the directories `oidc/file/` may read from.
pub const ALLOWED_DIRS_ENV: &str = "LITELLM_OIDC_ALLOWED_CREDENTIAL_DIRS";
/// LiteLLM's default allowlist: where container platforms mount credentials.
const DEFAULT_ALLOWED_DIRS: [&str; 2] = ["/var/run/secrets", "/run/secrets"];
/// The most a federated token file may hold.
const MAX_ASSERTION_BYTES: u64 = 64 * 1024;

/// Where the platform's token is read, at each mint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AssertionSource {
    /// A file inside the allowlist.
    File(PathBuf),
    /// An environment variable holding the token.
    Env(String),
    /// An environment variable naming the file.
    EnvPath(String),
}

impl AssertionSource {
    /// The source an `oidc/…` value names; errors name the form, never a value.
    pub fn parse(reference: &str) -> Result<AssertionSource, String> {
        let rest = reference.strip_prefix("oidc/").unwrap_or(reference);
        let (kind, name) = rest.split_once('/').unwrap_or((rest, ""));
        if name.is_empty() {
            return Err("azure_ad_token: an oidc/ token names its source and what to read (oidc/file/{path}, oidc/env/{VAR}, oidc/env_path/{VAR})".into());
        }
        match kind {
            "file" => {
                let path = PathBuf::from(name);
                if !path.is_absolute() {
                    return Err("azure_ad_token: an oidc/file/ path must be absolute (oidc/file//var/run/secrets/…)".into());
                }
                if !allowed_dirs().iter().any(|dir| path.starts_with(dir)) {
                    return Err(format!("azure_ad_token: the oidc/file/ path is outside the allowed credential directories (set {ALLOWED_DIRS_ENV})"));
                }
                Ok(AssertionSource::File(path))
            }
            "env" => Ok(AssertionSource::Env(name.to_string())),
            "env_path" => Ok(AssertionSource::EnvPath(name.to_string())),
            other => Err(format!(
                "azure_ad_token: oidc/{other}/ tokens are not served (a sidecar serves oidc/file/, oidc/env/ and oidc/env_path/)"
            )),
        }
    }

    /// The token, read now. Errors say where, never what.
    fn read(&self) -> Result<Secret, MintError> {
        let failed = |what: String| MintError::Grant(format!("federated token: {what}"));
        let token = match self {
            AssertionSource::Env(var) => std::env::var(var)
                .map(Secret::new)
                .map_err(|_| failed(format!("environment variable {var} is not set")))?,
            AssertionSource::File(path) => read_allowed(path).map_err(failed)?,
            AssertionSource::EnvPath(var) => {
                let path = std::env::var_os(var)
                    .ok_or_else(|| failed(format!("environment variable {var} is not set")))?;
                Secret::read_file(Path::new(&path), MAX_ASSERTION_BYTES).map_err(failed)?
            }
        };
        let trimmed = token.expose().trim();
        if trimmed.is_empty() {
            return Err(failed("it is empty".into()));
        }
        Ok(Secret::new(trimmed.to_string()))
    }
}

/// The allowlist: `LITELLM_OIDC_ALLOWED_CREDENTIAL_DIRS`, else LiteLLM's defaults.
fn allowed_dirs() -> Vec<PathBuf> {
    match std::env::var(ALLOWED_DIRS_ENV) {
        Ok(list) if !list.trim().is_empty() => list
            .split(',')
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .collect(),
        _ => DEFAULT_ALLOWED_DIRS.iter().map(PathBuf::from).collect(),
    }
}

/// `path`'s text, when the path it resolves to (links followed) is inside the allowlist
/// (resolved too).
fn read_allowed(path: &Path) -> Result<Secret, String> {
    let shown = path.display();
    let resolved = path
        .canonicalize()
        .map_err(|e| format!("cannot read {shown}: {e}"))?;
    let inside = allowed_dirs()
        .iter()
        .filter_map(|dir| dir.canonicalize().ok())
        .any(|dir| resolved.starts_with(dir));
    if !inside {
        return Err(format!(
            "{shown} leads outside the allowed credential directories"
        ));
    }
    Secret::read_file(&resolved, MAX_ASSERTION_BYTES)
}

/// The client-credentials grant with a federated client assertion.
pub struct FederatedGrant {
    /// The tenant's token endpoint.
    pub token_url: UpstreamUrl,
    /// `client_id`.
    pub client_id: String,
    /// `azure_scope`.
    pub scope: String,
    /// Where the assertion is read.
    pub source: AssertionSource,
}

#[async_trait::async_trait]
impl Mint for FederatedGrant {
    fn kind(&self) -> &'static str {
        "entra_id_federated"
    }

    async fn mint(&self) -> Result<Minted, MintError> {
        let assertion = self.source.read()?;
        let form = Secret::new(format!(
            "grant_type=client_credentials&client_id={}&scope={}\
             &client_assertion_type={}&client_assertion={}",
            percent::encode(&self.client_id),
            percent::encode(&self.scope),
            percent::encode("urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
            percent::encode(assertion.expose()),
        ));
        let body = Bytes::copy_from_slice(form.expose().as_bytes());
        request_token(&self.token_url, body).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sources_a_pod_has_are_read_and_the_others_refused_by_name() {
        assert_eq!(
            AssertionSource::parse("oidc/env/FED_TOKEN"),
            Ok(AssertionSource::Env("FED_TOKEN".into()))
        );
        assert_eq!(
            AssertionSource::parse("oidc/env_path/AZURE_FEDERATED_TOKEN_FILE"),
            Ok(AssertionSource::EnvPath(
                "AZURE_FEDERATED_TOKEN_FILE".into()
            ))
        );
        let file = "oidc/file//var/run/secrets/azure/tokens/azure-identity-token";
        assert_eq!(
            AssertionSource::parse(file),
            Ok(AssertionSource::File(
                "/var/run/secrets/azure/tokens/azure-identity-token".into()
            ))
        );
        for (reference, said) in [
            ("oidc/file/relative/token", "absolute"),
            ("oidc/file//etc/passwd", "outside the allowed"),
            (
                "oidc/google/https://aud",
                "oidc/google/ tokens are not served",
            ),
            ("oidc/env", "names its source"),
        ] {
            let err = AssertionSource::parse(reference).unwrap_err();
            assert!(err.contains(said), "{reference}: {err}");
        }
    }

    #[test]
    fn a_file_is_read_trimmed_and_bounded_and_a_missing_variable_is_named() {
        let dir = std::env::temp_dir().join(format!("sidecar-fed-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("token");
        std::fs::write(&path, "eyJ.header.sig\n").expect("write");
        let read = Secret::read_file(&path, MAX_ASSERTION_BYTES).expect("read");
        assert_eq!(read.expose(), "eyJ.header.sig\n");
        std::fs::write(&path, vec![b'a'; MAX_ASSERTION_BYTES as usize + 1]).expect("write");
        let err = Secret::read_file(&path, MAX_ASSERTION_BYTES).unwrap_err();
        assert!(err.contains("more than"), "{err}");
        std::fs::remove_dir_all(&dir).expect("clean up");

        let missing = AssertionSource::Env("SIDECAR_TEST_NO_SUCH_VARIABLE".into());
        let err = missing.read().unwrap_err().to_string();
        assert!(
            err.contains("SIDECAR_TEST_NO_SUCH_VARIABLE is not set"),
            "{err}"
        );
    }
}
