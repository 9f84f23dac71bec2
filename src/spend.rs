//! What a request cost, in LiteLLM's terms: the tokens an answer used ([`Usage`], in LiteLLM's
//! normalised shape), priced with LiteLLM's price map or a deployment's own prices
//! ([`prices`]), by LiteLLM's arithmetic ([`cost`]), so that a cost the sidecar records equals
//! what `litellm.completion_cost` computes for the same usage and model.

use std::sync::Arc;

use crate::config::Config;

pub mod batch;
pub mod cost;
pub mod deployment_prices;
pub mod flush;
pub mod prices;
pub mod tracker;
pub mod writer;

/// Tokens one answer used, as LiteLLM's `Usage` counts them: `prompt` includes the cached
/// tokens (read from the cache, and written to it), as OpenAI reports it; Anthropic's
/// `input_tokens`, which leaves them out, is normalised to that when read.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Usage {
    /// Prompt (input) tokens, cached ones included.
    pub prompt: u64,
    /// Completion (output) tokens, reasoning ones included.
    pub completion: u64,
    /// Prompt tokens read from the provider's prompt cache (OpenAI
    /// `prompt_tokens_details.cached_tokens`, Anthropic `cache_read_input_tokens`).
    pub cache_read: u64,
    /// Prompt tokens written to the provider's prompt cache (Anthropic
    /// `cache_creation_input_tokens`).
    pub cache_creation: u64,
    /// Completion tokens spent on reasoning (`completion_tokens_details.reasoning_tokens`).
    pub reasoning: u64,
}

/// The tracker a sidecar with `config` runs, when `spend.enabled`: its writer over the settings,
/// pricing with the map `spend.prices_file` names (else the one built in).
pub fn tracker_for(
    config: &Config,
) -> Result<Option<Arc<tracker::SpendTracker>>, prices::PriceMapError> {
    let settings = &config.spend;
    if !settings.enabled {
        return Ok(None);
    }
    let prices = tracker::load_prices(settings)?;
    let source = settings
        .prices_file
        .as_ref()
        .map_or_else(|| "built in".to_string(), |p| p.display().to_string());
    tracing::info!(
        "spend: written back to LiteLLM every {}; {} models priced (price map: {source})",
        humantime::format_duration(settings.flush_interval),
        prices.len()
    );
    let writer = writer::SpendWriter::new(writer::WriterSettings {
        flush_interval: settings.flush_interval,
        spend_logs: !settings.disable_spend_logs,
        max_pending_requests: usize::try_from(settings.max_pending_requests).unwrap_or(usize::MAX),
    });
    Ok(Some(Arc::new(tracker::SpendTracker::new(writer, prices))))
}
