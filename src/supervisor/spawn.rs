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
//! The child between its creation and `exec` makes only raw system calls
//! on memory prepared before (see [`sys`]). In order, it resets every
//! signal to its default action and unblocks all signals (the daemon
//! blocks them around the creation, so no handler of the daemon's ever
//! runs in the child, and a signal then does what it would do to the
//! command), makes itself a process group leader, puts `/dev/null`, the
//! output and error descriptors at 0, 1 and 2, closes every other
//! descriptor but the gate, the report pipe and its entry's
//! `cgroup.procs` (so it holds no other child's gate open, nor the
//! daemon's socket lock should the daemon be killed now), moves itself
//! into its entry's cgroup if it has one, waits at the gate, and execs. A failed `exec`
//! writes one line to its standard error (the entry's log) and its errno
//! to the report pipe, and exits 127, as a shell does.
//!
//! On x86-64 the child is made as `posix_spawn` makes it, with
//! `clone(CLONE_VM)` on a stack of its own: it shares the daemon's memory
//! until it execs, so creating it copies no page tables and the daemon's
//! later writes cost no copy-on-write faults. (A `fork` per child cost
//! 0.25 s more over 1,000 children, the children being alive, gated,
//! together.) Unlike `posix_spawn` the daemon does not wait for the exec:
//! so everything the child reads stays alive, owned by its [`Gated`], until
//! the child has exec'd or exited. The system calls are made with the
//! `syscall` instruction, not libc's wrappers, because a wrapper that fails
//! sets `errno`, and the child's `errno` is the daemon thread's. Elsewhere
//! the child is forked and uses libc.
//!
//! `std::process::Command` cannot do this: its `spawn` waits until the
//! child has called `exec`, which a gated child does only later.

use std::ffi::{CString, OsStr, OsString};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::sync::Arc;

use nix::unistd::{Pid, pipe2, setpgid};

/// A child waiting at its gate. Dropping it without [`release`] makes the
/// child exit without running its command (and waits for that).
pub struct Gated {
    pub pid: i32,
    gate: Option<OwnedFd>,
    /// Closed by the child's successful `exec` (close-on-exec); a failed
    /// one writes its errno first.
    report: OwnedFd,
    /// What the child reads until it execs: kept alive until then.
    _child: Box<ChildArgs>,
    _exec: Exec,
    _stack: Option<Stack>,
    waited: bool,
}

impl std::fmt::Debug for Gated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Gated({})", self.pid)
    }
}

impl Gated {
    /// Let the child exec its command.
    fn open(&self) {
        // One byte into an empty pipe never blocks. If the child is already
        // gone (killed before its release), EPIPE is expected: the daemon
        // ignores SIGPIPE, like every Rust program.
        if let Some(g) = &self.gate {
            let _ = nix::unistd::write(g, b"g");
        }
    }

    /// Wait until the child has exec'd its command, failed to, or died;
    /// its errno if `exec` failed.
    fn wait_exec(&mut self) -> Option<std::io::Error> {
        self.gate = None;
        self.waited = true;
        // Until end-of-file: the child may be using its stack and
        // arguments until its exec or exit closes the pipe.
        let mut errno = [0u8; 4];
        let mut got = 0;
        let mut buf = [0u8; 8];
        loop {
            match nix::unistd::read(&self.report, &mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    for &b in &buf[..n] {
                        if got < errno.len() {
                            errno[got] = b;
                            got += 1;
                        }
                    }
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => break,
            }
        }
        (got == errno.len()).then(|| std::io::Error::from_raw_os_error(i32::from_ne_bytes(errno)))
    }
}

impl Drop for Gated {
    fn drop(&mut self) {
        if !self.waited {
            // Gate closed unopened: the child exits; its memory may be
            // freed only after.
            self.wait_exec();
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
    let many = gates.len() >= 256;
    for mut g in gates {
        if let Some(e) = g.wait_exec() {
            tracing::error!("pid {}: cannot exec its command: {e}", g.pid);
        }
    }
    // What a wave of children needed until they exec'd (their arguments,
    // environment arrays and stacks) is free now: give it back rather than
    // keep the wave's peak as the daemon's size.
    #[cfg(target_env = "gnu")]
    if many {
        // SAFETY: glibc's malloc_trim has no preconditions.
        unsafe {
            libc::malloc_trim(0);
        }
    }
    #[cfg(not(target_env = "gnu"))]
    let _ = many;
}

/// This process's environment, once, as `KEY=VALUE` strings for the
/// children (shared by all of them rather than copied into each).
pub fn environment() -> Arc<[CString]> {
    std::env::vars_os()
        .filter_map(|(k, v)| {
            let mut kv = k;
            kv.push("=");
            kv.push(v);
            CString::new(kv.into_vec()).ok()
        })
        .collect()
}

/// What a child runs: the program's path, its arguments (`argv[0]`
/// first) and its whole environment, ready for `execve`.
pub struct Exec {
    path: CString,
    argv: Vec<CString>,
    base: Arc<[CString]>,
    vars: Vec<CString>,
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
    /// `path` is run with `argv` (`argv[0]` first), in the environment
    /// `base` with `vars` set on top.
    pub fn new<'a>(
        path: &OsStr,
        argv: impl IntoIterator<Item = &'a OsStr>,
        base: &Arc<[CString]>,
        vars: &[(&str, &OsStr)],
    ) -> Result<Exec, NulError> {
        let path = cstring(path, "command")?;
        let argv = argv
            .into_iter()
            .map(|a| cstring(a, "command"))
            .collect::<Result<_, _>>()?;
        let vars = vars
            .iter()
            .map(|(k, v)| {
                let mut kv = OsString::from(k);
                kv.push("=");
                kv.push(v);
                cstring(&kv, "environment")
            })
            .collect::<Result<_, _>>()?;
        Ok(Exec {
            path,
            argv,
            base: base.clone(),
            vars,
        })
    }

    /// The `envp` array: `base` without the names `vars` sets, then `vars`.
    fn envp(&self) -> Vec<*const libc::c_char> {
        fn name(kv: &CString) -> &[u8] {
            let b = kv.as_bytes();
            let end = b.iter().position(|&c| c == b'=').map_or(b.len(), |i| i + 1);
            &b[..end]
        }
        self.base
            .iter()
            .filter(|kv| !self.vars.iter().any(|v| name(v) == name(kv)))
            .chain(&self.vars)
            .map(|kv| kv.as_ptr())
            .chain([std::ptr::null()])
            .collect()
    }
}

/// Everything the child reads, in memory it does not share with anything
/// the daemon changes meanwhile.
struct ChildArgs {
    null: RawFd,
    out: RawFd,
    err: RawFd,
    gate: RawFd,
    report: RawFd,
    /// The entry's `cgroup.procs`, or -1.
    cgroup: RawFd,
    path: *const libc::c_char,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
}

// SAFETY: the pointers point into the `Exec` kept beside it in `Gated`.
unsafe impl Send for ChildArgs {}
// SAFETY: as above; nothing writes through them.
unsafe impl Send for Gated {}

/// Block every signal in this thread until dropped (then restore the
/// mask), so that no signal handler of the daemon's runs in a child
/// before it has reset them.
struct SignalsBlocked(libc::sigset_t);

impl SignalsBlocked {
    fn new() -> SignalsBlocked {
        // SAFETY: plain signal-mask calls on local sets.
        unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
            SignalsBlocked(old)
        }
    }
}

impl Drop for SignalsBlocked {
    fn drop(&mut self) {
        // SAFETY: restores the mask saved by `new`.
        unsafe {
            libc::pthread_sigmask(libc::SIG_SETMASK, &self.0, std::ptr::null_mut());
        }
    }
}

/// Create a gated child that will run `exec` with `/dev/null` as its input
/// and `out`/`err` as its output and error, in its own process group, and
/// in the cgroup whose `cgroup.procs` is `cgroup` if one is given (it
/// moves itself there before it waits at its gate, so everything its
/// command starts is in it).
pub fn spawn_gated(
    exec: Exec,
    out: &OwnedFd,
    err: &OwnedFd,
    cgroup: Option<&OwnedFd>,
) -> std::io::Result<Gated> {
    let null = std::fs::File::open("/dev/null")?;
    let (gate_r, gate_w) = pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let (report_r, report_w) = pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let nul = std::ptr::null();
    let args = Box::new(ChildArgs {
        null: null.as_raw_fd(),
        out: out.as_raw_fd(),
        err: err.as_raw_fd(),
        gate: gate_r.as_raw_fd(),
        report: report_w.as_raw_fd(),
        cgroup: cgroup.map_or(-1, |c| c.as_raw_fd()),
        path: exec.path.as_ptr(),
        argv: exec.argv.iter().map(|a| a.as_ptr()).chain([nul]).collect(),
        envp: exec.envp(),
    });
    let (pid, stack) = {
        let _blocked = SignalsBlocked::new();
        create(&args)?
    };
    // Also set the group here, so that a signal to the group sent before
    // the child got to its own setpgid finds it.
    let _ = setpgid(Pid::from_raw(pid), Pid::from_raw(pid));
    drop((gate_r, report_w, null));
    Ok(Gated {
        pid,
        gate: Some(gate_w),
        report: report_r,
        _child: args,
        _exec: exec,
        _stack: stack,
        waited: false,
    })
}

/// A child's own stack (x86-64: the child shares the daemon's memory).
struct Stack {
    base: *mut libc::c_void,
    len: usize,
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: mapped by `Stack::new`; the child no longer runs on it.
        unsafe {
            libc::munmap(self.base, self.len);
        }
    }
}

#[cfg(target_arch = "x86_64")]
const STACK: usize = 64 * 1024;

#[cfg(target_arch = "x86_64")]
fn create(args: &ChildArgs) -> std::io::Result<(i32, Option<Stack>)> {
    // SAFETY: a fresh private mapping, its lowest page a guard.
    let stack = unsafe {
        let base = libc::mmap(
            std::ptr::null_mut(),
            STACK,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
            -1,
            0,
        );
        if base == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        libc::mprotect(base, 4096, libc::PROT_NONE);
        Stack { base, len: STACK }
    };
    extern "C" fn entry(arg: *mut libc::c_void) -> libc::c_int {
        // SAFETY: `arg` is the `ChildArgs` that outlives this child's use.
        unsafe { child(&*(arg as *const ChildArgs)) }
    }
    // SAFETY: the child runs `entry` on its own stack, reads only `args`
    // (alive until it has exec'd or exited: see `Gated`) and makes only raw
    // system calls.
    let pid = unsafe {
        libc::clone(
            entry,
            stack.base.add(STACK),
            libc::CLONE_VM | libc::SIGCHLD,
            args as *const ChildArgs as *mut libc::c_void,
        )
    };
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((pid, Some(stack)))
}

#[cfg(not(target_arch = "x86_64"))]
fn create(args: &ChildArgs) -> std::io::Result<(i32, Option<Stack>)> {
    // SAFETY: the child makes only async-signal-safe calls, then execs or
    // exits.
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Child => unsafe { child(args) },
        nix::unistd::ForkResult::Parent { child } => Ok((child.as_raw(), None)),
    }
}

/// Make `cmd`'s child start its program with every signal at its default
/// action and none blocked, whatever the parent ignores or blocks (a
/// daemon started from a background job ignores SIGINT and SIGQUIT; under
/// `nohup`, SIGHUP), as entries' processes are started.
pub fn with_default_signals(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: runs in the forked child before exec and makes only the
    // rt_sigaction and rt_sigprocmask system calls (as the entries' child
    // does, `child` below: raw, so that the C library's own signals 32 and
    // 33, which its wrapper refuses to touch, are reset too); it touches no
    // memory of the parent's and allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            for sig in 1..=64 {
                if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                    sys::default_action(sig);
                }
            }
            sys::unblock_all();
            Ok(())
        });
    }
}

/// The child, from its creation to exec.
unsafe fn child(a: &ChildArgs) -> ! {
    unsafe {
        // Default actions, then nothing blocked.
        for sig in 1..=64 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                sys::default_action(sig);
            }
        }
        sys::unblock_all();
        sys::setpgid0();
        // The daemon's descriptors are all above 2 (its 0, 1 and 2 are
        // open), so these do not overwrite one another's sources.
        if sys::dup2(a.null, 0) < 0 || sys::dup2(a.out, 1) < 0 || sys::dup2(a.err, 2) < 0 {
            sys::exit(127);
        }
        // Every descriptor but the gate, the report pipe and the cgroup's
        // is closed first: until then this child holds the daemon's (its
        // socket lock among them), and a daemon started just after a
        // SIGKILL of this one would find the lock still held.
        let mut keep = [a.gate, a.report, a.cgroup];
        keep.sort_unstable();
        let mut from = 3;
        for k in keep.into_iter().filter(|&k| k >= 3) {
            if from < k {
                sys::close_range(from, k - 1);
            }
            from = k + 1;
        }
        sys::close_range(from, RawFd::MAX);
        // Into the entry's cgroup before anything can start another
        // process (see `super::cgroup`).
        if a.cgroup >= 0 {
            let r = sys::write(a.cgroup, b"0");
            if r < 0 {
                fail(a, b"cannot join the entry's cgroup", b"", -r as i32);
            }
            sys::close(a.cgroup);
        }
        let mut b = 0u8;
        let n = loop {
            let n = sys::read(a.gate, &mut b);
            if n != -libc::EINTR as isize {
                break n;
            }
        };
        if n != 1 {
            // The daemon died before this child's pid was recorded: the
            // command must not run.
            sys::exit(1);
        }
        sys::close(a.gate);
        let errno = sys::execve(a.path, a.argv.as_ptr(), a.envp.as_ptr());
        fail(
            a,
            b"cannot exec ",
            std::ffi::CStr::from_ptr(a.path).to_bytes(),
            errno,
        )
    }
}

/// Report `errno` on the report pipe, say what failed on standard error
/// (the entry's log) and exit 127, as a shell does.
unsafe fn fail(a: &ChildArgs, what: &[u8], name: &[u8], errno: i32) -> ! {
    unsafe {
        sys::write(a.report, &errno.to_ne_bytes());
        let mut digits = [0u8; 12];
        let mut d = digits.len();
        let mut e = errno.unsigned_abs();
        while d > 0 {
            d -= 1;
            digits[d] = b'0' + (e % 10) as u8;
            e /= 10;
            if e == 0 {
                break;
            }
        }
        sys::write(2, b"clinit: ");
        sys::write(2, what);
        sys::write(2, name);
        sys::write(2, b": errno ");
        sys::write(2, digits.get(d..).unwrap_or_default());
        sys::write(2, b"\n");
        sys::exit(127)
    }
}

/// The child's system calls. On x86-64 raw (`syscall`), never touching
/// `errno`; they return the kernel's result (`-errno` on failure).
#[cfg(target_arch = "x86_64")]
mod sys {
    use std::os::fd::RawFd;

    unsafe fn call(n: i64, a: i64, b: i64, c: i64, d: i64) -> isize {
        let ret: i64;
        // SAFETY: the caller passes a valid system call and arguments.
        unsafe {
            std::arch::asm!(
                "syscall",
                inlateout("rax") n => ret,
                in("rdi") a,
                in("rsi") b,
                in("rdx") c,
                in("r10") d,
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack),
            );
        }
        ret as isize
    }

    /// The kernel's `struct sigaction` for SIG_DFL.
    #[repr(C)]
    struct KSigaction {
        handler: u64,
        flags: u64,
        restorer: u64,
        mask: u64,
    }

    pub unsafe fn default_action(sig: i32) {
        let dfl = KSigaction {
            handler: 0,
            flags: 0,
            restorer: 0,
            mask: 0,
        };
        unsafe {
            call(
                libc::SYS_rt_sigaction,
                sig as i64,
                &dfl as *const _ as i64,
                0,
                8,
            );
        }
    }

    pub unsafe fn unblock_all() {
        let none: u64 = 0;
        unsafe {
            call(
                libc::SYS_rt_sigprocmask,
                libc::SIG_SETMASK as i64,
                &none as *const _ as i64,
                0,
                8,
            );
        }
    }

    pub unsafe fn setpgid0() {
        unsafe { call(libc::SYS_setpgid, 0, 0, 0, 0) };
    }

    pub unsafe fn dup2(from: RawFd, to: RawFd) -> isize {
        unsafe { call(libc::SYS_dup2, from as i64, to as i64, 0, 0) }
    }

    pub unsafe fn close_range(from: RawFd, to: RawFd) {
        let r = unsafe { call(libc::SYS_close_range, from as i64, to as u32 as i64, 0, 0) };
        if r != 0 {
            // Before Linux 5.9: one by one, up to a bound well above any
            // descriptor the daemon has open.
            for fd in from..=to.min(65_535) {
                unsafe { close(fd) };
            }
        }
    }

    pub unsafe fn close(fd: RawFd) {
        unsafe { call(libc::SYS_close, fd as i64, 0, 0, 0) };
    }

    pub unsafe fn read(fd: RawFd, b: &mut u8) -> isize {
        unsafe { call(libc::SYS_read, fd as i64, b as *mut u8 as i64, 1, 0) }
    }

    pub unsafe fn write(fd: RawFd, b: &[u8]) -> isize {
        unsafe {
            call(
                libc::SYS_write,
                fd as i64,
                b.as_ptr() as i64,
                b.len() as i64,
                0,
            )
        }
    }

    /// Returns only on failure: its errno.
    pub unsafe fn execve(
        path: *const libc::c_char,
        argv: *const *const libc::c_char,
        envp: *const *const libc::c_char,
    ) -> i32 {
        -(unsafe { call(libc::SYS_execve, path as i64, argv as i64, envp as i64, 0) }) as i32
    }

    pub unsafe fn exit(code: i32) -> ! {
        unsafe { call(libc::SYS_exit_group, code as i64, 0, 0, 0) };
        #[allow(clippy::empty_loop)]
        loop {}
    }
}

/// The child's system calls elsewhere: libc, in a forked child (its own
/// `errno`).
#[cfg(not(target_arch = "x86_64"))]
mod sys {
    use std::os::fd::RawFd;

    fn ret(r: isize) -> isize {
        if r < 0 {
            -(unsafe { *libc::__errno_location() }) as isize
        } else {
            r
        }
    }

    pub unsafe fn default_action(sig: i32) {
        unsafe {
            let mut dfl: libc::sigaction = std::mem::zeroed();
            dfl.sa_sigaction = libc::SIG_DFL;
            libc::sigaction(sig, &dfl, std::ptr::null_mut());
        }
    }

    pub unsafe fn unblock_all() {
        unsafe {
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        }
    }

    pub unsafe fn setpgid0() {
        unsafe { libc::setpgid(0, 0) };
    }

    pub unsafe fn dup2(from: RawFd, to: RawFd) -> isize {
        ret(unsafe { libc::dup2(from, to) } as isize)
    }

    pub unsafe fn close_range(from: RawFd, to: RawFd) {
        let r = unsafe { libc::syscall(libc::SYS_close_range, from as u32, to as u32, 0u32) };
        if r != 0 {
            for fd in from..=to.min(65_535) {
                unsafe { libc::close(fd) };
            }
        }
    }

    pub unsafe fn close(fd: RawFd) {
        unsafe { libc::close(fd) };
    }

    pub unsafe fn read(fd: RawFd, b: &mut u8) -> isize {
        ret(unsafe { libc::read(fd, (b as *mut u8).cast(), 1) })
    }

    pub unsafe fn write(fd: RawFd, b: &[u8]) -> isize {
        ret(unsafe { libc::write(fd, b.as_ptr().cast(), b.len()) })
    }

    pub unsafe fn execve(
        path: *const libc::c_char,
        argv: *const *const libc::c_char,
        envp: *const *const libc::c_char,
    ) -> i32 {
        unsafe {
            libc::execve(path, argv, envp);
            *libc::__errno_location()
        }
    }

    pub unsafe fn exit(code: i32) -> ! {
        unsafe { libc::_exit(code) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::wait::{WaitStatus, waitpid};
    use nix::unistd::Pid;

    /// `script` under `/bin/sh -c` with CLINIT_TAG=t1, gated.
    fn gated(dir: &std::path::Path, script: &str) -> Gated {
        let exec = Exec::new(
            OsStr::new("/bin/sh"),
            ["/bin/sh", "-c", script].map(OsStr::new),
            &environment(),
            &[("CLINIT_TAG", OsStr::new("t1"))],
        )
        .unwrap();
        gated_exec(dir, exec)
    }

    /// `exec` gated, its output and errors to `dir/out`.
    fn gated_exec(dir: &std::path::Path, exec: Exec) -> Gated {
        let out: OwnedFd = std::fs::File::create(dir.join("out")).unwrap().into();
        let err = out.try_clone().unwrap();
        spawn_gated(exec, &out, &err, None).unwrap()
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
        let exec = Exec::new(
            OsStr::new("/nonexistent/prog"),
            [OsStr::new("prog")],
            &environment(),
            &[],
        )
        .unwrap();
        let g = gated_exec(dir.path(), exec);
        let pid = g.pid;
        release(vec![g]);
        assert_eq!(exit_code(pid), 127);
        let log = std::fs::read_to_string(dir.path().join("out")).unwrap();
        assert_eq!(log, "clinit: cannot exec /nonexistent/prog: errno 2\n");
    }

    #[test]
    fn a_nul_in_the_command_is_an_error_not_a_truncation() {
        let e = Exec::new(
            OsStr::new("/bin/sh"),
            [OsStr::new("a\0b")],
            &environment(),
            &[],
        )
        .err();
        assert_eq!(e.unwrap().to_string(), "the command holds a NUL byte");
    }
}
