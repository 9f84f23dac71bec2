//! Bedrock deployments as LiteLLM names them: `bedrock/<model id>`, also with the API LiteLLM
//! should use before the id (`bedrock/converse/<id>`, `bedrock/invoke/<id>`,
//! `bedrock/chat_completions/<id>`, `bedrock/mantle/<id>`) and with a region path
//! (`bedrock/us-east-1/<id>`), the way LiteLLM's `strip_bedrock_routing_prefix` and
//! `split_bedrock_region_path` read them. The runtime endpoint is
//! `https://bedrock-runtime.{region}.amazonaws.com` unless the row names one; a `mantle/` model is
//! served by Bedrock's Mantle endpoint instead (`https://bedrock-mantle.{region}.api.aws`, which
//! speaks Anthropic's Messages API at `/anthropic/v1/messages`), as LiteLLM sends it.
//!
//! As LiteLLM decides: an `api_key` (a Bedrock API key, sent as `Authorization: Bearer`) wins
//! over AWS keys; the row's fields over its linked credential's. The region is
//! `aws_region_name` (the row's, else the credential's), else the model's region path; a
//! deployment that needs one and has none is refused (the sidecar does not read `AWS_REGION`).

use std::collections::HashMap;
use std::sync::Arc;

use super::{from_fields, AwsCredential};
use crate::secret::Secret;

/// LiteLLM's provider name for Bedrock.
pub const PROVIDER: &str = "bedrock";

/// Where Bedrock serves OpenAI's Chat Completions API below the runtime endpoint.
pub const OPENAI_PATH: &str = "/openai/v1";

/// LiteLLM's API prefixes before a model id; Bedrock receives the id without them.
const API_PREFIXES: [&str; 4] = ["converse/", "invoke/", "chat_completions/", MANTLE_PREFIX];

/// LiteLLM's prefix for a model served by Bedrock's Mantle endpoint.
const MANTLE_PREFIX: &str = "mantle/";

/// Where Bedrock's Mantle endpoint serves Anthropic's Messages API below its base.
pub const MANTLE_MESSAGES_PATH: &str = "/anthropic/v1/messages";

/// How a Bedrock deployment authenticates, and its base URL.
pub struct BedrockAuth {
    /// A Bedrock API key, when the deployment uses one.
    pub api_key: Option<Secret>,
    /// Else the AWS keys that sign its requests, for its region.
    pub aws: Option<Arc<AwsCredential>>,
    /// `api_base`, else `aws_bedrock_runtime_endpoint`, else the region's runtime endpoint (its
    /// Mantle endpoint for a `mantle/` model).
    pub base: String,
}

/// The auth and base of the Bedrock deployment `name` whose model is `model` (after
/// `bedrock/`): from `api_key` and `api_base` (the row's, else its linked credential's), the
/// `aws_*` fields in `values` (taken out of it) and the linked credential's AWS keys. Errors name
/// fields, never values.
pub fn deployment_auth(
    name: &str,
    model: &str,
    api_key: Option<Secret>,
    api_base: Option<&str>,
    values: &mut HashMap<String, Secret>,
    linked: Option<&Arc<AwsCredential>>,
) -> Result<BedrockAuth, String> {
    let row_region = values
        .get("aws_region_name")
        .filter(|r| !r.is_empty())
        .map(|r| r.expose().to_string());
    let row_endpoint = values
        .get("aws_bedrock_runtime_endpoint")
        .filter(|e| !e.is_empty())
        .map(|e| e.expose().to_string());
    let own = from_fields(name, values)?;
    let keys = match api_key {
        Some(_) => None,
        None => own.or_else(|| linked.map(|l| (**l).clone())),
    };
    let region = row_region
        .clone()
        .or_else(|| model_id(model).0.map(str::to_string))
        .or_else(|| linked.and_then(|l| l.region.clone()));
    let endpoint = row_endpoint.or_else(|| linked.and_then(|l| l.runtime_endpoint.clone()));
    let base = match (api_base, endpoint, &region) {
        (Some(base), _, _) => base.to_string(),
        (None, Some(endpoint), _) => endpoint,
        (None, None, Some(region)) if is_mantle(model) => mantle_endpoint(region),
        (None, None, Some(region)) => runtime_endpoint(region),
        (None, None, None) => {
            return Err(
                "no aws_region_name (nor api_base, nor aws_bedrock_runtime_endpoint) on \
                        the row or its linked credential"
                    .into(),
            )
        }
    };
    let aws = match (keys, &region) {
        (Some(keys), Some(region)) => Some(Arc::new(keys.in_region(region.clone()))),
        (Some(_), None) => {
            return Err(
                "AWS keys need aws_region_name (on the row or its linked credential)".into(),
            )
        }
        (None, _) => None,
    };
    if api_key.is_none() && aws.is_none() {
        return Err(
            "no api_key and no aws_access_key_id with aws_secret_access_key on the row \
                    or its linked credential (the host's own AWS identity is not used)"
                .into(),
        );
    }
    Ok(BedrockAuth { api_key, aws, base })
}

/// The model id Bedrock receives for `model` (the part after `bedrock/`), and the region its
/// region path names, if any.
pub fn model_id(model: &str) -> (Option<&str>, &str) {
    let id = without_api_prefixes(model);
    match id.split_once('/') {
        Some((region, rest)) if check_region(region).is_ok() && !rest.is_empty() => {
            (Some(region), without_api_prefixes(rest))
        }
        _ => (None, id),
    }
}

/// `model` without LiteLLM's API prefixes before it.
fn without_api_prefixes(model: &str) -> &str {
    let mut id = model;
    for prefix in API_PREFIXES {
        if let Some(rest) = id.strip_prefix(prefix) {
            id = rest;
        }
    }
    id
}

/// Whether `model` (after `bedrock/`) is served by Bedrock's Mantle endpoint: `mantle/` as one
/// of its leading segments, as LiteLLM's `_model_has_route_prefix` reads it.
pub fn is_mantle(model: &str) -> bool {
    model.starts_with(MANTLE_PREFIX) || model.contains(&format!("/{MANTLE_PREFIX}"))
}

/// Whether `region` reads as an AWS region name (`us-east-1`, `us-gov-west-1`,
/// `ap-southeast-2`): lowercase words joined by `-`, the last one a number.
pub fn check_region(region: &str) -> Result<(), String> {
    let parts: Vec<&str> = region.split('-').collect();
    let words = &parts[..parts.len().saturating_sub(1)];
    let valid = parts.len() >= 3
        && words
            .iter()
            .all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase()))
        && parts
            .last()
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    if valid {
        Ok(())
    } else {
        Err("not an AWS region name (such as us-east-1)".to_string())
    }
}

/// Bedrock's public runtime endpoint in `region`.
pub fn runtime_endpoint(region: &str) -> String {
    format!("https://bedrock-runtime.{region}.amazonaws.com")
}

/// Bedrock's public Mantle endpoint in `region`.
pub fn mantle_endpoint(region: &str) -> String {
    format!("https://bedrock-mantle.{region}.api.aws")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_ids_lose_litellms_prefixes_and_region_paths() {
        let id = "anthropic.claude-3-5-sonnet-20240620-v1:0";
        for model in [
            id.to_string(),
            format!("converse/{id}"),
            format!("invoke/{id}"),
            format!("chat_completions/{id}"),
            format!("mantle/{id}"),
        ] {
            assert_eq!(model_id(&model), (None, id), "{model}");
            assert_eq!(is_mantle(&model), model.starts_with("mantle/"), "{model}");
        }
        assert!(is_mantle(&format!("us-east-1/mantle/{id}")));
        assert_eq!(
            model_id(&format!("us-east-1/mantle/{id}")),
            (Some("us-east-1"), id)
        );
        assert!(!is_mantle("bedrock_mantle.x"));
        assert_eq!(
            model_id("us-gov-west-1/openai.gpt-oss-20b-1:0"),
            (Some("us-gov-west-1"), "openai.gpt-oss-20b-1:0")
        );
        let arn = "arn:aws:bedrock:us-east-1:1:inference-profile/us.anthropic.claude";
        assert_eq!(model_id(arn), (None, arn));
    }

    #[test]
    fn region_names_are_checked() {
        for ok in [
            "us-east-1",
            "us-gov-west-1",
            "ap-southeast-2",
            "eu-central-1",
        ] {
            assert!(check_region(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "us",
            "us-east",
            "US-EAST-1",
            "us-east-1.evil.com",
            "us-east-1/x",
            "-1",
        ] {
            assert!(check_region(bad).is_err(), "{bad}");
        }
        assert_eq!(
            runtime_endpoint("us-west-2"),
            "https://bedrock-runtime.us-west-2.amazonaws.com"
        );
        assert_eq!(
            mantle_endpoint("us-west-2"),
            "https://bedrock-mantle.us-west-2.api.aws"
        );
    }
}
