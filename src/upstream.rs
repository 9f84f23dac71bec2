//! Upstream targets: one per distinct provider endpoint (scheme, host, port), with its addresses
//! resolved off the request path and a prebuilt [`HttpPeer`] to clone per request.
//!
//! Pingora's `HttpPeer::new` resolves DNS with a blocking call that panics on failure, so it is
//! never called with a host name here: [`resolver`] resolves in the background and publishes
//! ready-made peers through an `ArcSwap`. Every peer handed to Pingora carries the [`gate`] (the
//! exact connection cap) as its connector and tracer, so every new connection passes through it.

pub mod gate;
pub mod provider_tls;
pub mod resolver;
pub mod retry;
pub mod verify;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;
use pingora::upstreams::peer::{HttpPeer, PeerOptions, Tracer};

use crate::config::{EndpointTls, UpstreamSettings, UpstreamUrl};
use gate::{ConnectionGate, GateConnector, GateTracer};
use pingora::utils::tls::CertKey;
use provider_tls::{EndpointMaterial, TlsFileError};

/// Pool group of connections made by retries (first attempts use group 0).
const RETRY_POOL_GROUP: u64 = 1;

/// One provider endpoint and the peer requests to it use.
pub struct Target {
    /// Scheme, host and port (the base path is the route's business).
    pub url: UpstreamUrl,
    options: PeerOptions,
    client_cert: Option<Arc<CertKey>>,
    min_tls_13: bool,
    /// TLS to an IP literal: no SNI is sent and, unless verification is off for the endpoint,
    /// the certificate is verified by [`verify::ip_verify_hook`], whose verdict must be OK.
    ip_host: bool,
    peer: ArcSwapOption<HttpPeer>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target").field("url", &self.url).finish()
    }
}

impl Target {
    /// A peer for one request, connecting through `connector` (the gate, with the request's
    /// reserved slot), or `None` while the host has not been resolved. With `fresh` (a retry
    /// after a pooled connection failed), the peer never matches a pooled connection made for
    /// first attempts, so the retry cannot land on another stale one.
    pub fn peer(&self, connector: GateConnector, fresh: bool) -> Option<Box<HttpPeer>> {
        let mut peer = Box::new(self.peer.load().as_deref()?.clone());
        peer.options.custom_l4 = Some(Arc::new(connector));
        if fresh {
            peer.group_key = RETRY_POOL_GROUP;
        }
        Some(peer)
    }

    /// Points the target at `addr`: new connections go there; pooled ones to the old address
    /// are no longer picked (the pool is keyed by address).
    pub fn set_address(&self, addr: SocketAddr) {
        if self
            .peer
            .load()
            .as_deref()
            .is_some_and(|p| p._address.as_inet() == Some(&addr))
        {
            return;
        }
        // An empty SNI sends none (RFC 6066: no IP literals); the hook verifies instead.
        let sni = if self.ip_host {
            String::new()
        } else {
            self.url.host.clone()
        };
        let mut peer = HttpPeer::new(addr, self.url.tls, sni);
        peer.options = self.options.clone();
        peer.client_cert_key = self.client_cert.clone();
        self.peer.store(Some(Arc::new(peer)));
    }

    /// Whether a connection that negotiated TLS `version` (BoringSSL's name, e.g. `TLSv1.3`)
    /// may carry a request: TLS 1.2 or newer, or 1.3 only when so configured.
    pub fn accepts_tls_version(&self, version: &str) -> bool {
        match version {
            "TLSv1.3" => true,
            "TLSv1.2" => !self.min_tls_13,
            _ => false,
        }
    }

    /// Whether this target's certificate is verified after the handshake (an IP upstream with
    /// verification on): a connection without an OK [`verify::IpVerdict`] must not be used.
    pub fn verified_after_handshake(&self) -> bool {
        self.ip_host && self.options.upstream_tls_handshake_complete_hook.is_some()
    }

    /// The address new connections go to, if resolved.
    pub fn address(&self) -> Option<SocketAddr> {
        self.peer
            .load()
            .as_deref()
            .and_then(|p| p._address.as_inet().copied())
    }
}

/// Every distinct upstream endpoint: from the config's routes, and from database deployments
/// as they appear. The lock is taken when routes or snapshots are built, never per request.
pub struct Targets {
    options: PeerOptions,
    min_tls_13: bool,
    endpoints: Vec<(EndpointTls, EndpointMaterial)>,
    by_endpoint: Mutex<HashMap<(bool, String, u16), Arc<Target>>>,
}

impl Targets {
    /// Targets with their own gate sized from `settings` (tests, `-t`, one-shot tools).
    pub fn standalone(settings: &UpstreamSettings) -> Result<Targets, TlsFileError> {
        Targets::new(
            settings,
            &ConnectionGate::new(
                settings.max_connections,
                settings.pool_wait_timeout,
                settings.connect_timeout,
            ),
        )
    }

    /// Builds the peer options shared by every target from `settings`, every new connection
    /// passing through `gate`.
    pub fn new(
        settings: &UpstreamSettings,
        gate: &Arc<ConnectionGate>,
    ) -> Result<Targets, TlsFileError> {
        let endpoints = settings
            .endpoints
            .iter()
            .map(|e| Ok((e.clone(), provider_tls::endpoint_material(e)?)))
            .collect::<Result<_, TlsFileError>>()?;
        Ok(Targets {
            options: peer_options(settings, gate)?,
            min_tls_13: settings.min_tls_version_13,
            endpoints,
            by_endpoint: Mutex::new(HashMap::new()),
        })
    }

    /// The target for `url`, created on first use so routes sharing an endpoint share a pool.
    pub fn target_for(&self, url: &UpstreamUrl) -> Arc<Target> {
        let key = (url.tls, url.host.clone(), url.port);
        let mut by_endpoint = self.by_endpoint.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = by_endpoint.get(&key) {
            return t.clone();
        }
        let mut options = self.options.clone();
        let mut client_cert = None;
        let mut min_tls_13 = self.min_tls_13;
        let endpoint = self
            .endpoints
            .iter()
            .find(|(e, _)| e.host == url.host && e.port.is_none_or(|p| p == url.port));
        if let Some((e, material)) = endpoint {
            if material.ca.is_some() {
                options.ca = material.ca.clone();
            }
            client_cert = material.client_cert.clone();
            min_tls_13 = e.min_tls_version_13.unwrap_or(min_tls_13);
            if e.insecure_skip_verify {
                options.verify_cert = false;
                options.verify_hostname = false;
            }
        }
        let ip = url.host.parse::<IpAddr>().ok().filter(|_| url.tls);
        if let Some(ip) = ip.filter(|_| options.verify_cert) {
            let hook = verify::ip_verify_hook(ip, options.ca.as_deref().map(|ca| &ca[..]));
            options.upstream_tls_handshake_complete_hook = Some(hook);
        }
        let target = Arc::new(Target {
            url: url.endpoint(),
            options,
            client_cert,
            min_tls_13,
            ip_host: ip.is_some(),
            peer: ArcSwapOption::empty(),
        });
        by_endpoint.insert(key, target.clone());
        target
    }

    /// Every target.
    pub fn all(&self) -> Vec<Arc<Target>> {
        let by_endpoint = self.by_endpoint.lock().unwrap_or_else(|e| e.into_inner());
        by_endpoint.values().cloned().collect()
    }
}

/// Targets with the default upstream settings, for unit tests.
#[cfg(test)]
pub fn test_targets() -> Targets {
    let config = crate::config::Config::from_yaml(
        "listeners: [{ address: \"127.0.0.1:1\" }]\nroutes: [{ name: a, path_prefix: /a, model: m }]\n",
        std::path::Path::new("."),
        &|_| None,
    )
    .expect("valid");
    Targets::standalone(&config.upstream).expect("targets")
}

/// The options every upstream connection is made with.
fn peer_options(
    settings: &UpstreamSettings,
    gate: &Arc<ConnectionGate>,
) -> Result<PeerOptions, TlsFileError> {
    let mut options = PeerOptions::new();
    options.connection_timeout = Some(settings.connect_timeout);
    options.total_connection_timeout = Some(settings.tls_handshake_timeout);
    options.read_timeout = Some(settings.read_timeout);
    options.write_timeout = Some(settings.write_timeout);
    options.idle_timeout = Some(settings.idle_timeout);
    options.verify_cert = true;
    options.verify_hostname = true;
    options.tracer = Some(Tracer(Box::new(GateTracer::new(gate.clone()))));
    if let Some(path) = &settings.ca_file {
        options.ca = Some(provider_tls::load_ca_bundle(path)?);
    }
    Ok(options)
}
