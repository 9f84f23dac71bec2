//! Resolves upstream host names off the request path: once before the proxy starts, then every
//! `upstream.dns_refresh_interval` in a background service.
//!
//! A failed lookup keeps the last good address. IPv4 addresses are preferred when a name has both,
//! matching what most providers' edge networks serve best and what loopback test servers bind.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tracing::{info, warn};

use super::{Target, Targets};

/// Why a host name did not resolve.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The lookup failed.
    #[error("cannot resolve {host}: {error}")]
    Lookup {
        /// The host name.
        host: String,
        /// The resolver's reason.
        error: std::io::Error,
    },
    /// The lookup succeeded with no address.
    #[error("{host} resolved to no address")]
    NoAddress {
        /// The host name.
        host: String,
    },
}

/// Resolves `target` now and points it at the first address.
pub async fn resolve(target: &Target) -> Result<SocketAddr, ResolveError> {
    let host = target.url.host.as_str();
    let port = target.url.port;
    let addr = if let Ok(ip) = host.parse::<IpAddr>() {
        SocketAddr::new(ip, port)
    } else {
        let mut addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|error| ResolveError::Lookup {
                host: host.to_string(),
                error,
            })?
            .collect();
        addrs.sort_by_key(|a| a.is_ipv6());
        *addrs.first().ok_or_else(|| ResolveError::NoAddress {
            host: host.to_string(),
        })?
    };
    let before = target.address();
    target.set_address(addr);
    if before.is_some_and(|b| b != addr) {
        info!("upstream {} now resolves to {addr}", target.url);
    }
    Ok(addr)
}

/// Resolves every target, logging each failure. Returns how many failed.
pub async fn resolve_all(targets: &[Arc<Target>]) -> usize {
    let mut failed = 0;
    for target in targets {
        if let Err(e) = resolve(target).await {
            failed += 1;
            if target.address().is_some() {
                warn!(
                    "upstream {}: {e}; keeping the last good address",
                    target.url
                );
            } else {
                warn!(
                    "upstream {}: {e}; its routes answer 502 until it resolves",
                    target.url
                );
            }
        }
    }
    failed
}

/// The background service re-resolving every target periodically.
pub struct ResolverService {
    /// Targets to keep resolved (new ones are picked up each round).
    pub targets: Arc<Targets>,
    /// Time between rounds.
    pub interval: Duration,
}

#[async_trait]
impl BackgroundService for ResolverService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {
                    resolve_all(&self.targets.all()).await;
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}
