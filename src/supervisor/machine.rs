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

use crate::cltab::{Entry, Mode};
use crate::config::Timing;
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

/// Which stop signal was sent last.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopPhase {
    Int,
    Term,
    Kill,
}

impl StopPhase {
    pub fn signal(self) -> Signal {
        match self {
            StopPhase::Int => Signal::SIGINT,
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

/// Per-entry history, kept across states.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub starts: u32,
    /// Automatic restarts of a respawn entry.
    pub restarts: u32,
    /// Rapid restarts in a row (runs shorter than `respawn_fast`).
    pub rapid: u32,
    pub last_start: Option<Instant>,
    pub last_exit: Option<(ExitStatus, Instant)>,
}

/// One entry of a group: its cltab line, process state and history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slot {
    pub spec: Arc<Entry>,
    pub proc: Proc,
    pub stats: Stats,
}

impl Slot {
    pub fn new(spec: Arc<Entry>) -> Slot {
        Slot {
            spec,
            proc: Proc::Idle,
            stats: Stats::default(),
        }
    }
}

/// Timers the machines arm; each names what it was armed for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TimerKind {
    /// Send the next stop signal (`to`) if `pid` is still stopping in the phase before.
    Escalate { pid: Pid, to: StopPhase },
    /// End a respawn throttle delay.
    Backoff { until: Instant },
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
    },
    Log {
        level: LogLevel,
        message: String,
    },
}

/// Events for one entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProcEvent {
    Start,
    Spawned { pid: Pid },
    SpawnFailed,
    Exited { pid: Pid, status: ExitStatus },
    Stop,
    Timer(TimerKind),
}

/// What the entry machine needs to know about its surroundings.
pub struct Ctx<'a> {
    pub level: &'a str,
    pub timing: &'a Timing,
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
        signal: phase.signal(),
    }
}

fn sweep(slot: &Slot) -> Action {
    Action::SweepLeftovers {
        group: slot.spec.group.clone(),
        tag: slot.spec.tag.clone(),
    }
}

/// Begin a graceful stop of a running process: SIGINT now, SIGTERM later.
fn begin_stop(
    slot: &Slot,
    pid: Pid,
    since: Instant,
    now: Instant,
    ctx: &Ctx,
) -> (Proc, Vec<Action>) {
    (
        Proc::Stopping {
            pid,
            since,
            phase: StopPhase::Int,
        },
        vec![
            signal(slot, pid, StopPhase::Int),
            timer(
                slot,
                now + ctx.timing.term_after,
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
pub fn respawn_delay(rapid: u32, ran: Duration, timing: &Timing) -> (u32, Option<Duration>) {
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

/// The entry machine: one event applied to one slot.
pub fn step_proc(mut slot: Slot, ev: ProcEvent, now: Instant, ctx: &Ctx) -> (Slot, Vec<Action>) {
    let mut actions = Vec::new();
    let proc = std::mem::replace(&mut slot.proc, Proc::Idle);
    let next = match (proc, ev) {
        (Proc::Idle, ProcEvent::Start) => {
            actions.push(spawn(&slot, ctx));
            Proc::Spawning {
                stop_pending: false,
            }
        }
        (Proc::Spawning { stop_pending }, ProcEvent::Spawned { pid }) => {
            slot.stats.starts += 1;
            slot.stats.last_start = Some(now);
            if stop_pending {
                let (p, a) = begin_stop(&slot, pid, now, now, ctx);
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
            slot.stats.last_start = Some(now);
            slot.stats.last_exit = Some((status, now));
            if stop_pending {
                Proc::Idle
            } else {
                after_exit(&mut slot, status, Duration::ZERO, now, ctx, &mut actions)
            }
        }
        (Proc::Running { pid, since }, ProcEvent::Exited { pid: p, status }) if p == pid => {
            slot.stats.last_exit = Some((status, now));
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
            let (p, a) = begin_stop(&slot, pid, since, now, ctx);
            actions.extend(a);
            p
        }
        (Proc::Stopping { pid, .. }, ProcEvent::Exited { pid: p, status }) if p == pid => {
            slot.stats.last_exit = Some((status, now));
            actions.push(sweep(&slot));
            Proc::Idle
        }
        (
            Proc::Stopping { pid, since, phase },
            ProcEvent::Timer(TimerKind::Escalate { pid: p, to }),
        ) if p == pid => {
            let expected = match phase {
                StopPhase::Int => Some(StopPhase::Term),
                StopPhase::Term => Some(StopPhase::Kill),
                StopPhase::Kill => None,
            };
            if expected == Some(to) {
                actions.push(signal(&slot, pid, to));
                if to == StopPhase::Term {
                    actions.push(timer(
                        &slot,
                        now + ctx.timing.kill_after,
                        TimerKind::Escalate {
                            pid,
                            to: StopPhase::Kill,
                        },
                    ));
                }
                actions.push(Action::Log {
                    level: LogLevel::Warn,
                    message: format!(
                        "{}:{} (pid {pid}) still running; sent {}",
                        slot.spec.group,
                        slot.spec.tag,
                        to.signal().as_str()
                    ),
                });
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
        (Proc::Backoff { .. }, ProcEvent::Stop) => Proc::Idle,
        (Proc::Backoff { until, .. }, ProcEvent::Timer(TimerKind::Backoff { until: u }))
            if u == until =>
        {
            actions.push(Action::Log {
                level: LogLevel::Info,
                message: format!(
                    "{}:{} throttle delay over; starting it again",
                    slot.spec.group, slot.spec.tag
                ),
            });
            actions.push(spawn(&slot, ctx));
            Proc::Spawning {
                stop_pending: false,
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
    if slot.spec.mode != Mode::Respawn {
        return Proc::Exited { status, at: now };
    }
    let (rapid, delay) = respawn_delay(slot.stats.rapid, ran, ctx.timing);
    slot.stats.rapid = rapid;
    slot.stats.restarts += 1;
    match delay {
        None => {
            actions.push(spawn(slot, ctx));
            Proc::Spawning {
                stop_pending: false,
            }
        }
        Some(delay) => {
            let until = now + delay;
            actions.push(Action::Log {
                level: LogLevel::Warn,
                message: format!(
                    "{}:{} respawning too rapidly ({rapid} quick exits in a row, last {status}); throttled: next start in {:.1}s",
                    slot.spec.group,
                    slot.spec.tag,
                    delay.as_secs_f64()
                ),
            });
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
    pub fn new(name: &str, specs: impl IntoIterator<Item = Arc<Entry>>) -> Group {
        Group {
            name: name.to_string(),
            slots: specs.into_iter().map(Slot::new).collect(),
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

    pub fn step(mut self, ev: GroupEvent, now: Instant, timing: &Timing) -> (Group, Vec<Action>) {
        let mut actions = Vec::new();
        match ev {
            GroupEvent::Tell { level } => {
                let ctx = Ctx {
                    level: &level,
                    timing,
                };
                for slot in std::mem::take(&mut self.slots) {
                    let slot = if slot.spec.wanted_at(&level) {
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
                self.progress(now, timing, &mut actions);
            }
            GroupEvent::Proc { tag, ev } => {
                let level = self.phase.level().unwrap_or("").to_string();
                let ctx = Ctx {
                    level: &level,
                    timing,
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
                self.progress(now, timing, &mut actions);
            }
            GroupEvent::Halt => {
                let level = self.phase.level().map(str::to_string);
                let ctx = Ctx {
                    level: level.as_deref().unwrap_or(""),
                    timing,
                };
                for slot in std::mem::take(&mut self.slots) {
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
    fn progress(&mut self, now: Instant, timing: &Timing, actions: &mut Vec<Action>) {
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
            timing,
        };
        let mut pending = false;
        let mut failed = false;
        for i in 0..self.slots.len() {
            if !self.slots[i].spec.wanted_at(&level) {
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
                Proc::Running { .. } | Proc::Backoff { .. } => {}
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
    /// they run. Unchanged entries keep their process and history.
    pub fn reconfigure(
        mut self,
        specs: Vec<Arc<Entry>>,
        now: Instant,
        timing: &Timing,
    ) -> (Group, Vec<Action>) {
        let mut actions = Vec::new();
        let level = self.phase.level().unwrap_or("").to_string();
        let ctx = Ctx {
            level: &level,
            timing,
        };
        let mut old = std::mem::take(&mut self.slots);
        for spec in specs {
            let same = old.iter().position(|s| {
                s.spec.tag == spec.tag && s.spec.command == spec.command && s.spec.mode == spec.mode
            });
            match same {
                Some(i) => {
                    let mut slot = old.remove(i);
                    slot.spec = spec;
                    self.slots.push(slot);
                }
                None => self.slots.push(Slot::new(spec)),
            }
        }
        for slot in old {
            let (s, a) = step_proc(slot, ProcEvent::Stop, now, &ctx);
            actions.extend(a);
            if s.proc.is_live() {
                self.retired.push(s);
            }
        }
        self.progress(now, timing, &mut actions);
        (self, actions)
    }
}

fn outcome_of(slots: &[Slot], level: &str, failed: bool) -> Outcome {
    if failed {
        return Outcome::Failed;
    }
    let mut wanted = slots.iter().filter(|s| s.spec.wanted_at(level)).peekable();
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
