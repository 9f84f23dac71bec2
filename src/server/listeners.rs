//! The listening services the server runs: the proxy on every configured listener, the
//! fan-out server on its own, the admin listener; and each listener's TLS (certificate stores
//! watched for reloads).

use std::sync::Arc;

use arc_swap::ArcSwap;
use pingora::apps::HttpServerOptions;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::proxy::HttpProxy;
use pingora::server::Server;
use pingora::services::listening::Service;
use tracing::info;

use super::StartError;
use crate::admin::AdminApp;
use crate::config::Config;
use crate::credentials::CredentialCache;
use crate::downstream::listener_tls::{CertStore, TlsAcceptor};
use crate::downstream::metrics::{self as downstream_metrics, ClientsOf};
use crate::downstream::registry::Caps;
use crate::downstream::{
    AllowedNetworks, ClientConnections, ConnectionPolicy, GuardedApp, HeadMarked, TlsListeners,
};
use crate::fanout::server::{grants_by_token, FanoutApp, SharedGrants};
use crate::live_config::SharedLiveConfig;
use crate::proxy::SidecarProxy;
use crate::router::Router;
use crate::sources::keys;
use crate::spend::tracker::SpendTracker;

/// The proxy service (`sidecar`) on every configured listener; TLS listeners' certificate
/// stores are added to `cert_stores`.
pub(super) fn proxy_service(
    server: &Server,
    config: &Config,
    sidecar: SidecarProxy,
    live_config: &SharedLiveConfig,
    cert_stores: &mut Vec<Arc<CertStore>>,
    clients: &Arc<ClientConnections>,
) -> Result<Service<GuardedApp<HttpProxy<SidecarProxy>>>, StartError> {
    let mut app = pingora::proxy::http_proxy(&server.configuration, sidecar);
    // Let CONNECT reach our request filter, which answers it with an explanatory JSON 405
    // (Pingora's own refusal is a bare 405). It is never tunnelled.
    let mut server_options = HttpServerOptions::default();
    server_options.allow_connect_method_proxying = true;
    // An HTTP/2 connection with no stream open is closed after the keep-alive idle time (read
    // at start; the overload policy evicts idle ones sooner when the cap is reached).
    server_options.h2_idle_timeout = Some(config.limits.client_keepalive_timeout);
    app.server_options = Some(server_options);
    // HTTP/2 heads up to about twice the limit reach the request checks (and their JSON 431).
    app.h2_options = Some(crate::proxy::framing::http2_options(&config.limits));
    let mut tls = TlsListeners::default();
    for listener in &config.listeners {
        let store = add_tls(
            &mut tls,
            "proxy",
            &listener.address,
            listener.tls.as_ref(),
            true,
        )?;
        cert_stores.extend(store);
    }
    let mut proxy = Service::new(
        "sidecar proxy".to_string(),
        GuardedApp::new(app, clients.clone(), tls),
    );
    for listener in &config.listeners {
        proxy.add_listener(
            ListenerConfig::tcp(&listener.address).l4_buffer(client_read_buffer(listener)),
        );
    }
    proxy.set_connection_filter(AllowedNetworks::new(live_config.clone(), clients.clone()));
    Ok(proxy)
}

/// The read buffer under a proxy listener's connections. Pingora's default puts 64 KiB in front
/// of every client connection (`DEFAULT_L4_READ_BUFFER_SIZE`, zeroed when made), so held streams
/// pay for it. Over TLS it saves a system call per record (BoringSSL reads a record's header and
/// its body apart), so a TLS listener keeps it; over plain HTTP, Pingora's HTTP/1 session reads
/// the head and body into buffers of its own, so the L4 buffer only doubled them.
fn client_read_buffer(listener: &crate::config::Listener) -> L4BufferSettings {
    if listener.tls.is_some() {
        L4BufferSettings::default()
    } else {
        L4BufferSettings::default().read(0)
    }
}

/// The fan-out server behind the listener protections.
type FanoutService = Service<GuardedApp<HeadMarked<FanoutApp>>>;

/// The fan-out service on its listener, and the grants a reload replaces.
pub(super) fn fanout_service(
    config: &Config,
    fanout: &crate::config::FanoutSettings,
    hub: &Arc<crate::fanout::FanoutHub>,
    spend: Option<&Arc<SpendTracker>>,
    cert_stores: &mut Vec<Arc<CertStore>>,
) -> Result<(FanoutService, SharedGrants), StartError> {
    let grants: SharedGrants = Arc::new(ArcSwap::from_pointee(grants_by_token(&fanout.watchers)));
    let app = FanoutApp::new(hub.clone(), grants.clone(), keys(config))
        .with_spend(spend.map(|s| s.writer().clone()));
    // The proxy listener's protections, with the fan-out listener's own caps (read at start:
    // the listener's settings need a restart, as its address does).
    let policy = ConnectionPolicy {
        caps: Caps {
            max_connections: fanout.max_connections,
            max_per_source: fanout.max_connections_per_source,
        },
        ..ConnectionPolicy::of(&config.limits)
    };
    let clients = ClientConnections::with_policy(move || policy);
    downstream_metrics::register(clients.clone(), ClientsOf::Fanout)
        .map_err(StartError::Metrics)?;
    let mut tls = TlsListeners::default();
    cert_stores.extend(add_tls(
        &mut tls,
        "fanout",
        &fanout.address,
        fanout.tls.as_ref(),
        false,
    )?);
    let mut service = Service::new(
        "fanout".to_string(),
        GuardedApp::new(HeadMarked(app), clients, tls),
    );
    service.add_tcp(&fanout.address);
    Ok((service, grants))
}

/// Registers a listener's TLS, when it has any, in `listeners`; returns its certificate store
/// (watched for new certificates). `what` names the listener in the log line; `h2` offers
/// HTTP/2 by ALPN.
fn add_tls(
    listeners: &mut TlsListeners,
    what: &str,
    address: &str,
    tls: Option<&crate::config::ListenerTls>,
    h2: bool,
) -> Result<Option<Arc<CertStore>>, StartError> {
    let Some(tls) = tls else {
        info!("{what}: listening on http://{address}");
        return Ok(None);
    };
    let bound: std::net::SocketAddr =
        address
            .parse()
            .map_err(|error| StartError::ListenerAddress {
                what: what.to_string(),
                address: address.to_string(),
                error,
            })?;
    let store = CertStore::load(&tls.cert, &tls.key).map_err(StartError::ListenerTls)?;
    let acceptor = TlsAcceptor::new(tls, store.clone(), h2).map_err(StartError::ListenerTls)?;
    listeners.add(bound, acceptor);
    let mtls = if tls.client_ca.is_some() {
        " (client certificates required)"
    } else {
        ""
    };
    info!("{what}: listening on https://{address}{mtls}");
    Ok(Some(store))
}

/// The admin listener's service: probes and metrics.
pub(super) fn admin_service(
    config: &Config,
    live_config: SharedLiveConfig,
    cache: Arc<CredentialCache>,
    router: Arc<Router>,
) -> Service<AdminApp> {
    let app = AdminApp {
        live_config,
        cache,
        router,
        // The proxy listeners and the fan-out listener must all be bound to be ready.
        listeners: config
            .listeners
            .iter()
            .map(|l| &l.address)
            .chain(config.fanout.as_ref().map(|f| &f.address))
            .filter_map(|address| address.parse().ok())
            .collect(),
        // Three missed polls in a row before the snapshot counts as stale; a watcher's age runs
        // from its last answer, so two waits without one.
        stale_after: match (&config.credentials.postgres, &config.credentials.watch) {
            (Some(pg), _) => Some(pg.refresh_interval * 3),
            (None, Some(w)) => Some(crate::fanout::watch::stale_after(w)),
            (None, None) => None,
        },
    };
    let mut service = Service::new("admin".to_string(), app);
    service.add_tcp(&config.admin.address);
    info!(
        "admin listener on http://{} (/healthz, /readyz, /metrics)",
        config.admin.address
    );
    service
}
