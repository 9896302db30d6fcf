//! Lock and lease requests, served in the connection task by the lock
//! service behind [`crate::store::LockBackend`], and the locks view.

use crate::daemon::conn::Shared;
use crate::daemon::conn::error;
use crate::daemon::policy::Peer;
use crate::lock::HolderInfo;
use crate::proto::ErrorCode;
use crate::proto::Reply;
use crate::store::{LockCall, Pending};
use std::time::Duration;

/// One lock request of connection `conn`; `what` describes the holder.
pub(crate) fn call(
    shared: &Shared,
    conn: u64,
    peer: &Peer,
    call: LockCall,
    what: String,
) -> Pending<Reply> {
    if let LockCall::LeaseGrant { ttl_ms } = &call
        && Duration::from_millis(*ttl_ms) > shared.limits.lease_ttl_max
    {
        return Pending::Ready(error(
            ErrorCode::Limit,
            format!(
                "a lease TTL of {} s is over lease_ttl_max ({} s); renew a shorter lease instead",
                *ttl_ms as f64 / 1000.0,
                shared.limits.lease_ttl_max.as_secs_f64()
            ),
        ));
    }
    // The peer's key (a string) is made only where it is used: not on
    // every lock call.
    let limited = shared.limited(peer);
    if let Some(who) = limited {
        match &call {
            LockCall::Acquire { name, .. } => {
                let n = shared.locks().held_or_waited_by(who);
                if n >= shared.limits.peer_locks_max {
                    return Pending::Ready(error(
                        ErrorCode::Limit,
                        format!(
                            "lock {}: {} holds or waits for {n} locks, the most peer_locks_max allows",
                            crate::logsafe::Safe(name),
                            peer.key()
                        ),
                    ));
                }
            }
            LockCall::LeaseGrant { .. } => {
                let live = {
                    let locks = shared.locks();
                    let mut m = shared
                        .peer_leases
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    let mine = m.entry(peer.key()).or_default();
                    mine.retain(|&l| locks.has_lease(l));
                    mine.len()
                };
                if live >= shared.limits.peer_leases_max {
                    return Pending::Ready(error(
                        ErrorCode::Limit,
                        format!(
                            "{} has {live} live leases, the most peer_leases_max allows",
                            peer.key()
                        ),
                    ));
                }
            }
            _ => {}
        }
    }
    let local = peer.local();
    let who = HolderInfo {
        pid: local.and_then(|u| u.pid),
        uid: local.map(|u| u.uid),
        identity: match peer {
            Peer::Certificate { subject } => Some(subject.as_str().into()),
            Peer::Local(_) => None,
        },
        host: shared.host.clone(),
        // A remote holder has no pid or uid here: its identity says who.
        what: match peer {
            Peer::Certificate { subject } => {
                crate::lock::cut_what(format!("[certificate {subject}] {what}")).into()
            }
            Peer::Local(_) => crate::lock::cut_what(what).into(),
        },
    };
    let (reply, changes) = {
        let mut locks = shared.locks();
        let before = locks.next_deadline();
        let reply = locks.call(conn, call, who);
        // The event loop keeps time: wake it when the next deadline moved
        // earlier.
        if locks
            .next_deadline()
            .is_some_and(|a| before.is_none_or(|b| a < b))
        {
            shared.deadline_changed.notify_one();
        }
        (reply, locks.take_changes())
    };
    if !changes.is_empty() {
        shared.events.push_all(changes.into_iter().map(Into::into));
    }
    if let (Some(_), Pending::Ready(Reply::Lease { lease, .. })) = (limited, &reply) {
        shared
            .peer_leases
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(peer.key())
            .or_default()
            .push(*lease);
    }
    reply
}

/// Holders and waiters of one lock or of all, from the lock after `after`,
/// in pages of about [`crate::proto::STATUS_PAGE`] bytes (at least one lock
/// a page).
pub(crate) fn list(shared: &Shared, name: Option<&str>, after: Option<&str>) -> Reply {
    let all = shared.locks().status(name);
    let mut containers = Vec::new();
    let mut used = 0;
    let mut more = None;
    for c in all
        .into_iter()
        .filter(|c| after.is_none_or(|a| c.name.as_str() > a))
    {
        let size = crate::proto::json_len(&c);
        if used + size > crate::proto::STATUS_PAGE && !containers.is_empty() {
            more = containers
                .last()
                .map(|l: &crate::lock::ContainerStatus| l.name.clone());
            break;
        }
        used += size;
        containers.push(c);
    }
    Reply::Locks { containers, more }
}
