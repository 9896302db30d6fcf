//! Resolved configuration: embedded defaults < command-line flags < cltab
//! settings (Cluster::Init's precedence: the cltab has the last word, for the
//! daemon and the client alike).

use crate::cltab::Settings;
use nix::sys::signal::Signal;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const DEFAULT_CLTAB: &str = "/etc/cltab";
pub const DEFAULT_SOCKET: &str = "/var/run/clinit/clinit.s";
pub const DEFAULT_CLSTAT: &str = "/var/run/clinit/clstat";
pub const DEFAULT_LOG: &str = "/var/run/clinit/log";
pub const DEFAULT_SOCKET_MODE: u32 = 0o600;
pub const DEFAULT_STATE: &str = "/var/lib/clinit";
pub const DEFAULT_RESTORE_TIMEOUT: Duration = Duration::from_secs(30);

/// Paths given on the command line (each optional).
#[derive(Clone, Debug, Default)]
pub struct CliPaths {
    pub cltab: Option<PathBuf>,
    pub socket: Option<PathBuf>,
    /// `--state-dir`.
    pub state: Option<PathBuf>,
}

impl CliPaths {
    pub fn cltab(&self) -> PathBuf {
        self.cltab
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CLTAB))
    }
}

/// Where the daemon and client find things.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Paths {
    pub cltab: PathBuf,
    pub socket: PathBuf,
    pub clstat: PathBuf,
    pub log: PathBuf,
    pub logdir: Option<PathBuf>,
    pub socket_mode: u32,
    pub socket_group: Option<String>,
    /// Directory of the persistent state (goals, entry decisions, children).
    pub state: PathBuf,
    pub userlist: Option<PathBuf>,
    /// How long start-up waits for restored groups to settle before serving.
    pub restore_timeout: Duration,
}

impl Paths {
    pub fn resolve(cli: &CliPaths, s: &Settings) -> Paths {
        let pick = |set: &Option<PathBuf>, flag: &Option<PathBuf>, default: &str| {
            set.clone()
                .or_else(|| flag.clone())
                .unwrap_or_else(|| PathBuf::from(default))
        };
        Paths {
            cltab: cli.cltab(),
            socket: pick(&s.socket, &cli.socket, DEFAULT_SOCKET),
            // No flags for these: the cltab setting or the default.
            clstat: s.clstat.clone().unwrap_or_else(|| DEFAULT_CLSTAT.into()),
            log: s.log.clone().unwrap_or_else(|| DEFAULT_LOG.into()),
            logdir: s.logdir.clone(),
            socket_mode: s.socket_mode.unwrap_or(DEFAULT_SOCKET_MODE),
            socket_group: s.socket_group.clone(),
            state: pick(&s.state, &cli.state, DEFAULT_STATE),
            userlist: s.userlist.clone(),
            restore_timeout: s.restore_timeout.unwrap_or(DEFAULT_RESTORE_TIMEOUT),
        }
    }

    /// The lock file that makes "one daemon per socket" race-free.
    pub fn socket_lock(&self) -> PathBuf {
        lock_path_for(&self.socket)
    }

    /// The lock file on which starters of `clinit lockd` take turns.
    pub fn start_lock(&self) -> PathBuf {
        with_suffix(&self.socket, ".start.lock")
    }
}

pub fn lock_path_for(socket: &Path) -> PathBuf {
    with_suffix(socket, ".lock")
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// This machine's host name ("" if it cannot be read).
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default()
}

/// Respawn throttling: a run shorter than `fast` counts as a rapid restart;
/// after more than `burst` of them in a row, each restart waits `delay`,
/// doubling up to `delay_max`; a run of at least `reset` clears the count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RespawnPolicy {
    pub fast: Duration,
    pub burst: u32,
    pub delay: Duration,
    pub delay_max: Duration,
    pub reset: Duration,
    /// Stop restarting after this many rapid restarts in a row; `None`: never
    /// give up (the default).
    pub give_up: Option<u32>,
}

/// Stop escalation and respawn policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// The first stop signal (SIGINT, as Cluster::Init sends).
    pub stop_signal: Signal,
    /// The first stop signal; SIGTERM this long after.
    pub term_after: Duration,
    /// SIGKILL this long after SIGTERM.
    pub kill_after: Duration,
    pub respawn: RespawnPolicy,
    /// A notifier still running after this long is killed.
    pub notifier_timeout: Duration,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing {
            stop_signal: Signal::SIGINT,
            term_after: Duration::from_secs(5),
            kill_after: Duration::from_secs(10),
            respawn: RespawnPolicy {
                fast: Duration::from_secs(1),
                burst: 5,
                delay: Duration::from_secs(1),
                delay_max: Duration::from_secs(60),
                reset: Duration::from_secs(10),
                give_up: None,
            },
            notifier_timeout: Duration::from_secs(30),
        }
    }
}

impl Timing {
    pub fn resolve(s: &Settings) -> Timing {
        let d = Timing::default();
        Timing {
            stop_signal: s.stop_signal.unwrap_or(d.stop_signal),
            term_after: s.stop_term_after.unwrap_or(d.term_after),
            kill_after: s.stop_kill_after.unwrap_or(d.kill_after),
            respawn: RespawnPolicy {
                fast: s.respawn_fast.unwrap_or(d.respawn.fast),
                burst: s.respawn_burst.unwrap_or(d.respawn.burst),
                delay: s.respawn_delay.unwrap_or(d.respawn.delay),
                delay_max: s.respawn_delay_max.unwrap_or(d.respawn.delay_max),
                reset: s.respawn_reset.unwrap_or(d.respawn.reset),
                give_up: s.respawn_give_up.filter(|n| *n > 0),
            },
            notifier_timeout: s.notifier_timeout.unwrap_or(d.notifier_timeout),
        }
    }
}

/// Files and directories the daemon creates, with explicit modes: the
/// umask can take permissions away, never add them (under umask 000 the
/// log was world-writable).
pub mod files {
    use std::fs::{DirBuilder, File, OpenOptions};
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    use std::path::Path;

    /// Logs and the status file: the daemon writes, everyone reads.
    pub const SHARED: u32 = 0o644;
    /// Lock files: only the daemon's user.
    pub const PRIVATE: u32 = 0o600;
    /// Directories the daemon makes.
    pub const DIR: u32 = 0o755;

    /// Open `path` for appending, creating it with mode [`SHARED`].
    pub fn append(path: &Path) -> std::io::Result<File> {
        OpenOptions::new()
            .create(true)
            .append(true)
            .mode(SHARED)
            .open(path)
    }

    /// Open (or create with mode [`PRIVATE`]) a lock file, keeping its
    /// contents.
    pub fn lock(path: &Path) -> std::io::Result<File> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(PRIVATE)
            .open(path)
    }

    /// Create a new file to write whole (a temp file), mode `mode`.
    pub fn create(path: &Path, mode: u32) -> std::io::Result<File> {
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(path)
    }

    /// `mkdir -p` with mode [`DIR`] for what it makes.
    pub fn dirs(path: &Path) -> std::io::Result<()> {
        DirBuilder::new().recursive(true).mode(DIR).create(path)
    }
}
