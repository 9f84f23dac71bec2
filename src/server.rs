//! Builds and runs the Pingora server from a validated [`Config`]: credentials loaded and
//! upstreams resolved before the first listener opens, then the proxy service, the admin
//! service, the fan-out service (when configured), the credential refresh service (when a
//! database or a fan-out server is the source) and the DNS refresh service. What the credential
//! sources are built from is [`crate::sources`]'s, shared with the reload; the listening
//! services (proxy, fan-out, admin) and their TLS are built in `listeners`.

mod error;
mod listeners;
mod reload;

use std::path::Path;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server};
use pingora::services::background::background_service;
use tracing::warn;

use crate::config::Config;
use crate::credentials::refresh::{RefreshService, Refresher};
use crate::credentials::CredentialCache;
use crate::downstream::listener_tls::CertReloader;
use crate::downstream::metrics::{self as downstream_metrics, ClientsOf};
use crate::downstream::ClientConnections;
use crate::fanout::watch::SpendReporter;
use crate::live_config::{LiveConfig, SharedLiveConfig};
use crate::metrics;
use crate::proxy::SidecarProxy;
use crate::router::Router;
use crate::sources::{credential_sources, report_unserved_routes, SourceContext, SourceError};
use crate::spend::tracker::SpendTracker;
use crate::spend::writer::{Flushed, SpendService, SpendTarget};
use crate::upstream::gate::ConnectionGate;
use crate::upstream::provider_tls::load_ca_bundle;
use crate::upstream::resolver::{resolve_all, ResolverService};
use crate::upstream::Targets;
pub use error::StartError;
use listeners::{admin_service, fanout_service, proxy_service};
use reload::Reloader;

/// Process-level options from the command line.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Take over the listeners of a running sidecar (`-u`).
    pub upgrade: bool,
    /// Detach into the background (`-d`).
    pub daemon: bool,
}

/// Pingora's server settings, from ours.
pub fn server_conf(config: &Config) -> ServerConf {
    let threads = config.server.threads;
    ServerConf {
        threads,
        grace_period_seconds: Some(config.server.grace_period.as_secs()),
        graceful_shutdown_timeout_seconds: Some(config.server.graceful_shutdown_timeout.as_secs()),
        pid_file: config.server.pid_file.clone(),
        upgrade_sock: config.server.upgrade_sock.clone(),
        // Pingora multiplies this by `threads`; ours is the total across the process.
        upstream_keepalive_pool_size: config.upstream.keepalive_pool_size.div_ceil(threads),
        ..ServerConf::default()
    }
}

/// Runs the sidecar until it is told to stop. Returns only on a start-up error.
/// `config_path` is where `config` came from, read again on SIGHUP.
pub fn run(config: Config, config_path: &Path, options: RunOptions) -> Result<(), StartError> {
    warn_about_unverified_endpoints(&config);
    let cache = Arc::new(CredentialCache::default());
    let up = &config.upstream;
    let gate = ConnectionGate::new(up.max_connections, up.pool_wait_timeout, up.connect_timeout);
    let targets = Arc::new(Targets::new(up, &gate).map_err(StartError::Upstream)?);
    // Token endpoints (Entra ID) are verified against the upstream CA bundle.
    let token_ca = up.ca_file.as_deref().map(load_ca_bundle).transpose();
    crate::minted::configure_token_client(token_ca.map_err(StartError::Upstream)?);
    let live_config: SharedLiveConfig =
        Arc::new(ArcSwap::from_pointee(LiveConfig::new(&config, &targets)));
    crate::upstream::gate::metrics::register(gate.clone()).map_err(StartError::Metrics)?;
    crate::credentials::metrics::register(cache.clone()).map_err(StartError::Metrics)?;
    metrics::register_build_info().map_err(StartError::Metrics)?;
    let ctx = SourceContext {
        targets: targets.clone(),
        wake: Arc::default(),
        hub: config.fanout.as_ref().map(|_| Arc::default()),
        database: Arc::default(),
    };
    let spend = crate::spend::tracker_for(&config).map_err(StartError::Prices)?;
    let router = Arc::new(Router::default());
    let refresher = load_at_start(&config, &ctx, &cache, &live_config, &router)?;

    let opt = Opt {
        upgrade: options.upgrade,
        daemon: options.daemon,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, server_conf(&config));
    server.bootstrap();
    let mut cert_stores = Vec::new();
    let clients = ClientConnections::for_proxy(live_config.clone());
    downstream_metrics::register(clients.clone(), ClientsOf::Proxy).map_err(StartError::Metrics)?;
    let sidecar = SidecarProxy::new(
        live_config.clone(),
        cache.clone(),
        router.clone(),
        gate,
        clients.clone(),
        spend.clone(),
    );
    let proxy = proxy_service(
        &server,
        &config,
        sidecar,
        &live_config,
        &mut cert_stores,
        &clients,
    )?;
    server.add_service(proxy);
    let admin = admin_service(&config, live_config.clone(), cache.clone(), router.clone());
    server.add_service(admin);
    let fanout_grants = match (&config.fanout, &ctx.hub) {
        (Some(fanout), Some(hub)) => {
            let (service, grants) =
                fanout_service(&config, fanout, hub, spend.as_ref(), &mut cert_stores)?;
            server.add_service(service);
            Some(grants)
        }
        _ => None,
    };
    if let Some(interval) = config
        .listeners
        .iter()
        .filter_map(|l| l.tls.as_ref())
        .chain(config.fanout.as_ref().and_then(|f| f.tls.as_ref()))
        .map(|t| t.reload_interval)
        .min()
    {
        server.add_service(background_service(
            "tls certificate reload",
            CertReloader {
                stores: cert_stores,
                interval,
            },
        ));
    }
    if config.credentials.postgres.is_some() || config.credentials.watch.is_some() {
        server.add_service(background_service(
            "credential refresh",
            RefreshService(refresher.clone()),
        ));
    }
    let spend_target = Arc::new(spend_target(&config, &ctx)?);
    if let Some(spend) = &spend {
        server.add_service(background_service(
            "spend writer",
            SpendService {
                writer: spend.writer().clone(),
                target: spend_target.clone(),
            },
        ));
    }
    server.add_service(background_service(
        "upstream dns refresh",
        ResolverService {
            targets: targets.clone(),
            interval: config.upstream.dns_refresh_interval,
        },
    ));
    server.add_service(background_service(
        "config reload",
        Reloader {
            path: config_path.to_path_buf(),
            running: Mutex::new(config),
            live_config,
            sources: ctx,
            refresher,
            cache,
            router,
            fanout_grants,
            spend: spend.clone(),
            applied: Default::default(),
        },
    ));
    server.run(RunArgs::default());
    // Stopped: the writer's service flushed on the way out, unless its runtime was stopped
    // first; what is still pending is written now.
    if let Some(spend) = &spend {
        final_spend_flush(spend, &spend_target);
    }
    // Stopped (SIGTERM, SIGQUIT): the last spans and the logger's last lines go out before the
    // process exits.
    crate::otel::shutdown();
    crate::logging::flush();
    std::process::exit(0)
}

/// Where this sidecar's spend goes: its fan-out servers when it watches one, else the database
/// session of its Postgres source.
fn spend_target(config: &Config, ctx: &SourceContext) -> Result<SpendTarget, StartError> {
    match &config.credentials.watch {
        Some(watch) => {
            let reporter = SpendReporter::new(watch, config.upstream.ca_file.as_ref())
                .map_err(|e| StartError::Credentials(SourceError::Watch(e)))?;
            Ok(SpendTarget::Fanout(Arc::new(reporter)))
        }
        None => Ok(SpendTarget::Database(ctx.database.clone())),
    }
}

/// Writes the spend still pending at exit, on a runtime of its own (the services' are gone).
fn final_spend_flush(spend: &SpendTracker, target: &SpendTarget) {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        warn!("spend: no runtime to write the last spend on");
        return;
    };
    runtime.block_on(async {
        if spend.writer().flush_to(target).await == Flushed::Kept {
            warn!("spend: the last batch could not be written before exit");
        }
    });
}

fn warn_about_unverified_endpoints(config: &Config) {
    for endpoint in config
        .upstream
        .endpoints
        .iter()
        .filter(|e| e.insecure_skip_verify)
    {
        warn!(
            "upstream {}: certificate verification is OFF (insecure_skip_verify); keys sent there can be intercepted",
            endpoint.host
        );
    }
}

/// Loads every credential source once and resolves the upstreams, before anything listens; the
/// refresher it returns keeps them current. Runs on a short-lived runtime: Pingora starts its
/// own per service, and may fork to daemonize, which would lose threads made before.
fn load_at_start(
    config: &Config,
    ctx: &SourceContext,
    cache: &Arc<CredentialCache>,
    live_config: &SharedLiveConfig,
    router: &Router,
) -> Result<Arc<Refresher>, StartError> {
    let startup = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(StartError::Runtime)?;
    startup.block_on(async {
        // Installs the process's SIGHUP handler now, so a reload signal that arrives while
        // starting is ignored instead of killing the process (the default action).
        drop(tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::hangup(),
        ));
        let sources = credential_sources(config, ctx).await?;
        let interval = config
            .credentials
            .postgres
            .as_ref()
            .map_or(crate::config::DEFAULT_REFRESH_INTERVAL, |pg| {
                pg.refresh_interval
            });
        let refresher = Refresher::new(cache.clone(), sources, interval, ctx.wake.clone());
        refresher.refresh().await;
        report_unserved_routes(&live_config.load().routes, &cache.snapshot(), router);
        resolve_all(&ctx.targets.all()).await;
        Ok(Arc::new(refresher))
    })
}
