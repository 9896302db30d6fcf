//! Every process of an entry in a cgroup of its own (cgroup v2).
//!
//! A command may start processes that leave its process group (`setsid`,
//! a daemonizing program), and the next generation may clear its
//! environment. The kernel still knows which cgroup each of them is in,
//! and a new process starts in its parent's. So when a cgroup v2 hierarchy
//! can be written, the daemon makes one directory of its own beside its
//! own cgroup, `clinit.<hash of the socket path>` (one daemon per socket),
//! and under it one directory per entry that has run, made at the entry's
//! first start and kept while the entry is in the cltab (a restart makes
//! no directory; an entry a reread removes loses its directory once it is
//! empty), all removed at the end of the run. A gated child moves itself into its entry's directory
//! before it waits at its gate (see [`super::spawn`]), so nothing the
//! command ever starts is outside it.
//!
//! What that buys:
//! - Stopping an entry reads its directory's `cgroup.procs` (as many lines
//!   as the entry has processes) instead of every process of the host.
//! - A daemon that starts on a socket whose previous daemon was killed
//!   finds everything that daemon's children left in the directories under
//!   its own, whatever they did to their process group or environment.
//!
//! Without cgroup v2 (not mounted, read-only, no right to write it, or the
//! setting `cgroup` is `off`) the daemon falls back to what it did before:
//! a scan of `/proc` for the processes it adopted as subreaper, off the
//! event loop, and a scan for `CLINIT_SOCKET` at start-up.

use std::collections::HashMap;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

/// The setting `cgroup`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum CgroupMode {
    /// Beside the daemon's own cgroup when a cgroup v2 hierarchy can be
    /// written there, else without cgroups (said in the log).
    #[default]
    Auto,
    /// No cgroups.
    Off,
    /// Under this cgroup v2 directory; the daemon does not start if it
    /// cannot make its directory there.
    Under(PathBuf),
}

impl CgroupMode {
    /// `auto`, `off` or an absolute path.
    pub fn parse(s: &str) -> Result<CgroupMode, String> {
        match s {
            "auto" => Ok(CgroupMode::Auto),
            "off" => Ok(CgroupMode::Off),
            p if p.starts_with('/') => Ok(CgroupMode::Under(PathBuf::from(p))),
            _ => Err("expected auto, off or an absolute path of a cgroup v2 directory".into()),
        }
    }
}

/// Why the daemon's cgroup directory could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("no cgroup v2 hierarchy is mounted (no cgroup2 line in /proc/self/mountinfo)")]
    NotMounted,
    #[error("cannot tell this process's cgroup v2 directory (no 0:: line in /proc/self/cgroup)")]
    NoOwnCgroup,
    #[error("{} is not a cgroup v2 directory (it has no cgroup.procs)", .0.display())]
    NotCgroup(PathBuf),
    #[error("cannot make {}: {source}", .path.display())]
    Make {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The daemon's cgroup directory and its entries' directories.
#[derive(Debug)]
pub struct Cgroups {
    root: PathBuf,
    /// Each entry that has run, and its directory's name under `root`.
    entries: HashMap<(String, String), String>,
    next: u64,
    /// Entries a reread removed whose directory is not removed yet.
    doomed: std::collections::HashSet<(String, String)>,
    /// Prefix of this run's directory names (the daemon's pid), so that
    /// none is taken for a previous run's.
    run: String,
}

/// A previous run's directory under the daemon's, and what is in it.
#[derive(Debug)]
pub struct Previous {
    pub dir: PathBuf,
    pub pids: Vec<i32>,
}

impl Cgroups {
    /// Make (or take again) the daemon's directory for the daemon on
    /// `socket`. `Ok(None)` for [`CgroupMode::Off`].
    pub fn open(mode: &CgroupMode, socket: &Path) -> Result<Option<Cgroups>, CgroupError> {
        let parent = match mode {
            CgroupMode::Off => return Ok(None),
            CgroupMode::Auto => own_cgroup()?,
            CgroupMode::Under(p) => p.clone(),
        };
        if !parent.join("cgroup.procs").exists() {
            return Err(CgroupError::NotCgroup(parent));
        }
        let root = parent.join(format!("clinit.{:016x}", fnv1a(socket.as_os_str())));
        match dir_755(&root) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(source) => return Err(CgroupError::Make { path: root, source }),
        }
        // Can a process be put there? Moving nothing proves the right to
        // write; the first child would otherwise be the first to find out.
        let probe = root.join("cgroup.procs");
        if let Err(source) = std::fs::OpenOptions::new().write(true).open(&probe) {
            return Err(CgroupError::Make {
                path: probe,
                source,
            });
        }
        Ok(Some(Cgroups {
            root,
            entries: HashMap::new(),
            next: 0,
            doomed: Default::default(),
            run: format!("{}", std::process::id()),
        }))
    }

    /// The daemon's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directories left under the daemon's by a previous run (all of
    /// them, at start-up, before this run made any), with their processes.
    pub fn previous(&self) -> Vec<Previous> {
        let Ok(dir) = std::fs::read_dir(&self.root) else {
            return Vec::new();
        };
        dir.flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| {
                let dir = e.path();
                let pids = procs(&dir);
                Previous { dir, pids }
            })
            .collect()
    }

    /// Kill what is left in a previous run's directory (`cgroup.kill`) and
    /// remove it; false if it could not be removed (still populated).
    pub fn clear_previous(p: &Previous) -> bool {
        if !procs(&p.dir).is_empty() {
            kill_all(&p.dir);
        }
        std::fs::remove_dir(&p.dir).is_ok()
    }

    /// `cgroup.procs` of the entry's directory, made at its first start,
    /// open for a child to move itself in (it writes `0`).
    pub fn procs_for(&mut self, group: &str, tag: &str) -> std::io::Result<OwnedFd> {
        let key = (group.to_string(), tag.to_string());
        // Back in the cltab (a reread removed it, a later one brought it
        // back) before its directory went.
        self.doomed.remove(&key);
        let name = match self.entries.get(&key) {
            Some(n) => n.clone(),
            None => {
                self.next += 1;
                let name = format!("{}.{}", self.run, self.next);
                match dir_755(&self.root.join(&name)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(e),
                }
                self.entries.insert(key, name.clone());
                name
            }
        };
        let open = || {
            std::fs::OpenOptions::new()
                .write(true)
                .open(self.root.join(&name).join("cgroup.procs"))
        };
        match open() {
            Ok(f) => Ok(f.into()),
            // Removed behind the daemon's back: make it again, once.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                dir_755(&self.root.join(&name))?;
                Ok(open()?.into())
            }
            Err(e) => Err(e),
        }
    }

    /// The entry's directory, once it has run.
    pub fn dir_of(&self, group: &str, tag: &str) -> Option<PathBuf> {
        self.entries
            .get(&(group.to_string(), tag.to_string()))
            .map(|n| self.root.join(n))
    }

    /// Whether any process is in a directory of `group`'s entries.
    pub fn group_populated(&self, group: &str) -> bool {
        self.entries
            .iter()
            .any(|((g, _), name)| g == group && !procs(&self.root.join(name)).is_empty())
    }

    /// The processes in the entry's directory (none if it never ran).
    pub fn members(&self, group: &str, tag: &str) -> Vec<i32> {
        match self.entries.get(&(group.to_string(), tag.to_string())) {
            Some(name) => procs(&self.root.join(name)),
            None => Vec::new(),
        }
    }

    /// Remove the directories of the entries `keep` does not name (after a
    /// reread): at once those that are empty, the others when a sweep or
    /// the end of a leftover finds them empty ([`Cgroups::swept`]).
    pub fn retain(&mut self, keep: impl Fn(&str, &str) -> bool) {
        for key in self.entries.keys() {
            if !keep(&key.0, &key.1) {
                self.doomed.insert(key.clone());
            }
        }
        let doomed: Vec<_> = self.doomed.iter().cloned().collect();
        for (group, tag) in doomed {
            self.swept(&group, &tag);
        }
    }

    /// The entry's processes have been swept, or one of its leftovers has
    /// gone: if the entry is no longer in the cltab and its directory is
    /// empty, remove the directory.
    pub fn swept(&mut self, group: &str, tag: &str) {
        let key = (group.to_string(), tag.to_string());
        if !self.doomed.contains(&key) {
            return;
        }
        if let Some(name) = self.entries.get(&key)
            && std::fs::remove_dir(self.root.join(name)).is_err()
        {
            return;
        }
        self.entries.remove(&key);
        self.doomed.remove(&key);
    }

    /// How many entry directories this run keeps.
    pub fn entry_dirs(&self) -> usize {
        self.entries.len()
    }
}

impl Drop for Cgroups {
    /// At the end of a run, every entry's directory that is empty, then
    /// the daemon's (what still holds a process stays, for the next run
    /// to find).
    fn drop(&mut self) {
        for name in self.entries.values() {
            let _ = std::fs::remove_dir(self.root.join(name));
        }
        let _ = std::fs::remove_dir(&self.root);
    }
}

/// The pids listed in `dir/cgroup.procs`.
fn procs(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// SIGKILL to everything in `dir` and below: `cgroup.kill` (Linux 5.14),
/// else each listed process.
fn kill_all(dir: &Path) {
    let killed = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("cgroup.kill"))
        .and_then(|mut f| f.write_all(b"1"));
    if killed.is_err() {
        for pid in procs(dir) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// This process's cgroup v2 directory: the cgroup2 mount point joined
/// with the path of the `0::` line of /proc/self/cgroup.
fn own_cgroup() -> Result<PathBuf, CgroupError> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mount = cgroup2_mount(&mountinfo).ok_or(CgroupError::NotMounted)?;
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let own = own_path(&cgroup).ok_or(CgroupError::NoOwnCgroup)?;
    Ok(mount.join(own.trim_start_matches('/')))
}

/// The mount point of the first cgroup2 file system in a mountinfo text.
fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        Some(PathBuf::from(unescape(left.split_whitespace().nth(4)?)))
    })
}

/// The path of the `0::PATH` line of a /proc/PID/cgroup text.
fn own_path(cgroup: &str) -> Option<&str> {
    cgroup.lines().find_map(|l| l.strip_prefix("0::"))
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// FNV-1a, 64 bits: a name for the daemon's directory that stays the same
/// from one run (and one build) to the next for the same socket path.
fn fnv1a(s: &std::ffi::OsStr) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    s.as_bytes().iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Make a cgroup directory 0755 whatever the umask (one that others may
/// write would let them make cgroups under the daemon's).
fn dir_755(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().mode(0o755).create(path)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_setting_reads_auto_off_or_an_absolute_path() {
        let rows: &[(&str, Result<CgroupMode, ()>)] = &[
            ("auto", Ok(CgroupMode::Auto)),
            ("off", Ok(CgroupMode::Off)),
            (
                "/sys/fs/cgroup/x",
                Ok(CgroupMode::Under("/sys/fs/cgroup/x".into())),
            ),
            ("relative/x", Err(())),
            ("", Err(())),
            ("Auto", Err(())),
        ];
        for (input, want) in rows {
            assert_eq!(&CgroupMode::parse(input).map_err(|_| ()), want, "{input:?}");
        }
    }

    #[test]
    fn the_cgroup2_mount_and_own_path_are_read_from_proc_texts() {
        let hybrid = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
                      32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n\
                      41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        let pure =
            "30 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";
        let spaced = "41 31 0:38 / /mnt/my\\040cg rw - cgroup2 none rw\n";
        let rows: &[(&str, Option<&str>)] = &[
            (hybrid, Some("/sys/fs/cgroup/unified")),
            (pure, Some("/sys/fs/cgroup")),
            (spaced, Some("/mnt/my cg")),
            (
                "32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n",
                None,
            ),
            ("", None),
        ];
        for (text, want) in rows {
            assert_eq!(
                cgroup2_mount(text).as_deref(),
                want.map(Path::new),
                "{text}"
            );
        }
        let rows: &[(&str, Option<&str>)] = &[
            ("9:name=systemd:/\n0::/\n", Some("/")),
            (
                "0::/system.slice/clinit.service\n",
                Some("/system.slice/clinit.service"),
            ),
            ("4:memory:/x\n", None),
        ];
        for (text, want) in rows {
            assert_eq!(own_path(text), *want, "{text}");
        }
    }

    #[test]
    fn the_daemons_directory_name_depends_only_on_the_socket() {
        let a = fnv1a(std::ffi::OsStr::new("/run/clinit.sock"));
        assert_eq!(a, fnv1a(std::ffi::OsStr::new("/run/clinit.sock")));
        assert_ne!(a, fnv1a(std::ffi::OsStr::new("/run/clinit2.sock")));
        // The published FNV-1a 64 value of "a", so the name is stable
        // across builds.
        assert_eq!(fnv1a(std::ffi::OsStr::new("a")), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn a_directory_that_is_not_a_cgroup_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let err =
            Cgroups::open(&CgroupMode::Under(dir.path().into()), Path::new("/s")).unwrap_err();
        assert!(matches!(err, CgroupError::NotCgroup(_)), "{err}");
        assert!(err.to_string().contains(&dir.path().display().to_string()));
        assert!(
            Cgroups::open(&CgroupMode::Off, Path::new("/s"))
                .unwrap()
                .is_none()
        );
    }
}
