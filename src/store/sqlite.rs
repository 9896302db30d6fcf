//! The daemon's persistent state in one SQLite file, `DIR/clinit.db`.
//!
//! What is kept: each group's goal (the level it was last told), the entries
//! stopped with `clinit stop TAG`, the children the daemon started (so
//! that a daemon killed by SIGKILL can stop them on its next start, see
//! [`crate::supervisor::leftovers`]), the highest lock token that may have been handed
//! out ([`StateDb::reserve_tokens`]) and the records of
//! [`crate::records`] with their signatures.
//!
//! This file is the one home of the daemon's SQL: [`crate::records`] holds
//! the rules (names, sizes, signatures) and calls the `record_*` methods
//! here, which do storage and compare-and-swap only.
//!
//! # Invariants
//!
//! - One daemon per state directory: [`StateDb::open`] takes a non-blocking
//!   exclusive `flock` on `DIR/clinit.db.lock` and holds it until the
//!   [`StateDb`] is dropped. The lock file is opened close-on-exec, so
//!   children never inherit it and the lock dies with the daemon.
//! - Durability: WAL journal with `synchronous=FULL`; once a writing method
//!   ([`StateDb::apply`], [`StateDb::reserve_tokens`], the `record_*`
//!   writers) has returned `Ok`, its change survives SIGKILL of the daemon
//!   and power loss.
//! - Atomicity: each writing method is one transaction; after an `Err` the
//!   database holds none of that call's changes.
//! - Signatures are `u64` stored bit for bit in SQLite's signed 64-bit
//!   INTEGER (`sig as i64`), so a signature with the top bit set round-trips
//!   unchanged; a stored signature is never 0 (CHECK constraint).
//! - Schema: versioned with `PRAGMA user_version`; [`StateDb::open`] upgrades
//!   an older file in place (in one transaction) and refuses a newer one
//!   with [`StoreError::TooNew`].

use std::fs::{DirBuilder, File};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::{
    Cas, ChildRecord, DisabledNote, Pending, Persisted, RecordStorage, StateStore, StoreError,
    StoreOp, Usage,
};

/// The schema version this code writes and understands.
///
/// - 1: `goals`, `disabled`, `children`.
/// - 2: adds `meta` (named integers; today `token_reserved`) and `records`.
/// - 3: `disabled` gains `by_whom` and `at` (who stopped the entry, when).
pub const SCHEMA_VERSION: i64 = 5;

/// The `meta` row holding the highest lock token that may have been handed
/// out (see [`StateDb::reserve_tokens`]).
const TOKEN_RESERVED: &str = "token_reserved";

/// File name of the database inside the state directory.
pub const DB_FILE: &str = "clinit.db";
/// File name of the lock file inside the state directory.
pub const LOCK_FILE: &str = "clinit.db.lock";

/// The open state database. Holds the state directory's lock for its whole
/// life; dropping it closes the database, then releases the lock.
pub struct StateDb {
    // Field order matters: the connection is closed before the lock is
    // released, so no other daemon can open the file while we still hold it.
    conn: Connection,
    path: PathBuf,
    _lock: Flock<File>,
}

impl StateDb {
    /// Open or create DIR/clinit.db (creating DIR with mode 0700 if
    /// missing). Takes a non-blocking exclusive flock on DIR/clinit.db.lock
    /// held for the StateDb's life (another daemon on the same state dir →
    /// [`StoreError::Busy`] naming the dir). Migrates an older schema in
    /// place; a newer one is refused with [`StoreError::TooNew`].
    pub fn open(dir: &Path) -> Result<StateDb, StoreError> {
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |err| StoreError::Open { path, err }
        };
        if !dir.is_dir() {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io_err(dir))?;
        }
        // The state is the daemon's alone: the directory 0700 (one made by
        // a package or an operator is narrowed, said in the log), the
        // database and its journals 0600.
        private(dir, 0o700).map_err(io_err(dir))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock_file = crate::config::files::lock(&lock_path).map_err(io_err(&lock_path))?;
        let lock = match Flock::lock(lock_file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((_, Errno::EWOULDBLOCK)) => {
                return Err(StoreError::Busy {
                    dir: dir.to_path_buf(),
                });
            }
            Err((_, errno)) => {
                return Err(StoreError::Open {
                    path: lock_path,
                    err: errno.into(),
                });
            }
        };

        let path = dir.join(DB_FILE);
        for f in [DB_FILE, "clinit.db-wal", "clinit.db-shm"] {
            let p = dir.join(f);
            if f == DB_FILE || p.exists() {
                precreate_private(&p).map_err(io_err(&p))?;
            }
        }
        let mut conn = Connection::open(&path).map_err(db_err(&path))?;
        // Refuse a newer file before anything (even the journal mode) is
        // written to it; `migrate` checks again inside its transaction.
        let found: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(db_err(&path))?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::TooNew {
                path,
                found,
                known: SCHEMA_VERSION,
            });
        }
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .map_err(db_err(&path))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Db {
                path,
                err: format!("cannot switch to WAL journal (journal_mode is {mode})"),
            });
        }
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(db_err(&path))?;
        migrate(&mut conn, &path)?;
        // The directory entries of a new database (and of a new state
        // directory) must survive power loss too. SQLite syncs the
        // directory when it creates the WAL, not when it creates the main
        // file; one fsync here covers both and is cheap.
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(dir))?;
        Ok(StateDb {
            conn,
            path,
            _lock: lock,
        })
    }

    /// The database file, `DIR/clinit.db`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Read everything back: goals ordered by group, disabled tags ordered
    /// by tag, children ordered by pid.
    pub fn load(&self) -> Result<Persisted, StoreError> {
        self.load_inner().map_err(|e| self.db_err(e))
    }

    fn load_inner(&self) -> rusqlite::Result<Persisted> {
        // One read transaction, so the three tables are one consistent view.
        let tx = self.conn.unchecked_transaction()?;
        let goals = tx
            .prepare_cached("SELECT grp, level FROM goals ORDER BY grp")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let disabled = tx
            .prepare_cached("SELECT tag FROM disabled ORDER BY tag")?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let children = tx
            .prepare_cached(
                "SELECT pid, pgid, start_ticks, boot_id, grp, tag FROM children ORDER BY pid",
            )?
            .query_map([], |r| {
                Ok(ChildRecord {
                    pid: r.get(0)?,
                    pgid: r.get(1)?,
                    start_ticks: {
                        let t: i64 = r.get(2)?;
                        u64::try_from(t)
                            .map_err(|_| rusqlite::Error::IntegralValueOutOfRange(2, t))?
                    },
                    boot_id: r.get(3)?,
                    group: r.get(4)?,
                    tag: r.get(5)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        tx.finish()?;
        Ok(Persisted {
            goals,
            disabled,
            children,
        })
    }

    /// Apply ops in ONE transaction (the daemon batches one event-loop
    /// turn's ops); an empty slice does nothing. On `Ok` the whole batch is
    /// durable; on `Err` none of it was written.
    pub fn apply(&mut self, ops: &[StoreOp]) -> Result<(), StoreError> {
        if ops.is_empty() {
            return Ok(());
        }
        apply_inner(&mut self.conn, ops).map_err(|e| self.db_err(e))
    }

    /// The highest lock token that may have been handed out: the value last
    /// stored by [`StateDb::reserve_tokens`], 0 if it never was. A daemon
    /// that starts again hands out only tokens above this floor, so that
    /// tokens keep increasing across restarts and crashes.
    pub fn token_floor(&self) -> Result<u64, StoreError> {
        let v: Option<i64> = self
            .conn
            .prepare_cached("SELECT value FROM meta WHERE name = ?1")
            .and_then(|mut st| st.query_row([TOKEN_RESERVED], |r| r.get(0)).optional())
            .map_err(|e| self.db_err(e))?;
        // The CHECK constraint keeps the value non-negative.
        Ok(v.map_or(0, |v| v as u64))
    }

    /// Record that tokens up to `upto` may be handed out, durably (one
    /// transaction, committed and synced before `Ok`). The stored value only
    /// ever rises: a smaller or equal `upto` leaves it as it is.
    /// A value above `i64::MAX` (SQLite's INTEGER) is refused.
    pub fn reserve_tokens(&mut self, upto: u64) -> Result<(), StoreError> {
        let v = i64::try_from(upto).map_err(|_| StoreError::Db {
            path: self.path.clone(),
            err: format!(
                "cannot reserve lock tokens up to {upto}: above {}",
                i64::MAX
            ),
        })?;
        self.conn
            .prepare_cached(
                "INSERT INTO meta (name, value) VALUES (?1, ?2) \
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value \
                 WHERE excluded.value > meta.value",
            )
            .and_then(|mut st| st.execute(params![TOKEN_RESERVED, v]))
            .map(drop)
            .map_err(|e| self.db_err(e))
    }

    /// One record's value and signature, or `None` if the container has no
    /// record with that key. `container` is the stored (format-prefixed)
    /// name; the rules are in [`crate::records`].
    pub(crate) fn record_get(
        &self,
        container: &str,
        key: &str,
    ) -> Result<Option<(Vec<u8>, u64)>, StoreError> {
        self.conn
            .prepare_cached("SELECT value, sig FROM records WHERE container = ?1 AND key = ?2")
            .and_then(|mut st| {
                st.query_row(params![container, key], |r| {
                    Ok((r.get(0)?, r.get::<_, i64>(1)? as u64))
                })
                .optional()
            })
            .map_err(|e| self.record_err(container, Some(key), e))
    }

    /// Every record of a container as `(key, value, signature)`, ordered by
    /// key (bytewise, which for UTF-8 is code point order); empty if the
    /// container has none.
    pub(crate) fn record_list(
        &self,
        container: &str,
    ) -> Result<Vec<(String, Vec<u8>, u64)>, StoreError> {
        self.conn
            .prepare_cached("SELECT key, value, sig FROM records WHERE container = ?1 ORDER BY key")
            .and_then(|mut st| {
                st.query_map([container], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? as u64))
                })?
                .collect()
            })
            .map_err(|e| self.record_err(container, None, e))
    }

    /// Add a record with signature `sig` unless the key exists; `Ok(false)`
    /// (nothing written) if it does. One transaction, durable on `Ok`.
    pub(crate) fn record_insert(
        &mut self,
        container: &str,
        key: &str,
        value: &[u8],
        sig: u64,
        owner: &str,
    ) -> Result<bool, StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO records (container, key, value, sig, owner) VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT (container, key) DO NOTHING",
            )
            .and_then(|mut st| st.execute(params![container, key, value, sig as i64, owner]))
            .map(|n| n == 1)
            .map_err(|e| self.record_err(container, Some(key), e))
    }

    /// Replace a record's value and signature if its signature is
    /// `expected` (compare-and-swap, one transaction, durable on `Ok`).
    pub(crate) fn record_replace(
        &mut self,
        container: &str,
        key: &str,
        value: &[u8],
        expected: u64,
        new: u64,
        owner: &str,
    ) -> Result<Cas, StoreError> {
        cas(&mut self.conn, container, key, Some(expected), |tx| {
            tx.prepare_cached(
                "UPDATE records SET value = ?3, sig = ?4, owner = ?5 WHERE container = ?1 AND key = ?2",
            )?
            .execute(params![container, key, value, new as i64, owner])
        })
        .map_err(|e| self.record_err(container, Some(key), e))
    }

    /// Delete a record if its signature is `expected`, or whatever its
    /// signature if `expected` is `None` (one transaction, durable on `Ok`).
    pub(crate) fn record_remove(
        &mut self,
        container: &str,
        key: &str,
        expected: Option<u64>,
    ) -> Result<Cas, StoreError> {
        cas(&mut self.conn, container, key, expected, |tx| {
            tx.prepare_cached("DELETE FROM records WHERE container = ?1 AND key = ?2")?
                .execute(params![container, key])
        })
        .map_err(|e| self.record_err(container, Some(key), e))
    }

    fn db_err(&self, e: rusqlite::Error) -> StoreError {
        db_err(&self.path)(e)
    }

    /// A database error that also names the record (or container) concerned.
    fn record_err(&self, container: &str, key: Option<&str>, e: rusqlite::Error) -> StoreError {
        let what = match key {
            Some(key) => format!("record {key:?} in container {container:?}"),
            None => format!("container {container:?}"),
        };
        StoreError::Db {
            path: self.path.clone(),
            err: format!("{what}: {e}"),
        }
    }
}

impl StateDb {
    /// Who disabled each disabled entry and when, ordered by tag.
    pub fn disabled_notes(&self) -> Result<Vec<DisabledNote>, StoreError> {
        self.conn
            .prepare_cached("SELECT tag, by_whom, at FROM disabled ORDER BY tag")
            .and_then(|mut st| {
                st.query_map([], |r| {
                    Ok(DisabledNote {
                        tag: r.get(0)?,
                        by: r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                        at: r.get(2)?,
                    })
                })?
                .collect()
            })
            .map_err(|e| self.db_err(e))
    }
}

/// Narrow `dir`'s mode to `mode` if it is wider (a symbolic link is refused).
fn private(dir: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::symlink_metadata(dir)?;
    if !meta.is_dir() {
        return Err(std::io::Error::other(
            "not a directory (a symbolic link is not taken as the state directory)",
        ));
    }
    let now = meta.permissions().mode() & 0o7777;
    if now & !mode != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))?;
        tracing::warn!(
            "state directory {} was mode {now:o}; made {mode:o} (the state is the daemon's alone)",
            dir.display()
        );
    }
    Ok(())
}

/// Create the database file (or open it), not following a symbolic link,
/// and make it 0600 (SQLite would create it 0644 and gives its journals
/// the database's mode).
fn precreate_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    if f.metadata()?.permissions().mode() & 0o077 != 0 {
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

impl StateDb {
    /// Group commit: until [`StateDb::sync`], commits are not synced to
    /// disk each (the store worker holds the database for the batch).
    pub fn defer_sync(&mut self) -> Result<(), StoreError> {
        self.conn
            .pragma_update(None, "synchronous", "NORMAL")
            .map_err(db_err(&self.path))
    }

    /// Sync every commit since [`StateDb::defer_sync`] to disk, and sync
    /// each commit on its own again.
    pub fn sync(&mut self) -> Result<(), StoreError> {
        // In WAL mode a commit appends to DB-wal; with synchronous=NORMAL
        // it is not synced, and a checkpoint syncs the WAL before it copies
        // it. One fsync of the WAL makes every commit since durable.
        let back = self
            .conn
            .pragma_update(None, "synchronous", "FULL")
            .map_err(db_err(&self.path));
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        let wal = PathBuf::from(wal);
        match File::open(&wal).and_then(|f| f.sync_data()) {
            Ok(()) => {}
            // No WAL file: nothing was written since the last checkpoint
            // removed it (not while the connection is open; kept for safety).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(StoreError::Write { path: wal, err }),
        }
        back
    }
}

impl StateStore for StateDb {
    fn location(&self) -> String {
        self.path.display().to_string()
    }

    fn load(&mut self) -> Result<Persisted, StoreError> {
        StateDb::load(self)
    }

    fn disabled_notes(&mut self) -> Result<Vec<DisabledNote>, StoreError> {
        StateDb::disabled_notes(self)
    }

    fn apply(&mut self, ops: Vec<StoreOp>) -> Pending<Result<(), StoreError>> {
        Pending::Ready(StateDb::apply(self, &ops))
    }

    fn token_floor(&mut self) -> Result<u64, StoreError> {
        StateDb::token_floor(self)
    }

    fn reserve_tokens(&mut self, upto: u64) -> Pending<Result<(), StoreError>> {
        Pending::Ready(StateDb::reserve_tokens(self, upto))
    }
}

impl RecordStorage for StateDb {
    fn get(&self, container: &str, key: &str) -> Result<Option<(Vec<u8>, u64)>, StoreError> {
        self.record_get(container, key)
    }

    fn list(&self, container: &str) -> Result<Vec<(String, Vec<u8>, u64)>, StoreError> {
        self.record_list(container)
    }

    fn usage(&self) -> Result<Vec<Usage>, StoreError> {
        self.conn
            .prepare(
                "SELECT container, owner, COUNT(*), COALESCE(SUM(LENGTH(value)), 0) FROM records GROUP BY container, owner",
            )
            .and_then(|mut st| {
                st.query_map([], |r| {
                    Ok(Usage {
                        container: r.get(0)?,
                        owner: r.get(1)?,
                        records: r.get::<_, i64>(2)? as u64,
                        bytes: r.get::<_, i64>(3)? as u64,
                    })
                })?
                .collect()
            })
            .map_err(|e| self.record_err("(all)", None, e))
    }

    fn raise_fence(&mut self, lock: &str, token: u64) -> Result<Option<u64>, StoreError> {
        let token = i64::try_from(token).map_err(|_| StoreError::Db {
            path: self.path.clone(),
            err: format!(
                "fencing token {token} of lock {lock} does not fit a 64-bit signed integer"
            ),
        })?;
        (|| -> rusqlite::Result<Option<u64>> {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            let seen: Option<i64> = tx
                .query_row("SELECT token FROM fences WHERE lock = ?1", [lock], |r| {
                    r.get(0)
                })
                .optional()?;
            if let Some(seen) = seen.filter(|s| *s > token) {
                return Ok(Some(seen as u64));
            }
            tx.execute(
                "INSERT INTO fences (lock, token) VALUES (?1, ?2) \
                 ON CONFLICT (lock) DO UPDATE SET token = excluded.token",
                params![lock, token],
            )?;
            tx.commit()?;
            Ok(None)
        })()
        .map_err(|e| StoreError::Db {
            path: self.path.clone(),
            err: format!("fence of lock {lock}: {e}"),
        })
    }

    fn footprint(&self, container: &str, key: &str) -> Result<Option<(u64, String)>, StoreError> {
        self.conn
            .prepare_cached(
                "SELECT LENGTH(value), owner FROM records WHERE container = ?1 AND key = ?2",
            )
            .and_then(|mut st| {
                st.query_row(params![container, key], |r| {
                    Ok((r.get::<_, i64>(0)? as u64, r.get(1)?))
                })
                .optional()
            })
            .map_err(|e| self.record_err(container, Some(key), e))
    }

    fn insert(
        &mut self,
        container: &str,
        key: &str,
        value: &[u8],
        sig: u64,
        owner: &str,
    ) -> Result<bool, StoreError> {
        self.record_insert(container, key, value, sig, owner)
    }

    fn replace(
        &mut self,
        container: &str,
        key: &str,
        value: &[u8],
        expected: u64,
        new: u64,
        owner: &str,
    ) -> Result<Cas, StoreError> {
        self.record_replace(container, key, value, expected, new, owner)
    }

    fn remove(
        &mut self,
        container: &str,
        key: &str,
        expected: Option<u64>,
    ) -> Result<Cas, StoreError> {
        self.record_remove(container, key, expected)
    }
}

/// Compare-and-swap on one record in one IMMEDIATE transaction: read its
/// signature, and only if it is `expected` (or `expected` is `None`) run
/// `write`. A missing or stale record writes nothing.
fn cas(
    conn: &mut Connection,
    container: &str,
    key: &str,
    expected: Option<u64>,
    write: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<usize>,
) -> rusqlite::Result<Cas> {
    // Dropping `tx` (early return or no write) rolls back: nothing changed.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let current: Option<i64> = tx
        .prepare_cached("SELECT sig FROM records WHERE container = ?1 AND key = ?2")?
        .query_row(params![container, key], |r| r.get(0))
        .optional()?;
    let Some(current) = current.map(|s| s as u64) else {
        return Ok(Cas::Missing);
    };
    if expected.is_some_and(|e| e != current) {
        return Ok(Cas::Stale(current));
    }
    write(&tx)?;
    tx.commit()?;
    Ok(Cas::Done)
}

fn apply_inner(conn: &mut Connection, ops: &[StoreOp]) -> rusqlite::Result<()> {
    // Dropping `tx` on an early `?` return rolls the whole batch back.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    for op in ops {
        match op {
            StoreOp::SetGoal { group, level } => {
                tx.prepare_cached("INSERT OR REPLACE INTO goals (grp, level) VALUES (?1, ?2)")?
                    .execute(params![group, level])?;
            }
            StoreOp::SetDisabled {
                tag,
                disabled: true,
            } => {
                tx.prepare_cached("INSERT OR IGNORE INTO disabled (tag) VALUES (?1)")?
                    .execute(params![tag])?;
            }
            StoreOp::NoteDisabled { tag, by, at } => {
                tx.prepare_cached("UPDATE disabled SET by_whom = ?2, at = ?3 WHERE tag = ?1")?
                    .execute(params![tag, by, at])?;
            }
            StoreOp::SetDisabled {
                tag,
                disabled: false,
            }
            | StoreOp::ForgetEntry { tag } => {
                tx.prepare_cached("DELETE FROM disabled WHERE tag = ?1")?
                    .execute(params![tag])?;
            }
            StoreOp::AddChild(c) => {
                // SQLite integers are i64: refuse (never wrap) larger ticks.
                let ticks = i64::try_from(c.start_ticks).map_err(|_| {
                    rusqlite::Error::ToSqlConversionFailure(
                        format!(
                            "start_ticks {} of pid {} does not fit a 64-bit signed integer",
                            c.start_ticks, c.pid
                        )
                        .into(),
                    )
                })?;
                tx.prepare_cached(
                    "INSERT OR REPLACE INTO children (pid, pgid, start_ticks, boot_id, grp, tag) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?
                .execute(params![c.pid, c.pgid, ticks, c.boot_id, c.group, c.tag])?;
            }
            StoreOp::RemoveChild { pid } => {
                tx.prepare_cached("DELETE FROM children WHERE pid = ?1")?
                    .execute(params![pid])?;
            }
        }
    }
    tx.commit()
}

/// Bring the schema from whatever `user_version` the file has up to
/// [`SCHEMA_VERSION`], in one transaction. Each step `v → v+1` is one arm
/// below; a later version adds an arm and bumps [`SCHEMA_VERSION`]. A file
/// from newer code is refused untouched.
fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    migrate_to(conn, path, SCHEMA_VERSION)
}

/// A database error on the file at `path`.
fn db_err(path: &Path) -> impl Fn(rusqlite::Error) -> StoreError {
    let path = path.to_path_buf();
    move |e| StoreError::Db {
        path: path.clone(),
        err: e.to_string(),
    }
}

/// [`migrate`] up to `target` (≤ [`SCHEMA_VERSION`]); tests use a lower
/// target to write a database exactly as older code did.
fn migrate_to(conn: &mut Connection, path: &Path, target: i64) -> Result<(), StoreError> {
    debug_assert!(target <= SCHEMA_VERSION);
    let db_err = &db_err(path);
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db_err)?;
    let found: i64 = tx
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .optional()
        .map_err(db_err)?
        .unwrap_or(0);
    if found > SCHEMA_VERSION {
        return Err(StoreError::TooNew {
            path: path.to_path_buf(),
            found,
            known: SCHEMA_VERSION,
        });
    }
    if found < 0 {
        return Err(StoreError::Db {
            path: path.to_path_buf(),
            err: format!("invalid schema version {found}"),
        });
    }
    for from in found..target {
        match from {
            0 => tx
                .execute_batch(
                    "CREATE TABLE goals (
                         grp   TEXT PRIMARY KEY NOT NULL,
                         level TEXT NOT NULL
                     ) STRICT;
                     CREATE TABLE disabled (
                         tag TEXT PRIMARY KEY NOT NULL
                     ) STRICT;
                     CREATE TABLE children (
                         pid         INTEGER PRIMARY KEY CHECK (pid > 0),
                         pgid        INTEGER NOT NULL CHECK (pgid > 0),
                         start_ticks INTEGER NOT NULL CHECK (start_ticks >= 0),
                         boot_id     TEXT NOT NULL,
                         grp         TEXT NOT NULL,
                         tag         TEXT NOT NULL
                     ) STRICT;",
                )
                .map_err(db_err)?,
            // `meta.value` is non-negative so it reads back as a u64.
            // `records.sig` is a u64 stored bit for bit (see the module
            // doc). A rowid table, not WITHOUT ROWID: values reach 1 MiB,
            // and a WITHOUT ROWID b-tree reads a row's whole overflowing
            // payload to compare keys; measured, lookups of 4 KiB..1 MiB
            // values ran 2-3.5 times faster with rowid, small ones the same.
            1 => tx
                .execute_batch(
                    "CREATE TABLE meta (
                         name  TEXT PRIMARY KEY NOT NULL,
                         value INTEGER NOT NULL CHECK (value >= 0)
                     ) STRICT;
                     CREATE TABLE records (
                         container TEXT NOT NULL,
                         key       TEXT NOT NULL,
                         value     BLOB NOT NULL,
                         sig       INTEGER NOT NULL CHECK (sig <> 0),
                         PRIMARY KEY (container, key)
                     ) STRICT;",
                )
                .map_err(db_err)?,
            // Who disabled an entry and when, for `clinit explain`; rows
            // from version 2 keep NULL (not known).
            2 => tx
                .execute_batch(
                    "ALTER TABLE disabled ADD COLUMN by_whom TEXT;
                     ALTER TABLE disabled ADD COLUMN at INTEGER;",
                )
                .map_err(db_err)?,
            // Who last wrote each record (`Peer::key`), for the per-user
            // record quotas; records of version 3 have no known owner ('').
            3 => tx
                .execute_batch("ALTER TABLE records ADD COLUMN owner TEXT NOT NULL DEFAULT '';")
                .map_err(db_err)?,
            // The highest fencing token a record write presented per lock
            // name (`record ... --fence LOCK:TOKEN`).
            4 => tx
                .execute_batch(
                    "CREATE TABLE fences (
                         lock  TEXT PRIMARY KEY NOT NULL,
                         token INTEGER NOT NULL CHECK (token >= 0)
                     ) STRICT;",
                )
                .map_err(db_err)?,
            _ => unreachable!("no migration step from schema version {from}"),
        }
    }
    if found < target {
        tx.pragma_update(None, "user_version", target)
            .map_err(db_err)?;
    }
    tx.commit().map_err(db_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn child(pid: i32, group: &str, tag: &str) -> ChildRecord {
        ChildRecord {
            pid,
            pgid: pid,
            start_ticks: 1000 + pid as u64,
            boot_id: "b00t".into(),
            group: group.into(),
            tag: tag.into(),
        }
    }

    fn goal(group: &str, level: &str) -> StoreOp {
        StoreOp::SetGoal {
            group: group.into(),
            level: level.into(),
        }
    }

    fn disabled(tag: &str, disabled: bool) -> StoreOp {
        StoreOp::SetDisabled {
            tag: tag.into(),
            disabled,
        }
    }

    fn s(x: &str) -> String {
        x.to_string()
    }

    #[test]
    fn every_op_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = StateDb::open(dir.path()).unwrap();
        assert_eq!(db.path(), dir.path().join("clinit.db"));
        assert_eq!(db.load().unwrap(), Persisted::default());
        db.apply(&[]).unwrap();

        db.apply(&[
            goal("web", "2"),
            goal("db", "1"),
            disabled("w1", true),
            disabled("d1", true),
            disabled("d1", true),
            StoreOp::AddChild(child(30, "web", "w1")),
            StoreOp::AddChild(child(10, "db", "d1")),
            StoreOp::AddChild(child(20, "db", "d2")),
        ])
        .unwrap();
        assert_eq!(
            db.load().unwrap(),
            Persisted {
                goals: vec![(s("db"), s("1")), (s("web"), s("2"))],
                disabled: vec![s("d1"), s("w1")],
                children: vec![
                    child(10, "db", "d1"),
                    child(20, "db", "d2"),
                    child(30, "web", "w1")
                ],
            }
        );

        let mut replaced = child(20, "web", "w9");
        replaced.start_ticks = u64::try_from(i64::MAX).unwrap();
        replaced.boot_id = "other".into();
        db.apply(&[
            goal("web", "3"),
            disabled("w1", false),
            disabled("never-disabled", false),
            StoreOp::ForgetEntry { tag: s("d1") },
            StoreOp::AddChild(replaced.clone()),
            StoreOp::RemoveChild { pid: 10 },
            StoreOp::RemoveChild { pid: 12345 },
        ])
        .unwrap();
        assert_eq!(
            db.load().unwrap(),
            Persisted {
                goals: vec![(s("db"), s("1")), (s("web"), s("3"))],
                disabled: vec![],
                children: vec![replaced, child(30, "web", "w1")],
            }
        );
    }

    #[test]
    fn a_failing_batch_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = StateDb::open(dir.path()).unwrap();
        db.apply(&[goal("g", "1"), StoreOp::AddChild(child(5, "g", "a"))])
            .unwrap();
        let before = db.load().unwrap();

        // A start time that does not fit SQLite's INTEGER fails the batch
        // at its last op; the ops before it must not be visible.
        let mut huge = child(7, "g", "b");
        huge.start_ticks = u64::MAX;
        let err = db
            .apply(&[
                goal("g", "2"),
                goal("h", "1"),
                disabled("a", true),
                StoreOp::RemoveChild { pid: 5 },
                StoreOp::AddChild(child(6, "g", "c")),
                StoreOp::AddChild(huge),
            ])
            .unwrap_err();
        assert!(err.to_string().contains("clinit.db"), "{err}");
        assert_eq!(db.load().unwrap(), before);

        // pid 0 would make a later kill(-pgid) hit our own process group:
        // the CHECK constraint refuses it, again rolling back the batch.
        let mut zero = child(8, "g", "d");
        zero.pid = 0;
        db.apply(&[goal("g", "3"), StoreOp::AddChild(zero)])
            .unwrap_err();
        let mut zero_group = child(9, "g", "d");
        zero_group.pgid = 0;
        db.apply(&[goal("g", "3"), StoreOp::AddChild(zero_group)])
            .unwrap_err();
        assert_eq!(db.load().unwrap(), before);

        // The connection is still usable after a rolled-back batch.
        db.apply(&[goal("g", "4")]).unwrap();
        assert_eq!(db.load().unwrap().goals, vec![(s("g"), s("4"))]);
    }

    #[test]
    fn data_survives_reopen_and_the_lock_is_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let mut db = StateDb::open(&state).unwrap();
        db.apply(&[
            goal("g", "2"),
            disabled("t", true),
            StoreOp::AddChild(child(4, "g", "t")),
        ])
        .unwrap();
        let saved = db.load().unwrap();
        drop(db);
        let db = StateDb::open(&state).unwrap();
        assert_eq!(db.load().unwrap(), saved);
    }

    #[test]
    fn missing_dir_is_created_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("a/b");
        let _db = StateDb::open(&state).unwrap();
        let mode = std::fs::metadata(&state).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[test]
    fn second_open_of_the_same_dir_is_busy() {
        let dir = tempfile::tempdir().unwrap();
        let _first = StateDb::open(dir.path()).unwrap();
        let err = StateDb::open(dir.path())
            .err()
            .expect("second open must fail");
        assert!(matches!(err, StoreError::Busy { .. }), "{err:?}");
        assert!(
            err.to_string().contains(&*dir.path().to_string_lossy()),
            "{err}"
        );
    }

    #[test]
    fn newer_schema_is_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        {
            let c = Connection::open(&path).unwrap();
            c.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
                .unwrap();
        }
        let err = StateDb::open(dir.path()).err().expect("must refuse");
        match &err {
            StoreError::TooNew {
                path: p,
                found,
                known,
            } => {
                assert_eq!(p, &path);
                assert_eq!((*found, *known), (SCHEMA_VERSION + 1, SCHEMA_VERSION));
            }
            other => panic!("{other:?}"),
        }
        assert!(err.to_string().contains(&*path.to_string_lossy()), "{err}");
        let c = Connection::open(&path).unwrap();
        let v: i64 = c
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, SCHEMA_VERSION + 1);
        let tables: i64 = c
            .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
            .unwrap();
        assert_eq!(tables, 0);
    }

    #[test]
    fn not_a_database_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        std::fs::write(&path, vec![b'x'; 4096]).unwrap();
        let err = StateDb::open(dir.path()).err().expect("must fail");
        assert!(matches!(err, StoreError::Db { .. }), "{err:?}");
        assert!(err.to_string().contains(&*path.to_string_lossy()), "{err}");
    }

    #[test]
    fn token_reservation_only_rises_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = StateDb::open(dir.path()).unwrap();
        assert_eq!(db.token_floor().unwrap(), 0);
        db.reserve_tokens(0).unwrap();
        assert_eq!(db.token_floor().unwrap(), 0);
        for (upto, floor) in [(100, 100), (50, 100), (100, 100), (101, 101), (7, 101)] {
            db.reserve_tokens(upto).unwrap();
            assert_eq!(db.token_floor().unwrap(), floor, "after reserving {upto}");
        }
        let max = u64::try_from(i64::MAX).unwrap();
        db.reserve_tokens(max).unwrap();
        let err = db.reserve_tokens(max + 1).unwrap_err();
        assert!(err.to_string().contains("clinit.db"), "{err}");
        assert_eq!(db.token_floor().unwrap(), max);
        drop(db);
        let mut db = StateDb::open(dir.path()).unwrap();
        assert_eq!(db.token_floor().unwrap(), max);
        db.reserve_tokens(1).unwrap();
        assert_eq!(db.token_floor().unwrap(), max);
    }

    /// Table names in the database, sorted.
    fn tables(c: &Connection) -> Vec<String> {
        c.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    #[test]
    fn version_3_records_keep_their_values_and_get_no_owner() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        {
            let mut c = Connection::open(&path).unwrap();
            c.pragma_update(None, "journal_mode", "WAL").unwrap();
            migrate_to(&mut c, &path, 3).unwrap();
            // As version 3 wrote a record: no owner column.
            c.execute(
                "INSERT INTO records (container, key, value, sig) VALUES ('clinit1_c', 'k', x'6869', 5)",
                [],
            )
            .unwrap();
        }
        let mut db = StateDb::open(dir.path()).unwrap();
        assert_eq!(
            db.record_get("clinit1_c", "k").unwrap(),
            Some((b"hi".to_vec(), 5))
        );
        assert_eq!(
            db.footprint("clinit1_c", "k").unwrap(),
            Some((2, String::new()))
        );
        assert!(
            db.record_insert("clinit1_c", "j", b"abc", 6, "uid 7")
                .unwrap()
        );
        let mut usage = db.usage().unwrap();
        usage.sort_by(|a, b| a.owner.cmp(&b.owner));
        let rows: Vec<_> = usage
            .iter()
            .map(|u| (u.container.as_str(), u.owner.as_str(), u.records, u.bytes))
            .collect();
        assert_eq!(
            rows,
            [("clinit1_c", "", 1, 2), ("clinit1_c", "uid 7", 1, 3)]
        );
    }

    #[test]
    fn version_1_database_is_upgraded_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        // Write a version 1 file exactly as the version 1 code did: its
        // schema step, then its ops.
        {
            let mut c = Connection::open(&path).unwrap();
            c.pragma_update(None, "journal_mode", "WAL").unwrap();
            migrate_to(&mut c, &path, 1).unwrap();
            apply_inner(
                &mut c,
                &[
                    goal("web", "2"),
                    disabled("w1", true),
                    StoreOp::AddChild(child(42, "web", "w1")),
                ],
            )
            .unwrap();
            let v: i64 = c
                .pragma_query_value(None, "user_version", |r| r.get(0))
                .unwrap();
            assert_eq!(v, 1);
            assert_eq!(tables(&c), ["children", "disabled", "goals"]);
        }
        let mut db = StateDb::open(dir.path()).unwrap();
        assert_eq!(
            db.load().unwrap(),
            Persisted {
                goals: vec![(s("web"), s("2"))],
                disabled: vec![s("w1")],
                children: vec![child(42, "web", "w1")],
            }
        );
        let v: i64 = db
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, SCHEMA_VERSION);
        assert_eq!(
            tables(&db.conn),
            ["children", "disabled", "fences", "goals", "meta", "records"]
        );
        // The new tables work.
        assert_eq!(db.token_floor().unwrap(), 0);
        db.reserve_tokens(9).unwrap();
        assert!(db.record_insert("clinit1_c", "k", b"v", 1, "").unwrap());
        drop(db);
        let db = StateDb::open(dir.path()).unwrap();
        assert_eq!(db.token_floor().unwrap(), 9);
        assert_eq!(
            db.record_get("clinit1_c", "k").unwrap(),
            Some((b"v".to_vec(), 1))
        );
        assert_eq!(db.load().unwrap().goals, vec![(s("web"), s("2"))]);
    }

    #[test]
    fn record_compare_and_swap() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = StateDb::open(dir.path()).unwrap();
        assert!(db.record_insert("c", "k", b"1", 5, "").unwrap());
        assert!(!db.record_insert("c", "k", b"2", 6, "").unwrap());
        assert_eq!(
            db.record_replace("c", "x", b"2", 5, 6, "").unwrap(),
            Cas::Missing
        );
        assert_eq!(
            db.record_replace("c", "k", b"2", 4, 6, "").unwrap(),
            Cas::Stale(5)
        );
        assert_eq!(db.record_get("c", "k").unwrap(), Some((b"1".to_vec(), 5)));
        assert_eq!(
            db.record_replace("c", "k", b"2", 5, 6, "").unwrap(),
            Cas::Done
        );
        assert_eq!(db.record_get("c", "k").unwrap(), Some((b"2".to_vec(), 6)));
        assert_eq!(db.record_remove("c", "k", Some(5)).unwrap(), Cas::Stale(6));
        assert_eq!(db.record_remove("c", "k", Some(6)).unwrap(), Cas::Done);
        assert_eq!(db.record_remove("c", "k", None).unwrap(), Cas::Missing);
        assert!(db.record_insert("c", "k", b"3", 7, "").unwrap());
        assert_eq!(db.record_remove("c", "k", None).unwrap(), Cas::Done);
        assert_eq!(db.record_get("c", "k").unwrap(), None);
        // A signature of 0 is refused by the table itself.
        let err = db.record_insert("c", "k", b"", 0, "").unwrap_err();
        assert!(
            err.to_string().contains("record \"k\" in container \"c\""),
            "{err}"
        );
        assert_eq!(db.record_list("c").unwrap(), vec![]);
    }

    #[test]
    fn wal_and_full_sync_are_in_effect() {
        let dir = tempfile::tempdir().unwrap();
        let db = StateDb::open(dir.path()).unwrap();
        let mode: String = db
            .conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let sync: i64 = db
            .conn
            .pragma_query_value(None, "synchronous", |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 2, "FULL");
    }
}
