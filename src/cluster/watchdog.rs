//! The fencing watchdog: a small process of its own (`clinit watchdog`,
//! started by the daemon when it first owns an exclusive group) that
//! SIGKILLs an exclusive group's processes at a deadline unless the daemon
//! moves the deadline on in time.
//!
//! Why a process and not a thread: a daemon that is SIGSTOPped, hangs, or
//! is SIGKILLed stops all of its threads at once; its lease may then
//! expire and another node take the group over. The watchdog does not
//! depend on the daemon: it holds the deadline (an absolute
//! `CLOCK_MONOTONIC` time, the same clock in both processes) and what to
//! kill, and acts on its own.
//!
//! The daemon writes one line per command to the watchdog's standard
//! input (each shorter than `PIPE_BUF`, so lines from the agent and the
//! executor never mix):
//!
//! | line | meaning |
//! | --- | --- |
//! | `arm GROUP NS` | kill GROUP at monotonic time NS (ns) unless armed again |
//! | `cgroup GROUP PATH` | a cgroup v2 directory of GROUP's processes (killed with `cgroup.kill`) |
//! | `pgid GROUP PID` | a process group of GROUP's processes (without cgroups) |
//! | `disarm GROUP` | the group stopped: forget it |
//!
//! At a group's deadline the watchdog kills everything it knows of it and
//! forgets it. When its input ends (the daemon exited or died) it stays
//! until every armed deadline has passed, then exits.
//!
//! Optionally (setting `hw_watchdog`, a watchdog device such as
//! `/dev/watchdog` of `softdog`) it also writes to the device on every
//! `arm` while a group is armed, and closes it with the magic `V` once none
//! is: a node whose daemon stops renewing while it owns a group is reset
//! by the kernel when the device's timeout passes, even if the watchdog
//! process itself cannot run.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// What the watchdog keeps of one armed group.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Armed {
    /// Monotonic nanoseconds; 0 until the first `arm`, and after it fired.
    pub kill_at: u64,
    pub cgroups: Vec<PathBuf>,
    pub pgids: Vec<i32>,
    /// Its deadline passed unfed: whatever is told of it from now on is
    /// killed at once, until an `arm` with a new deadline.
    pub fired: bool,
}

/// One command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cmd {
    Arm {
        group: String,
        at: u64,
    },
    Cgroup {
        group: String,
        path: PathBuf,
    },
    Pgid {
        group: String,
        pgid: i32,
    },
    /// The process group's leader exited: its id may be reused.
    Gone {
        group: String,
        pgid: i32,
    },
    Disarm {
        group: String,
    },
}

/// A group name as one word of a command line: `%`, blanks and control
/// characters percent-encoded (a group name may hold inner blanks).
fn word(group: &str) -> String {
    let mut out = String::with_capacity(group.len());
    for c in group.chars() {
        if c == '%' || c.is_whitespace() || c.is_control() {
            let mut b = [0; 4];
            for byte in c.encode_utf8(&mut b).bytes() {
                out.push_str(&format!("%{byte:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The group name a [`word`] stands for (`None`: not one `word` makes).
fn unword(w: &str) -> Option<String> {
    let b = w.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

impl Cmd {
    pub fn parse(line: &str) -> Option<Cmd> {
        let mut it = line.splitn(3, ' ');
        let (verb, group) = (it.next()?, unword(it.next()?)?);
        let rest = it.next();
        Some(match (verb, rest) {
            ("arm", Some(ns)) => Cmd::Arm {
                group,
                at: ns.parse().ok()?,
            },
            // Only an absolute path: a relative one would depend on the
            // watchdog's directory.
            ("cgroup", Some(p)) if p.starts_with('/') => Cmd::Cgroup {
                group,
                path: PathBuf::from(p),
            },
            ("pgid", Some(p)) => Cmd::Pgid {
                group,
                pgid: p.parse().ok().filter(|p: &i32| *p > 1)?,
            },
            ("gone", Some(p)) => Cmd::Gone {
                group,
                pgid: p.parse().ok().filter(|p: &i32| *p > 1)?,
            },
            ("disarm", None) => Cmd::Disarm { group },
            _ => return None,
        })
    }

    pub fn line(&self) -> String {
        match self {
            Cmd::Arm { group, at } => format!("arm {} {at}\n", word(group)),
            Cmd::Cgroup { group, path } => {
                format!("cgroup {} {}\n", word(group), path.display())
            }
            Cmd::Pgid { group, pgid } => format!("pgid {} {pgid}\n", word(group)),
            Cmd::Gone { group, pgid } => format!("gone {} {pgid}\n", word(group)),
            Cmd::Disarm { group } => format!("disarm {}\n", word(group)),
        }
    }
}

/// The watchdog's state: the groups it may have to kill.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Watch {
    pub groups: BTreeMap<String, Armed>,
}

impl Watch {
    /// Apply one command; what must be killed at once (a process told of a
    /// group whose deadline has passed).
    pub fn step(&mut self, cmd: Cmd) -> Option<Armed> {
        match cmd {
            Cmd::Arm { group, at } => {
                let g = self.groups.entry(group).or_default();
                g.kill_at = at;
                g.fired = false;
            }
            Cmd::Cgroup { group, path } => {
                return self.add(
                    group,
                    Armed {
                        cgroups: vec![path],
                        ..Default::default()
                    },
                );
            }
            Cmd::Pgid { group, pgid } => {
                return self.add(
                    group,
                    Armed {
                        pgids: vec![pgid],
                        ..Default::default()
                    },
                );
            }
            Cmd::Gone { group, pgid } => {
                if let Some(g) = self.groups.get_mut(&group) {
                    g.pgids.retain(|p| *p != pgid);
                }
            }
            Cmd::Disarm { group } => {
                self.groups.remove(&group);
            }
        }
        None
    }

    /// Add `targets` to `group`; them back to be killed at once if the
    /// group has fired.
    fn add(&mut self, group: String, targets: Armed) -> Option<Armed> {
        let g = self.groups.entry(group).or_default();
        if g.fired {
            return Some(targets);
        }
        for p in targets.cgroups {
            if !g.cgroups.contains(&p) {
                g.cgroups.push(p);
            }
        }
        for p in targets.pgids {
            if !g.pgids.contains(&p) {
                g.pgids.push(p);
            }
        }
        None
    }

    /// The groups whose deadline is `now` or past, with what to kill; they
    /// stay, fired, so that a process told of them later dies at once.
    pub fn due(&mut self, now: u64) -> Vec<(String, Armed)> {
        let mut out = Vec::new();
        for (g, a) in self.groups.iter_mut() {
            if a.kill_at != 0 && a.kill_at <= now {
                let targets = std::mem::replace(
                    a,
                    Armed {
                        fired: true,
                        ..Default::default()
                    },
                );
                out.push((g.clone(), targets));
            }
        }
        out
    }

    /// The next deadline.
    pub fn next(&self) -> Option<u64> {
        self.groups
            .values()
            .map(|a| a.kill_at)
            .filter(|&t| t != 0)
            .min()
    }

    /// Whether any group has a deadline.
    pub fn armed(&self) -> bool {
        self.next().is_some()
    }
}

/// `CLOCK_MONOTONIC` now, in nanoseconds (the clock of `std::time::Instant`
/// on Linux, and of the watchdog).
pub fn mono_now() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .unwrap_or_else(|_| nix::sys::time::TimeSpec::new(0, 0));
    (t.tv_sec() as u64) * 1_000_000_000 + t.tv_nsec() as u64
}

/// The monotonic time of `at`, in nanoseconds.
pub fn mono_of(at: tokio::time::Instant) -> u64 {
    let now = tokio::time::Instant::now();
    let base = mono_now();
    if at >= now {
        base + (at - now).as_nanos() as u64
    } else {
        base.saturating_sub((now - at).as_nanos() as u64)
    }
}

/// Kill everything of `a`: `cgroup.kill` of each directory (and each
/// process it lists, for kernels without `cgroup.kill`), then SIGKILL of
/// each process group. The number of processes found.
pub fn kill_armed(a: &Armed) -> usize {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let mut n = 0;
    for dir in &a.cgroups {
        let pids: Vec<i32> = std::fs::read_to_string(dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        n += pids.len();
        let _ = std::fs::write(dir.join("cgroup.kill"), "1");
        for pid in pids {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
    for &pg in &a.pgids {
        if kill(Pid::from_raw(-pg), Signal::SIGKILL).is_ok() {
            n += 1;
        }
    }
    n
}

/// `clinit watchdog`: the process. Reads commands from standard input
/// until it ends and every deadline has passed. `hw`: a watchdog device to
/// feed.
pub fn run(hw: Option<&Path>) -> i32 {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    // Unbuffered: `poll` must see every byte not yet read.
    let mut input = match std::io::stdin().as_fd().try_clone_to_owned() {
        Ok(fd) => std::fs::File::from(fd),
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "clinit watchdog: no standard input: {e}");
            return 1;
        }
    };
    let mut watch = Watch::default();
    let mut buf: Vec<u8> = Vec::new();
    let mut open = true;
    let mut device: Option<std::fs::File> = None;
    // Never eprintln!: it panics when the log cannot be written (a full
    // disk), and the watchdog must go on to its deadlines whatever happens.
    let say = |msg: String| {
        let _ = writeln!(
            std::io::stderr(),
            "clinit watchdog (pid {}): {msg}",
            std::process::id()
        );
    };
    loop {
        // Every command already written is read before any deadline is
        // judged: an `arm` that came just in time counts.
        while open {
            let mut fds = [PollFd::new(input.as_fd(), PollFlags::POLLIN)];
            if !matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0) {
                break;
            }
            if !read_commands(
                &mut input,
                &mut buf,
                &mut watch,
                &mut open,
                hw,
                &mut device,
                &say,
            ) {
                break;
            }
        }
        let now = mono_now();
        for (group, armed) in watch.due(now) {
            let n = kill_armed(&armed);
            say(format!(
                "group {group}: not fed before its deadline; killed it ({n} processes or process groups found)"
            ));
        }
        if let Some(dev) = device.as_mut()
            && !watch.armed()
        {
            let _ = dev.write_all(b"V");
            device = None;
        }
        if !open && !watch.armed() {
            return 0;
        }
        let wait_ms: Option<u64> = watch
            .next()
            .map(|t| t.saturating_sub(mono_now()).div_ceil(1_000_000).min(60_000));
        if !open {
            std::thread::sleep(Duration::from_millis(wait_ms.unwrap_or(1000)));
            continue;
        }
        let wait = match wait_ms {
            Some(ms) => PollTimeout::try_from(ms as i32).unwrap_or(PollTimeout::MAX),
            None => PollTimeout::NONE,
        };
        let ready = {
            let mut fds = [PollFd::new(input.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, wait) {
                Ok(n) => n > 0,
                Err(nix::errno::Errno::EINTR) => false,
                Err(e) => {
                    say(format!("poll: {e}"));
                    false
                }
            }
        };
        if !ready {
            continue;
        }
        read_commands(
            &mut input,
            &mut buf,
            &mut watch,
            &mut open,
            hw,
            &mut device,
            &say,
        );
    }
}

/// Read what is there and apply each whole line; false at the end of the
/// input (then `open` is false) or on an error.
fn read_commands(
    input: &mut std::fs::File,
    buf: &mut Vec<u8>,
    watch: &mut Watch,
    open: &mut bool,
    hw: Option<&Path>,
    device: &mut Option<std::fs::File>,
    say: &dyn Fn(String),
) -> bool {
    use std::io::Read;
    let mut chunk = [0u8; 4096];
    let n = match input.read(&mut chunk) {
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => return true,
        Err(_) => 0,
    };
    if n == 0 {
        *open = false;
        if watch.armed() {
            say("the daemon is gone; its groups are killed at their deadlines".into());
        }
        return false;
    }
    buf.extend_from_slice(&chunk[..n]);
    while let Some(i) = buf.iter().position(|&b| b == b'\n') {
        let line: Vec<u8> = buf.drain(..=i).collect();
        let line = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
        match Cmd::parse(&line) {
            Some(cmd) => {
                let arm = matches!(cmd, Cmd::Arm { .. });
                let group = match &cmd {
                    Cmd::Cgroup { group, .. } | Cmd::Pgid { group, .. } => group.clone(),
                    _ => String::new(),
                };
                if let Some(late) = watch.step(cmd) {
                    let n = kill_armed(&late);
                    say(format!(
                        "group {group}: a process told after its deadline; killed it ({n} found)"
                    ));
                }
                if arm && let Some(path) = hw {
                    if device.is_none() {
                        match std::fs::OpenOptions::new().write(true).open(path) {
                            Ok(f) => *device = Some(f),
                            Err(e) => say(format!("cannot open {}: {e}", path.display())),
                        }
                    }
                    if let Some(dev) = device.as_mut() {
                        let _ = dev.write_all(b"\0");
                    }
                }
            }
            None => say(format!("ignoring a bad command line: {line:?}")),
        }
    }
    true
}

/// The daemon's end: starts the watchdog when first needed and writes its
/// commands; a watchdog that died is started again (with what it must
/// know: the caller re-arms on its next renewal).
#[derive(Clone, Default)]
pub struct Feeder {
    inner: Arc<Mutex<FeederInner>>,
}

#[derive(Default)]
struct FeederInner {
    child: Option<std::process::Child>,
    hw: Option<PathBuf>,
    /// The daemon's log, the watchdog's standard error.
    log: Option<std::fs::File>,
    /// What the watchdog must know of each group, to tell a new one.
    known: Watch,
}

impl Feeder {
    pub fn new(hw: Option<PathBuf>, log: Option<std::fs::File>) -> Feeder {
        Feeder {
            inner: Arc::new(Mutex::new(FeederInner {
                hw,
                log,
                ..Default::default()
            })),
        }
    }

    /// Send `cmd`; false if no watchdog could take it (the caller must then
    /// not run the group).
    pub fn send(&self, cmd: Cmd) -> bool {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let _ = inner.known.step(cmd.clone());
        let line = cmd.line();
        for _ in 0..2 {
            if inner.child.is_none() {
                match spawn(inner.hw.as_deref(), inner.log.as_ref()) {
                    Ok(c) => {
                        inner.child = Some(c);
                        // A new watchdog learns everything again.
                        let all: String = inner
                            .known
                            .groups
                            .iter()
                            .flat_map(|(g, a)| {
                                let mut v = Vec::new();
                                for p in &a.cgroups {
                                    v.push(
                                        Cmd::Cgroup {
                                            group: g.clone(),
                                            path: p.clone(),
                                        }
                                        .line(),
                                    );
                                }
                                for &p in &a.pgids {
                                    v.push(
                                        Cmd::Pgid {
                                            group: g.clone(),
                                            pgid: p,
                                        }
                                        .line(),
                                    );
                                }
                                if a.kill_at != 0 {
                                    v.push(
                                        Cmd::Arm {
                                            group: g.clone(),
                                            at: a.kill_at,
                                        }
                                        .line(),
                                    );
                                }
                                v
                            })
                            .collect();
                        if write(&mut inner, &all) {
                            return true;
                        }
                        continue;
                    }
                    Err(e) => {
                        tracing::error!("cannot start the fencing watchdog: {e}");
                        return false;
                    }
                }
            }
            if write(&mut inner, &line) {
                return true;
            }
        }
        false
    }

    /// The watchdog's pid, if one runs.
    pub fn pid(&self) -> Option<u32> {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .child
            .as_ref()
            .map(|c| c.id())
    }
}

fn write(inner: &mut FeederInner, text: &str) -> bool {
    let Some(child) = inner.child.as_mut() else {
        return false;
    };
    let ok = child
        .stdin
        .as_mut()
        .is_some_and(|s| s.write_all(text.as_bytes()).and_then(|_| s.flush()).is_ok());
    if !ok {
        // Gone, or not reading (its pipe is full: stopped, stuck): it is
        // killed and another started, told everything again.
        tracing::warn!(
            "the fencing watchdog (pid {}) is gone or not reading; starting another",
            child.id()
        );
        let _ = child.kill();
        inner.child = None;
    }
    ok
}

fn spawn(hw: Option<&Path>, log: Option<&std::fs::File>) -> std::io::Result<std::process::Child> {
    use std::os::unix::process::CommandExt;
    // The daemon's own binary, even if the file was replaced or removed
    // since it started (an upgrade, a rebuild): /proc/self/exe is the
    // running image's inode.
    let exe = if Path::new("/proc/self/exe").exists() {
        PathBuf::from("/proc/self/exe")
    } else {
        std::env::current_exe()?
    };
    let mut cmd = std::process::Command::new(exe);
    cmd.arg0("clinit").arg("watchdog");
    if let Some(hw) = hw {
        cmd.arg("--device").arg(hw);
    }
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .process_group(0);
    crate::supervisor::spawn::with_default_signals(&mut cmd);
    if let Some(log) = log.and_then(|l| l.try_clone().ok()) {
        cmd.stderr(log);
    }
    let child = cmd.spawn()?;
    // Writes never block the daemon: a watchdog that does not read fills
    // its pipe (64 KiB) and the next write fails (EAGAIN).
    if let Some(stdin) = child.stdin.as_ref() {
        let fd = std::os::fd::AsFd::as_fd(stdin);
        if let Ok(flags) = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFL) {
            let flags =
                nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
            let _ = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFL(flags));
        }
    }
    tracing::info!("fencing watchdog started, pid {}", child.id());
    Ok(child)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_and_print_back() {
        let table = [
            (
                "arm web 123",
                Some(Cmd::Arm {
                    group: "web".into(),
                    at: 123,
                }),
            ),
            (
                "cgroup web /sys/fs/cgroup/a b",
                Some(Cmd::Cgroup {
                    group: "web".into(),
                    path: "/sys/fs/cgroup/a b".into(),
                }),
            ),
            (
                "pgid web 42",
                Some(Cmd::Pgid {
                    group: "web".into(),
                    pgid: 42,
                }),
            ),
            (
                "disarm web",
                Some(Cmd::Disarm {
                    group: "web".into(),
                }),
            ),
            (
                "gone web 42",
                Some(Cmd::Gone {
                    group: "web".into(),
                    pgid: 42,
                }),
            ),
            // A group name with blanks or `%` is one encoded word.
            (
                "arm web%20db 7",
                Some(Cmd::Arm {
                    group: "web db".into(),
                    at: 7,
                }),
            ),
            (
                "cgroup 100%25%09x /sys/fs/cgroup/g",
                Some(Cmd::Cgroup {
                    group: "100%\tx".into(),
                    path: "/sys/fs/cgroup/g".into(),
                }),
            ),
            (
                "disarm caf\u{e9}%20bar",
                Some(Cmd::Disarm {
                    group: "caf\u{e9} bar".into(),
                }),
            ),
            ("cgroup web db /sys/fs/cgroup/g", None),
            ("cgroup web sys/fs/cgroup/g", None),
            ("arm web%2 7", None),
            ("arm web%ZZ 7", None),
            ("arm web%FF 7", None),
            ("pgid web 1", None),
            ("pgid web -5", None),
            ("arm web soon", None),
            ("disarm web x", None),
            ("bogus web", None),
            ("", None),
        ];
        for (line, want) in table {
            let got = Cmd::parse(line);
            assert_eq!(got, want, "{line}");
            if let Some(c) = got {
                assert_eq!(c.line(), format!("{line}\n"));
            }
        }
    }

    #[test]
    fn a_group_is_due_at_its_deadline_once_and_rearming_moves_it() {
        // (commands, now, due groups, next deadline after)
        type Case<'a> = (&'a [&'a str], u64, &'a [&'a str], Option<u64>);
        let table: &[Case] = &[
            (&["arm a 100"], 99, &[], Some(100)),
            (&["arm a 100"], 100, &["a"], None),
            (&["arm a 100", "arm a 200"], 150, &[], Some(200)),
            (&["arm a 100", "disarm a"], 150, &[], None),
            (&["cgroup a /x"], 1_000, &[], None),
            (&["arm a 100", "arm b 300"], 200, &["a"], Some(300)),
            (&["pgid a 7", "arm a 10", "arm b 20"], 30, &["a", "b"], None),
        ];
        for (cmds, now, due, next) in table {
            let mut w = Watch::default();
            for c in *cmds {
                let _ = w.step(Cmd::parse(c).unwrap());
            }
            let got: Vec<String> = w.due(*now).into_iter().map(|(g, _)| g).collect();
            assert_eq!(got, *due, "{cmds:?} at {now}");
            assert_eq!(w.next(), *next, "{cmds:?}");
            assert!(w.due(*now).is_empty(), "due twice: {cmds:?}");
            // A fired group kills what it is told of at once; a new arm
            // makes it wait again.
            for g in *due {
                let late = w.step(Cmd::Pgid {
                    group: g.to_string(),
                    pgid: 99,
                });
                assert_eq!(late.map(|a| a.pgids), Some(vec![99]), "{cmds:?}");
                let _ = w.step(Cmd::Arm {
                    group: g.to_string(),
                    at: now + 10,
                });
                let again = w.step(Cmd::Pgid {
                    group: g.to_string(),
                    pgid: 98,
                });
                assert!(again.is_none(), "{cmds:?}");
            }
        }
    }

    #[test]
    fn targets_accumulate_once() {
        let mut w = Watch::default();
        for c in [
            "pgid a 7",
            "pgid a 7",
            "pgid a 8",
            "gone a 8",
            "cgroup a /x",
            "cgroup a /x",
            "arm a 5",
        ] {
            assert!(w.step(Cmd::parse(c).unwrap()).is_none());
        }
        assert_eq!(
            w.groups["a"],
            Armed {
                kill_at: 5,
                cgroups: vec!["/x".into()],
                pgids: vec![7],
                fired: false,
            }
        );
    }
}
