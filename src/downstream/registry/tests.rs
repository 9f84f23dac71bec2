//! The overload policy: who is evicted, who is refused, and what is counted, including a
//! property test over random interleavings of accepts, phase changes and closes.

use std::net::{IpAddr, Ipv4Addr};

use proptest::prelude::*;

use super::*;

fn peer(source: u8, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, source)), port)
}

fn caps(max: u64, per_source: Option<u64>) -> Caps {
    Caps {
        max_connections: max,
        max_per_source: per_source,
    }
}

#[test]
fn at_the_cap_the_oldest_connection_without_a_request_goes_first() {
    let mut r = Registry::default();
    let a = r.admit(peer(1, 1), caps(3, None), 0).expect("a").slot;
    let b = r.admit(peer(1, 2), caps(3, None), 1).expect("b").slot;
    let c = r.admit(peer(1, 3), caps(3, None), 2).expect("c").slot;
    a.handed_over();
    a.request_started();
    b.handed_over();
    c.handed_over();
    let d = r.admit(peer(2, 1), caps(3, None), 3).expect("d evicts");
    assert_eq!(d.evicted, Some(Phase::Fresh));
    assert_eq!(
        b.phase(),
        Phase::Evicted,
        "b is the oldest without a request"
    );
    assert_eq!(
        a.phase(),
        Phase::Busy,
        "a serving connection is never evicted"
    );
    assert_eq!(c.phase(), Phase::Fresh);
    assert_eq!(r.open(), 3, "the evicted one no longer counts");
}

#[test]
fn with_none_unserved_the_longest_idle_goes_and_with_all_busy_the_new_one_is_refused() {
    let mut r = Registry::default();
    let a = r.admit(peer(1, 1), caps(2, None), 0).expect("a").slot;
    let b = r.admit(peer(1, 2), caps(2, None), 0).expect("b").slot;
    for s in [&a, &b] {
        s.handed_over();
        s.request_started();
    }
    assert_eq!(
        r.admit(peer(1, 3), caps(2, None), 5).err(),
        Some(Refusal::Limit)
    );
    b.request_ended(10);
    a.request_ended(20);
    let c = r.admit(peer(1, 3), caps(2, None), 30).expect("c evicts");
    assert_eq!(c.evicted, Some(Phase::Idle));
    assert_eq!(b.phase(), Phase::Evicted, "idle since 10, before a (20)");
    // Closing the evicted connection frees nothing more: it was already not counted.
    r.remove(&b);
    assert_eq!(r.open(), 2);
}

#[test]
fn one_source_cannot_take_more_than_its_share() {
    let mut r = Registry::default();
    let held: Vec<_> = (0..2)
        .map(|port| {
            r.admit(peer(1, port), caps(10, Some(2)), 0)
                .expect("admitted")
        })
        .collect();
    assert_eq!(
        r.admit(peer(1, 9), caps(10, Some(2)), 0).err(),
        Some(Refusal::Source)
    );
    assert!(
        r.admit(peer(2, 9), caps(10, Some(2)), 0).is_ok(),
        "another source"
    );
    r.remove(&held[0].slot);
    assert!(
        r.admit(peer(1, 9), caps(10, Some(2)), 0).is_ok(),
        "room again"
    );
}

#[test]
fn http2_streams_keep_their_connection_busy_until_the_last_ends() {
    let mut r = Registry::default();
    let a = r.admit(peer(1, 1), caps(1, None), 0).expect("a").slot;
    a.handed_over();
    r.stream_started(peer(1, 1));
    r.stream_started(peer(1, 1));
    r.stream_ended(peer(1, 1), 5);
    assert_eq!(a.phase(), Phase::Busy, "one stream still open");
    assert_eq!(
        r.admit(peer(1, 2), caps(1, None), 6).err(),
        Some(Refusal::Limit)
    );
    r.stream_ended(peer(1, 1), 7);
    assert_eq!(a.phase(), Phase::Idle);
    assert!(r.admit(peer(1, 2), caps(1, None), 8).is_ok());
}

#[test]
fn deadlines_shrink_only_past_half_the_cap_and_never_below_the_floor() {
    let base = Duration::from_secs(10);
    assert_eq!(scaled(base, 50, 100), base);
    assert_eq!(scaled(base, 75, 100), Duration::from_secs(10).mul_f64(0.55));
    assert_eq!(scaled(base, 100, 100), SCALED_FLOOR);
    assert_eq!(
        scaled(base, 500, 100),
        SCALED_FLOOR,
        "over the cap: the floor"
    );
    let short = Duration::from_millis(300);
    assert_eq!(
        scaled(short, 100, 100),
        short,
        "a deadline under the floor is kept"
    );
}

/// One step of a connection's life, on the connection at `index` (modulo those open).
#[derive(Debug, Clone)]
enum Step {
    Accept { source: u8 },
    HandedOver(usize),
    Started(usize),
    Ended(usize),
    Closed(usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (1u8..4).prop_map(|source| Step::Accept { source }),
        any::<usize>().prop_map(Step::HandedOver),
        any::<usize>().prop_map(Step::Started),
        any::<usize>().prop_map(Step::Ended),
        any::<usize>().prop_map(Step::Closed),
    ]
}

proptest! {
    /// Whatever the interleaving: the open count never passes the cap, no source passes its
    /// share, a serving connection is never evicted, a refusal at the cap happens only when
    /// every counted connection is serving, and an eviction takes an unserved connection
    /// whenever one exists.
    #[test]
    fn the_policy_holds_under_any_interleaving(
        steps in proptest::collection::vec(step(), 1..200),
        cap in 1u64..8,
        share in proptest::option::of(1u64..5),
    ) {
        let mut r = Registry::default();
        let mut open: Vec<Arc<Slot>> = Vec::new();
        let mut port = 0u16;
        for (now, step) in steps.into_iter().enumerate() {
            let now = now as u64;
            let pick = |i: usize| (!open.is_empty()).then(|| open[i % open.len()].clone());
            match step {
                Step::Accept { source } => {
                    port += 1;
                    let before: Vec<Phase> = open.iter().map(|s| s.phase()).collect();
                    let counted = before.iter().filter(|p| **p != Phase::Evicted).count();
                    let from_source = open.iter().filter(|s| s.peer.ip() == peer(source, 0).ip()).count();
                    match r.admit(peer(source, port), caps(cap, share), now) {
                        Ok(admitted) => {
                            prop_assert!(share.is_none_or(|s| (from_source as u64) < s));
                            if let Some(phase) = admitted.evicted {
                                prop_assert!(phase != Phase::Busy && phase != Phase::Evicted);
                                let unserved = before.iter().any(|p| matches!(p, Phase::Handshaking | Phase::Fresh));
                                if unserved {
                                    prop_assert!(matches!(phase, Phase::Handshaking | Phase::Fresh));
                                }
                            } else {
                                prop_assert!((counted as u64) < cap);
                            }
                            open.push(admitted.slot);
                        }
                        Err(Refusal::Source) => {
                            prop_assert_eq!(Some(from_source as u64), share);
                        }
                        Err(Refusal::Limit) => {
                            prop_assert!(before.iter().all(|p| matches!(p, Phase::Busy | Phase::Evicted)));
                        }
                    }
                }
                Step::HandedOver(i) => if let Some(s) = pick(i) { s.handed_over() },
                Step::Started(i) => if let Some(s) = pick(i) {
                    if s.phase() != Phase::Handshaking { s.request_started() }
                },
                Step::Ended(i) => if let Some(s) = pick(i) { s.request_ended(now) },
                Step::Closed(i) => if let Some(s) = pick(i) {
                    r.remove(&s);
                    open.retain(|o| !Arc::ptr_eq(o, &s));
                },
            }
            let counted = open.iter().filter(|s| s.phase() != Phase::Evicted).count();
            prop_assert_eq!(r.open(), counted);
            prop_assert!(counted as u64 <= cap);
        }
    }
}
