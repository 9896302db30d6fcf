//! The in-process lock service: the daemon's [`LockBackend`] on one
//! machine (and `clinit lockd`'s).
//!
//! The pure [`LockManager`] decides; [`LocalLocks`] feeds it events
//! (requests, closed connections, time) and performs its effects in order:
//! persisting a token reservation before any grant that uses it, answering
//! parked requests, reporting locks lost by dead holders.
//!
//! Tokens: a grant whose token is above the last *confirmed* reservation is
//! not handed out until the reservation is durable. With the SQLite state
//! store a reservation is confirmed at once; a store that answers later
//! ([`Pending::Later`]) holds those grants back until it does, and a
//! refused reservation turns them into errors and takes them back from the
//! manager ([`LockEvent::ReserveFailed`]), so a token handed to a client is
//! always covered by a stored reservation.
//!
//! The service is shared (`Arc<Mutex<_>>`) by the connection tasks and the
//! event loop, all on the daemon's one thread: a connection task serves a
//! lock request itself instead of passing it through the event loop, which
//! measured 6 µs of a 17 µs round trip. The event loop still owns time
//! ([`LockBackend::tick`]).

use crate::lock::{GrantInfo, HolderInfo, LockEffect, LockError, LockEvent, LockManager, LostWhy};
use crate::proto::{ErrorCode, ErrorReply, Reply};
use crate::store::{LockBackend, LockCall, LockChange, Pending, StateStore, StoreError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, oneshot};

/// What a lock request is about, for its error messages.
pub(crate) enum Subject {
    Lock(String),
    Lease(u64),
}

impl std::fmt::Display for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            Subject::Lock(name) => write!(f, "lock {name}"),
            Subject::Lease(lease) => write!(f, "lease {lease}"),
        }
    }
}

fn error(code: ErrorCode, message: String) -> Reply {
    Reply::Error(ErrorReply { code, message })
}

fn lock_error(e: &LockError, about: &Subject) -> Reply {
    let code = match e {
        LockError::SynchErr | LockError::NoLease => ErrorCode::SynchErr,
        LockError::BadName => ErrorCode::BadName,
        LockError::BadTtl => ErrorCode::BadRequest,
        LockError::Unreachable => ErrorCode::EtcdUnreachable,
    };
    error(code, format!("{about}: {e} [{}]", e.code()))
}

/// Holders in the words of errors and warnings: "exclusive (token 7, pid
/// 12, uid 0, what)".
/// At most this many holders are named in one message (a BUSY reply, a
/// log line); the rest are counted.
pub const HOLDERS_NAMED: usize = 20;

pub fn describe_holders(holders: &[GrantInfo]) -> String {
    let named = holders
        .iter()
        .take(HOLDERS_NAMED)
        .map(|h| {
            let mut s = format!("{} (token {}", h.mode.as_str(), h.token);
            if let Some(pid) = h.info.pid {
                s += &format!(", pid {pid}");
            }
            if let Some(uid) = h.info.uid {
                s += &format!(", uid {uid}");
            }
            if !h.info.what.is_empty() {
                s += &format!(", {}", h.info.what);
            }
            s + ")"
        })
        .collect::<Vec<_>>()
        .join(", ");
    match holders.len().saturating_sub(HOLDERS_NAMED) {
        0 => named,
        more => format!("{named} and {more} more"),
    }
}

/// The lock service of one daemon.
pub struct LocalLocks {
    pub(crate) manager: LockManager,
    store: Arc<Mutex<dyn StateStore>>,
    /// Requests whose answer is decided by a later effect, with what each
    /// is about (for error messages).
    pub(crate) pending: HashMap<u64, (oneshot::Sender<Reply>, Subject)>,
    /// The request being served by [`LocalLocks::call`], and its answer
    /// once an effect gives it (most are answered at once: then no channel
    /// is made for them).
    current: Option<(u64, Subject, Option<Reply>)>,
    next_req: u64,
    /// The last token reservation the state store confirmed.
    persisted: u64,
    /// Grants whose tokens are above `persisted`, held back until a
    /// reservation in flight is confirmed: (request, token, reply).
    deferred: Vec<(u64, u64, Reply)>,
    /// Fallback lease ids (counting down from the top) if the OS random
    /// source fails; lease ids have the top bit set, connection ids never.
    next_lease: u64,
    changes: Vec<LockChange>,
    /// This service, for the tasks that wait for a reservation.
    me: Weak<Mutex<LocalLocks>>,
    /// Told when a reservation completing later changed the next deadline.
    wake: Arc<Notify>,
    /// Cluster mode: where claims go (the lock agent), and what the agent
    /// reports back.
    cluster: Option<ClusterLink>,
    /// While a request, a closed connection or a tick is handled: when
    /// its handling began. A waiter granted meanwhile was handed the lock
    /// by it (a release, a holder gone, a lease expired).
    freeing: Option<Instant>,
    /// From that moment to the waiter's grant passed to its connection.
    handovers: crate::daemon::metrics::Histogram,
}

/// Cluster mode: a request of the lock manager to the lock agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClaimCmd {
    Claim {
        id: u64,
        name: String,
        mode: crate::lock::LockMode,
    },
    Unclaim {
        id: u64,
        name: String,
    },
}

/// Cluster mode: what ties the lock service to the lock agent.
pub struct ClusterLink {
    pub claims: tokio::sync::mpsc::UnboundedSender<ClaimCmd>,
    /// How soon a holder whose connection closed must stop (half of the
    /// margin between declaring a claim lost and its lease's expiry).
    pub grace_ms: u64,
    /// Connections to close: they held a lock whose claim was lost (their
    /// client learns it by the closed connection).
    pub kicks: Vec<u64>,
    /// Other nodes' claims, by lock name, for the locks view.
    pub remote: std::collections::BTreeMap<String, Vec<GrantInfo>>,
    /// While a lost session is stepped: each lease's creator (the lease
    /// ends in that step, and its creator's connection is closed).
    creators: HashMap<u64, u64>,
    /// Claims the lock agent can no longer take (it is gone): answered
    /// as failed within the same step.
    failed: Vec<LockEvent>,
}

impl LocalLocks {
    /// A shared lock service whose tokens start above `token_floor` (the
    /// store's reservation) and whose reservations go to `store`. `wake`
    /// is notified when something done outside a request (a reservation
    /// that completed later) may have moved the next deadline.
    pub fn shared(
        token_floor: u64,
        store: Arc<Mutex<dyn StateStore>>,
        wake: Arc<Notify>,
    ) -> Arc<Mutex<LocalLocks>> {
        Arc::new_cyclic(|me| {
            Mutex::new(LocalLocks {
                manager: LockManager::new(token_floor),
                store,
                pending: Default::default(),
                freeing: None,
                handovers: Default::default(),
                current: None,
                next_req: 1,
                persisted: token_floor,
                deferred: Vec::new(),
                next_lease: u64::MAX,
                changes: Vec::new(),
                me: me.clone(),
                wake,
                cluster: None,
            })
        })
    }

    /// Cluster mode: a shared lock service whose grants need this node's
    /// claims, asked of the lock agent through `claims`.
    pub fn clustered(
        store: Arc<Mutex<dyn StateStore>>,
        wake: Arc<Notify>,
        claims: tokio::sync::mpsc::UnboundedSender<ClaimCmd>,
        grace_ms: u64,
    ) -> Arc<Mutex<LocalLocks>> {
        let shared = LocalLocks::shared(0, store, wake);
        {
            let mut s = shared.lock().unwrap_or_else(PoisonError::into_inner);
            s.manager = LockManager::clustered();
            s.cluster = Some(ClusterLink {
                claims,
                grace_ms,
                kicks: Vec::new(),
                remote: Default::default(),
                creators: HashMap::new(),
                failed: Vec::new(),
            });
        }
        shared
    }

    /// Cluster mode: what the lock agent learnt (a claim granted, queued,
    /// failed or contended; etcd lost or back).
    pub fn cluster_event(&mut self, ev: LockEvent) {
        if ev == LockEvent::ClusterLost
            && let Some(c) = &mut self.cluster
        {
            c.creators = self.manager.lease_creators();
        }
        self.step(ev, Instant::now());
        if let Some(c) = &mut self.cluster {
            c.creators.clear();
        }
    }

    /// Cluster mode: whether a client of this node holds a lock.
    pub fn has_local_holders(&self) -> bool {
        !self
            .manager
            .status(None)
            .iter()
            .all(|c| c.holders.is_empty())
    }

    /// Cluster mode: the connections to close (see [`ClusterLink::kicks`]).
    pub fn take_kicks(&mut self) -> Vec<u64> {
        self.cluster
            .as_mut()
            .map(|c| std::mem::take(&mut c.kicks))
            .unwrap_or_default()
    }

    /// Cluster mode: the other nodes' claims on `name` now (the agent's
    /// view of etcd), or none.
    pub fn set_remote(&mut self, name: &str, claims: Vec<GrantInfo>) {
        if let Some(c) = &mut self.cluster {
            if claims.is_empty() {
                c.remote.remove(name);
            } else {
                c.remote.insert(name.to_string(), claims);
            }
        }
    }

    /// Cluster mode: forget every other node's claim (a new view follows).
    pub fn clear_remote(&mut self) {
        if let Some(c) = &mut self.cluster {
            c.remote.clear();
        }
    }

    /// Feed one event to the lock manager and perform the effects in order.
    fn step(&mut self, ev: LockEvent, now: Instant) {
        let mut next = Some(ev);
        while let Some(ev) = next.take() {
            let effects = self.manager.step(ev, now, crate::supervisor::unix_now());
            // Set once a token reservation of this batch was refused: the
            // grants after it are not handed out (their tokens could come
            // again after a restart).
            let mut unreserved: Option<String> = None;
            for eff in effects {
                match (eff, &unreserved) {
                    (LockEffect::ReserveTokens { upto }, _) => {
                        let r = self
                            .store
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .reserve_tokens(upto);
                        match r {
                            Pending::Ready(Ok(())) => self.persisted = self.persisted.max(upto),
                            Pending::Ready(Err(e)) => {
                                tracing::error!(
                                    "cannot persist the lock token reservation; no lock is granted until it can be: {e}"
                                );
                                unreserved = Some(e.to_string());
                            }
                            Pending::Later(rx) => self.await_reservation(upto, rx),
                        }
                    }
                    (LockEffect::Granted { req, name, .. }, Some(err)) => {
                        let r = not_granted(&name, err);
                        self.answer(req, r);
                    }
                    (eff, _) => self.effect(eff),
                }
            }
            if unreserved.is_some() {
                // The manager takes those grants back and gives the locks
                // to the next waiters, reserving again first.
                next = Some(LockEvent::ReserveFailed {
                    persisted: self.persisted,
                });
            } else if let Some(c) = &mut self.cluster
                && !c.failed.is_empty()
            {
                next = Some(c.failed.remove(0));
            }
        }
    }

    /// A reservation answers later: grants above the confirmed one wait
    /// for it (see the module doc).
    fn await_reservation(&mut self, upto: u64, rx: oneshot::Receiver<Result<(), StoreError>>) {
        let Some(me) = self.me.upgrade() else {
            return;
        };
        tokio::spawn(async move {
            let result = rx.await.unwrap_or(Err(StoreError::Gone));
            let wake = {
                let mut s = me.lock().unwrap_or_else(PoisonError::into_inner);
                s.reservation_done(upto, result);
                s.wake.clone()
            };
            wake.notify_one();
        });
    }

    /// A reservation that answered later has answered.
    fn reservation_done(&mut self, upto: u64, result: Result<(), StoreError>) {
        match result {
            Ok(()) => {
                self.persisted = self.persisted.max(upto);
                let persisted = self.persisted;
                let (ready, wait): (Vec<_>, Vec<_>) = std::mem::take(&mut self.deferred)
                    .into_iter()
                    .partition(|(_, token, _)| *token <= persisted);
                self.deferred = wait;
                for (req, _, reply) in ready {
                    self.answer(req, reply);
                }
            }
            Err(e) => {
                tracing::error!(
                    "cannot persist the lock token reservation; no lock is granted until it can be: {e}"
                );
                let err = e.to_string();
                for (req, _, reply) in std::mem::take(&mut self.deferred) {
                    let name = match &reply {
                        Reply::Granted { name, .. } => name.clone(),
                        _ => String::new(),
                    };
                    self.answer(req, not_granted(&name, &err));
                }
                self.step(
                    LockEvent::ReserveFailed {
                        persisted: self.persisted,
                    },
                    Instant::now(),
                );
            }
        }
    }

    fn answer(&mut self, req: u64, r: Reply) {
        match &mut self.current {
            Some((id, _, slot)) if *id == req => *slot = Some(r),
            _ => {
                if let Some((tx, _)) = self.pending.remove(&req) {
                    if let (Some(since), Reply::Granted { .. }) = (self.freeing, &r) {
                        self.handovers.observe(since.elapsed());
                    }
                    let _ = tx.send(r);
                }
            }
        }
    }

    fn effect(&mut self, eff: LockEffect) {
        match eff {
            // Persisted by `step`, which knows the rest of the batch.
            LockEffect::ReserveTokens { .. } => {}
            LockEffect::Granted {
                req,
                holder,
                name,
                mode,
                token,
            } => {
                if let Some(g) = self.manager.grant_of(&name, holder) {
                    self.changes.push(LockChange::Granted {
                        name: name.clone(),
                        mode,
                        token,
                        holder: g.info.clone(),
                    });
                }
                let reply = Reply::Granted {
                    name,
                    mode,
                    token,
                    grace_ms: self.cluster.as_ref().map(|c| c.grace_ms),
                };
                // Cluster tokens come from etcd, not from a reservation.
                if token > self.persisted && self.cluster.is_none() {
                    self.deferred.push((req, token, reply));
                } else {
                    self.answer(req, reply);
                }
            }
            LockEffect::Busy { req, name, holders } => self.answer(
                req,
                error(
                    ErrorCode::Busy,
                    format!(
                        "lock {name} is busy: held by {}",
                        describe_holders(&holders)
                    ),
                ),
            ),
            LockEffect::TimedOut { req, name, holders } => self.answer(
                req,
                error(
                    ErrorCode::Timeout,
                    format!(
                        "timed out waiting for lock {name}, held by {}",
                        describe_holders(&holders)
                    ),
                ),
            ),
            LockEffect::Released { req, .. } | LockEffect::LeaseRevoked { req, .. } => {
                self.answer(req, Reply::Ok)
            }
            LockEffect::Lost { name, grant, why } => {
                if why == LostWhy::ClaimLost
                    && let Some(c) = &mut self.cluster
                {
                    // Its client learns it by its connection closing (a
                    // lease's, by its creator's).
                    let conn = if grant.holder >> 63 == 1 {
                        c.creators.get(&grant.holder).copied()
                    } else {
                        Some(grant.holder)
                    };
                    c.kicks.extend(conn);
                }
                tracing::warn!(
                    "lock {} released because {}: holder {}",
                    crate::logsafe::Safe(&name),
                    why.as_str(),
                    crate::logsafe::Safe(&describe_holders(std::slice::from_ref(&grant)))
                );
                self.changes.push(LockChange::Lost {
                    name,
                    mode: grant.mode,
                    token: grant.token,
                    holder: grant.info,
                    why,
                });
            }
            LockEffect::LeaseGranted {
                req,
                lease,
                expires,
            }
            | LockEffect::LeaseRenewed {
                req,
                lease,
                expires,
            } => {
                let ttl_ms = expires
                    .saturating_duration_since(Instant::now())
                    .as_millis() as u64;
                self.answer(req, Reply::Lease { lease, ttl_ms })
            }
            LockEffect::Claim { id, name, mode } => {
                if let Some(c) = &mut self.cluster
                    && c.claims
                        .send(ClaimCmd::Claim {
                            id,
                            name: name.clone(),
                            mode,
                        })
                        .is_err()
                {
                    // The lock agent is gone: nothing is claimed again.
                    c.failed.push(LockEvent::ClaimFailed { id, name });
                }
            }
            LockEffect::Unclaim { id, name } => {
                if let Some(c) = &self.cluster {
                    let _ = c.claims.send(ClaimCmd::Unclaim { id, name });
                }
            }
            LockEffect::Failed { req, error: e } => {
                let reply = match &self.current {
                    Some((id, about, _)) if *id == req => lock_error(&e, about),
                    _ => match self.pending.get(&req) {
                        Some((_, about)) => lock_error(&e, about),
                        None => return,
                    },
                };
                self.answer(req, reply)
            }
        }
    }
}

fn not_granted(name: &str, err: &str) -> Reply {
    error(
        ErrorCode::Internal,
        format!("lock {name} not granted: cannot persist the lock token reservation: {err}"),
    )
}

impl LockBackend for LocalLocks {
    fn call(&mut self, conn: u64, call: LockCall, who: HolderInfo) -> Pending<Reply> {
        let now = Instant::now();
        let req = self.next_req;
        self.next_req += 1;
        // A release: what is released, for the event stream.
        let mut releasing: Option<(String, u64)> = None;
        let (ev, subject) = match call {
            LockCall::Acquire {
                name,
                mode,
                wait,
                timeout_ms,
                lease,
            } => (
                LockEvent::Acquire {
                    req,
                    holder: conn,
                    lease,
                    name: name.clone(),
                    mode,
                    wait,
                    // A timeout too far away to represent means none.
                    deadline: timeout_ms.and_then(|ms| now.checked_add(Duration::from_millis(ms))),
                    info: who,
                },
                Subject::Lock(name),
            ),
            LockCall::Release { name, lease } => {
                releasing = Some((name.clone(), lease.unwrap_or(conn)));
                (
                    LockEvent::Release {
                        req,
                        holder: conn,
                        lease,
                        name: name.clone(),
                    },
                    Subject::Lock(name),
                )
            }
            LockCall::LeaseGrant { ttl_ms } => {
                // Random ids with the top bit set (connection ids count up
                // from 1), so one client cannot guess another's lease.
                let lease = getrandom::u64().unwrap_or_else(|_| {
                    self.next_lease -= 1;
                    self.next_lease
                }) | (1 << 63);
                (
                    LockEvent::LeaseGrant {
                        req,
                        lease,
                        ttl: Duration::from_millis(ttl_ms),
                        creator: conn,
                    },
                    Subject::Lease(lease),
                )
            }
            LockCall::LeaseRenew { lease } => {
                (LockEvent::LeaseRenew { req, lease }, Subject::Lease(lease))
            }
            LockCall::LeaseRevoke { lease } => {
                (LockEvent::LeaseRevoke { req, lease }, Subject::Lease(lease))
            }
        };
        let released = releasing.and_then(|(name, holder)| {
            self.manager
                .grant_of(&name, holder)
                .map(|g| (name, g.mode, g.token, g.info.clone()))
        });
        self.current = Some((req, subject, None));
        // A release comes before the grants it makes possible.
        let release_at = self.changes.len();
        self.freeing = Some(now);
        self.step(ev, now);
        self.freeing = None;
        let Some((_, subject, reply)) = self.current.take() else {
            return Pending::Ready(error(ErrorCode::Internal, "lock request lost".into()));
        };
        if let (Some((name, mode, token, holder)), Some(Reply::Ok)) = (released, &reply) {
            self.changes.insert(
                release_at,
                LockChange::Released {
                    name,
                    mode,
                    token,
                    holder,
                },
            );
        }
        match reply {
            Some(r) => Pending::Ready(r),
            None => {
                let (tx, rx) = oneshot::channel();
                // Waiting for a lock, or for the reservation of its token.
                self.pending.insert(req, (tx, subject));
                Pending::Later(rx)
            }
        }
    }

    fn connection_closed(&mut self, conn: u64) {
        let now = Instant::now();
        self.freeing = Some(now);
        self.step(LockEvent::Gone { holder: conn }, now);
        self.freeing = None;
        self.pending.retain(|_, (tx, _)| !tx.is_closed());
    }

    fn tick(&mut self, now: Instant) {
        if self.manager.next_deadline().is_some_and(|d| d <= now) {
            self.freeing = Some(Instant::now());
            self.step(LockEvent::Tick, now);
            self.freeing = None;
        }
    }

    fn handovers(&self) -> crate::daemon::metrics::Histogram {
        self.handovers.clone()
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.manager.next_deadline()
    }

    fn status(&self, name: Option<&str>) -> Vec<crate::lock::ContainerStatus> {
        let mut local = self.manager.status(name);
        let Some(c) = &self.cluster else {
            return local;
        };
        // Other nodes' claims are holders too (their host is their node).
        let remote = c
            .remote
            .iter()
            .filter(|(n, _)| name.is_none_or(|want| want == n.as_str()));
        for (n, claims) in remote {
            match local.binary_search_by(|s| s.name.as_str().cmp(n)) {
                Ok(i) => local[i].holders.extend(claims.iter().cloned()),
                Err(i) => local.insert(
                    i,
                    crate::lock::ContainerStatus {
                        name: n.clone(),
                        holders: claims.clone(),
                        waiters: Vec::new(),
                    },
                ),
            }
        }
        local
    }

    fn is_idle(&self) -> bool {
        self.manager.is_idle()
    }

    fn held_or_waited_by(&self, who: crate::lock::Who) -> usize {
        self.manager.held_or_waited_by(who)
    }

    fn has_lease(&self, lease: u64) -> bool {
        self.manager.has_lease(lease)
    }

    fn take_changes(&mut self) -> Vec<LockChange> {
        std::mem::take(&mut self.changes)
    }

    fn shutdown(&mut self) {
        self.pending.clear();
        self.deferred.clear();
    }
}

/// Why a lock was lost, as the event stream spells it.
pub fn lost_kind(why: LostWhy) -> &'static str {
    match why {
        LostWhy::HolderGone => "holder_died",
        LostWhy::LeaseExpired => "expired",
        LostWhy::LeaseRevoked => "revoked",
        LostWhy::NotReserved => "not_reserved",
        LostWhy::ClaimLost => "claim_lost",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lock::LockMode;
    use crate::store::sqlite::StateDb;

    type LockService = LocalLocks;

    fn store(db: StateDb) -> Arc<Mutex<dyn StateStore>> {
        Arc::new(Mutex::new(db))
    }

    fn new_service(floor: u64, store: Arc<Mutex<dyn StateStore>>) -> LocalLocks {
        let shared = LocalLocks::shared(floor, store, Default::default());
        let Ok(m) = Arc::try_unwrap(shared) else {
            unreachable!("not shared yet")
        };
        m.into_inner().unwrap()
    }

    fn service(dir: &std::path::Path) -> LockService {
        new_service(1, store(StateDb::open(dir).unwrap()))
    }

    fn acquire(name: &str, lease: Option<u64>) -> LockCall {
        LockCall::Acquire {
            name: name.into(),
            mode: LockMode::Exclusive,
            wait: true,
            timeout_ms: None,
            lease,
        }
    }

    fn release(name: &str) -> LockCall {
        LockCall::Release {
            name: name.into(),
            lease: None,
        }
    }

    /// Handle `req`; the answer now, or the receiver of a parked request.
    fn handle(
        s: &mut LockService,
        conn: u64,
        req: LockCall,
    ) -> Result<Reply, oneshot::Receiver<Reply>> {
        let who = HolderInfo {
            pid: Some(1),
            uid: Some(0),
            identity: None,
            host: "host".into(),
            what: "".into(),
        };
        match s.call(conn, req, who) {
            Pending::Ready(r) => Ok(r),
            Pending::Later(rx) => Err(rx),
        }
    }

    fn code(r: &Reply) -> Option<ErrorCode> {
        match r {
            Reply::Error(e) => Some(e.code),
            _ => None,
        }
    }

    #[test]
    fn messages_name_at_most_twenty_holders_and_count_the_rest() {
        let holder = |token: u64| crate::lock::GrantInfo {
            holder: token,
            mode: crate::lock::LockMode::Shared,
            token,
            since: 0,
            info: crate::lock::HolderInfo {
                identity: None,
                pid: Some(7),
                uid: Some(0),
                host: "h".into(),
                what: "w".into(),
            },
        };
        for (n, named, tail) in [
            (1, 1, ""),
            (20, 20, ""),
            (21, 20, " and 1 more"),
            (500, 20, " and 480 more"),
        ] {
            let all: Vec<_> = (1..=n).map(holder).collect();
            let text = describe_holders(&all);
            assert_eq!(text.matches("shared (token").count(), named, "{n}");
            assert!(text.ends_with(&format!("uid 0, w){tail}")), "{n}: {text}");
        }
    }

    #[test]
    fn answers_at_once_or_parks_and_answers_later() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = service(dir.path());
        // A grant, a release and a protocol error are answered at once.
        assert!(matches!(
            handle(&mut s, 1, acquire("a", None)),
            Ok(Reply::Granted { .. })
        ));
        let mut waiting = handle(&mut s, 2, acquire("a", None)).expect_err("a is held");
        assert!(waiting.try_recv().is_err(), "no answer yet");
        assert_eq!(s.pending.len(), 1);
        // Releasing hands the lock to the parked request: its answer goes
        // through its channel; the release's own answer comes back at once.
        assert!(matches!(handle(&mut s, 1, release("a")), Ok(Reply::Ok)));
        assert!(matches!(waiting.try_recv(), Ok(Reply::Granted { .. })));
        assert!(s.pending.is_empty());
        let again = handle(&mut s, 1, release("a")).expect("answered at once");
        assert_eq!(code(&again), Some(ErrorCode::SynchErr));
        match again {
            Reply::Error(e) => assert!(e.message.starts_with("lock a: "), "{}", e.message),
            _ => unreachable!(),
        }
    }

    #[test]
    fn a_parked_request_that_fails_later_names_its_lock() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = service(dir.path());
        let lease = match handle(&mut s, 1, LockCall::LeaseGrant { ttl_ms: 60_000 }) {
            Ok(Reply::Lease { lease, .. }) => lease,
            other => panic!("{other:?}"),
        };
        assert!(matches!(
            handle(&mut s, 2, acquire("vol", None)),
            Ok(Reply::Granted { .. })
        ));
        let mut waiting = handle(&mut s, 1, acquire("vol", Some(lease))).expect_err("held");
        // The lease ends while its request waits: the request fails then.
        assert!(matches!(
            handle(&mut s, 1, LockCall::LeaseRevoke { lease }),
            Ok(Reply::Ok)
        ));
        match waiting.try_recv() {
            Ok(Reply::Error(e)) => {
                assert_eq!(e.code, ErrorCode::SynchErr);
                assert!(e.message.starts_with("lock vol: "), "{}", e.message);
            }
            other => panic!("{other:?}"),
        }
        assert!(s.pending.is_empty());
    }

    #[test]
    fn no_lock_is_granted_with_a_token_that_could_not_be_reserved() {
        let dir = tempfile::tempdir().unwrap();
        // The store refuses reservations above i64::MAX: the first 10,000
        // tokens are reserved, the next reservation fails.
        let floor = i64::MAX as u64 - 15_000;
        let db = StateDb::open(dir.path()).unwrap();
        let mut s = new_service(floor, store(db));
        for _ in 0..9_999 {
            assert!(matches!(
                handle(&mut s, 1, acquire("a", None)),
                Ok(Reply::Granted { .. })
            ));
            assert!(matches!(handle(&mut s, 1, release("a")), Ok(Reply::Ok)));
        }
        match handle(&mut s, 1, acquire("a", None)) {
            Ok(Reply::Granted { token, .. }) => assert_eq!(token, floor + 10_000),
            other => panic!("{other:?}"),
        }
        let mut w2 = handle(&mut s, 2, acquire("a", None)).expect_err("held");
        let mut w3 = handle(&mut s, 3, acquire("a", None)).expect_err("held");
        // The release hands "a" on, which needs a new reservation: it fails,
        // so neither waiter gets the lock; both hear why.
        assert!(matches!(handle(&mut s, 1, release("a")), Ok(Reply::Ok)));
        for w in [&mut w2, &mut w3] {
            match w.try_recv() {
                Ok(Reply::Error(e)) => {
                    assert_eq!(e.code, ErrorCode::Internal);
                    assert!(
                        e.message.starts_with(
                            "lock a not granted: cannot persist the lock token reservation"
                        ),
                        "{}",
                        e.message
                    );
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(s.manager.status(None).is_empty(), "nobody holds or waits");
        assert!(s.pending.is_empty());
        // And a new request is refused the same way, answered at once.
        let r = handle(&mut s, 4, acquire("b", None)).expect("answered at once");
        assert_eq!(code(&r), Some(ErrorCode::Internal));
        assert!(s.manager.status(None).is_empty());
    }

    #[test]
    fn a_closed_connection_leaves_no_parked_reply_behind() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = service(dir.path());
        assert!(handle(&mut s, 1, acquire("a", None)).is_ok());
        let waiting = handle(&mut s, 2, acquire("a", None)).expect_err("held");
        assert_eq!(s.pending.len(), 1);
        // The connection task ends (dropping its receiver), then the
        // connection's locks and waits are dropped.
        drop(waiting);
        s.connection_closed(2);
        assert!(s.pending.is_empty());
        // Its place in the queue is gone too: a release grants no one.
        assert!(matches!(handle(&mut s, 1, release("a")), Ok(Reply::Ok)));
        assert!(s.manager.status(Some("a")).is_empty());
    }

    type Answer = (u64, oneshot::Sender<Result<(), StoreError>>);

    /// A state store whose token reservations answer when the test says.
    struct SlowTokens {
        floor: u64,
        answers: Arc<Mutex<Vec<Answer>>>,
    }

    impl StateStore for SlowTokens {
        fn location(&self) -> String {
            "slow".into()
        }
        fn load(&mut self) -> Result<crate::store::Persisted, StoreError> {
            Ok(Default::default())
        }
        fn disabled_notes(&mut self) -> Result<Vec<crate::store::DisabledNote>, StoreError> {
            Ok(vec![])
        }
        fn apply(&mut self, _: Vec<crate::store::StoreOp>) -> Pending<Result<(), StoreError>> {
            Pending::Ready(Ok(()))
        }
        fn token_floor(&mut self) -> Result<u64, StoreError> {
            Ok(self.floor)
        }
        fn reserve_tokens(&mut self, upto: u64) -> Pending<Result<(), StoreError>> {
            let (tx, rx) = oneshot::channel();
            self.answers.lock().unwrap().push((upto, tx));
            Pending::Later(rx)
        }
    }

    /// The tasks that wait for reservations run on this runtime; each
    /// `settle` lets them finish.
    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    fn settle(rt: &tokio::runtime::Runtime) {
        rt.block_on(async {
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
        });
    }

    #[test]
    fn grants_wait_for_a_reservation_that_answers_later() {
        let rt = runtime();
        let _g = rt.enter();
        let answers = Arc::new(Mutex::new(Vec::new()));
        let store: Arc<Mutex<dyn StateStore>> = Arc::new(Mutex::new(SlowTokens {
            floor: 5,
            answers: answers.clone(),
        }));
        let shared = LocalLocks::shared(5, store, Default::default());
        let call = |conn, c| {
            let who = HolderInfo::default();
            shared.lock().unwrap().call(conn, c, who)
        };
        // The first grant needs a reservation: it is held back.
        let Pending::Later(mut first) = call(1, acquire("a", None)) else {
            panic!("answered before the reservation");
        };
        assert_eq!(answers.lock().unwrap().len(), 1);
        // Other requests are served meanwhile: a second lock waits for a
        // token too, a release of nothing fails at once.
        let Pending::Later(mut second) = call(2, acquire("b", None)) else {
            panic!("answered before the reservation");
        };
        assert!(matches!(
            call(3, release("c")),
            Pending::Ready(Reply::Error(ErrorReply {
                code: ErrorCode::SynchErr,
                ..
            }))
        ));
        settle(&rt);
        assert!(first.try_recv().is_err() && second.try_recv().is_err());
        // The store confirms: both grants go out, tokens 6 and 7.
        let (upto, tx) = answers.lock().unwrap().pop().unwrap();
        assert_eq!(upto, 5 + crate::lock::TOKEN_RESERVE);
        tx.send(Ok(())).unwrap();
        settle(&rt);
        assert!(matches!(
            first.try_recv(),
            Ok(Reply::Granted { token: 6, .. })
        ));
        assert!(matches!(
            second.try_recv(),
            Ok(Reply::Granted { token: 7, .. })
        ));
        // Covered now: the next grant is answered at once.
        assert!(matches!(
            call(4, acquire("d", None)),
            Pending::Ready(Reply::Granted { token: 8, .. })
        ));
    }

    #[test]
    fn a_reservation_refused_later_takes_its_grants_back() {
        let rt = runtime();
        let _g = rt.enter();
        let answers = Arc::new(Mutex::new(Vec::new()));
        let store: Arc<Mutex<dyn StateStore>> = Arc::new(Mutex::new(SlowTokens {
            floor: 0,
            answers: answers.clone(),
        }));
        let shared = LocalLocks::shared(0, store, Default::default());
        let Pending::Later(mut first) =
            shared
                .lock()
                .unwrap()
                .call(1, acquire("a", None), HolderInfo::default())
        else {
            panic!("answered before the reservation");
        };
        let (_, tx) = answers.lock().unwrap().pop().unwrap();
        tx.send(Err(StoreError::Gone)).unwrap();
        settle(&rt);
        match first.try_recv() {
            Ok(Reply::Error(e)) => {
                assert_eq!(e.code, ErrorCode::Internal);
                assert!(e.message.starts_with("lock a not granted"), "{}", e.message);
            }
            other => panic!("{other:?}"),
        }
        let s = shared.lock().unwrap();
        assert!(
            s.manager.status(None).is_empty(),
            "the grant was taken back"
        );
        assert!(
            s.changes.iter().any(|c| matches!(
                c,
                LockChange::Lost {
                    why: LostWhy::NotReserved,
                    ..
                }
            )),
            "reported as lost"
        );
    }
}
