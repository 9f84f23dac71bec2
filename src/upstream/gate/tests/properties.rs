//! The gate's invariants over random interleavings of requests, pool hand-outs, finishes,
//! drops, evictions and time (a property test).

use proptest::prelude::*;

use super::*;

/// One step of a random interleaving.
#[derive(Debug, Clone)]
enum Step {
    /// A request to upstream `u` asks the gate (without waiting).
    Admit(u16),
    /// Admitted request number `r` reaches Pingora's pool, which hands it the `pick`-th
    /// pooled connection to its upstream, or none.
    Pool(usize, usize),
    /// Request `r` ends (its connection goes back to the pool) or fails before connecting.
    Finish(usize),
    /// Pingora drops open connection `c` (idle timeout, error, provider close).
    Drop(usize),
    /// A waiting request to upstream `u` closes an idle connection to another upstream.
    Evict(u16),
    /// Time passes.
    Advance(u64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0u16..2).prop_map(Step::Admit),
        3 => (0usize..8, 0usize..4).prop_map(|(r, p)| Step::Pool(r, p)),
        3 => (0usize..8).prop_map(Step::Finish),
        1 => (0usize..8).prop_map(Step::Drop),
        1 => (0u16..2).prop_map(Step::Evict),
        1 => (0u64..120).prop_map(Step::Advance),
    ]
}

/// A request the test drives, as the proxy would.
enum Request {
    Admitted {
        peer: InetAddr,
        slot: Option<OwnedSemaphorePermit>,
        claim: bool,
    },
    Using(Arc<Connection>),
}

/// The model: requests in flight and connections open (not yet dropped by Pingora).
#[derive(Default)]
struct World {
    requests: Vec<Request>,
    open: Vec<Arc<Connection>>,
    idle_since: HashMap<RawFd, Instant>,
}

impl World {
    async fn apply(&mut self, gate: &Arc<ConnectionGate>, step: Step) {
        match step {
            Step::Admit(u) => {
                let peer = upstream(u + 1);
                match gate.try_admit(peer) {
                    Some(Admission::Pooled) => self.requests.push(Request::Admitted {
                        peer,
                        slot: None,
                        claim: true,
                    }),
                    Some(Admission::NewConnection(slot)) => self.requests.push(Request::Admitted {
                        peer,
                        slot: Some(slot),
                        claim: false,
                    }),
                    None => {}
                }
            }
            Step::Pool(r, pick) => self.pool(gate, r, pick),
            Step::Finish(r) if r < self.requests.len() => match self.requests.remove(r) {
                Request::Using(conn) => {
                    gate.set_idle(&conn);
                    if conn.state() == State::Idle {
                        self.idle_since.insert(conn.fd, Instant::now());
                    }
                }
                Request::Admitted { peer, claim, .. } => {
                    if claim {
                        gate.drop_claim(peer);
                    }
                }
            },
            Step::Drop(c) if c < self.open.len() => {
                let conn = self.open.remove(c);
                self.requests
                    .retain(|r| !matches!(r, Request::Using(used) if Arc::ptr_eq(used, &conn)));
                gate.release(&conn);
            }
            Step::Evict(u) => {
                let before: Vec<State> = self.open.iter().map(|c| c.state()).collect();
                gate.evict_one_idle(|c| c.peer != upstream(u + 1));
                for (conn, was) in self.open.iter().zip(before) {
                    if conn.state() == State::Closing && was != State::Closing {
                        assert_eq!(was, State::Idle, "only an unclaimed idle connection closes");
                        assert_ne!(conn.peer, upstream(u + 1));
                        let idle_for = Instant::now() - self.idle_since[&conn.fd];
                        assert!(idle_for >= MIN_IDLE_TO_EVICT, "closed after {idle_for:?}");
                    }
                }
            }
            Step::Advance(ms) => tokio::time::advance(Duration::from_millis(ms)).await,
            Step::Finish(_) | Step::Drop(_) => {}
        }
    }

    /// Pingora's pool lookup for request `r`: reuse, or connect with the reserved slot (or a
    /// free one), or fail.
    fn pool(&mut self, gate: &Arc<ConnectionGate>, r: usize, pick: usize) {
        let Some(Request::Admitted { peer, slot, claim }) = self.requests.get_mut(r) else {
            return;
        };
        let (peer, claim, slot) = (*peer, *claim, slot.take());
        let pooled: Vec<&Arc<Connection>> = self
            .open
            .iter()
            .filter(|c| c.peer == peer && c.state() != State::InUse)
            .collect();
        let conn = if let Some(conn) = pooled.get(pick).map(|c| (*c).clone()) {
            drop(slot);
            conn
        } else if let Some(slot) = slot.or_else(|| gate.slots.clone().try_acquire_owned().ok()) {
            static NEXT_FD: AtomicI32 = AtomicI32::new(1);
            let conn = gate.register(slot, NEXT_FD.fetch_add(1, Ordering::Relaxed), peer, None);
            self.open.push(conn.clone());
            conn
        } else {
            // The connector would wait; here the attempt fails and gives its claim back.
            gate.drop_claim(peer);
            self.requests.remove(r);
            return;
        };
        gate.start_using(&conn, claim);
        self.requests[r] = Request::Using(conn);
    }

    fn check(&self, gate: &ConnectionGate, max: usize) {
        let reserved = self
            .requests
            .iter()
            .filter(|r| matches!(r, Request::Admitted { slot: Some(_), .. }))
            .count();
        assert_eq!(
            gate.open_connections(),
            self.open.len() + reserved,
            "slot accounting"
        );
        assert!(gate.open_connections() <= max);
        for peer in [upstream(1), upstream(2)] {
            let claims = self
                .requests
                .iter()
                .filter(
                    |r| matches!(r, Request::Admitted { peer: p, claim: true, .. } if *p == peer),
                )
                .count();
            let claimed = self
                .open
                .iter()
                .filter(|c| c.peer == peer && c.state() == State::Claimed)
                .count();
            assert!(
                claimed <= claims,
                "{claimed} claimed connections for {claims} claims"
            );
        }
        let using = self
            .requests
            .iter()
            .filter(|r| matches!(r, Request::Using(_)))
            .count();
        assert_eq!(gate.in_use_connections(), using);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// Whatever the order: the slots taken equal the connections open plus the slots reserved,
    /// never above the cap; no connection stays claimed without a claim; and once every request
    /// ends and Pingora drops every connection, every slot is back and nothing is claimed.
    #[test]
    fn the_gate_accounts_for_every_slot(steps in proptest::collection::vec(step(), 1..80)) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("runtime");
        runtime.block_on(async {
            const MAX: usize = 3;
            let gate = gate(MAX);
            let mut world = World::default();
            for step in steps {
                world.apply(&gate, step).await;
                world.check(&gate, MAX);
            }
            while !world.requests.is_empty() {
                world.apply(&gate, Step::Finish(0)).await;
            }
            assert_eq!(claimed(&gate), 0, "a claim outlived every request");
            while !world.open.is_empty() {
                world.apply(&gate, Step::Drop(0)).await;
            }
            assert_eq!(gate.open_connections(), 0, "a slot leaked");
        });
    }
}
