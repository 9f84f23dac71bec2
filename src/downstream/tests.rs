//! The count, the refusals and the counters of [`ClientConnections`] and [`AllowedNetworks`].

use std::net::{IpAddr, Ipv4Addr};

use arc_swap::ArcSwap;

use super::*;
use crate::access::Cidr;
use crate::config::AccessSettings;
use crate::live_config::LiveConfig;
use crate::routes::RouteTable;

fn live_config(max: u64, allowed: &[&str]) -> SharedLiveConfig {
    Arc::new(ArcSwap::from_pointee(live_config_value(max, allowed)))
}

fn live_config_value(max: u64, allowed: &[&str]) -> LiveConfig {
    LiveConfig {
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
    }
}

fn peer(last: u8, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)), port)
}

#[test]
fn addresses_outside_the_allowed_networks_are_refused_and_not_counted() {
    let live_config = live_config(10, &["127.0.0.1/32"]);
    let clients = ClientConnections::for_proxy(live_config.clone());
    let filter = AllowedNetworks::new(live_config, clients.clone());
    assert!(filter.admit(peer(1, 1000)));
    assert!(!filter.admit(peer(2, 1000)));
    assert_eq!(clients.open(), 0, "the filter counts nothing open");
    assert_eq!(clients.counters.refused_address.load(Ordering::Relaxed), 1);
}

#[test]
fn a_connection_counts_exactly_as_long_as_its_lease() {
    let clients = ClientConnections::for_proxy(live_config(2, &[]));
    let first = clients.admit(peer(1, 1)).expect("first");
    let second = clients.admit(peer(1, 2)).expect("second");
    assert_eq!(clients.open(), 2, "handshaking connections count");
    // A handshake that dies (the client closed without a TLS byte) drops its lease at once:
    // its place is free for the next client, with no expiry to wait for.
    drop(first);
    assert_eq!(clients.open(), 1);
    let third = clients.admit(peer(1, 3)).expect("room again");
    drop((second, third));
    assert_eq!(clients.open(), 0);
}

#[test]
fn at_the_cap_an_unserved_connection_is_evicted_and_signalled_and_serving_ones_refuse() {
    let clients = ClientConnections::for_proxy(live_config(1, &[]));
    let first = clients.admit(peer(1, 1)).expect("first");
    let second = clients.admit(peer(1, 2)).expect("evicts the first");
    assert_eq!(first.slot().phase(), registry::Phase::Evicted);
    assert_eq!(clients.counters.evicted_unserved.load(Ordering::Relaxed), 1);
    // The evicted connection's task is told (a permit waits for it).
    let told = first.slot().evicted.notified();
    assert!(futures_util::FutureExt::now_or_never(told).is_some());
    drop(first);
    assert_eq!(clients.open(), 1);
    second.slot().handed_over();
    second.slot().request_started();
    assert!(
        clients.admit(peer(1, 3)).is_none(),
        "every connection is serving"
    );
    assert_eq!(clients.counters.refused_limit.load(Ordering::Relaxed), 1);
}

#[test]
fn a_reload_changes_the_cap_for_the_next_connection() {
    let live_config = live_config(1, &[]);
    let clients = ClientConnections::for_proxy(live_config.clone());
    let first = clients.admit(peer(1, 1)).expect("first");
    first.slot().handed_over();
    first.slot().request_started();
    assert!(clients.admit(peer(1, 2)).is_none());
    live_config.store(Arc::new(live_config_value(2, &[])));
    assert!(clients.admit(peer(1, 2)).is_some());
}
