//! The lock manager: named shared/exclusive locks with fencing tokens and
//! leases, in the manner of Solaris `dsvclockd` (pure: no I/O, no clock).
//!
//! Vocabulary: a **container** is a lock's name ([`validate_name`]); a
//! **holder** is an id the daemon allocates for a client connection or for a
//! lease; a **token** is the fencing number of a grant.
//!
//! The daemon owns connections and persistence. It feeds [`LockEvent`]s to
//! [`LockManager::step`] and performs the returned [`LockEffect`]s in order.
//! All grants happen inside `step`, so there is no window in which a new
//! arrival could barge in ahead of a waiter.
//!
//! Ownership: a lock belongs to its holder id. A connection acquires for
//! itself, or for a lease (`lease: Some(l)`): then the lease holds the lock
//! and the connection only waits on its behalf. A lease records the
//! connection that created it but outlives it: it ends only by expiry or by
//! revocation. Then its locks are [`LockEffect::Lost`] ([`LostWhy`] says
//! which) and requests waiting for it fail with [`LockError::NoLease`]. A
//! client that reconnects keeps its locks by renewing the lease in time.
//!
//! Invariants (checked after every step in the tests):
//! - A container's holders are either any number of shared holders or one
//!   exclusive holder.
//! - Grants are FIFO per container: a request is granted at once only if
//!   nobody waits in its container and it is compatible with the holders;
//!   after every step the head of a non-empty queue is incompatible with the
//!   holders (so a container with waiters has holders). A shared request
//!   never overtakes a waiting exclusive one.
//! - Every grant takes the next number of one global token counter, so tokens
//!   strictly increase per container and are never reused: a token above the
//!   persisted reservation is only handed out after a
//!   [`LockEffect::ReserveTokens`] earlier in the same batch.
//! - A holder holds or waits for a container at most once.
//! - Containers without holders and waiters are not kept.
//! - Every `step` first expires what is due at `now` (waiter deadlines and
//!   lease expiries, in time order), so results do not depend on how late a
//!   [`LockEvent::Tick`] arrives: a lease cannot be renewed after its expiry
//!   instant, and a lock released by an expiry before a waiter's deadline is
//!   granted to that waiter.

pub mod service;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

/// A lock owner: a client connection or a lease. The daemon allocates these
/// ids from one space, so a connection id never equals a lease id.
pub type Holder = u64;
/// A request id, chosen by the daemon and echoed in the effects that answer
/// the request. The manager does not need them to be unique.
pub type ReqId = u64;

/// Longest container name, in bytes.
pub const MAX_NAME_LEN: usize = 255;

/// The longest holder description kept (`what` of an acquire), in bytes;
/// a longer one is cut there (at a character boundary), so that what one
/// client says of itself cannot make the locks view large for everyone.
pub const MAX_WHAT_LEN: usize = 256;

/// `what`, cut to [`MAX_WHAT_LEN`] bytes.
pub fn cut_what(mut what: String) -> String {
    if what.len() > MAX_WHAT_LEN {
        let mut end = MAX_WHAT_LEN;
        while !what.is_char_boundary(end) {
            end -= 1;
        }
        what.truncate(end);
    }
    what
}
/// How many tokens one [`LockEffect::ReserveTokens`] reserves beyond the
/// last token handed out.
pub const TOKEN_RESERVE: u64 = 10_000;

/// How a lock is held: shared locks are compatible with each other, an
/// exclusive lock with nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LockMode {
    Shared,
    Exclusive,
}

impl LockMode {
    /// Whether a request of this mode may join holders of mode `held`.
    pub fn compatible(self, held: LockMode) -> bool {
        self == LockMode::Shared && held == LockMode::Shared
    }

    pub fn as_str(self) -> &'static str {
        match self {
            LockMode::Shared => "shared",
            LockMode::Exclusive => "exclusive",
        }
    }
}

/// Who a holder is, for listings and warnings. The strings are shared:
/// every grant and every lock event carries a copy of its holder's.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HolderInfo {
    pub pid: Option<i32>,
    pub uid: Option<u32>,
    /// The certificate identity of a remote holder (which has no uid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<std::sync::Arc<str>>,
    pub host: std::sync::Arc<str>,
    pub what: std::sync::Arc<str>,
}

/// Whose locks [`LockManager::held_or_waited_by`] counts: a local user's
/// or a certificate identity's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Who<'a> {
    Uid(u32),
    Certificate(&'a str),
}

/// One granted lock.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GrantInfo {
    pub holder: Holder,
    pub mode: LockMode,
    /// The fencing token: unique among all grants ever made.
    pub token: u64,
    /// When it was granted (Unix seconds).
    pub since: i64,
    pub info: HolderInfo,
}

/// One waiting request.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WaiterInfo {
    pub req: ReqId,
    /// Who will hold the lock when it is granted (the connection or lease).
    pub holder: Holder,
    pub mode: LockMode,
    /// When the request arrived (Unix seconds).
    pub since: i64,
    pub info: HolderInfo,
}

/// A container's holders (in grant order, i.e. by token) and waiters (in
/// queue order).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ContainerStatus {
    pub name: String,
    pub holders: Vec<GrantInfo>,
    pub waiters: Vec<WaiterInfo>,
}

/// A live lease, for listings.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg(test)]
pub struct LeaseStatus {
    pub lease: Holder,
    /// The connection that created it, until that connection is gone.
    pub creator: Option<Holder>,
    pub ttl: Duration,
    pub expires: Instant,
    /// Containers the lease holds, sorted.
    pub held: Vec<String>,
}

/// Why a lock was released without a release request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LostWhy {
    /// Its holder (a connection) is gone.
    HolderGone,
    /// Its holder (a lease) expired.
    LeaseExpired,
    /// Its holder (a lease) was revoked.
    LeaseRevoked,
    /// Its token was above a reservation the daemon could not persist
    /// ([`LockEvent::ReserveFailed`]); the grant was never handed out.
    NotReserved,
    /// Cluster mode: this node's claim on the lock in etcd may be gone (its
    /// lease could not be kept alive in time, [`LockEvent::ClusterLost`]).
    ClaimLost,
}

impl LostWhy {
    /// Why, as the daemon's warning says it ("lock X released because ...").
    pub fn as_str(self) -> &'static str {
        match self {
            LostWhy::HolderGone => "its holder's connection closed",
            LostWhy::LeaseExpired => "its lease expired",
            LostWhy::LeaseRevoked => "its lease was revoked",
            LostWhy::NotReserved => "its token could not be reserved",
            LostWhy::ClaimLost => {
                "this node's claim in etcd is at risk (its lease was not renewed in time)"
            }
        }
    }
}

/// Input to [`LockManager::step`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LockEvent {
    /// Lock `name` in `mode`. `holder` is the requesting connection. With
    /// `lease: Some(l)` the lock is held by lease `l` (which must exist, else
    /// [`LockError::NoLease`]) instead of the connection; the request still
    /// waits on behalf of the connection, so [`LockEvent::Gone`] of `holder`
    /// cancels it. Not grantable now: with `wait == false`
    /// [`LockEffect::Busy`]; otherwise it queues until granted or until
    /// `deadline` ([`LockEffect::TimedOut`]; a deadline not after `now`
    /// times out at once). `deadline` is ignored when `wait` is false.
    Acquire {
        req: ReqId,
        holder: Holder,
        lease: Option<Holder>,
        name: String,
        mode: LockMode,
        wait: bool,
        deadline: Option<Instant>,
        info: HolderInfo,
    },
    /// Unlock `name`, held by `holder` (or by `lease` when given).
    Release {
        req: ReqId,
        holder: Holder,
        lease: Option<Holder>,
        name: String,
    },
    /// A connection closed: release its locks (each reported as
    /// [`LockEffect::Lost`] with [`LostWhy::HolderGone`]), cancel its waiting
    /// requests (including those for a lease; no effect answers them), and
    /// forget that it created leases. The leases themselves live on: they end
    /// only by expiry or revocation. `Gone` of a lease id does nothing.
    Gone { holder: Holder },
    /// Create lease `lease` (an id the daemon allocated, not in use) with a
    /// TTL, created by connection `creator`.
    LeaseGrant {
        req: ReqId,
        lease: Holder,
        ttl: Duration,
        creator: Holder,
    },
    /// Extend a lease to `now + ttl`.
    LeaseRenew { req: ReqId, lease: Holder },
    /// End a lease now: its locks are reported as [`LockEffect::Lost`] with
    /// [`LostWhy::LeaseRevoked`], its waiting requests fail with
    /// [`LockError::NoLease`].
    LeaseRevoke { req: ReqId, lease: Holder },
    /// Time passed (the only thing a `Tick` does is what every step does
    /// first): expire waiters past their deadline ([`LockEffect::TimedOut`])
    /// and leases past their TTL (locks [`LockEffect::Lost`] with
    /// [`LostWhy::LeaseExpired`], waiting requests failed with
    /// [`LockError::NoLease`]).
    Tick,
    /// The daemon could not persist the last [`LockEffect::ReserveTokens`]:
    /// tokens above `persisted` (the last reservation it did persist) may
    /// come again after a restart. It did not hand out the grants that
    /// followed the failed reservation (it answered their requests with an
    /// error); the manager takes them back ([`LockEffect::Lost`] with
    /// [`LostWhy::NotReserved`]) and reserves again before the next grant.
    ReserveFailed { persisted: u64 },
    /// Cluster mode: claim `id` ([`LockEffect::Claim`]) on `name` is this
    /// node's now; `base` is its token base (the etcd create revision of the
    /// claim's key, shifted left by [`CLAIM_SHIFT`]).
    Claimed { id: u64, name: String, base: u64 },
    /// Cluster mode: claim `id` waits behind the claims of other nodes
    /// (`ahead`, for messages): requests that do not wait fail ([`LockEffect::Busy`]).
    ClaimQueued {
        id: u64,
        name: String,
        ahead: Vec<GrantInfo>,
    },
    /// Cluster mode: claim `id` could not be made (etcd unreachable):
    /// requests that do not wait fail with [`LockError::Unreachable`];
    /// waiting ones wait on until [`LockEvent::ClusterBack`].
    ClaimFailed { id: u64, name: String },
    /// Cluster mode: another node waits for `name`, which this node holds
    /// with claim `id`: no new local grant; once the local holders are
    /// gone the claim is given up ([`LockEffect::Unclaim`]).
    Contended { id: u64, name: String },
    /// Cluster mode: every claim of this node may be gone (its etcd lease
    /// was not renewed in time): every local holder loses its lock
    /// ([`LostWhy::ClaimLost`]); waiters wait on.
    ClusterLost,
    /// Cluster mode: etcd answers again: claims are asked again for the
    /// locks that have waiters.
    ClusterBack,
}

/// In cluster mode a token is `(create revision of the claim's key) <<
/// CLAIM_SHIFT | n`, n counting the grants made under that claim: tokens
/// increase across nodes (a later claim has a larger revision) and across
/// hand-overs on one node. After 2^20 grants a claim is made anew.
pub const CLAIM_SHIFT: u32 = 20;

/// Output of [`LockManager::step`], to be performed in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LockEffect {
    /// Persist that tokens up to `upto` may be used, BEFORE performing any
    /// later effect of the same batch (so a token is never reused after a
    /// restart). If that fails, the daemon must not hand out the grants that
    /// follow in the batch, and tells the manager
    /// ([`LockEvent::ReserveFailed`]).
    ReserveTokens {
        upto: u64,
    },
    /// `holder` now holds `name`; `token` is larger than every token handed
    /// out before.
    Granted {
        req: ReqId,
        holder: Holder,
        name: String,
        mode: LockMode,
        token: u64,
    },
    /// Non-blocking request not grantable now; names the current holders
    /// (by token).
    Busy {
        req: ReqId,
        name: String,
        holders: Vec<GrantInfo>,
    },
    /// A waiting request reached its deadline; names the holders then.
    TimedOut {
        req: ReqId,
        name: String,
        holders: Vec<GrantInfo>,
    },
    /// Answer to a successful [`LockEvent::Release`].
    Released {
        req: ReqId,
        name: String,
    },
    /// A lock released because its holder died or its lease ended (the daemon
    /// logs a warning naming container and holder).
    Lost {
        name: String,
        grant: GrantInfo,
        why: LostWhy,
    },
    LeaseGranted {
        req: ReqId,
        lease: Holder,
        expires: Instant,
    },
    LeaseRenewed {
        req: ReqId,
        lease: Holder,
        expires: Instant,
    },
    /// Answer to a successful [`LockEvent::LeaseRevoke`]; comes before the
    /// `Lost` effects of the lease's locks.
    LeaseRevoked {
        req: ReqId,
        lease: Holder,
    },
    Failed {
        req: ReqId,
        error: LockError,
    },
    /// Cluster mode: claim `name` in etcd in `mode` (answered by
    /// [`LockEvent::Claimed`], [`LockEvent::ClaimQueued`] or
    /// [`LockEvent::ClaimFailed`] with the same `id`).
    Claim {
        id: u64,
        name: String,
        mode: LockMode,
    },
    /// Cluster mode: give up claim `id` on `name` (delete its key).
    Unclaim {
        id: u64,
        name: String,
    },
}

impl LockEffect {
    /// The request this effect answers, if any.
    #[cfg(test)]
    pub fn req(&self) -> Option<ReqId> {
        match self {
            LockEffect::Granted { req, .. }
            | LockEffect::Busy { req, .. }
            | LockEffect::TimedOut { req, .. }
            | LockEffect::Released { req, .. }
            | LockEffect::LeaseGranted { req, .. }
            | LockEffect::LeaseRenewed { req, .. }
            | LockEffect::LeaseRevoked { req, .. }
            | LockEffect::Failed { req, .. } => Some(*req),
            LockEffect::ReserveTokens { .. }
            | LockEffect::Lost { .. }
            | LockEffect::Claim { .. }
            | LockEffect::Unclaim { .. } => None,
        }
    }
}

/// Why a request failed. [`LockError::code`] is stable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LockError {
    /// Release of a lock not held (also a second release), acquire of a
    /// container the holder already holds or waits for, lease id in use,
    /// renew or revoke of an unknown lease.
    #[error("lock state mismatch: not held, already held or waited for, or unknown lease")]
    SynchErr,
    /// Container name empty, longer than [`MAX_NAME_LEN`] bytes or with a
    /// control character.
    #[error("bad lock name: must be 1 to {MAX_NAME_LEN} bytes, without control characters")]
    BadName,
    /// Acquire or release for a lease that does not exist, or a waiting
    /// request whose lease ended.
    #[error("no such lease")]
    NoLease,
    /// A lease TTL of zero, or one too far in the future to represent.
    #[error("bad lease TTL")]
    BadTtl,
    /// Cluster mode: the lock could not be claimed in etcd (unreachable).
    #[error("cannot reach etcd to claim it")]
    Unreachable,
}

impl LockError {
    /// Stable code, following dsvclockd names where they exist.
    pub fn code(self) -> &'static str {
        match self {
            LockError::SynchErr => "SYNCH_ERR",
            LockError::BadName => "BAD_NAME",
            LockError::NoLease => "NO_LEASE",
            LockError::BadTtl => "BAD_TTL",
            LockError::Unreachable => "ETCD_UNREACHABLE",
        }
    }
}

/// A container name is valid UTF-8 (guaranteed by `&str`) of 1 to
/// [`MAX_NAME_LEN`] bytes, without control characters (NUL, newline, ...).
pub fn validate_name(name: &str) -> Result<(), LockError> {
    if name.is_empty() || name.len() > MAX_NAME_LEN || name.chars().any(char::is_control) {
        return Err(LockError::BadName);
    }
    Ok(())
}

/// A queued request. `owner` holds the lock once granted; `conn` asked for
/// it (they differ when a connection acquires for a lease).
#[derive(Clone, Debug)]
struct Waiter {
    req: ReqId,
    owner: Holder,
    conn: Holder,
    mode: LockMode,
    since: i64,
    deadline: Option<Instant>,
    info: HolderInfo,
    /// Cluster mode: a request that does not wait, queued only until this
    /// node's claim is known (granted, or failed with Busy).
    try_only: bool,
}

/// Cluster mode: this node's claim on a lock in etcd. Local requests are
/// granted only under a held claim of a sufficient mode.
#[derive(Clone, Debug, Default)]
enum Claim {
    #[default]
    None,
    /// Asked ([`LockEffect::Claim`]), not answered yet.
    Asked { id: u64, mode: LockMode },
    /// Waiting behind other nodes.
    Queued {
        id: u64,
        mode: LockMode,
        ahead: Vec<GrantInfo>,
    },
    /// This node's: grants take tokens `base + next`.
    Held {
        id: u64,
        mode: LockMode,
        base: u64,
        next: u64,
        /// Another node waits: no new local grant.
        contended: bool,
    },
}

impl Claim {
    fn id(&self) -> Option<u64> {
        match self {
            Claim::None => None,
            Claim::Asked { id, .. } | Claim::Queued { id, .. } | Claim::Held { id, .. } => {
                Some(*id)
            }
        }
    }

    /// Whether a local request of `mode` may be granted under this claim.
    fn allows(&self, want: LockMode) -> bool {
        match self {
            Claim::Held {
                mode,
                next,
                contended,
                ..
            } => {
                !contended
                    && *next < 1 << CLAIM_SHIFT
                    && (*mode == LockMode::Exclusive || want == LockMode::Shared)
            }
            _ => false,
        }
    }
}

/// One container. Never kept empty (in cluster mode a held claim is kept:
/// that is the lock cache).
#[derive(Debug, Default)]
struct Container {
    /// All shared, or exactly one exclusive.
    holders: BTreeMap<Holder, GrantInfo>,
    /// Keyed by a global arrival sequence number: iteration is FIFO.
    queue: BTreeMap<u64, Waiter>,
    claim: Claim,
}

impl Container {
    /// Whether a request of `mode` is compatible with the current holders
    /// (they all have the same mode, so the first one decides).
    fn compatible(&self, mode: LockMode) -> bool {
        self.holders
            .values()
            .next()
            .is_none_or(|g| mode.compatible(g.mode))
    }

    fn holder_list(&self) -> Vec<GrantInfo> {
        let mut v: Vec<GrantInfo> = self.holders.values().cloned().collect();
        v.sort_by_key(|g| g.token);
        v
    }

    fn is_empty(&self) -> bool {
        self.holders.is_empty() && self.queue.is_empty() && matches!(self.claim, Claim::None)
    }

    /// Local holders, and the other nodes' claims this node waits behind.
    fn blockers(&self) -> Vec<GrantInfo> {
        let mut v = self.holder_list();
        if let Claim::Queued { ahead, .. } = &self.claim {
            v.extend(ahead.iter().cloned());
        }
        v
    }
}

/// What one owner holds and waits for (kept only while non-empty).
#[derive(Debug, Default)]
struct Owned {
    held: BTreeSet<String>,
    /// Container -> the waiter's sequence number.
    waiting: BTreeMap<String, u64>,
}

impl Owned {
    fn is_empty(&self) -> bool {
        self.held.is_empty() && self.waiting.is_empty()
    }
}

#[derive(Debug)]
struct Lease {
    ttl: Duration,
    expires: Instant,
    creator: Option<Holder>,
}

/// Something due at an instant, in the order it is processed on ties:
/// a lease expiry (which may grant a lock) before a waiter's deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Due {
    Lease(Holder),
    Waiter(u64),
}

/// The lock manager. See the module documentation for its invariants.
#[derive(Debug)]
pub struct LockManager {
    containers: BTreeMap<String, Container>,
    /// By lock owner (connection or lease): what it holds and waits for.
    owners: HashMap<Holder, Owned>,
    /// By requesting connection: its waiting requests (sequence -> name).
    requests: HashMap<Holder, BTreeMap<u64, String>>,
    leases: BTreeMap<Holder, Lease>,
    /// Creator connection -> the leases it created.
    created: HashMap<Holder, BTreeSet<Holder>>,
    /// Waiter deadlines and lease expiries. A waiter entry maps to its
    /// container's name.
    due: BTreeMap<(Instant, Due), Option<String>>,
    /// The last token handed out.
    last_token: u64,
    /// Tokens up to here are reserved (persisted by the daemon).
    reserved: u64,
    next_seq: u64,
    /// Cluster mode: grants need this node's claim ([`Claim`]).
    cluster: bool,
    next_claim: u64,
}

impl LockManager {
    /// `token_floor`: the highest token that may have been handed out before
    /// (the persisted reservation); the first grant gets `token_floor + 1`,
    /// after a [`LockEffect::ReserveTokens`].
    pub fn new(token_floor: u64) -> LockManager {
        LockManager {
            containers: BTreeMap::new(),
            owners: HashMap::new(),
            requests: HashMap::new(),
            leases: BTreeMap::new(),
            created: HashMap::new(),
            due: BTreeMap::new(),
            last_token: token_floor,
            reserved: token_floor,
            next_seq: 0,
            cluster: false,
            next_claim: 1,
        }
    }

    /// A manager for cluster mode: a grant needs this node's claim on the
    /// lock in etcd (asked with [`LockEffect::Claim`]), and its token comes
    /// from that claim ([`CLAIM_SHIFT`]); no token is reserved locally.
    pub fn clustered() -> LockManager {
        LockManager {
            cluster: true,
            ..LockManager::new(0)
        }
    }

    /// Handle one event at monotonic time `now` (wall clock `unix`, Unix
    /// seconds, for the `since` fields). Returns the effects to perform in
    /// order. Expiries due at `now` are handled first (see the module
    /// documentation).
    pub fn step(&mut self, ev: LockEvent, now: Instant, unix: i64) -> Vec<LockEffect> {
        let mut out = Vec::new();
        self.expire(now, unix, &mut out);
        match ev {
            LockEvent::Acquire {
                req,
                holder,
                lease,
                name,
                mode,
                wait,
                deadline,
                info,
            } => {
                let w = Waiter {
                    req,
                    owner: lease.unwrap_or(holder),
                    conn: holder,
                    mode,
                    since: unix,
                    deadline: if wait { deadline } else { None },
                    info,
                    try_only: !wait,
                };
                let r = validate_name(&name)
                    .and_then(|()| self.check_lease(lease))
                    .and_then(|()| self.acquire(w, name, wait, now, unix, &mut out));
                if let Err(error) = r {
                    out.push(LockEffect::Failed { req, error });
                }
            }
            LockEvent::Release {
                req,
                holder,
                lease,
                name,
            } => {
                let r = validate_name(&name)
                    .and_then(|()| self.check_lease(lease))
                    .and_then(|()| {
                        self.release(req, lease.unwrap_or(holder), name, unix, &mut out)
                    });
                if let Err(error) = r {
                    out.push(LockEffect::Failed { req, error });
                }
            }
            LockEvent::Gone { holder } => self.gone(holder, unix, &mut out),
            LockEvent::LeaseGrant {
                req,
                lease,
                ttl,
                creator,
            } => {
                let r = self.lease_grant(lease, ttl, creator, now);
                out.push(match r {
                    Ok(expires) => LockEffect::LeaseGranted {
                        req,
                        lease,
                        expires,
                    },
                    Err(error) => LockEffect::Failed { req, error },
                });
            }
            LockEvent::LeaseRenew { req, lease } => {
                let r = self.lease_renew(lease, now);
                out.push(match r {
                    Ok(expires) => LockEffect::LeaseRenewed {
                        req,
                        lease,
                        expires,
                    },
                    Err(error) => LockEffect::Failed { req, error },
                });
            }
            LockEvent::LeaseRevoke { req, lease } => {
                if self.leases.contains_key(&lease) {
                    out.push(LockEffect::LeaseRevoked { req, lease });
                    self.end_lease(lease, LostWhy::LeaseRevoked, unix, &mut out);
                } else {
                    out.push(LockEffect::Failed {
                        req,
                        error: LockError::SynchErr,
                    });
                }
            }
            LockEvent::Tick => {}
            LockEvent::ReserveFailed { persisted } => {
                self.reserve_failed(persisted, unix, &mut out)
            }
            LockEvent::Claimed { id, name, base } => {
                if let Some(c) = self.containers.get_mut(&name)
                    && let Claim::Asked { id: i, mode } | Claim::Queued { id: i, mode, .. } =
                        c.claim
                    && i == id
                {
                    c.claim = Claim::Held {
                        id,
                        mode,
                        base,
                        next: 0,
                        contended: false,
                    };
                    self.pump(&name, unix, &mut out);
                }
            }
            LockEvent::ClaimQueued { id, name, ahead } => {
                if let Some(c) = self.containers.get_mut(&name)
                    && let Claim::Asked { id: i, mode } | Claim::Queued { id: i, mode, .. } =
                        c.claim
                    && i == id
                {
                    c.claim = Claim::Queued { id, mode, ahead };
                    self.fail_tries(&name, None, &mut out);
                    self.pump(&name, unix, &mut out);
                }
            }
            LockEvent::ClaimFailed { id, name } => {
                if let Some(c) = self.containers.get_mut(&name)
                    && matches!(c.claim, Claim::Asked { id: i, .. } if i == id)
                {
                    c.claim = Claim::None;
                    self.fail_tries(&name, Some(LockError::Unreachable), &mut out);
                    // Waiting requests wait on: no new claim until etcd
                    // answers again (ClusterBack).
                    if self.containers.get(&name).is_some_and(Container::is_empty) {
                        self.containers.remove(&name);
                    }
                }
            }
            LockEvent::Contended { id, name } => {
                if let Some(c) = self.containers.get_mut(&name)
                    && let Claim::Held {
                        id: i, contended, ..
                    } = &mut c.claim
                    && *i == id
                {
                    *contended = true;
                    self.pump(&name, unix, &mut out);
                }
            }
            LockEvent::ClusterLost => self.cluster_lost(unix, &mut out),
            LockEvent::ClusterBack => {
                let names: Vec<String> = self
                    .containers
                    .iter()
                    .filter(|(_, c)| matches!(c.claim, Claim::None) && !c.queue.is_empty())
                    .map(|(n, _)| n.clone())
                    .collect();
                for name in names {
                    self.pump(&name, unix, &mut out);
                }
            }
        }
        out
    }

    /// Earliest waiter deadline or lease expiry, for the event loop's timer.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.due.first_key_value().map(|(&(at, _), _)| at)
    }

    /// Containers with holders or waiters (all that are kept), sorted by
    /// name; only `name` when given.
    pub fn status(&self, name: Option<&str>) -> Vec<ContainerStatus> {
        let one = |(name, c): (&String, &Container)| ContainerStatus {
            name: name.clone(),
            holders: c.holder_list(),
            waiters: c
                .queue
                .values()
                .map(|w| WaiterInfo {
                    req: w.req,
                    holder: w.owner,
                    mode: w.mode,
                    since: w.since,
                    info: w.info.clone(),
                })
                .collect(),
        };
        match name {
            Some(n) => self
                .containers
                .get_key_value(n)
                .map(one)
                .into_iter()
                .collect(),
            None => self
                .containers
                .iter()
                .filter(|(_, c)| !c.holders.is_empty() || !c.queue.is_empty())
                .map(one)
                .collect(),
        }
    }

    /// What `holder` holds of container `name`, if it holds it.
    pub fn grant_of(&self, name: &str, holder: Holder) -> Option<&GrantInfo> {
        self.containers.get(name)?.holders.get(&holder)
    }

    /// Live leases, sorted by id.
    #[cfg(test)]
    pub fn leases(&self) -> Vec<LeaseStatus> {
        self.leases
            .iter()
            .map(|(&lease, l)| LeaseStatus {
                lease,
                creator: l.creator,
                ttl: l.ttl,
                expires: l.expires,
                held: self
                    .owners
                    .get(&lease)
                    .map(|o| o.held.iter().cloned().collect())
                    .unwrap_or_default(),
            })
            .collect()
    }

    /// No lock held, nobody waiting, no lease (the standalone lock daemon
    /// exits after being idle).
    pub fn is_idle(&self) -> bool {
        self.containers.is_empty() && self.leases.is_empty()
    }

    /// Locks held and waited for by requests of user `uid` (a scan of
    /// every lock: the daemon asks only for users under a limit).
    pub fn held_or_waited_by(&self, who: Who) -> usize {
        let is = |i: &HolderInfo| match who {
            Who::Uid(uid) => i.uid == Some(uid),
            Who::Certificate(id) => i.identity.as_deref() == Some(id),
        };
        self.containers
            .values()
            .map(|c| {
                c.holders.values().filter(|g| is(&g.info)).count()
                    + c.queue.values().filter(|w| is(&w.info)).count()
            })
            .sum()
    }

    /// Each live lease with the connection that created it, while that is
    /// open.
    pub fn lease_creators(&self) -> HashMap<Holder, Holder> {
        self.leases
            .iter()
            .filter_map(|(&lease, l)| l.creator.map(|c| (lease, c)))
            .collect()
    }

    /// Whether `lease` is live.
    pub fn has_lease(&self, lease: Holder) -> bool {
        self.leases.contains_key(&lease)
    }

    /// The last token handed out (or the floor, before the first grant).
    #[cfg(test)]
    pub fn last_token(&self) -> u64 {
        self.last_token
    }

    /// A lease named by a request must exist.
    fn check_lease(&self, lease: Option<Holder>) -> Result<(), LockError> {
        match lease {
            Some(l) if !self.leases.contains_key(&l) => Err(LockError::NoLease),
            _ => Ok(()),
        }
    }

    /// Acquire for a valid name and lease.
    fn acquire(
        &mut self,
        w: Waiter,
        name: String,
        wait: bool,
        now: Instant,
        unix: i64,
        out: &mut Vec<LockEffect>,
    ) -> Result<(), LockError> {
        if let Some(o) = self.owners.get(&w.owner)
            && (o.held.contains(&name) || o.waiting.contains_key(&name))
        {
            return Err(LockError::SynchErr);
        }
        let c = match self.containers.get_mut(&name) {
            Some(c) => c,
            None => self.containers.entry(name.clone()).or_default(),
        };
        let cluster = self.cluster;
        if c.queue.is_empty() && c.compatible(w.mode) && (!cluster || c.claim.allows(w.mode)) {
            self.grant(&name, w, unix, out);
        } else if !wait
            && cluster
            && c.queue.is_empty()
            && c.compatible(w.mode)
            && match c.claim {
                Claim::None | Claim::Asked { .. } => true,
                // A claim of the wrong mode, or one another node waits
                // for, is asked anew only once no local holder is left.
                Claim::Held { .. } => c.holders.is_empty(),
                Claim::Queued { .. } => false,
            }
        {
            // Whether another node holds it is known once the claim is
            // answered: wait for that, not for the lock.
            self.enqueue(name.clone(), w);
            self.pump(&name, unix, out);
        } else if !wait {
            let holders = c.blockers();
            out.push(LockEffect::Busy {
                req: w.req,
                name,
                holders,
            });
        } else if w.deadline.is_some_and(|d| d <= now) {
            let holders = c.blockers();
            out.push(LockEffect::TimedOut {
                req: w.req,
                name: name.clone(),
                holders,
            });
            // A container made for this request alone is not kept.
            self.pump(&name, unix, out);
        } else {
            self.enqueue(name.clone(), w);
            if cluster {
                self.pump(&name, unix, out);
            }
        }
        Ok(())
    }

    /// Release for a valid name and lease.
    fn release(
        &mut self,
        req: ReqId,
        owner: Holder,
        name: String,
        unix: i64,
        out: &mut Vec<LockEffect>,
    ) -> Result<(), LockError> {
        let Some(o) = self.owners.get_mut(&owner) else {
            return Err(LockError::SynchErr);
        };
        if !o.held.remove(&name) {
            return Err(LockError::SynchErr);
        }
        if o.is_empty() {
            self.owners.remove(&owner);
        }
        if let Some(c) = self.containers.get_mut(&name) {
            c.holders.remove(&owner);
        }
        out.push(LockEffect::Released {
            req,
            name: name.clone(),
        });
        self.pump(&name, unix, out);
        Ok(())
    }

    fn gone(&mut self, holder: Holder, unix: i64, out: &mut Vec<LockEffect>) {
        if self.leases.contains_key(&holder) {
            return;
        }
        if let Some(leases) = self.created.remove(&holder) {
            for l in leases {
                if let Some(lease) = self.leases.get_mut(&l) {
                    lease.creator = None;
                }
            }
        }
        let mut touched = BTreeSet::new();
        if let Some(reqs) = self.requests.remove(&holder) {
            for (seq, name) in reqs {
                self.remove_waiter(&name, seq);
                touched.insert(name);
            }
        }
        if let Some(o) = self.owners.remove(&holder) {
            // A connection's own waits are all in `requests` (removed
            // above, which also emptied `o.waiting`); a lease never gets here.
            debug_assert!(o.waiting.is_empty(), "waits of {holder} left behind");
            for name in o.held {
                self.lose(name, holder, LostWhy::HolderGone, &mut touched, out);
            }
        }
        for name in touched {
            self.pump(&name, unix, out);
        }
    }

    /// Take back every grant above the persisted reservation, then give the
    /// containers to their next waiters (reserving again first).
    fn reserve_failed(&mut self, persisted: u64, unix: i64, out: &mut Vec<LockEffect>) {
        self.reserved = self.reserved.min(persisted);
        let above: Vec<(String, Holder)> = self
            .containers
            .iter()
            .flat_map(|(name, c)| {
                c.holders
                    .values()
                    .filter(|g| g.token > persisted)
                    .map(|g| (name.clone(), g.holder))
            })
            .collect();
        let mut touched = BTreeSet::new();
        for (name, holder) in above {
            if let Some(o) = self.owners.get_mut(&holder) {
                o.held.remove(&name);
                if o.is_empty() {
                    self.owners.remove(&holder);
                }
            }
            self.lose(name, holder, LostWhy::NotReserved, &mut touched, out);
        }
        for name in touched {
            self.pump(&name, unix, out);
        }
    }

    /// Drop `holder`'s grant of `name` (the caller updated `owners`) and
    /// report it as lost.
    fn lose(
        &mut self,
        name: String,
        holder: Holder,
        why: LostWhy,
        touched: &mut BTreeSet<String>,
        out: &mut Vec<LockEffect>,
    ) {
        if let Some(grant) = self
            .containers
            .get_mut(&name)
            .and_then(|c| c.holders.remove(&holder))
        {
            out.push(LockEffect::Lost {
                name: name.clone(),
                grant,
                why,
            });
        }
        touched.insert(name);
    }

    fn lease_grant(
        &mut self,
        lease: Holder,
        ttl: Duration,
        creator: Holder,
        now: Instant,
    ) -> Result<Instant, LockError> {
        if ttl.is_zero() {
            return Err(LockError::BadTtl);
        }
        if lease == creator
            || self.leases.contains_key(&lease)
            || self.owners.contains_key(&lease)
            || self.requests.contains_key(&lease)
            || self.created.contains_key(&lease)
        {
            return Err(LockError::SynchErr);
        }
        let expires = now.checked_add(ttl).ok_or(LockError::BadTtl)?;
        self.leases.insert(
            lease,
            Lease {
                ttl,
                expires,
                creator: Some(creator),
            },
        );
        self.due.insert((expires, Due::Lease(lease)), None);
        self.created.entry(creator).or_default().insert(lease);
        Ok(expires)
    }

    fn lease_renew(&mut self, lease: Holder, now: Instant) -> Result<Instant, LockError> {
        let l = self.leases.get_mut(&lease).ok_or(LockError::SynchErr)?;
        let expires = now.checked_add(l.ttl).ok_or(LockError::BadTtl)?;
        self.due.remove(&(l.expires, Due::Lease(lease)));
        l.expires = expires;
        self.due.insert((expires, Due::Lease(lease)), None);
        Ok(expires)
    }

    /// End a lease: its locks are lost, its waiting requests fail.
    fn end_lease(&mut self, lease: Holder, why: LostWhy, unix: i64, out: &mut Vec<LockEffect>) {
        let Some(l) = self.leases.remove(&lease) else {
            return;
        };
        self.due.remove(&(l.expires, Due::Lease(lease)));
        if let Some(creator) = l.creator
            && let Some(set) = self.created.get_mut(&creator)
        {
            set.remove(&lease);
            if set.is_empty() {
                self.created.remove(&creator);
            }
        }
        let mut touched = BTreeSet::new();
        if let Some(o) = self.owners.remove(&lease) {
            for name in o.held {
                self.lose(name, lease, why, &mut touched, out);
            }
            for (name, seq) in o.waiting {
                if let Some(w) = self.remove_waiter(&name, seq) {
                    out.push(LockEffect::Failed {
                        req: w.req,
                        error: LockError::NoLease,
                    });
                }
                touched.insert(name);
            }
        }
        for name in touched {
            self.pump(&name, unix, out);
        }
    }

    /// Handle everything due at or before `now`, in time order.
    fn expire(&mut self, now: Instant, unix: i64, out: &mut Vec<LockEffect>) {
        while let Some((&(at, due), _)) = self.due.first_key_value()
            && at <= now
        {
            match due {
                Due::Lease(lease) => self.end_lease(lease, LostWhy::LeaseExpired, unix, out),
                Due::Waiter(seq) => {
                    let name = self
                        .due
                        .remove(&(at, due))
                        .flatten()
                        .expect("a waiter deadline names its container");
                    let holders = self
                        .containers
                        .get(&name)
                        .map(Container::blockers)
                        .unwrap_or_default();
                    if let Some(w) = self.remove_waiter(&name, seq) {
                        out.push(LockEffect::TimedOut {
                            req: w.req,
                            name: name.clone(),
                            holders,
                        });
                    }
                    self.pump(&name, unix, out);
                }
            }
        }
    }

    /// Queue `w` at the tail of `name` (which exists).
    fn enqueue(&mut self, name: String, w: Waiter) {
        let seq = self.next_seq;
        self.next_seq += 1;
        if let Some(d) = w.deadline {
            self.due.insert((d, Due::Waiter(seq)), Some(name.clone()));
        }
        self.owners
            .entry(w.owner)
            .or_default()
            .waiting
            .insert(name.clone(), seq);
        self.requests
            .entry(w.conn)
            .or_default()
            .insert(seq, name.clone());
        if let Some(c) = self.containers.get_mut(&name) {
            c.queue.insert(seq, w);
        }
    }

    /// Take waiter `seq` out of `name`'s queue and out of every index. The
    /// container may be left empty: the caller pumps it.
    fn remove_waiter(&mut self, name: &str, seq: u64) -> Option<Waiter> {
        let w = self.containers.get_mut(name)?.queue.remove(&seq)?;
        if let Some(d) = w.deadline {
            self.due.remove(&(d, Due::Waiter(seq)));
        }
        if let Some(o) = self.owners.get_mut(&w.owner) {
            o.waiting.remove(name);
            if o.is_empty() {
                self.owners.remove(&w.owner);
            }
        }
        if let Some(r) = self.requests.get_mut(&w.conn) {
            r.remove(&seq);
            if r.is_empty() {
                self.requests.remove(&w.conn);
            }
        }
        Some(w)
    }

    /// Grant `w` the lock `name` (which exists and is compatible).
    fn grant(&mut self, name: &str, w: Waiter, unix: i64, out: &mut Vec<LockEffect>) {
        let token = if self.cluster {
            match self.containers.get_mut(name).map(|c| &mut c.claim) {
                Some(Claim::Held { base, next, .. }) => {
                    *next += 1;
                    *base + *next
                }
                _ => return,
            }
        } else {
            self.take_token(out)
        };
        let Some(c) = self.containers.get_mut(name) else {
            return;
        };
        c.holders.insert(
            w.owner,
            GrantInfo {
                holder: w.owner,
                mode: w.mode,
                token,
                since: unix,
                info: w.info,
            },
        );
        self.owners
            .entry(w.owner)
            .or_default()
            .held
            .insert(name.to_owned());
        out.push(LockEffect::Granted {
            req: w.req,
            holder: w.owner,
            name: name.to_owned(),
            mode: w.mode,
            token,
        });
    }

    /// The next token, reserving more first when the reservation is used up.
    fn take_token(&mut self, out: &mut Vec<LockEffect>) -> u64 {
        let token = self.last_token + 1;
        if token > self.reserved {
            self.reserved = self.last_token + TOKEN_RESERVE;
            out.push(LockEffect::ReserveTokens {
                upto: self.reserved,
            });
        }
        self.last_token = token;
        token
    }

    /// Grant every waiter at the head of `name`'s queue that is compatible
    /// with the holders (consecutive shared requests go together), then drop
    /// the container if it is empty.
    fn pump(&mut self, name: &str, unix: i64, out: &mut Vec<LockEffect>) {
        loop {
            let Some(c) = self.containers.get(name) else {
                return;
            };
            let Some((&seq, head)) = c.queue.first_key_value() else {
                break;
            };
            if !c.compatible(head.mode) || (self.cluster && !c.claim.allows(head.mode)) {
                break;
            }
            if let Some(w) = self.remove_waiter(name, seq) {
                self.grant(name, w, unix, out);
            }
        }
        if self.cluster {
            self.reconcile(name, out);
        }
        if self.containers.get(name).is_some_and(Container::is_empty) {
            self.containers.remove(name);
        }
    }

    /// Cluster mode: ask for the claim the head of the queue needs, give
    /// up a claim another node waits for once no local holder is left, and
    /// keep an uncontended claim without holders (the lock cache).
    fn reconcile(&mut self, name: &str, out: &mut Vec<LockEffect>) {
        let Some(c) = self.containers.get_mut(name) else {
            return;
        };
        let head = c.queue.first_key_value().map(|(_, w)| w.mode);
        let idle = c.holders.is_empty();
        let redo = match (&c.claim, head) {
            (Claim::None, Some(_)) => false,
            (Claim::None, None) => return,
            // Holders exist only under a held claim; they go first.
            (_, _) if !idle => return,
            (Claim::Held { .. }, Some(m)) if c.claim.allows(m) => return,
            (
                Claim::Held {
                    contended, next, ..
                },
                None,
            ) => {
                if !*contended && *next < 1 << CLAIM_SHIFT {
                    return;
                }
                true
            }
            (Claim::Held { .. }, Some(_)) => true,
            (Claim::Asked { mode, .. } | Claim::Queued { mode, .. }, Some(m)) => {
                if *mode == LockMode::Exclusive || m == LockMode::Shared {
                    return;
                }
                true
            }
            (Claim::Asked { .. } | Claim::Queued { .. }, None) => true,
        };
        if redo && let Some(id) = c.claim.id() {
            out.push(LockEffect::Unclaim {
                id,
                name: name.to_owned(),
            });
            c.claim = Claim::None;
        }
        if let Some(mode) = head {
            let id = self.next_claim;
            self.next_claim += 1;
            c.claim = Claim::Asked { id, mode };
            out.push(LockEffect::Claim {
                id,
                name: name.to_owned(),
                mode,
            });
        }
    }

    /// Cluster mode: answer the requests of `name` that do not wait (the
    /// claim is queued behind other nodes: Busy; or failed: `error`).
    fn fail_tries(&mut self, name: &str, error: Option<LockError>, out: &mut Vec<LockEffect>) {
        let Some(c) = self.containers.get(name) else {
            return;
        };
        let tries: Vec<u64> = c
            .queue
            .iter()
            .filter(|(_, w)| w.try_only)
            .map(|(&seq, _)| seq)
            .collect();
        let holders = c.blockers();
        for seq in tries {
            if let Some(w) = self.remove_waiter(name, seq) {
                out.push(match error {
                    Some(error) => LockEffect::Failed { req: w.req, error },
                    None => LockEffect::Busy {
                        req: w.req,
                        name: name.to_owned(),
                        holders: holders.clone(),
                    },
                });
            }
        }
    }

    /// Cluster mode: every claim may be gone; local holders lose their
    /// locks, waiters wait for a new claim.
    fn cluster_lost(&mut self, unix: i64, out: &mut Vec<LockEffect>) {
        let mut touched = BTreeSet::new();
        let mut lost_leases = BTreeSet::new();
        let names: Vec<String> = self.containers.keys().cloned().collect();
        for name in names {
            let Some(c) = self.containers.get_mut(&name) else {
                continue;
            };
            c.claim = Claim::None;
            let holders: Vec<Holder> = c.holders.keys().copied().collect();
            lost_leases.extend(holders.iter().filter(|h| self.leases.contains_key(h)));
            for holder in holders {
                if let Some(o) = self.owners.get_mut(&holder) {
                    o.held.remove(&name);
                    if o.is_empty() {
                        self.owners.remove(&holder);
                    }
                }
                self.lose(name.clone(), holder, LostWhy::ClaimLost, &mut touched, out);
            }
            // Requests that do not wait hear now rather than later.
            self.fail_tries(&name, Some(LockError::Unreachable), out);
            touched.insert(name);
        }
        // A lease that held a lock ends with it: its client learns it at
        // its next renewal, even from another connection.
        for lease in lost_leases {
            self.end_lease(lease, LostWhy::ClaimLost, unix, out);
        }
        // Claims asked again go to the agent, which answers them once
        // etcd does (or fails them at once while it cannot).
        for name in touched {
            self.pump(&name, unix, out);
        }
    }
}

#[cfg(test)]
mod tests;
