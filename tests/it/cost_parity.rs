//! The cost the sidecar computes for an answer is the number `litellm.completion_cost` returns
//! for the same usage and model, to the last bit: OpenAI, Azure, Anthropic and Gemini models,
//! with cache reads and writes, reasoning tokens, and a prompt past a price tier. LiteLLM's
//! answer comes from the real package (pinned in `scripts/bootstrap.sh`, run from
//! `target/litellm-venv` by `tests/parity/litellm_cost.py`), with its own copy of the price map,
//! so the test also shows that the map built into the sidecar prices these models as LiteLLM does.

use serde_json::{json, Value};
use sidecar::spend::cost::cost;
use sidecar::spend::prices::PriceMap;
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
    serde_json::from_value(costs).expect("a JSON list of costs")
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
        let price = map
            .find(model, provider)
            .unwrap_or_else(|| panic!("{model} ({provider}) is not in the built-in map"));
        let ours = cost(price, usage, provider);
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
