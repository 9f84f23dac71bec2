//! Configuration: one YAML file (`conf/gateway.yaml` by default) → an immutable [`Config`].
//!
//! Flow: read the file → parse YAML → `parse::parse` walks it strictly (unknown keys are
//! errors) and collects **every** error with its YAML path → a typed [`Config`] whose values have
//! all passed validation. Environment fallbacks users know from LiteLLM (`LITELLM_SALT_KEY`,
//! `LITELLM_MASTER_KEY`, `SSL_CERT_FILE`) are applied here, nowhere else.

mod credentials;
mod fanout;
mod network;
mod parse;
pub mod reader;
mod routes;
mod schema;
mod spend;
mod url;

use std::path::Path;

use sha2::{Digest, Sha256};

pub use reader::{ConfigError, Diagnostics, Env};
pub use schema::*;
pub use url::{redacted, UpstreamUrl};

/// Every problem found in one configuration file: `FILE: N errors`, then one indented line
/// per error.
#[derive(Debug, thiserror::Error)]
#[error("{}", self.report())]
pub struct ConfigErrors {
    /// The file the errors are in.
    pub file: String,
    /// The errors, each with its YAML path.
    pub errors: Vec<ConfigError>,
}

impl ConfigErrors {
    fn report(&self) -> String {
        let n = self.errors.len();
        let plural = if n == 1 { "" } else { "s" };
        let mut text = format!("{}: {n} error{plural}\n", self.file);
        for e in &self.errors {
            text += &format!("  {e}\n");
        }
        text
    }
}

impl Config {
    /// Loads and validates `path`, reading environment fallbacks from the process environment.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigErrors {
            file: path.display().to_string(),
            errors: vec![ConfigError {
                path: "(file)".into(),
                message: format!("cannot read: {e}"),
            }],
        })?;
        let base_dir = path.parent().unwrap_or(Path::new("."));
        Config::from_yaml(&text, base_dir, &|name| std::env::var(name).ok()).map_err(|errors| {
            ConfigErrors {
                file: path.display().to_string(),
                errors,
            }
        })
    }

    /// Validates YAML text; `env` supplies environment variables.
    pub fn from_yaml(text: &str, base_dir: &Path, env: &Env) -> Result<Config, Vec<ConfigError>> {
        let doc: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| {
            let at = e
                .location()
                .map(|l| format!("line {} column {}", l.line(), l.column()))
                .unwrap_or_else(|| "(document)".into());
            vec![ConfigError {
                path: at,
                message: format!("invalid YAML: {e}"),
            }]
        })?;
        let mut diag = Diagnostics::default();
        match parse::parse(&doc, base_dir, env, &mut diag) {
            Some(mut config) if diag.is_empty() => {
                config.digest = hex::encode(Sha256::digest(text.as_bytes()));
                Ok(config)
            }
            _ => Err(diag.errors),
        }
    }
}

#[cfg(test)]
mod tests;
