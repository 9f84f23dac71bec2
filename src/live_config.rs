//! The live config: the part of the config the proxy consults for every request, which a config
//! reload (SIGHUP) replaces as one unit: the route table, the client access rules, the request size
//! limits and the router settings. Requests take the current [`LiveConfig`] once, at admission, so
//! a reload never changes a request halfway through.

use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;

use crate::config::{AccessSettings, Config, Limits, RouterSettings};
use crate::routes::RouteTable;
use crate::upstream::Targets;

/// Routes, access rules, limits and router settings from one config.
pub struct LiveConfig {
    /// The routes, registered with their upstream targets.
    pub routes: RouteTable,
    /// Who may use the sidecar.
    pub access: AccessSettings,
    /// Request size limits.
    pub limits: Limits,
    /// How `dispatch: model` routes cool failing deployments down.
    pub router: RouterSettings,
    /// SHA-256 (hex) of the config file this was built from.
    pub config_digest: String,
    /// When it went into force (start-up or the reload that built it).
    pub loaded_at: SystemTime,
}

/// The live config in force, shared by the proxy, the admin listener and the reloader.
pub type SharedLiveConfig = Arc<ArcSwap<LiveConfig>>;

impl LiveConfig {
    /// Builds the live config of `config`, registering new upstreams in `targets`.
    pub fn new(config: &Config, targets: &Targets) -> LiveConfig {
        let token_header = config.access.client_tokens.as_ref().map(|t| &t.header);
        LiveConfig {
            routes: RouteTable::new(&config.routes, targets, token_header),
            access: config.access.clone(),
            limits: config.limits,
            router: config.router,
            config_digest: config.digest.clone(),
            loaded_at: SystemTime::now(),
        }
    }
}
