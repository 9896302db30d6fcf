//! Pure state machines: one entry's process ([`step_proc`]) and one group's
//! runlevel logic ([`Group::step`]).
//!
//! Nothing here performs I/O or reads a clock: every function takes the
//! current state, an event and `now`, and returns the next state plus the
//! [`Action`]s the executor must perform. States carry their data: a pid
//! exists only in states where a process exists.
//!
//! Invariants:
//! - A slot is `Stopping` only after a stop signal was sent to its process
//!   group; escalation timers name the pid and phase they were armed for, so a
//!   stale timer is ignored.
//! - A group leaves `Stopping` only when none of its current slots is
//!   stopping; retired slots (removed by a reread) never hold a group back.
//! - A foreground entry (`wait`, `test`) blocks the start sequence until it
//!   has exited.
//! - An entry runs only while its group is at one of its levels and it is
//!   enabled ([`Enable::run`]); a changed entry's new version starts only
//!   after the old version (a retired slot) has stopped.
//! - Every exit updates [`Stats`] and, when the entry has a notifier, yields
//!   exactly one [`Action::Notify`].

use crate::cltab::{Entry, Mode, Notifier};
use nix::sys::signal::Signal;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub type Pid = i32;

/// How a process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
}

impl ExitStatus {
    pub fn success(self) -> bool {
        self == ExitStatus::Code(0)
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "exit code {c}"),
            ExitStatus::Signal(s) => write!(f, "signal {s}"),
        }
    }
}

/// BOS counts no exit by these signals as an error.
const NOT_ERROR_SIGNALS: [i32; 3] = [libc::SIGTERM, libc::SIGQUIT, libc::SIGKILL];

impl ExitStatus {
    /// An error exit, as BOS counts them: a non-zero exit code or a signal
    /// other than TERM, QUIT and KILL, unless clinit asked for the stop.
    pub fn is_error(self, requested: bool) -> bool {
        !requested
            && match self {
                ExitStatus::Code(c) => c != 0,
                ExitStatus::Signal(s) => !NOT_ERROR_SIGNALS.contains(&s),
            }
    }
}

/// Which stop signal was sent last.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopPhase {
    /// The entry's first stop signal (`stop_signal`, SIGINT by default).
    First,
    Term,
    Kill,
}

impl StopPhase {
    pub fn signal(self, first: Signal) -> Signal {
        match self {
            StopPhase::First => first,
            StopPhase::Term => Signal::SIGTERM,
            StopPhase::Kill => Signal::SIGKILL,
        }
    }
}

/// The process state of one entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Proc {
    /// Not run at the current level (or forgotten).
    Idle,
    /// A spawn was requested; `Spawned` or `SpawnFailed` comes next.
    /// `stop_pending` records a stop that arrived in between.
    Spawning {
        stop_pending: bool,
    },
    Running {
        pid: Pid,
        since: Instant,
    },
    Stopping {
        pid: Pid,
        since: Instant,
        phase: StopPhase,
    },
    /// Ran and exited (foreground or `once` entries keep this result).
    Exited {
        status: ExitStatus,
        at: Instant,
    },
    /// A respawn entry waiting out its throttle delay.
    Backoff {
        until: Instant,
        status: ExitStatus,
    },
    /// A respawn entry that failed too often in a row (`respawn_give_up`):
    /// not restarted until an operator starts it.
    GaveUp {
        status: ExitStatus,
    },
    /// A cron entry waiting for its next run ([`Slot::next_run`]).
    Scheduled,
}

impl Proc {
    pub fn name(&self) -> &'static str {
        match self {
            Proc::Idle => "idle",
            Proc::Spawning { .. } => "starting",
            Proc::Running { .. } => "running",
            Proc::Stopping { .. } => "stopping",
            Proc::Exited { .. } => "exited",
            Proc::Backoff { .. } => "throttled",
            Proc::GaveUp { .. } => "gave-up",
            Proc::Scheduled => "scheduled",
        }
    }

    /// A process (or a spawn in flight) exists.
    pub fn is_live(&self) -> bool {
        matches!(
            self,
            Proc::Spawning { .. } | Proc::Running { .. } | Proc::Stopping { .. }
        )
    }

    pub fn pid(&self) -> Option<Pid> {
        match self {
            Proc::Running { pid, .. } | Proc::Stopping { pid, .. } => Some(*pid),
            _ => None,
        }
    }
}

/// Length of BOS's restart-counting window (`rsTime`, `rsCount`).
pub const RS_WINDOW_SECS: i64 = 60;

/// Per-entry history, kept across states. Times are Unix seconds.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Stats {
    /// Process starts (BOS `procStarts`).
    pub starts: u32,
    /// Automatic restarts of a respawn entry.
    pub restarts: u32,
    /// Rapid restarts in a row (runs shorter than `respawn_fast`).
    pub rapid: u32,
    pub last_start: Option<i64>,
    pub last_exit: Option<(ExitStatus, i64)>,
    /// The last error exit ([`ExitStatus::is_error`]).
    pub last_error: Option<(ExitStatus, i64)>,
    /// Start of the current restart-counting window (0: none yet).
    pub rs_time: i64,
    /// Automatic restarts in that window.
    pub rs_count: u32,
}

/// Whether an operator wants an entry to run, as BOS's fileGoal (`file`,
/// kept in the store across daemon restarts) and goal (`run`, what the
/// daemon does now).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Enable {
    pub file: bool,
    pub run: bool,
}

impl Default for Enable {
    fn default() -> Enable {
        Enable {
            file: true,
            run: true,
        }
    }
}

impl Enable {
    /// `bos status` words for a goal that differs from normal.
    pub fn describe(self) -> Option<&'static str> {
        match (self.file, self.run) {
            (true, true) => None,
            (false, false) => Some("disabled"),
            (true, false) => Some("temporarily disabled"),
            (false, true) => Some("temporarily enabled"),
        }
    }
}

/// A cron entry's next run: the moment, as the machines keep it.
pub type NextRun = super::Now;

/// One entry of a group: its cltab line, process state and history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slot {
    pub spec: Arc<Entry>,
    pub proc: Proc,
    pub stats: Stats,
    pub enable: Enable,
    /// Start again as soon as the current process has stopped.
    pub restart_pending: bool,
    /// Cron entries at their level: the next scheduled run.
    pub next_run: Option<NextRun>,
    /// When a reread (or create) added or changed the entry (Unix
    /// seconds); None for an entry as the daemon started with it.
    pub configured: Option<i64>,
}

impl Slot {
    pub fn new(spec: Arc<Entry>) -> Slot {
        Slot {
            spec,
            proc: Proc::Idle,
            stats: Stats::default(),
            enable: Enable::default(),
            restart_pending: false,
            next_run: None,
            configured: None,
        }
    }

    /// Whether the entry should run (or have run) at `level`.
    pub fn wanted(&self, level: &str) -> bool {
        self.enable.run && self.spec.wanted_at(level)
    }
}

/// Timers the machines arm; each names what it was armed for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TimerKind {
    /// Send the next stop signal (`to`) if `pid` is still stopping in the phase before.
    Escalate { pid: Pid, to: StopPhase },
    /// End a respawn throttle delay.
    Backoff { until: Instant },
    /// A cron entry's scheduled run.
    Cron { at: Instant },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timer {
    pub group: String,
    pub tag: String,
    pub kind: TimerKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogLevel {
    Info,
    Warn,
}

/// Effects for the executor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Start the entry's command in its own process group.
    Spawn {
        spec: Arc<Entry>,
        level: String,
    },
    /// Signal the whole process group of `pid`.
    Signal {
        group: String,
        tag: String,
        pid: Pid,
        signal: Signal,
    },
    ArmTimer {
        at: Instant,
        timer: Timer,
    },
    /// Stop descendants of the entry that escaped its process group and were
    /// adopted by the daemon (it is a child subreaper).
    SweepLeftovers {
        group: String,
        tag: String,
        /// The entry's grace between SIGTERM and SIGKILL.
        kill_after: std::time::Duration,
    },
    Log {
        level: LogLevel,
        message: String,
    },
    /// Run the entry's notifier with the record of an exit.
    Notify(Box<Notice>),
}

/// The facts of one exit, for a notifier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    pub group: String,
    pub tag: String,
    pub level: String,
    pub command: String,
    pub notifier: Notifier,
    pub timeout: Duration,
    /// 0 when the command could not be started.
    pub pid: Pid,
    pub status: ExitStatus,
    /// Unix seconds.
    pub at: i64,
    /// After this exit, before any restart it causes.
    pub stats: Stats,
    /// Whether the entry should be running (BOS `goal`).
    pub goal: bool,
    pub error: bool,
}

/// Events for one entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProcEvent {
    Start,
    Spawned {
        pid: Pid,
    },
    SpawnFailed,
    Exited {
        pid: Pid,
        status: ExitStatus,
    },
    Stop,
    /// An operator's start or restart: stop a running process first, then
    /// start again at once (throttle and give-up forgotten; a cron entry
    /// runs now).
    Restart,
    Timer(TimerKind),
}

/// What the entry machine needs to know about its surroundings.
pub struct Ctx<'a> {
    pub level: &'a str,
    /// Wall-clock time of `now`, Unix seconds.
    pub unix: i64,
}

fn spawn(slot: &Slot, ctx: &Ctx) -> Action {
    Action::Spawn {
        spec: slot.spec.clone(),
        level: ctx.level.to_string(),
    }
}

fn timer(slot: &Slot, at: Instant, kind: TimerKind) -> Action {
    Action::ArmTimer {
        at,
        timer: Timer {
            group: slot.spec.group.clone(),
            tag: slot.spec.tag.clone(),
            kind,
        },
    }
}

fn signal(slot: &Slot, pid: Pid, phase: StopPhase) -> Action {
    Action::Signal {
        group: slot.spec.group.clone(),
        tag: slot.spec.tag.clone(),
        pid,
        signal: phase.signal(slot.spec.opts.timing.stop_signal),
    }
}

fn sweep(slot: &Slot) -> Action {
    Action::SweepLeftovers {
        group: slot.spec.group.clone(),
        tag: slot.spec.tag.clone(),
        kill_after: slot.spec.opts.timing.kill_after,
    }
}

fn log(level: LogLevel, message: String) -> Action {
    Action::Log { level, message }
}

/// Begin a graceful stop of a running process: the first stop signal now,
/// SIGTERM later.
fn begin_stop(slot: &Slot, pid: Pid, since: Instant, now: Instant) -> (Proc, Vec<Action>) {
    (
        Proc::Stopping {
            pid,
            since,
            phase: StopPhase::First,
        },
        vec![
            signal(slot, pid, StopPhase::First),
            timer(
                slot,
                now + slot.spec.opts.timing.term_after,
                TimerKind::Escalate {
                    pid,
                    to: StopPhase::Term,
                },
            ),
        ],
    )
}

/// The delay before restarting a respawn entry that just exited after
/// running `ran`, and the updated rapid-restart count.
pub fn respawn_delay(
    rapid: u32,
    ran: Duration,
    timing: &crate::config::Timing,
) -> (u32, Option<Duration>) {
    let p = &timing.respawn;
    let rapid = if ran < p.fast {
        rapid.saturating_add(1)
    } else if ran >= p.reset {
        0
    } else {
        rapid
    };
    if rapid <= p.burst {
        return (rapid, None);
    }
    let exp = (rapid - p.burst - 1).min(30);
    let delay = p.delay.saturating_mul(1u32 << exp).min(p.delay_max);
    (rapid, Some(delay))
}

/// A cron entry's next run after `ctx.unix`, with its timer.
fn schedule_next(slot: &mut Slot, now: Instant, ctx: &Ctx, actions: &mut Vec<Action>) {
    slot.next_run = slot
        .spec
        .opts
        .schedule
        .as_ref()
        .and_then(|s| s.next_after(ctx.unix))
        .map(|unix| NextRun {
            at: now + Duration::from_secs(unix.saturating_sub(ctx.unix).max(0) as u64),
            unix,
            wall_us: unix.saturating_mul(1_000_000),
        });
    if let Some(next) = slot.next_run {
        actions.push(timer(slot, next.at, TimerKind::Cron { at: next.at }));
    }
}

/// Start an idle entry: spawn it, or for a cron entry, wait for its time.
fn start(slot: &mut Slot, now: Instant, ctx: &Ctx, actions: &mut Vec<Action>) -> Proc {
    let run_now = slot.spec.opts.schedule.as_ref().is_none_or(|s| s.is_now());
    if slot.spec.mode == Mode::Cron && !run_now {
        schedule_next(slot, now, ctx, actions);
        return Proc::Scheduled;
    }
    actions.push(spawn(slot, ctx));
    Proc::Spawning {
        stop_pending: false,
    }
}

/// Account for an exit in the entry's history and notify.
fn record_exit(
    slot: &mut Slot,
    pid: Pid,
    status: ExitStatus,
    requested: bool,
    ctx: &Ctx,
    actions: &mut Vec<Action>,
) {
    let st = &mut slot.stats;
    if ctx.unix - st.rs_time >= RS_WINDOW_SECS {
        st.rs_time = ctx.unix;
        st.rs_count = 0;
    }
    st.last_exit = Some((status, ctx.unix));
    let error = status.is_error(requested);
    if error {
        st.last_error = Some((status, ctx.unix));
    }
    if let Some(notifier) = &slot.spec.opts.notifier {
        actions.push(Action::Notify(Box::new(Notice {
            group: slot.spec.group.clone(),
            tag: slot.spec.tag.clone(),
            level: ctx.level.to_string(),
            command: slot.spec.command.clone(),
            notifier: notifier.clone(),
            timeout: slot.spec.opts.timing.notifier_timeout,
            pid,
            status,
            at: ctx.unix,
            stats: slot.stats.clone(),
            goal: !requested && slot.wanted(ctx.level),
            error,
        })));
    }
}

/// The entry machine: one event applied to one slot.
pub fn step_proc(mut slot: Slot, ev: ProcEvent, now: Instant, ctx: &Ctx) -> (Slot, Vec<Action>) {
    let mut actions = Vec::new();
    let proc = std::mem::replace(&mut slot.proc, Proc::Idle);
    let next = match (proc, ev) {
        (Proc::Idle, ProcEvent::Start) => start(&mut slot, now, ctx, &mut actions),
        (Proc::Spawning { stop_pending }, ProcEvent::Spawned { pid }) => {
            slot.stats.starts += 1;
            slot.stats.last_start = Some(ctx.unix);
            if stop_pending {
                let (p, a) = begin_stop(&slot, pid, now, now);
                actions.extend(a);
                p
            } else {
                Proc::Running { pid, since: now }
            }
        }
        (Proc::Spawning { .. }, ProcEvent::Stop) => Proc::Spawning { stop_pending: true },
        (Proc::Spawning { stop_pending }, ProcEvent::SpawnFailed) => {
            // The executor logged why; it counts as exit 127, like a shell
            // that cannot find the command.
            let status = ExitStatus::Code(127);
            slot.stats.starts += 1;
            slot.stats.last_start = Some(ctx.unix);
            record_exit(&mut slot, 0, status, stop_pending, ctx, &mut actions);
            if stop_pending {
                finish_stop(&mut slot, now, ctx, &mut actions)
            } else {
                after_exit(&mut slot, status, Duration::ZERO, now, ctx, &mut actions)
            }
        }
        (Proc::Running { pid, since }, ProcEvent::Exited { pid: p, status }) if p == pid => {
            record_exit(&mut slot, pid, status, false, ctx, &mut actions);
            after_exit(
                &mut slot,
                status,
                now.saturating_duration_since(since),
                now,
                ctx,
                &mut actions,
            )
        }
        (Proc::Running { pid, since }, ProcEvent::Stop) => {
            slot.next_run = None;
            let (p, a) = begin_stop(&slot, pid, since, now);
            actions.extend(a);
            p
        }
        (Proc::Running { pid, since }, ProcEvent::Restart) => {
            slot.restart_pending = true;
            let (p, a) = begin_stop(&slot, pid, since, now);
            actions.extend(a);
            p
        }
        (p @ Proc::Stopping { .. }, ProcEvent::Restart) => {
            slot.restart_pending = true;
            p
        }
        (p @ Proc::Stopping { .. }, ProcEvent::Stop) => {
            slot.restart_pending = false;
            p
        }
        (Proc::Stopping { pid, .. }, ProcEvent::Exited { pid: p, status }) if p == pid => {
            record_exit(&mut slot, pid, status, true, ctx, &mut actions);
            actions.push(sweep(&slot));
            finish_stop(&mut slot, now, ctx, &mut actions)
        }
        (
            Proc::Stopping { pid, since, phase },
            ProcEvent::Timer(TimerKind::Escalate { pid: p, to }),
        ) if p == pid => {
            let expected = match phase {
                StopPhase::First => Some(StopPhase::Term),
                StopPhase::Term => Some(StopPhase::Kill),
                StopPhase::Kill => None,
            };
            if expected == Some(to) {
                actions.push(signal(&slot, pid, to));
                if to == StopPhase::Term {
                    actions.push(timer(
                        &slot,
                        now + slot.spec.opts.timing.kill_after,
                        TimerKind::Escalate {
                            pid,
                            to: StopPhase::Kill,
                        },
                    ));
                }
                actions.push(log(
                    LogLevel::Warn,
                    format!(
                        "{}:{} (pid {pid}) still running; sent {}",
                        slot.spec.group,
                        slot.spec.tag,
                        to.signal(slot.spec.opts.timing.stop_signal).as_str()
                    ),
                ));
                Proc::Stopping {
                    pid,
                    since,
                    phase: to,
                }
            } else {
                Proc::Stopping { pid, since, phase }
            }
        }
        (Proc::Exited { .. }, ProcEvent::Stop) => {
            // Nothing runs, but a daemonized descendant may still be around.
            actions.push(sweep(&slot));
            Proc::Idle
        }
        (Proc::Backoff { .. } | Proc::GaveUp { .. }, ProcEvent::Stop) => Proc::Idle,
        (Proc::Scheduled, ProcEvent::Stop) => {
            slot.next_run = None;
            Proc::Idle
        }
        (
            Proc::Idle
            | Proc::Exited { .. }
            | Proc::Backoff { .. }
            | Proc::GaveUp { .. }
            | Proc::Scheduled,
            ProcEvent::Restart,
        ) => run_again(&mut slot, now, ctx, &mut actions),
        (Proc::Backoff { until, .. }, ProcEvent::Timer(TimerKind::Backoff { until: u }))
            if u == until =>
        {
            actions.push(log(
                LogLevel::Info,
                format!(
                    "{}:{} throttle delay over; starting it again",
                    slot.spec.group, slot.spec.tag
                ),
            ));
            actions.push(spawn(&slot, ctx));
            Proc::Spawning {
                stop_pending: false,
            }
        }
        (proc, ProcEvent::Timer(TimerKind::Cron { at }))
            if slot.next_run.is_some_and(|n| n.at == at) =>
        {
            let due = slot.next_run.map(|n| n.unix).unwrap_or(ctx.unix);
            schedule_next(&mut slot, now, ctx, &mut actions);
            match proc {
                Proc::Scheduled => {
                    actions.push(spawn(&slot, ctx));
                    Proc::Spawning {
                        stop_pending: false,
                    }
                }
                other => {
                    actions.push(log(
                        LogLevel::Warn,
                        format!(
                            "{}:{} is still running; its run due at {} is skipped",
                            slot.spec.group,
                            slot.spec.tag,
                            crate::schedule::ctime(due)
                        ),
                    ));
                    other
                }
            }
        }
        // Everything else leaves the state as it is: a start of an entry that
        // already runs or ran, a stop of an idle or stopping one, a stale
        // timer, an exit of a pid that is not this slot's.
        (other, _) => other,
    };
    slot.proc = next;
    (slot, actions)
}

/// After a requested stop: idle, or started again for a pending restart.
fn finish_stop(slot: &mut Slot, now: Instant, ctx: &Ctx, actions: &mut Vec<Action>) -> Proc {
    if std::mem::take(&mut slot.restart_pending) && slot.wanted(ctx.level) {
        return run_again(slot, now, ctx, actions);
    }
    slot.next_run = None;
    Proc::Idle
}

/// Start a slot again on an operator's restart: the rapid-restart count
/// starts over, and a cron entry keeps its schedule after this extra run.
fn run_again(slot: &mut Slot, now: Instant, ctx: &Ctx, actions: &mut Vec<Action>) -> Proc {
    slot.stats.rapid = 0;
    if slot.spec.mode == Mode::Cron && slot.next_run.is_none() {
        schedule_next(slot, now, ctx, actions);
    }
    actions.push(spawn(slot, ctx));
    Proc::Spawning {
        stop_pending: false,
    }
}

/// [`step_proc`] on a slot that stays where it is.
fn step_in_place(slot: &mut Slot, ev: ProcEvent, now: Instant, ctx: &Ctx) -> Vec<Action> {
    let placeholder = Slot::new(slot.spec.clone());
    let (s, actions) = step_proc(std::mem::replace(slot, placeholder), ev, now, ctx);
    *slot = s;
    actions
}

/// What follows an exit that nobody asked for.
fn after_exit(
    slot: &mut Slot,
    status: ExitStatus,
    ran: Duration,
    now: Instant,
    ctx: &Ctx,
    actions: &mut Vec<Action>,
) -> Proc {
    match slot.spec.mode {
        Mode::Respawn => {}
        // A cron run that failed is not restarted; the schedule goes on.
        Mode::Cron if slot.next_run.is_some() => return Proc::Scheduled,
        _ => return Proc::Exited { status, at: now },
    }
    let timing = &slot.spec.opts.timing;
    let (rapid, delay) = respawn_delay(slot.stats.rapid, ran, timing);
    slot.stats.rapid = rapid;
    if let Some(limit) = timing.respawn.give_up
        && rapid > limit
    {
        actions.push(log(
            LogLevel::Warn,
            format!(
                "{}:{} stopped for too many errors: {rapid} quick exits in a row (respawn_give_up {limit}), last {status}; `clinit start {}` tries again",
                slot.spec.group, slot.spec.tag, slot.spec.tag
            ),
        ));
        return Proc::GaveUp { status };
    }
    slot.stats.restarts += 1;
    slot.stats.rs_count += 1;
    match delay {
        None => {
            actions.push(spawn(slot, ctx));
            Proc::Spawning {
                stop_pending: false,
            }
        }
        Some(delay) => {
            let until = now + delay;
            actions.push(log(
                LogLevel::Warn,
                format!(
                    "{}:{} respawning too rapidly ({rapid} quick exits in a row, last {status}); throttled: next start in {:.1}s",
                    slot.spec.group,
                    slot.spec.tag,
                    delay.as_secs_f64()
                ),
            ));
            actions.push(timer(slot, until, TimerKind::Backoff { until }));
            Proc::Backoff { until, status }
        }
    }
}

/// How a level ended, once every entry of it was started and every
/// foreground entry finished.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum GroupState {
    /// Never told a level.
    Idle,
    Starting,
    Stopping,
    Done,
    Passed,
    Failed,
}

impl GroupState {
    pub fn as_str(self) -> &'static str {
        match self {
            GroupState::Idle => "IDLE",
            GroupState::Starting => "STARTING",
            GroupState::Stopping => "STOPPING",
            GroupState::Done => "DONE",
            GroupState::Passed => "PASSED",
            GroupState::Failed => "FAILED",
        }
    }

    pub fn parse(s: &str) -> Option<GroupState> {
        Some(match s.to_ascii_uppercase().as_str() {
            "IDLE" => GroupState::Idle,
            "STARTING" => GroupState::Starting,
            "STOPPING" => GroupState::Stopping,
            "DONE" => GroupState::Done,
            "PASSED" => GroupState::Passed,
            "FAILED" => GroupState::Failed,
            _ => return None,
        })
    }

    /// The level switch has finished.
    pub fn is_settled(self) -> bool {
        matches!(
            self,
            GroupState::Done | GroupState::Passed | GroupState::Failed
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Done,
    Passed,
    Failed,
}

/// Where a group is in its level switch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Never told.
    Idle,
    /// Stopping processes that do not belong to `level`.
    Stopping {
        level: String,
    },
    /// Starting the entries of `level` in file order.
    Starting {
        level: String,
    },
    Settled {
        level: String,
        outcome: Outcome,
    },
    /// Shutting down: every process is being stopped.
    Halting {
        level: Option<String>,
    },
}

impl Phase {
    pub fn level(&self) -> Option<&str> {
        match self {
            Phase::Idle => None,
            Phase::Stopping { level }
            | Phase::Starting { level }
            | Phase::Settled { level, .. } => Some(level),
            Phase::Halting { level } => level.as_deref(),
        }
    }

    pub fn state(&self) -> GroupState {
        match self {
            Phase::Idle => GroupState::Idle,
            Phase::Stopping { .. } | Phase::Halting { .. } => GroupState::Stopping,
            Phase::Starting { .. } => GroupState::Starting,
            Phase::Settled { outcome, .. } => match outcome {
                Outcome::Done => GroupState::Done,
                Outcome::Passed => GroupState::Passed,
                Outcome::Failed => GroupState::Failed,
            },
        }
    }
}

/// An operator's decision about one entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// Stop it and keep it stopped; `temporary`: until the daemon restarts.
    Stop { temporary: bool },
    /// Enable it and start it if its group is at one of its levels;
    /// `temporary`: until the daemon restarts.
    Start { temporary: bool },
    /// Stop it if it runs, then start it again.
    Restart,
}

/// Events for one group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupEvent {
    Tell {
        level: String,
    },
    /// An event for the entry `tag`; exits and escalation timers of retired
    /// slots are found by pid.
    Proc {
        tag: String,
        ev: ProcEvent,
    },
    Control {
        tag: String,
        op: Control,
    },
    /// Stop every entry and run the level's start sequence again.
    Restart,
    /// Stop everything (daemon shutdown).
    Halt,
}

/// A resource group: its entries in file order, entries retired by a reread
/// that are still stopping, and its phase.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    pub slots: Vec<Slot>,
    pub retired: Vec<Slot>,
    pub phase: Phase,
}

impl Group {
    /// A group of new slots; tags in `disabled` start disabled.
    pub fn new(
        name: &str,
        specs: impl IntoIterator<Item = Arc<Entry>>,
        disabled: &dyn Fn(&str) -> bool,
    ) -> Group {
        Group {
            name: name.to_string(),
            slots: specs.into_iter().map(|s| new_slot(s, disabled)).collect(),
            retired: Vec::new(),
            phase: Phase::Idle,
        }
    }

    /// No process of this group exists (or is being spawned).
    pub fn is_quiet(&self) -> bool {
        !self
            .slots
            .iter()
            .chain(self.retired.iter())
            .any(|s| s.proc.is_live())
    }

    pub fn state(&self) -> GroupState {
        self.phase.state()
    }

    /// The level the group is at or going to, if it runs its entries now.
    /// The level the group is at or going to; none while idle or halting.
    pub fn active_level(&self) -> Option<&str> {
        match &self.phase {
            Phase::Stopping { level }
            | Phase::Starting { level }
            | Phase::Settled { level, .. } => Some(level),
            Phase::Idle | Phase::Halting { .. } => None,
        }
    }

    pub fn step(mut self, ev: GroupEvent, now: Instant, unix: i64) -> (Group, Vec<Action>) {
        let mut actions = Vec::new();
        match ev {
            GroupEvent::Tell { level } => {
                let ctx = Ctx {
                    level: &level,
                    unix,
                };
                for slot in std::mem::take(&mut self.slots) {
                    let slot = if slot.wanted(&level) {
                        slot
                    } else {
                        // Not of the new level: stop it if it runs, forget it
                        // if it ran, so it runs anew when its level comes.
                        let (s, a) = step_proc(slot, ProcEvent::Stop, now, &ctx);
                        actions.extend(a);
                        s
                    };
                    self.slots.push(slot);
                }
                self.phase = Phase::Stopping { level };
                self.progress(now, unix, &mut actions);
            }
            GroupEvent::Proc { tag, ev } => {
                let level = self.phase.level().unwrap_or("").to_string();
                let ctx = Ctx {
                    level: &level,
                    unix,
                };
                let by_pid = match &ev {
                    ProcEvent::Exited { pid, .. } => Some(*pid),
                    ProcEvent::Timer(TimerKind::Escalate { pid, .. }) => Some(*pid),
                    _ => None,
                };
                let retired_idx = by_pid.and_then(|pid| {
                    self.retired
                        .iter()
                        .position(|s| s.spec.tag == tag && s.proc.pid() == Some(pid))
                });
                if let Some(i) = retired_idx {
                    let slot = self.retired.remove(i);
                    let (s, a) = step_proc(slot, ev, now, &ctx);
                    actions.extend(a);
                    if s.proc.is_live() {
                        self.retired.insert(i, s);
                    }
                } else if let Some(i) = self.slots.iter().position(|s| s.spec.tag == tag) {
                    actions.extend(step_in_place(&mut self.slots[i], ev, now, &ctx));
                }
                self.progress(now, unix, &mut actions);
            }
            GroupEvent::Control { tag, op } => {
                let Some(i) = self.slots.iter().position(|s| s.spec.tag == tag) else {
                    return (self, actions);
                };
                let level = self.active_level().map(str::to_owned);
                let ctx = Ctx {
                    level: level.as_deref().unwrap_or(""),
                    unix,
                };
                let slot = &mut self.slots[i];
                let ev = match op {
                    Control::Stop { temporary } => {
                        slot.enable.run = false;
                        slot.enable.file &= temporary;
                        Some(ProcEvent::Stop)
                    }
                    Control::Start { temporary } => {
                        slot.enable.run = true;
                        slot.enable.file |= !temporary;
                        match slot.proc {
                            Proc::Backoff { .. } | Proc::GaveUp { .. } => Some(ProcEvent::Restart),
                            _ => None,
                        }
                    }
                    Control::Restart => Some(ProcEvent::Restart),
                };
                let wanted = level.as_deref().is_some_and(|l| slot.wanted(l));
                match ev {
                    Some(ProcEvent::Stop) => {
                        actions.extend(step_in_place(slot, ProcEvent::Stop, now, &ctx));
                    }
                    Some(ev) if wanted => actions.extend(step_in_place(slot, ev, now, &ctx)),
                    _ => {}
                }
                // Run the start sequence again: it starts what became
                // wanted, and what no longer blocks it.
                if let Phase::Settled { level, .. } = &self.phase {
                    self.phase = Phase::Starting {
                        level: level.clone(),
                    };
                }
                self.progress(now, unix, &mut actions);
            }
            GroupEvent::Restart => {
                if let Some(level) = self.active_level().map(str::to_owned) {
                    let ctx = Ctx {
                        level: &level,
                        unix,
                    };
                    for slot in &mut self.slots {
                        slot.restart_pending = false;
                        actions.extend(step_in_place(slot, ProcEvent::Stop, now, &ctx));
                    }
                    self.phase = Phase::Stopping { level };
                    self.progress(now, unix, &mut actions);
                }
            }
            GroupEvent::Halt => {
                let level = self.phase.level().map(str::to_string);
                let ctx = Ctx {
                    level: level.as_deref().unwrap_or(""),
                    unix,
                };
                for slot in std::mem::take(&mut self.slots) {
                    let mut slot = slot;
                    slot.restart_pending = false;
                    let (s, a) = step_proc(slot, ProcEvent::Stop, now, &ctx);
                    actions.extend(a);
                    self.slots.push(s);
                }
                self.phase = Phase::Halting { level };
            }
        }
        (self, actions)
    }

    /// Move the level switch forward as far as the entries allow.
    fn progress(&mut self, now: Instant, unix: i64, actions: &mut Vec<Action>) {
        if let Phase::Stopping { level } = &self.phase {
            if self.slots.iter().any(|s| {
                matches!(
                    s.proc,
                    Proc::Stopping { .. } | Proc::Spawning { stop_pending: true }
                )
            }) {
                return;
            }
            self.phase = Phase::Starting {
                level: level.clone(),
            };
        }
        let Phase::Starting { level } = &self.phase else {
            return;
        };
        let level = level.clone();
        let ctx = Ctx {
            level: &level,
            unix,
        };
        let mut pending = false;
        let mut failed = false;
        for i in 0..self.slots.len() {
            if !self.slots[i].wanted(&level) {
                continue;
            }
            let tag = &self.slots[i].spec.tag;
            if self.retired.iter().any(|r| &r.spec.tag == tag) {
                // Its old version is still stopping.
                pending = true;
                continue;
            }
            if matches!(self.slots[i].proc, Proc::Idle) {
                actions.extend(step_in_place(
                    &mut self.slots[i],
                    ProcEvent::Start,
                    now,
                    &ctx,
                ));
            }
            let slot = &self.slots[i];
            let fg = slot.spec.mode.is_foreground();
            match &slot.proc {
                Proc::Idle | Proc::Stopping { .. } => return,
                Proc::Spawning { .. } | Proc::Running { .. } if fg => return,
                Proc::Spawning { .. } => pending = true,
                Proc::Running { .. }
                | Proc::Backoff { .. }
                | Proc::GaveUp { .. }
                | Proc::Scheduled => {}
                Proc::Exited { status, .. } => {
                    if slot.spec.mode == Mode::Test && !status.success() {
                        failed = true;
                    }
                }
            }
        }
        if pending {
            return;
        }
        let outcome = outcome_of(&self.slots, &level, failed);
        self.phase = Phase::Settled { level, outcome };
    }

    /// Replace the group's entries after a reread. Entries whose command or
    /// mode changed, and deleted entries, are retired: stopped gracefully if
    /// they run, and the new version started once the old one has stopped.
    /// Unchanged entries keep their process, history and enable flags; one
    /// that is no longer of the current level is stopped.
    pub fn reconfigure(
        mut self,
        specs: Vec<Arc<Entry>>,
        now: Instant,
        unix: i64,
        disabled: &dyn Fn(&str) -> bool,
    ) -> (Group, Vec<Action>) {
        let mut actions = Vec::new();
        let level = self.phase.level().unwrap_or("").to_string();
        let ctx = Ctx {
            level: &level,
            unix,
        };
        let active = self.active_level().is_some();
        // Old slots by tag (tags are unique), each taken at most once: one
        // pass, whatever the size of the group. An entry found at its old
        // place needs no index; the index of old slots by tag is made only
        // when one is not (entries added, removed or moved).
        let mut old: Vec<Option<Slot>> = std::mem::take(&mut self.slots)
            .into_iter()
            .map(Some)
            .collect();
        let mut by_tag: Option<std::collections::HashMap<String, usize>> = None;
        // Grown once, not by doubling (a slot is large: each doubling
        // copied all of them, measured on a 90,000-entry reread).
        self.slots.reserve_exact(specs.len());
        for (pos, spec) in specs.into_iter().enumerate() {
            let in_place = old
                .get(pos)
                .and_then(Option::as_ref)
                .is_some_and(|s| s.spec.tag == spec.tag);
            let at = if in_place {
                Some(pos)
            } else {
                by_tag
                    .get_or_insert_with(|| {
                        old.iter()
                            .enumerate()
                            .filter_map(|(i, s)| s.as_ref().map(|s| (s.spec.tag.clone(), i)))
                            .collect()
                    })
                    .get(&spec.tag)
                    .copied()
            };
            let same = at.filter(|&i| {
                old[i]
                    .as_ref()
                    .is_some_and(|s| s.spec.command == spec.command && s.spec.mode == spec.mode)
            });
            match same.and_then(|i| old[i].take()) {
                Some(mut slot) => {
                    let rescheduled = slot.spec.opts.schedule != spec.opts.schedule;
                    slot.spec = spec;
                    if rescheduled && slot.proc == Proc::Scheduled {
                        slot.proc = Proc::Idle;
                        slot.next_run = None;
                    }
                    if active && !slot.wanted(&level) {
                        actions.extend(step_in_place(&mut slot, ProcEvent::Stop, now, &ctx));
                    }
                    self.slots.push(slot);
                }
                None => {
                    let mut slot = new_slot(spec, disabled);
                    slot.configured = Some(unix);
                    self.slots.push(slot);
                }
            }
        }
        for slot in old.into_iter().flatten() {
            let (s, a) = step_proc(slot, ProcEvent::Stop, now, &ctx);
            actions.extend(a);
            if s.proc.is_live() {
                self.retired.push(s);
            }
        }
        if let Phase::Settled { level, .. } = &self.phase {
            self.phase = Phase::Starting {
                level: level.clone(),
            };
        }
        self.progress(now, unix, &mut actions);
        (self, actions)
    }
}

fn new_slot(spec: Arc<Entry>, disabled: &dyn Fn(&str) -> bool) -> Slot {
    let mut slot = Slot::new(spec);
    if disabled(&slot.spec.tag) {
        slot.enable = Enable {
            file: false,
            run: false,
        };
    }
    slot
}

fn outcome_of(slots: &[Slot], level: &str, failed: bool) -> Outcome {
    if failed {
        return Outcome::Failed;
    }
    let mut wanted = slots.iter().filter(|s| s.wanted(level)).peekable();
    if wanted.peek().is_none() {
        return Outcome::Done;
    }
    let all_tests_passed = wanted.all(|s| {
        s.spec.mode == Mode::Test
            && matches!(s.proc, Proc::Exited { status, .. } if status.success())
    });
    if all_tests_passed {
        Outcome::Passed
    } else {
        Outcome::Done
    }
}

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;
