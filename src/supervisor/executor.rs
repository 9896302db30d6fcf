//! The executor: the only place that spawns, signals, reaps and keeps timers.
//!
//! It turns [`Action`]s into effects and effects back into events for the
//! state machines. Each child runs in its own process group, with stdin from
//! /dev/null, stdout/stderr appended to the log (or a per-entry file), and
//! `CLINIT_GROUP`, `CLINIT_TAG`, `CLINIT_LEVEL` in its environment.

use super::machine::{Action, ExitStatus, LogLevel, Notice, Pid, ProcEvent, Timer};
use crate::cltab::NotifierFormat;
use crate::store::{ChildRecord, StoreOp};
use crate::supervisor::cgroup::Cgroups;
use crate::supervisor::{leftovers, spawn};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid as NixPid;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

/// An event for one entry, produced by an effect.
pub type EntryEvent = (String, String, ProcEvent);

pub struct Executor {
    log: File,
    logdir: Option<PathBuf>,
    /// Children's output through a pipe, prefixed (`log_prefix`).
    prefix: bool,
    /// Each child's group, tag and when it was started (for the run
    /// time its exit is logged with).
    children: HashMap<Pid, (String, String, Instant)>,
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
    timer_data: HashMap<u64, Timer>,
    seq: u64,
    /// Descendants sent SIGTERM by a sweep, with the time at which they
    /// get SIGKILL if still alive, their entry's grace and their start
    /// time; removed when reaped (those this daemon adopted) or found gone
    /// at their deadline (those whose parent is another process).
    leftovers: HashMap<Pid, Leftover>,
    /// Running notifiers: (group, tag) and when they time out (`None` once
    /// killed).
    notifiers: HashMap<Pid, (String, String, Option<Instant>)>,
    boot_id: String,
    host: String,
    /// Child records for the store since the last [`Executor::take_ops`].
    ops: Vec<StoreOp>,
    /// Sweeps asked since the last [`Executor::take_sweeps`].
    sweeps: Vec<Sweep>,
    /// Children forked since the last [`Executor::take_gates`].
    gates: Vec<spawn::Gated>,
    /// The daemon's environment, for every child.
    env: std::sync::Arc<[std::ffi::CString]>,
    /// The daemon's socket (`CLINIT_SOCKET` of every child).
    socket: std::ffi::OsString,
    /// Each entry's processes in a cgroup of its own, when cgroup v2 can
    /// be written (see [`super::cgroup`]); `None`: sweeps scan `/proc`.
    cgroups: Option<Cgroups>,
    /// Cluster mode: who may start an exclusive group's processes, and
    /// the watchdog that must know them.
    exclusive: Option<std::sync::Arc<crate::cluster::owners::Exclusive>>,
    /// Children of exclusive groups (pid → group), for the watchdog and
    /// the gates.
    exclusive_children: HashMap<Pid, String>,
}

impl Executor {
    /// Cluster mode: an exclusive group's processes start only under a
    /// permit of `ex`, and the watchdog learns where they are before they
    /// run their command.
    pub fn set_exclusive(&mut self, ex: std::sync::Arc<crate::cluster::owners::Exclusive>) {
        self.exclusive = Some(ex);
    }

    /// `socket`: the daemon's socket, given to every child as
    /// `CLINIT_SOCKET` (the next daemon on that socket finds what this one
    /// left by it: see `leftovers::marked`).
    /// The log file children write to from now on (after a reopen).
    pub fn set_log(&mut self, log: File) {
        self.log = log;
    }

    pub fn new(log: File, logdir: Option<PathBuf>, socket: &std::path::Path) -> Executor {
        Executor::with_cgroups(log, logdir, socket, None)
    }

    /// As [`Executor::new`], every entry's processes kept in a cgroup of
    /// its own under `cgroups`.
    pub fn with_cgroups(
        log: File,
        logdir: Option<PathBuf>,
        socket: &std::path::Path,
        cgroups: Option<Cgroups>,
    ) -> Executor {
        Executor {
            log,
            logdir,
            prefix: false,
            children: HashMap::new(),
            timers: BinaryHeap::new(),
            timer_data: HashMap::new(),
            seq: 0,
            leftovers: HashMap::new(),
            notifiers: HashMap::new(),
            boot_id: leftovers::boot_id(),
            host: crate::config::hostname(),
            ops: Vec::new(),
            gates: Vec::new(),
            sweeps: Vec::new(),
            env: spawn::environment(),
            socket: socket.as_os_str().to_owned(),
            cgroups,
            exclusive: None,
            exclusive_children: HashMap::new(),
        }
    }

    /// Child records made since the last call.
    pub fn take_ops(&mut self) -> Vec<StoreOp> {
        std::mem::take(&mut self.ops)
    }

    pub fn notifier_count(&self) -> usize {
        self.notifiers.len()
    }

    /// Something of `group` may still run besides its entries' own
    /// processes: adopted descendants being stopped or looked for, or
    /// processes in its entries' cgroups.
    pub fn group_busy(&self, group: &str) -> bool {
        self.leftovers.values().any(|l| l.group == group)
            || self.sweeps.iter().any(|s| s.group == group)
            || self
                .cgroups
                .as_ref()
                .is_some_and(|c| c.group_populated(group))
    }

    /// Adopted descendants are still being stopped, or looked for.
    pub fn has_leftovers(&self) -> bool {
        !self.leftovers.is_empty() || !self.sweeps.is_empty()
    }

    /// The sweeps asked since the last call. The caller runs
    /// [`scan_adopted`] off the event loop and hands its result to
    /// [`Executor::finish_sweeps`].
    pub fn take_sweeps(&mut self) -> Vec<Sweep> {
        std::mem::take(&mut self.sweeps)
    }

    /// Stop (SIGTERM, SIGKILL after the entry's grace) the adopted
    /// processes `found` that belong to one of `sweeps`' entries and are
    /// still the processes found (same start time), unless they are
    /// children or notifiers this daemon started itself.
    pub fn finish_sweeps(&mut self, sweeps: &[Sweep], found: Vec<Adopted>) {
        let now = Instant::now();
        for a in found {
            if self.children.contains_key(&a.pid) || self.notifiers.contains_key(&a.pid) {
                continue;
            }
            let Some(s) = sweeps.iter().find(|s| s.group == a.group && s.tag == a.tag) else {
                continue;
            };
            if leftovers::start_ticks(a.pid) != Some(a.start_ticks) {
                continue;
            }
            tracing::warn!(
                "{}:{}: stopping leftover descendant pid {} (SIGTERM)",
                crate::logsafe::Safe(&a.group),
                crate::logsafe::Safe(&a.tag),
                a.pid
            );
            let _ = kill(NixPid::from_raw(a.pid), Signal::SIGTERM);
            self.leftovers.entry(a.pid).or_insert(Leftover {
                deadline: now + s.kill_after,
                grace: s.kill_after,
                start_ticks: a.start_ticks,
                group: a.group,
                tag: a.tag,
            });
        }
    }

    fn output(&self, group: &str, tag: &str) -> std::io::Result<File> {
        match &self.logdir {
            Some(dir) => crate::config::files::append(&dir.join(format!("{group}.{tag}.log"))),
            None => match self
                .prefix
                .then(|| super::relay::pipe(format!("{group}:{tag}: ")))
            {
                Some(Some(pipe)) => Ok(pipe),
                _ => self.log.try_clone(),
            },
        }
    }

    /// Prefix children's lines in the shared log with `group:tag` (setting
    /// `log_prefix`; see `relay`).
    pub fn set_log_prefix(&mut self, on: bool) {
        self.prefix = on;
    }

    /// Fork an entry's child, gated (see [`spawn`]): in its own process
    /// group, its output and errors going to the entry's log, `CLINIT_GROUP`,
    /// `CLINIT_TAG` and `CLINIT_LEVEL` in its environment.
    fn spawn_entry(
        &mut self,
        group: &str,
        tag: &str,
        command: &str,
        level: &str,
        permit: Option<&crate::cluster::owners::Permit>,
    ) -> std::io::Result<spawn::Gated> {
        let (path, argv) = command_for(command);
        let token = permit.map(|p| p.token.to_string()).unwrap_or_default();
        let mut vars = vec![
            ("CLINIT_GROUP", OsStr::new(group)),
            ("CLINIT_TAG", OsStr::new(tag)),
            ("CLINIT_LEVEL", OsStr::new(level)),
            ("CLINIT_SOCKET", self.socket.as_os_str()),
        ];
        if let Some(p) = permit {
            vars.push(("CLINIT_NODE", OsStr::new(p.node.as_str())));
            vars.push(("CLINIT_FENCE_TOKEN", OsStr::new(token.as_str())));
        }
        let exec = spawn::Exec::new(
            path.as_os_str(),
            argv.iter().map(OsStr::new),
            &self.env,
            &vars,
        )
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let out: OwnedFd = self.output(group, tag)?.into();
        let err = out.try_clone()?;
        let cgroup = match &mut self.cgroups {
            Some(c) => Some(c.procs_for(group, tag)?),
            None => None,
        };
        spawn::spawn_gated(exec, &out, &err, cgroup.as_ref())
    }

    /// Spawn a notifier's `cmd` in its own process group, its output and
    /// errors going to the entry's log.
    fn spawn_logged(
        &self,
        group: &str,
        tag: &str,
        cmd: &mut Command,
    ) -> std::io::Result<std::process::Child> {
        let out = self.output(group, tag)?;
        let err = out.try_clone()?;
        spawn::with_default_signals(cmd);
        cmd.stdout(out).stderr(err).process_group(0).spawn()
    }

    /// The children forked since the last call, each waiting at its gate.
    /// The caller releases them once the child records of
    /// [`Executor::take_ops`] are durable.
    pub fn take_gates(&mut self) -> Vec<spawn::Gated> {
        let mut gates = std::mem::take(&mut self.gates);
        // A child of an exclusive group whose permit lapsed since its fork
        // never runs its command (its gate closes unopened: it exits).
        if let Some(ex) = &self.exclusive {
            gates.retain(|g| match self.exclusive_children.get(&g.pid) {
                Some(group) if ex.permit(group).is_none() => {
                    tracing::warn!(
                        "{group}: pid {} not started: this node no longer owns exclusive group {group}",
                        g.pid
                    );
                    false
                }
                _ => true,
            });
        }
        gates
    }

    /// Perform one action; a spawn reports its result at once.
    pub fn perform(&mut self, action: Action) -> Option<EntryEvent> {
        match action {
            Action::Spawn { spec, level } => {
                let (g, t) = (spec.group.clone(), spec.tag.clone());
                let ex = self.exclusive.clone().filter(|_| spec.opts.exclusive);
                let permit = match &ex {
                    Some(ex) => match ex.permit(&g) {
                        Some(p) => Some(p),
                        None => {
                            tracing::warn!(
                                "{g}:{t}: not started: this node does not own exclusive group {g} now"
                            );
                            return Some((g, t, ProcEvent::SpawnFailed));
                        }
                    },
                    None => None,
                };
                let result = self.spawn_entry(&g, &t, &spec.command, &level, permit.as_ref());
                match result {
                    Ok(gated) => {
                        let pid = gated.pid;
                        // The watchdog knows where the process is before
                        // it runs its command (its gate opens later).
                        if let Some(ex) = &ex {
                            let cmd = match self.cgroups.as_ref().and_then(|c| c.dir_of(&g, &t)) {
                                Some(path) => crate::cluster::watchdog::Cmd::Cgroup {
                                    group: g.clone(),
                                    path,
                                },
                                None => crate::cluster::watchdog::Cmd::Pgid {
                                    group: g.clone(),
                                    pgid: pid,
                                },
                            };
                            self.exclusive_children.insert(pid, g.clone());
                            if !ex.feeder.send(cmd) {
                                tracing::error!(
                                    "{g}:{t}: the fencing watchdog cannot be told of pid {pid}; not starting it"
                                );
                                drop(gated);
                                return Some((g, t, ProcEvent::SpawnFailed));
                            }
                        }
                        tracing::debug!("{g}:{t} started, pid {pid}");
                        if let Some(start_ticks) = leftovers::start_ticks(pid) {
                            self.ops.push(StoreOp::AddChild(ChildRecord {
                                pid,
                                pgid: pid,
                                start_ticks,
                                boot_id: self.boot_id.clone(),
                                group: g.clone(),
                                tag: t.clone(),
                            }));
                        }
                        // The child runs its command once this turn's
                        // records are durable (see `take_gates`).
                        self.gates.push(gated);
                        self.children
                            .insert(pid, (g.clone(), t.clone(), Instant::now()));
                        Some((g, t, ProcEvent::Spawned { pid }))
                    }
                    Err(e) => {
                        tracing::error!("{g}:{t}: cannot start '{}': {e}", spec.command);
                        Some((g, t, ProcEvent::SpawnFailed))
                    }
                }
            }
            Action::Signal {
                group,
                tag,
                pid,
                signal,
            } => {
                if let Err(e) = kill(NixPid::from_raw(-pid), signal) {
                    tracing::debug!("{group}:{tag}: signal {signal} to process group {pid}: {e}");
                }
                None
            }
            Action::ArmTimer { at, timer } => {
                self.seq += 1;
                self.timers.push(Reverse((at, self.seq)));
                self.timer_data.insert(self.seq, timer);
                None
            }
            Action::SweepLeftovers {
                group,
                tag,
                kill_after,
            } => {
                if let Some(cg) = &self.cgroups {
                    // The entry's own processes, listed by the kernel.
                    let found = cg
                        .members(&group, &tag)
                        .into_iter()
                        .filter_map(|pid| {
                            Some(Adopted {
                                pid,
                                start_ticks: leftovers::start_ticks(pid)?,
                                group: group.clone(),
                                tag: tag.clone(),
                            })
                        })
                        .collect();
                    let sweep = Sweep {
                        group: group.clone(),
                        tag: tag.clone(),
                        kill_after,
                    };
                    // The directory stays for the entry's next start,
                    // unless a reread removed the entry (`retain_cgroups`).
                    self.finish_sweeps(&[sweep], found);
                    if let Some(cg) = &mut self.cgroups {
                        cg.swept(&group, &tag);
                    }
                } else {
                    // Done off the event loop, one scan for every sweep
                    // asked meanwhile (see `take_sweeps`).
                    self.sweeps.push(Sweep {
                        group,
                        tag,
                        kill_after,
                    });
                }
                None
            }
            Action::Log { level, message } => {
                match level {
                    LogLevel::Info => tracing::info!("{message}"),
                    LogLevel::Warn => tracing::warn!("{message}"),
                }
                None
            }
            Action::Notify(notice) => {
                self.notify(*notice);
                None
            }
        }
    }

    /// Run a notifier under `/bin/sh -c` in its own process group and
    /// write the exit record to its standard input without blocking the
    /// event loop; it is reaped like any child and killed at its timeout.
    fn notify(&mut self, n: Notice) {
        let text = match n.notifier.format {
            NotifierFormat::Bos => crate::bos::notifier::Record::from_notice(&n).to_bos(),
            NotifierFormat::Json => crate::bos::notifier::json(&n, &self.host),
        };
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(&*n.notifier.command)
            .stdin(Stdio::piped());
        let result = self.spawn_logged(&n.group, &n.tag, &mut cmd);
        let mut child = match result {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(
                    "{}:{}: cannot run notifier '{}': {e}",
                    n.group,
                    n.tag,
                    n.notifier.command
                );
                return;
            }
        };
        let pid = child.id() as Pid;
        tracing::debug!("{}:{} notifier started, pid {pid}", n.group, n.tag);
        let stdin = child.stdin.take();
        drop(child);
        self.notifiers.insert(
            pid,
            (
                n.group.clone(),
                n.tag.clone(),
                Some(Instant::now() + n.timeout),
            ),
        );
        if let Some(stdin) = stdin {
            let fd = std::os::fd::OwnedFd::from(stdin);
            match tokio::net::unix::pipe::Sender::from_owned_fd(fd) {
                Ok(mut tx) => {
                    tokio::spawn(async move {
                        use tokio::io::AsyncWriteExt;
                        // A notifier that exits without reading is fine.
                        let _ = tx.write_all(text.as_bytes()).await;
                    });
                }
                Err(e) => tracing::warn!(
                    "{}:{}: cannot write to the notifier's input: {e}",
                    n.group,
                    n.tag
                ),
            }
        }
    }

    /// `pid` is no longer a leftover to stop.
    fn leftover_gone(&mut self, pid: Pid) {
        if let Some(l) = self.leftovers.remove(&pid)
            && let Some(cg) = &mut self.cgroups
        {
            cg.swept(&l.group, &l.tag);
        }
    }

    /// Remove the cgroups of entries that `keep` no longer names (after a
    /// reread) once they are empty; a stopped entry that is still in the
    /// cltab keeps its directory, so a restart makes none.
    ///
    /// How many entry cgroups this run keeps: [`Executor::cgroup_count`].
    pub fn retain_cgroups(&mut self, keep: impl Fn(&str, &str) -> bool) {
        if let Some(cg) = &mut self.cgroups {
            cg.retain(keep);
        }
    }

    /// How many entry cgroups this run keeps (`None` without cgroups).
    pub fn cgroup_count(&self) -> Option<usize> {
        self.cgroups.as_ref().map(Cgroups::entry_dirs)
    }

    /// Reap every exited child.
    pub fn reap(&mut self) -> Vec<EntryEvent> {
        let mut out = Vec::new();
        loop {
            let (pid, status) = match waitpid(NixPid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid.as_raw(), ExitStatus::Code(code)),
                Ok(WaitStatus::Signaled(pid, sig, _)) => {
                    (pid.as_raw(), ExitStatus::Signal(sig as i32))
                }
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => continue,
            };
            self.leftover_gone(pid);
            if let Some((g, t, _)) = self.notifiers.remove(&pid) {
                if status.success() {
                    tracing::debug!("{g}:{t} notifier pid {pid} exited: {status}");
                } else {
                    tracing::warn!("{g}:{t}: notifier (pid {pid}) failed: {status}");
                }
                continue;
            }
            if let Some(group) = self.exclusive_children.remove(&pid)
                && self.cgroups.is_none()
                && let Some(ex) = &self.exclusive
            {
                // Its process group id may be reused: the watchdog forgets it.
                ex.feeder
                    .send(crate::cluster::watchdog::Cmd::Gone { group, pgid: pid });
            }
            if let Some((g, t, since)) = self.children.remove(&pid) {
                self.ops.push(StoreOp::RemoveChild { pid });
                tracing::info!(
                    "{g}:{t} pid {pid} exited: {status} after {}",
                    run_time(since.elapsed())
                );
                out.push((g, t, ProcEvent::Exited { pid, status }));
            }
        }
        out
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        let timer = self.timers.peek().map(|Reverse((at, _))| *at);
        timer
            .into_iter()
            .chain(self.leftovers.values().map(|l| l.deadline))
            .chain(self.notifiers.values().filter_map(|n| n.2))
            .min()
    }

    /// Fire due timers (returned for the machines) and kill leftovers whose
    /// grace period is over.
    pub fn due_timers(&mut self, now: Instant) -> Vec<Timer> {
        let mut gone = Vec::new();
        for (pid, l) in self.leftovers.iter_mut() {
            if l.deadline > now {
                continue;
            }
            if leftovers::start_ticks(*pid) != Some(l.start_ticks) {
                // Gone (and reaped by its own parent), or another process.
                gone.push(*pid);
                continue;
            }
            tracing::warn!(
                "{}:{}: leftover descendant pid {pid} still running; sent SIGKILL",
                crate::logsafe::Safe(&l.group),
                crate::logsafe::Safe(&l.tag)
            );
            let _ = kill(NixPid::from_raw(*pid), Signal::SIGKILL);
            // Reaping removes it; re-send later if it somehow survives.
            l.deadline = now + l.grace.max(std::time::Duration::from_secs(1));
        }
        for pid in gone {
            self.leftover_gone(pid);
        }
        for (pid, (g, t, deadline)) in self.notifiers.iter_mut() {
            if deadline.is_some_and(|d| d <= now) {
                tracing::warn!("{g}:{t}: notifier (pid {pid}) timed out; killed its process group");
                let _ = kill(NixPid::from_raw(-*pid), Signal::SIGKILL);
                *deadline = None;
            }
        }
        let mut out = Vec::new();
        while let Some(Reverse((at, seq))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            if let Some(t) = self.timer_data.remove(&seq) {
                out.push(t);
            }
        }
        out
    }
}

/// Words that only a shell understands (keywords and builtins with no
/// program of the same name), so a command starting with one needs `sh -c`.
const SHELL_WORDS: &[&str] = &[
    "!", ".", ":", "{", "alias", "break", "case", "cd", "command", "continue", "eval", "exec",
    "exit", "export", "for", "getopts", "hash", "if", "local", "read", "readonly", "return", "set",
    "shift", "source", "times", "trap", "type", "ulimit", "umask", "unset", "until", "wait",
    "while",
];

/// The words of a command that needs no shell: no shell metacharacters, no
/// variable assignment, no shell-only first word. As Perl's `exec`
/// (Cluster::Init's way of starting a command), such a command is run
/// directly with execvp, saving one exec; anything else runs under
/// `/bin/sh -c`. Both mean the same to the command.
pub fn direct_words(command: &str) -> Option<Vec<&str>> {
    const META: &[char] = &[
        '$', '&', '*', '(', ')', '{', '}', '[', ']', '\'', '"', ';', '\\', '|', '?', '<', '>', '~',
        '`', '\n', '#', '=', '%',
    ];
    if command.contains(META) {
        return None;
    }
    let words: Vec<&str> = command.split_whitespace().collect();
    match words.first() {
        Some(first) if !SHELL_WORDS.contains(first) => Some(words),
        _ => None,
    }
}

/// The program to exec and its `argv` for a command line: its words when
/// it needs no shell and its program is found, `/bin/sh -c COMMAND`
/// otherwise.
fn command_for(command: &str) -> (PathBuf, Vec<String>) {
    match direct_words(command) {
        // A program that cannot be found runs through the shell instead, so
        // the log gets the shell's "not found" and the exit status is 127.
        Some(words) => match find_program(words[0]) {
            Some(path) => (path, words.iter().map(|w| w.to_string()).collect()),
            None => shell(command),
        },
        None => shell(command),
    }
}

fn shell(command: &str) -> (PathBuf, Vec<String>) {
    (
        PathBuf::from("/bin/sh"),
        vec!["/bin/sh".into(), "-c".into(), command.into()],
    )
}

/// Where `name` is run from: itself when it holds a `/`, else the first
/// executable file of that name in `PATH`.
fn find_program(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let is_exec = |p: &std::path::Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if name.contains('/') {
        let p = PathBuf::from(name);
        return is_exec(&p).then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_exec(p))
}

/// A descendant being stopped by a sweep.
#[derive(Debug)]
struct Leftover {
    /// When it gets SIGKILL if still alive.
    deadline: Instant,
    /// Its entry's grace (`stop_kill_after`).
    grace: std::time::Duration,
    start_ticks: u64,
    group: String,
    tag: String,
}

/// A sweep asked for: stop the adopted descendants of this entry.
#[derive(Debug, Clone)]
pub struct Sweep {
    pub group: String,
    pub tag: String,
    pub kill_after: std::time::Duration,
}

/// A process adopted by this daemon (the child subreaper) that carries an
/// entry's CLINIT_GROUP/CLINIT_TAG: a descendant of that entry that left
/// its process group (a daemonizing program calls setsid).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adopted {
    pub pid: Pid,
    pub start_ticks: u64,
    pub group: String,
    pub tag: String,
}

/// Every process whose parent is this daemon and that carries an entry's
/// group and tag in its environment. It reads every process's
/// `/proc/PID/stat` (no cheaper list of a process's children exists on a
/// kernel without CONFIG_PROC_CHILDREN), so it runs off the event loop,
/// once for all the sweeps asked meanwhile.
pub fn scan_adopted() -> Vec<Adopted> {
    let mut found = Vec::new();
    let me = std::process::id() as Pid;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    for ent in dir.flatten() {
        let Some(pid) = ent.file_name().to_str().and_then(|s| s.parse::<Pid>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let field = |n| crate::supervisor::leftovers::stat_field(&stat, n);
        if field(4).and_then(|p| p.parse::<Pid>().ok()) != Some(me) {
            continue;
        }
        let Some(start_ticks) = field(22).and_then(|t| t.parse().ok()) else {
            continue;
        };
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let var = |name: &[u8]| {
            env.split(|b| *b == 0)
                .find_map(|v| v.strip_prefix(name))
                .map(|v| String::from_utf8_lossy(v).into_owned())
        };
        if let (Some(group), Some(tag)) = (var(b"CLINIT_GROUP="), var(b"CLINIT_TAG=")) {
            found.push(Adopted {
                pid,
                start_ticks,
                group,
                tag,
            });
        }
    }
    found
}

/// A run time as people read it: `0.012 s`, `4.5 s`, `3 min 20 s`,
/// `2 h 5 min`.
fn run_time(d: std::time::Duration) -> String {
    let s = d.as_secs_f64();
    let whole = d.as_secs();
    if s < 10.0 {
        format!("{s:.3} s")
    } else if whole < 60 {
        format!("{s:.1} s")
    } else if whole < 3600 {
        format!("{} min {} s", whole / 60, whole % 60)
    } else {
        format!("{} h {} min", whole / 3600, whole % 3600 / 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_times_read_as_people_say_them() {
        use std::time::Duration;
        let rows = [
            (Duration::from_millis(12), "0.012 s"),
            (Duration::from_millis(4500), "4.500 s"),
            (Duration::from_millis(12_340), "12.3 s"),
            (Duration::from_secs(200), "3 min 20 s"),
            (Duration::from_secs(7500), "2 h 5 min"),
        ];
        for (d, want) in rows {
            assert_eq!(run_time(d), want, "{d:?}");
        }
    }

    #[test]
    fn a_sweep_is_asked_not_done_then_stops_only_its_entrys_adopted_processes() {
        // A group no other test uses: tests run in one process, and another
        // test's sweep of its own "g:t" would stop these processes.
        const G: &str = "sweep-test-group";
        let dir = tempfile::tempdir().unwrap();
        let log = File::create(dir.path().join("log")).unwrap();
        let mut exec = Executor::new(log, None, std::path::Path::new("s"));
        let grace = std::time::Duration::from_secs(5);
        assert!(
            exec.perform(Action::SweepLeftovers {
                group: G.into(),
                tag: "t".into(),
                kill_after: grace,
            })
            .is_none()
        );
        // Asked, not done: nothing was scanned or signalled yet.
        assert!(exec.has_leftovers());
        let sweeps = exec.take_sweeps();
        assert_eq!(sweeps.len(), 1);
        assert!(!exec.has_leftovers());

        // Two processes of this test (so their parent is "the daemon"),
        // one of g:t and one of g:other.
        let spawn = |tag: &str| {
            Command::new("sleep")
                .arg("100")
                .env("CLINIT_GROUP", G)
                .env("CLINIT_TAG", tag)
                .spawn()
                .unwrap()
        };
        let mut mine = spawn("t");
        let mut other = spawn("other");
        // The kernel lets the parent go on (vfork done, the exec-error pipe
        // closed) before the new program's environment is in place, so a
        // scan right after spawn() may read an empty environ: poll until
        // both are seen, within a deadline.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let found: Vec<Adopted> = loop {
            let found: Vec<Adopted> = scan_adopted()
                .into_iter()
                .filter(|a| [mine.id(), other.id()].contains(&(a.pid as u32)))
                .collect();
            if found.len() == 2 || std::time::Instant::now() > deadline {
                break found;
            }
            std::thread::yield_now();
        };
        assert_eq!(found.len(), 2, "{found:?}");
        // One found earlier whose pid now names another process: left alone.
        let stale = Adopted {
            pid: other.id() as Pid,
            start_ticks: 1,
            group: G.into(),
            tag: "t".into(),
        };
        exec.finish_sweeps(&sweeps, found.into_iter().chain([stale]).collect());
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(mine.wait().unwrap().signal(), Some(libc::SIGTERM));
        assert!(exec.has_leftovers(), "g:t is stopping, with its grace");
        assert!(other.try_wait().unwrap().is_none(), "g:other was stopped");
        other.kill().unwrap();
        other.wait().unwrap();
    }

    use super::direct_words;

    #[test]
    fn which_commands_run_without_a_shell() {
        let cases: &[(&str, Option<&[&str]>)] = &[
            ("sleep 1000", Some(&["sleep", "1000"])),
            (
                "  /usr/sbin/web --port 8080 ",
                Some(&["/usr/sbin/web", "--port", "8080"]),
            ),
            ("exit 3", None),
            ("trap '' INT", None),
            ("echo $HOME", None),
            ("a && b", None),
            ("sleep 1 > /dev/null", None),
            ("FOO=1 prog", None),
            ("ls *.log", None),
            ("prog # comment", None),
            ("echo a\\nb", None),
            ("", None),
            ("cd /tmp", None),
        ];
        for (cmd, want) in cases {
            assert_eq!(direct_words(cmd).as_deref(), *want, "{cmd:?}");
        }
    }
}
