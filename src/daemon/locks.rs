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
use crate::lock::{LockEffect, LockError, LockEvent, LockManager, LostWhy};
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
    pub pending: std::collections::HashMap<u64, (oneshot::Sender<Reply>, String)>,
    pub next_req: u64,
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
            next_req: 1,
            next_lease: u64::MAX,
        }
    }
}

fn lock_error(e: &LockError, about: &str) -> Reply {
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
    /// Handle a lock or record request from connection `conn`; the reply is
    /// sent now or parked until an effect decides it.
    pub(super) fn handle_lock(
        &mut self,
        conn: u64,
        req: Request,
        peer: &Peer,
        reply: oneshot::Sender<Reply>,
    ) {
        let now = Instant::now();
        let req_id = self.next_req;
        self.next_req += 1;
        let ev = match req {
            Request::LockAcquire {
                name,
                mode,
                wait,
                timeout_ms,
                lease,
                what,
            } => LockEvent::Acquire {
                req: req_id,
                holder: conn,
                lease,
                name,
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
            Request::LockRelease { name, lease } => LockEvent::Release {
                req: req_id,
                holder: conn,
                lease,
                name,
            },
            Request::LeaseGrant { ttl_ms } => {
                // Random ids with the top bit set (connection ids count up
                // from 1), so one client cannot guess another's lease.
                let lease = getrandom::u64().unwrap_or_else(|_| {
                    self.next_lease -= 1;
                    self.next_lease
                }) | (1 << 63);
                LockEvent::LeaseGrant {
                    req: req_id,
                    lease,
                    ttl: Duration::from_millis(ttl_ms),
                    creator: conn,
                }
            }
            Request::LeaseRenew { lease } => LockEvent::LeaseRenew { req: req_id, lease },
            Request::LeaseRevoke { lease } => LockEvent::LeaseRevoke { req: req_id, lease },
            Request::Locks { name } => {
                let containers = self.manager.status(name.as_deref());
                let _ = reply.send(Reply::Locks { containers });
                return;
            }
            Request::Record(op) => {
                let _ = reply.send(self.record(op));
                return;
            }
            _ => {
                let _ = reply.send(error(ErrorCode::Internal, "not a lock request".into()));
                return;
            }
        };
        let about = match &ev {
            LockEvent::Acquire { name, .. } | LockEvent::Release { name, .. } => {
                format!("lock {name}")
            }
            LockEvent::LeaseGrant { lease, .. }
            | LockEvent::LeaseRenew { lease, .. }
            | LockEvent::LeaseRevoke { lease, .. } => format!("lease {lease}"),
            _ => String::new(),
        };
        self.pending.insert(req_id, (reply, about));
        self.lock_step(ev);
    }

    /// A connection closed: its locks are released and its waits cancelled.
    pub(super) fn connection_closed(&mut self, conn: u64) {
        self.lock_step(LockEvent::Gone { holder: conn });
    }

    /// Feed one event to the lock manager and perform the effects in order.
    pub(super) fn lock_step(&mut self, ev: LockEvent) {
        let effects = self
            .manager
            .step(ev, Instant::now(), crate::supervisor::unix_now());
        for eff in effects {
            self.lock_effect(eff);
        }
    }

    fn answer(&mut self, req: u64, r: Reply) {
        if let Some((tx, _)) = self.pending.remove(&req) {
            let _ = tx.send(r);
        }
    }

    fn lock_effect(&mut self, eff: LockEffect) {
        match eff {
            LockEffect::ReserveTokens { upto } => {
                if let Err(e) = self
                    .db
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .reserve_tokens(upto)
                {
                    // Grants go on; a token could repeat only if the daemon
                    // also restarts before the next successful reservation.
                    tracing::error!("cannot persist the lock token reservation: {e}");
                }
            }
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
                let why = match why {
                    LostWhy::HolderGone => "its holder's connection closed",
                    LostWhy::LeaseExpired => "its lease expired",
                    LostWhy::LeaseRevoked => "its lease was revoked",
                };
                tracing::warn!(
                    "lock {name} released because {why}: holder {}",
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
                let about = self
                    .pending
                    .get(&req)
                    .map(|p| p.1.clone())
                    .unwrap_or_default();
                self.answer(req, lock_error(&e, &about))
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
