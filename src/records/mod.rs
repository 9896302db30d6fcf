//! Records with update signatures, in the style of the Solaris DHCP data
//! service framework (dsvc): named containers hold records by key, and every
//! record carries a 64-bit signature so that two writers never silently
//! overwrite each other.
//!
//! # Model
//!
//! - A container is a named set of records. Containers need no creation: a
//!   container exists while it holds a record, and listing one that holds
//!   none gives an empty list.
//! - Container names and keys are UTF-8, 1..=[`MAX_NAME`] bytes, without NUL
//!   bytes; a value is any bytes, up to [`MAX_VALUE`].
//! - Signature: on [`add`], the top 16 bits are random (from the OS) and
//!   stay the same for the record's whole life (its *generation*); the low
//!   48 bits start at 1 and every [`modify`] increments them (see
//!   [`next_signature`]). A signature is never 0.
//! - [`modify`] and [`delete`] take the signature the caller last saw and
//!   fail with [`RecordError::Collision`] if the record has changed since.
//!   [`delete`] with signature 0 deletes whatever the signature.
//! - A record deleted and added again gets a new random generation, so a
//!   signature seen before the delete does not match the new record (except
//!   with probability 2^-16 per re-add, when both the random generation and
//!   the counter coincide).
//!
//! # Invariants
//!
//! - Every operation is one atomic, durable call of a [`RecordStorage`]
//!   (one SQLite transaction in [`crate::store::sqlite`]); an `Ok`
//!   result is durable (survives SIGKILL and power loss), an `Err` changed
//!   nothing. The SQL lives in [`crate::store::sqlite`]; this module holds
//!   the rules.
//! - Names and sizes are checked before the database is touched.
//!
//! # Format versions and upgrades
//!
//! A container named `NAME` is stored as `clinit1_NAME`, that is
//! [`FORMAT_PREFIX`] followed by the name. The prefix versions the *record
//! format*: how keys, values and signatures are encoded and what they mean.
//! A later format (say `clinit2_`, with another value encoding or signature
//! rule) stores its containers as `clinit2_NAME` in the same `records`
//! table, so both formats coexist and no code ever reads a container in a
//! format it does not know.
//!
//! The upgrade copies, in the style of the dsvc container conversion: in
//! one transaction, for each stored container name starting with
//! `clinit1_`, read its records, convert each one, insert it under
//! `clinit2_NAME`, delete the `clinit1_NAME` rows, and raise the schema
//! version ([`crate::store::sqlite::SCHEMA_VERSION`]) so that an older
//! clinit refuses the file ([`StoreError::TooNew`]) instead of finding its
//! containers empty. A crash before the commit leaves the old containers
//! intact; after it, only the new ones exist. Converted records keep their
//! signatures if the new format can express them, so a caller's last-seen
//! signature stays valid across the upgrade.

use crate::store::{
    Cas, Pending, RecordBackend, RecordCall, RecordOutcome, RecordStorage, StoreError, Writer,
};
use std::sync::{Arc, Mutex, PoisonError};

/// The stored name of a container is this prefix followed by its name;
/// see the module doc for how a later format coexists and upgrades.
pub const FORMAT_PREFIX: &str = "clinit1_";
/// Longest container name or key, in bytes (UTF-8).
pub const MAX_NAME: usize = 255;
/// Largest value, in bytes (1 MiB).
pub const MAX_VALUE: usize = 1 << 20;

/// The low 48 bits of a signature: the update counter.
const COUNTER_MASK: u64 = (1 << 48) - 1;

/// One record as read back from a container.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Record {
    /// The record's key, unique in its container.
    pub key: String,
    /// The record's value.
    pub value: Vec<u8>,
    /// The current signature; pass it to [`modify`] or [`delete`].
    pub sig: u64,
}

/// Why a record operation failed; [`RecordError::code`] gives a stable code
/// for the protocol. Every message names the container and key (or the bad
/// name) concerned.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// [`add`] of a key that the container already holds.
    #[error("record {key:?} already exists in container {container:?}")]
    Exists { container: String, key: String },
    /// The container holds no record with that key.
    #[error("no record {key:?} in container {container:?}")]
    NoEnt { container: String, key: String },
    /// The record changed since the caller read it: its signature is
    /// `current`, the caller gave `given`.
    #[error(
        "record {key:?} in container {container:?} has changed: its signature is {current} ({current:#x}), not {given} ({given:#x}) (read it again)"
    )]
    Collision {
        container: String,
        key: String,
        current: u64,
        given: u64,
    },
    /// A container name or key that is empty, too long or contains NUL;
    /// `what` is `"container"` or `"key"`.
    #[error("bad {what} name {name:?}: {why}")]
    BadName {
        what: &'static str,
        name: String,
        why: String,
    },
    /// A value longer than [`MAX_VALUE`] bytes.
    #[error(
        "value for record {key:?} in container {container:?} is {len} bytes, more than the {MAX_VALUE} allowed"
    )]
    TooLarge {
        container: String,
        key: String,
        len: usize,
    },
    /// A write that would take a container, or the whole store, over its
    /// quota (`record_container_max`, `record_container_bytes_max`,
    /// `record_bytes_max`).
    #[error("record {key:?} in container {container:?}: {why}")]
    Quota {
        container: String,
        key: String,
        why: String,
    },
    /// A write fenced with a token below the highest the store has seen
    /// for that lock: a holder that lost the lock, or a stale one.
    #[error(
        "record {key:?} in container {container:?}: token {token} of lock {lock:?} is stale: the record store has seen token {highest}"
    )]
    StaleToken {
        container: String,
        key: String,
        lock: String,
        token: u64,
        highest: u64,
    },
    /// Cluster mode: etcd, where the records are, did not answer.
    #[error("{0}")]
    Unreachable(String),
    /// The state database failed (the message names the file, and the
    /// record when one was concerned).
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl RecordError {
    /// The stable code for this error: `EXISTS`, `NOENT`, `COLLISION`,
    /// `BAD_NAME`, `TOO_LARGE` or `STORE`.
    pub fn code(&self) -> &'static str {
        match self {
            RecordError::Exists { .. } => "EXISTS",
            RecordError::NoEnt { .. } => "NOENT",
            RecordError::Collision { .. } => "COLLISION",
            RecordError::BadName { .. } => "BAD_NAME",
            RecordError::TooLarge { .. } => "TOO_LARGE",
            RecordError::Quota { .. } => "LIMIT",
            RecordError::StaleToken { .. } => "STALE_TOKEN",
            RecordError::Unreachable(_) => "ETCD_UNREACHABLE",
            RecordError::Store(_) => "STORE",
        }
    }
}

/// The signature of a new record: `random16` in the top 16 bits (the
/// record's generation, fixed for its life), 1 in the low 48 bits.
pub fn first_signature(random16: u16) -> u64 {
    (u64::from(random16) << 48) | 1
}

/// The signature after one modification: the top 16 bits are kept, the low
/// 48 bits are incremented, wrapping from 2^48-1 to 1 (never to 0, so no
/// signature is ever 0 and 0 stays free to mean "any" in [`delete`]). A
/// record would need 2^48-1 modifications to wrap, so a stale signature
/// cannot come round to match again in practice.
pub fn next_signature(sig: u64) -> u64 {
    let counter = sig & COUNTER_MASK;
    let next = if counter == COUNTER_MASK {
        1
    } else {
        counter + 1
    };
    (sig & !COUNTER_MASK) | next
}

/// Add a record; fails with [`RecordError::Exists`] if the container
/// already holds the key. Returns the new record's signature.
pub fn add<S: RecordStorage + ?Sized>(
    db: &mut S,
    container: &str,
    key: &str,
    value: &[u8],
) -> Result<u64, RecordError> {
    add_by(db, container, key, value, "")
}

/// [`add`], the record owned by `owner` (its writer's key).
pub fn add_by<S: RecordStorage + ?Sized>(
    db: &mut S,
    container: &str,
    key: &str,
    value: &[u8],
    owner: &str,
) -> Result<u64, RecordError> {
    let stored = check(container, key, Some(value))?;
    let sig = first_signature(random16());
    if db.insert(&stored, key, value, sig, owner)? {
        Ok(sig)
    } else {
        Err(RecordError::Exists {
            container: container.to_string(),
            key: key.to_string(),
        })
    }
}

/// Read one record; [`RecordError::NoEnt`] if the container does not hold
/// the key.
pub fn lookup<S: RecordStorage + ?Sized>(
    db: &S,
    container: &str,
    key: &str,
) -> Result<Record, RecordError> {
    let stored = check(container, key, None)?;
    match db.get(&stored, key)? {
        Some((value, sig)) => Ok(Record {
            key: key.to_string(),
            value,
            sig,
        }),
        None => Err(no_ent(container, key)),
    }
}

/// Replace a record's value if its signature is still `sig` (the one the
/// caller last saw); returns the new signature ([`next_signature`] of
/// `sig`). A changed record gives [`RecordError::Collision`] (as does `sig`
/// 0, which no record has), a missing one [`RecordError::NoEnt`].
pub fn modify<S: RecordStorage + ?Sized>(
    db: &mut S,
    container: &str,
    key: &str,
    value: &[u8],
    sig: u64,
) -> Result<u64, RecordError> {
    modify_by(db, container, key, value, sig, "")
}

/// [`modify`], the record then owned by `owner` (its last writer's key).
pub fn modify_by<S: RecordStorage + ?Sized>(
    db: &mut S,
    container: &str,
    key: &str,
    value: &[u8],
    sig: u64,
    owner: &str,
) -> Result<u64, RecordError> {
    let stored = check(container, key, Some(value))?;
    let new = next_signature(sig);
    match db.replace(&stored, key, value, sig, new, owner)? {
        Cas::Done => Ok(new),
        other => Err(cas_err(other, container, key, sig)),
    }
}

/// Delete a record if its signature is still `sig`, or whatever its
/// signature if `sig` is 0. A changed record gives
/// [`RecordError::Collision`], a missing one [`RecordError::NoEnt`].
pub fn delete<S: RecordStorage + ?Sized>(
    db: &mut S,
    container: &str,
    key: &str,
    sig: u64,
) -> Result<(), RecordError> {
    let stored = check(container, key, None)?;
    let expected = (sig != 0).then_some(sig);
    match db.remove(&stored, key, expected)? {
        Cas::Done => Ok(()),
        other => Err(cas_err(other, container, key, sig)),
    }
}

/// Every record of a container, ordered by key (bytewise); empty if the
/// container holds none.
pub fn list<S: RecordStorage + ?Sized>(
    db: &S,
    container: &str,
) -> Result<Vec<Record>, RecordError> {
    let stored = stored_name(container)?;
    Ok(db
        .list(&stored)?
        .into_iter()
        .map(|(key, value, sig)| Record { key, value, sig })
        .collect())
}

/// Check a container name, a key and (if given) a value; return the
/// container's stored name.
pub(crate) fn check(
    container: &str,
    key: &str,
    value: Option<&[u8]>,
) -> Result<String, RecordError> {
    let stored = stored_name(container)?;
    check_name("key", key)?;
    if let Some(value) = value.filter(|v| v.len() > MAX_VALUE) {
        return Err(RecordError::TooLarge {
            container: container.to_string(),
            key: key.to_string(),
            len: value.len(),
        });
    }
    Ok(stored)
}

/// The stored name of a (checked) container: [`FORMAT_PREFIX`] + name.
fn stored_name(container: &str) -> Result<String, RecordError> {
    check_name("container", container)?;
    Ok(format!("{FORMAT_PREFIX}{container}"))
}

pub(crate) fn check_name(what: &'static str, name: &str) -> Result<(), RecordError> {
    let why = if name.is_empty() {
        "empty".to_string()
    } else if name.len() > MAX_NAME {
        format!("{} bytes, more than the {MAX_NAME} allowed", name.len())
    } else if name.chars().any(char::is_control) {
        "contains a control character (NUL, newline, ...)".to_string()
    } else {
        return Ok(());
    };
    Err(RecordError::BadName {
        what,
        name: name.to_string(),
        why,
    })
}

fn no_ent(container: &str, key: &str) -> RecordError {
    RecordError::NoEnt {
        container: container.to_string(),
        key: key.to_string(),
    }
}

fn cas_err(cas: Cas, container: &str, key: &str, given: u64) -> RecordError {
    match cas {
        Cas::Stale(current) => RecordError::Collision {
            container: container.to_string(),
            key: key.to_string(),
            current,
            given,
        },
        Cas::Missing | Cas::Done => no_ent(container, key),
    }
}

/// 16 random bits from the OS for a new record's generation. The OS source
/// (Linux `getrandom(2)`) does not fail once the kernel is seeded; should it
/// fail anyway, the bits come from the clock's nanoseconds and the pid,
/// which still differ between generations with high probability (all the
/// generation needs), and the failure is logged.
pub(crate) fn random16() -> u16 {
    let mut b = [0u8; 2];
    match getrandom::fill(&mut b) {
        Ok(()) => u16::from_ne_bytes(b),
        Err(err) => {
            tracing::warn!("no random bits from the OS ({err}); record generation from the clock");
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            (nanos ^ (nanos >> 16) ^ std::process::id()) as u16
        }
    }
}

/// How much the record store may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    /// Records in one container.
    pub container_records: u64,
    /// Bytes of values in one container.
    pub container_bytes: u64,
    /// Bytes of values in the whole store.
    pub total_bytes: u64,
    /// Records one limited writer last wrote (`peer_records_max`).
    pub peer_records: u64,
    /// Bytes of values of those records (`peer_record_bytes_max`).
    pub peer_bytes: u64,
}

impl Default for Quota {
    fn default() -> Quota {
        Quota {
            container_records: 10_000,
            container_bytes: 64 << 20,
            total_bytes: 1 << 30,
            peer_records: 10_000,
            peer_bytes: 64 << 20,
        }
    }
}

impl Quota {
    /// The quota the settings ask for, the default where they say nothing.
    pub fn from_settings(s: &crate::cltab::Settings) -> Quota {
        let d = Quota::default();
        let or = |v: Option<usize>, d: u64| v.map_or(d, |n| n as u64);
        Quota {
            container_records: or(s.record_container_max, d.container_records),
            container_bytes: or(s.record_container_bytes_max, d.container_bytes),
            total_bytes: or(s.record_bytes_max, d.total_bytes),
            peer_records: or(s.peer_records_max, d.peer_records),
            peer_bytes: or(s.peer_record_bytes_max, d.peer_bytes),
        }
    }
}

/// What the store holds: per stored container and per owner (records,
/// bytes), and the bytes of all; read once, then kept up to date by each
/// write.
#[derive(Debug, Default)]
struct Usage {
    containers: std::collections::HashMap<String, (u64, u64)>,
    owners: std::collections::HashMap<String, (u64, u64)>,
    total_bytes: u64,
}

impl Usage {
    fn read<S: RecordStorage + ?Sized>(db: &S) -> Result<Usage, StoreError> {
        let mut u = Usage::default();
        for row in db.usage()? {
            u.total_bytes += row.bytes;
            add_to(&mut u.containers, &row.container, row.records, row.bytes);
            add_to(&mut u.owners, &row.owner, row.records, row.bytes);
        }
        Ok(u)
    }

    /// A record of `len` bytes owned by `owner` in `stored` appears
    /// (`sign` 1) or goes (`sign` -1).
    fn count(&mut self, stored: &str, owner: &str, len: u64, sign: i8) {
        if sign > 0 {
            add_to(&mut self.containers, stored, 1, len);
            add_to(&mut self.owners, owner, 1, len);
            self.total_bytes += len;
        } else {
            sub_from(&mut self.containers, stored, len);
            sub_from(&mut self.owners, owner, len);
            self.total_bytes -= len.min(self.total_bytes);
        }
    }
}

fn add_to(m: &mut std::collections::HashMap<String, (u64, u64)>, k: &str, n: u64, b: u64) {
    let e = m.entry(k.to_string()).or_insert((0, 0));
    e.0 += n;
    e.1 += b;
}

fn sub_from(m: &mut std::collections::HashMap<String, (u64, u64)>, k: &str, b: u64) {
    if let Some(e) = m.get_mut(k) {
        e.0 = e.0.saturating_sub(1);
        e.1 -= b.min(e.1);
        if e.0 == 0 {
            m.remove(k);
        }
    }
}

/// The record store of one machine: these rules over a local
/// [`RecordStorage`], within a [`Quota`]; every call answers at once.
pub struct LocalRecords<S: ?Sized> {
    storage: Arc<Mutex<S>>,
    quota: Quota,
    usage: Option<Usage>,
}

impl<S: RecordStorage + ?Sized> LocalRecords<S> {
    pub fn new(storage: Arc<Mutex<S>>) -> LocalRecords<S> {
        LocalRecords::with_quota(storage, Quota::default())
    }

    pub fn with_quota(storage: Arc<Mutex<S>>, quota: Quota) -> LocalRecords<S> {
        LocalRecords {
            storage,
            quota,
            usage: None,
        }
    }
}

/// Would `by` writing `new_len` bytes in place of `old` (the length and
/// owner of the record replaced: `None` for a new record) take the store
/// over `q`?
fn over_quota(
    q: &Quota,
    usage: &Usage,
    stored: &str,
    old: Option<&(u64, String)>,
    new_len: u64,
    by: &Writer,
) -> Option<String> {
    let (records, bytes) = usage.containers.get(stored).copied().unwrap_or((0, 0));
    let old_len = old.map_or(0, |o| o.0);
    if old.is_none() && records + 1 > q.container_records {
        return Some(format!(
            "the container holds {records} records, the most record_container_max allows"
        ));
    }
    if bytes - old_len.min(bytes) + new_len > q.container_bytes {
        return Some(format!(
            "the container would hold {} bytes, more than record_container_bytes_max ({})",
            bytes - old_len.min(bytes) + new_len,
            q.container_bytes
        ));
    }
    let total = usage.total_bytes - old_len.min(usage.total_bytes) + new_len;
    if total > q.total_bytes {
        return Some(format!(
            "the record store would hold {total} bytes, more than record_bytes_max ({})",
            q.total_bytes
        ));
    }
    if by.limited {
        let (n, b) = usage.owners.get(&by.key).copied().unwrap_or((0, 0));
        let theirs = old.is_some_and(|o| o.1 == by.key);
        if !theirs && n + 1 > q.peer_records {
            return Some(format!(
                "{} has written {n} records, the most peer_records_max allows",
                by.key
            ));
        }
        let after = b - if theirs { old_len.min(b) } else { 0 } + new_len;
        if after > q.peer_bytes {
            return Some(format!(
                "{} would have written {after} bytes of records, more than peer_record_bytes_max ({})",
                by.key, q.peer_bytes
            ));
        }
    }
    None
}

impl<S: RecordStorage + ?Sized> RecordBackend for LocalRecords<S> {
    fn call(&mut self, call: RecordCall) -> Pending<Result<RecordOutcome, RecordError>> {
        let storage = self.storage.clone();
        let mut db = storage.lock().unwrap_or_else(PoisonError::into_inner);
        Pending::Ready(self.call_in(&mut db, call))
    }
}

impl<S: RecordStorage + ?Sized> LocalRecords<S> {
    /// One call on storage the caller holds (the store worker holds it
    /// across a batch of calls with one sync to disk).
    pub(crate) fn call_in(
        &mut self,
        db: &mut S,
        call: RecordCall,
    ) -> Result<RecordOutcome, RecordError> {
        if let RecordCall::Usage = call {
            if self.usage.is_none() {
                self.usage = Some(Usage::read(db)?);
            }
            let mut out: Vec<(String, u64, u64)> = self
                .usage
                .as_ref()
                .map(|u| {
                    u.containers
                        .iter()
                        .filter_map(|(stored, (n, b))| {
                            stored
                                .strip_prefix(FORMAT_PREFIX)
                                .map(|c| (c.to_string(), *n, *b))
                        })
                        .filter(|(_, n, _)| *n > 0)
                        .collect()
                })
                .unwrap_or_default();
            out.sort();
            return Ok(RecordOutcome::Usage(out));
        }
        // Writes are checked against the quota, and counted once done.
        let nobody = Writer::default();
        let write = match &call {
            RecordCall::Add {
                container,
                key,
                value,
                by,
                ..
            }
            | RecordCall::Modify {
                container,
                key,
                value,
                by,
                ..
            } => Some((
                container.clone(),
                key.clone(),
                Some(value.len() as u64),
                by.clone(),
            )),
            RecordCall::Delete { container, key, .. } => {
                Some((container.clone(), key.clone(), None, nobody))
            }
            _ => None,
        };
        // A fenced write: its token is checked, and the highest seen raised,
        // before the write (a crash between them loses the write, never
        // lets an older token's write through).
        let fence = match &call {
            RecordCall::Add {
                container,
                key,
                fence: Some(f),
                ..
            }
            | RecordCall::Modify {
                container,
                key,
                fence: Some(f),
                ..
            }
            | RecordCall::Delete {
                container,
                key,
                fence: Some(f),
                ..
            } => Some((container, key, f)),
            _ => None,
        };
        if let Some((container, key, f)) = fence {
            check(container, key, None)?;
            if let Err(why) = crate::lock::validate_name(&f.lock) {
                return Err(RecordError::BadName {
                    what: "lock",
                    name: f.lock.clone(),
                    why: why.to_string(),
                });
            }
            match db.raise_fence(&f.lock, f.token) {
                Ok(None) => {}
                Ok(Some(highest)) => {
                    return Err(RecordError::StaleToken {
                        container: container.clone(),
                        key: key.clone(),
                        lock: f.lock.clone(),
                        token: f.token,
                        highest,
                    });
                }
                Err(e) => return Err(e.into()),
            }
        }
        let mut account = None;
        if let Some((container, key, new_len, by)) = write
            && let Ok(stored) = stored_name(&container)
        {
            if self.usage.is_none() {
                match Usage::read(db) {
                    Ok(u) => self.usage = Some(u),
                    Err(e) => return Err(e.into()),
                }
            }
            let old = db.footprint(&stored, &key)?;
            if let (Some(new_len), Some(usage)) = (new_len, &self.usage) {
                // An add of an existing key fails as EXISTS, not on quota.
                let is_add = matches!(call, RecordCall::Add { .. });
                if !(is_add && old.is_some())
                    && let Some(why) =
                        over_quota(&self.quota, usage, &stored, old.as_ref(), new_len, &by)
                {
                    return Err(RecordError::Quota {
                        container,
                        key,
                        why,
                    });
                }
            }
            account = Some((stored, old, new_len, by.key));
        }
        let result = match call {
            RecordCall::Add {
                container,
                key,
                value,
                by,
                ..
            } => add_by(db, &container, &key, &value, &by.key).map(RecordOutcome::Signature),
            RecordCall::Get { container, key } => {
                lookup(db, &container, &key).map(RecordOutcome::Record)
            }
            RecordCall::Modify {
                container,
                key,
                value,
                sig,
                by,
                ..
            } => {
                modify_by(db, &container, &key, &value, sig, &by.key).map(RecordOutcome::Signature)
            }
            RecordCall::Delete {
                container,
                key,
                sig,
                ..
            } => delete(db, &container, &key, sig).map(|()| RecordOutcome::Deleted),
            RecordCall::List { container } => list(db, &container).map(RecordOutcome::Records),
            RecordCall::Usage => unreachable!("answered above"),
        };
        if let (Ok(_), Some((stored, old, new_len, owner)), Some(usage)) =
            (&result, account, self.usage.as_mut())
        {
            if let Some((len, old_owner)) = &old {
                usage.count(&stored, old_owner, *len, -1);
            }
            if let Some(n) = new_len {
                usage.count(&stored, &owner, n, 1);
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::StateDb;

    const TOP: u64 = !COUNTER_MASK;

    fn open() -> (tempfile::TempDir, StateDb) {
        let dir = tempfile::tempdir().unwrap();
        let db = StateDb::open(dir.path()).unwrap();
        (dir, db)
    }

    /// Each limited writer's records and bytes are bounded, counted to
    /// whoever last wrote each record; an exempt writer is not counted
    /// against; a new store reads the owners back.
    #[test]
    fn quotas_count_each_writers_records_and_bytes() {
        let (_dir, db) = open();
        let db = Arc::new(Mutex::new(db));
        let quota = Quota {
            peer_records: 2,
            peer_bytes: 10,
            ..Quota::default()
        };
        let w = |k: &str, limited| Writer {
            key: k.into(),
            limited,
        };
        let (u1, u2, root) = (w("uid 1", true), w("uid 2", true), w("uid 0", false));
        enum Op {
            Add(&'static str, usize),
            Modify(&'static str, usize),
            Delete(&'static str),
        }
        use Op::*;
        let rows: Vec<(Writer, Op, &str)> = vec![
            (u1.clone(), Add("k1", 4), ""),
            (u1.clone(), Add("k2", 4), ""),
            (
                u1.clone(),
                Add("k3", 1),
                "uid 1 has written 2 records, the most peer_records_max allows",
            ),
            (u2.clone(), Add("k3", 1), ""),
            (root.clone(), Add("big", 100), ""),
            (
                u1.clone(),
                Modify("k1", 7),
                "uid 1 would have written 11 bytes of records, more than peer_record_bytes_max (10)",
            ),
            (u1.clone(), Modify("k1", 6), ""),
            // u2 rewrites u1's record: it is u2's now.
            (u2.clone(), Modify("k2", 2), ""),
            (u2.clone(), Add("k4", 1), "uid 2 has written 2 records"),
            (u1.clone(), Add("k5", 4), ""),
            (u1.clone(), Delete("k1"), ""),
            (u1.clone(), Add("k6", 6), ""),
        ];
        let mut r = LocalRecords::with_quota(db.clone(), quota);
        for (i, (by, op, want)) in rows.into_iter().enumerate() {
            let sig = |r: &mut LocalRecords<StateDb>, k: &str| match r.call(RecordCall::Get {
                container: "c".into(),
                key: k.into(),
            }) {
                Pending::Ready(Ok(RecordOutcome::Record(rec))) => rec.sig,
                _ => unreachable!(),
            };
            let call = match op {
                Add(k, n) => RecordCall::Add {
                    container: "c".into(),
                    key: k.into(),
                    value: vec![b'x'; n],
                    by,
                    fence: None,
                },
                Modify(k, n) => RecordCall::Modify {
                    container: "c".into(),
                    key: k.into(),
                    value: vec![b'y'; n],
                    sig: sig(&mut r, k),
                    by,
                    fence: None,
                },
                Delete(k) => RecordCall::Delete {
                    container: "c".into(),
                    key: k.into(),
                    sig: 0,
                    fence: None,
                },
            };
            match (r.call(call), want) {
                (Pending::Ready(Ok(_)), "") => {}
                (Pending::Ready(Err(e)), w) if !w.is_empty() => {
                    assert_eq!(e.code(), "LIMIT", "row {i}");
                    assert!(e.to_string().contains(w), "row {i}: {e}");
                }
                (Pending::Ready(got), _) => panic!("row {i}: {got:?}, want {want:?}"),
                (Pending::Later(_), _) => unreachable!(),
            }
        }
        // Read back from the store: u1 wrote k5 and k6 (2 records).
        let mut again = LocalRecords::with_quota(db, quota);
        match again.call(RecordCall::Add {
            container: "d".into(),
            key: "k".into(),
            value: vec![],
            by: u1,
            fence: None,
        }) {
            Pending::Ready(Err(e)) => {
                assert!(e.to_string().contains("uid 1 has written 2 records"), "{e}")
            }
            other => panic!("{other:?}"),
        }
    }

    /// A fenced write goes through only with a token at least the highest
    /// the store has seen for its lock; other locks are apart.
    #[test]
    fn a_fenced_write_needs_a_token_no_older_than_the_store_has_seen() {
        let (_dir, db) = open();
        let db = Arc::new(Mutex::new(db));
        let mut r = LocalRecords::new(db.clone());
        let f = |lock: &str, token| {
            Some(crate::proto::Fence {
                lock: lock.into(),
                token,
            })
        };
        let add = |k: &str, fence| RecordCall::Add {
            container: "c".into(),
            key: k.into(),
            value: b"v".to_vec(),
            by: Writer::default(),
            fence,
        };
        let del = |k: &str, fence| RecordCall::Delete {
            container: "c".into(),
            key: k.into(),
            sig: 0,
            fence,
        };
        // (call, Ok or the error's code and a part of its message)
        type Want = Result<(), (&'static str, &'static str)>;
        let rows: Vec<(RecordCall, Want)> = vec![
            (add("a", f("vol", 5)), Ok(())),
            (
                add("b", f("vol", 4)),
                Err((
                    "STALE_TOKEN",
                    "token 4 of lock \"vol\" is stale: the record store has seen token 5",
                )),
            ),
            (add("b", f("vol", 5)), Ok(())),
            (del("a", f("vol", 7)), Ok(())),
            (
                del("b", f("vol", 6)),
                Err(("STALE_TOKEN", "has seen token 7")),
            ),
            // Another lock is apart; an unfenced write is not checked.
            (add("c", f("other", 1)), Ok(())),
            (add("d", None), Ok(())),
            (
                add("e", f("bad\nname", 9)),
                Err(("BAD_NAME", "bad lock name")),
            ),
            // A stale write changes nothing: b is still there.
            (del("b", f("vol", 7)), Ok(())),
        ];
        for (i, (call, want)) in rows.into_iter().enumerate() {
            match (r.call(call), want) {
                (Pending::Ready(Ok(_)), Ok(())) => {}
                (Pending::Ready(Err(e)), Err((code, part))) => {
                    assert_eq!(e.code(), code, "row {i}: {e}");
                    assert!(e.to_string().contains(part), "row {i}: {e}");
                }
                (got, want) => panic!(
                    "row {i}: {:?}, want {want:?}",
                    matches!(got, Pending::Ready(Ok(_)))
                ),
            }
        }
        // Durable: a new service over the same store knows token 7.
        let mut again = LocalRecords::new(db);
        match again.call(add("f", f("vol", 6))) {
            Pending::Ready(Err(e)) => assert_eq!(e.code(), "STALE_TOKEN"),
            _ => panic!("stale token accepted"),
        }
    }

    #[test]
    fn quotas_count_records_and_bytes_per_container_and_in_all() {
        let (_dir, db) = open();
        let db = Arc::new(Mutex::new(db));
        let quota = Quota {
            container_records: 2,
            container_bytes: 10,
            total_bytes: 15,
            ..Quota::default()
        };
        let mut r = LocalRecords::with_quota(db.clone(), quota);
        let mut run = |call: RecordCall| match r.call(call) {
            Pending::Ready(Ok(RecordOutcome::Signature(s))) => Ok(s),
            Pending::Ready(Ok(_)) => Ok(0),
            Pending::Ready(Err(e)) => Err(e.code().to_string() + ": " + &e.to_string()),
            Pending::Later(_) => unreachable!(),
        };
        let add = |c: &str, k: &str, n: usize| RecordCall::Add {
            container: c.into(),
            key: k.into(),
            value: vec![b'x'; n],
            by: Writer::default(),
            fence: None,
        };
        // (call, expected: Ok or the start of the error)
        assert!(run(add("a", "k1", 4)).is_ok());
        assert!(run(add("a", "k2", 4)).is_ok());
        let e = run(add("a", "k3", 1)).unwrap_err();
        assert!(e.starts_with("LIMIT: record \"k3\" in container \"a\": the container holds 2 records, the most record_container_max allows"), "{e}");
        // An existing key is EXISTS, not a quota error.
        assert!(run(add("a", "k1", 1)).unwrap_err().starts_with("EXISTS"));
        // Growing a record past the container's bytes.
        let sig = match r.call(RecordCall::Get {
            container: "a".into(),
            key: "k1".into(),
        }) {
            Pending::Ready(Ok(RecordOutcome::Record(rec))) => rec.sig,
            _ => unreachable!(),
        };
        let mut run = |call: RecordCall| match r.call(call) {
            Pending::Ready(Ok(_)) => Ok(()),
            Pending::Ready(Err(e)) => Err(e.code().to_string() + ": " + &e.to_string()),
            Pending::Later(_) => unreachable!(),
        };
        let modify = |n: usize, sig: u64| RecordCall::Modify {
            container: "a".into(),
            key: "k1".into(),
            value: vec![b'y'; n],
            sig,
            by: Writer::default(),
            fence: None,
        };
        let e = run(modify(7, sig)).unwrap_err();
        assert!(
            e.contains(
                "the container would hold 11 bytes, more than record_container_bytes_max (10)"
            ),
            "{e}"
        );
        assert!(run(modify(6, sig)).is_ok());
        // The whole store: 10 bytes in a, 5 more fit, 6 do not.
        assert!(
            run(add("b", "k", 6))
                .unwrap_err()
                .contains("the record store would hold 16 bytes, more than record_bytes_max (15)")
        );
        assert!(run(add("b", "k", 5)).is_ok());
        // A delete frees its share.
        assert!(
            run(RecordCall::Delete {
                container: "b".into(),
                key: "k".into(),
                sig: 0,
                fence: None,
            })
            .is_ok()
        );
        assert!(run(add("b", "k", 5)).is_ok());
        // A new LocalRecords over the same store reads what it holds.
        let mut again = LocalRecords::with_quota(db, quota);
        match again.call(add("c", "k", 1)) {
            Pending::Ready(Err(e)) => assert_eq!(e.code(), "LIMIT"),
            _ => panic!("the store is full"),
        }
    }

    #[test]
    fn signature_rules() {
        for (random, first) in [
            (0u16, 0x0000_0000_0000_0001u64),
            (1, 0x0001_0000_0000_0001),
            (0xabcd, 0xabcd_0000_0000_0001),
            (0xffff, 0xffff_0000_0000_0001),
        ] {
            assert_eq!(first_signature(random), first, "{random:#x}");
        }
        for (sig, next) in [
            (0x0000_0000_0000_0001u64, 0x0000_0000_0000_0002u64),
            (0xabcd_0000_0000_0001, 0xabcd_0000_0000_0002),
            (0xabcd_0000_0000_ffff, 0xabcd_0000_0001_0000),
            (0xffff_7fff_ffff_fffe, 0xffff_7fff_ffff_ffff),
            (0xffff_ffff_ffff_fffe, 0xffff_ffff_ffff_ffff),
            // the counter wraps to 1, never to 0, and keeps the generation
            (0xffff_ffff_ffff_ffff, 0xffff_0000_0000_0001),
            (0x0000_ffff_ffff_ffff, 0x0000_0000_0000_0001),
            (0xabcd_ffff_ffff_ffff, 0xabcd_0000_0000_0001),
            // a counter of 0 (never stored) goes to 1
            (0xabcd_0000_0000_0000, 0xabcd_0000_0000_0001),
            (0, 1),
        ] {
            assert_eq!(next_signature(sig), next, "{sig:#018x}");
        }
    }

    #[test]
    fn add_lookup_modify_delete_list() {
        let (_dir, mut db) = open();
        let s1 = add(&mut db, "net", "10.0.0.1", b"a").unwrap();
        assert_eq!(s1 & COUNTER_MASK, 1);
        assert_eq!(
            lookup(&db, "net", "10.0.0.1").unwrap(),
            Record {
                key: "10.0.0.1".into(),
                value: b"a".to_vec(),
                sig: s1
            }
        );
        let s2 = modify(&mut db, "net", "10.0.0.1", b"bb", s1).unwrap();
        assert_eq!(s2, next_signature(s1));
        assert_eq!(s2 & TOP, s1 & TOP, "generation is kept");
        let s3 = modify(&mut db, "net", "10.0.0.1", b"", s2).unwrap();
        assert_eq!(s3 & COUNTER_MASK, 3);
        let r = lookup(&db, "net", "10.0.0.1").unwrap();
        assert_eq!((r.value.as_slice(), r.sig), (&b""[..], s3));

        // Same key in another container is another record.
        let o = add(&mut db, "other", "10.0.0.1", b"o").unwrap();
        let z = add(&mut db, "net", "z", b"z").unwrap();
        let b = add(&mut db, "net", "b", b"b").unwrap();
        let keys = |db: &StateDb, c| -> Vec<(String, u64)> {
            list(db, c)
                .unwrap()
                .into_iter()
                .map(|r| (r.key, r.sig))
                .collect()
        };
        assert_eq!(
            keys(&db, "net"),
            vec![("10.0.0.1".into(), s3), ("b".into(), b), ("z".into(), z)]
        );
        assert_eq!(keys(&db, "other"), vec![("10.0.0.1".into(), o)]);
        assert_eq!(keys(&db, "empty"), vec![]);

        delete(&mut db, "net", "10.0.0.1", s3).unwrap();
        delete(&mut db, "net", "z", 0).unwrap();
        assert_eq!(keys(&db, "net"), vec![("b".into(), b)]);
        assert_eq!(keys(&db, "other"), vec![("10.0.0.1".into(), o)]);
    }

    #[test]
    fn exists_noent_and_collision() {
        let (_dir, mut db) = open();
        let s1 = add(&mut db, "c", "k", b"v1").unwrap();
        let err = add(&mut db, "c", "k", b"v2").unwrap_err();
        assert_eq!(err.code(), "EXISTS");
        assert!(
            matches!(&err, RecordError::Exists { container, key } if container == "c" && key == "k")
        );
        assert_eq!(lookup(&db, "c", "k").unwrap().value, b"v1");

        for err in [
            lookup(&db, "c", "nope").unwrap_err(),
            lookup(&db, "nope", "k").unwrap_err(),
            modify(&mut db, "c", "nope", b"x", s1).unwrap_err(),
            delete(&mut db, "c", "nope", s1).unwrap_err(),
            delete(&mut db, "c", "nope", 0).unwrap_err(),
        ] {
            assert_eq!(err.code(), "NOENT", "{err}");
            let msg = err.to_string();
            assert!(msg.contains("\"nope\""), "{msg}");
        }

        let s2 = modify(&mut db, "c", "k", b"v2", s1).unwrap();
        // A writer that still holds s1 must not overwrite v2 ...
        let err = modify(&mut db, "c", "k", b"lost", s1).unwrap_err();
        assert_eq!(err.code(), "COLLISION");
        match &err {
            RecordError::Collision {
                container,
                key,
                current,
                given,
            } => {
                assert_eq!((container.as_str(), key.as_str()), ("c", "k"));
                assert_eq!((*current, *given), (s2, s1));
            }
            other => panic!("{other:?}"),
        }
        let msg = err.to_string();
        assert!(msg.contains("\"c\"") && msg.contains("\"k\""), "{msg}");
        // ... nor delete it; signature 0 never matches in modify.
        assert_eq!(
            delete(&mut db, "c", "k", s1).unwrap_err().code(),
            "COLLISION"
        );
        assert_eq!(
            modify(&mut db, "c", "k", b"x", 0).unwrap_err().code(),
            "COLLISION"
        );
        let r = lookup(&db, "c", "k").unwrap();
        assert_eq!((r.value.as_slice(), r.sig), (&b"v2"[..], s2));

        // Signature 0 deletes whatever the signature.
        delete(&mut db, "c", "k", 0).unwrap();
        assert_eq!(lookup(&db, "c", "k").unwrap_err().code(), "NOENT");
        assert_eq!(delete(&mut db, "c", "k", s2).unwrap_err().code(), "NOENT");
    }

    #[test]
    fn re_add_after_delete_is_a_new_generation() {
        let (_dir, mut db) = open();
        let s1 = add(&mut db, "c", "k", b"1").unwrap();
        let s2 = modify(&mut db, "c", "k", b"2", s1).unwrap();
        delete(&mut db, "c", "k", s2).unwrap();
        let t1 = add(&mut db, "c", "k", b"3").unwrap();
        assert_eq!(t1 & COUNTER_MASK, 1);
        // Signatures from the old generation cannot match the new record:
        // s2's counter is 2, t1's is 1.
        // (s1 could match t1 if the random generations coincide, 1 in 2^16.)
        assert_eq!(
            modify(&mut db, "c", "k", b"x", s2).unwrap_err().code(),
            "COLLISION"
        );
        assert_eq!(
            delete(&mut db, "c", "k", s2).unwrap_err().code(),
            "COLLISION"
        );
        assert_eq!(lookup(&db, "c", "k").unwrap().value, b"3");

        // The generation is random: nine adds of one key giving nine equal
        // top halves has probability 2^-128.
        let mut gens = vec![t1 & TOP];
        for _ in 0..8 {
            delete(&mut db, "c", "k", 0).unwrap();
            gens.push(add(&mut db, "c", "k", b"").unwrap() & TOP);
        }
        gens.dedup();
        assert!(gens.len() > 1, "{gens:x?}");
    }

    #[test]
    fn names_and_sizes_at_the_limits() {
        let (_dir, mut db) = open();
        let k255 = "k".repeat(MAX_NAME);
        let k256 = "k".repeat(MAX_NAME + 1);
        // 255 bytes in multi-byte characters (85 × 3) is fine too.
        let c255 = "€".repeat(MAX_NAME / 3);
        assert_eq!(c255.len(), MAX_NAME);
        let big = vec![0xa5u8; MAX_VALUE];
        let too_big = vec![0u8; MAX_VALUE + 1];

        let s = add(&mut db, &c255, &k255, &big).unwrap();
        let r = lookup(&db, &c255, &k255).unwrap();
        assert_eq!((r.value.len(), r.sig), (MAX_VALUE, s));
        assert!(r.value == big);
        let s = modify(&mut db, &c255, &k255, &big[1..], s).unwrap();

        let err = add(&mut db, "c", "k", &too_big).unwrap_err();
        assert_eq!(err.code(), "TOO_LARGE");
        assert!(matches!(err, RecordError::TooLarge { len, .. } if len == MAX_VALUE + 1));
        assert_eq!(
            modify(&mut db, &c255, &k255, &too_big, s)
                .unwrap_err()
                .code(),
            "TOO_LARGE"
        );
        assert_eq!(
            lookup(&db, &c255, &k255).unwrap().value.len(),
            MAX_VALUE - 1
        );
        assert_eq!(lookup(&db, "c", "k").unwrap_err().code(), "NOENT");

        let bad: [(&str, &str, &str); 6] = [
            ("c", &k256, "key"),
            (&k256, "k", "container"),
            ("c", "", "key"),
            ("", "k", "container"),
            ("c", "a\0b", "key"),
            ("a\0b", "k", "container"),
        ];
        for (c, k, what) in bad {
            let errs = [
                add(&mut db, c, k, b"v").unwrap_err(),
                lookup(&db, c, k).unwrap_err(),
                modify(&mut db, c, k, b"v", 1).unwrap_err(),
                delete(&mut db, c, k, 0).unwrap_err(),
            ];
            for err in errs {
                assert_eq!(err.code(), "BAD_NAME", "{err}");
                assert!(matches!(err, RecordError::BadName { what: w, .. } if w == what));
            }
        }
        assert_eq!(list(&db, &k256).unwrap_err().code(), "BAD_NAME");
        assert_eq!(list(&db, "").unwrap_err().code(), "BAD_NAME");
        assert_eq!(list(&db, "c").unwrap(), vec![]);
    }

    #[test]
    fn containers_are_stored_under_the_format_prefix() {
        let (_dir, mut db) = open();
        let s = add(&mut db, "net", "k", b"v").unwrap();
        assert_eq!(
            db.record_get("clinit1_net", "k").unwrap(),
            Some((b"v".to_vec(), s))
        );
        assert_eq!(db.record_get("net", "k").unwrap(), None);
        // Another format's container of the same name is not seen.
        assert!(db.record_insert("clinit2_net", "x", b"v", 7, "").unwrap());
        assert_eq!(list(&db, "net").unwrap().len(), 1);
    }

    #[test]
    fn records_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = StateDb::open(dir.path()).unwrap();
        let s = add(&mut db, "c", "a", b"one").unwrap();
        let s = modify(&mut db, "c", "a", &[0, 1, 2, 255], s).unwrap();
        // A signature with the top bit set round-trips through SQLite's
        // signed INTEGER unchanged.
        let high = first_signature(0xffff);
        assert!(db.record_insert("clinit1_c", "h", b"", high, "").unwrap());
        let before = list(&db, "c").unwrap();
        drop(db);
        let mut db = StateDb::open(dir.path()).unwrap();
        let after = list(&db, "c").unwrap();
        assert_eq!(after, before);
        assert_eq!(
            after,
            vec![
                Record {
                    key: "a".into(),
                    value: vec![0, 1, 2, 255],
                    sig: s
                },
                Record {
                    key: "h".into(),
                    value: vec![],
                    sig: high
                }
            ]
        );
        // The reopened store keeps enforcing the signatures it stored.
        let h2 = modify(&mut db, "c", "h", b"x", high).unwrap();
        assert_eq!(h2, 0xffff_0000_0000_0002);
        modify(&mut db, "c", "a", b"x", s).unwrap();
    }

    #[test]
    fn record_serializes_with_its_signature() {
        let r = Record {
            key: "k".into(),
            value: vec![1, 2],
            sig: 0xffff_0000_0000_0001,
        };
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(
            json,
            r#"{"key":"k","value":[1,2],"sig":18446462598732840961}"#
        );
        assert_eq!(serde_json::from_str::<Record>(&json).unwrap(), r);
    }
}
