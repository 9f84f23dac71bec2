//! A deployment's own prices, read as LiteLLM's router reads them when it registers a
//! deployment: the price fields of `model_info`, overlaid by those of `litellm_params` (LiteLLM
//! mirrors the one onto the other, and the parameters win), and `base_model` (from `model_info`,
//! else `litellm_params`), the model whose entry in the price map stands in for a deployment
//! whose name the map does not know (an Azure deployment's own name).
//!
//! How a request to the deployment is then priced, as `litellm.completion_cost` prices it in
//! LiteLLM's proxy (checked against the real package by `tests/it/cost_parity.rs`):
//! - when the deployment sets an input or output price per token, by its own prices only: a
//!   rate it does not set is 0, except the cache rates, which it takes from its model's entry
//!   in the map when it sets an input price (LiteLLM's `_inherit_builtin_cache_pricing`);
//! - else by the map's entry for `base_model`, else for the model the provider said answered
//!   (OpenAI's and Azure's answers name a dated model), else for the deployment's `model`: the
//!   first of these the map prices. A Bedrock deployment with a region path
//!   (`bedrock/us-gov-west-1/amazon.nova-pro-v1:0`) is looked up with it before the answering
//!   model, as LiteLLM finds the region's own entry.
//!
//! Prices per second, per character, per image and LiteLLM's `tiered_pricing` lists are not
//! read: a deployment priced only so is priced from the map as if it set nothing.

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use serde_json::{Map, Value};

use super::prices::{is_price_field, Price, PriceMap};

/// What a deployment says about its own price.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct DeploymentPricing {
    /// The prices it sets itself, when they price a token.
    pub own: Option<Price>,
    /// `base_model`: the model that prices it in the map.
    pub base_model: Option<String>,
    /// A Bedrock deployment's model with its region path (`us-gov-west-1/amazon.nova-pro-v1:0`):
    /// LiteLLM prices it by that region's entry when the map has one, else by the model id.
    pub regional_model: Option<String>,
    /// The last price found for it.
    memo: PriceMemo,
}

/// The last price found for a deployment, for the map and the answering model it was found
/// with. Requests to a deployment are priced alike (the same map, mostly the same answering
/// model), and finding a price costs about 1k instructions (the map's hashing, the names it
/// tries); a remembered one costs a load and two compares.
#[derive(Debug, Default)]
struct PriceMemo(ArcSwapOption<Found>);

#[derive(Debug)]
struct Found {
    generation: u64,
    answered: Option<Box<str>>,
    price: Option<Price>,
}

impl Clone for PriceMemo {
    /// A copy starts with nothing remembered.
    fn clone(&self) -> PriceMemo {
        PriceMemo::default()
    }
}

impl PartialEq for PriceMemo {
    /// What is remembered is not part of what a deployment says.
    fn eq(&self, _: &PriceMemo) -> bool {
        true
    }
}

/// The name `base_model` has in both `model_info` and `litellm_params`.
const BASE_MODEL: &str = "base_model";

impl DeploymentPricing {
    /// Reads `model_info` (plain JSON, as LiteLLM stores it) and the price fields of
    /// `litellm_params` (`params`: numbers as stored, strings already decrypted).
    pub fn read(
        info: Option<&Map<String, Value>>,
        params: &Map<String, Value>,
    ) -> DeploymentPricing {
        let mut entry: Map<String, Value> = info
            .into_iter()
            .flatten()
            .filter(|(field, _)| is_price_field(field))
            .map(|(field, value)| (field.clone(), value.clone()))
            .collect();
        for (field, value) in params.iter().filter(|(field, _)| is_price_field(field)) {
            entry.insert(field.clone(), value.clone());
        }
        let named = |source: Option<&Map<String, Value>>| {
            source?
                .get(BASE_MODEL)?
                .as_str()
                .filter(|m| !m.is_empty())
                .map(str::to_string)
        };
        DeploymentPricing {
            own: Price::of(&entry),
            base_model: named(info).or_else(|| named(Some(params))),
            regional_model: None,
            memo: PriceMemo::default(),
        }
    }

    /// `f` of [`DeploymentPricing::price`], remembered for the next request with the same map
    /// and answering model.
    pub fn with_price<R>(
        &self,
        map: &PriceMap,
        model: &str,
        provider: &str,
        answered: Option<&str>,
        f: impl FnOnce(Option<&Price>) -> R,
    ) -> R {
        let generation = map.generation();
        let remembered = self.memo.0.load();
        if let Some(found) = remembered
            .as_deref()
            .filter(|found| found.generation == generation && found.answered.as_deref() == answered)
        {
            return f(found.price.as_ref());
        }
        let price = self
            .price(map, model, provider, answered)
            .map(std::borrow::Cow::into_owned);
        let result = f(price.as_ref());
        self.memo.0.store(Some(Arc::new(Found {
            generation,
            answered: answered.map(Box::from),
            price,
        })));
        result
    }

    /// The price of a request to a deployment of `model` (as configured, with or without its
    /// provider prefix) at `provider`, whose answer named `answered` (see the module docs); `None`
    /// when nothing prices it.
    pub fn price<'a>(
        &'a self,
        map: &'a PriceMap,
        model: &'a str,
        provider: &str,
        answered: Option<&'a str>,
    ) -> Option<std::borrow::Cow<'a, Price>> {
        let backend = self.base_model.as_deref().unwrap_or(model);
        if let Some(own) = &self.own {
            let inherit = own.base.input.is_some();
            return Some(match map.find(backend, provider).filter(|_| inherit) {
                Some(builtin) => std::borrow::Cow::Owned(own.with_cache_rates_of(builtin)),
                None => std::borrow::Cow::Borrowed(own),
            });
        }
        let regional = self.regional_model.as_deref();
        [self.base_model.as_deref(), regional, answered, Some(model)]
            .into_iter()
            .flatten()
            .find_map(|name| map.find(name, provider))
            .map(std::borrow::Cow::Borrowed)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn object(value: Value) -> Map<String, Value> {
        value.as_object().cloned().expect("an object")
    }

    #[test]
    fn parameters_win_over_model_info_and_base_model_is_read_from_either() {
        let info = object(json!({"id": "d1", "input_cost_per_token": 1e-6,
                                 "output_cost_per_token": 2e-6, "base_model": "azure/gpt-4o"}));
        let params = object(json!({"input_cost_per_token": "3e-6", "model": "azure/x"}));
        let pricing = DeploymentPricing::read(Some(&info), &params);
        let own = pricing.own.expect("priced");
        assert_eq!(own.base.input, Some(3e-6));
        assert_eq!(own.base.output, Some(2e-6));
        assert_eq!(pricing.base_model.as_deref(), Some("azure/gpt-4o"));
        let params = object(json!({"base_model": "azure/gpt-4o-mini"}));
        let pricing = DeploymentPricing::read(None, &params);
        assert_eq!(pricing.own, None);
        assert_eq!(pricing.base_model.as_deref(), Some("azure/gpt-4o-mini"));
    }

    #[test]
    fn without_own_prices_the_base_model_then_the_answer_then_the_model_price_it() {
        let map = PriceMap::built_in().expect("built in");
        let none = DeploymentPricing::default();
        let by = |pricing: &DeploymentPricing, answered| {
            pricing
                .price(&map, "my-deployment", "azure", answered)
                .map(|p| p.base.input)
        };
        assert_eq!(by(&none, None), None);
        let answered = by(&none, Some("gpt-4o-mini")).expect("priced by the answer");
        assert_eq!(
            answered,
            map.find("gpt-4o-mini", "azure").expect("mini").base.input
        );
        let based = DeploymentPricing {
            base_model: Some("azure/gpt-4o".into()),
            ..DeploymentPricing::default()
        };
        assert_eq!(
            by(&based, Some("gpt-4o-mini")).expect("priced"),
            map.find("gpt-4o", "azure").expect("4o").base.input
        );
    }

    #[test]
    fn own_prices_take_only_the_cache_rates_of_their_model_and_only_with_an_input_rate() {
        let map = PriceMap::built_in().expect("built in");
        let builtin = map.find("gpt-4o", "openai").expect("gpt-4o").clone();
        let input_only =
            DeploymentPricing::read(None, &object(json!({"input_cost_per_token": 1e-6})));
        let price = input_only
            .price(&map, "gpt-4o", "openai", None)
            .expect("own");
        assert_eq!(
            price.base.output, None,
            "an output rate is not taken from the map"
        );
        assert_eq!(price.base.cache_read, builtin.base.cache_read);
        let output_only =
            DeploymentPricing::read(None, &object(json!({"output_cost_per_token": 1e-6})));
        let price = output_only
            .price(&map, "gpt-4o", "openai", None)
            .expect("own");
        assert_eq!(price.base.cache_read, None);
    }

    #[test]
    fn a_remembered_price_serves_only_the_same_map_and_answering_model() {
        let map = |rate: f64| {
            let text = json!({ "m": { "input_cost_per_token": rate, "output_cost_per_token": 0.0,
                                      "litellm_provider": "openai" },
                               "m-dated": { "input_cost_per_token": rate * 10.0,
                                            "output_cost_per_token": 0.0,
                                            "litellm_provider": "openai" } });
            PriceMap::parse(&text.to_string()).expect("a map")
        };
        let input = |price: Option<&Price>| price.and_then(|p| p.base.input);
        let pricing = DeploymentPricing::default();
        let (first, second) = (map(1.0), map(2.0));
        assert_ne!(first.generation(), second.generation());
        for _ in 0..2 {
            assert_eq!(
                pricing.with_price(&first, "m", "openai", None, input),
                Some(1.0)
            );
        }
        assert_eq!(
            pricing.with_price(&first, "m", "openai", Some("m-dated"), input),
            Some(10.0),
            "another answering model"
        );
        assert_eq!(
            pricing.with_price(&second, "m", "openai", Some("m-dated"), input),
            Some(20.0),
            "a new map"
        );
        assert_eq!(
            pricing.clone(),
            pricing,
            "what is remembered is not compared"
        );
    }
}
