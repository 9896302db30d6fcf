//! Stopping the children of a previous daemon run.
//!
//! A daemon killed by SIGKILL cannot stop its children; they keep running,
//! reparented to init (or a subreaper). Every child is recorded in the state
//! database ([`ChildRecord`]) while it runs, so the next daemon calls
//! [`stop_leftovers`] with those records BEFORE it starts anything: nothing
//! ever runs twice.
//!
//! # Invariants
//!
//! - A process is signalled only if it is provably the recorded one: same
//!   boot (`boot_id`) and same start time (`start_ticks`, field 22 of
//!   `/proc/PID/stat`). A pidfd is opened *before* the check, so every later
//!   wait (and every signal sent through it) concerns the verified process
//!   even if its pid is reused meanwhile.
//! - A process group is signalled (`kill(-pgid)`) only while its verified
//!   member is alive and still in it, never when it is our own group and
//!   never for a pgid ≤ 1; otherwise only the process itself is signalled,
//!   through its pidfd.
//! - Exits are awaited with `poll(2)` on pidfds against a deadline, never by
//!   sleeping. These processes are not our children, so they are not reaped
//!   here; a pidfd becomes readable when the process exits (also while it
//!   is an unreaped zombie).

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, getpgid, getpgrp};

use crate::store::ChildRecord;

/// Trimmed content of /proc/sys/kernel/random/boot_id ("" if unreadable).
/// Identifies the current boot: a record from another boot never names a
/// live process, whatever its pid.
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Field 22 of /proc/PID/stat (the process's start time in clock ticks
/// since boot), or `None` if there is no such process. Together with the
/// boot id it tells a process from a later one that got the same pid.
pub fn start_ticks(pid: i32) -> Option<u64> {
    if pid <= 0 {
        return None;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start_ticks(&stat)
}

/// Parse field 22 of a /proc/PID/stat line.
fn parse_start_ticks(stat: &str) -> Option<u64> {
    stat_field(stat, 22)?.parse().ok()
}

/// Field `n` (numbered as in proc(5), 3 or more: 3 is the state, 4 the
/// parent pid) of a /proc/PID/stat line. The command name (field 2) is in
/// parentheses and may itself contain spaces and parentheses, so fields
/// are counted from after the LAST ')'.
pub fn stat_field(stat: &str, n: usize) -> Option<&str> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(n.checked_sub(3)?)
}

/// What [`stop_leftovers`] found and did for one record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Leftover {
    /// No such process any more (or it had already exited): nothing to do.
    Gone,
    /// pid alive but a different process (start time or boot differs): left alone.
    /// Also returned, with a warning, when the record cannot be verified
    /// (this boot's id is unreadable) or is invalid (pid or pgid ≤ 1).
    Reused,
    /// exited after the signal named
    /// (`"SIGINT"`, `"SIGTERM"` or `"SIGKILL"`; for `"SIGKILL"` the process
    /// may, rarely, still be dying when this returns: see [`stop_leftovers`]).
    Stopped { signal: &'static str },
}

/// One verified leftover being stopped.
struct Live<'a> {
    idx: usize,
    rec: &'a ChildRecord,
    /// `None` if pidfds are unavailable (kernel < 5.3): SIGKILL only.
    pidfd: Option<OwnedFd>,
    /// `kill(-pgid)` reaches the verified process's group (see module doc).
    group_ok: bool,
    exited: bool,
    /// The last signal sent; `None` while none was.
    signal: Option<&'static str>,
}

/// Stop every still-alive recorded child: SIGINT to its process group
/// (-pgid) first (the daemon's normal first stop signal), SIGTERM to groups
/// whose leader is still alive after `term_after`, SIGKILL after a further
/// `kill_after`. After the sequence, any recorded process group that still
/// has members (kill(-pgid, 0) succeeds) and whose leader was verified gets
/// SIGKILL. Only records whose boot_id equals the current one and whose
/// start_ticks equal the live process's are touched. Returns one outcome per
/// record, same order. Logs (tracing::warn!) each leftover found and each
/// signal sent, naming group:tag and pid.
///
/// All leftovers are stopped together, so the whole call takes at most
/// `term_after + 2 * kill_after` (the last `kill_after` bounds the wait for
/// SIGKILLed processes to vanish; one still alive then, e.g. stuck in
/// uninterruptible sleep, is logged and reported as `Stopped { "SIGKILL" }`).
pub fn stop_leftovers(
    records: &[ChildRecord],
    term_after: Duration,
    kill_after: Duration,
) -> Vec<Leftover> {
    let boot = boot_id();
    let own_group = getpgrp().as_raw();
    let mut out = vec![Leftover::Gone; records.len()];
    let mut live = Vec::new();
    for (idx, rec) in records.iter().enumerate() {
        match verify(rec, &boot, own_group) {
            Verdict::Ours { pidfd, group_ok } => live.push(Live {
                idx,
                rec,
                pidfd,
                group_ok,
                exited: false,
                signal: None,
            }),
            Verdict::Gone => out[idx] = Leftover::Gone,
            Verdict::NotOurs => out[idx] = Leftover::Reused,
        }
    }
    // Already exited (e.g. a zombie not yet reaped by its new parent): Gone.
    wait_exits(&mut live, Instant::now());
    // Without a pidfd (kernel < 5.3) an exit cannot be awaited, so there is
    // no graceful sequence: SIGKILL at once (nothing may run twice).
    for l in live.iter_mut().filter(|l| l.pidfd.is_none()) {
        send(l, "SIGKILL", Signal::SIGKILL);
        l.exited = true;
    }

    let steps = [
        ("SIGINT", Signal::SIGINT, term_after),
        ("SIGTERM", Signal::SIGTERM, kill_after),
        ("SIGKILL", Signal::SIGKILL, kill_after),
    ];
    for (name, sig, wait) in steps {
        for l in live.iter_mut().filter(|l| !l.exited) {
            send(l, name, sig);
        }
        wait_exits(&mut live, Instant::now() + wait);
        if live.iter().all(|l| l.exited) {
            break;
        }
    }
    for l in live.iter().filter(|l| !l.exited) {
        tracing::warn!(
            "leftover {}:{} pid {} has not exited {:?} after SIGKILL",
            l.rec.group,
            l.rec.tag,
            l.rec.pid,
            kill_after
        );
    }

    // Members of a group can outlive its leader (e.g. a background job
    // that ignores SIGINT, or the leader had exited before we came): kill
    // what is left of each verified group.
    for l in live.iter().filter(|l| l.group_ok) {
        let group = Pid::from_raw(-l.rec.pgid);
        if kill(group, None).is_ok() {
            tracing::warn!(
                "process group {} of leftover {}:{} (pid {}) still has members; sending SIGKILL",
                l.rec.pgid,
                l.rec.group,
                l.rec.tag,
                l.rec.pid
            );
            if let Err(e) = kill(group, Signal::SIGKILL)
                && e != Errno::ESRCH
            {
                tracing::warn!("cannot send SIGKILL to process group {}: {e}", l.rec.pgid);
            }
        }
    }

    for l in live {
        out[l.idx] = match l.signal {
            Some(signal) => Leftover::Stopped { signal },
            None => Leftover::Gone,
        };
    }
    out
}

/// What a record names right now.
enum Verdict {
    /// No such process (any more).
    Gone,
    /// Another process, or one that cannot be verified: leave it alone.
    NotOurs,
    /// The recorded process, still running. `pidfd` is `None` only if
    /// pidfds are unavailable; `group_ok` says `kill(-pgid)` reaches it.
    Ours {
        pidfd: Option<OwnedFd>,
        group_ok: bool,
    },
}

/// Decide whether `rec` names a live process of ours from a previous run.
fn verify(rec: &ChildRecord, boot: &str, own_group: i32) -> Verdict {
    let who = format!("{}:{} pid {}", rec.group, rec.tag, rec.pid);
    if rec.pid <= 1 || rec.pgid <= 1 {
        tracing::warn!(
            "invalid child record {who} (process group {}); ignored",
            rec.pgid
        );
        return Verdict::NotOurs;
    }
    // Open the pidfd first: if the check below passes, the fd is known to
    // refer to the recorded process, whatever happens to the pid later.
    let pidfd = match pidfd_open(rec.pid) {
        Ok(fd) => Some(fd),
        Err(Errno::ESRCH) => return Verdict::Gone,
        Err(e) => {
            tracing::error!(
                "pidfd_open({}) failed: {e}; leftover {who} can only be killed",
                rec.pid
            );
            None
        }
    };
    let Some(ticks) = start_ticks(rec.pid) else {
        return Verdict::Gone;
    };
    if boot.is_empty() {
        tracing::warn!("cannot read this boot's id; recorded child {who} left alone");
        return Verdict::NotOurs;
    }
    if rec.boot_id != boot || rec.start_ticks != ticks {
        tracing::warn!(
            "pid {} recorded for {}:{} is now another process; left alone",
            rec.pid,
            rec.group,
            rec.tag
        );
        return Verdict::NotOurs;
    }
    let group_ok = rec.pgid != own_group
        && getpgid(Some(Pid::from_raw(rec.pid))) == Ok(Pid::from_raw(rec.pgid));
    tracing::warn!(
        "leftover from a previous daemon run: {who} (process group {}) is still running; stopping it",
        rec.pgid
    );
    Verdict::Ours { pidfd, group_ok }
}

/// Send `sig` to the leftover's process group, or to the process alone
/// (through its pidfd) when the group cannot be trusted.
fn send(l: &mut Live<'_>, name: &'static str, sig: Signal) {
    let rec = l.rec;
    let res = if l.group_ok {
        tracing::warn!(
            "sending {name} to process group {} of leftover {}:{} (pid {})",
            rec.pgid,
            rec.group,
            rec.tag,
            rec.pid
        );
        kill(Pid::from_raw(-rec.pgid), sig)
    } else if let Some(fd) = &l.pidfd {
        tracing::warn!(
            "sending {name} to leftover {}:{} pid {} (not to process group {}, which it has left or which is ours)",
            rec.group,
            rec.tag,
            rec.pid,
            rec.pgid
        );
        pidfd_send_signal(fd, sig)
    } else {
        // No pidfd and no trusted group: the pid was verified just now.
        tracing::warn!(
            "sending {name} to leftover {}:{} pid {}",
            rec.group,
            rec.tag,
            rec.pid
        );
        kill(Pid::from_raw(rec.pid), sig)
    };
    l.signal = Some(name);
    match res {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(e) => tracing::warn!(
            "cannot send {name} to leftover {}:{}: {e}",
            rec.group,
            rec.tag
        ),
    }
}

/// Mark as exited every leftover whose pidfd becomes readable before
/// `deadline` (checked at least once, even if `deadline` has passed).
/// Returns early once all have exited. Leftovers without a pidfd are never
/// marked.
fn wait_exits(live: &mut [Live<'_>], deadline: Instant) {
    loop {
        let idx: Vec<usize> = (0..live.len())
            .filter(|&i| !live[i].exited && live[i].pidfd.is_some())
            .collect();
        if idx.is_empty() {
            return;
        }
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        let mut fds: Vec<PollFd> = idx
            .iter()
            .filter_map(|&i| live[i].pidfd.as_ref())
            .map(|f| PollFd::new(f.as_fd(), PollFlags::POLLIN))
            .collect();
        let remaining = deadline.saturating_duration_since(Instant::now());
        // Round up so that we never wake just before the deadline.
        let ms = remaining.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        match poll(
            &mut fds,
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
        ) {
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(e) => {
                tracing::warn!("poll on leftover pidfds failed: {e}");
                return;
            }
        }
        let gone: Vec<bool> = fds
            .iter()
            // POLLIN on exit; POLLHUP/POLLERR also mean the process is gone.
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        for (gone, &i) in gone.into_iter().zip(&idx) {
            if gone {
                live[i].exited = true;
            }
        }
        if remaining.is_zero() {
            return;
        }
    }
}

/// A pidfd for `pid` (Linux 5.3+): readable once the process has exited,
/// for any process, not only our children.
pub(crate) fn pidfd_open(pid: i32) -> Result<OwnedFd, Errno> {
    // SAFETY: plain syscall with integer arguments.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: the kernel just returned this new descriptor (O_CLOEXEC is
    // implied for pidfds); nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn pidfd_send_signal(fd: &OwnedFd, sig: Signal) -> Result<(), Errno> {
    // SAFETY: valid pidfd, null siginfo (like kill(2)), no flags.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            sig as libc::c_int,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r < 0 { Err(Errno::last()) } else { Ok(()) }
}

/// Processes that carry `CLINIT_SOCKET=socket` in their environment (every
/// child of the daemon on that socket gets it, and their descendants
/// inherit it), as records for [`stop_leftovers`], except `skip` (pids
/// already recorded), this process and its parent. Called at start-up,
/// before anything starts, it finds what a killed previous daemon on the
/// same socket left that no record names: descendants that left their
/// entry's process group (`setsid`). One scan of `/proc`, once.
pub fn marked(socket: &std::path::Path, skip: &[i32]) -> Vec<ChildRecord> {
    use std::os::unix::ffi::OsStrExt;
    let mut want = b"CLINIT_SOCKET=".to_vec();
    want.extend_from_slice(socket.as_os_str().as_bytes());
    let me = std::process::id() as i32;
    let parent = nix::unistd::getppid().as_raw();
    let boot = boot_id();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|ent| ent.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| *pid != me && *pid != parent && !skip.contains(pid))
        .filter_map(|pid| {
            let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
            env.split(|b| *b == 0)
                .any(|v| v == want.as_slice())
                .then(|| record(pid, &env, &boot))?
        })
        .collect()
}

/// The processes `pids` (listed by the previous run's cgroups), as
/// records for [`stop_leftovers`], except `skip` (pids already recorded).
pub fn records_of(pids: impl IntoIterator<Item = i32>, skip: &[i32]) -> Vec<ChildRecord> {
    let boot = boot_id();
    pids.into_iter()
        .filter(|pid| !skip.contains(pid))
        .filter_map(|pid| {
            let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            record(pid, &env, &boot)
        })
        .collect()
}

/// A record of the live process `pid`, named by the CLINIT_GROUP and
/// CLINIT_TAG of its environment `env` (empty if it has none).
fn record(pid: i32, env: &[u8], boot: &str) -> Option<ChildRecord> {
    let var = |name: &[u8]| {
        env.split(|b| *b == 0)
            .find_map(|v| v.strip_prefix(name))
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default()
    };
    let ticks = start_ticks(pid)?;
    let pgid = getpgid(Some(Pid::from_raw(pid))).map_or(pid, |p| p.as_raw());
    Some(ChildRecord {
        pid,
        pgid,
        start_ticks: ticks,
        boot_id: boot.to_string(),
        group: var(b"CLINIT_GROUP="),
        tag: var(b"CLINIT_TAG="),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    use std::process::{Child, Command, Stdio};

    const SHORT: Duration = Duration::from_millis(150);

    /// Kills what is left of a test's process group when the test ends,
    /// also when it fails (a surviving grandchild would otherwise linger).
    struct GroupGuard(i32);

    impl Drop for GroupGuard {
        fn drop(&mut self) {
            let _ = kill(Pid::from_raw(-self.0), Signal::SIGKILL);
        }
    }

    /// Spawn a process leading its own group, with stdout piped to the test
    /// and stderr discarded (so no grandchild keeps the harness's output open).
    fn spawn(args: &[&str]) -> (Child, GroupGuard) {
        let c = Command::new(args[0])
            .args(&args[1..])
            .process_group(0)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let guard = GroupGuard(c.id() as i32);
        (c, guard)
    }

    /// Read one line the child prints once it is ready (traps installed).
    fn read_line(c: &mut Child) -> String {
        let mut line = String::new();
        BufReader::new(c.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        line.trim().to_string()
    }

    fn record(c: &Child, tag: &str) -> ChildRecord {
        let pid = c.id() as i32;
        ChildRecord {
            pid,
            pgid: pid,
            start_ticks: start_ticks(pid).unwrap(),
            boot_id: boot_id(),
            group: "g".into(),
            tag: tag.into(),
        }
    }

    /// Whether the process behind `pidfd` exits within `limit` (a
    /// grandchild is not ours to reap, and SIGKILL takes effect
    /// asynchronously, so wait on its pidfd).
    fn exits_within(pidfd: &OwnedFd, limit: Duration) -> bool {
        crate::client::wait_readable(pidfd.as_fd(), limit) == Ok(true)
    }

    #[test]
    fn stat_is_parsed_after_the_last_paren() {
        let rest = "S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 4242 19 20";
        assert_eq!(
            parse_start_ticks(&format!("77 (a) b (c)) {rest}")),
            Some(4242)
        );
        assert_eq!(parse_start_ticks(&format!("77 (sleep) {rest}")), Some(4242));
        assert_eq!(parse_start_ticks("77 (x) S 1 2"), None);
        assert_eq!(parse_start_ticks("garbage"), None);
        for (n, want) in [
            (3, Some("S")),
            (4, Some("1")),
            (2, None),
            (0, None),
            (99, None),
        ] {
            assert_eq!(
                stat_field(&format!("77 (a) b (c)) {rest}"), n),
                want,
                "field {n}"
            );
        }
        assert!(start_ticks(std::process::id() as i32).is_some());
        assert_eq!(start_ticks(0), None);
        assert_eq!(boot_id().len(), 36, "{:?}", boot_id());
    }

    #[test]
    fn a_matching_record_is_stopped_by_sigint() {
        let (mut c, _group) = spawn(&["sleep", "1000"]);
        let rec = record(&c, "s");
        let t0 = Instant::now();
        let out = stop_leftovers(&[rec], Duration::from_secs(10), Duration::from_secs(10));
        assert_eq!(out, vec![Leftover::Stopped { signal: "SIGINT" }]);
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "waited on a deadline, not the exit"
        );
        assert_eq!(c.wait().unwrap().signal(), Some(libc::SIGINT));
    }

    #[test]
    fn a_record_with_another_start_time_or_boot_is_left_alone() {
        let (mut c, _group) = spawn(&["sleep", "1000"]);
        let mut ticks = record(&c, "t");
        ticks.start_ticks += 1;
        let mut boot = record(&c, "b");
        boot.boot_id = "00000000-0000-0000-0000-000000000000".into();
        let out = stop_leftovers(&[ticks, boot], SHORT, SHORT);
        assert_eq!(out, vec![Leftover::Reused, Leftover::Reused]);
        assert_eq!(c.try_wait().unwrap(), None, "must still be alive");
        c.kill().unwrap();
        c.wait().unwrap();
    }

    #[test]
    fn a_dead_pid_is_gone_and_a_zombie_too() {
        let (mut dead, _group) = spawn(&["sleep", "1000"]);
        let dead_rec = record(&dead, "d");
        dead.kill().unwrap();
        dead.wait().unwrap();

        // Exited but not reaped yet: its pidfd is readable at once.
        let (mut zombie, _group) = spawn(&["true"]);
        let zombie_rec = record(&zombie, "z");
        let zombie_fd = pidfd_open(zombie_rec.pid).unwrap();
        assert!(exits_within(&zombie_fd, Duration::from_secs(5)));
        let out = stop_leftovers(&[dead_rec, zombie_rec], SHORT, SHORT);
        assert_eq!(out, vec![Leftover::Gone, Leftover::Gone]);
        assert!(zombie.wait().unwrap().success());
    }

    #[test]
    fn a_process_ignoring_int_and_term_gets_sigkill_with_its_group() {
        let (mut c, _group) = spawn(&[
            "sh",
            "-c",
            r#"trap "" INT TERM; sleep 1000 & echo $!; wait"#,
        ]);
        let grandchild = pidfd_open(read_line(&mut c).parse().unwrap()).unwrap();
        let rec = record(&c, "stubborn");
        let t0 = Instant::now();
        let out = stop_leftovers(&[rec], SHORT, SHORT);
        let took = t0.elapsed();
        assert_eq!(out, vec![Leftover::Stopped { signal: "SIGKILL" }]);
        assert!(took >= 2 * SHORT, "{took:?}");
        assert!(took < 2 * SHORT + Duration::from_secs(2), "{took:?}");
        assert_eq!(c.wait().unwrap().signal(), Some(libc::SIGKILL));
        assert!(
            exits_within(&grandchild, Duration::from_secs(5)),
            "the whole group was killed"
        );
    }

    #[test]
    fn group_members_outliving_the_leader_are_killed() {
        // Non-interactive sh starts background jobs with SIGINT ignored:
        // the leader dies of SIGINT, its background sleep would stay.
        let (mut c, _group) = spawn(&["sh", "-c", "sleep 1000 & echo $!; wait"]);
        let grandchild = pidfd_open(read_line(&mut c).parse().unwrap()).unwrap();
        let rec = record(&c, "leader");
        let out = stop_leftovers(&[rec], Duration::from_secs(10), Duration::from_secs(10));
        assert_eq!(out, vec![Leftover::Stopped { signal: "SIGINT" }]);
        assert_eq!(c.wait().unwrap().signal(), Some(libc::SIGINT));
        assert!(
            exits_within(&grandchild, Duration::from_secs(5)),
            "the sweep killed the rest of the group"
        );
    }

    #[test]
    fn invalid_records_are_never_signalled() {
        let own = std::process::id() as i32;
        let mut rec = ChildRecord {
            pid: own,
            pgid: 0,
            start_ticks: start_ticks(own).unwrap(),
            boot_id: boot_id(),
            group: "g".into(),
            tag: "me".into(),
        };
        assert_eq!(
            stop_leftovers(&[rec.clone()], SHORT, SHORT),
            vec![Leftover::Reused]
        );
        rec.pid = 1;
        rec.pgid = 1;
        assert_eq!(stop_leftovers(&[rec], SHORT, SHORT), vec![Leftover::Reused]);
        assert_eq!(stop_leftovers(&[], SHORT, SHORT), vec![]);
    }
}
