//! Persistence behind a trait: the embedded implementation writes files on
//! this machine; a later etcd implementation will hold shared state. Nothing
//! above the trait knows which one it talks to.
//!
//! Today the store keeps the status file. The daemon's persistent state
//! (goals, disabled entries, started children, the lock token reservation
//! and the records of [`crate::records`]) lives in [`sqlite::StateDb`];
//! [`leftovers`] stops the children a previous, killed daemon left running.

pub mod sqlite;

use std::io::Write;
use std::path::{Path, PathBuf};

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
}

pub trait Store {
    /// Replace the status file contents (Cluster::Init clstat format).
    fn write_status(&mut self, text: &str) -> Result<(), StoreError>;
}

/// One machine's store: plain files, written atomically.
pub struct Embedded {
    clstat: PathBuf,
}

impl Embedded {
    pub fn new(clstat: &Path) -> Embedded {
        Embedded {
            clstat: clstat.to_path_buf(),
        }
    }
}

impl Store for Embedded {
    fn write_status(&mut self, text: &str) -> Result<(), StoreError> {
        write_atomic(&self.clstat, text.as_bytes()).map_err(|err| StoreError::Write {
            path: self.clstat.clone(),
            err,
        })
    }
}

/// Write a file atomically: temp file in the same directory, fsync, rename,
/// fsync of the directory (so the rename itself is durable). A file being
/// replaced keeps its permissions and, when the daemon may, its owner.
pub fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok();
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp.{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let mut f = std::fs::File::create(&tmp)?;
    if let Some(m) = &meta {
        f.set_permissions(m.permissions())?;
        let _ = std::os::unix::fs::fchown(&f, Some(m.uid()), Some(m.gid()));
    }
    f.write_all(data)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
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
        let mut s = Embedded::new(&p);
        s.write_status("Cluster::Init::Group a 1 DONE\n").unwrap();
        s.write_status("Cluster::Init::Group a 2 STARTING\n")
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "Cluster::Init::Group a 2 STARTING\n"
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        let err = Embedded::new(&dir.path().join("no/such/dir/clstat"))
            .write_status("x")
            .unwrap_err();
        assert!(err.to_string().contains("no/such/dir/clstat"));
    }
}
