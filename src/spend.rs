//! What a request cost, in LiteLLM's terms: the tokens an answer used ([`Usage`], in LiteLLM's
//! normalised shape), priced with LiteLLM's price map or a deployment's own prices
//! ([`prices`]), by LiteLLM's arithmetic ([`cost`]), so that a cost the sidecar records equals
//! what `litellm.completion_cost` computes for the same usage and model.

pub mod batch;
pub mod cost;
pub mod flush;
pub mod prices;
pub mod tracker;
pub mod writer;

/// Tokens one answer used, as LiteLLM's `Usage` counts them: `prompt` includes the cached
/// tokens (read from the cache, and written to it), as OpenAI reports it; Anthropic's
/// `input_tokens`, which leaves them out, is normalised to that when read.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
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
