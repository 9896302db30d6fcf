//! The backend seams: what the daemon keeps, and the traits it keeps it
//! through. Nothing above these traits knows which implementation it talks
//! to; start-up picks one (today [`sqlite`] and the in-process lock
//! service, [`crate::lock::service`]; later etcd for a cluster).
//!
//! - [`StateStore`]: the daemon's persistent state — goals, entries stopped
//!   by an operator, the children it started, the lock token reservation.
//! - [`RecordStorage`]: compare-and-swap storage of records; the rules
//!   (names, sizes, signatures) are in [`crate::records`], which also turns
//!   it into a [`RecordBackend`].
//! - [`RecordBackend`] and [`LockBackend`]: the record store and the lock
//!   service as the daemon's handlers see them.
//!
//! Every call that may need a network round trip in some implementation
//! returns a [`Pending`]: the answer now, or a channel that answers later.
//! The daemon never waits for a `Later` in its event loop: the reply of the
//! request completes when the channel does, in the request's connection
//! task, so a slow backend neither blocks other clients nor reorders a
//! connection's replies (a connection's requests are answered in order).
//!
//! The status file ([`StatusFile`]) is always local.

pub mod sqlite;
pub mod worker;

use crate::lock::{ContainerStatus, HolderInfo, LockMode};
use crate::proto::Reply;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tokio::sync::oneshot;

/// Every store error names the file or directory it concerns.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot write {path}: {err}")]
    Write { path: PathBuf, err: std::io::Error },
    /// Creating or opening the state directory, its lock file or syncing it.
    #[error("cannot open {path}: {err}")]
    Open { path: PathBuf, err: std::io::Error },
    /// Any SQLite failure (open, schema, query, transaction) on the database.
    #[error("state database {path}: {err}")]
    Db { path: PathBuf, err: String },
    /// Another process (another clinit daemon) holds the state directory's lock.
    #[error(
        "state directory {dir} is in use by another clinit daemon (lock on {dir}/clinit.db.lock is held)"
    )]
    Busy { dir: PathBuf },
    /// The database was written by a newer clinit; it is left untouched.
    #[error(
        "state database {path} has schema version {found}, newer than the {known} this clinit knows; refusing to use it (upgrade clinit)"
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    /// A backend that answers later went away before it answered.
    #[error("the state backend stopped before it answered")]
    Gone,
    /// The sync that ends a group commit failed: the write may or may not
    /// be on disk.
    #[error("{0}; the write may or may not be on disk, read it back")]
    Unsynced(String),
}

/// A result now, or one that a backend delivers later through a channel.
#[derive(Debug)]
pub enum Pending<T> {
    Ready(T),
    Later(oneshot::Receiver<T>),
}

impl<T> Pending<T> {
    /// The result, waiting for it if it comes later; `None` if the backend
    /// dropped the channel without answering.
    pub async fn wait(self) -> Option<T> {
        match self {
            Pending::Ready(t) => Some(t),
            Pending::Later(rx) => rx.await.ok(),
        }
    }
}

/// A child process the daemon started, recorded so that a daemon killed by
/// SIGKILL can stop it on its next start.
///
/// `pid` and `pgid` are always positive (a record must never lead to
/// `kill(0, ..)` or `kill(-1, ..)`). `pid`, `start_ticks` and `boot_id`
/// together identify the process even after its pid has been reused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChildRecord {
    pub pid: i32,
    pub pgid: i32,
    /// field 22 of /proc/PID/stat (clock ticks since boot)
    pub start_ticks: u64,
    /// /proc/sys/kernel/random/boot_id at spawn time
    pub boot_id: String,
    pub group: String,
    pub tag: String,
}

/// One change to the persistent state. The daemon collects the ops of one
/// event-loop turn and hands them to [`StateStore::apply`] together.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreOp {
    /// The level a group was last told (its goal).
    SetGoal { group: String, level: String },
    /// An entry stopped with `clinit stop TAG` (true) or started again with
    /// `clinit start TAG` (false); persistent.
    SetDisabled { tag: String, disabled: bool },
    /// Who stopped a disabled entry and when (Unix seconds), for `clinit
    /// explain`; follows the `SetDisabled` it describes.
    NoteDisabled { tag: String, by: String, at: i64 },
    /// Forget everything kept for a deleted entry (today: its disabled
    /// flag). Child records are deliberately kept: they describe processes
    /// that may still be running and are removed by [`StoreOp::RemoveChild`]
    /// once reaped.
    ForgetEntry { tag: String },
    /// Record a started child; a record with the same pid is replaced.
    AddChild(ChildRecord),
    /// Forget a reaped child (no-op if unknown).
    RemoveChild { pid: i32 },
}

/// Everything [`StateStore::load`] returns: goals as `(group, level)`
/// ordered by group, disabled tags ordered by tag, children ordered by pid.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Persisted {
    pub goals: Vec<(String, String)>,
    pub disabled: Vec<String>,
    pub children: Vec<ChildRecord>,
}

/// Who disabled an entry, and when (Unix seconds); `by` is empty when the
/// store does not know (an entry disabled by an older clinit).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DisabledNote {
    pub tag: String,
    pub by: String,
    pub at: Option<i64>,
}

/// The daemon's persistent state.
pub trait StateStore: Send {
    /// Where the state lives, for log messages.
    fn location(&self) -> String;
    /// Everything kept, at start-up.
    fn load(&mut self) -> Result<Persisted, StoreError>;
    /// Who disabled the disabled entries, at start-up.
    fn disabled_notes(&mut self) -> Result<Vec<DisabledNote>, StoreError>;
    /// Apply one event-loop turn's ops atomically; once `Ok`, they are
    /// durable. The daemon sends that turn's replies only after.
    fn apply(&mut self, ops: Vec<StoreOp>) -> Pending<Result<(), StoreError>>;
    /// The highest lock token that may have been handed out (0 at first).
    fn token_floor(&mut self) -> Result<u64, StoreError>;
    /// Durably record that tokens up to `upto` may be handed out.
    fn reserve_tokens(&mut self, upto: u64) -> Pending<Result<(), StoreError>>;
}

/// Outcome of a compare-and-swap on one record ([`RecordStorage::replace`],
/// [`RecordStorage::remove`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cas {
    /// The record had the expected signature and was changed.
    Done,
    /// No record with that key in that container; nothing was changed.
    Missing,
    /// The record's signature is this one, not the expected one; nothing
    /// was changed.
    Stale(u64),
}

/// Storage of records with compare-and-swap on their signatures. Container
/// names here are the stored (format-prefixed) names; each writing call is
/// atomic and durable on `Ok`.
pub trait RecordStorage: Send {
    /// One record's value and signature, if the key is there.
    fn get(&self, container: &str, key: &str) -> Result<Option<(Vec<u8>, u64)>, StoreError>;
    /// Every record of a container as `(key, value, signature)`, by key.
    fn list(&self, container: &str) -> Result<Vec<(String, Vec<u8>, u64)>, StoreError>;
    /// Add a record written by `owner` unless the key exists (`Ok(false)`:
    /// nothing written).
    fn insert(
        &mut self,
        container: &str,
        key: &str,
        value: &[u8],
        sig: u64,
        owner: &str,
    ) -> Result<bool, StoreError>;
    /// Replace value, signature and owner (the writer) if the signature is
    /// `expected`.
    fn replace(
        &mut self,
        container: &str,
        key: &str,
        value: &[u8],
        expected: u64,
        new: u64,
        owner: &str,
    ) -> Result<Cas, StoreError>;
    /// The length of a record's value and its owner, if the key is there
    /// (without reading the value).
    fn footprint(&self, container: &str, key: &str) -> Result<Option<(u64, String)>, StoreError>;
    /// Delete if the signature is `expected` (any signature for `None`).
    fn remove(
        &mut self,
        container: &str,
        key: &str,
        expected: Option<u64>,
    ) -> Result<Cas, StoreError>;
    /// For each stored container name and owner: the records and bytes of
    /// values that owner last wrote there.
    fn usage(&self) -> Result<Vec<Usage>, StoreError>;
    /// Raise the highest token seen for `lock` to `token` (durable on
    /// `Ok`); `Ok(Some(highest))`, changing nothing, if `token` is below
    /// the highest seen.
    fn raise_fence(&mut self, lock: &str, token: u64) -> Result<Option<u64>, StoreError>;
}

/// What one owner's records in one stored container hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Usage {
    pub container: String,
    pub owner: String,
    pub records: u64,
    pub bytes: u64,
}

/// Who writes a record: the peer's key (`uid N`, `cert SUBJECT`; see
/// `Peer::key`), kept with the record, and whether the per-user record
/// quotas apply to them (not to root and the daemon's user).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Writer {
    pub key: String,
    pub limited: bool,
}

/// A record operation, as the record store sees it (values as bytes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordCall {
    Add {
        container: String,
        key: String,
        value: Vec<u8>,
        by: Writer,
        fence: Option<crate::proto::Fence>,
    },
    Get {
        container: String,
        key: String,
    },
    Modify {
        container: String,
        key: String,
        value: Vec<u8>,
        sig: u64,
        by: Writer,
        fence: Option<crate::proto::Fence>,
    },
    /// `sig` 0 deletes whatever the record's signature.
    Delete {
        container: String,
        key: String,
        sig: u64,
        fence: Option<crate::proto::Fence>,
    },
    List {
        container: String,
    },
    /// Records and bytes per container (for `/metrics`).
    Usage,
}

impl RecordCall {
    /// Does it write (add, modify, delete)?
    pub fn writes(&self) -> bool {
        !matches!(
            self,
            RecordCall::Get { .. } | RecordCall::List { .. } | RecordCall::Usage
        )
    }
}

/// What a successful [`RecordCall`] gives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordOutcome {
    /// The new signature of an added or modified record.
    Signature(u64),
    Record(crate::records::Record),
    Records(Vec<crate::records::Record>),
    Deleted,
    /// (container, records, bytes), by container name.
    Usage(Vec<(String, u64, u64)>),
}

/// The record store, as the daemon's handlers use it.
pub trait RecordBackend: Send {
    fn call(
        &mut self,
        call: RecordCall,
    ) -> Pending<Result<RecordOutcome, crate::records::RecordError>>;
}

/// A lock request, as the lock service sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LockCall {
    Acquire {
        name: String,
        mode: LockMode,
        wait: bool,
        timeout_ms: Option<u64>,
        lease: Option<u64>,
    },
    Release {
        name: String,
        lease: Option<u64>,
    },
    LeaseGrant {
        ttl_ms: u64,
    },
    LeaseRenew {
        lease: u64,
    },
    LeaseRevoke {
        lease: u64,
    },
}

/// A change the lock service made, for the event stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LockChange {
    Granted {
        name: String,
        mode: LockMode,
        token: u64,
        holder: HolderInfo,
    },
    Released {
        name: String,
        mode: LockMode,
        token: u64,
        holder: HolderInfo,
    },
    /// Released because its holder's connection closed, its lease expired
    /// or was revoked, or its token could not be reserved.
    Lost {
        name: String,
        mode: LockMode,
        token: u64,
        holder: HolderInfo,
        why: crate::lock::LostWhy,
    },
}

/// The lock service, as the daemon's handlers use it. Holders are
/// connection ids (from 1 up) or lease ids; replies are the protocol's
/// (`Granted`, `Lease`, `Ok`, or an error that names the lock).
pub trait LockBackend: Send {
    /// Serve one request of connection `conn`; `who` describes the holder
    /// for listings.
    fn call(&mut self, conn: u64, call: LockCall, who: HolderInfo) -> Pending<Reply>;
    /// Connection `conn` closed: release its locks, cancel its waits.
    fn connection_closed(&mut self, conn: u64);
    /// Time passed: expire waits and leases that are due.
    fn tick(&mut self, now: Instant);
    /// When [`LockBackend::tick`] is next needed.
    fn next_deadline(&self) -> Option<Instant>;
    /// Holders and waiters of one lock or of all.
    fn status(&self, name: Option<&str>) -> Vec<ContainerStatus>;
    /// Nothing held, waited for or leased (`clinit lockd` may exit).
    fn is_idle(&self) -> bool;
    /// Locks held and waited for by user `uid` (for `peer_locks_max`).
    fn held_or_waited_by(&self, who: crate::lock::Who) -> usize;
    /// Whether `lease` is live (for `peer_leases_max`).
    fn has_lease(&self, lease: u64) -> bool;
    /// The changes made since the last call.
    fn take_changes(&mut self) -> Vec<LockChange>;
    /// The daemon exits: drop parked requests unanswered.
    fn shutdown(&mut self);
    /// Hand-over times: from the handling of what let a lock go (a
    /// release, a holder gone, a lease expired) to the grant passed to the
    /// waiting connection.
    fn handovers(&self) -> crate::daemon::metrics::Histogram {
        crate::daemon::metrics::Histogram::default()
    }
}

/// The status file (Cluster::Init's clstat), always a local file, replaced
/// atomically.
pub struct StatusFile {
    path: PathBuf,
}

impl StatusFile {
    pub fn new(path: &Path) -> StatusFile {
        StatusFile {
            path: path.to_path_buf(),
        }
    }

    /// Replace the status file contents (Cluster::Init clstat format).
    /// Readers see the old file or the new one, never a mix; it is not
    /// synced to disk: it is a view of the daemon's state, rewritten at
    /// every start and after every change, and syncing it (twice, file and
    /// directory) on the event loop held up every request under load.
    pub fn write_status(&mut self, text: &str) -> Result<(), StoreError> {
        replace_file(&self.path, text.as_bytes(), false, None).map_err(|err| StoreError::Write {
            path: self.path.clone(),
            err,
        })
    }
}

/// Write a file atomically: temp file in the same directory, fsync, rename,
/// fsync of the directory (so the rename itself is durable). A file being
/// replaced keeps its permissions and, when the daemon may, its owner.
pub fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    replace_file(path, data, true, None)
}

/// [`write_atomic`] of a file that gets `mode` from its first byte (a
/// private key: 0600), whatever a file it replaces had.
pub fn write_atomic_mode(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    replace_file(path, data, true, Some(mode))
}

/// Write a file through a temp file and a rename; with `durable`, sync the
/// file before the rename and the directory after. With `mode` the temp
/// file is made with it; without, a replaced file's permissions and owner
/// are kept. A failed write leaves no temp file behind.
fn replace_file(path: &Path, data: &[u8], durable: bool, mode: Option<u32>) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok().filter(|_| mode.is_none());
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp.{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    // A temp file left by a crashed writer of the same pid would keep its
    // own mode: with `mode` it is made anew.
    if mode.is_some() {
        let _ = std::fs::remove_file(&tmp);
    }
    let written = (|| {
        let mut f =
            crate::config::files::create(&tmp, mode.unwrap_or(crate::config::files::SHARED))?;
        if let Some(m) = &meta {
            f.set_permissions(m.permissions())?;
            let _ = std::os::unix::fs::fchown(&f, Some(m.uid()), Some(m.gid()));
        }
        f.write_all(data)?;
        if durable {
            f.sync_all()?;
        }
        drop(f);
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    if durable
        && let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_is_replaced_whole_and_no_temp_file_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("clstat");
        let mut s = StatusFile::new(&p);
        s.write_status("Cluster::Init::Group a 1 DONE\n").unwrap();
        s.write_status("Cluster::Init::Group a 2 STARTING\n")
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "Cluster::Init::Group a 2 STARTING\n"
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        let err = StatusFile::new(&dir.path().join("no/such/dir/clstat"))
            .write_status("x")
            .unwrap_err();
        assert!(err.to_string().contains("no/such/dir/clstat"));
    }
}
