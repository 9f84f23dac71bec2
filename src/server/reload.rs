//! Config reload without a restart, on SIGHUP: the file is read and validated again; if it is
//! valid, its routes, access rules and credential sources replace the running ones, each as one
//! atomic swap (credentials first, so a new route never goes live before its key is loaded).
//! If it is not, every error is logged and the running config stays in force.
//!
//! Settings that shape sockets and threads (`server`, `listeners`, `upstream`, `admin`, `log`,
//! `credentials.postgres.refresh_interval`, the fan-out listener's address and TLS, the HTTP/2
//! header-list cap derived from `limits`) take effect at the next restart or `-u` upgrade; a
//! reload that changes them says so. Fan-out watcher
//! grants are applied by the reload (a revoked token is refused from then on).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::signal::unix::{signal, SignalKind};
use tracing::{error, info, warn};

use crate::config::Config;
use crate::credentials::refresh::Refresher;
use crate::credentials::CredentialCache;
use crate::fanout::server::{grants_by_token, SharedGrants};
use crate::live_config::{LiveConfig, SharedLiveConfig};
use crate::metrics::RELOADS;
use crate::proxy::framing::http2_header_list_cap;
use crate::router::Router;
use crate::sources::{credential_sources, report_unserved_routes, SourceContext};
use crate::spend::tracker::{load_prices, SpendTracker};
use crate::upstream::resolver::resolve_all;

/// Reloads the config on SIGHUP.
pub struct Reloader {
    /// The config file, as given with `-c`.
    pub path: PathBuf,
    /// The config in force.
    pub running: Mutex<Config>,
    /// Routes and access rules, swapped on reload.
    pub live_config: SharedLiveConfig,
    /// What new credential sources are built with (new routes register upstreams there).
    pub sources: SourceContext,
    /// Credential loading, given the new sources.
    pub refresher: Arc<Refresher>,
    /// The snapshot, to report routes a reload leaves unserved.
    pub cache: Arc<CredentialCache>,
    /// The model router, for the same report.
    pub router: Arc<Router>,
    /// The fan-out watchers' grants, when this instance serves fan-out.
    pub fanout_grants: Option<SharedGrants>,
    /// The spend tracker, whose price map a reload reads again.
    pub spend: Option<Arc<SpendTracker>>,
    /// Reloads applied so far (orders the background source replacements).
    pub applied: AtomicU64,
}

impl Reloader {
    /// Reads the config file again and applies it, or logs why not. Returns whether it applied.
    pub async fn reload(&self) -> bool {
        let path = self.path.display();
        info!("config reload: reading {path}");
        let config = match Config::load(&self.path) {
            Ok(config) => config,
            Err(errors) => {
                error!(
                    "config reload: {path} rejected; the running config stays in force\n{errors}"
                );
                RELOADS.with_label_values(&["rejected"]).inc();
                return false;
            }
        };
        let sources = match credential_sources(&config, &self.sources).await {
            Ok(sources) => sources,
            Err(e) => {
                error!("config reload: {path} rejected; the running config stays in force: {e}");
                RELOADS.with_label_values(&["rejected"]).inc();
                return false;
            }
        };
        let prices = match self
            .spend
            .as_ref()
            .map(|_| load_prices(&config.spend))
            .transpose()
        {
            Ok(prices) => prices,
            Err(e) => {
                error!("config reload: {path} rejected; the running config stays in force: spend.prices_file: {e}");
                RELOADS.with_label_values(&["rejected"]).inc();
                return false;
            }
        };
        for section in restart_only_changes(&self.running(), &config) {
            warn!("config reload: {section} changed; that takes effect at the next restart");
        }
        let targets = &self.sources.targets;
        let live_config = LiveConfig::new(&config, targets);
        resolve_all(&targets.all()).await;
        if let Some(grants) = &self.fanout_grants {
            let watchers = config.fanout.as_ref().map_or(&[][..], |f| &f.watchers[..]);
            grants.store(Arc::new(grants_by_token(watchers)));
        }
        let routes = live_config.routes.iter().count();
        if let (Some(spend), Some(prices)) = (&self.spend, prices) {
            spend.set_prices(prices);
        }
        self.live_config.store(Arc::new(live_config));
        *self.running.lock().unwrap_or_else(|e| e.into_inner()) = config;
        RELOADS.with_label_values(&["applied"]).inc();
        info!("config reload: applied {path} ({routes} routes)");
        // The routes and access rules are in force now. The credential sources are swapped and
        // read in the background: a refresh waiting on a stalled database (up to its
        // query_timeout) must never hold up a reload, least of all one that revokes access.
        let generation = self.applied.fetch_add(1, Ordering::Relaxed) + 1;
        let (refresher, cache, live_config, router) = (
            self.refresher.clone(),
            self.cache.clone(),
            self.live_config.clone(),
            self.router.clone(),
        );
        tokio::spawn(async move {
            if refresher.replace_sources(sources, generation).await {
                refresher.refresh().await;
                report_unserved_routes(&live_config.load().routes, &cache.snapshot(), &router);
                info!("config reload: credential sources read");
            }
        });
        true
    }

    fn running(&self) -> Config {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// The sections that differ between `old` and `new` but apply only at a restart.
fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    // Compared through `Debug` (never printed): the settings types are plain data, and secrets
    // among them print redacted, which only means a changed database URL is not reported here
    // (it is reloadable anyway: the database source is rebuilt).
    let differs =
        |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") != format!("{b:?}");
    let schedule = |c: &Config| {
        c.credentials
            .postgres
            .as_ref()
            .map(|pg| pg.refresh_interval)
    };
    let fanout_listener = |c: &Config| {
        c.fanout
            .as_ref()
            .map(|f| (f.address.clone(), format!("{:?}", f.tls)))
    };
    let mut changed = Vec::new();
    if differs(&old.server, &new.server) {
        changed.push("server");
    }
    if differs(&old.listeners, &new.listeners) {
        changed.push("listeners");
    }
    if differs(&old.upstream, &new.upstream) {
        changed.push("upstream");
    }
    if differs(&old.admin, &new.admin) {
        changed.push("admin");
    }
    if differs(&old.log, &new.log) {
        changed.push("log");
    }
    if schedule(old) != schedule(new) {
        changed.push("credentials.postgres.refresh_interval");
    }
    if http2_header_list_cap(&old.limits) != http2_header_list_cap(&new.limits) {
        changed.push(
            "the HTTP/2 header-list cap (from limits.max_request_header_bytes and \
             max_request_headers, whose 431s apply now)",
        );
    }
    if fanout_listener(old) != fanout_listener(new) {
        changed.push("fanout listener (address, tls; the watcher grants were applied)");
    }
    changed
}

#[async_trait]
impl BackgroundService for Reloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                error!("config reload: cannot watch SIGHUP ({e}); reload by restarting");
                return;
            }
        };
        loop {
            tokio::select! {
                Some(()) = hangups.recv() => {
                    self.reload().await;
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}
