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
pub mod health;
pub mod local;
pub mod models;
pub mod postgres;
pub mod refresh;
pub mod rows;
pub mod source;
pub mod values;

/// Every key lives in a [`Secret`] (the leaf module [`crate::secret`], which config and the
/// database code import too).
pub use crate::secret::Secret;
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
}

/// Reads the salt key: the variable named by `credentials.salt_key_env`, else
/// `LITELLM_MASTER_KEY`, as LiteLLM does. Empty values count as unset.
pub fn salt_key_from_env(salt_key_env: &str) -> Option<Secret> {
    [salt_key_env, crate::config::MASTER_KEY_ENV]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
        .map(Secret::new)
}
