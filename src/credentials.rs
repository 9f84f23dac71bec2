//! Provider credentials: how they are stored (LiteLLM's encrypted formats), decrypted once off
//! the request path, and served from an in-memory snapshot.
//!
//! - [`cipher`]: LiteLLM's four at-rest formats, read and written.
//! - [`values`]: one credential row (`credential_values` + `credential_info`) → a [`Credential`].
//! - [`local`]: the embedded store (a YAML file, plus `os.environ/VAR` references).
//! - [`postgres`]: LiteLLM's credential and model tables.
//! - [`models`]: one model row (`litellm_params`) → a [`models::Deployment`].
//! - [`rows`]: stored rows → a load's outcome (shared by the database and fan-out sources).
//! - [`source`]: the trait every credential source implements, and a load's outcome.
//! - [`cache`]: the `ArcSwap` snapshot the request path reads without a lock.
//! - [`refresh`]: the background refresh (poll + LISTEN/NOTIFY, backoff, last-known-good).

pub mod cache;
pub mod cipher;
pub mod local;
pub mod metrics;
pub mod models;
pub mod postgres;
pub mod refresh;
pub mod rows;
pub mod source;
pub mod values;

/// Every key lives in a [`Secret`] (the leaf module [`crate::secret`], which config and the
/// database code import too).
pub use crate::secret::Secret;

use std::sync::{Arc, OnceLock};

use http::HeaderValue;

use crate::aws::AwsCredential;
use crate::minted::{MintedCredential, Unavailable};
use crate::providers::{AuthStyle, BEARER_PREFIX};

pub use cache::{CredentialCache, Lookup, Snapshot};

/// A decrypted credential, ready to inject.
#[derive(Debug)]
pub struct Credential {
    /// The credential's name (`credential_name`).
    pub name: String,
    /// `credential_info.custom_llm_provider`, when set (informational).
    pub provider: Option<String>,
    /// The key injected upstream.
    pub api_key: Secret,
    /// `api_base`, when set.
    pub api_base: Option<String>,
    /// `api_version`, when set (Azure's `api-version` query parameter).
    pub api_version: Option<String>,
    /// The key as header values, made on first use ([`Credential::header_value`]).
    pub header_values: HeaderValues,
    /// A token minted from the row's longer-lived secret (Entra ID), sent as
    /// `Authorization: Bearer` in place of `api_key` (then empty); for AWS keys assumed through
    /// STS, the minted temporary keys (the same as `aws`'s).
    pub minted: Option<Arc<MintedCredential>>,
    /// AWS keys (`aws_*` fields) that sign each request instead of a key being sent (`api_key`
    /// then empty): see [`crate::aws`].
    pub aws: Option<Arc<AwsCredential>>,
}

/// A credential's key as the header values the auth styles send (`Bearer KEY`, `KEY`), made
/// once per snapshot rather than once per request, and zeroized when the snapshot (and the last
/// request using it) lets go of them. A request's copy is a reference count, not a copy of the
/// key.
#[derive(Debug, Default)]
pub struct HeaderValues {
    bearer: OnceLock<Option<HeaderValue>>,
    plain: OnceLock<Option<HeaderValue>>,
}

impl Credential {
    /// The key as `auth` sends it (its prefix, then the key), marked sensitive; `None` when the
    /// key holds bytes a header cannot.
    pub fn header_value(&self, auth: &AuthStyle) -> Option<HeaderValue> {
        let prefix = auth.value_prefix();
        if let Some(minted) = &self.minted {
            return (prefix == BEARER_PREFIX)
                .then(|| minted.header().ok())
                .flatten();
        }
        let make = || self.api_key.to_header_value(prefix).ok();
        match prefix {
            BEARER_PREFIX => self.header_values.bearer.get_or_init(make).clone(),
            "" => self.header_values.plain.get_or_init(make).clone(),
            _ => make(),
        }
    }
}

impl Credential {
    /// Whether the credential can be sent now: always for a key; for a minted token, while one
    /// is held that has not expired (else why not, naming the credential and the cause).
    pub fn usable(&self) -> Result<(), Unavailable> {
        match &self.minted {
            Some(minted) => minted.check(),
            None => Ok(()),
        }
    }

    /// The auth style a request with this credential uses where `auth` is the provider's: a
    /// minted token on Azure goes as `Authorization: Bearer` instead of `api-key`; AWS keys sign
    /// the request whatever the provider's style.
    pub fn auth_for(&self, auth: &AuthStyle) -> AuthStyle {
        if self.aws.is_some() {
            return AuthStyle::AwsSigV4;
        }
        match auth {
            AuthStyle::Azure if self.minted.is_some() => AuthStyle::AzureBearer,
            other => other.clone(),
        }
    }
}

/// Reads the salt key: the variable named by `credentials.salt_key_env`, else
/// `LITELLM_MASTER_KEY`, as LiteLLM does. Empty values count as unset.
pub fn salt_key_from_env(salt_key_env: &str) -> Option<Secret> {
    [salt_key_env, crate::config::MASTER_KEY_ENV]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
        .map(Secret::new)
}
