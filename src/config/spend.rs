//! `spend:`: writing spend back to LiteLLM (see [`SpendSettings`]).

use std::path::Path;

use super::reader::{checked_file, resolve, Diagnostics, Section};
use super::schema::SpendSettings;

/// The keys `spend:` takes.
pub(super) const SPEND_KEYS: &[&str] = &[
    "enabled",
    "flush_interval",
    "disable_spend_logs",
    "max_pending_requests",
    "prices_file",
];

/// Reads `spend:`; `keys` is whether `access.litellm_keys` is on or a fan-out grant names
/// `litellm_keys` (the default for `enabled`, and a requirement for it).
pub(super) fn parse_spend(
    s: Option<Section<'_>>,
    keys: bool,
    base_dir: &Path,
    diag: &mut Diagnostics,
) -> SpendSettings {
    let defaults = SpendSettings::defaults(keys);
    let Some(s) = s else { return defaults };
    let enabled = s.boolean("enabled", diag).unwrap_or(defaults.enabled);
    if enabled && !keys {
        diag.error(
            s.path_of("enabled"),
            "spend is written for LiteLLM keys: needs access.litellm_keys (or a fan-out grant \
             with litellm_keys, whose watchers send their spend here)",
        );
    }
    let flush_interval = s
        .duration("flush_interval", diag)
        .unwrap_or(defaults.flush_interval);
    if flush_interval.is_zero() {
        diag.error(s.path_of("flush_interval"), "must be more than 0s");
    }
    SpendSettings {
        enabled,
        flush_interval,
        disable_spend_logs: s
            .boolean("disable_spend_logs", diag)
            .unwrap_or(defaults.disable_spend_logs),
        max_pending_requests: s
            .number("max_pending_requests", 1, 10_000_000, diag)
            .unwrap_or(defaults.max_pending_requests),
        prices_file: s
            .string("prices_file", diag)
            .map(|path| checked_file(&resolve(base_dir, &path), &s.path_of("prices_file"), diag)),
    }
}
