//! Table tests of the lock manager. Time is simulated: every `now` is a base
//! instant plus an offset in milliseconds, nothing sleeps. After every step
//! the manager's internal invariants are checked ([`check`]).

use super::*;
use std::time::{Duration, Instant};

const S: LockMode = LockMode::Shared;
const X: LockMode = LockMode::Exclusive;

/// A test event; `Sim` turns it into a [`LockEvent`] (deadlines and TTLs are
/// milliseconds from the simulation's base instant).
#[derive(Clone, Debug)]
enum E {
    /// Blocking acquire without deadline: (req, holder, name, mode).
    Acq(ReqId, Holder, &'static str, LockMode),
    /// Non-blocking acquire.
    Try(ReqId, Holder, &'static str, LockMode),
    /// Blocking acquire with a deadline at base + ms.
    Until(ReqId, Holder, &'static str, LockMode, u64),
    /// Blocking acquire by connection for a lease: (req, conn, lease, name, mode).
    AcqL(ReqId, Holder, Holder, &'static str, LockMode),
    Rel(ReqId, Holder, &'static str),
    /// Release by connection for a lease: (req, conn, lease, name).
    RelL(ReqId, Holder, Holder, &'static str),
    Gone(Holder),
    /// (req, lease, ttl ms, creator)
    Lease(ReqId, Holder, u64, Holder),
    Renew(ReqId, Holder),
    Revoke(ReqId, Holder),
    Tick,
    /// The daemon could not persist a reservation; it had persisted this.
    ReserveFailed(u64),
    /// Cluster mode: (claim id, name, create revision of its key).
    Claimed(u64, &'static str, u64),
    /// Cluster mode: the claim waits behind node "n2"'s (create revision 3).
    Queued(u64, &'static str),
    ClaimFailed(u64, &'static str),
    Contended(u64, &'static str),
    ClusterLost,
    ClusterBack,
}

struct Sim {
    m: LockManager,
    base: Instant,
}

impl Sim {
    fn new(floor: u64) -> Sim {
        Sim {
            m: LockManager::new(floor),
            base: Instant::now(),
        }
    }

    fn clustered() -> Sim {
        Sim {
            m: LockManager::clustered(),
            base: Instant::now(),
        }
    }

    fn at(&self, ms: u64) -> Instant {
        self.base + Duration::from_millis(ms)
    }

    fn event(&self, e: E) -> LockEvent {
        let acq = |req, holder, lease, name: &str, mode, wait, deadline| LockEvent::Acquire {
            req,
            holder,
            lease,
            name: name.to_owned(),
            mode,
            wait,
            deadline,
            info: HolderInfo {
                identity: None,
                pid: Some(holder as i32),
                uid: Some(0),
                host: "h".into(),
                what: format!("client {holder}").into(),
            },
        };
        match e {
            E::Acq(r, h, n, m) => acq(r, h, None, n, m, true, None),
            E::Try(r, h, n, m) => acq(r, h, None, n, m, false, None),
            E::Until(r, h, n, m, ms) => acq(r, h, None, n, m, true, Some(self.at(ms))),
            E::AcqL(r, h, l, n, m) => acq(r, h, Some(l), n, m, true, None),
            E::Rel(req, holder, n) => LockEvent::Release {
                req,
                holder,
                lease: None,
                name: n.into(),
            },
            E::RelL(req, holder, l, n) => LockEvent::Release {
                req,
                holder,
                lease: Some(l),
                name: n.into(),
            },
            E::Gone(holder) => LockEvent::Gone { holder },
            E::Lease(req, lease, ms, creator) => LockEvent::LeaseGrant {
                req,
                lease,
                ttl: Duration::from_millis(ms),
                creator,
            },
            E::Renew(req, lease) => LockEvent::LeaseRenew { req, lease },
            E::Revoke(req, lease) => LockEvent::LeaseRevoke { req, lease },
            E::Tick => LockEvent::Tick,
            E::ReserveFailed(persisted) => LockEvent::ReserveFailed { persisted },
            E::Claimed(id, n, rev) => LockEvent::Claimed {
                id,
                name: n.into(),
                base: rev << CLAIM_SHIFT,
            },
            E::Queued(id, n) => LockEvent::ClaimQueued {
                id,
                name: n.into(),
                ahead: vec![GrantInfo {
                    holder: 0,
                    mode: X,
                    token: 3 << CLAIM_SHIFT,
                    since: 0,
                    info: HolderInfo {
                        identity: None,
                        host: "n2".into(),
                        ..Default::default()
                    },
                }],
            },
            E::ClaimFailed(id, n) => LockEvent::ClaimFailed { id, name: n.into() },
            E::Contended(id, n) => LockEvent::Contended { id, name: n.into() },
            E::ClusterLost => LockEvent::ClusterLost,
            E::ClusterBack => LockEvent::ClusterBack,
        }
    }

    /// One step at base + ms; the effects rendered as short strings.
    fn step(&mut self, ms: u64, e: E) -> Vec<String> {
        let ev = self.event(e);
        let effects = self.m.step(ev, self.at(ms), 1_000_000 + (ms / 1000) as i64);
        check(&self.m);
        effects.iter().map(|f| self.render(f)).collect()
    }

    fn ms(&self, t: Instant) -> u128 {
        t.duration_since(self.base).as_millis()
    }

    fn render(&self, f: &LockEffect) -> String {
        let m = |m: LockMode| match m {
            LockMode::Shared => "S",
            LockMode::Exclusive => "X",
        };
        let hs = |v: &[GrantInfo]| {
            let ids: Vec<String> = v.iter().map(|g| g.holder.to_string()).collect();
            format!("[{}]", ids.join(","))
        };
        match f {
            LockEffect::ReserveTokens { upto } => format!("reserve {upto}"),
            LockEffect::Granted {
                req,
                holder,
                name,
                mode,
                token,
            } => format!("granted r{req} h{holder} {name} {} t{token}", m(*mode)),
            LockEffect::Busy { req, name, holders } => {
                format!("busy r{req} {name} {}", hs(holders))
            }
            LockEffect::TimedOut { req, name, holders } => {
                format!("timedout r{req} {name} {}", hs(holders))
            }
            LockEffect::Released { req, name } => format!("released r{req} {name}"),
            LockEffect::Lost { name, grant, why } => {
                let why = match why {
                    LostWhy::HolderGone => "gone",
                    LostWhy::LeaseExpired => "expired",
                    LostWhy::LeaseRevoked => "revoked",
                    LostWhy::NotReserved => "notreserved",
                    LostWhy::ClaimLost => "claimlost",
                };
                format!("lost {name} h{} t{} {why}", grant.holder, grant.token)
            }
            LockEffect::LeaseGranted {
                req,
                lease,
                expires,
            } => format!("lease r{req} L{lease} @{}", self.ms(*expires)),
            LockEffect::LeaseRenewed {
                req,
                lease,
                expires,
            } => format!("renewed r{req} L{lease} @{}", self.ms(*expires)),
            LockEffect::LeaseRevoked { req, lease } => format!("revoked r{req} L{lease}"),
            LockEffect::Failed { req, error } => format!("failed r{req} {}", error.code()),
            LockEffect::Claim { id, name, mode } => format!("claim c{id} {name} {}", m(*mode)),
            LockEffect::Unclaim { id, name } => format!("unclaim c{id} {name}"),
        }
    }
}

type Steps = Vec<(u64, E, Vec<&'static str>)>;

/// Run a scenario from a fresh manager (token floor 0): each step is (time
/// in ms, event, expected effects).
fn run(title: &str, steps: Steps) -> Sim {
    run_on(Sim::new(0), title, steps)
}

fn run_on(mut sim: Sim, title: &str, steps: Steps) -> Sim {
    for (i, (ms, e, want)) in steps.into_iter().enumerate() {
        let desc = format!("{e:?}");
        let got = sim.step(ms, e);
        assert_eq!(got, want, "{title}: step {i} ({desc} at {ms} ms)");
    }
    sim
}

/// The manager's internal invariants: the locking rules and the consistency
/// of every index.
fn check(m: &LockManager) {
    let mut tokens = BTreeSet::new();
    let mut deadlines = 0;
    for (name, c) in &m.containers {
        assert!(!c.is_empty(), "empty container {name} kept");
        if !m.cluster {
            assert!(
                matches!(c.claim, Claim::None),
                "{name}: a claim on one node"
            );
        }
        if !c.holders.is_empty() {
            assert!(
                !m.cluster || matches!(c.claim, Claim::Held { .. }),
                "{name}: holders without a held claim"
            );
        }
        assert!(validate_name(name).is_ok());
        let exclusive = c.holders.values().filter(|g| g.mode == X).count();
        assert!(
            exclusive == 0 || c.holders.len() == 1,
            "{name}: exclusive holder shares the lock"
        );
        for (h, g) in &c.holders {
            assert_eq!(*h, g.holder);
            assert!(m.owners[h].held.contains(name), "{name}: owner index");
            // Every grant held is within the persisted reservation (after a
            // failed reservation `last_token` may be above it, unused).
            if !m.cluster {
                assert!(g.token <= m.last_token && g.token <= m.reserved);
            }
            assert!(tokens.insert(g.token), "token {} used twice", g.token);
        }
        if let Some(head) = c.queue.values().next() {
            if m.cluster {
                assert!(
                    !c.compatible(head.mode) || !c.claim.allows(head.mode),
                    "{name}: grantable head waits"
                );
            } else {
                assert!(!c.holders.is_empty(), "{name}: waiters but no holders");
                assert!(!c.compatible(head.mode), "{name}: grantable head waits");
            }
        }
        for (seq, w) in &c.queue {
            assert_eq!(m.owners[&w.owner].waiting[name], *seq);
            assert_eq!(&m.requests[&w.conn][seq], name);
            assert!(!c.holders.contains_key(&w.owner), "holds and waits");
            if let Some(d) = w.deadline {
                assert_eq!(m.due[&(d, Due::Waiter(*seq))].as_deref(), Some(&**name));
                deadlines += 1;
            }
        }
    }
    for (h, o) in &m.owners {
        assert!(!o.is_empty(), "empty owner {h} kept");
        for n in &o.held {
            assert!(m.containers[n].holders.contains_key(h));
        }
        for (n, seq) in &o.waiting {
            assert_eq!(m.containers[n].queue[seq].owner, *h);
        }
    }
    for (conn, r) in &m.requests {
        assert!(!r.is_empty(), "empty request list of {conn} kept");
        for (seq, n) in r {
            assert_eq!(m.containers[n].queue[seq].conn, *conn);
        }
    }
    for ((at, due), name) in &m.due {
        match due {
            Due::Lease(l) => {
                assert_eq!(m.leases[l].expires, *at);
                assert!(name.is_none());
            }
            Due::Waiter(_) => assert!(name.is_some()),
        }
    }
    assert_eq!(m.due.len(), m.leases.len() + deadlines, "stale due entries");
    for (l, lease) in &m.leases {
        if let Some(c) = lease.creator {
            assert!(m.created[&c].contains(l));
        }
    }
    for (c, set) in &m.created {
        assert!(!set.is_empty());
        for l in set {
            assert_eq!(m.leases[l].creator, Some(*c));
        }
    }
}

fn assert_idle(m: &LockManager) {
    assert!(m.is_idle());
    assert!(m.status(None).is_empty());
    assert!(m.containers.is_empty() && m.owners.is_empty() && m.requests.is_empty());
    assert!(m.due.is_empty() && m.created.is_empty() && m.leases.is_empty());
    assert_eq!(m.next_deadline(), None);
}

#[test]
fn validate_names() {
    let cases: Vec<(String, bool)> = vec![
        (String::new(), false),
        ("a".into(), true),
        ("dhcp/10.0.0.0".into(), true),
        ("x".repeat(255), true),
        ("x".repeat(256), false),
        ("é".repeat(127), true),  // 254 bytes
        ("é".repeat(128), false), // 256 bytes
        ("a\nb".into(), false),
        ("nul\0".into(), false),
        ("esc\u{1b}".into(), false),
    ];
    for (name, ok) in cases {
        assert_eq!(validate_name(&name).is_ok(), ok, "{} bytes", name.len());
        if !ok {
            assert_eq!(validate_name(&name), Err(LockError::BadName));
        }
    }
}

#[test]
fn error_codes_and_serde_names() {
    let cases = [
        (LockError::SynchErr, "SYNCH_ERR"),
        (LockError::BadName, "BAD_NAME"),
        (LockError::NoLease, "NO_LEASE"),
        (LockError::BadTtl, "BAD_TTL"),
    ];
    for (e, code) in cases {
        assert_eq!(e.code(), code);
        assert!(!e.to_string().is_empty());
    }
    assert_eq!(serde_json::to_string(&S).unwrap(), "\"shared\"");
    assert_eq!(serde_json::to_string(&X).unwrap(), "\"exclusive\"");
    assert_eq!(
        serde_json::to_string(&LostWhy::LeaseExpired).unwrap(),
        "\"lease_expired\""
    );
}

/// A request is granted at once only if nobody waits and it is compatible:
/// shared with shared, exclusive with nothing.
#[test]
fn immediate_grant_compatibility() {
    // (modes already held by holders 1, 2, ..., requested mode, granted?)
    let cases: Vec<(Vec<LockMode>, LockMode, bool)> = vec![
        (vec![], S, true),
        (vec![], X, true),
        (vec![S], S, true),
        (vec![S, S], S, true),
        (vec![S], X, false),
        (vec![S, S], X, false),
        (vec![X], S, false),
        (vec![X], X, false),
    ];
    for (held, mode, granted) in cases {
        let mut sim = Sim::new(0);
        for (i, &m) in held.iter().enumerate() {
            let h = i as u64 + 1;
            let got = sim.step(0, E::Try(h, h, "a", m));
            assert!(got.last().unwrap().starts_with("granted"), "{got:?}");
        }
        let got = sim.step(0, E::Try(9, 9, "a", mode));
        let want = if granted {
            format!(
                "granted r9 h9 a {} t{}",
                if mode == S { "S" } else { "X" },
                held.len() + 1
            )
        } else {
            let ids: Vec<String> = (1..=held.len()).map(|h| h.to_string()).collect();
            format!("busy r9 a [{}]", ids.join(","))
        };
        let got = got
            .into_iter()
            .filter(|s| !s.starts_with("reserve"))
            .collect::<Vec<_>>();
        assert_eq!(got, vec![want], "held {held:?}, request {mode:?}");
    }
}

#[test]
fn scenarios_fifo_and_sharing() {
    run(
        "exclusive requests are served in arrival order",
        vec![
            (
                0,
                E::Acq(1, 1, "a", X),
                vec!["reserve 10000", "granted r1 h1 a X t1"],
            ),
            (1, E::Acq(2, 2, "a", X), vec![]),
            (2, E::Acq(3, 3, "a", X), vec![]),
            (3, E::Acq(4, 4, "a", S), vec![]),
            (
                4,
                E::Rel(5, 1, "a"),
                vec!["released r5 a", "granted r2 h2 a X t2"],
            ),
            (
                5,
                E::Rel(6, 2, "a"),
                vec!["released r6 a", "granted r3 h3 a X t3"],
            ),
            (
                6,
                E::Rel(7, 3, "a"),
                vec!["released r7 a", "granted r4 h4 a S t4"],
            ),
            (7, E::Rel(8, 4, "a"), vec!["released r8 a"]),
        ],
    );
    run(
        "consecutive shared requests at the head are granted together, up to an exclusive one",
        vec![
            (
                0,
                E::Acq(1, 1, "a", X),
                vec!["reserve 10000", "granted r1 h1 a X t1"],
            ),
            (0, E::Acq(2, 2, "a", S), vec![]),
            (0, E::Acq(3, 3, "a", S), vec![]),
            (0, E::Acq(4, 4, "a", X), vec![]),
            (0, E::Acq(5, 5, "a", S), vec![]),
            (
                1,
                E::Rel(6, 1, "a"),
                vec![
                    "released r6 a",
                    "granted r2 h2 a S t2",
                    "granted r3 h3 a S t3",
                ],
            ),
            (2, E::Rel(7, 2, "a"), vec!["released r7 a"]),
            (
                3,
                E::Rel(8, 3, "a"),
                vec!["released r8 a", "granted r4 h4 a X t4"],
            ),
            (
                4,
                E::Rel(9, 4, "a"),
                vec!["released r9 a", "granted r5 h5 a S t5"],
            ),
            (5, E::Rel(10, 5, "a"), vec!["released r10 a"]),
        ],
    );
    run(
        "a shared request never jumps over a waiting exclusive one",
        vec![
            (
                0,
                E::Acq(1, 1, "a", S),
                vec!["reserve 10000", "granted r1 h1 a S t1"],
            ),
            (0, E::Acq(2, 2, "a", X), vec![]),
            // compatible with the shared holder, but queued behind the exclusive
            (0, E::Acq(3, 3, "a", S), vec![]),
            (0, E::Try(4, 4, "a", S), vec!["busy r4 a [1]"]),
            (
                1,
                E::Rel(5, 1, "a"),
                vec!["released r5 a", "granted r2 h2 a X t2"],
            ),
            (
                2,
                E::Rel(6, 2, "a"),
                vec!["released r6 a", "granted r3 h3 a S t3"],
            ),
        ],
    );
    run(
        "no barging: a release grants the old waiter in the same step",
        vec![
            (
                0,
                E::Acq(1, 1, "a", X),
                vec!["reserve 10000", "granted r1 h1 a X t1"],
            ),
            (0, E::Acq(2, 2, "a", X), vec![]),
            (
                1,
                E::Rel(3, 1, "a"),
                vec!["released r3 a", "granted r2 h2 a X t2"],
            ),
            (1, E::Try(4, 3, "a", X), vec!["busy r4 a [2]"]),
            (1, E::Acq(5, 3, "a", X), vec![]),
            (
                2,
                E::Rel(6, 2, "a"),
                vec!["released r6 a", "granted r5 h3 a X t3"],
            ),
        ],
    );
    run(
        "containers are independent",
        vec![
            (
                0,
                E::Acq(1, 1, "a", X),
                vec!["reserve 10000", "granted r1 h1 a X t1"],
            ),
            (0, E::Acq(2, 2, "b", X), vec!["granted r2 h2 b X t2"]),
            (0, E::Acq(3, 1, "b", S), vec![]),
            (0, E::Acq(4, 2, "a", S), vec![]),
            (
                1,
                E::Rel(5, 1, "a"),
                vec!["released r5 a", "granted r4 h2 a S t3"],
            ),
        ],
    );
}

#[test]
fn busy_names_current_holders() {
    run(
        "busy lists holders by token, also when a compatible request is blocked by a waiter",
        vec![
            (
                0,
                E::Acq(1, 7, "a", S),
                vec!["reserve 10000", "granted r1 h7 a S t1"],
            ),
            (0, E::Acq(2, 3, "a", S), vec!["granted r2 h3 a S t2"]),
            (0, E::Try(3, 5, "a", X), vec!["busy r3 a [7,3]"]),
            (0, E::Acq(4, 5, "a", X), vec![]),
            (0, E::Try(5, 6, "a", S), vec!["busy r5 a [7,3]"]),
        ],
    );
}

#[test]
fn deadlines() {
    run(
        "a timed-out exclusive at the head unblocks the shared waiters behind it",
        vec![
            (
                0,
                E::Acq(1, 1, "a", S),
                vec!["reserve 10000", "granted r1 h1 a S t1"],
            ),
            (0, E::Until(2, 2, "a", X, 1000), vec![]),
            (0, E::Acq(3, 3, "a", S), vec![]),
            (0, E::Until(4, 4, "a", S, 5000), vec![]),
            (999, E::Tick, vec![]),
            (
                1000,
                E::Tick,
                vec![
                    "timedout r2 a [1]",
                    "granted r3 h3 a S t2",
                    "granted r4 h4 a S t3",
                ],
            ),
            (6000, E::Tick, vec![]),
        ],
    );
    run(
        "a timed-out waiter in the middle of the queue changes nothing else",
        vec![
            (
                0,
                E::Acq(1, 1, "a", X),
                vec!["reserve 10000", "granted r1 h1 a X t1"],
            ),
            (0, E::Acq(2, 2, "a", X), vec![]),
            (0, E::Until(3, 3, "a", X, 100), vec![]),
            (0, E::Acq(4, 4, "a", X), vec![]),
            (100, E::Tick, vec!["timedout r3 a [1]"]),
            (
                101,
                E::Rel(5, 1, "a"),
                vec!["released r5 a", "granted r2 h2 a X t2"],
            ),
        ],
    );
    run(
        "a deadline that already passed times out at once; a non-blocking deadline is ignored",
        vec![
            (
                0,
                E::Acq(1, 1, "a", X),
                vec!["reserve 10000", "granted r1 h1 a X t1"],
            ),
            (500, E::Until(2, 2, "a", X, 500), vec!["timedout r2 a [1]"]),
            (500, E::Until(3, 3, "a", X, 400), vec!["timedout r3 a [1]"]),
            // a deadline does not matter when the lock is free
            (
                500,
                E::Until(4, 4, "b", X, 400),
                vec!["granted r4 h4 b X t2"],
            ),
        ],
    );
    run(
        "a late Tick: the deadline is handled before the event of the step",
        vec![
            (
                0,
                E::Acq(1, 1, "a", X),
                vec!["reserve 10000", "granted r1 h1 a X t1"],
            ),
            (0, E::Until(2, 2, "a", X, 1000), vec![]),
            (0, E::Acq(3, 3, "a", X), vec![]),
            (
                1500,
                E::Rel(4, 1, "a"),
                vec!["timedout r2 a [1]", "released r4 a", "granted r3 h3 a X t2"],
            ),
        ],
    );
    // granted before the deadline: the deadline is forgotten
    let mut sim = run(
        "granted waiter",
        vec![
            (
                0,
                E::Acq(1, 1, "a", X),
                vec!["reserve 10000", "granted r1 h1 a X t1"],
            ),
            (0, E::Until(2, 2, "a", X, 1000), vec![]),
        ],
    );
    assert_eq!(sim.m.next_deadline(), Some(sim.at(1000)));
    assert_eq!(
        sim.step(10, E::Rel(3, 1, "a")),
        vec!["released r3 a", "granted r2 h2 a X t2"]
    );
    assert_eq!(sim.m.next_deadline(), None);
    assert_eq!(sim.step(2000, E::Tick), Vec::<String>::new());
}

#[test]
fn holder_gone() {
    run(
        "Gone releases every lock of the holder and wakes the next waiters",
        vec![
            (
                0,
                E::Acq(1, 1, "a", X),
                vec!["reserve 10000", "granted r1 h1 a X t1"],
            ),
            (0, E::Acq(2, 1, "b", S), vec!["granted r2 h1 b S t2"]),
            (0, E::Acq(3, 2, "a", S), vec![]),
            (0, E::Acq(4, 3, "a", S), vec![]),
            (0, E::Acq(5, 2, "b", X), vec![]),
            (
                1,
                E::Gone(1),
                vec![
                    "lost a h1 t1 gone",
                    "lost b h1 t2 gone",
                    "granted r3 h2 a S t3",
                    "granted r4 h3 a S t4",
                    "granted r5 h2 b X t5",
                ],
            ),
            (2, E::Gone(1), vec![]),
            (3, E::Rel(6, 1, "a"), vec!["failed r6 SYNCH_ERR"]),
        ],
    );
    run(
        "Gone cancels waiting requests; a cancelled exclusive head unblocks shared ones",
        vec![
            (
                0,
                E::Acq(1, 1, "a", S),
                vec!["reserve 10000", "granted r1 h1 a S t1"],
            ),
            (0, E::Until(2, 2, "a", X, 1000), vec![]),
            (0, E::Acq(3, 3, "a", S), vec![]),
            (1, E::Gone(2), vec!["granted r3 h3 a S t2"]),
            // the cancelled request's deadline is gone too
            (2000, E::Tick, vec![]),
        ],
    );
}

#[test]
fn leases() {
    run(
        "a lease survives its creator; a reconnected client renews it and releases",
        vec![
            (0, E::Lease(1, 100, 5000, 1), vec!["lease r1 L100 @5000"]),
            (
                0,
                E::AcqL(2, 1, 100, "a", X),
                vec!["reserve 10000", "granted r2 h100 a X t1"],
            ),
            (0, E::Acq(3, 2, "a", X), vec![]),
            (1000, E::Gone(1), vec![]),
            (1000, E::Gone(100), vec![]), // Gone of a lease id does nothing
            (4000, E::Renew(4, 100), vec!["renewed r4 L100 @9000"]),
            (5000, E::Tick, vec![]),
            (
                6000,
                E::RelL(5, 3, 100, "a"),
                vec!["released r5 a", "granted r3 h2 a X t2"],
            ),
        ],
    );
    run(
        "an expired lease loses its locks and fails its waiting requests",
        vec![
            (0, E::Lease(1, 100, 5000, 1), vec!["lease r1 L100 @5000"]),
            (
                0,
                E::AcqL(2, 1, 100, "a", X),
                vec!["reserve 10000", "granted r2 h100 a X t1"],
            ),
            (0, E::Acq(3, 2, "a", X), vec![]),
            (0, E::Acq(4, 2, "b", X), vec!["granted r4 h2 b X t2"]),
            (0, E::AcqL(5, 1, 100, "b", S), vec![]),
            (4999, E::Tick, vec![]),
            (
                5000,
                E::Tick,
                vec![
                    "lost a h100 t1 expired",
                    "failed r5 NO_LEASE",
                    "granted r3 h2 a X t3",
                ],
            ),
            (5001, E::AcqL(6, 1, 100, "c", X), vec!["failed r6 NO_LEASE"]),
            (5001, E::RelL(7, 1, 100, "a"), vec!["failed r7 NO_LEASE"]),
            (5001, E::Renew(8, 100), vec!["failed r8 SYNCH_ERR"]),
        ],
    );
    run(
        "a renew after the expiry instant fails even if no Tick came",
        vec![
            (0, E::Lease(1, 100, 5000, 1), vec!["lease r1 L100 @5000"]),
            (
                0,
                E::AcqL(2, 1, 100, "a", S),
                vec!["reserve 10000", "granted r2 h100 a S t1"],
            ),
            (0, E::Acq(3, 2, "a", X), vec![]),
            (
                6000,
                E::Renew(4, 100),
                vec![
                    "lost a h100 t1 expired",
                    "granted r3 h2 a X t2",
                    "failed r4 SYNCH_ERR",
                ],
            ),
        ],
    );
    run(
        "a lease expiring before a waiter's deadline grants to it, even on a late Tick",
        vec![
            (0, E::Lease(1, 100, 5000, 1), vec!["lease r1 L100 @5000"]),
            (
                0,
                E::AcqL(2, 1, 100, "a", X),
                vec!["reserve 10000", "granted r2 h100 a X t1"],
            ),
            (0, E::Until(3, 2, "a", X, 6000), vec![]),
            (
                9000,
                E::Tick,
                vec!["lost a h100 t1 expired", "granted r3 h2 a X t2"],
            ),
        ],
    );
    run(
        "a lease expiring at a waiter's deadline is handled first: the waiter gets the lock",
        vec![
            (0, E::Lease(1, 100, 5000, 1), vec!["lease r1 L100 @5000"]),
            (
                0,
                E::AcqL(2, 1, 100, "a", X),
                vec!["reserve 10000", "granted r2 h100 a X t1"],
            ),
            (0, E::Until(3, 2, "a", X, 5000), vec![]),
            (
                5000,
                E::Tick,
                vec!["lost a h100 t1 expired", "granted r3 h2 a X t2"],
            ),
        ],
    );
    run(
        "revoke releases the lease's locks (Lost, why revoked) after the answer",
        vec![
            (0, E::Lease(1, 100, 5000, 1), vec!["lease r1 L100 @5000"]),
            (
                0,
                E::AcqL(2, 1, 100, "a", X),
                vec!["reserve 10000", "granted r2 h100 a X t1"],
            ),
            (0, E::Acq(3, 2, "a", S), vec![]),
            (
                10,
                E::Revoke(4, 100),
                vec![
                    "revoked r4 L100",
                    "lost a h100 t1 revoked",
                    "granted r3 h2 a S t2",
                ],
            ),
            (11, E::Revoke(5, 100), vec!["failed r5 SYNCH_ERR"]),
            (12, E::Renew(6, 100), vec!["failed r6 SYNCH_ERR"]),
            (6000, E::Tick, vec![]),
        ],
    );
    run(
        "a connection waiting for a lease is cancelled by its Gone; the lease lives on",
        vec![
            (
                0,
                E::Acq(1, 2, "a", X),
                vec!["reserve 10000", "granted r1 h2 a X t1"],
            ),
            (0, E::Lease(2, 100, 5000, 1), vec!["lease r2 L100 @5000"]),
            (0, E::AcqL(3, 1, 100, "a", X), vec![]),
            (1, E::Gone(1), vec![]),
            (2, E::Rel(4, 2, "a"), vec!["released r4 a"]),
            (
                3,
                E::AcqL(5, 3, 100, "a", X),
                vec!["granted r5 h100 a X t2"],
            ),
        ],
    );
    run(
        "lease grant errors",
        vec![
            (0, E::Lease(1, 100, 0, 1), vec!["failed r1 BAD_TTL"]),
            (0, E::Lease(2, 100, 1000, 1), vec!["lease r2 L100 @1000"]),
            (0, E::Lease(3, 100, 1000, 1), vec!["failed r3 SYNCH_ERR"]),
            (
                0,
                E::Acq(4, 5, "a", X),
                vec!["reserve 10000", "granted r4 h5 a X t1"],
            ),
            // the id holds a lock as a connection
            (0, E::Lease(5, 5, 1000, 1), vec!["failed r5 SYNCH_ERR"]),
            (0, E::Lease(6, 1, 1000, 1), vec!["failed r6 SYNCH_ERR"]),
        ],
    );
}

#[test]
fn lease_listing_and_creator() {
    let mut sim = run(
        "setup",
        vec![
            (0, E::Lease(1, 100, 5000, 1), vec!["lease r1 L100 @5000"]),
            (0, E::Lease(2, 101, 3000, 1), vec!["lease r2 L101 @3000"]),
            (
                0,
                E::AcqL(3, 1, 100, "b", X),
                vec!["reserve 10000", "granted r3 h100 b X t1"],
            ),
            (
                0,
                E::AcqL(4, 1, 100, "a", S),
                vec!["granted r4 h100 a S t2"],
            ),
        ],
    );
    let l = sim.m.leases();
    assert_eq!(l.len(), 2);
    assert_eq!((l[0].lease, l[0].creator), (100, Some(1)));
    assert_eq!(l[0].held, vec!["a", "b"]);
    assert_eq!(l[0].ttl, Duration::from_millis(5000));
    assert_eq!(l[0].expires, sim.at(5000));
    assert_eq!((l[1].lease, l[1].creator), (101, Some(1)));
    assert!(l[1].held.is_empty());
    assert_eq!(sim.m.next_deadline(), Some(sim.at(3000)));
    assert!(sim.step(1, E::Gone(1)).is_empty());
    assert!(sim.m.leases().iter().all(|l| l.creator.is_none()));
    assert_eq!(sim.step(3000, E::Tick), Vec::<String>::new());
    assert_eq!(sim.m.leases().len(), 1);
    assert_eq!(sim.m.next_deadline(), Some(sim.at(5000)));
    assert!(!sim.m.is_idle());
    assert_eq!(
        sim.step(5000, E::Tick),
        vec!["lost a h100 t2 expired", "lost b h100 t1 expired"]
    );
    assert_idle(&sim.m);
}

#[test]
fn synch_errors() {
    // (setup, failing event, expected effects)
    let long: &'static str = "x".repeat(256).leak();
    let cases: Vec<(Vec<E>, E, Vec<&str>)> = vec![
        (vec![], E::Rel(9, 1, "a"), vec!["failed r9 SYNCH_ERR"]),
        (
            vec![E::Acq(1, 1, "a", X), E::Rel(2, 1, "a")],
            E::Rel(9, 1, "a"),
            vec!["failed r9 SYNCH_ERR"],
        ),
        // another holder's lock
        (
            vec![E::Acq(1, 1, "a", S)],
            E::Rel(9, 2, "a"),
            vec!["failed r9 SYNCH_ERR"],
        ),
        // a lock only waited for is not held
        (
            vec![E::Acq(1, 1, "a", X), E::Acq(2, 2, "a", X)],
            E::Rel(9, 2, "a"),
            vec!["failed r9 SYNCH_ERR"],
        ),
        (
            vec![E::Acq(1, 1, "a", S)],
            E::Acq(9, 1, "a", S),
            vec!["failed r9 SYNCH_ERR"],
        ),
        (
            vec![E::Acq(1, 1, "a", S)],
            E::Try(9, 1, "a", X),
            vec!["failed r9 SYNCH_ERR"],
        ),
        (
            vec![E::Acq(1, 1, "a", X), E::Acq(2, 2, "a", X)],
            E::Acq(9, 2, "a", S),
            vec!["failed r9 SYNCH_ERR"],
        ),
        // two connections acquiring the same container for one lease
        (
            vec![E::Lease(1, 100, 1000, 1), E::AcqL(2, 1, 100, "a", S)],
            E::AcqL(9, 2, 100, "a", S),
            vec!["failed r9 SYNCH_ERR"],
        ),
        (vec![], E::Renew(9, 100), vec!["failed r9 SYNCH_ERR"]),
        (vec![], E::Revoke(9, 100), vec!["failed r9 SYNCH_ERR"]),
        (
            vec![],
            E::AcqL(9, 1, 100, "a", S),
            vec!["failed r9 NO_LEASE"],
        ),
        (vec![], E::RelL(9, 1, 100, "a"), vec!["failed r9 NO_LEASE"]),
        // a connection's own id is not a lease
        (vec![], E::AcqL(9, 1, 1, "a", S), vec!["failed r9 NO_LEASE"]),
        (vec![], E::Acq(9, 1, "", S), vec!["failed r9 BAD_NAME"]),
        (vec![], E::Acq(9, 1, long, S), vec!["failed r9 BAD_NAME"]),
        (vec![], E::Rel(9, 1, ""), vec!["failed r9 BAD_NAME"]),
    ];
    for (setup, ev, want) in cases {
        let mut sim = Sim::new(0);
        for e in setup.clone() {
            sim.step(0, e);
        }
        let before = sim.m.status(None);
        let desc = format!("{setup:?} then {ev:?}");
        assert_eq!(sim.step(0, ev), want, "{desc}");
        assert_eq!(sim.m.status(None), before, "{desc}: state changed");
    }
}

#[test]
fn tokens() {
    run(
        "one global counter across containers",
        vec![
            (
                0,
                E::Acq(1, 1, "a", X),
                vec!["reserve 10000", "granted r1 h1 a X t1"],
            ),
            (0, E::Acq(2, 1, "b", X), vec!["granted r2 h1 b X t2"]),
            (0, E::Rel(3, 1, "a"), vec!["released r3 a"]),
            (0, E::Acq(4, 2, "a", X), vec!["granted r4 h2 a X t3"]),
        ],
    );

    // After a restart the first grant is above the persisted floor, and
    // reserves before it.
    let mut sim = Sim::new(10_000);
    assert_eq!(
        sim.step(0, E::Acq(1, 1, "a", X)),
        vec!["reserve 20000", "granted r1 h1 a X t10001"]
    );

    // A reservation runs out in the middle of a batch: the next one comes
    // right before the first grant that needs it, and not again before 10_000
    // more grants.
    let mut sim = Sim::new(0);
    let mut reserves = 0;
    for i in 0..9_998u64 {
        let got = sim.step(0, E::Acq(i, 1, "a", X));
        reserves += got.iter().filter(|s| s.starts_with("reserve")).count();
        sim.step(0, E::Rel(i, 1, "a"));
    }
    assert_eq!(reserves, 1);
    assert_eq!(
        sim.step(0, E::Acq(1, 1, "a", X)),
        vec!["granted r1 h1 a X t9999"]
    );
    for h in 2..=4 {
        assert!(sim.step(0, E::Acq(h, h, "a", S)).is_empty());
    }
    assert_eq!(
        sim.step(0, E::Rel(5, 1, "a")),
        vec![
            "released r5 a",
            "granted r2 h2 a S t10000",
            "reserve 20000",
            "granted r3 h3 a S t10001",
            "granted r4 h4 a S t10002",
        ]
    );
    assert_eq!(sim.m.last_token(), 10_002);

    // That reservation (20000) could not be persisted: the daemon did not
    // hand out t10001 and t10002, and says so. The manager takes exactly
    // those grants back (t10000 was within the old reservation), gives the
    // freed places to nobody (h2 still holds "a" shared) and reserves again
    // before the next grant, whose token is still new.
    assert_eq!(
        sim.step(0, E::ReserveFailed(10_000)),
        vec![
            "lost a h3 t10001 notreserved",
            "lost a h4 t10002 notreserved",
        ]
    );
    assert_eq!(
        sim.step(0, E::Acq(6, 5, "b", X)),
        vec!["reserve 20002", "granted r6 h5 b X t10003"]
    );
    // A waiter behind a taken-back grant gets the lock, after a reservation.
    let mut sim = Sim::new(0);
    sim.step(0, E::Acq(1, 1, "a", X));
    sim.step(0, E::Acq(2, 2, "a", X));
    assert_eq!(
        sim.step(0, E::ReserveFailed(0)),
        vec![
            "lost a h1 t1 notreserved",
            "reserve 10001",
            "granted r2 h2 a X t2",
        ]
    );
    // Holding nothing, h1 cannot release "a".
    assert_eq!(sim.step(0, E::Rel(3, 1, "a")), vec!["failed r3 SYNCH_ERR"]);
}

#[test]
fn status_listing() {
    let mut sim = run(
        "setup",
        vec![
            (
                0,
                E::Acq(1, 5, "b", S),
                vec!["reserve 10000", "granted r1 h5 b S t1"],
            ),
            (0, E::Acq(2, 3, "b", S), vec!["granted r2 h3 b S t2"]),
            (0, E::Acq(3, 4, "b", X), vec![]),
            (2000, E::Acq(4, 1, "b", S), vec![]),
            (0, E::Acq(5, 2, "a", X), vec!["granted r5 h2 a X t3"]),
        ],
    );
    let all = sim.m.status(None);
    assert_eq!(
        all.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
        ["a", "b"]
    );
    let b = &sim.m.status(Some("b"))[0];
    assert_eq!(b, &all[1]);
    assert_eq!(
        b.holders
            .iter()
            .map(|g| (g.holder, g.token))
            .collect::<Vec<_>>(),
        [(5, 1), (3, 2)]
    );
    assert_eq!(
        b.waiters
            .iter()
            .map(|w| (w.req, w.holder, w.mode, w.since))
            .collect::<Vec<_>>(),
        [(3, 4, X, 1_000_000), (4, 1, S, 1_000_002)]
    );
    assert_eq!(&*b.holders[0].info.what, "client 5");
    assert_eq!(b.holders[0].info.pid, Some(5));
    assert!(sim.m.status(Some("c")).is_empty());

    // empty containers are removed
    sim.step(0, E::Gone(2));
    assert_eq!(sim.m.status(None).len(), 1);
    assert!(!sim.m.containers.contains_key("a"));
    for h in [5, 3, 4, 1] {
        sim.step(0, E::Gone(h));
    }
    assert_idle(&sim.m);
}

#[test]
fn next_deadline_is_the_earliest() {
    let mut sim = Sim::new(0);
    assert_eq!(sim.m.next_deadline(), None);
    sim.step(0, E::Acq(1, 1, "a", X));
    sim.step(0, E::Until(2, 2, "a", X, 1000));
    assert_eq!(sim.m.next_deadline(), Some(sim.at(1000)));
    sim.step(0, E::Lease(3, 100, 500, 1));
    assert_eq!(sim.m.next_deadline(), Some(sim.at(500)));
    sim.step(100, E::Renew(4, 100));
    assert_eq!(sim.m.next_deadline(), Some(sim.at(600)));
    sim.step(100, E::Revoke(5, 100));
    assert_eq!(sim.m.next_deadline(), Some(sim.at(1000)));
    sim.step(1000, E::Tick);
    assert_eq!(sim.m.next_deadline(), None);
    sim.step(1000, E::Gone(1));
    assert_idle(&sim.m);
}

/// Random events over few containers, holders and leases: the invariants
/// hold after every step, tokens strictly increase in effect order and are
/// always covered by a reservation, and every request is answered at most
/// once.
#[test]
fn random_walk_keeps_invariants() {
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rnd = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let names = ["a", "b", "c"];
    let mut sim = Sim::new(0);
    let mut now = 0;
    let mut last_token = 0;
    let mut reserved = 0;
    let mut answered = BTreeSet::new();
    for req in 0..20_000u64 {
        now += rnd(50);
        let conn = 1 + rnd(6);
        let lease = 100 + rnd(3);
        let name = names[rnd(3) as usize];
        let mode = if rnd(3) == 0 { X } else { S };
        let e = match rnd(15) {
            0..=2 => E::Acq(req, conn, name, mode),
            3 => E::Try(req, conn, name, mode),
            4 => E::Until(req, conn, name, mode, now + rnd(300)),
            5 => E::AcqL(req, conn, lease, name, mode),
            6..=8 => E::Rel(req, conn, name),
            9 => E::RelL(req, conn, lease, name),
            10 => E::Gone(conn),
            11 => E::Lease(req, lease, 1 + rnd(400), conn),
            12 => E::Renew(req, lease),
            13 => E::Revoke(req, lease),
            _ => E::Tick,
        };
        let ev = sim.event(e);
        let effects = sim.m.step(ev, sim.at(now), now as i64 / 1000);
        check(&sim.m);
        for f in &effects {
            match f {
                LockEffect::ReserveTokens { upto } => {
                    assert!(*upto > reserved);
                    reserved = *upto;
                }
                LockEffect::Granted { token, .. } => {
                    assert!(*token > last_token && *token <= reserved);
                    last_token = *token;
                }
                _ => {}
            }
            if let Some(r) = f.req() {
                assert!(answered.insert(r), "request {r} answered twice");
            }
        }
    }
    for conn in 1..=6 {
        sim.step(now, E::Gone(conn));
    }
    for lease in 100..103 {
        sim.step(now, E::Revoke(0, lease));
    }
    assert_idle(&sim.m);
}

#[test]
fn cluster_claims() {
    const T1: u64 = 5 << CLAIM_SHIFT;
    run_on(
        Sim::clustered(),
        "an uncontended claim is kept after the release: the next grant is local, its token higher",
        vec![
            (0, E::Acq(1, 1, "a", X), vec!["claim c1 a X"]),
            (1, E::Claimed(1, "a", 5), vec!["granted r1 h1 a X t5242881"]),
            (2, E::Rel(2, 1, "a"), vec!["released r2 a"]),
            (3, E::Acq(3, 2, "a", X), vec!["granted r3 h2 a X t5242882"]),
            (4, E::Try(4, 3, "a", S), vec!["busy r4 a [2]"]),
            (5, E::Rel(5, 2, "a"), vec!["released r5 a"]),
            (6, E::Acq(6, 3, "a", S), vec!["granted r6 h3 a S t5242883"]),
            (6, E::Acq(7, 4, "a", S), vec!["granted r7 h4 a S t5242884"]),
            (7, E::Rel(8, 3, "a"), vec!["released r8 a"]),
            (7, E::Rel(9, 4, "a"), vec!["released r9 a"]),
        ],
    );
    let _ = T1;
    run_on(
        Sim::clustered(),
        "another node waits: no new local grant, the claim is given up once the holders are gone, and asked again for the local waiter",
        vec![
            (0, E::Acq(1, 1, "a", X), vec!["claim c1 a X"]),
            (1, E::Claimed(1, "a", 5), vec!["granted r1 h1 a X t5242881"]),
            (2, E::Contended(1, "a"), vec![]),
            (3, E::Acq(2, 2, "a", X), vec![]),
            (
                4,
                E::Rel(3, 1, "a"),
                vec!["released r3 a", "unclaim c1 a", "claim c2 a X"],
            ),
            // A late report about the given-up claim changes nothing.
            (5, E::Claimed(1, "a", 6), vec![]),
            (6, E::Claimed(2, "a", 9), vec!["granted r2 h2 a X t9437185"]),
        ],
    );
    run_on(
        Sim::clustered(),
        "a contended claim without holders is given up at once",
        vec![
            (0, E::Acq(1, 1, "a", S), vec!["claim c1 a S"]),
            (1, E::Claimed(1, "a", 5), vec!["granted r1 h1 a S t5242881"]),
            (2, E::Rel(2, 1, "a"), vec!["released r2 a"]),
            (3, E::Contended(1, "a"), vec!["unclaim c1 a"]),
        ],
    );
    run_on(
        Sim::clustered(),
        "a request that does not wait waits for the claim's answer: queued behind another node is BUSY naming it",
        vec![
            (0, E::Try(1, 1, "a", X), vec!["claim c1 a X"]),
            (1, E::Queued(1, "a"), vec!["busy r1 a [0]", "unclaim c1 a"]),
            (2, E::Try(2, 1, "b", X), vec!["claim c2 b X"]),
            (3, E::Claimed(2, "b", 7), vec!["granted r2 h1 b X t7340033"]),
            (4, E::Try(3, 1, "c", X), vec!["claim c3 c X"]),
            (
                5,
                E::ClaimFailed(3, "c"),
                vec!["failed r3 ETCD_UNREACHABLE"],
            ),
        ],
    );
    run_on(
        Sim::clustered(),
        "a waiting request waits while etcd is away and gets its claim when it is back",
        vec![
            (0, E::Acq(1, 1, "a", X), vec!["claim c1 a X"]),
            (1, E::ClaimFailed(1, "a"), vec![]),
            (2, E::ClusterBack, vec!["claim c2 a X"]),
            (3, E::Claimed(2, "a", 8), vec!["granted r1 h1 a X t8388609"]),
        ],
    );
    run_on(
        Sim::clustered(),
        "a lost claim takes every local holder's lock; waiters get a new claim, with higher tokens",
        vec![
            (0, E::Acq(1, 1, "a", S), vec!["claim c1 a S"]),
            (1, E::Claimed(1, "a", 5), vec!["granted r1 h1 a S t5242881"]),
            (1, E::Acq(2, 2, "a", X), vec![]),
            (
                2,
                E::ClusterLost,
                vec!["lost a h1 t5242881 claimlost", "claim c2 a X"],
            ),
            (3, E::Claimed(2, "a", 9), vec!["granted r2 h2 a X t9437185"]),
            (4, E::Rel(3, 1, "a"), vec!["failed r3 SYNCH_ERR"]),
        ],
    );
    run_on(
        Sim::clustered(),
        "a shared claim is made exclusive anew (a new key) once its shared holders are gone",
        vec![
            (0, E::Acq(1, 1, "a", S), vec!["claim c1 a S"]),
            (1, E::Claimed(1, "a", 5), vec!["granted r1 h1 a S t5242881"]),
            (2, E::Acq(2, 2, "a", X), vec![]),
            (3, E::Acq(3, 3, "a", S), vec![]),
            (
                4,
                E::Rel(4, 1, "a"),
                vec!["released r4 a", "unclaim c1 a", "claim c2 a X"],
            ),
            (5, E::Claimed(2, "a", 6), vec!["granted r2 h2 a X t6291457"]),
        ],
    );
    run_on(
        Sim::clustered(),
        "a request that does not wait, under a claim another node waits for: BUSY at once",
        vec![
            (0, E::Acq(1, 1, "a", S), vec!["claim c1 a S"]),
            (1, E::Claimed(1, "a", 5), vec!["granted r1 h1 a S t5242881"]),
            (2, E::Contended(1, "a"), vec![]),
            (3, E::Try(2, 2, "a", S), vec!["busy r2 a [1]"]),
            (4, E::Try(3, 2, "a", X), vec!["busy r3 a [1]"]),
        ],
    );
    run_on(
        Sim::clustered(),
        "a lease that held a lock whose claim was lost ends: its next renewal fails",
        vec![
            (0, E::Lease(1, 100, 60_000, 1), vec!["lease r1 L100 @60000"]),
            (1, E::AcqL(2, 1, 100, "a", X), vec!["claim c1 a X"]),
            (
                2,
                E::Claimed(1, "a", 5),
                vec!["granted r2 h100 a X t5242881"],
            ),
            (3, E::ClusterLost, vec!["lost a h100 t5242881 claimlost"]),
            (4, E::Renew(3, 100), vec!["failed r3 SYNCH_ERR"]),
        ],
    );
    run_on(
        Sim::clustered(),
        "a waiter's deadline while the claim is asked: TIMEOUT, and the claim given up",
        vec![
            (0, E::Until(1, 1, "a", X, 100), vec!["claim c1 a X"]),
            (1, E::Queued(1, "a"), vec![]),
            (100, E::Tick, vec!["timedout r1 a [0]", "unclaim c1 a"]),
        ],
    );
}

#[test]
fn cluster_random_walk_keeps_invariants_and_tokens_rise_per_lock() {
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut rnd = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let names = ["a", "b", "c"];
    let mut sim = Sim::clustered();
    let mut now = 0;
    let mut rev = 1;
    // The claims asked and not given up, by name (the agent's view).
    let mut asked: BTreeMap<&str, u64> = BTreeMap::new();
    let mut last: BTreeMap<String, u64> = BTreeMap::new();
    let mut answered = BTreeSet::new();
    for req in 0..20_000u64 {
        now += rnd(50);
        let conn = 1 + rnd(6);
        let lease = 100 + rnd(3);
        let name = names[rnd(3) as usize];
        let mode = if rnd(3) == 0 { X } else { S };
        let claim = asked.get(name).copied().unwrap_or(0);
        let e = match rnd(20) {
            0..=2 => E::Acq(req, conn, name, mode),
            3 => E::Try(req, conn, name, mode),
            4 => E::Until(req, conn, name, mode, now + rnd(300)),
            5 => E::AcqL(req, conn, lease, name, mode),
            6..=8 => E::Rel(req, conn, name),
            9 => E::Gone(conn),
            10 => E::Lease(req, lease, 1 + rnd(400), conn),
            11 => E::Revoke(req, lease),
            12..=14 => {
                rev += 1;
                E::Claimed(claim, name, rev)
            }
            15 => E::Queued(claim, name),
            16 => E::ClaimFailed(claim, name),
            17 => E::Contended(claim, name),
            18 => {
                if rnd(10) == 0 {
                    E::ClusterLost
                } else {
                    E::ClusterBack
                }
            }
            _ => E::Tick,
        };
        // A failed claim (the agent made no key) and a lost etcd session
        // (the keys go with the lease) end claims without an Unclaim.
        match &e {
            E::ClaimFailed(id, n)
                if sim
                    .m
                    .containers
                    .get(*n)
                    .is_some_and(|c| matches!(c.claim, Claim::Asked { id: i, .. } if i == *id)) =>
            {
                asked.remove(n);
            }
            E::ClusterLost => asked.clear(),
            _ => {}
        }
        let ev = sim.event(e);
        let effects = sim.m.step(ev, sim.at(now), now as i64 / 1000);
        check(&sim.m);
        for f in &effects {
            match f {
                LockEffect::ReserveTokens { .. } => panic!("a reservation in cluster mode"),
                LockEffect::Granted { token, name, .. } => {
                    let before = last.insert(name.clone(), *token).unwrap_or(0);
                    assert!(*token > before, "{name}: token {token} after {before}");
                }
                LockEffect::Claim { id, name, .. } => {
                    let n = names.iter().find(|n| **n == name.as_str()).unwrap();
                    assert!(asked.insert(n, *id).is_none(), "{name}: two claims at once");
                }
                LockEffect::Unclaim { id, name } => {
                    assert_eq!(asked.remove(name.as_str()), Some(*id), "{name}");
                }
                _ => {}
            }
            if let Some(r) = f.req() {
                assert!(answered.insert(r), "request {r} answered twice");
            }
        }
    }
}
