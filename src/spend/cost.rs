//! The cost of one answer: [`Usage`] × [`Price`], by LiteLLM's arithmetic
//! (`generic_cost_per_token`), in the same order of operations so that the result is the same
//! floating-point number `litellm.completion_cost` returns (`tests/it/cost_parity.rs` checks).
//!
//! Billed: prompt tokens not read from or written to the cache at the input rate; cache reads
//! at `cache_read_input_token_cost`; cache writes at `cache_creation_input_token_cost` (each
//! the input rate when the model sets none); completion tokens at the output rate, reasoning
//! tokens at `output_cost_per_reasoning_token` when set. Past a `…_above_{N}_tokens` prompt
//! size, that tier's rates. Not billed here (LiteLLM bills them for the models that price
//! them): audio, image and video tokens at their own rates, service tiers (`priority`,
//! `flex`), off-peak windows, regional uplifts, web-search calls, and the 1-hour cache-write
//! rate; such tokens are billed as text.

use super::prices::{Price, Rates};
use super::Usage;

/// The providers whose tiers start at the threshold itself (LiteLLM's
/// `_INCLUSIVE_THRESHOLD_PROVIDERS`); elsewhere a tier starts above it.
const INCLUSIVE_TIER_PROVIDERS: [&str; 1] = ["xai"];

/// The rates a request of `prompt` tokens bills at: the base rates, replaced tier by tier
/// (ascending) by those of every tier the prompt passes; a cache rate the model does not set is
/// the input rate.
fn rates_for(price: &Price, prompt: u64, provider: &str) -> (f64, f64, f64, f64) {
    let inclusive = INCLUSIVE_TIER_PROVIDERS.contains(&provider);
    let mut input = price.base.input.unwrap_or(0.0);
    let mut output = price.base.output.unwrap_or(0.0);
    let mut cache_read = price.base.cache_read;
    let mut cache_creation = price.base.cache_creation;
    for (size, tier) in &price.tiers {
        let passed = if inclusive {
            prompt >= *size
        } else {
            prompt > *size
        };
        if passed {
            let Rates {
                input: i,
                output: o,
                cache_read: r,
                cache_creation: c,
            } = *tier;
            input = i.unwrap_or(input);
            output = o.unwrap_or(output);
            cache_read = r.or(cache_read);
            cache_creation = c.or(cache_creation);
        }
    }
    (
        input,
        output,
        cache_read.unwrap_or(input),
        cache_creation.unwrap_or(input),
    )
}

/// The cost of `usage` at `price`, in USD, for a model of `provider`.
pub fn cost(price: &Price, usage: &Usage, provider: &str) -> f64 {
    let (input, output, cache_read, cache_creation) = rates_for(price, usage.prompt, provider);
    let text_in = usage
        .prompt
        .saturating_sub(usage.cache_read)
        .saturating_sub(usage.cache_creation);
    let mut prompt_cost = text_in as f64 * input;
    prompt_cost += usage.cache_read as f64 * cache_read;
    if usage.cache_creation > 0 {
        prompt_cost += usage.cache_creation as f64 * cache_creation;
    }
    let completion_cost = if usage.reasoning > 0 {
        let text_out = usage.completion.saturating_sub(usage.reasoning);
        let reasoning = price.reasoning.unwrap_or(output);
        text_out as f64 * output + usage.reasoning as f64 * reasoning
    } else {
        usage.completion as f64 * output
    };
    prompt_cost + completion_cost
}

#[cfg(test)]
mod tests {
    use super::*;

    fn price(input: f64, output: f64) -> Price {
        Price {
            base: Rates {
                input: Some(input),
                output: Some(output),
                ..Rates::default()
            },
            ..Price::default()
        }
    }

    #[test]
    fn prompt_and_completion_tokens_at_their_rates() {
        let usage = Usage {
            prompt: 1000,
            completion: 200,
            ..Usage::default()
        };
        assert_eq!(cost(&price(2e-6, 8e-6), &usage, "openai"), 0.002 + 0.0016);
    }

    #[test]
    fn cached_tokens_at_the_cache_rates_else_the_input_rate() {
        let usage = Usage {
            prompt: 1000,
            completion: 0,
            cache_read: 400,
            cache_creation: 100,
            reasoning: 0,
        };
        let mut p = price(1e-6, 0.0);
        assert_eq!(cost(&p, &usage, "anthropic"), 1000.0 * 1e-6);
        p.base.cache_read = Some(1e-7);
        p.base.cache_creation = Some(2e-6);
        let expected = 500.0 * 1e-6 + 400.0 * 1e-7 + 100.0 * 2e-6;
        assert_eq!(cost(&p, &usage, "anthropic"), expected);
    }

    #[test]
    fn a_prompt_past_a_tier_bills_at_the_tier_and_xai_from_the_threshold_on() {
        let mut p = price(1e-6, 1e-5);
        p.tiers = vec![(
            200_000,
            Rates {
                input: Some(2e-6),
                ..Rates::default()
            },
        )];
        let at = Usage {
            prompt: 200_000,
            ..Usage::default()
        };
        assert_eq!(cost(&p, &at, "gemini"), 200_000.0 * 1e-6);
        assert_eq!(cost(&p, &at, "xai"), 200_000.0 * 2e-6);
    }

    #[test]
    fn reasoning_tokens_at_their_own_rate_when_the_model_sets_one() {
        let usage = Usage {
            completion: 100,
            reasoning: 40,
            ..Usage::default()
        };
        let mut p = price(0.0, 1e-5);
        assert_eq!(cost(&p, &usage, "openai"), 60.0 * 1e-5 + 40.0 * 1e-5);
        p.reasoning = Some(2e-5);
        assert_eq!(cost(&p, &usage, "openai"), 60.0 * 1e-5 + 40.0 * 2e-5);
    }
}
