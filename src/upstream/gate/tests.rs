//! The gate's accounting on tokio's paused clock: reserve, claim, evict, release, the wait
//! deadline, and a request's `Lease` through the proxy's phases; its invariants over random
//! interleavings are in [`properties`]. Connections here have no socket
//! (`register` with no handle), except in the one test about the provider's close.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::sync::atomic::AtomicI32;

use pingora::{Error, ErrorType};

use super::*;

const WAIT: Duration = Duration::from_secs(1);

fn upstream(port: u16) -> InetAddr {
    InetAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))
}

fn gate(max: usize) -> Arc<ConnectionGate> {
    ConnectionGate::new(max, WAIT, Duration::from_secs(1))
}

/// A connection made with a fresh slot (panics if none is free), as the connector makes it.
fn connect(gate: &ConnectionGate, peer: InetAddr) -> Arc<Connection> {
    static NEXT_FD: AtomicI32 = AtomicI32::new(100_000);
    let slot = gate.slots.clone().try_acquire_owned().expect("a free slot");
    gate.register(slot, NEXT_FD.fetch_add(1, Ordering::Relaxed), peer, None)
}

fn claimed(gate: &ConnectionGate) -> usize {
    gate.count(|s| s == State::Claimed)
}

fn refused(result: Result<Admission, Box<Error>>) -> bool {
    matches!(result, Err(e) if e.etype == ErrorType::Custom(LIMIT_REACHED))
}

#[tokio::test(start_paused = true)]
async fn a_reused_fd_replaces_the_connection_it_named() {
    let gate = gate(3);
    let old = connect(&gate, upstream(1));
    gate.set_idle(&old);
    // The kernel gave the old socket's number to a new connection before Pingora reported the
    // old one dropped: the old one is no longer claimable, and its late drop keeps the new one.
    let slot = gate.slots.clone().try_acquire_owned().expect("a free slot");
    let new = gate.register(slot, old.fd, upstream(2), None);
    assert!(matches!(
        gate.try_admit(upstream(1)),
        Some(Admission::NewConnection(_))
    ));
    gate.release(&old);
    assert!(Arc::ptr_eq(
        &gate.connection(new.fd).expect("still open"),
        &new
    ));
    gate.set_idle(&new);
    assert!(matches!(
        gate.try_admit(upstream(2)),
        Some(Admission::Pooled)
    ));
}

#[tokio::test(start_paused = true)]
async fn a_free_slot_is_reserved_at_once_and_counted_until_dropped() {
    let gate = gate(2);
    let admission = gate.admit(upstream(1)).await.expect("admitted");
    assert!(matches!(admission, Admission::NewConnection(_)));
    assert_eq!(gate.open_connections(), 1);
    drop(admission);
    assert_eq!(gate.open_connections(), 0);
    assert_eq!(gate.counters.waits.load(Ordering::Relaxed), 0);
}

#[tokio::test(start_paused = true)]
async fn an_idle_connection_is_claimed_once_and_the_next_request_is_refused_at_the_deadline() {
    let gate = gate(1);
    let conn = connect(&gate, upstream(1));
    gate.set_idle(&conn);
    assert!(matches!(
        gate.admit(upstream(1)).await,
        Ok(Admission::Pooled)
    ));
    assert_eq!(conn.state(), State::Claimed);
    assert_eq!(
        gate.idle_connections(),
        1,
        "a claimed connection is still idle in the pool"
    );

    let started = Instant::now();
    assert!(refused(gate.admit(upstream(1)).await));
    let waited = started.elapsed();
    assert!(
        waited >= WAIT && waited < WAIT + RECHECK_EVERY,
        "{waited:?}"
    );
    assert_eq!(gate.counters.waits.load(Ordering::Relaxed), 1);
    assert_eq!(gate.counters.rejections.load(Ordering::Relaxed), 1);
    assert_eq!(gate.open_connections(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_waiting_request_takes_the_slot_a_dropped_connection_gives_back() {
    let gate = gate(1);
    let conn = connect(&gate, upstream(1));
    let waiter = tokio::spawn({
        let gate = gate.clone();
        async move {
            let started = Instant::now();
            (gate.admit(upstream(2)).await, started.elapsed())
        }
    });
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert!(!waiter.is_finished());
    gate.release(&conn);
    let (admission, waited) = waiter.await.expect("joined");
    assert!(matches!(admission, Ok(Admission::NewConnection(_))));
    assert_eq!(
        waited,
        Duration::from_millis(120),
        "woken by the release, not a tick"
    );
    assert_eq!(gate.counters.waits.load(Ordering::Relaxed), 1);
}

#[tokio::test(start_paused = true)]
async fn a_waiting_request_claims_a_connection_to_its_upstream_going_idle() {
    let gate = gate(1);
    let conn = connect(&gate, upstream(1));
    let waiter = tokio::spawn({
        let gate = gate.clone();
        async move { gate.admit(upstream(1)).await }
    });
    tokio::time::sleep(Duration::from_millis(30)).await;
    gate.set_idle(&conn);
    assert!(matches!(
        waiter.await.expect("joined"),
        Ok(Admission::Pooled)
    ));
    assert_eq!(conn.state(), State::Claimed);
}

#[tokio::test(start_paused = true)]
async fn idle_connections_to_other_upstreams_are_closed_to_make_room_once_settled() {
    let gate = gate(1);
    let other = connect(&gate, upstream(2));
    gate.set_idle(&other);
    let waiter = tokio::spawn({
        let gate = gate.clone();
        async move { gate.admit(upstream(1)).await }
    });
    tokio::time::sleep(MIN_IDLE_TO_EVICT / 2).await;
    assert_eq!(other.state(), State::Idle, "too fresh to close");
    tokio::time::sleep(MIN_IDLE_TO_EVICT + RECHECK_EVERY).await;
    assert_eq!(other.state(), State::Closing);
    assert_eq!(gate.counters.evictions.load(Ordering::Relaxed), 1);
    assert!(
        !waiter.is_finished(),
        "the slot is back only when Pingora drops it"
    );
    gate.release(&other);
    assert!(matches!(
        waiter.await.expect("joined"),
        Ok(Admission::NewConnection(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn claimed_and_same_upstream_connections_are_not_closed_by_admit() {
    let gate = gate(2);
    let claimed_one = connect(&gate, upstream(2));
    let same = connect(&gate, upstream(1));
    gate.set_idle(&claimed_one);
    gate.set_idle(&same);
    assert!(matches!(
        gate.try_admit(upstream(2)),
        Some(Admission::Pooled)
    ));
    // `same` is idle to upstream 1 itself: admit claims it rather than closing it.
    tokio::time::sleep(MIN_IDLE_TO_EVICT * 2).await;
    assert!(matches!(
        gate.admit(upstream(1)).await,
        Ok(Admission::Pooled)
    ));
    assert!(refused(gate.admit(upstream(3)).await));
    assert_eq!(claimed_one.state(), State::Claimed);
    assert_eq!(same.state(), State::Claimed);
    assert_eq!(gate.counters.evictions.load(Ordering::Relaxed), 0);
}

#[tokio::test(start_paused = true)]
async fn the_connector_closes_an_idle_connection_to_its_own_upstream_after_half_the_wait() {
    let gate = gate(1);
    let same = connect(&gate, upstream(1));
    gate.set_idle(&same);
    let acquiring = tokio::spawn({
        let gate = gate.clone();
        async move { gate.acquire(upstream(1)).await.map(drop) }
    });
    tokio::time::sleep(WAIT / 2 - RECHECK_EVERY).await;
    assert_eq!(same.state(), State::Idle);
    tokio::time::sleep(RECHECK_EVERY * 3).await;
    assert_eq!(same.state(), State::Closing);
    gate.release(&same);
    acquiring.await.expect("joined").expect("a slot");
}

#[tokio::test(start_paused = true)]
async fn an_unused_reservation_goes_back() {
    let gate = gate(1);
    let Some(Admission::NewConnection(slot)) = gate.try_admit(upstream(1)) else {
        panic!("a free slot");
    };
    let reserved: Reservation = Arc::new(Mutex::new(Some(slot)));
    assert!(gate.try_admit(upstream(1)).is_none());
    gate.unreserve(&reserved);
    assert_eq!(gate.open_connections(), 0);
    assert!(gate.try_admit(upstream(1)).is_some());
}

#[tokio::test(start_paused = true)]
async fn claims_follow_the_connection_pingora_hands_out() {
    let gate = gate(3);
    let conns: Vec<_> = (0..3).map(|_| connect(&gate, upstream(1))).collect();
    conns.iter().for_each(|c| gate.set_idle(c));
    assert!(matches!(
        gate.try_admit(upstream(1)),
        Some(Admission::Pooled)
    ));
    let claimed_conn = conns.iter().find(|c| c.state() == State::Claimed).unwrap();
    let unclaimed: Vec<_> = conns.iter().filter(|c| c.state() == State::Idle).collect();

    // The claimant is handed another connection: the claim is spent, none stays claimed.
    gate.start_using(unclaimed[0], true);
    assert_eq!(claimed(&gate), 0);
    assert_eq!(claimed_conn.state(), State::Idle);

    // A request without a claim takes a claimed connection: the claim moves to an idle one.
    assert!(matches!(
        gate.try_admit(upstream(1)),
        Some(Admission::Pooled)
    ));
    let now_claimed = conns.iter().find(|c| c.state() == State::Claimed).unwrap();
    gate.start_using(now_claimed, false);
    assert_eq!(claimed(&gate), 1);
    // An unused claim goes back.
    gate.drop_claim(upstream(1));
    assert_eq!(claimed(&gate), 0);
    assert_eq!(gate.idle_connections(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_lease_claims_a_pooled_connection_uses_it_and_leaves_it_idle() {
    let gate = gate(2);
    let conn = connect(&gate, upstream(1));
    gate.set_idle(&conn);
    let mut lease = Lease::default();
    lease
        .admit(&gate, Some(upstream(1)))
        .await
        .expect("admitted");
    assert_eq!(conn.state(), State::Claimed);
    lease.connected(&gate, conn.fd, true);
    assert_eq!(conn.state(), State::InUse);
    assert_eq!(gate.counters.reuses.load(Ordering::Relaxed), 1);
    lease.end(&gate);
    assert_eq!(conn.state(), State::Idle);
    assert_eq!(gate.open_connections(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_lease_gives_back_a_claim_its_retry_or_its_end_does_not_use() {
    let gate = gate(3);
    let conns: Vec<_> = (0..2).map(|_| connect(&gate, upstream(1))).collect();
    conns.iter().for_each(|c| gate.set_idle(c));
    let mut lease = Lease::default();
    lease
        .admit(&gate, Some(upstream(1)))
        .await
        .expect("admitted");
    // A retry: the first attempt's claim goes back before the second claims.
    lease
        .admit(&gate, Some(upstream(1)))
        .await
        .expect("admitted");
    assert_eq!(claimed(&gate), 1);
    lease.end(&gate);
    assert_eq!(claimed(&gate), 0);
    assert_eq!(gate.idle_connections(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_lease_gives_back_its_reserved_slot_when_pingora_reuses_a_connection() {
    let gate = gate(2);
    let conn = connect(&gate, upstream(1));
    let mut lease = Lease::default();
    // The only connection is busy: a slot is reserved for a new one.
    let _connector = lease
        .admit(&gate, Some(upstream(1)))
        .await
        .expect("admitted");
    assert_eq!(gate.open_connections(), 2);
    // Pingora's pool got the busy connection back in time and hands it out instead.
    gate.set_idle(&conn);
    lease.connected(&gate, conn.fd, true);
    assert_eq!(gate.open_connections(), 1);
    assert_eq!(conn.state(), State::InUse);
    assert_eq!(claimed(&gate), 0);
}

#[tokio::test(start_paused = true)]
async fn a_lease_to_an_unresolved_upstream_reserves_nothing() {
    let gate = gate(1);
    let mut lease = Lease::default();
    lease.admit(&gate, None).await.expect("admitted");
    assert_eq!(gate.open_connections(), 0);
    lease.end(&gate);
    assert_eq!(gate.open_connections(), 0);
}

#[tokio::test]
async fn a_released_connection_is_half_closed_and_its_slot_comes_back_after_the_provider_closes() {
    use std::io::Read;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let ours = std::net::TcpStream::connect(listener.local_addr().unwrap()).expect("connect");
    let (mut provider, _) = listener.accept().expect("accept");
    let gate = gate(1);
    let slot = gate.slots.clone().try_acquire_owned().unwrap();
    let handle = ours.try_clone().unwrap();
    let conn = gate.register(slot, ours.as_raw_fd(), upstream(1), Some(handle));
    drop(ours); // Pingora's stream is gone; the gate's handle keeps the socket open.
    gate.release(&conn);
    let mut buf = [0u8; 8];
    let provider_read = tokio::task::spawn_blocking(move || {
        let n = provider.read(&mut buf);
        drop(provider);
        n.map_err(|e| e.to_string())
    });
    assert_eq!(
        provider_read.await.unwrap(),
        Ok(0),
        "the provider sees our FIN"
    );
    let back = tokio::time::timeout(Duration::from_secs(30), gate.slots.acquire()).await;
    assert!(back.is_ok(), "the slot came back");
}

mod properties;
