//! LiteLLM model deployments (`"LiteLLM_ProxyModelTable"` rows) → [`Deployment`]s: the key, the
//! upstream and the auth style a request for that model alias uses.
//!
//! `litellm_params` may be a JSON object or a JSON string whose content is an object; every string
//! in it is encrypted. A row naming `litellm_credential_name` takes its missing values from that
//! credential; values set on the row win. The provider is `custom_llm_provider`, else the prefix
//! of `model` (`azure/gpt-4o` → `azure`), else the credential's, else `openai`, as LiteLLM
//! decides it.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::values::ValueReader;
use super::{Credential, Secret};
use crate::aws::{bedrock, AwsCredential};
use crate::config::UpstreamUrl;
use crate::db::litellm::ModelRow;
use crate::minted::vertex::{self, VertexPlace};
use crate::minted::{entra, managed_identity, MintedCredential};
use crate::providers::{
    known_provider, AuthStyle, AZURE_PROVIDER, DEFAULT_PROVIDER, VERTEX_PROVIDER,
};
use crate::spend::deployment_prices::DeploymentPricing;
use crate::spend::prices::is_price_field;
use crate::spend::tracker::SpendNames;
use crate::upstream::{Target, Targets};

/// One deployment of a model alias, ready to serve.
#[derive(Debug)]
pub struct Deployment {
    /// `model_id`.
    pub id: String,
    /// The LiteLLM provider name (`openai`, `azure`, …).
    pub provider: String,
    /// The provider's own model name: `model` without its provider prefix (`azure/gpt-4o` →
    /// `gpt-4o`; for Azure, the deployment name).
    pub model: String,
    /// `model` as a JSON string (quoted and escaped once, for the body rewrite).
    pub model_json: String,
    /// The key and its companions (`api_version` for Azure).
    pub credential: Arc<Credential>,
    /// `api_base`, else the provider's public base; `None` when neither is known (the route
    /// must then set `upstream`).
    pub upstream: Option<Arc<UpstreamUrl>>,
    /// LiteLLM's `weight`: its share of the alias's requests relative to the others' (1 when
    /// unset).
    pub weight: f64,
    /// `upstream` as text (what spend logs name as its `api_base`), made once here rather than
    /// formatted on every request.
    pub upstream_text: Option<String>,
    /// The resolved endpoint for `upstream`.
    pub target: Option<Arc<Target>>,
    /// The provider's auth style, when known (the route may set one instead).
    pub auth: Option<AuthStyle>,
    /// Its own prices and `base_model`, from `model_info` and `litellm_params`.
    pub pricing: DeploymentPricing,
    /// The names its spend is written under (made at its first request with a key).
    pub spend_names: SpendNames,
    /// A Bedrock model LiteLLM names `bedrock/mantle/…`: served by Bedrock's Mantle endpoint,
    /// which takes Anthropic's Messages API (see `proxy::unified::messages`).
    pub bedrock_mantle: bool,
}

impl Deployment {
    /// The model as a native path names it (`…/models/{model}:{method}`): for Vertex, without the
    /// publisher its OpenAI-compatible API needs (the path names the publisher on its own).
    pub fn path_model(&self) -> &str {
        match self.provider.as_str() {
            VERTEX_PROVIDER => self.model.rsplit('/').next().unwrap_or(&self.model),
            _ => &self.model,
        }
    }
}

/// Parses `litellm_params`, which LiteLLM stores as an object or as a string holding one.
pub fn params_object(params: &Value) -> Result<Map<String, Value>, String> {
    match params {
        Value::Object(map) => Ok(map.clone()),
        Value::String(text) => match serde_json::from_str(text) {
            Ok(Value::Object(map)) => Ok(map),
            _ => Err("litellm_params is a string that does not hold a JSON object".to_string()),
        },
        _ => Err("litellm_params is neither an object nor a string holding one".to_string()),
    }
}

/// How a deployment's `litellm_params` strings are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamsStorage {
    /// Every string encrypted, as LiteLLM writes database rows.
    Encrypted,
    /// As in LiteLLM's config.yaml `model_list`: only `api_key` must be ciphertext or an
    /// `os.environ/` reference (see [`ValueReader::read_config_params`]).
    ConfigFile,
}

/// Builds a deployment from a model row, resolving `litellm_credential_name` against
/// `credentials` (already decrypted). Errors name fields, never values.
pub fn deployment(
    row: &ModelRow,
    reader: &ValueReader<'_>,
    storage: ParamsStorage,
    credentials: &HashMap<String, Arc<Credential>>,
    targets: &Targets,
) -> Result<Deployment, String> {
    let params = params_object(&row.params)?;
    let weight = match params.get("weight") {
        None | Some(Value::Null) => 1.0,
        Some(w) => w
            .as_f64()
            .filter(|w| w.is_finite() && *w > 0.0)
            .ok_or("weight is not a positive number")?,
    };
    let mut values = match storage {
        ParamsStorage::Encrypted => reader.read_all(&params)?,
        ParamsStorage::ConfigFile => reader.read_config_params(&params)?,
    };
    let mut pricing = pricing(row, &params, &values);
    let mut take = |field: &str| values.remove(field);
    let linked = match take("litellm_credential_name") {
        Some(name) => Some(credentials.get(name.expose()).cloned().ok_or_else(|| {
            format!(
                "litellm_credential_name {:?} is not a loaded credential",
                name.expose()
            )
        })?),
        None => None,
    };
    // LiteLLM requires `model`; without it the provider (and so where the key goes) would be a
    // guess, so the row is refused rather than sent to a default.
    let model = take("model").ok_or("litellm_params has no model")?;
    // As LiteLLM's `get_llm_provider`: an explicit `custom_llm_provider` wins (a self-hosted
    // `meta-llama/Llama-3` on an OpenAI-compatible server keeps its whole name), and the model
    // sent is `model` without that provider's prefix; else the prefix names the provider.
    // LiteLLM's dashboard stores display casing ("Anthropic"); LiteLLM reads it lowercased.
    let custom = take("custom_llm_provider").map(|p| p.expose().to_ascii_lowercase());
    let written = model.expose();
    let (provider, provider_model) = match custom {
        Some(provider) => {
            let own = written
                .strip_prefix(provider.as_str())
                .and_then(|m| m.strip_prefix('/'));
            let sent = own.unwrap_or(written);
            (provider, sent)
        }
        None => match written.split_once('/') {
            Some((prefix, rest)) if !prefix.is_empty() => (prefix.to_string(), rest),
            _ => (
                linked
                    .as_ref()
                    .and_then(|c| c.provider.clone())
                    .unwrap_or_else(|| DEFAULT_PROVIDER.to_string()),
                written,
            ),
        },
    };
    // Vertex's OpenAI-compatible API names a model with its publisher (`google/gemini-2.0-flash`,
    // `meta/llama-3.1-405b-instruct-maas`); a bare Gemini name gets Google's.
    // Bedrock receives the model id without LiteLLM's API prefix or region path.
    let bedrock_model = provider_model;
    let provider_model = if provider == VERTEX_PROVIDER && !provider_model.contains('/') {
        format!("google/{provider_model}")
    } else if provider == bedrock::PROVIDER {
        let (region, id) = bedrock::model_id(provider_model);
        pricing.regional_model = region.map(|region| format!("{region}/{id}"));
        id.to_string()
    } else {
        provider_model.to_string()
    };
    let api_key = take("api_key")
        .or_else(|| linked.as_ref().map(|c| c.api_key.clone()))
        .filter(|k| !k.is_empty());
    let api_base = take("api_base")
        .map(|v| v.expose().to_string())
        .or_else(|| linked.as_ref().and_then(|c| c.api_base.clone()));
    let api_version = take("api_version")
        .map(|v| v.expose().to_string())
        .or_else(|| linked.as_ref().and_then(|c| c.api_version.clone()));
    let name = format!("model {} ({})", row.name, row.id);
    let known = known_provider(&provider);
    let (key, base) = if provider == bedrock::PROVIDER {
        let linked_aws = linked.as_ref().and_then(|c| c.aws.as_ref());
        let auth = bedrock::deployment_auth(
            &name,
            bedrock_model,
            api_key,
            api_base.as_deref(),
            &mut values,
            linked_aws,
        )?;
        let key = KeyMaterial {
            api_key: auth.api_key.unwrap_or_else(|| Secret::new(String::new())),
            minted: auth.aws.as_ref().and_then(|a| a.minted().cloned()),
            vertex: None,
            aws: auth.aws,
        };
        (key, Some(auth.base))
    } else {
        let key = key_material(&name, &provider, api_key, linked.as_deref(), &mut values)?;
        // Vertex: `api_base` (else the location's public host) and the place's
        // OpenAI-compatible path, under which requests go as to any OpenAI-compatible base.
        let base = match &key.vertex {
            Some(place) => Some(format!(
                "{}{}",
                api_base.clone().unwrap_or_else(|| place.public_base()),
                place.openai_path()
            )),
            None => api_base
                .clone()
                .or(known.and_then(|p| p.base).map(str::to_string)),
        };
        (key, base)
    };
    let upstream = base
        .map(|b| UpstreamUrl::parse(&b).map_err(|e| format!("api_base: {e}")))
        .transpose()?;
    let target = upstream.as_ref().map(|u| targets.target_for(u));
    let bedrock_mantle = provider == bedrock::PROVIDER && bedrock::is_mantle(bedrock_model);
    Ok(Deployment {
        id: row.id.clone(),
        credential: Arc::new(Credential {
            name,
            provider: Some(provider.clone()),
            api_key: key.api_key,
            api_base,
            api_version,
            header_values: Default::default(),
            aws: key.aws,
            minted: key.minted,
        }),
        provider,
        model_json: Value::from(provider_model.as_str()).to_string(),
        model: provider_model,
        weight,
        upstream_text: upstream.as_ref().map(ToString::to_string),
        upstream: upstream.map(Arc::new),
        target,
        auth: known.map(|p| p.auth.clone()),
        pricing,
        spend_names: SpendNames::default(),
        bedrock_mantle,
    })
}

/// What a deployment authenticates with: a key, a minted token (and for Vertex, where), or AWS
/// keys.
struct KeyMaterial {
    api_key: Secret,
    minted: Option<Arc<MintedCredential>>,
    vertex: Option<VertexPlace>,
    aws: Option<Arc<AwsCredential>>,
}

/// As LiteLLM decides it: on `vertex_ai`, the row's `vertex_credentials`; else a key (the row's,
/// else its linked credential's); else the row's Entra ID fields, else the linked credential's
/// minted token; else, on `azure` with `AZURE_CREDENTIAL=ManagedIdentityCredential`, the host's
/// managed identity. The fields used are taken out of `values`. Errors name fields, never values.
fn key_material(
    name: &str,
    provider: &str,
    api_key: Option<Secret>,
    linked: Option<&Credential>,
    values: &mut HashMap<String, Secret>,
) -> Result<KeyMaterial, String> {
    let minted = |minted, vertex| KeyMaterial {
        api_key: Secret::new(String::new()),
        minted: Some(minted),
        vertex,
        aws: None,
    };
    if provider == VERTEX_PROVIDER {
        if let Some((token, place)) = vertex::from_fields(name, values)? {
            return Ok(minted(token, Some(place)));
        }
    }
    if let Some(api_key) = api_key {
        return Ok(KeyMaterial {
            api_key,
            minted: None,
            vertex: None,
            aws: None,
        });
    }
    let scope = values
        .get("azure_scope")
        .filter(|s| !s.is_empty())
        .map_or(entra::DEFAULT_SCOPE.to_string(), |s| s.expose().to_string());
    let own = entra::from_fields(name, values, &entra::authority_host())?;
    let token = own.or_else(|| {
        linked
            .filter(|c| c.aws.is_none())
            .and_then(|c| c.minted.clone())
    });
    let token = match token {
        Some(token) => token,
        // As LiteLLM's last resort for Azure: the host's own identity, when told to use it.
        None if provider == AZURE_PROVIDER && managed_identity::enabled() => {
            managed_identity::credential(name, &scope)?
        }
        None => {
            return Err(
                "no api_key (nor tenant_id, client_id and client_secret, nor \
                        azure_ad_token, nor vertex_credentials) on the row or its linked \
                        credential"
                    .into(),
            )
        }
    };
    Ok(minted(token, None))
}

/// The deployment's prices: `model_info` as stored (plain; LiteLLM ignores one that is not an
/// object, and so does the sidecar), and the price fields of `litellm_params` as read (strings
/// decrypted, numbers as stored).
fn pricing(
    row: &ModelRow,
    params: &Map<String, Value>,
    values: &HashMap<String, Secret>,
) -> DeploymentPricing {
    let info = row.info.as_ref().and_then(|info| params_object(info).ok());
    let plain: Map<String, Value> = params
        .iter()
        .filter(|(field, _)| is_price_field(field) || *field == "base_model")
        .filter_map(|(field, stored)| {
            let value = match stored {
                Value::String(_) => Value::String(values.get(field)?.expose().to_string()),
                other => other.clone(),
            };
            Some((field.clone(), value))
        })
        .collect();
    DeploymentPricing::read(info.as_ref(), &plain)
}

#[cfg(test)]
mod tests;
