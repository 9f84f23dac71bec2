//! What the sidecar writes back to LiteLLM's database (`spend:` in the config).

use std::path::PathBuf;
use std::time::Duration;

/// `spend.flush_interval` when unset: LiteLLM's own `proxy_batch_write_at` default.
pub const DEFAULT_SPEND_FLUSH_INTERVAL: Duration = Duration::from_secs(10);
/// `spend.max_pending_requests` when unset.
pub const DEFAULT_SPEND_MAX_PENDING_REQUESTS: u64 = 10_000;

/// Spend written back to LiteLLM (`spend:`): what each request with a LiteLLM key cost, added
/// to the key's, team's and user's spend, LiteLLM's daily tables and its spend logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpendSettings {
    /// Whether spend is written. Default: on when `access.litellm_keys` is on, or a fan-out
    /// grant names `litellm_keys` (it needs LiteLLM's keys). A watcher sends it to its fan-out
    /// server, which writes it.
    pub enabled: bool,
    /// Time between writes (each write is one statement, one batch).
    pub flush_interval: Duration,
    /// LiteLLM's `disable_spend_logs`: no row per request in `"LiteLLM_SpendLogs"` (the totals
    /// and daily tables are still written).
    pub disable_spend_logs: bool,
    /// The most requests whose spend-log rows a batch holds while the database is away; past
    /// it, rows are left out and counted (`sidecar_spend_logs_dropped_total`), their spend is
    /// still added.
    pub max_pending_requests: u64,
    /// LiteLLM's price map to use instead of the copy built in (a newer
    /// `model_prices_and_context_window.json`); read at start and on reload.
    pub prices_file: Option<PathBuf>,
}

impl SpendSettings {
    /// The defaults for a config whose `access.litellm_keys` is `keys`.
    pub fn defaults(keys: bool) -> SpendSettings {
        SpendSettings {
            enabled: keys,
            flush_interval: DEFAULT_SPEND_FLUSH_INTERVAL,
            disable_spend_logs: false,
            max_pending_requests: DEFAULT_SPEND_MAX_PENDING_REQUESTS,
            prices_file: None,
        }
    }
}
