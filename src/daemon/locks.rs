//! The lock service and the record store, as served by the daemon (and by
//! `clinit lockd`, the same daemon without a cltab).
//!
//! The pure [`LockManager`] decides; [`LockService`] feeds it events
//! (requests, closed connections, time) and performs its effects in order:
//! persisting a token reservation before any grant that uses it, answering
//! parked requests, logging locks lost by dead holders. Record operations
//! are one SQLite transaction each, committed before the reply.
//!
//! The service is shared (`Arc<Mutex<_>>`) by the connection tasks and the
//! event loop, all on the daemon's one thread: a connection task handles a
//! lock request itself instead of passing it through the event loop, which
//! measured 6 µs of a 17 µs round trip. The event loop still owns time
//! (`Tick`) and is told when a request made the next deadline earlier.

use super::{auth::Peer, error};
use crate::lock::{LockEffect, LockError, LockEvent, LockManager};
use crate::proto::{ErrorCode, RecordOp, RecordWire, Reply, Request};
use crate::records::{self, RecordError};
use crate::store::sqlite::StateDb;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// The lock service and record store of one daemon.
pub(super) struct LockService {
    pub manager: LockManager,
    pub db: Arc<Mutex<StateDb>>,
    pub host: String,
    /// Requests whose answer is decided by a later effect.
    /// With the container (or lease) each is about, for error messages.
    pub pending: std::collections::HashMap<u64, (oneshot::Sender<Reply>, Subject)>,
    /// The request being handled by [`LockService::handle_lock`], and its
    /// answer once an effect gives it (most are answered at once: then no
    /// channel is made for them).
    current: Option<(u64, Subject, Option<Reply>)>,
    pub next_req: u64,
    /// The last token reservation persisted in the state store.
    persisted: u64,
    /// Fallback lease ids (counting down from the top) if the OS random
    /// source fails; lease ids have the top bit set, connection ids never.
    pub next_lease: u64,
}

impl LockService {
    pub fn new(token_floor: u64, db: Arc<Mutex<StateDb>>, host: String) -> LockService {
        LockService {
            manager: LockManager::new(token_floor),
            db,
            host,
            pending: Default::default(),
            current: None,
            persisted: token_floor,
            next_req: 1,
            next_lease: u64::MAX,
        }
    }
}

/// What a lock request is about, for its error messages.
pub(super) enum Subject {
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

fn lock_error(e: &LockError, about: &Subject) -> Reply {
    let code = match e {
        LockError::SynchErr | LockError::NoLease => ErrorCode::SynchErr,
        LockError::BadName => ErrorCode::BadName,
        LockError::BadTtl => ErrorCode::BadRequest,
    };
    error(code, format!("{about}: {e} [{}]", e.code()))
}

fn record_error(e: &RecordError) -> Reply {
    let code = match e {
        RecordError::Exists { .. } => ErrorCode::Exists,
        RecordError::NoEnt { .. } => ErrorCode::Noent,
        RecordError::Collision { .. } => ErrorCode::Collision,
        RecordError::BadName { .. } => ErrorCode::BadName,
        RecordError::TooLarge { .. } => ErrorCode::TooLarge,
        RecordError::Store(_) => ErrorCode::Internal,
    };
    error(code, e.to_string())
}

fn describe_holders(holders: &[crate::lock::GrantInfo]) -> String {
    holders
        .iter()
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
        .join(", ")
}

impl LockService {
    /// Handle a lock or record request from connection `conn`. Returns the
    /// reply when it is decided at once (a grant, a release, an error);
    /// otherwise the request is parked with the channel that `park` gives,
    /// to be answered by a later effect.
    pub(super) fn handle_lock(
        &mut self,
        conn: u64,
        req: Request,
        peer: &Peer,
        park: impl FnOnce() -> oneshot::Sender<Reply>,
    ) -> Option<Reply> {
        let now = Instant::now();
        let req_id = self.next_req;
        self.next_req += 1;
        let (ev, subject) = match req {
            Request::LockAcquire {
                name,
                mode,
                wait,
                timeout_ms,
                lease,
                what,
            } => (
                LockEvent::Acquire {
                    req: req_id,
                    holder: conn,
                    lease,
                    name: name.clone(),
                    mode,
                    wait,
                    // A timeout too far away to represent means none.
                    deadline: timeout_ms.and_then(|ms| now.checked_add(Duration::from_millis(ms))),
                    info: crate::lock::HolderInfo {
                        pid: peer.pid,
                        uid: Some(peer.uid),
                        host: self.host.clone(),
                        what,
                    },
                },
                Subject::Lock(name),
            ),
            Request::LockRelease { name, lease } => (
                LockEvent::Release {
                    req: req_id,
                    holder: conn,
                    lease,
                    name: name.clone(),
                },
                Subject::Lock(name),
            ),
            Request::LeaseGrant { ttl_ms } => {
                // Random ids with the top bit set (connection ids count up
                // from 1), so one client cannot guess another's lease.
                let lease = getrandom::u64().unwrap_or_else(|_| {
                    self.next_lease -= 1;
                    self.next_lease
                }) | (1 << 63);
                (
                    LockEvent::LeaseGrant {
                        req: req_id,
                        lease,
                        ttl: Duration::from_millis(ttl_ms),
                        creator: conn,
                    },
                    Subject::Lease(lease),
                )
            }
            Request::LeaseRenew { lease } => (
                LockEvent::LeaseRenew { req: req_id, lease },
                Subject::Lease(lease),
            ),
            Request::LeaseRevoke { lease } => (
                LockEvent::LeaseRevoke { req: req_id, lease },
                Subject::Lease(lease),
            ),
            Request::Locks { name } => {
                let containers = self.manager.status(name.as_deref());
                return Some(Reply::Locks { containers });
            }
            Request::Record(op) => return Some(self.record(op)),
            _ => return Some(error(ErrorCode::Internal, "not a lock request".into())),
        };
        self.current = Some((req_id, subject, None));
        self.lock_step_at(ev, now);
        let (_, subject, reply) = self.current.take().expect("set above");
        if reply.is_none() {
            self.pending.insert(req_id, (park(), subject));
        }
        reply
    }

    /// A connection closed: its locks are released and its waits cancelled
    /// (their parked replies, whose receivers are gone, are dropped).
    pub(super) fn connection_closed(&mut self, conn: u64) {
        self.lock_step(LockEvent::Gone { holder: conn });
        self.pending.retain(|_, (tx, _)| !tx.is_closed());
    }

    /// Feed one event to the lock manager and perform the effects in order.
    pub(super) fn lock_step(&mut self, ev: LockEvent) {
        self.lock_step_at(ev, Instant::now());
    }

    fn lock_step_at(&mut self, ev: LockEvent, now: Instant) {
        let mut next = Some(ev);
        while let Some(ev) = next.take() {
            let effects = self.manager.step(ev, now, crate::supervisor::unix_now());
            // Set once a token reservation of this batch could not be
            // persisted: the grants after it are not handed out (their
            // tokens could come again after a restart).
            let mut unreserved: Option<String> = None;
            for eff in effects {
                match (eff, &unreserved) {
                    (LockEffect::ReserveTokens { upto }, _) => {
                        let r = self
                            .db
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .reserve_tokens(upto);
                        match r {
                            Ok(()) if unreserved.is_none() => self.persisted = upto,
                            Ok(()) => {}
                            Err(e) => {
                                tracing::error!(
                                    "cannot persist the lock token reservation; no lock is granted until it can be: {e}"
                                );
                                unreserved = Some(e.to_string());
                            }
                        }
                    }
                    (LockEffect::Granted { req, name, .. }, Some(err)) => {
                        let r = error(
                            ErrorCode::Internal,
                            format!(
                                "lock {name} not granted: cannot persist the lock token reservation: {err}"
                            ),
                        );
                        self.answer(req, r);
                    }
                    (eff, _) => self.lock_effect(eff),
                }
            }
            if unreserved.is_some() {
                // The manager takes those grants back and gives the locks
                // to the next waiters, reserving again first.
                next = Some(LockEvent::ReserveFailed {
                    persisted: self.persisted,
                });
            }
        }
    }

    fn answer(&mut self, req: u64, r: Reply) {
        match &mut self.current {
            Some((id, _, slot)) if *id == req => *slot = Some(r),
            _ => {
                if let Some((tx, _)) = self.pending.remove(&req) {
                    let _ = tx.send(r);
                }
            }
        }
    }

    fn lock_effect(&mut self, eff: LockEffect) {
        match eff {
            // Persisted by lock_step_at, which knows the rest of the batch.
            LockEffect::ReserveTokens { .. } => {}
            LockEffect::Granted {
                req,
                name,
                mode,
                token,
                ..
            } => self.answer(req, Reply::Granted { name, mode, token }),
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
                tracing::warn!(
                    "lock {name} released because {}: holder {}",
                    why.as_str(),
                    describe_holders(std::slice::from_ref(&grant))
                );
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

    fn record(&mut self, op: RecordOp) -> Reply {
        let decode = |v: &str| {
            B64.decode(v)
                .map_err(|e| error(ErrorCode::BadRequest, format!("value is not base64: {e}")))
        };
        let wire = |r: records::Record| RecordWire {
            key: r.key,
            value_b64: B64.encode(&r.value),
            sig: r.sig,
        };
        let mut db = self.db.lock().unwrap_or_else(PoisonError::into_inner);
        let result = match op {
            RecordOp::Add {
                container,
                key,
                value_b64,
            } => match decode(&value_b64) {
                Ok(v) => {
                    records::add(&mut db, &container, &key, &v).map(|sig| Reply::Signature { sig })
                }
                Err(r) => return r,
            },
            RecordOp::Get { container, key } => {
                records::lookup(&db, &container, &key).map(|r| Reply::Record { record: wire(r) })
            }
            RecordOp::Modify {
                container,
                key,
                value_b64,
                sig,
            } => match decode(&value_b64) {
                Ok(v) => records::modify(&mut db, &container, &key, &v, sig)
                    .map(|sig| Reply::Signature { sig }),
                Err(r) => return r,
            },
            RecordOp::Delete {
                container,
                key,
                sig,
            } => records::delete(&mut db, &container, &key, sig).map(|()| Reply::Ok),
            RecordOp::List { container } => match records::list(&db, &container) {
                Ok(rs) => {
                    // The reply must fit one frame (base64 grows values by 4/3).
                    let size: usize = rs
                        .iter()
                        .map(|r| r.key.len() + r.value.len() * 4 / 3 + 64)
                        .sum();
                    if size > crate::proto::MAX_FRAME - 4096 {
                        return error(
                            ErrorCode::TooLarge,
                            format!(
                                "container {container} holds about {size} bytes of records, more than one reply carries ({} bytes); get its records one by one",
                                crate::proto::MAX_FRAME
                            ),
                        );
                    }
                    Ok(Reply::Records {
                        records: rs.into_iter().map(wire).collect(),
                    })
                }
                Err(e) => Err(e),
            },
        };
        result.unwrap_or_else(|e| record_error(&e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lock::LockMode;

    fn service(dir: &std::path::Path) -> LockService {
        let db = StateDb::open(dir).unwrap();
        LockService::new(1, Arc::new(Mutex::new(db)), "host".into())
    }

    const PEER: Peer = Peer {
        uid: 0,
        pid: Some(1),
    };

    fn acquire(name: &str, lease: Option<u64>) -> Request {
        Request::LockAcquire {
            name: name.into(),
            mode: LockMode::Exclusive,
            wait: true,
            timeout_ms: None,
            lease,
            what: String::new(),
        }
    }

    fn release(name: &str) -> Request {
        Request::LockRelease {
            name: name.into(),
            lease: None,
        }
    }

    /// Handle `req`; the answer now, or the receiver of a parked request.
    fn handle(
        s: &mut LockService,
        conn: u64,
        req: Request,
    ) -> Result<Reply, oneshot::Receiver<Reply>> {
        let mut parked = None;
        match s.handle_lock(conn, req, &PEER, || {
            let (tx, rx) = oneshot::channel();
            parked = Some(rx);
            tx
        }) {
            Some(r) => {
                assert!(parked.is_none(), "answered and parked");
                Ok(r)
            }
            None => Err(parked.expect("parked when not answered")),
        }
    }

    fn code(r: &Reply) -> Option<ErrorCode> {
        match r {
            Reply::Error(e) => Some(e.code),
            _ => None,
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
        let lease = match handle(&mut s, 1, Request::LeaseGrant { ttl_ms: 60_000 }) {
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
            handle(&mut s, 1, Request::LeaseRevoke { lease }),
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
        let mut s = LockService::new(floor, Arc::new(Mutex::new(db)), "host".into());
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
}
