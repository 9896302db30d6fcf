//! `clinit lock NAME -- COMMAND...`: run a command under a lock, and start a
//! standalone lock daemon on demand.
//!
//! The command never runs on without its lock: one `poll` loop watches the
//! command (a pidfd), the connection to the lock service (end of stream
//! means the service died and the lock is gone), the forwarded signals (a
//! signalfd) and, with `--ttl`, the lease renewal time. No sleeps.

use crate::client::{Client, ClientError, Target, wait_readable};
use crate::config::{CliPaths, Paths};
use crate::lock::LockMode;
use crate::proto::{ErrorCode, Reply, Request};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::unistd::Pid;
use std::os::fd::{AsFd, AsRawFd};
use std::process::Command;
use std::time::{Duration, Instant};

/// EX_TEMPFAIL (75): the lock could not be had (BUSY, or TIMEOUT waiting).
pub const EXIT_BUSY: i32 = ErrorCode::Busy.exit_code();
/// The lock was lost while the command ran.
pub const EXIT_LOST: i32 = 76;
/// EX_UNAVAILABLE (69): no lock service could be reached or started.
pub const EXIT_NO_LOCKMGR: i32 = ErrorCode::NoLockmgr.exit_code();
/// How long a command gets after SIGTERM before SIGKILL when the lock is lost.
pub const LOST_GRACE: Duration = Duration::from_secs(5);

pub struct LockArgs<'a> {
    pub name: &'a str,
    pub mode: LockMode,
    pub wait: bool,
    pub timeout: Option<Duration>,
    pub ttl: Option<Duration>,
    pub no_start: bool,
    pub command: &'a [String],
}

/// A client error, with its stable code in brackets.
fn fail_client(e: &ClientError) -> i32 {
    fail(format!("{e} [{}]", e.code()), e.exit_code())
}

fn fail(msg: impl std::fmt::Display, code: i32) -> i32 {
    eprintln!("clinit: {msg}");
    code
}

/// Connect to the lock service on the socket, starting `clinit lockd` when
/// nobody answers (unless `no_start`). Race-free: starters serialise on an
/// flock of `<socket>.start.lock`, and the started daemon reports on a pipe
/// once it is bound, so nobody sleeps.
/// Why no connection to the lock service was made.
pub enum ConnectError {
    /// It answered with an error (a limit, shutting down, ...).
    Refused(crate::proto::ErrorReply),
    /// It could not be reached or started.
    Unreachable(String),
}

impl From<String> for ConnectError {
    fn from(s: String) -> ConnectError {
        ConnectError::Unreachable(s)
    }
}

pub fn connect_or_start(cli: &CliPaths, p: &Paths, no_start: bool) -> Result<Client, ConnectError> {
    let first = match Client::connect(&p.socket) {
        Ok(c) => return Ok(c),
        Err(ClientError::Daemon(e)) => return Err(ConnectError::Refused(e)),
        Err(e) => e,
    };
    if no_start || !matches!(first, ClientError::NoDaemon { .. }) {
        return Err(first.to_string().into());
    }
    if let Some(dir) = p.socket.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::config::files::dirs(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let lock_path = p.start_lock();
    let file = crate::config::files::lock(&lock_path)
        .map_err(|e| format!("cannot create {}: {e}", lock_path.display()))?;
    let _start = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| format!("cannot lock {}: {e}", lock_path.display()))?;
    // Somebody may have started it while we waited for the start lock.
    if let Ok(c) = Client::connect(&p.socket) {
        return Ok(c);
    }
    // Close-on-exec: only the write end, cleared below, may reach lockd.
    let (rd, wr) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find clinit itself: {e}"))?;
    let mut cmd = Command::new(exe);
    cmd.arg("lockd")
        .arg("-s")
        .arg(&p.socket)
        .env("CLINIT_READY_FD", wr.as_raw_fd().to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    if let Some(c) = &cli.cltab {
        cmd.arg("-c").arg(c);
    }
    // Its state and log go next to the socket unless told otherwise.
    if let Some(dir) = &cli.state {
        cmd.arg("--state-dir").arg(dir);
    }
    let wr_raw = wr.as_raw_fd();
    crate::supervisor::spawn::with_default_signals(&mut cmd);
    // SAFETY: runs in the forked child before exec; setsid and fcntl are
    // async-signal-safe, `wr_raw` is a descriptor the child inherited, and
    // nothing is allocated.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(move || {
            // Its own session, and the ready pipe kept open across exec.
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            let flags = libc::fcntl(wr_raw, libc::F_GETFD);
            libc::fcntl(wr_raw, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot start clinit lockd: {e}"))?;
    drop(wr);
    // The lock daemon writes one line once it serves, or dies (end of file).
    let mut buf = [0u8; 16];
    let ready = matches!(wait_readable(rd.as_fd(), Duration::from_secs(30)), Ok(true))
        && nix::unistd::read(&rd, &mut buf).is_ok_and(|n| n > 0);
    let pid = child.id();
    drop(child);
    match Client::connect(&p.socket) {
        Ok(c) => {
            let dir = p
                .socket
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."));
            eprintln!(
                "clinit: no lock service answered on {}: started clinit lockd (pid {pid}; its state and log are in {}; it exits when idle)",
                p.socket.display(),
                if cli.state.is_none()
                    && p.state == std::path::Path::new(crate::config::DEFAULT_STATE)
                {
                    dir
                } else {
                    &p.state
                }
                .display()
            );
            Ok(c)
        }
        Err(e) if ready => Err(e.to_string().into()),
        Err(e) => Err(format!(
            "started clinit lockd on {}, but it did not come up ({e}); see its log",
            p.socket.display()
        )
        .into()),
    }
}

/// Run `clinit lock`; returns the exit status.
/// With a remote `target` (`clinit --host`), the lock service is that
/// daemon: nothing is started, and a connection that fails exits with the
/// remote client's codes (22-26).
pub fn run(cli: &CliPaths, p: &Paths, target: &Target, a: &LockArgs) -> i32 {
    let connected = match target {
        Target::Unix(_) => connect_or_start(cli, p, a.no_start),
        Target::Remote(_) => match Client::open(target) {
            Ok(c) => Ok(c),
            Err(ClientError::Daemon(e)) => Err(ConnectError::Refused(e)),
            Err(e) => return fail_client(&e),
        },
    };
    let mut c = match connected {
        Ok(c) => c,
        // The service answered, and refused (a per-user limit, ...).
        Err(ConnectError::Refused(e)) => {
            return fail(
                format!("{} [{}]", e.message, e.code.name()),
                e.code.exit_code(),
            );
        }
        Err(ConnectError::Unreachable(e)) => {
            return fail(
                format!("no lock service: {e} [{}]", ErrorCode::NoLockmgr.name()),
                EXIT_NO_LOCKMGR,
            );
        }
    };
    let lease = match a.ttl {
        None => None,
        Some(ttl) => match c.request(Request::LeaseGrant {
            ttl_ms: ttl.as_millis() as u64,
        }) {
            Ok(Reply::Lease { lease, .. }) => Some(lease),
            Ok(other) => return fail(format!("unexpected reply {other:?} [PROTOCOL]"), 1),
            Err(e) => return fail_client(&e),
        },
    };
    if let Some(t) = a.timeout {
        c.set_timeout(t + Duration::from_secs(5));
    } else {
        c.set_timeout(Duration::from_secs(365 * 86_400));
    }
    let what = format!("clinit lock: {}", a.command.join(" "));
    let (token, grace_ms) = match c.request(Request::LockAcquire {
        name: a.name.to_string(),
        mode: a.mode,
        wait: a.wait,
        timeout_ms: a.timeout.map(|t| t.as_millis() as u64),
        lease,
        what,
    }) {
        Ok(Reply::Granted {
            token, grace_ms, ..
        }) => (token, grace_ms),
        Ok(other) => return fail(format!("unexpected reply {other:?} [PROTOCOL]"), 1),
        Err(ClientError::Daemon(e)) if matches!(e.code, ErrorCode::Busy | ErrorCode::Timeout) => {
            return fail(format!("{} [{}]", e.message, e.code.name()), EXIT_BUSY);
        }
        Err(e) => return fail_client(&e),
    };
    c.set_timeout(REQUEST_TIMEOUT);

    // Forwarded signals arrive on a signalfd; the child gets them unblocked.
    let mut mask = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        mask.add(s);
    }
    if let Err(e) = mask.thread_block() {
        return fail(format!("cannot block signals: {e}"), 1);
    }
    let sfd = match SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC) {
        Ok(s) => s,
        Err(e) => return fail(format!("signalfd: {e}"), 1),
    };
    let mut cmd = Command::new(&a.command[0]);
    cmd.args(&a.command[1..])
        .env("CLINIT_LOCK_TOKEN", token.to_string())
        .env("CLINIT_LOCK_NAME", a.name);
    // The command must not inherit our blocked or ignored signals.
    crate::supervisor::spawn::with_default_signals(&mut cmd);
    // SAFETY: runs in the forked child before exec; sigprocmask and
    // prctl(PR_SET_PDEATHSIG) are async-signal-safe, `mask` is a copy
    // owned by the closure, and nothing is allocated.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(move || {
            mask.thread_unblock().map_err(std::io::Error::from)?;
            // If clinit lock itself is killed, its connection closes and the
            // lock is released: the kernel then kills the command too.
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    let child = match cmd.spawn() {
        Ok(ch) => ch,
        Err(e) => {
            let _ = release(&mut c, a.name, lease);
            return fail(format!("cannot run {}: {e}", a.command[0]), 127);
        }
    };
    let pid = child.id() as i32;
    let pidfd = match crate::supervisor::leftovers::pidfd_open(pid) {
        Ok(fd) => fd,
        Err(e) => return fail(format!("pidfd_open: {e}"), 1),
    };
    // In cluster mode the daemon says how soon a lost lock may be another
    // node's: the command is stopped within that.
    let grace = grace_ms.map_or(LOST_GRACE, |ms| Duration::from_millis(ms).min(LOST_GRACE));
    let renew_every = a.ttl.map(|t| (t / 3).max(Duration::from_millis(50)));
    let mut next_renew = renew_every.map(|d| Instant::now() + d);
    // Cluster mode: a daemon that stops answering (frozen) cannot close our
    // connection when its claim is lost, so it is asked every 0.4 grace
    // (lease_ttl/10) whether it still serves, answering within as long:
    // silent, the command is stopped as for a lost lock, still before the
    // lease can expire (see docs/architecture.md, "Cluster locks").
    let probe_every = grace_ms.map(|_| (grace * 2 / 5).max(Duration::from_millis(20)));
    let mut next_probe = probe_every.map(|d| Instant::now() + d);
    let mut lost: Option<String> = None;
    let mut lost_deadline: Option<(Instant, bool)> = None;

    let status = loop {
        let now = Instant::now();
        let wake = [next_renew, next_probe, lost_deadline.map(|d| d.0)]
            .into_iter()
            .flatten()
            .min();
        let timeout = match wake {
            Some(w) => {
                PollTimeout::try_from(w.saturating_duration_since(now)).unwrap_or(PollTimeout::MAX)
            }
            None => PollTimeout::NONE,
        };
        let sock_fd = c.as_fd();
        let mut fds = [
            PollFd::new(pidfd.as_fd(), PollFlags::POLLIN),
            PollFd::new(sfd.as_fd(), PollFlags::POLLIN),
            PollFd::new(sock_fd, PollFlags::POLLIN),
        ];
        match poll(&mut fds, timeout) {
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return fail(format!("poll: {e}"), 1),
            Ok(_) => {}
        }
        let ready = |i: usize| fds[i].revents().is_some_and(|r| !r.is_empty());
        let (child_done, got_signal, sock_event) = (ready(0), ready(1), ready(2));
        if child_done {
            match nix::sys::wait::waitpid(Pid::from_raw(pid), None) {
                Ok(nix::sys::wait::WaitStatus::Exited(_, code)) => break code,
                Ok(nix::sys::wait::WaitStatus::Signaled(_, sig, _)) => break 128 + sig as i32,
                _ => break 1,
            }
        }
        if got_signal {
            while let Ok(Some(info)) = sfd.read_signal() {
                if let Ok(sig) = Signal::try_from(info.ssi_signo as i32) {
                    let _ = kill(Pid::from_raw(pid), sig);
                }
            }
        }
        if lost.is_none() && sock_event && c.peer_closed() {
            lost = Some("the lock service went away".into());
        }
        if lost.is_none()
            && let (Some(at), Some(lease), Some(every)) = (next_renew, lease, renew_every)
            && Instant::now() >= at
        {
            // In cluster mode a frozen daemon must not hold this up longer
            // than the probe would (see below).
            let within = probe_every.unwrap_or(REQUEST_TIMEOUT);
            match ask_within(&mut c, within, Request::LeaseRenew { lease }) {
                Ok(Reply::Lease { .. }) => next_renew = Some(Instant::now() + every),
                Ok(_) | Err(_) => lost = Some("its lease could not be renewed".into()),
            }
        }
        if lost.is_none()
            && let (Some(at), Some(every)) = (next_probe, probe_every)
            && Instant::now() >= at
        {
            let probe = Request::Locks {
                name: Some(a.name.to_string()),
                after: None,
            };
            match ask_within(&mut c, every, probe) {
                Ok(_) => next_probe = Some(Instant::now() + every),
                Err(_) => {
                    lost = Some(format!(
                        "the lock service did not answer within {} s",
                        every.as_secs_f64()
                    ))
                }
            }
        }
        if let Some(why) = &lost {
            match lost_deadline {
                None => {
                    eprintln!(
                        "clinit: lost lock {} ({why}); stopping the command (SIGTERM, SIGKILL after {} s)",
                        a.name,
                        grace.as_secs_f64()
                    );
                    let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
                    lost_deadline = Some((Instant::now() + grace, false));
                    next_renew = None;
                    next_probe = None;
                }
                Some((at, false)) if Instant::now() >= at => {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                    lost_deadline = Some((at + Duration::from_secs(3600), true));
                }
                _ => {}
            }
        }
    };
    if let Some(why) = lost {
        return fail(
            format!(
                "the command was stopped: lock {} was lost ({why}) [LOST]",
                a.name
            ),
            EXIT_LOST,
        );
    }
    if let Err(e) = release(&mut c, a.name, lease) {
        eprintln!("clinit: warning: releasing lock {}: {e}", a.name);
    }
    status
}

/// How long a request made while the command runs may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// `req`, answered within `within` (then the usual timeout again).
fn ask_within(c: &mut Client, within: Duration, req: Request) -> Result<Reply, ClientError> {
    c.set_timeout(within);
    let r = c.request(req);
    c.set_timeout(REQUEST_TIMEOUT);
    r
}

fn release(c: &mut Client, name: &str, lease: Option<u64>) -> Result<(), ClientError> {
    c.request(Request::LockRelease {
        name: name.to_string(),
        lease,
    })?;
    if let Some(lease) = lease {
        c.request(Request::LeaseRevoke { lease })?;
    }
    Ok(())
}
