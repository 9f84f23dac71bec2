//! Turns one credential row (LiteLLM's `credential_values` + `credential_info` shape) into a
//! [`Credential`], decrypting every string value.
//!
//! Fail closed: a value that does not decrypt is an error, never passed through as if it were
//! plaintext (LiteLLM does pass it through). Values with control characters are refused, since
//! they could split a header.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::cipher::{decrypt, Keys};
use super::{Credential, Secret};
use crate::config::Env;
use crate::minted::entra;

/// The prefix of LiteLLM's environment references: `os.environ/OPENAI_API_KEY`.
pub const ENV_REFERENCE_PREFIX: &str = "os.environ/";

/// Text in a load error that marks a value whose authentication failed (wrong salt key or a
/// tampered value), as opposed to a malformed one.
pub const AUTHENTICATION_FAILURE: &str = "authentication failed";

/// How the string values of a row are to be read.
pub struct ValueReader<'a> {
    /// Keys derived from the salt key; `None` when no salt key is set.
    pub keys: Option<&'a Keys>,
    /// Looks up `os.environ/VAR` references; `None` where they are not allowed.
    pub env: Option<&'a Env>,
}

impl ValueReader<'_> {
    /// Decrypts (or resolves) one stored value of field `field`.
    pub fn read(&self, field: &str, stored: &str) -> Result<Secret, String> {
        let value = if let Some(var) = stored.strip_prefix(ENV_REFERENCE_PREFIX) {
            let env = self
                .env
                .ok_or_else(|| format!("{field}: os.environ/ references are not allowed here"))?;
            let value = env(var)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| format!("{field}: environment variable {var} is not set"))?;
            Secret::new(value)
        } else {
            let keys = self.keys.ok_or_else(|| {
                format!("{field}: encrypted, but no salt key is set (LITELLM_SALT_KEY or LITELLM_MASTER_KEY)")
            })?;
            decrypt(stored, keys).map_err(|e| format!("{field}: cannot decrypt: {e}"))?
        };
        if self.env.is_none() && value.expose().starts_with(ENV_REFERENCE_PREFIX) {
            // A database writer must not be able to make the sidecar read its environment.
            return Err(format!(
                "{field}: environment references are not resolved for database rows"
            ));
        }
        if value.expose().chars().any(|c| c.is_control()) {
            return Err(format!(
                "{field}: contains control characters (CR, LF, tab, …)"
            ));
        }
        Ok(value)
    }

    /// Decrypts (or resolves) every string value of a JSON object. Booleans and numbers, which
    /// LiteLLM leaves unencrypted, are skipped. Errors name the field, never the value.
    pub fn read_all(&self, values: &Map<String, Value>) -> Result<HashMap<String, Secret>, String> {
        values
            .iter()
            .filter_map(|(field, value)| value.as_str().map(|stored| (field, stored)))
            .map(|(field, stored)| Ok((field.clone(), self.read(field, stored)?)))
            .collect()
    }

    /// Reads `litellm_params` as LiteLLM's config.yaml writes them: a key (`api_key`) is
    /// ciphertext or an `os.environ/` reference, as every value in the credential store; the
    /// other fields (`model`, `api_base`, `api_version`, …) may also be plain text. Numbers and
    /// booleans are skipped. Errors name the field, never the value.
    pub fn read_config_params(
        &self,
        values: &Map<String, Value>,
    ) -> Result<HashMap<String, Secret>, String> {
        values
            .iter()
            .filter_map(|(field, value)| value.as_str().map(|stored| (field, stored)))
            .map(|(field, stored)| {
                let value = if field == "api_key" || stored.starts_with(ENV_REFERENCE_PREFIX) {
                    self.read(field, stored)?
                } else if stored.chars().any(|c| c.is_control()) {
                    return Err(format!("{field}: contains control characters"));
                } else {
                    Secret::new(stored.to_string())
                };
                Ok((field.clone(), value))
            })
            .collect()
    }

    /// Builds a credential from `credential_values` (every string encrypted or an env reference)
    /// and `credential_info` (plain). Errors name fields, never values.
    pub fn credential(
        &self,
        name: &str,
        values: &Map<String, Value>,
        info: Option<&Map<String, Value>>,
    ) -> Result<Credential, String> {
        let mut values = self.read_all(values)?;
        let api_key = values.remove("api_key");
        let api_base = values.remove("api_base").map(|v| v.expose().to_string());
        let api_version = values.remove("api_version").map(|v| v.expose().to_string());
        // As LiteLLM: a key wins over Entra ID fields and AWS keys (which are then left
        // unused). AWS keys on a credential row serve the Bedrock deployments that link it.
        let (api_key, minted, aws) = match api_key.filter(|k| !k.is_empty()) {
            Some(key) => (key, None, None),
            None => match crate::aws::from_fields(name, &mut values)? {
                Some(aws) => {
                    let minted = aws.minted().cloned();
                    (Secret::new(String::new()), minted, Some(Arc::new(aws)))
                }
                None => {
                    let minted = entra::from_fields(name, &mut values, &entra::authority_host())?
                        .ok_or(
                        "credential_values has no api_key (nor Entra ID fields, nor \
                             aws_access_key_id with aws_secret_access_key)",
                    )?;
                    (Secret::new(String::new()), Some(minted), None)
                }
            },
        };
        let provider = info
            .and_then(|i| i.get("custom_llm_provider"))
            .and_then(Value::as_str)
            // Display casing ("Azure") from LiteLLM's dashboard, read as LiteLLM reads it.
            .map(str::to_ascii_lowercase);
        Ok(Credential {
            name: name.to_string(),
            provider,
            api_key,
            api_base,
            api_version,
            header_values: Default::default(),
            aws,
            minted,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::cipher::{encrypt, Format};
    use super::*;

    fn keys() -> Keys {
        Keys::derive(&Secret::new("sk-1234".into()))
    }

    #[test]
    fn decrypts_values_and_reads_provider() {
        let keys = keys();
        let values = serde_json::json!({
            "api_key": encrypt("sk-test", Format::V3, &keys),
            "api_version": encrypt("2024-10-21", Format::Nacl, &keys),
            "timeout": 30,
        });
        let info = serde_json::json!({ "custom_llm_provider": "Azure" });
        let reader = ValueReader {
            keys: Some(&keys),
            env: None,
        };
        let c = reader
            .credential("az", values.as_object().unwrap(), info.as_object())
            .expect("valid");
        assert_eq!(c.api_key.expose(), "sk-test");
        assert_eq!(c.api_version.as_deref(), Some("2024-10-21"));
        assert_eq!(c.provider.as_deref(), Some("azure"));
    }

    #[test]
    fn authentication_failures_are_recognisable() {
        let text = super::super::cipher::DecryptError::Authentication.to_string();
        assert!(text.contains(AUTHENTICATION_FAILURE), "{text}");
    }

    #[test]
    fn plaintext_is_never_passed_through() {
        let keys = keys();
        let values = serde_json::json!({ "api_key": "sk-plaintext-key" });
        let reader = ValueReader {
            keys: Some(&keys),
            env: None,
        };
        let err = reader
            .credential("x", values.as_object().unwrap(), None)
            .unwrap_err();
        assert!(err.contains("api_key: cannot decrypt"), "{err}");
        assert!(!err.contains("sk-plaintext-key"));
    }

    #[test]
    fn control_characters_are_refused() {
        let keys = keys();
        let reader = ValueReader {
            keys: Some(&keys),
            env: None,
        };
        for bad in ["sk-a\r\nX-Evil: 1", "sk\tb", "sk\u{7f}"] {
            let err = reader
                .read("api_key", &encrypt(bad, Format::V3, &keys))
                .unwrap_err();
            assert!(err.contains("control characters"), "{err}");
        }
    }

    #[test]
    fn env_references_resolve_only_where_allowed() {
        let env = |name: &str| (name == "MY_KEY").then(|| "sk-env".to_string());
        let with_env = ValueReader {
            keys: None,
            env: Some(&env),
        };
        assert_eq!(
            with_env
                .read("api_key", "os.environ/MY_KEY")
                .unwrap()
                .expose(),
            "sk-env"
        );
        assert!(with_env
            .read("api_key", "os.environ/OTHER")
            .unwrap_err()
            .contains("OTHER is not set"));
        let without = ValueReader {
            keys: None,
            env: None,
        };
        assert!(without.read("api_key", "os.environ/MY_KEY").is_err());
        assert!(without
            .read("api_key", "v3:gcm:AAAA")
            .unwrap_err()
            .contains("no salt key"));
    }
}
