//! The accept-time decisions and the count, on tokio's paused clock.

use std::net::{IpAddr, Ipv4Addr};

use arc_swap::ArcSwap;

use super::*;
use crate::access::Cidr;
use crate::config::AccessSettings;
use crate::proxy::dispatch::Dispatch;
use crate::routes::RouteTable;

fn clients(max: u64, allowed: &[&str]) -> Arc<ClientConnections> {
    let dispatch = Dispatch {
        routes: RouteTable::default(),
        access: AccessSettings {
            allowed_cidrs: allowed
                .iter()
                .map(|c| Cidr::parse(c).expect("cidr"))
                .collect(),
            ..AccessSettings::default()
        },
        limits: Limits {
            max_client_connections: max,
            ..Limits::default()
        },
        router: Default::default(),
        config_digest: String::new(),
        loaded_at: std::time::SystemTime::now(),
    };
    ClientConnections::new(Arc::new(ArcSwap::from_pointee(dispatch)))
}

fn peer(last: u8, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)), port)
}

#[tokio::test(start_paused = true)]
async fn addresses_outside_the_allowed_networks_are_refused_and_not_counted() {
    let clients = clients(10, &["127.0.0.1/32"]);
    assert!(clients.admit(peer(1, 1000)));
    assert!(!clients.admit(peer(2, 1000)));
    assert_eq!(clients.open(), 1);
    assert_eq!(clients.counters.refused_address.load(Ordering::Relaxed), 1);
}

#[tokio::test(start_paused = true)]
async fn past_the_limit_connections_are_refused_until_one_closes() {
    let clients = clients(2, &[]);
    assert!(clients.admit(peer(1, 1)));
    assert!(clients.admit(peer(1, 2)));
    assert!(!clients.admit(peer(1, 3)), "handshaking connections count");
    assert_eq!(clients.counters.refused_limit.load(Ordering::Relaxed), 1);
    clients.start_request(peer(1, 1));
    assert_eq!(clients.open(), 2, "handed over: counted once");
    clients.closed(peer(1, 1));
    assert!(clients.admit(peer(1, 3)));
}

#[tokio::test(start_paused = true)]
async fn a_connection_whose_handshake_never_finished_stops_counting_after_the_handshake_limit() {
    let clients = clients(1, &[]);
    assert!(clients.admit(peer(1, 1)));
    tokio::time::advance(HANDSHAKE_LIMIT - Duration::from_secs(1)).await;
    assert!(!clients.admit(peer(1, 2)));
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(clients.open(), 0);
    assert!(clients.admit(peer(1, 2)));
    // A handed-over connection never expires, however long it stays open.
    clients.start_request(peer(1, 2));
    tokio::time::advance(HANDSHAKE_LIMIT * 3).await;
    assert_eq!(clients.open(), 1);
}
