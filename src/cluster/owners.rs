//! Exclusive groups: the owner agent, the task that competes for this
//! node's exclusive groups in etcd, runs the ones it owns at their
//! cluster-wide goal, and stops them before its ownership can lapse.
//!
//! # Keys (under `/<cluster>/groups/<group>/`)
//!
//! | key | value | lease |
//! | --- | --- | --- |
//! | `owner` | [`OwnerValue`]: the owning node; its create revision is the **fencing token** | the owner's agent lease |
//! | `candidates/<node>` | empty: the node is alive and eligible | that node's agent lease |
//! | `goal` | [`super::Goal`]: the cluster-wide level | none |
//! | `move` | [`MoveValue`]: an operator asked the owner to hand over | none |
//!
//! # Election
//!
//! When `owner` is absent, the *designated* candidate claims it (a
//! transaction: create if absent): the target of a `move` if it is a live
//! candidate, else the next candidate after the moving owner, else the
//! most preferred live candidate (`nodes` order, or node names in order).
//! Any other candidate claims only after `owner` has been absent for a
//! whole TTL (the designated one may be frozen). An owner is never
//! displaced by a preferred node coming back: only `move`, a failed `test`
//! entry, or the loss of its lease end an ownership.
//!
//! # Fencing
//!
//! With S the send time of the last acknowledged renewal of the lease and
//! the timings of [`crate::cltab::FenceTimes`]: renewals every TTL/3; no
//! process of an owned group is started after S + TTL/2; at S + TTL/2 the
//! group is told no level (a graceful stop); the watchdog process
//! (`super::watchdog`) SIGKILLs whatever is left at S + TTL − margin; etcd
//! cannot expire the lease before S + TTL. A claim waits until nothing of
//! the group runs locally.

use super::watchdog::{Cmd, Feeder, mono_of};
use super::{ClusterConfig, ClusterError, Goal, now_unix};
use crate::cltab::{FenceTimes, GroupOpts};
use crate::daemon::conn::Shared;
use crate::daemon::policy::Right;
use crate::daemon::route::LoopJob;
use crate::proto::Reply;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::time::Instant;

/// What `owner` holds.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OwnerValue {
    pub node: String,
    /// Unix seconds.
    pub since: i64,
}

/// What `move` holds.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MoveValue {
    /// The owner asked to hand over.
    pub from: String,
    /// The node to hand over to; `None`: the next eligible one.
    pub to: Option<String>,
    pub by: String,
    pub at: i64,
}

pub fn groups_prefix(cfg: &ClusterConfig) -> String {
    format!("/{}/groups/", cfg.cluster)
}

pub fn owner_key(cfg: &ClusterConfig, group: &str) -> String {
    format!("{}{group}/owner", groups_prefix(cfg))
}

pub fn candidate_key(cfg: &ClusterConfig, group: &str, node: &str) -> String {
    format!("{}{group}/candidates/{node}", groups_prefix(cfg))
}

pub fn goal_key(cfg: &ClusterConfig, group: &str) -> String {
    format!("{}{group}/goal", groups_prefix(cfg))
}

pub fn move_key(cfg: &ClusterConfig, group: &str) -> String {
    format!("{}{group}/move", groups_prefix(cfg))
}

/// What a key under [`groups_prefix`] is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Part {
    Owner,
    Candidate(String),
    Goal,
    Move,
}

pub fn parse_key(prefix: &str, key: &[u8]) -> Option<(String, Part)> {
    let rest = std::str::from_utf8(key).ok()?.strip_prefix(prefix)?;
    let (group, what) = rest.split_once('/')?;
    let part = match what {
        "owner" => Part::Owner,
        "goal" => Part::Goal,
        "move" => Part::Move,
        w => Part::Candidate(w.strip_prefix("candidates/")?.to_string()),
    };
    Some((group.to_string(), part))
}

/// An owner as seen in etcd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeenOwner {
    pub node: String,
    pub lease: i64,
    pub token: i64,
}

/// One group's keys as the agent last saw them.
#[derive(Clone, Debug, Default)]
pub struct Seen {
    pub owner: Option<SeenOwner>,
    pub candidates: BTreeSet<String>,
    pub goal: Option<Goal>,
    pub mv: Option<MoveValue>,
    /// Since when no owner has been seen.
    pub absent_since: Option<Instant>,
}

/// Fold one key (put, or deleted when `value` is `None`) into `seen`.
pub fn absorb(
    seen: &mut BTreeMap<String, Seen>,
    prefix: &str,
    kv: &etcd_client::KeyValue,
    deleted: bool,
    now: Instant,
) {
    let Some((group, part)) = parse_key(prefix, kv.key()) else {
        return;
    };
    let s = seen.entry(group).or_insert_with(|| Seen {
        absent_since: Some(now),
        ..Default::default()
    });
    match part {
        Part::Owner => {
            let owner = (!deleted)
                .then(|| serde_json::from_slice::<OwnerValue>(kv.value()).ok())
                .flatten()
                .map(|v| SeenOwner {
                    node: v.node,
                    lease: kv.lease(),
                    token: kv.create_revision(),
                });
            s.absent_since = if owner.is_some() { None } else { Some(now) };
            s.owner = owner;
        }
        Part::Candidate(node) => {
            if deleted {
                s.candidates.remove(&node);
            } else {
                s.candidates.insert(node);
            }
        }
        Part::Goal => {
            s.goal = (!deleted)
                .then(|| serde_json::from_slice(kv.value()).ok())
                .flatten()
        }
        Part::Move => {
            s.mv = (!deleted)
                .then(|| serde_json::from_slice(kv.value()).ok())
                .flatten()
        }
    }
}

/// `candidates` in order of preference under `opts`.
pub fn preference(opts: &GroupOpts, candidates: &BTreeSet<String>) -> Vec<String> {
    if opts.nodes.is_empty() {
        candidates.iter().cloned().collect()
    } else {
        opts.nodes
            .iter()
            .filter(|n| candidates.contains(*n))
            .cloned()
            .collect()
    }
}

/// The candidate that should claim `s`'s group now that it has no owner.
pub fn designated(opts: &GroupOpts, s: &Seen) -> Option<String> {
    let live = preference(opts, &s.candidates);
    let Some(mv) = &s.mv else {
        return live.into_iter().next();
    };
    if let Some(to) = &mv.to
        && live.contains(to)
    {
        return Some(to.clone());
    }
    // The next after the node that moved it, in preference order.
    let mut all = s.candidates.clone();
    all.insert(mv.from.clone());
    let order = preference(opts, &all);
    let at = order.iter().position(|n| *n == mv.from);
    let rotated: Vec<&String> = match at {
        Some(i) => order[i + 1..].iter().chain(order[..i].iter()).collect(),
        None => order.iter().collect(),
    };
    rotated
        .into_iter()
        .find(|n| **n != mv.from && live.contains(n))
        .cloned()
}

/// A node's permission to start an exclusive group's processes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Permit {
    pub node: String,
    pub token: i64,
    /// No process starts after this.
    pub until: std::time::Instant,
}

/// What the owner agent shares with the executor and the handlers.
#[derive(Default)]
pub struct Exclusive {
    permits: Mutex<HashMap<String, Permit>>,
    pub feeder: Feeder,
    /// Each exclusive group's owner and token as last seen.
    owners: Mutex<BTreeMap<String, (String, i64)>>,
}

impl Exclusive {
    pub fn new(feeder: Feeder) -> Exclusive {
        Exclusive {
            feeder,
            ..Default::default()
        }
    }

    /// The permit to start a process of `group` now, if any.
    pub fn permit(&self, group: &str) -> Option<Permit> {
        let p = self.permits.lock().unwrap_or_else(PoisonError::into_inner);
        p.get(group)
            .filter(|p| p.until > std::time::Instant::now())
            .cloned()
    }

    fn grant(&self, group: &str, permit: Permit) {
        self.permits
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(group.to_string(), permit);
    }

    /// Move the permits of `groups` (the groups owned and not being
    /// released) on to `until`.
    fn extend<'a>(&self, groups: impl Iterator<Item = &'a String>, until: std::time::Instant) {
        let mut permits = self.permits.lock().unwrap_or_else(PoisonError::into_inner);
        for g in groups {
            if let Some(p) = permits.get_mut(g) {
                p.until = until;
            }
        }
    }

    fn revoke(&self, group: &str) {
        self.permits
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(group);
    }

    /// The owner of `group` and its token, as last seen.
    pub fn owner(&self, group: &str) -> Option<(String, i64)> {
        self.owners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(group)
            .cloned()
    }

    fn set_owners(&self, seen: &BTreeMap<String, Seen>) {
        *self.owners.lock().unwrap_or_else(PoisonError::into_inner) = seen
            .iter()
            .filter_map(|(g, s)| {
                s.owner
                    .as_ref()
                    .map(|o| (g.clone(), (o.node.clone(), o.token)))
            })
            .collect();
    }
}

/// Why an owner gives its group up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Release {
    Move,
    Failed,
    NotEligible,
}

/// A group this node owns.
#[derive(Debug)]
struct Mine {
    token: i64,
    /// The level last told (`""`: none).
    told: Option<String>,
    release: Option<Release>,
}

/// The owner agent's lease: it outlives a connection.
#[derive(Clone, Copy, Debug)]
struct Lease {
    id: i64,
    /// The send time of its last acknowledged renewal (or of its grant).
    acked: Instant,
    /// The TTL it was granted with: a lease of another TTL than the
    /// cltab's now is not reused (its deadlines would be wrong).
    ttl: Duration,
}

/// What outlives a session.
#[derive(Default)]
struct State {
    lease: Option<Lease>,
    /// Leases given up with groups under them, and when they may be
    /// revoked (the watchdog's deadline).
    stale: Vec<(i64, Instant)>,
    mine: BTreeMap<String, Mine>,
    /// Groups this node may not claim until then (a failed test).
    ineligible: HashMap<String, Instant>,
    /// When this node first saw each group exclusive: it claims one only a
    /// renewal interval later, so that every node that applied the same
    /// cltab revision is a candidate by then and the preferred one wins.
    known: HashMap<String, Instant>,
}

/// A group as the event loop has it.
#[derive(Clone, Debug, Default)]
struct Local {
    level: Option<String>,
    failed: bool,
    quiet: bool,
}

/// Until the daemon closes.
async fn closed(rx: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|c| *c).await.map(|_| ());
}

/// The owner agent: runs until the daemon closes.
pub(crate) async fn run(h: Arc<super::agent::ClusterHandle>, shared: Arc<Shared>) {
    let mut st = State::default();
    let mut closing = shared.closing.subscribe();
    let mut said: Option<String> = None;
    loop {
        expire(&h, &shared, &mut st).await;
        let outcome = session(&h, &shared, &mut st).await;
        if *closing.borrow() {
            return;
        }
        match outcome {
            Ok(()) => return,
            Err(e) => {
                let why = e.to_string();
                if said.as_deref() != Some(why.as_str()) {
                    tracing::warn!("exclusive groups: {why}; trying again");
                    said = Some(why);
                }
            }
        }
        // An owner keeps its groups (and its lease) across a lost
        // connection while its renewals can still be acknowledged in
        // time: it tries again at once; otherwise in a while.
        expire(&h, &shared, &mut st).await;
        let delay = if st.mine.is_empty() {
            Duration::from_millis(500)
        } else {
            Duration::from_millis(100)
        };
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = closed(&mut closing) => return,
        }
    }
}

/// Past the stop time of its lease an owner gives everything up; past its
/// TTL the lease is not tried again.
async fn expire(h: &super::agent::ClusterHandle, shared: &Shared, st: &mut State) {
    let times = times_of(shared, &h.cfg);
    let now = Instant::now();
    if let Some(l) = st.lease {
        if !st.mine.is_empty() && now >= l.acked + times.stop_at {
            lose_all(h, shared, st).await;
        } else if now >= l.acked + times.ttl {
            st.lease = None;
        }
    }
}

/// Ownership could not be renewed in time: nothing this node owned may run
/// any longer, and its lease is never renewed again (the owner keys under
/// it expire with it, or are revoked once the watchdog's deadline has
/// passed and nothing of the groups runs here).
async fn lose_all(h: &super::agent::ClusterHandle, shared: &Shared, st: &mut State) {
    if let Some(l) = st.lease.take()
        && !st.mine.is_empty()
    {
        let times = times_of(shared, &h.cfg);
        st.stale.push((l.id, l.acked + times.kill_at));
    }
    let mine = std::mem::take(&mut st.mine);
    for (g, m) in mine {
        h.exclusive.revoke(&g);
        released(
            shared,
            &h.cfg.node,
            &g,
            m.token,
            "its lease could not be renewed in time",
        );
        if m.told.as_deref() != Some("") {
            tracing::warn!(
                "exclusive group {g}: ownership (token {}) can no longer be renewed; stopping it (the watchdog kills what is left before the lease can expire)",
                m.token
            );
            tell(shared, &g, "").await;
        }
    }
}

fn times_of(shared: &Shared, cfg: &ClusterConfig) -> FenceTimes {
    let tab = shared
        .cltab
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    tab.fence_times()
        .or_else(|_| FenceTimes::of(cfg.lease_ttl.max(Duration::from_secs(1)), None))
        .unwrap_or(FenceTimes {
            ttl: cfg.lease_ttl,
            renew: cfg.lease_ttl / 3,
            stop_at: cfg.lease_ttl / 2,
            kill_at: cfg.lease_ttl * 3 / 4,
        })
}

/// `fut`, or an error once `by` has passed.
async fn by<T>(
    cfg: &ClusterConfig,
    by: Instant,
    fut: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, ClusterError> {
    let limit = by.min(Instant::now() + super::REQUEST_TIMEOUT);
    match tokio::time::timeout_at(limit, fut).await {
        Ok(r) => r.map_err(|e| cfg.unreachable(e)),
        Err(_) => Err(cfg.unreachable("etcd did not answer in time")),
    }
}

/// Given-up leases: revoked (the others need not wait for their TTL, which
/// a new etcd leader even extends) once the watchdog's deadline has passed
/// and nothing of an exclusive group runs here.
async fn revoke_stale(
    h: &super::agent::ClusterHandle,
    shared: &Shared,
    st: &mut State,
    c: &mut etcd_client::Client,
    far: Instant,
) {
    let now = Instant::now();
    if !st.stale.iter().any(|(_, at)| *at <= now) {
        return;
    }
    let groups: Vec<String> = shared
        .cltab
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .exclusive_groups()
        .map(|(g, _)| g.to_string())
        .collect();
    let local = local_groups(shared, groups.clone()).await;
    // Groups owned now (under the current lease) may run.
    if !groups
        .iter()
        .filter(|g| !st.mine.contains_key(*g))
        .all(|g| local.get(g).is_some_and(|l| l.quiet))
    {
        return;
    }
    let mut kept = Vec::new();
    for (id, at) in std::mem::take(&mut st.stale) {
        if at > now {
            kept.push((id, at));
            continue;
        }
        match by(&h.cfg, far, c.lease_revoke(id)).await {
            Ok(_) => tracing::info!("exclusive groups: revoked the given-up owner lease {id:x}"),
            // Gone already (expired): done.
            Err(e) if e.to_string().contains("not found") => {}
            // etcd does not answer: another try later (or it expires).
            Err(e) => {
                tracing::debug!("revoking the given-up owner lease {id:x}: {e}");
                kept.push((id, now + Duration::from_secs(1)));
            }
        }
    }
    st.stale = kept;
}

async fn session(
    h: &super::agent::ClusterHandle,
    shared: &Shared,
    st: &mut State,
) -> Result<(), ClusterError> {
    use etcd_client::{GetOptions, WatchOptions};
    let cfg = &h.cfg;
    let times = times_of(shared, cfg);
    let ttl_secs = times.ttl.as_secs_f64().ceil().max(1.0) as i64;
    // While it owns groups nothing may take longer than their stop time.
    let far = match st.lease {
        Some(l) if !st.mine.is_empty() => {
            (l.acked + times.stop_at).min(Instant::now() + super::REQUEST_TIMEOUT)
        }
        _ => Instant::now() + super::REQUEST_TIMEOUT,
    };
    let mut c = match tokio::time::timeout_at(far, cfg.connect()).await {
        Ok(c) => c?,
        Err(_) => return Err(cfg.unreachable("no etcd endpoint answered in time")),
    };
    revoke_stale(h, shared, st, &mut c, far).await;
    // A lease granted with another TTL (lease_ttl changed since) is given
    // up with its groups: its deadlines follow the TTL it has.
    if st.lease.is_some_and(|l| l.ttl != times.ttl) {
        tracing::warn!(
            "exclusive groups: lease_ttl changed to {} s; giving up the owner lease of the old TTL",
            times.ttl.as_secs_f64()
        );
        lose_all(h, shared, st).await;
        st.lease = None;
    }
    // The lease of the last connection if it may still live, else a new one.
    let lease = match st.lease {
        Some(l) => l.id,
        None => {
            if !st.mine.is_empty() {
                lose_all(h, shared, st).await;
            }
            let sent = Instant::now();
            let id = by(cfg, far, c.lease_grant(ttl_secs, None)).await?.id();
            st.lease = Some(Lease {
                id,
                acked: sent,
                ttl: times.ttl,
            });
            id
        }
    };
    let sent = Instant::now();
    let (mut keeper, mut alive) =
        match tokio::time::timeout_at(far, c.lease_keep_alive(lease)).await {
            Ok(Ok(k)) => k,
            Ok(Err(etcd_client::Error::LeaseKeepAliveError(e))) => {
                // The lease is gone (expired, or revoked): so is every group.
                lose_all(h, shared, st).await;
                st.lease = None;
                return Err(cfg.unreachable(format!("the owner lease is gone ({e})")));
            }
            Ok(Err(e)) => return Err(cfg.unreachable(e)),
            Err(_) => return Err(cfg.unreachable("etcd did not answer in time")),
        };
    // That first renewal was acknowledged (keep_alive waits for it).
    let mut acked = sent;
    st.lease = Some(Lease {
        id: lease,
        acked,
        ttl: times.ttl,
    });
    if !ctx_renewed(h, st, times, acked) {
        lose_all(h, shared, st).await;
        return Err(
            cfg.unreachable("the fencing watchdog cannot be fed; nothing exclusive runs here")
        );
    }
    let prefix = groups_prefix(cfg);
    let got = by(
        cfg,
        far,
        c.get(prefix.clone(), Some(GetOptions::new().with_prefix())),
    )
    .await?;
    let rev = got.header().map_or(0, |x| x.revision());
    let mut seen: BTreeMap<String, Seen> = BTreeMap::new();
    let now = Instant::now();
    for kv in got.kvs() {
        absorb(&mut seen, &prefix, kv, false, now);
    }
    h.exclusive.set_owners(&seen);
    let mut watch = by(
        cfg,
        far,
        c.watch(
            prefix.clone(),
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(rev + 1),
            ),
        ),
    )
    .await?;
    let mut events = shared.events.subscribe();
    let mut seen_ev = *events.borrow_and_update();
    let mut closing = shared.closing.subscribe();
    let mut registered: BTreeSet<String> = BTreeSet::new();
    let mut pending: VecDeque<Instant> = VecDeque::new();
    let mut tick = tokio::time::interval(times.renew.max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ctx = Ctx {
        h,
        shared,
        lease,
        times,
        registered: &mut registered,
    };
    let mut wake = ctx.evaluate(&mut c, &mut seen, st, acked).await?;
    loop {
        let stop_by = acked + times.stop_at;
        let stale_due = st.stale.iter().map(|(_, at)| *at).min();
        tokio::select! {
            _ = tick.tick() => {
                // The send time is taken before the send: never later
                // than the renewal etcd may acknowledge.
                let sent = Instant::now();
                tokio::time::timeout(times.renew, keeper.keep_alive())
                    .await
                    .map_err(|_| cfg.unreachable("a keep-alive of the owner lease could not be sent"))?
                    .map_err(|e| cfg.unreachable(e))?;
                pending.push_back(sent);
            }
            m = alive.message() => match m.map_err(|e| cfg.unreachable(e))? {
                Some(r) if r.ttl() > 0 => {
                    if let Some(s) = pending.pop_front() {
                        acked = s;
                        st.lease = Some(Lease { id: lease, acked, ttl: times.ttl });
                        if !ctx_renewed(h, st, times, acked) {
                            lose_all(h, shared, st).await;
                            return Err(cfg.unreachable("the fencing watchdog cannot be fed; nothing exclusive runs here"));
                        }
                    }
                }
                _ => {
                    lose_all(h, shared, st).await;
                    st.lease = None;
                    return Err(cfg.unreachable("the owner lease expired"));
                }
            },
            _ = tokio::time::sleep_until(stop_by), if !st.mine.is_empty() => {
                return Err(cfg.unreachable(format!(
                    "the owner lease was not renewed within {:.1} s",
                    times.stop_at.as_secs_f64()
                )));
            }
            _ = tokio::time::sleep_until(acked + times.ttl) => {
                return Err(cfg.unreachable("the owner lease was not renewed within its TTL"));
            }
            m = watch.message() => {
                let resp = super::agent::watched(cfg, m, "the exclusive groups")?;
                let now = Instant::now();
                for ev in resp.events() {
                    if let Some(kv) = ev.kv() {
                        absorb(&mut seen, &prefix, kv, ev.event_type() == etcd_client::EventType::Delete, now);
                    }
                }
                h.exclusive.set_owners(&seen);
                wake = ctx.evaluate(&mut c, &mut seen, st, acked).await?;
            }
            r = events.changed() => {
                if r.is_err() {
                    return Ok(());
                }
                let upto = *events.borrow_and_update();
                let mut relevant = false;
                let scanned = shared.events.lock().scan(seen_ev, usize::MAX, |e| {
                    e.kind.group().is_some() || matches!(e.kind, crate::events::EventKind::Reread { .. })
                }, |_| relevant = true);
                seen_ev = scanned.unwrap_or(upto);
                if relevant || scanned.is_err() {
                    wake = ctx.evaluate(&mut c, &mut seen, st, acked).await?;
                }
            }
            _ = tokio::time::sleep_until(stale_due.unwrap_or(acked + times.ttl * 100)), if stale_due.is_some() => {
                // Bounded by the stop time of what this node owns.
                let far = if st.mine.is_empty() {
                    Instant::now() + super::REQUEST_TIMEOUT
                } else {
                    (acked + times.stop_at).min(Instant::now() + super::REQUEST_TIMEOUT)
                };
                revoke_stale(h, shared, st, &mut c, far).await;
                // Not quiet yet: look again in a while.
                if st.stale.iter().any(|(_, at)| *at <= Instant::now()) {
                    for s in st.stale.iter_mut() {
                        s.1 = s.1.max(Instant::now() + Duration::from_millis(200));
                    }
                }
            }
            _ = tokio::time::sleep_until(wake.unwrap_or(acked + times.ttl * 100)), if wake.is_some() => {
                wake = ctx.evaluate(&mut c, &mut seen, st, acked).await?;
            }
            _ = closed(&mut closing) => {
                // The daemon has stopped every group: hand over at once.
                for g in std::mem::take(&mut st.mine).into_keys() {
                    h.exclusive.revoke(&g);
                    h.exclusive.feeder.send(Cmd::Disarm { group: g });
                }
                let _ = tokio::time::timeout(Duration::from_secs(1), c.lease_revoke(lease)).await;
                st.lease = None;
                return Ok(());
            }
        }
    }
}

/// A renewal sent at `acked` was acknowledged: the owned groups' new
/// deadlines (the watchdog's, and the permits').
/// False if the watchdog could not be told: then nothing owned may run.
fn ctx_renewed(
    h: &super::agent::ClusterHandle,
    st: &State,
    times: FenceTimes,
    acked: Instant,
) -> bool {
    let kill_at = mono_of(acked + times.kill_at);
    for g in st.mine.keys() {
        if !h.exclusive.feeder.send(Cmd::Arm {
            group: g.clone(),
            at: kill_at,
        }) {
            return false;
        }
    }
    h.exclusive.extend(
        st.mine
            .iter()
            .filter(|(_, m)| m.release.is_none())
            .map(|(g, _)| g),
        (acked + times.stop_at).into_std(),
    );
    true
}

struct Ctx<'a> {
    h: &'a super::agent::ClusterHandle,
    shared: &'a Shared,
    lease: i64,
    times: FenceTimes,
    registered: &'a mut BTreeSet<String>,
}

impl Ctx<'_> {
    /// Delete `group`'s owner key if it is under this agent's lease.
    async fn delete_owner_key(
        &self,
        c: &mut etcd_client::Client,
        group: &str,
        deadline: Instant,
    ) -> Result<(), ClusterError> {
        use etcd_client::{Compare, CompareOp, Txn, TxnOp};
        let key = owner_key(&self.h.cfg, group);
        let txn = Txn::new()
            .when([Compare::lease(key.clone(), CompareOp::Equal, self.lease)])
            .and_then([TxnOp::delete(key, None)]);
        by(&self.h.cfg, deadline, c.txn(txn)).await?;
        Ok(())
    }

    /// Do what the keys and the local groups call for; when to look again
    /// even if nothing changes.
    async fn evaluate(
        &mut self,
        c: &mut etcd_client::Client,
        seen: &mut BTreeMap<String, Seen>,
        st: &mut State,
        acked: Instant,
    ) -> Result<Option<Instant>, ClusterError> {
        use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp};
        let cfg = &self.h.cfg;
        let me = cfg.node.clone();
        let tab = self
            .shared
            .cltab
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let ineligible_for = tab
            .settings
            .ineligible_for
            .unwrap_or(Duration::from_secs(60));
        let groups: Vec<(String, GroupOpts)> = tab
            .exclusive_groups()
            .map(|(g, o)| (g.to_string(), o.clone()))
            .collect();
        // Owned groups that are no longer exclusive (or gone): let go.
        let gone: Vec<String> = st
            .mine
            .keys()
            .filter(|g| !groups.iter().any(|(x, _)| x == *g))
            .cloned()
            .collect();
        let deadline = if st.mine.is_empty() {
            Instant::now() + super::REQUEST_TIMEOUT
        } else {
            acked + self.times.stop_at
        };
        for g in gone {
            self.h.exclusive.revoke(&g);
            self.delete_owner_key(c, &g, deadline).await?;
            st.mine.remove(&g);
            self.h
                .exclusive
                .feeder
                .send(Cmd::Disarm { group: g.clone() });
            tracing::info!("group {g} is no longer exclusive: ownership released");
        }
        let local =
            local_groups(self.shared, groups.iter().map(|(g, _)| g.clone()).collect()).await;
        let now = Instant::now();
        let mut wake: Option<Instant> = None;
        let mut soon = |t: Instant| wake = Some(wake.map_or(t, |w: Instant| w.min(t)));
        for (g, opts) in &groups {
            let l = local.get(g).cloned().unwrap_or_default();
            let until = st.ineligible.get(g).copied().filter(|t| *t > now);
            if let Some(t) = until {
                soon(t);
            }
            let eligible = opts.allows(&me) && until.is_none();
            // This node's candidacy.
            let ckey = candidate_key(cfg, g, &me);
            if eligible && !self.registered.contains(g) {
                by(
                    cfg,
                    deadline,
                    c.put(ckey, "", Some(PutOptions::new().with_lease(self.lease))),
                )
                .await?;
                self.registered.insert(g.clone());
            } else if !eligible && self.registered.contains(g) {
                by(cfg, deadline, c.delete(ckey, None)).await?;
                self.registered.remove(g);
            }
            let s = seen.entry(g.clone()).or_insert_with(|| Seen {
                absent_since: Some(now),
                ..Default::default()
            });
            if let Some(m) = st.mine.get_mut(g) {
                if s.owner.as_ref().is_none_or(|o| o.lease != self.lease) {
                    // The key went (deleted behind the agent's back).
                    tracing::warn!("exclusive group {g}: its owner key is gone; stopping it");
                    released(self.shared, &me, g, m.token, "its owner key was deleted");
                    st.mine.remove(g);
                    self.h.exclusive.revoke(g);
                    tell(self.shared, g, "").await;
                    continue;
                }
                if m.release.is_none() {
                    m.release = if s.mv.as_ref().is_some_and(|mv| mv.from == me) {
                        Some(Release::Move)
                    } else if !opts.allows(&me) {
                        Some(Release::NotEligible)
                    } else if l.failed {
                        st.ineligible.insert(g.clone(), now + ineligible_for);
                        soon(now + ineligible_for);
                        Some(Release::Failed)
                    } else {
                        None
                    };
                    if let Some(r) = m.release {
                        tracing::warn!(
                            "exclusive group {g}: releasing ownership (token {}): {}",
                            m.token,
                            match r {
                                Release::Move => "moved by an operator".to_string(),
                                Release::Failed => format!(
                                    "a test entry failed; this node is ineligible for {} s",
                                    ineligible_for.as_secs_f64()
                                ),
                                Release::NotEligible =>
                                    "this node is no longer in its nodes".into(),
                            }
                        );
                    }
                }
                if m.release.is_some() {
                    self.h.exclusive.revoke(g);
                    if m.told.as_deref() != Some("") {
                        tell(self.shared, g, "").await;
                        m.told = Some(String::new());
                    }
                    if l.quiet {
                        self.delete_owner_key(c, g, deadline).await?;
                        self.h
                            .exclusive
                            .feeder
                            .send(Cmd::Disarm { group: g.clone() });
                        tracing::info!(
                            "exclusive group {g}: stopped and released (token {})",
                            m.token
                        );
                        st.mine.remove(g);
                    }
                    continue;
                }
                let goal = s.goal.as_ref().map_or("", |x| x.level.as_str()).to_string();
                if m.told.as_deref() != Some(goal.as_str()) {
                    tell(self.shared, g, &goal).await;
                    m.told = Some(goal);
                }
                continue;
            }
            // Not this node's: nothing of it runs here.
            if l.level.as_deref().is_some_and(|x| !x.is_empty()) {
                self.h.exclusive.revoke(g);
                tell(self.shared, g, "").await;
            }
            // A key of this lease that this node does not run under (a
            // claim whose answer was lost): let go.
            if s.owner.as_ref().is_some_and(|o| o.lease == self.lease) && l.quiet {
                self.delete_owner_key(c, g, deadline).await?;
                tracing::warn!(
                    "exclusive group {g}: deleted an owner key of this node's lease that it did not run under"
                );
                continue;
            }
            if s.owner.is_some() || !eligible || !l.quiet {
                continue;
            }
            let settled = *st.known.entry(g.clone()).or_insert(now) + self.times.renew;
            if now < settled {
                soon(settled);
                continue;
            }
            let fallback_at = s.absent_since.unwrap_or(now) + self.times.ttl;
            let mine_to_take = designated(opts, s).as_deref() == Some(me.as_str());
            if !mine_to_take && now < fallback_at {
                soon(fallback_at);
                continue;
            }
            // Claim: create the owner key if absent (and take the move
            // request with it).
            let key = owner_key(cfg, g);
            let value = serde_json::to_vec(&OwnerValue {
                node: me.clone(),
                since: now_unix(),
            })
            .unwrap_or_default();
            let mut ops = vec![TxnOp::put(
                key.clone(),
                value,
                Some(PutOptions::new().with_lease(self.lease)),
            )];
            if s.mv.is_some() {
                ops.push(TxnOp::delete(move_key(cfg, g), None));
            }
            let txn = Txn::new()
                .when([Compare::create_revision(key, CompareOp::Equal, 0)])
                .and_then(ops);
            let resp = by(cfg, deadline, c.txn(txn)).await?;
            if !resp.succeeded() {
                continue;
            }
            let token = resp.header().map_or(0, |x| x.revision());
            // Armed before anything can start.
            if !self.h.exclusive.feeder.send(Cmd::Arm {
                group: g.clone(),
                at: mono_of(acked + self.times.kill_at),
            }) {
                // Not eligible for a while: another node takes the group
                // (this one would claim and give back in a loop).
                let until = now + Duration::from_secs(10);
                st.ineligible.insert(g.clone(), until);
                soon(until);
                tracing::error!(
                    "exclusive group {g}: the fencing watchdog cannot be started; not running the group, and ineligible for it for 10 s"
                );
                self.delete_owner_key(c, g, deadline).await?;
                continue;
            }
            s.owner = Some(SeenOwner {
                node: me.clone(),
                lease: self.lease,
                token,
            });
            s.absent_since = None;
            self.h.exclusive.grant(
                g,
                Permit {
                    node: me.clone(),
                    token,
                    until: (acked + self.times.stop_at).into_std(),
                },
            );
            let goal = s.goal.as_ref().map_or("", |x| x.level.as_str()).to_string();
            tracing::info!(
                "exclusive group {g}: this node owns it now (token {token}); goal level {}",
                if goal.is_empty() {
                    "none"
                } else {
                    goal.as_str()
                }
            );
            self.shared
                .events
                .push(crate::events::EventKind::GroupOwned {
                    group: g.clone(),
                    node: me.clone(),
                    token,
                });
            tell(self.shared, g, &goal).await;
            st.mine.insert(
                g.clone(),
                Mine {
                    token,
                    told: Some(goal),
                    release: None,
                },
            );
        }
        self.h.exclusive.set_owners(seen);
        // A group being stopped is looked at again soon even if no event
        // comes (its last process may have gone already).
        if st.mine.values().any(|m| m.release.is_some()) {
            soon(now + Duration::from_millis(200));
        }
        Ok(wake)
    }
}

fn released(shared: &Shared, node: &str, group: &str, token: i64, why: &str) {
    shared.events.push(crate::events::EventKind::GroupReleased {
        group: group.to_string(),
        node: node.to_string(),
        token,
        why: why.to_string(),
    });
}

/// Tell `group` `level` on the event loop, as the cluster (not a client:
/// no goal is written to etcd).
async fn tell(shared: &Shared, group: &str, level: &str) {
    let (g, l) = (group.to_string(), level.to_string());
    let job: LoopJob =
        Box::new(move |d, c| Some(crate::daemon::handlers::groups::tell_here(d, c, &g, &l)));
    let what = if level.is_empty() { "no level" } else { level };
    let _ = super::agent::job_on_loop(
        shared,
        job,
        Right::Change,
        Some(format!("exclusive group {group}: {what}")),
        "cluster",
    )
    .await;
}

/// The exclusive groups' levels and states on the event loop.
async fn local_groups(shared: &Shared, groups: Vec<String>) -> HashMap<String, Local> {
    let out: Arc<Mutex<HashMap<String, Local>>> = Default::default();
    let put = out.clone();
    let job: LoopJob = Box::new(move |d, _| {
        let mut m = put.lock().unwrap_or_else(PoisonError::into_inner);
        if d.halting {
            // Shutting down: no group is claimed (an empty answer).
            return Some(Reply::Ok);
        }
        for g in groups {
            if let Some(grp) = d.sup.group(&g) {
                let busy = d.exec.group_busy(&g);
                m.insert(
                    g,
                    Local {
                        level: grp.active_level().map(str::to_string),
                        failed: grp.state() == crate::supervisor::machine::GroupState::Failed,
                        // Nothing of it: no entry's process, no leftover
                        // being stopped, nobody in its cgroups.
                        quiet: grp.is_quiet() && !busy,
                    },
                );
            }
        }
        Some(Reply::Ok)
    });
    let _ = super::agent::job_on_loop(shared, job, Right::Read, None, "").await;
    let m = out.lock().unwrap_or_else(PoisonError::into_inner);
    m.clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(nodes: &[&str]) -> GroupOpts {
        GroupOpts {
            placement: crate::cltab::Placement::Exclusive,
            nodes: nodes.iter().map(|s| s.to_string()).collect(),
            line: 1,
            startup: None,
        }
    }

    fn seen(cands: &[&str], mv: Option<(&str, Option<&str>)>) -> Seen {
        Seen {
            candidates: cands.iter().map(|s| s.to_string()).collect(),
            mv: mv.map(|(from, to)| MoveValue {
                from: from.into(),
                to: to.map(str::to_string),
                by: "t".into(),
                at: 0,
            }),
            ..Default::default()
        }
    }

    /// (nodes, live candidates, move (from, to), designated)
    type Case<'a> = (
        &'a [&'a str],
        &'a [&'a str],
        Option<(&'a str, Option<&'a str>)>,
        Option<&'a str>,
    );

    #[test]
    fn the_designated_candidate() {
        let table: &[Case] = &[
            (&[], &[], None, None),
            (&[], &["b", "a", "c"], None, Some("a")),
            (&["c", "a", "b"], &["a", "b", "c"], None, Some("c")),
            (&["c", "a", "b"], &["a", "b"], None, Some("a")),
            // A node not in `nodes` is never designated.
            (&["a", "b"], &["z"], None, None),
            // A move to a live candidate.
            (
                &["a", "b", "c"],
                &["a", "b", "c"],
                Some(("a", Some("c"))),
                Some("c"),
            ),
            // A move to a node that is not a candidate: the next one.
            (
                &["a", "b", "c"],
                &["a", "b", "c"],
                Some(("a", Some("z"))),
                Some("b"),
            ),
            // The next after the mover, around the end.
            (
                &["a", "b", "c"],
                &["a", "b", "c"],
                Some(("c", None)),
                Some("a"),
            ),
            (&[], &["a", "b", "c"], Some(("b", None)), Some("c")),
            // The mover is gone from the candidates already.
            (&["a", "b", "c"], &["b", "c"], Some(("a", None)), Some("b")),
            // Nobody else: nobody.
            (&[], &["a"], Some(("a", None)), None),
        ];
        for (nodes, cands, mv, want) in table {
            let got = designated(&opts(nodes), &seen(cands, *mv));
            assert_eq!(got.as_deref(), *want, "{nodes:?} {cands:?} {mv:?}");
        }
    }

    #[test]
    fn keys_parse() {
        let p = "/c/groups/";
        let table: &[(&str, Option<(&str, Part)>)] = &[
            ("/c/groups/web/owner", Some(("web", Part::Owner))),
            ("/c/groups/web/goal", Some(("web", Part::Goal))),
            ("/c/groups/web/move", Some(("web", Part::Move))),
            (
                "/c/groups/web/candidates/alpha",
                Some(("web", Part::Candidate("alpha".into()))),
            ),
            ("/c/groups/web/other", None),
            ("/c/groups/web", None),
            ("/d/groups/web/owner", None),
        ];
        for (k, want) in table {
            let got = parse_key(p, k.as_bytes());
            assert_eq!(got, want.clone().map(|(g, p)| (g.to_string(), p)), "{k}");
        }
    }
}

/// `clinit GROUP LEVEL` for an exclusive group in cluster mode: store the
/// cluster-wide goal; the owner applies it.
pub(crate) fn tell_cluster(
    c: &mut crate::daemon::event_loop::Call,
    h: Arc<super::agent::ClusterHandle>,
    group: &str,
    level: &str,
) -> Option<Reply> {
    use crate::daemon::conn::error;
    use crate::proto::ErrorCode;
    let reply = c.reply.take()?;
    let goal = Goal {
        level: level.to_string(),
        by: c.who.clone(),
    };
    let group = group.to_string();
    tokio::spawn(async move {
        let answer = match store_goal(&h.cfg, &group, &goal).await {
            Ok(()) => {
                let owner = match h.exclusive.owner(&group) {
                    Some((node, token)) => {
                        format!("node {node} owns it (token {token}) and applies it")
                    }
                    None => "no node owns it yet; its next owner applies it".to_string(),
                };
                Reply::Message {
                    text: format!(
                        "goal of exclusive group {group} set to {} for the cluster; {owner}",
                        if goal.level.is_empty() {
                            "no level".to_string()
                        } else {
                            format!("level {}", goal.level)
                        }
                    ),
                }
            }
            Err(e) => error(
                ErrorCode::EtcdUnreachable,
                format!(
                    "{e}: {group} is an exclusive group, whose goal is the cluster's; it cannot be set now"
                ),
            ),
        };
        let _ = reply.send(answer);
    });
    None
}

async fn store_goal(cfg: &ClusterConfig, group: &str, goal: &Goal) -> Result<(), ClusterError> {
    let mut c = cfg.connect().await?;
    let far = Instant::now() + super::REQUEST_TIMEOUT;
    by(
        cfg,
        far,
        c.put(
            goal_key(cfg, group),
            serde_json::to_vec(goal).unwrap_or_default(),
            None,
        ),
    )
    .await?;
    Ok(())
}

/// One exclusive group as `clinit cluster status` shows it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GroupView {
    pub group: String,
    pub placement: crate::cltab::Placement,
    /// The cluster-wide goal (`None`: never told).
    pub goal: Option<String>,
    pub owner: Option<String>,
    /// The owner's fencing token.
    pub token: Option<i64>,
    /// Live eligible nodes, most preferred first.
    pub candidates: Vec<String>,
    /// A move asked and not done yet: (from, to).
    pub moving: Option<MoveValue>,
}

/// The exclusive groups of the shared cltab and their keys.
pub async fn groups_status(cfg: &ClusterConfig) -> Result<Vec<GroupView>, ClusterError> {
    let mut c = cfg.connect().await?;
    groups_once(cfg, &mut c).await
}

async fn groups_once(
    cfg: &ClusterConfig,
    c: &mut etcd_client::Client,
) -> Result<Vec<GroupView>, ClusterError> {
    let far = Instant::now() + super::REQUEST_TIMEOUT;
    let tab = by(cfg, far, c.get(cfg.cltab_key(), None)).await?;
    let Some(kv) = tab.kvs().first() else {
        return Ok(Vec::new());
    };
    let text = String::from_utf8_lossy(kv.value()).into_owned();
    // The shared cltab as stored (each node lays its settings over it;
    // placement and nodes are the shared file's).
    let parsed = crate::cltab::parse(&cfg.cltab_name(kv.mod_revision()), &text)
        .map_err(ClusterError::Cltab)?;
    let prefix = groups_prefix(cfg);
    let got = by(
        cfg,
        far,
        c.get(
            prefix.clone(),
            Some(etcd_client::GetOptions::new().with_prefix()),
        ),
    )
    .await?;
    let mut seen: BTreeMap<String, Seen> = BTreeMap::new();
    let now = Instant::now();
    for kv in got.kvs() {
        absorb(&mut seen, &prefix, kv, false, now);
    }
    Ok(parsed
        .exclusive_groups()
        .map(|(g, opts)| {
            let s = seen.remove(g).unwrap_or_default();
            GroupView {
                group: g.to_string(),
                placement: opts.placement,
                goal: s.goal.map(|x| x.level),
                owner: s.owner.as_ref().map(|o| o.node.clone()),
                token: s.owner.as_ref().map(|o| o.token),
                candidates: preference(opts, &s.candidates),
                moving: s.mv,
            }
        })
        .collect())
}

/// `clinit cluster move GROUP [NODE]`: ask the owner to hand `group` over
/// (to `to`, else to the next eligible node) and wait until another node
/// owns it, up to `wait`. What to print.
pub async fn move_group(
    cfg: &ClusterConfig,
    group: &str,
    to: Option<&str>,
    who: &str,
    wait: Duration,
) -> Result<String, ClusterError> {
    let mut c = cfg.connect().await?;
    let groups = groups_once(cfg, &mut c).await?;
    let Some(g) = groups.into_iter().find(|g| g.group == group) else {
        return Err(ClusterError::Refused(format!(
            "group {group} is not an exclusive group of the shared cltab (add {group}:::placement:exclusive)"
        )));
    };
    let Some(from) = g.owner.clone() else {
        return Err(ClusterError::Refused(format!(
            "no node owns exclusive group {group} now: there is nothing to move (live candidates: {})",
            list(&g.candidates)
        )));
    };
    match to {
        Some(n) if n == from => {
            return Err(ClusterError::Refused(format!(
                "node {n} owns exclusive group {group} already"
            )));
        }
        Some(n) if !g.candidates.iter().any(|c| c == n) => {
            return Err(ClusterError::Refused(format!(
                "node {n} cannot take exclusive group {group}: it is not alive, not in the group's nodes, or ineligible (live candidates: {})",
                list(&g.candidates)
            )));
        }
        None if !g.candidates.iter().any(|c| *c != from) => {
            return Err(ClusterError::Refused(format!(
                "no other node can take exclusive group {group} (live candidates: {})",
                list(&g.candidates)
            )));
        }
        _ => {}
    }
    let mv = MoveValue {
        from: from.clone(),
        to: to.map(str::to_string),
        by: who.to_string(),
        at: now_unix(),
    };
    let far = Instant::now() + super::REQUEST_TIMEOUT;
    by(
        cfg,
        far,
        c.put(
            move_key(cfg, group),
            serde_json::to_vec(&mv).unwrap_or_default(),
            None,
        ),
    )
    .await?;
    let until = Instant::now() + wait;
    loop {
        let r = by(cfg, until, c.get(owner_key(cfg, group), None)).await;
        if let Ok(r) = r
            && let Some(kv) = r.kvs().first()
            && let Ok(v) = serde_json::from_slice::<OwnerValue>(kv.value())
            && v.node != from
        {
            return Ok(format!(
                "exclusive group {group} moved from node {from} to node {} (token {})",
                v.node,
                kv.create_revision()
            ));
        }
        if Instant::now() >= until {
            return Err(ClusterError::Timeout(format!(
                "exclusive group {group} was asked to move from node {from}, but no other node owns it after {} s (see clinit cluster status)",
                wait.as_secs_f64()
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn list(v: &[String]) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}
