//! The server addresses a watcher may use: every address every configured server's host
//! resolves to (a headless Service names each serving replica), visited in turn from a random
//! start so a fleet of watchers spreads over them.

use std::sync::Arc;
use std::time::Duration;

use super::client::Endpoint;
use crate::config::FanoutServer;

/// Deadline for resolving one server's host.
const RESOLVE_DEADLINE: Duration = Duration::from_secs(5);

/// Every address of every server, in the order configured (IPv4 before IPv6 within a name);
/// and one line per server that could not be resolved.
pub(super) async fn resolve(servers: &[Arc<FanoutServer>]) -> (Vec<Endpoint>, Vec<String>) {
    let mut endpoints = Vec::new();
    let mut problems = Vec::new();
    for server in servers {
        let lookup = tokio::net::lookup_host((server.host.as_str(), server.port));
        match tokio::time::timeout(RESOLVE_DEADLINE, lookup).await {
            Ok(Ok(addrs)) => {
                let mut addrs: Vec<_> = addrs.collect();
                addrs.sort_by_key(|a| a.is_ipv6());
                addrs.dedup();
                if addrs.is_empty() {
                    problems.push(format!("{}: its host has no address", server.url));
                }
                endpoints.extend(addrs.into_iter().map(|addr| Endpoint {
                    server: server.clone(),
                    addr,
                }));
            }
            Ok(Err(e)) => problems.push(format!("{}: cannot resolve its host: {e}", server.url)),
            Err(_) => problems.push(format!(
                "{}: resolving its host timed out after {RESOLVE_DEADLINE:?}",
                server.url
            )),
        }
    }
    (endpoints, problems)
}

/// The addresses in use and which one is next.
#[derive(Default)]
pub(super) struct Rotation {
    endpoints: Vec<Endpoint>,
    current: usize,
}

impl Rotation {
    /// Takes a new list of addresses, keeping the current one when it is still listed, else
    /// starting at a random one.
    pub fn replace(&mut self, endpoints: Vec<Endpoint>) {
        let keep = self
            .endpoints
            .get(self.current)
            .and_then(|c| endpoints.iter().position(|e| e == c));
        self.current = keep.unwrap_or_else(|| fastrand::usize(..endpoints.len().max(1)));
        self.endpoints = endpoints;
    }

    /// The address to use now.
    pub fn current(&self) -> Option<&Endpoint> {
        self.endpoints.get(self.current)
    }

    /// Moves to the next address.
    pub fn advance(&mut self) {
        if !self.endpoints.is_empty() {
            self.current = (self.current + 1) % self.endpoints.len();
        }
    }

    /// How many addresses there are.
    pub fn len(&self) -> usize {
        self.endpoints.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(url: &str, host: &str, port: u16) -> Arc<FanoutServer> {
        Arc::new(FanoutServer {
            url: url.into(),
            tls: false,
            host: host.into(),
            port,
        })
    }

    #[tokio::test]
    async fn every_address_of_every_server_counts() {
        let servers = [
            server("http://127.0.0.1:1", "127.0.0.1", 1),
            server("http://127.0.0.2:2", "127.0.0.2", 2),
            server("http://localhost:3", "localhost", 3),
        ];
        let (endpoints, problems) = resolve(&servers).await;
        assert!(problems.is_empty(), "{problems:?}");
        assert!(endpoints.len() >= 3, "{endpoints:?}");
        assert_eq!(endpoints[0].addr.to_string(), "127.0.0.1:1");
        assert_eq!(endpoints[1].addr.to_string(), "127.0.0.2:2");
        assert!(endpoints[2..].iter().all(|e| e.addr.port() == 3));
    }

    #[test]
    fn the_rotation_visits_every_address_and_keeps_its_place() {
        let s = server("http://x", "x", 1);
        let endpoint = |ip: &str| Endpoint {
            server: s.clone(),
            addr: format!("{ip}:1").parse().expect("addr"),
        };
        let mut rotation = Rotation::default();
        rotation.replace(vec![endpoint("10.0.0.1"), endpoint("10.0.0.2")]);
        let first = rotation.current().cloned().expect("one");
        rotation.advance();
        let second = rotation.current().cloned().expect("one");
        assert_ne!(first, second);
        rotation.advance();
        assert_eq!(rotation.current(), Some(&first));
        // A new resolution that still lists the current address keeps it.
        rotation.replace(vec![endpoint("10.0.0.3"), first.clone(), second.clone()]);
        assert_eq!(rotation.current(), Some(&first));
        // Starts are spread: over many watchers both addresses are chosen first.
        let starts: std::collections::HashSet<_> = (0..64)
            .map(|_| {
                let mut r = Rotation::default();
                r.replace(vec![endpoint("10.0.0.1"), endpoint("10.0.0.2")]);
                r.current().expect("one").addr
            })
            .collect();
        assert_eq!(starts.len(), 2);
    }
}
