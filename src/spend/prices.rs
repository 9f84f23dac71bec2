//! LiteLLM's price map (`model_prices_and_context_window.json`): per-token prices by model
//! name, each entry naming its provider (`litellm_provider`). Built in from `data/` (a copy of
//! the file LiteLLM ships), or read from the file `spend.prices_file` names.
//!
//! A model is looked up as LiteLLM's `get_model_info` looks it up for a provider: the name
//! with the provider's prefix (`azure/gpt-4o`), the name as given, and the name without the
//! prefix, in that order, taking the first entry whose provider matches (Vertex and Bedrock
//! entries match their sub-providers). LiteLLM's further fallbacks (date suffixes stripped,
//! fine-tune names) are not tried: such a model is unpriced here, said once in the log.

use std::collections::HashMap;

use serde_json::{Map, Value};

/// LiteLLM's price map, built into the binary.
const BUILT_IN: &str = include_str!("../../data/model_prices_and_context_window.json");

/// The rates one price tier sets, per token, in USD; `None` where the tier does not set one.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Rates {
    /// `input_cost_per_token`.
    pub input: Option<f64>,
    /// `output_cost_per_token`.
    pub output: Option<f64>,
    /// `cache_read_input_token_cost`.
    pub cache_read: Option<f64>,
    /// `cache_creation_input_token_cost`.
    pub cache_creation: Option<f64>,
}

/// One model's prices.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Price {
    /// `litellm_provider`, when the entry names one.
    pub provider: Option<String>,
    /// The base rates.
    pub base: Rates,
    /// `output_cost_per_reasoning_token` (else reasoning tokens cost the output rate).
    pub reasoning: Option<f64>,
    /// `…_above_{N}_tokens` tiers: from the prompt size `N` up (exclusive, or inclusive for
    /// the providers LiteLLM bills that way), these rates replace the ones below. Sorted by `N`.
    pub tiers: Vec<(u64, Rates)>,
}

/// The rates a tier key can set, by the prefix of its key.
const RATE_KEYS: [&str; 4] = [
    "input_cost_per_token",
    "output_cost_per_token",
    "cache_read_input_token_cost",
    "cache_creation_input_token_cost",
];

impl Rates {
    fn set(&mut self, index: usize, value: f64) {
        let slot = match index {
            0 => &mut self.input,
            1 => &mut self.output,
            2 => &mut self.cache_read,
            _ => &mut self.cache_creation,
        };
        *slot = Some(value);
    }

    fn of(entry: &Map<String, Value>) -> Rates {
        let mut rates = Rates::default();
        for (index, key) in RATE_KEYS.iter().enumerate() {
            if let Some(value) = entry.get(*key).and_then(rate) {
                rates.set(index, value);
            }
        }
        rates
    }
}

/// The key of the reasoning-token rate.
const REASONING_KEY: &str = "output_cost_per_reasoning_token";

/// The size of the prompt tier whose cache rates a deployment's own prices take from the map
/// (LiteLLM's `…_above_200k_tokens` cache fields).
const INHERITED_CACHE_TIER: u64 = 200_000;

/// Whether `field` is one of the price fields this module reads (a rate, a tier's rate, the
/// reasoning rate).
pub fn is_price_field(field: &str) -> bool {
    RATE_KEYS.contains(&field) || field == REASONING_KEY || tier_key(field).is_some()
}

/// A rate as LiteLLM reads one: a number, or a string holding one.
fn rate(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The prompt size of a tier key (`input_cost_per_token_above_200k_tokens` → 200,000), with the
/// index of the rate it sets; `None` for any other key, and for keys of service tiers
/// (`…_priority`, `…_flex`, `…_batches`) the sidecar does not bill.
fn tier_key(key: &str) -> Option<(usize, u64)> {
    let (index, rest) = RATE_KEYS
        .iter()
        .enumerate()
        .find_map(|(i, prefix)| Some((i, key.strip_prefix(prefix)?.strip_prefix("_above_")?)))?;
    let size = rest.strip_suffix("_tokens")?;
    let (digits, scale) = match size.strip_suffix('k') {
        Some(digits) => (digits, 1000),
        None => (size, 1),
    };
    Some((index, digits.parse::<u64>().ok()? * scale))
}

impl Price {
    /// An entry of the map; `None` when it prices no token (an image or audio model).
    pub fn of(entry: &Map<String, Value>) -> Option<Price> {
        let base = Rates::of(entry);
        if base.input.is_none() && base.output.is_none() {
            return None;
        }
        let mut tiers: Vec<(u64, Rates)> = Vec::new();
        for (key, value) in entry {
            let (Some((index, size)), Some(value)) = (tier_key(key), rate(value)) else {
                continue;
            };
            match tiers.iter_mut().find(|(s, _)| *s == size) {
                Some((_, rates)) => rates.set(index, value),
                None => {
                    let mut rates = Rates::default();
                    rates.set(index, value);
                    tiers.push((size, rates));
                }
            }
        }
        tiers.sort_by_key(|(size, _)| *size);
        Some(Price {
            provider: entry
                .get("litellm_provider")
                .and_then(Value::as_str)
                .map(str::to_string),
            base,
            reasoning: entry.get(REASONING_KEY).and_then(rate),
            tiers,
        })
    }

    /// These prices with the cache rates they leave unset (the base ones and those past 200k
    /// prompt tokens) taken from `builtin`, as LiteLLM's router completes a deployment's own
    /// prices from its model's entry.
    pub fn with_cache_rates_of(&self, builtin: &Price) -> Price {
        let mut price = self.clone();
        let fill = |own: &mut Rates, from: &Rates| {
            own.cache_read = own.cache_read.or(from.cache_read);
            own.cache_creation = own.cache_creation.or(from.cache_creation);
        };
        fill(&mut price.base, &builtin.base);
        let at =
            |tiers: &[(u64, Rates)]| tiers.iter().position(|(s, _)| *s == INHERITED_CACHE_TIER);
        if let Some(from) = at(&builtin.tiers).map(|i| builtin.tiers[i].1) {
            if at(&price.tiers).is_none() {
                price.tiers.push((INHERITED_CACHE_TIER, Rates::default()));
                price.tiers.sort_by_key(|(size, _)| *size);
            }
            if let Some(own) = at(&price.tiers).map(|i| &mut price.tiers[i].1) {
                fill(own, &from);
            }
        }
        price
    }

    /// Whether the entry may price a model of `provider` (LiteLLM's `_check_provider_match`).
    fn matches(&self, provider: &str) -> bool {
        let Some(own) = self.provider.as_deref() else {
            return true;
        };
        own == provider
            || (provider == "vertex_ai" && own.starts_with("vertex_ai"))
            || (provider.starts_with("bedrock") && own.starts_with("bedrock"))
            || (provider == "azure_ai" && (own == "azure" || own == "openai"))
    }
}

/// The price map: model name → prices.
#[derive(Debug, Default)]
pub struct PriceMap {
    models: HashMap<String, Price>,
    /// Which map this is: every map read gets a new one (see [`PriceMap::generation`]).
    generation: u64,
}

/// The last generation given to a map.
static GENERATIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Why a price map could not be read.
#[derive(Debug)]
pub struct PriceMapError(String);

impl PriceMapError {
    /// An error saying `why`.
    pub fn new(why: String) -> PriceMapError {
        PriceMapError(why)
    }
}

impl std::fmt::Display for PriceMapError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PriceMapError {}

impl PriceMap {
    /// The map built into the binary.
    pub fn built_in() -> Result<PriceMap, PriceMapError> {
        PriceMap::parse(BUILT_IN)
    }

    /// A map in LiteLLM's format: a JSON object of model name → entry (`sample_spec`, LiteLLM's
    /// documentation entry, and entries that price no token are left out).
    pub fn parse(text: &str) -> Result<PriceMap, PriceMapError> {
        let root: Value =
            serde_json::from_str(text).map_err(|e| PriceMapError(format!("not JSON: {e}")))?;
        let Value::Object(entries) = root else {
            return Err(PriceMapError(
                "not a JSON object of model name → prices".into(),
            ));
        };
        let models = entries
            .iter()
            .filter(|(name, _)| name.as_str() != "sample_spec")
            .filter_map(|(name, entry)| Some((name.clone(), Price::of(entry.as_object()?)?)))
            .collect();
        let generation = GENERATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        Ok(PriceMap { models, generation })
    }

    /// A number no other map read by this process has: what a price remembered from this map is
    /// tagged with (`super::deployment_prices`), so a new map is never taken for an old one.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// How many models the map prices.
    pub(crate) fn len(&self) -> usize {
        self.models.len()
    }

    /// The prices of `model` (LiteLLM's `litellm_params.model`, with or without its provider
    /// prefix) served by `provider` (LiteLLM's provider name: `openai`, `azure`, `anthropic`,
    /// `gemini`, …), looked up as the module docs say.
    pub fn find(&self, model: &str, provider: &str) -> Option<&Price> {
        let bare = model
            .strip_prefix(provider)
            .and_then(|m| m.strip_prefix('/'))
            .unwrap_or(model);
        let prefixed = [provider, "/", bare].concat();
        let found = [prefixed.as_str(), model, bare]
            .into_iter()
            .filter_map(|name| self.models.get(name))
            .find(|price| price.matches(provider));
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_map_reads_and_prices_the_common_models() {
        let map = PriceMap::built_in().expect("the built-in map");
        assert!(map.len() > 1000, "{} models", map.len());
        let gpt = map.find("gpt-4o", "openai").expect("gpt-4o");
        assert!(gpt.base.input.is_some_and(|r| r > 0.0));
        assert!(map.find("openai/gpt-4o", "openai").is_some());
        assert!(map.find("azure/gpt-4o", "azure").is_some());
        let gemini = map.find("gemini-2.5-pro", "gemini").expect("gemini");
        assert_eq!(gemini.tiers.first().map(|t| t.0), Some(200_000));
        assert!(
            map.find("gpt-4o", "anthropic").is_none(),
            "provider must match"
        );
        assert!(map.find("no-such-model", "openai").is_none());
    }

    #[test]
    fn tier_keys_are_read_and_service_tiers_are_not() {
        assert_eq!(
            tier_key("input_cost_per_token_above_200k_tokens"),
            Some((0, 200_000))
        );
        assert_eq!(
            tier_key("output_cost_per_token_above_128_tokens"),
            Some((1, 128))
        );
        assert_eq!(
            tier_key("input_cost_per_token_above_200k_tokens_priority"),
            None
        );
        assert_eq!(tier_key("cache_creation_input_token_cost_above_1hr"), None);
        assert_eq!(tier_key("input_cost_per_token"), None);
    }

    #[test]
    fn a_map_that_is_not_an_object_is_refused_with_why() {
        assert!(PriceMap::parse("[]").is_err_and(|e| e.to_string().contains("object")));
        assert!(PriceMap::parse("{").is_err_and(|e| e.to_string().contains("JSON")));
    }
}
