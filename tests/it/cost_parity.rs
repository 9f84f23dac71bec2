//! The cost the sidecar computes for an answer is the number `litellm.completion_cost` returns
//! for the same usage and model, to the last bit: OpenAI, Azure, Anthropic, Gemini and Bedrock
//! models (cross-region ids, API prefixes and region paths as LiteLLM names them),
//! with cache reads and writes, reasoning tokens, and a prompt past a price tier. LiteLLM's
//! answer comes from the real package (pinned in `scripts/bootstrap.sh`, run from
//! `target/litellm-venv` by `tests/parity/litellm_cost.py`), with its own copy of the price map,
//! so the test also shows that the map built into the sidecar prices these models as LiteLLM does.

use serde_json::{json, Value};
use sidecar::spend::cost::cost;
use sidecar::spend::deployment_prices::DeploymentPricing;
use sidecar::spend::prices::{Price, PriceMap};
use sidecar::spend::Usage;

/// (model as a deployment names it, provider, usage).
fn cases() -> Vec<(&'static str, &'static str, Usage)> {
    let usage = |prompt, completion, cache_read, cache_creation, reasoning| Usage {
        prompt,
        completion,
        cache_read,
        cache_creation,
        reasoning,
    };
    vec![
        ("gpt-4o", "openai", usage(1000, 200, 0, 0, 0)),
        ("openai/gpt-4o", "openai", usage(1000, 200, 300, 0, 0)),
        ("gpt-4o-mini", "openai", usage(123_457, 9_876, 65_536, 0, 0)),
        ("o3", "openai", usage(5000, 3000, 1024, 0, 2500)),
        ("azure/gpt-4o", "azure", usage(1000, 200, 300, 0, 0)),
        ("azure/o3", "azure", usage(777, 333, 0, 0, 111)),
        ("claude-sonnet-4-5", "anthropic", usage(1500, 200, 0, 0, 0)),
        (
            "anthropic/claude-sonnet-4-5",
            "anthropic",
            usage(1500, 200, 300, 200, 0),
        ),
        (
            "claude-haiku-4-5",
            "anthropic",
            usage(20_000, 1, 19_000, 999, 0),
        ),
        (
            "gemini/gemini-2.5-flash",
            "gemini",
            usage(1000, 200, 0, 0, 50),
        ),
        (
            "gemini/gemini-2.5-pro",
            "gemini",
            usage(150_000, 800, 4096, 0, 0),
        ),
        (
            "gemini/gemini-2.5-pro",
            "gemini",
            usage(200_000, 800, 0, 0, 0),
        ),
        (
            "gemini/gemini-2.5-pro",
            "gemini",
            usage(250_000, 800, 50_000, 0, 300),
        ),
        ("gpt-4.1", "openai", usage(0, 0, 0, 0, 0)),
        // Bedrock, as its deployments name their models: plain, cross-region (`us.`, `eu.`,
        // `global.`) and with LiteLLM's API prefix or a region path.
        (
            "bedrock/anthropic.claude-3-5-sonnet-20240620-v1:0",
            "bedrock",
            usage(1000, 200, 0, 0, 0),
        ),
        (
            "bedrock/us.anthropic.claude-3-5-sonnet-20240620-v1:0",
            "bedrock",
            usage(1500, 200, 300, 100, 0),
        ),
        (
            "bedrock/converse/eu.amazon.nova-pro-v1:0",
            "bedrock",
            usage(1500, 200, 300, 0, 0),
        ),
        (
            "bedrock/global.anthropic.claude-sonnet-4-5-20250929-v1:0",
            "bedrock",
            usage(250_000, 200, 1000, 0, 0),
        ),
        (
            "bedrock/us-gov-west-1/amazon.nova-pro-v1:0",
            "bedrock",
            usage(1000, 200, 0, 0, 0),
        ),
        (
            "bedrock/us-east-1/anthropic.claude-3-5-sonnet-20240620-v1:0",
            "bedrock",
            usage(1000, 200, 0, 0, 0),
        ),
    ]
}

/// LiteLLM's costs for `cases`, in order.
async fn litellm_costs(cases: &[(&str, &str, Usage)]) -> Vec<f64> {
    let input: Vec<Value> = cases
        .iter()
        .map(|(model, provider, u)| {
            json!({ "model": model, "provider": provider, "prompt": u.prompt,
                    "completion": u.completion, "cache_read": u.cache_read,
                    "cache_creation": u.cache_creation, "reasoning": u.reasoning })
        })
        .collect();
    let costs = crate::support::litellm_venv::ask("litellm_cost.py", Value::Array(input)).await;
    exact_costs(costs)
}

/// A parity script's costs: each in Python's shortest form (`repr`), read back exactly (Rust's
/// `str::parse` rounds correctly; serde_json's default number reader need not).
fn exact_costs(costs: Value) -> Vec<f64> {
    let costs: Vec<String> = serde_json::from_value(costs).expect("a JSON list of costs");
    costs
        .iter()
        .map(|c| c.parse().unwrap_or_else(|_| panic!("a cost: {c}")))
        .collect()
}

/// The price the sidecar finds for a deployment of `model`: a Bedrock deployment's as its row
/// makes it (the model id Bedrock receives, and its region path), others' from the map.
fn sidecar_price(map: &PriceMap, model: &str, provider: &str) -> Option<Price> {
    let Some(after) = model.strip_prefix("bedrock/") else {
        return map.find(model, provider).cloned();
    };
    let (region, id) = sidecar::aws::bedrock::model_id(after);
    let mut pricing = DeploymentPricing::default();
    pricing.regional_model = region.map(|region| format!("{region}/{id}"));
    pricing
        .price(map, id, provider, None)
        .map(std::borrow::Cow::into_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn costs_equal_litellms_completion_cost() {
    let _turn = crate::support::lock::shared().await;
    let map = PriceMap::built_in().expect("the built-in price map");
    let cases = cases();
    let theirs = litellm_costs(&cases).await;
    assert_eq!(theirs.len(), cases.len());
    let mut table = vec![format!(
        "{:<28} {:>8} {:>7} {:>7} {:>6} {:>6} | {:>24} | {:>24}",
        "model",
        "prompt",
        "compl.",
        "c.read",
        "c.wr.",
        "reas.",
        "litellm.completion_cost",
        "sidecar"
    )];
    let mut differ = vec![];
    for ((model, provider, usage), theirs) in cases.iter().zip(theirs) {
        let price = sidecar_price(&map, model, provider)
            .unwrap_or_else(|| panic!("{model} ({provider}) is not in the built-in map"));
        let ours = cost(&price, usage, provider);
        table.push(format!(
            "{model:<28} {:>8} {:>7} {:>7} {:>6} {:>6} | {theirs:>24} | {ours:>24}",
            usage.prompt, usage.completion, usage.cache_read, usage.cache_creation, usage.reasoning
        ));
        if ours.to_bits() != theirs.to_bits() {
            differ.push(format!(
                "{model} {usage:?}: LiteLLM {theirs}, sidecar {ours}"
            ));
        }
    }
    println!("{}", table.join("\n"));
    assert!(differ.is_empty(), "{}", differ.join("\n"));
}

/// Deployments with prices of their own or a `base_model`, as LiteLLM's `model_list` and model
/// rows hold them: (`litellm_params`, `model_info`, the model the answer names, usage).
fn deployment_cases() -> Vec<(Value, Value, &'static str, Usage)> {
    let usage = |prompt, completion, cache_read, cache_creation| Usage {
        prompt,
        completion,
        cache_read,
        cache_creation,
        reasoning: 0,
    };
    let azure = |extra: Value| {
        let mut params = json!({"model": "azure/my-deploy", "api_base": "https://x.openai.azure.com",
                                "api_version": "2024-10-21"});
        params
            .as_object_mut()
            .expect("object")
            .extend(extra.as_object().cloned().unwrap_or_default());
        params
    };
    let none = json!({});
    vec![
        // Own input and output rates, a model the map does not know: cache reads at the input rate.
        (
            json!({"model": "openai/my-llama", "input_cost_per_token": 1e-6, "output_cost_per_token": 3e-6}),
            none.clone(),
            "my-llama",
            usage(1000, 200, 300, 0),
        ),
        // Only an input rate: output is free, the cache rate comes from the map's gpt-4o.
        (
            json!({"model": "openai/gpt-4o", "input_cost_per_token": 1e-6}),
            none.clone(),
            "gpt-4o",
            usage(1000, 200, 300, 0),
        ),
        // Prices in model_info only.
        (
            json!({"model": "openai/gpt-4o"}),
            json!({"input_cost_per_token": 2e-5, "output_cost_per_token": 4e-5}),
            "gpt-4o",
            usage(1000, 200, 300, 0),
        ),
        // All four rates of its own, cache writes included.
        (
            json!({"model": "anthropic/house-claude", "input_cost_per_token": 3e-6,
                   "output_cost_per_token": 1.5e-5, "cache_read_input_token_cost": 3e-7,
                   "cache_creation_input_token_cost": 3.75e-6}),
            none.clone(),
            "house-claude",
            usage(1500, 200, 300, 200),
        ),
        // Azure: base_model in model_info wins over the model the answer names.
        (
            azure(none.clone()),
            json!({"base_model": "azure/gpt-4o-mini"}),
            "gpt-4o-2024-08-06",
            usage(1000, 200, 300, 0),
        ),
        // Azure: base_model in litellm_params.
        (
            azure(json!({"base_model": "azure/gpt-4o"})),
            none.clone(),
            "gpt-4o-mini",
            usage(1000, 200, 300, 0),
        ),
        // Azure without base_model: priced by the model the answer names.
        (
            azure(none.clone()),
            none.clone(),
            "gpt-4o-2024-08-06",
            usage(1000, 200, 300, 0),
        ),
        // Rates written as strings (LiteLLM reads them as numbers).
        (
            json!({"model": "openai/my-llama", "input_cost_per_token": "2e-06",
                   "output_cost_per_token": "4e-06"}),
            none.clone(),
            "my-llama",
            usage(1000, 200, 0, 0),
        ),
        // A tier of its own past 200k prompt tokens.
        (
            json!({"model": "openai/my-llama", "input_cost_per_token": 1e-6,
                   "output_cost_per_token": 3e-6, "input_cost_per_token_above_200k_tokens": 2e-6,
                   "output_cost_per_token_above_200k_tokens": 6e-6}),
            none.clone(),
            "my-llama",
            usage(250_000, 200, 0, 0),
        ),
        // Own rates on a model with tiers: the cache rates (the tier's too) come from the map,
        // the input and output rates do not, above 200k or below.
        (
            json!({"model": "gemini/gemini-2.5-pro", "input_cost_per_token": 1e-6,
                   "output_cost_per_token": 3e-6}),
            none.clone(),
            "gemini-2.5-pro",
            usage(250_000, 800, 50_000, 0),
        ),
        (
            json!({"model": "gemini/gemini-2.5-pro", "input_cost_per_token": 1e-6,
                   "output_cost_per_token": 3e-6}),
            none,
            "gemini-2.5-pro",
            usage(150_000, 800, 50_000, 0),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_prices_equal_what_litellms_router_bills() {
    let _turn = crate::support::lock::shared().await;
    let map = PriceMap::built_in().expect("the built-in price map");
    let cases = deployment_cases();
    let input: Vec<Value> = cases
        .iter()
        .map(|(params, info, answered_by, u)| {
            json!({ "litellm_params": params, "model_info": info, "answered_by": answered_by,
                    "prompt": u.prompt, "completion": u.completion,
                    "cache_read": u.cache_read, "cache_creation": u.cache_creation })
        })
        .collect();
    let costs =
        crate::support::litellm_venv::ask("litellm_deployment_cost.py", Value::Array(input));
    let theirs = exact_costs(costs.await);
    assert_eq!(theirs.len(), cases.len());
    let mut table = vec![];
    let mut differ = vec![];
    for ((params, info, answered_by, usage), theirs) in cases.iter().zip(theirs) {
        let model = params["model"].as_str().expect("model");
        let (provider, bare) = model.split_once('/').expect("a provider prefix");
        let pricing = DeploymentPricing::read(info.as_object(), params.as_object().expect("obj"));
        let ours = pricing
            .price(&map, bare, provider, Some(answered_by))
            .map_or(0.0, |price| cost(&price, usage, provider));
        let line = format!("{params} {info} answered by {answered_by}, {usage:?}");
        table.push(format!("{theirs:>24} | {ours:>24} | {line}"));
        if ours.to_bits() != theirs.to_bits() {
            differ.push(format!("{line}: LiteLLM {theirs}, sidecar {ours}"));
        }
    }
    println!("{:>24} | {:>24} | deployment", "LiteLLM router", "sidecar");
    println!("{}", table.join("\n"));
    assert!(differ.is_empty(), "{}", differ.join("\n"));
}
