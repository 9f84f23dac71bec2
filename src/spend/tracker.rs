//! The spend side of a finished request: what it cost (its usage priced by the deployment's
//! model) and the [`SpendRecord`] handed to the writer. Called once per request that reached a
//! provider with a LiteLLM key; no I/O, no lock beyond the writer's pending batch.
//!
//! A deployment is priced by its own prices, else the map (`super::deployment_prices` says in
//! which order). A model nothing prices is written with spend 0 (its tokens and request are
//! still counted, as LiteLLM counts them) and said once in the log per model, never per request.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use tracing::warn;

use super::batch::SpendRecord;
use super::cost::cost;
use super::deployment_prices::DeploymentPricing;
use super::prices::{PriceMap, PriceMapError};
use super::writer::SpendWriter;
use super::Usage;
use crate::config::SpendSettings;

/// Models said to be unpriced are remembered up to this many (then no more are said).
const MAX_UNPRICED_REMEMBERED: usize = 1000;

/// The names a deployment's spend is written under, made at its first request with a key and
/// shared by every record after it (a record then copies no deployment name: about 0.5k
/// instructions per request less, allocating and freeing them).
#[derive(Debug, Default)]
pub struct SpendNames(OnceLock<Names>);

#[derive(Debug)]
struct Names {
    model: Arc<str>,
    id: Arc<str>,
    provider: Arc<str>,
    api_base: Option<Arc<str>>,
}

/// The deployment a request went to, as its spend names it.
#[derive(Debug, Clone, Copy)]
pub struct DeploymentRef<'a> {
    /// `model_id`.
    pub id: &'a str,
    /// LiteLLM's provider name.
    pub provider: &'a str,
    /// The provider's model name, without the provider prefix.
    pub model: &'a str,
    /// The base the request went to.
    pub api_base: Option<&'a str>,
    /// Its own prices and `base_model`.
    pub pricing: &'a DeploymentPricing,
    /// Its names, as records share them.
    pub names: &'a SpendNames,
}

impl DeploymentRef<'_> {
    fn names(&self) -> &Names {
        self.names.0.get_or_init(|| Names {
            model: [self.provider, "/", self.model].concat().into(),
            id: self.id.into(),
            provider: self.provider.into(),
            api_base: self.api_base.map(Arc::from),
        })
    }
}

/// One finished request, as the tracker reads it.
#[derive(Debug)]
pub struct Finished<'a> {
    /// The request's id.
    pub request_id: &'a str,
    /// The key's digest, `user_id` and `team_id`.
    pub key: (&'a Arc<str>, Option<&'a Arc<str>>, Option<&'a Arc<str>>),
    /// Where it went, when it went to a LiteLLM deployment.
    pub deployment: Option<DeploymentRef<'a>>,
    /// The alias the client asked for.
    pub alias: Option<&'a str>,
    /// The end user the request named (OpenAI's `user` field).
    pub end_user: Option<&'a str>,
    /// The endpoint, as LiteLLM names it (`/chat/completions`).
    pub endpoint: &'a str,
    /// The tokens the answer reported.
    pub usage: Option<Usage>,
    /// The model the answer said answered (OpenAI's and Azure's name a dated model).
    pub answered_by: Option<&'a str>,
    /// How long ago the request arrived.
    pub elapsed: Duration,
    /// Time from arrival to the answer's first byte.
    pub first_byte: Option<Duration>,
    /// Whether the provider answered with success (2xx).
    pub success: bool,
}

/// Prices requests and hands their spend to the writer.
pub struct SpendTracker {
    writer: Arc<SpendWriter>,
    prices: ArcSwap<PriceMap>,
    unpriced: Mutex<HashSet<String>>,
}

/// The price map `settings` names (its `prices_file`), else the one built in.
pub fn load_prices(settings: &SpendSettings) -> Result<PriceMap, PriceMapError> {
    match &settings.prices_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| PriceMapError::new(format!("{}: {e}", path.display())))?;
            PriceMap::parse(&text)
                .map_err(|e| PriceMapError::new(format!("{}: {e}", path.display())))
        }
        None => PriceMap::built_in(),
    }
}

impl SpendTracker {
    /// A tracker over `writer`, pricing with `prices`.
    pub fn new(writer: Arc<SpendWriter>, prices: PriceMap) -> SpendTracker {
        SpendTracker {
            writer,
            prices: ArcSwap::from_pointee(prices),
            unpriced: Mutex::new(HashSet::new()),
        }
    }

    /// The writer.
    pub fn writer(&self) -> &Arc<SpendWriter> {
        &self.writer
    }

    /// Puts a new price map in force (a reload).
    pub fn set_prices(&self, prices: PriceMap) {
        self.prices.store(Arc::new(prices));
        self.unpriced
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Records a finished request's spend.
    pub fn record(&self, done: &Finished<'_>) {
        let usage = done.usage.unwrap_or_default();
        let spend = match (&done.deployment, done.success) {
            (Some(d), true) => self.price(d, &usage, done.answered_by),
            _ => 0.0,
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let start_ms = now - done.elapsed.as_millis() as i64;
        let (key, user_id, team_id) = done.key;
        let owned = |s: Option<&str>| s.map(str::to_string);
        let names = done.deployment.as_ref().map(DeploymentRef::names);
        self.writer.record(SpendRecord {
            request_id: done.request_id.to_string(),
            key: key.clone(),
            user_id: user_id.cloned(),
            team_id: team_id.cloned(),
            end_user: owned(done.end_user),
            model: names.map_or_else(|| Arc::from(""), |n| n.model.clone()),
            model_id: names.map(|n| n.id.clone()),
            model_group: owned(done.alias),
            provider: names.map_or_else(|| Arc::from(""), |n| n.provider.clone()),
            api_base: names.and_then(|n| n.api_base.clone()),
            endpoint: done.endpoint.to_string(),
            usage,
            spend,
            start_ms,
            end_ms: now,
            first_byte_ms: done.first_byte.map(|t| start_ms + t.as_millis() as i64),
            success: done.success,
        });
    }

    fn price(&self, d: &DeploymentRef<'_>, usage: &Usage, answered_by: Option<&str>) -> f64 {
        let prices = self.prices.load();
        let priced = d
            .pricing
            .with_price(&prices, d.model, d.provider, answered_by, |price| {
                price.map(|price| cost(price, usage, d.provider))
            });
        if let Some(spend) = priced {
            return spend;
        }
        let mut said = self.unpriced.lock().unwrap_or_else(|e| e.into_inner());
        let name = format!("{}/{}", d.provider, d.model);
        if said.len() < MAX_UNPRICED_REMEMBERED && said.insert(name.clone()) {
            warn!("spend: no price for model {name}; its requests are written with spend 0 (give the deployment input_cost_per_token and output_cost_per_token or a base_model, or set spend.prices_file to a map that prices it)");
        }
        0.0
    }
}
