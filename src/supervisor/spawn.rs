//! Gated spawn: a child that cannot run its command before its pid is
//! recorded.
//!
//! A daemon killed by SIGKILL leaves its children running; the next daemon
//! stops them from the child records in the state store (see
//! [`super::leftovers`]). A child spawned in the turn of the crash, before
//! its record was committed, would be missed and its tag started a second
//! time. So every entry's child is forked *gated*: between `fork` and
//! `exec` it blocks reading a pipe whose only write end the daemon holds.
//! The daemon writes one byte to it ([`release`]) only once the
//! turn's child records are durable. If the daemon dies first, the write
//! end closes with it, the read returns end-of-file and the child exits
//! without ever running the command. There is no window: a command runs
//! only under a recorded pid.
//!
//! The child between `fork` and `exec` runs only async-signal-safe system
//! calls (the daemon has more than one thread): everything it needs
//! (program path, argument and environment arrays) is prepared before the
//! fork. In order, it resets every signal to its default action and
//! unblocks all signals (a signal then does what it would do to the
//! command), makes itself a process group leader, puts `/dev/null`, the
//! output and error descriptors at 0, 1 and 2, closes every other
//! descriptor but the gate (so it holds no other child's gate open), waits
//! at the gate, and execs. A failed `exec` writes one line to its standard
//! error (the entry's log) and exits 127, as a shell does.
//!
//! `std::process::Command` cannot do this: its `spawn` waits until the
//! child has called `exec`, which a gated child does only later.

use std::ffi::{CString, OsStr, OsString};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

use nix::unistd::{ForkResult, fork, pipe2, setpgid};

/// A forked child waiting at its gate. Dropping it without
/// [`release`] makes the child exit unrun.
#[derive(Debug)]
pub struct Gated {
    pub pid: i32,
    gate: OwnedFd,
    /// Closed by the child's successful `exec` (close-on-exec); a failed
    /// one writes its errno first.
    report: OwnedFd,
}

impl Gated {
    /// Let the child exec its command.
    fn open(&self) {
        // One byte into an empty pipe never blocks. If the child is already
        // gone (killed before its release), EPIPE is expected: the daemon
        // ignores SIGPIPE, like every Rust program.
        let _ = nix::unistd::write(&self.gate, b"g");
    }

    /// Wait until the child has exec'd its command (or failed to, or died).
    fn wait_exec(self) {
        let mut errno = [0u8; 4];
        let mut got = 0;
        while got < errno.len() {
            match nix::unistd::read(&self.report, &mut errno[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => break,
            }
        }
        if got == errno.len() {
            let e = std::io::Error::from_raw_os_error(i32::from_ne_bytes(errno));
            tracing::error!("pid {}: cannot exec its command: {e}", self.pid);
        }
    }
}

/// Let `gates`' children run their commands, and return once each has
/// exec'd (so that a process that status calls running runs its command,
/// as when `std::process::Command` spawned it). All gates open first, so
/// the children exec in parallel.
pub fn release(gates: Vec<Gated>) {
    for g in &gates {
        g.open();
    }
    for g in gates {
        g.wait_exec();
    }
}

/// What a child runs: the program's path, its arguments (`argv[0]`
/// first) and its whole environment, ready for `execve`.
pub struct Exec {
    path: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
}

/// A string for `exec` that holds a NUL byte.
#[derive(Debug, thiserror::Error)]
#[error("the {what} holds a NUL byte")]
pub struct NulError {
    what: &'static str,
}

fn cstring(s: &OsStr, what: &'static str) -> Result<CString, NulError> {
    CString::new(s.as_bytes()).map_err(|_| NulError { what })
}

impl Exec {
    /// `path` is run with `argv` (`argv[0]` first), in this daemon's
    /// environment with `vars` set on top.
    pub fn new<'a>(
        path: &OsStr,
        argv: impl IntoIterator<Item = &'a OsStr>,
        vars: &[(&str, &OsStr)],
    ) -> Result<Exec, NulError> {
        let path = cstring(path, "command")?;
        let args = argv;
        let mut argv = Vec::new();
        for a in args {
            argv.push(cstring(a, "command")?);
        }
        let mut envp = Vec::new();
        for (k, v) in std::env::vars_os() {
            if vars.iter().any(|(name, _)| OsStr::new(name) == k) {
                continue;
            }
            let mut kv = k;
            kv.push("=");
            kv.push(v);
            envp.push(cstring(&kv, "environment")?);
        }
        for (k, v) in vars {
            let mut kv = OsString::from(k);
            kv.push("=");
            kv.push(v);
            envp.push(cstring(&kv, "environment")?);
        }
        Ok(Exec { path, argv, envp })
    }
}

/// Fork a gated child that will run `exec` with `/dev/null` as its input
/// and `out`/`err` as its output and error, in its own process group.
pub fn spawn_gated(exec: &Exec, out: &OwnedFd, err: &OwnedFd) -> std::io::Result<Gated> {
    let null = std::fs::File::open("/dev/null")?;
    let (gate_r, gate_w) = pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let (report_r, report_w) = pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let mut argv: Vec<*const libc::c_char> = exec.argv.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = exec.envp.iter().map(|e| e.as_ptr()).collect();
    envp.push(std::ptr::null());
    let fds = ChildFds {
        null: null.as_raw_fd(),
        out: out.as_raw_fd(),
        err: err.as_raw_fd(),
        gate: gate_r.as_raw_fd(),
        report: report_w.as_raw_fd(),
    };
    // SAFETY: the child calls only async-signal-safe functions (see
    // `child`) on memory prepared before the fork, then execs or exits.
    match unsafe { fork() }? {
        ForkResult::Child => unsafe { child(&fds, exec.path.as_ptr(), &argv, &envp) },
        ForkResult::Parent { child } => {
            // Also set the group here, so that a signal to the group sent
            // before the child got to its own setpgid finds it.
            let _ = setpgid(child, child);
            drop(gate_r);
            drop(report_w);
            Ok(Gated {
                pid: child.as_raw(),
                gate: gate_w,
                report: report_r,
            })
        }
    }
}

struct ChildFds {
    null: RawFd,
    out: RawFd,
    err: RawFd,
    gate: RawFd,
    report: RawFd,
}

/// The child, from fork to exec. Only async-signal-safe calls.
unsafe fn child(
    fds: &ChildFds,
    path: *const libc::c_char,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
) -> ! {
    unsafe {
        // Default actions, nothing blocked: a SIGTERM now ends the child
        // (and never runs a handler of the daemon's).
        let mut dfl: libc::sigaction = std::mem::zeroed();
        dfl.sa_sigaction = libc::SIG_DFL;
        for sig in 1..=64 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::sigaction(sig, &dfl, std::ptr::null_mut());
            }
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        libc::setpgid(0, 0);
        // The daemon's descriptors are all above 2 (its 0, 1 and 2 are
        // open), so these do not overwrite one another's sources.
        if libc::dup2(fds.null, 0) < 0 || libc::dup2(fds.out, 1) < 0 || libc::dup2(fds.err, 2) < 0 {
            libc::_exit(127);
        }
        close_from(3, fds.gate.min(fds.report), fds.gate.max(fds.report));
        let mut b = 0u8;
        let n = loop {
            let n = libc::read(fds.gate, (&mut b as *mut u8).cast(), 1);
            if n < 0 && *libc::__errno_location() == libc::EINTR {
                continue;
            }
            break n;
        };
        if n != 1 {
            // The daemon died before this child's pid was recorded: the
            // command must not run.
            libc::_exit(1);
        }
        libc::close(fds.gate);
        libc::execve(path, argv.as_ptr(), envp.as_ptr());
        let errno = *libc::__errno_location();
        let e = errno.to_ne_bytes();
        libc::write(fds.report, e.as_ptr().cast(), e.len());
        let mut digits = [0u8; 12];
        let mut d = digits.len();
        let mut e = errno.unsigned_abs();
        loop {
            d -= 1;
            digits[d] = b'0' + (e % 10) as u8;
            e /= 10;
            if e == 0 {
                break;
            }
        }
        let say = |b: &[u8]| libc::write(2, b.as_ptr().cast(), b.len());
        say(b"clinit: cannot exec ");
        say(std::ffi::CStr::from_ptr(path).to_bytes());
        say(b": errno ");
        say(&digits[d..]);
        say(b"\n");
        libc::_exit(127)
    }
}

/// Close every descriptor from `first` up, except `a` and `b` (`a < b`).
unsafe fn close_from(first: RawFd, a: RawFd, b: RawFd) {
    unsafe {
        let ranges = [(first, a - 1), (a + 1, b - 1), (b + 1, RawFd::MAX)];
        for (lo, hi) in ranges {
            if lo > hi {
                continue;
            }
            let r = libc::syscall(libc::SYS_close_range, lo as u32, hi as u32, 0u32);
            if r != 0 {
                // Before Linux 5.9: close them one by one, up to a bound
                // well above any descriptor the daemon has open.
                let mut fd = lo;
                while fd <= hi.min(65_535) {
                    libc::close(fd);
                    fd += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::wait::{WaitStatus, waitpid};
    use nix::unistd::Pid;

    fn gated(dir: &std::path::Path, script: &str) -> Gated {
        let exec = Exec::new(
            OsStr::new("/bin/sh"),
            ["/bin/sh", "-c", script].map(OsStr::new),
            &[("CLINIT_TAG", OsStr::new("t1"))],
        )
        .unwrap();
        let out: OwnedFd = std::fs::File::create(dir.join("out")).unwrap().into();
        let err = out.try_clone().unwrap();
        spawn_gated(&exec, &out, &err).unwrap()
    }

    fn exit_code(pid: i32) -> i32 {
        match waitpid(Pid::from_raw(pid), None).unwrap() {
            WaitStatus::Exited(_, code) => code,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_child_whose_gate_closes_unopened_never_runs_its_command() {
        let dir = tempfile::tempdir().unwrap();
        let ran = dir.path().join("ran");
        let g = gated(dir.path(), &format!("echo $CLINIT_TAG > {}", ran.display()));
        let pid = g.pid;
        // What a SIGKILL of the daemon does to the write end.
        drop(g);
        assert_eq!(exit_code(pid), 1);
        assert!(!ran.exists());
    }

    #[test]
    fn a_released_child_runs_in_its_own_group_with_its_environment() {
        let dir = tempfile::tempdir().unwrap();
        let ran = dir.path().join("ran");
        let script = format!(
            "echo $CLINIT_TAG $(ps -o pgid= -p $$) $$ > {}",
            ran.display()
        );
        let g = gated(dir.path(), &script);
        let pid = g.pid;
        release(vec![g]);
        assert_eq!(exit_code(pid), 0);
        let words: Vec<String> = std::fs::read_to_string(&ran)
            .unwrap()
            .split_whitespace()
            .map(String::from)
            .collect();
        assert_eq!(words, ["t1", &pid.to_string(), &pid.to_string()]);
    }

    #[test]
    fn a_command_holds_no_descriptor_but_its_0_1_2() {
        let dir = tempfile::tempdir().unwrap();
        // Some descriptor of "the daemon" that is not close-on-exec.
        let leak = std::fs::File::open("/dev/null").unwrap();
        let leak = nix::unistd::dup(&leak).unwrap();
        let g = gated(dir.path(), "exec ls /proc/self/fd");
        let pid = g.pid;
        release(vec![g]);
        assert_eq!(exit_code(pid), 0);
        drop(leak);
        // 3 is the directory `ls` reads.
        let fds = std::fs::read_to_string(dir.path().join("out")).unwrap();
        assert_eq!(
            fds.split_whitespace().collect::<Vec<_>>(),
            ["0", "1", "2", "3"]
        );
    }

    #[test]
    fn a_failed_exec_says_so_in_the_log_and_exits_127() {
        let dir = tempfile::tempdir().unwrap();
        let exec = Exec::new(OsStr::new("/nonexistent/prog"), [OsStr::new("prog")], &[]).unwrap();
        let out: OwnedFd = std::fs::File::create(dir.path().join("out"))
            .unwrap()
            .into();
        let err = out.try_clone().unwrap();
        let g = spawn_gated(&exec, &out, &err).unwrap();
        let pid = g.pid;
        release(vec![g]);
        assert_eq!(exit_code(pid), 127);
        let log = std::fs::read_to_string(dir.path().join("out")).unwrap();
        assert_eq!(log, "clinit: cannot exec /nonexistent/prog: errno 2\n");
    }

    #[test]
    fn a_nul_in_the_command_is_an_error_not_a_truncation() {
        let e = Exec::new(OsStr::new("/bin/sh"), [OsStr::new("a\0b")], &[]).err();
        assert_eq!(e.unwrap().to_string(), "the command holds a NUL byte");
    }
}
