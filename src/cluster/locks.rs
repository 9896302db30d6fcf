//! Cluster-wide locks: the lock agent, the task that holds this node's
//! claims on locks in etcd for the lock manager (which decides everything
//! local: who of this node's clients holds, waits, in which order).
//!
//! A **claim** is one key per node and lock, `/<cluster>/locks/<lock>/<lease
//! id in hex>`, attached to the agent's own lease, whose value says the
//! node and the mode. As in etcd's `concurrency` recipes, claims are served
//! in the order of their keys' create revisions: an exclusive claim is this
//! node's once no key of the lock has a lower create revision, a shared one
//! once no *exclusive* key has. That revision is the claim's token base
//! ([`crate::lock::CLAIM_SHIFT`]), so fencing tokens rise across nodes and
//! restarts of any node.
//!
//! A claim outlives its local holders while no other node waits (the lock
//! cache: a lock taken again on the same node costs no etcd round trip);
//! a key of another node behind it that it blocks makes it contended, and
//! the manager gives it up once its local holders are gone.
//!
//! **The deadline.** etcd expires the lease (and deletes the keys) TTL
//! after the last keep-alive it received; that is never before TTL after
//! the agent *sent* it. So the agent counts from the send time S of the
//! last acknowledged keep-alive: at S + TTL/2 without a newer
//! acknowledgement every claim is treated as lost ([`LockEvent::ClusterLost`]):
//! the holders' connections are closed, and `clinit lock` stops its command
//! within `grace_ms` = TTL/4, a quarter of the TTL before another node can
//! be granted the lock. Then a new session starts with a new lease (the old
//! one is revoked when etcd answers again).

use super::{ClusterConfig, ClusterError};
use crate::daemon::conn::Shared;
use crate::lock::service::{ClaimCmd, LocalLocks};
use crate::lock::{CLAIM_SHIFT, GrantInfo, HolderInfo, LockEvent, LockMode};
use crate::store::LockBackend;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// What a claim's key holds.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClaimValue {
    pub node: String,
    pub mode: LockMode,
    /// Unix seconds.
    pub since: i64,
}

/// One key of a lock, as the agent last saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Key {
    key: String,
    lease: i64,
    value: ClaimValue,
}

/// This node's claim on a lock.
#[derive(Debug)]
struct Mine {
    id: u64,
    key: String,
    create_rev: i64,
    mode: LockMode,
    /// What the manager was told last.
    told: Told,
}

#[derive(Debug, PartialEq, Eq)]
enum Told {
    Nothing,
    Queued(Vec<i64>),
    Held,
    Contended,
}

/// `/<cluster>/locks/` and the prefix of one lock's keys.
pub fn locks_prefix(cfg: &ClusterConfig) -> String {
    format!("/{}/locks/", cfg.cluster)
}

fn lock_prefix(cfg: &ClusterConfig, name: &str) -> String {
    format!("{}{}/", locks_prefix(cfg), super::records::encode(name))
}

/// The lock name and lease of a key under [`locks_prefix`].
fn parse_key(prefix: &str, key: &[u8]) -> Option<(String, i64)> {
    let rest = std::str::from_utf8(key).ok()?.strip_prefix(prefix)?;
    let (enc, lease) = rest.rsplit_once('/')?;
    let name = super::records::decode(enc)?;
    Some((name, i64::from_str_radix(lease, 16).ok()?))
}

/// A claim key as etcd stored it: its lock's name, its create revision
/// and what the agent keeps of it (`None`: not a claim key, or its value
/// is not a claim).
fn key_of(prefix: &str, kv: &etcd_client::KeyValue) -> Option<(String, i64, Key)> {
    let (name, lease) = parse_key(prefix, kv.key())?;
    let value = serde_json::from_slice::<ClaimValue>(kv.value()).ok()?;
    let key = String::from_utf8_lossy(kv.key()).into_owned();
    Some((name, kv.create_revision(), Key { key, lease, value }))
}

/// Whether a claim of `mode` must wait for a key of `other` mode created
/// before it.
fn blocks(mode: LockMode, other: LockMode) -> bool {
    mode == LockMode::Exclusive || other == LockMode::Exclusive
}

/// The keys of one lock that hold it now, by create revision.
fn holding(keys: &BTreeMap<i64, Key>) -> Vec<(i64, &Key)> {
    keys.iter()
        .filter(|&(&rev, k)| {
            !keys
                .range(..rev)
                .any(|(_, o)| blocks(k.value.mode, o.value.mode))
        })
        .map(|(&rev, k)| (rev, k))
        .collect()
}

/// The token base of a claim created at etcd revision `rev`. etcd's
/// revisions start at 1; a negative one (never sent) counts as 0 rather
/// than wrapping to a huge token.
fn claim_base(rev: i64) -> u64 {
    u64::try_from(rev).unwrap_or(0) << CLAIM_SHIFT
}

fn grant_info(rev: i64, k: &Key) -> GrantInfo {
    GrantInfo {
        holder: 0,
        mode: k.value.mode,
        token: claim_base(rev),
        since: k.value.since,
        info: HolderInfo {
            pid: None,
            uid: None,
            identity: None,
            host: k.value.node.as_str().into(),
            what: format!(
                "claim of node {} (its holders are listed there)",
                k.value.node
            )
            .into(),
        },
    }
}

/// What ties the agent to the daemon.
struct Ctx {
    cfg: ClusterConfig,
    locks: Arc<Mutex<LocalLocks>>,
    shared: Arc<Shared>,
}

impl Ctx {
    /// Feed the lock manager, then pass on what it changed: events, the
    /// connections to close, the next deadline.
    fn step(&self, ev: LockEvent) {
        let (changes, kicks) = {
            let mut l = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
            l.cluster_event(ev);
            (l.take_changes(), l.take_kicks())
        };
        self.shared
            .events
            .push_all(changes.into_iter().map(Into::into));
        for conn in kicks {
            self.shared.kick(conn);
        }
        self.shared.deadline_changed.notify_one();
    }

    fn set_remote(&self, name: &str, keys: Option<&BTreeMap<i64, Key>>, own: i64) {
        let claims: Vec<GrantInfo> = keys
            .map(|keys| {
                holding(keys)
                    .into_iter()
                    .filter(|(_, k)| k.lease != own)
                    .map(|(rev, k)| grant_info(rev, k))
                    .collect()
            })
            .unwrap_or_default();
        self.locks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .set_remote(name, claims);
    }
}

/// Until the daemon closes.
async fn closed(rx: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|c| *c).await.map(|_| ());
}

/// The lock agent, watched: if it ever fails (a panic), every claim is
/// treated as lost and no lock is claimed again (claims then fail at
/// once), rather than granting on claims nobody keeps alive.
pub(crate) async fn guarded(
    cfg: ClusterConfig,
    locks: Arc<Mutex<LocalLocks>>,
    shared: Arc<Shared>,
    cmds: mpsc::UnboundedReceiver<ClaimCmd>,
) {
    let ctx = Arc::new(Ctx { cfg, locks, shared });
    if let Err(e) = tokio::spawn(run(ctx.clone(), cmds)).await
        && e.is_panic()
    {
        tracing::error!(
            "cluster locks: the lock agent failed ({e}); every claim of this node is given up and no lock is granted until the daemon is restarted"
        );
        ctx.step(LockEvent::ClusterLost);
    }
}

/// The lock agent: runs until the daemon closes.
async fn run(ctx: Arc<Ctx>, mut cmds: mpsc::UnboundedReceiver<ClaimCmd>) {
    let mut closing = ctx.shared.closing.subscribe();
    let mut old_lease: Option<OldLease> = None;
    let mut delay = Duration::from_millis(200);
    let mut said: Option<String> = None;
    loop {
        let began = Instant::now();
        let outcome = session(&ctx, &mut cmds, &mut old_lease, &mut closing).await;
        // Whatever the session held may be gone: the holders' connections
        // are closed now, and their commands are stopped within the grace.
        ctx.step(LockEvent::ClusterLost);
        if let Some(old) = &mut old_lease {
            old.safe_after = Instant::now() + grace(&ctx.cfg) + Duration::from_millis(500);
        }
        if began.elapsed() > Duration::from_secs(10) {
            // It had worked for a while: a new outage is said and retried
            // quickly again.
            said = None;
            delay = Duration::from_millis(200);
        }
        ctx.locks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear_remote();
        let why = match outcome {
            Ok(()) => return,
            Err(e) => e.to_string(),
        };
        if said.as_deref() != Some(why.as_str()) {
            tracing::warn!("cluster locks: {why}; claims are asked again once etcd answers");
            said = Some(why);
        }
        // Meanwhile a claim fails at once (a request that does not wait
        // hears it; a waiting one waits for ClusterBack).
        let until = Instant::now() + delay;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => break,
                cmd = cmds.recv() => match cmd {
                    Some(ClaimCmd::Claim { id, name, .. }) => {
                        ctx.step(LockEvent::ClaimFailed { id, name })
                    }
                    Some(ClaimCmd::Unclaim { .. }) => {}
                    None => return,
                },
                _ = closed(&mut closing) => return,
            }
        }
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

/// The lease of an ended session, and when revoking it is safe: once the
/// commands of the holders it had are stopped (a revoke deletes its keys
/// at once, and another node may be granted their locks).
struct OldLease {
    id: i64,
    safe_after: Instant,
}

/// How soon a holder whose connection the daemon closed stops: `grace_ms`
/// of its grants.
pub fn grace(cfg: &ClusterConfig) -> Duration {
    (cfg.lease_ttl / 4).max(Duration::from_millis(1))
}

/// One connected stretch with one lease: until etcd fails or the deadline
/// passes (an error) or the daemon closes (`Ok`).
async fn session(
    ctx: &Ctx,
    cmds: &mut mpsc::UnboundedReceiver<ClaimCmd>,
    old_lease: &mut Option<OldLease>,
    closing: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<(), ClusterError> {
    use etcd_client::{EventType, GetOptions, WatchOptions};
    let cfg = &ctx.cfg;
    let err = |e: etcd_client::Error| cfg.unreachable(e);
    let ttl = cfg.lease_ttl.max(Duration::from_secs(1));
    let mut c = cfg.connect().await?;
    if let Some(old) = old_lease.take() {
        // Its keys go rather than wait for its expiry, but only once the
        // commands of its holders are stopped.
        let mut c2 = c.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(old.safe_after).await;
            let _ = tokio::time::timeout(Duration::from_secs(5), c2.lease_revoke(old.id)).await;
        });
    }
    let sent = Instant::now();
    // Whole seconds, rounded up: the lease lasts at least the TTL the
    // deadline and the grace are computed from.
    let lease = c
        .lease_grant(ttl.as_millis().div_ceil(1000) as i64, None)
        .await
        .map_err(err)?
        .id();
    *old_lease = Some(OldLease {
        id: lease,
        safe_after: Instant::now(),
    });
    let mut deadline = sent + ttl / 2;
    let (mut keeper, mut alive) = c.lease_keep_alive(lease).await.map_err(err)?;
    let prefix = locks_prefix(cfg);
    let all = c
        .get(prefix.clone(), Some(GetOptions::new().with_prefix()))
        .await
        .map_err(err)?;
    let start = all.header().map_or(0, |h| h.revision());
    let mut view: HashMap<String, BTreeMap<i64, Key>> = HashMap::new();
    // Per lock, the revision its view is as of (a claim reads its lock's
    // keys in its own transaction; older watch events are skipped).
    let mut as_of: HashMap<String, i64> = HashMap::new();
    for (name, rev, key) in all.kvs().iter().filter_map(|kv| key_of(&prefix, kv)) {
        view.entry(name).or_default().insert(rev, key);
    }
    for (name, keys) in &view {
        ctx.set_remote(name, Some(keys), lease);
    }
    let mut watch = c
        .watch(
            prefix.clone(),
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(start + 1),
            ),
        )
        .await
        .map_err(err)?;
    let mut mine: HashMap<String, Mine> = HashMap::new();
    tracing::info!(
        "cluster locks: etcd lease {lease:x} (TTL {} s); claims of this node are safe until {} s after each acknowledged keep-alive was sent",
        ttl.as_secs(),
        (ttl / 2).as_secs_f64()
    );
    ctx.step(LockEvent::ClusterBack);

    let mut pending_alive: VecDeque<Instant> = VecDeque::new();
    let mut in_flight: Option<InFlight> = None;
    let mut tick = tokio::time::interval(ttl / 3);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {
                return Err(cfg.unreachable(format!(
                    "the lock lease was not renewed within {} s",
                    (ttl / 2).as_secs_f64()
                )));
            }
            _ = tick.tick() => {
                pending_alive.push_back(Instant::now());
                tokio::time::timeout_at(deadline, keeper.keep_alive())
                    .await
                    .map_err(|_| cfg.unreachable("a keep-alive of the lock lease could not be sent"))?
                    .map_err(err)?;
            }
            m = alive.message() => match m.map_err(err)? {
                Some(r) if r.ttl() > 0 => {
                    if let Some(s) = pending_alive.pop_front() {
                        deadline = deadline.max(s + ttl / 2);
                    }
                }
                _ => return Err(cfg.unreachable("the lock lease expired")),
            },
            // One request at a time, in the manager's order; while it is in
            // flight the watch waits too (a claim's answer replaces its
            // lock's keys as of its revision: events after that revision
            // must be applied after it, not before).
            cmd = cmds.recv(), if in_flight.is_none() => {
                let Some(cmd) = cmd else { return Ok(()) };
                in_flight = send(cfg, c.clone(), lease, cmd, &mut mine);
            }
            sent = async { in_flight.as_mut().expect("guarded").await }, if in_flight.is_some() => {
                in_flight = None;
                claimed(ctx, lease, sent.map_err(err)?, &mut view, &mut as_of, &mut mine)?;
            }
            m = watch.message(), if in_flight.is_none() => {
                let resp = super::agent::watched(cfg, m, "the cluster's locks")?;
                let mut touched = Vec::new();
                for ev in resp.events() {
                    let Some(kv) = ev.kv() else { continue };
                    let Some((name, _)) = parse_key(&prefix, kv.key()) else { continue };
                    if as_of.get(&name).is_some_and(|r| kv.mod_revision() <= *r) {
                        continue;
                    }
                    let keys = view.entry(name.clone()).or_default();
                    match ev.event_type() {
                        EventType::Put => {
                            if let Some((_, rev, key)) = key_of(&prefix, kv) {
                                keys.insert(rev, key);
                            }
                        }
                        EventType::Delete => {
                            let key = String::from_utf8_lossy(kv.key());
                            keys.retain(|_, k| k.key != key);
                        }
                    }
                    if keys.is_empty() {
                        view.remove(&name);
                    }
                    touched.push(name);
                }
                touched.sort();
                touched.dedup();
                for name in touched {
                    evaluate(ctx, &name, &view, &mut mine, lease)?;
                }
            }
            _ = closed(closing) => {
                // Gone at once for the others, not after the TTL; but while
                // a client holds a lock here its command may run for the
                // grace after this daemon is gone: then the lease expires.
                let held = ctx
                    .locks
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .has_local_holders();
                if held {
                    tracing::info!(
                        "cluster locks: locks are held on this node; its claims in etcd end with their lease, {} s after its last keep-alive",
                        ttl.as_secs_f64()
                    );
                } else {
                    let _ = tokio::time::timeout(Duration::from_secs(1), c.lease_revoke(lease)).await;
                }
                *old_lease = None;
                return Ok(());
            }
        }
    }
}

/// Perform one request of the lock manager.
/// What a request of the lock manager sent to etcd, and etcd's answer.
enum Sent {
    Unclaimed,
    Claimed {
        id: u64,
        name: String,
        mode: LockMode,
        key: String,
        resp: etcd_client::TxnResponse,
    },
}

/// A request in flight: the keep-alives, acknowledgements and the
/// deadline go on meanwhile; the watch waits (see [`session`]).
type InFlight =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Sent, etcd_client::Error>> + Send>>;

/// Send one request of the lock manager to etcd (on its own handle of
/// the connection). An Unclaim forgets the claim at once.
fn send(
    cfg: &ClusterConfig,
    mut c: etcd_client::Client,
    lease: i64,
    cmd: ClaimCmd,
    mine: &mut HashMap<String, Mine>,
) -> Option<InFlight> {
    use etcd_client::{Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp};
    match cmd {
        ClaimCmd::Unclaim { id, name } => {
            let m = mine.remove(&name)?;
            if m.id != id {
                mine.insert(name, m);
                return None;
            }
            Some(Box::pin(async move {
                c.delete(m.key, None).await.map(|_| Sent::Unclaimed)
            }))
        }
        ClaimCmd::Claim { id, name, mode } => {
            let prefix = lock_prefix(cfg, &name);
            let key = format!("{prefix}{lease:x}");
            let value = ClaimValue {
                node: cfg.node.clone(),
                mode,
                since: super::now_unix(),
            };
            let txn = Txn::new()
                .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                .and_then([
                    TxnOp::put(
                        key.clone(),
                        serde_json::to_vec(&value).unwrap_or_default(),
                        Some(PutOptions::new().with_lease(lease)),
                    ),
                    TxnOp::get(prefix, Some(GetOptions::new().with_prefix())),
                ]);
            Some(Box::pin(async move {
                let resp = c.txn(txn).await?;
                Ok(Sent::Claimed {
                    id,
                    name,
                    mode,
                    key,
                    resp,
                })
            }))
        }
    }
}

/// etcd answered a claim: the lock's keys as of the claim's revision.
fn claimed(
    ctx: &Ctx,
    lease: i64,
    sent: Sent,
    view: &mut HashMap<String, BTreeMap<i64, Key>>,
    as_of: &mut HashMap<String, i64>,
    mine: &mut HashMap<String, Mine>,
) -> Result<(), ClusterError> {
    use etcd_client::TxnOpResponse;
    let cfg = &ctx.cfg;
    let Sent::Claimed {
        id,
        name,
        mode,
        key,
        resp,
    } = sent
    else {
        return Ok(());
    };
    if !resp.succeeded() {
        // A key of this lease for this lock is left over from a claim the
        // manager gave up (its delete failed): the session starts again,
        // with a new lease.
        return Err(cfg.unreachable(format!(
            "lock {name}: a claim key of this node's lease is left over"
        )));
    }
    let rev = resp.header().map_or(0, |h| h.revision());
    let mut keys = BTreeMap::new();
    for op in resp.op_responses() {
        if let TxnOpResponse::Get(g) = op {
            let prefix = locks_prefix(cfg);
            keys.extend(
                g.kvs()
                    .iter()
                    .filter_map(|kv| key_of(&prefix, kv))
                    .map(|(_, rev, key)| (rev, key)),
            );
        }
    }
    view.insert(name.clone(), keys);
    as_of.insert(name.clone(), rev);
    mine.insert(
        name.clone(),
        Mine {
            id,
            key,
            create_rev: rev,
            mode,
            told: Told::Nothing,
        },
    );
    evaluate(ctx, &name, view, mine, lease)
}

/// After the keys of `name` changed: tell the manager what it means for
/// this node's claim, and update the locks view.
fn evaluate(
    ctx: &Ctx,
    name: &str,
    view: &HashMap<String, BTreeMap<i64, Key>>,
    mine: &mut HashMap<String, Mine>,
    lease: i64,
) -> Result<(), ClusterError> {
    let keys = view.get(name);
    ctx.set_remote(name, keys, lease);
    let Some(m) = mine.get_mut(name) else {
        return Ok(());
    };
    let Some(keys) = keys.filter(|k| k.contains_key(&m.create_rev)) else {
        // This node's key is gone while it claims: deleted by hand, or its
        // lease ended at etcd. Its holders must stop.
        return Err(ctx.cfg.unreachable(format!(
            "lock {name}: this node's claim key was deleted in etcd"
        )));
    };
    let ahead: Vec<(i64, &Key)> = keys
        .range(..m.create_rev)
        .filter(|(_, k)| blocks(m.mode, k.value.mode))
        .map(|(r, k)| (*r, k))
        .collect();
    let behind = keys
        .range(m.create_rev + 1..)
        .any(|(_, k)| k.lease != lease && blocks(m.mode, k.value.mode));
    let now = match (ahead.is_empty(), behind) {
        (false, _) => Told::Queued(ahead.iter().map(|(r, _)| *r).collect()),
        (true, false) => Told::Held,
        (true, true) => Told::Contended,
    };
    if now == m.told {
        return Ok(());
    }
    let id = m.id;
    let name = name.to_string();
    match &now {
        Told::Queued(_) => ctx.step(LockEvent::ClaimQueued {
            id,
            name,
            ahead: ahead.iter().map(|(r, k)| grant_info(*r, k)).collect(),
        }),
        Told::Held | Told::Contended => {
            if !matches!(m.told, Told::Held | Told::Contended) {
                ctx.step(LockEvent::Claimed {
                    id,
                    name: name.clone(),
                    base: claim_base(m.create_rev),
                });
            }
            if now == Told::Contended {
                ctx.step(LockEvent::Contended { id, name });
            }
        }
        Told::Nothing => {}
    }
    m.told = now;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(node: &str, mode: LockMode, lease: i64) -> Key {
        Key {
            key: format!("/c/locks/a/{lease:x}"),
            lease,
            value: ClaimValue {
                node: node.into(),
                mode,
                since: 0,
            },
        }
    }

    #[test]
    fn claims_hold_in_create_revision_order_shared_ones_together() {
        use LockMode::{Exclusive as X, Shared as S};
        // (keys by create revision, the revisions that hold)
        type Case<'a> = (&'a [(i64, LockMode)], &'a [i64]);
        let cases: &[Case] = &[
            (&[(5, X)], &[5]),
            (&[(5, X), (7, X)], &[5]),
            (&[(5, S), (7, S)], &[5, 7]),
            (&[(5, S), (7, S), (9, X), (11, S)], &[5, 7]),
            (&[(5, X), (7, S), (9, S)], &[5]),
            (&[(7, S), (9, S), (11, X)], &[7, 9]),
        ];
        for (keys, want) in cases {
            let map: BTreeMap<i64, Key> =
                keys.iter().map(|(r, m)| (*r, key("n", *m, *r))).collect();
            let got: Vec<i64> = holding(&map).iter().map(|(r, _)| *r).collect();
            assert_eq!(&got, want, "{keys:?}");
        }
    }

    #[test]
    fn keys_name_their_lock_and_lease() {
        let p = "/c/locks/";
        assert_eq!(
            parse_key(p, b"/c/locks/vol%2F1/1a2b"),
            Some(("vol/1".to_string(), 0x1a2b))
        );
        assert_eq!(parse_key(p, b"/c/locks/vol/zz"), None);
        assert_eq!(parse_key(p, b"/d/locks/vol/1"), None);
    }
}
