//! `clinit explain TAG|GROUP`: why an entry runs or does not, why a group
//! is where it is — as facts with fields (`--json`) and as sentences.
//!
//! Pure: the facts are read from the supervisor's state, the operator's
//! notes and the recent events, at a given `now`; table-tested without a
//! daemon.

use crate::cltab::Mode;
use crate::events::{Event, EventKind};
use crate::schedule::ctime;
use crate::supervisor::machine::{ExitStatus, Group, Phase, Proc, Slot, StopPhase};
use crate::supervisor::{Now, Supervisor};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Everything `explain` says about one entry or group.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Explanation {
    /// `entry` or `group`.
    pub subject: String,
    pub name: String,
    /// The entry's group (the group itself for a group).
    pub group: String,
    /// An entry: a process of it exists now. A group: any of its entries'.
    pub running: bool,
    pub facts: Vec<Fact>,
}

/// One fact, with its fields; [`Fact::sentence`] says it in words. Times
/// are Unix seconds.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "fact", rename_all = "snake_case")]
pub enum Fact {
    /// The entry's process runs.
    Running { pid: i32, since: i64 },
    /// Its process is being started.
    Starting,
    /// Its process is being stopped; `signal` is the last one sent.
    Stopping { pid: i32, signal: String },
    /// Mode `off`: it never runs.
    ModeOff,
    /// The group was never told a level in this daemon run.
    GroupNotTold { group: String },
    /// The daemon is shutting down.
    Halting,
    /// Cluster mode: the group is exclusive; `owner` runs it (with
    /// `token`), or no node does; `here` is this node.
    Exclusive {
        group: String,
        owner: Option<String>,
        token: Option<i64>,
        here: String,
    },
    /// The group is at `level`, which is not one of the entry's `levels`.
    NotAtLevel {
        group: String,
        level: String,
        levels: String,
    },
    /// The group is at `level`, one of the entry's `levels`.
    AtLevel {
        group: String,
        level: String,
        levels: String,
    },
    /// An operator stopped it: persistently (until `clinit start`) or
    /// until the daemon restarts.
    StoppedByOperator {
        by: String,
        at: Option<i64>,
        persistent: bool,
    },
    /// An operator started it for this daemon run only; it is stopped
    /// across restarts.
    StartedTemporarily { by: String, at: Option<i64> },
    /// A respawn delay: `rapid` rapid restarts in a row, next try at
    /// `next_try`, after a delay of `delay_s` (when known).
    Throttled {
        rapid: u32,
        next_try: i64,
        delay_s: Option<f64>,
    },
    /// It stopped restarting after `rapid` rapid restarts (`limit`).
    GaveUp {
        rapid: u32,
        limit: Option<u32>,
        status: ExitStatus,
    },
    /// It ran and exited; entries of its mode are not restarted.
    Exited {
        status: ExitStatus,
        at: Option<i64>,
        mode: String,
    },
    /// A cron entry between runs.
    Scheduled {
        schedule: String,
        next_run: Option<i64>,
    },
    /// The last exit of its process.
    LastExit { status: ExitStatus, at: i64 },
    /// The group's start sequence waits for this foreground entry.
    WaitingFor {
        tag: String,
        mode: String,
        running_s: Option<u64>,
    },
    /// The old version of this entry (changed by a reread) is still
    /// stopping; the new one starts after.
    OldVersionStopping { pid: Option<i32> },
    /// A reread added or changed its cltab line.
    ChangedByReread { at: i64, file: String, line: usize },
    /// A group's level and state.
    GroupLevel {
        level: Option<String>,
        state: String,
    },
    /// Who last told the group a level (from the recent events).
    ToldBy { level: String, by: String, at: i64 },
    /// A group's entries: how many, how many of its level, how many run.
    Entries {
        total: usize,
        of_level: usize,
        running: usize,
    },
    /// A `test` entry failed, so the group is FAILED.
    TestFailed { tag: String, status: ExitStatus },
    /// Entries still stopping (the group is STOPPING).
    StillStopping { tags: Vec<String> },
}

fn when(at: i64, now: i64) -> String {
    let d = now - at;
    let ago = if d < 0 {
        format!("in {} s", -d)
    } else if d < 120 {
        format!("{d} s ago")
    } else if d < 7200 {
        format!("{} min ago", d / 60)
    } else {
        format!("{} h ago", d / 3600)
    };
    format!("{} ({ago})", ctime(at))
}

fn by_at(by: &str, at: Option<i64>, now: i64) -> String {
    let who = if by.is_empty() { "an operator" } else { by };
    match at {
        Some(at) => format!("{who}, {}", when(at, now)),
        None => who.to_string(),
    }
}

fn levels_words(levels: &str) -> String {
    if levels.contains(',') {
        format!(
            "levels {}",
            levels
                .split(',')
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join(", ")
        )
    } else if levels.chars().count() > 1 {
        let v: Vec<String> = levels.chars().map(|c| c.to_string()).collect();
        let (last, rest) = v
            .split_last()
            .map(|(l, r)| (l.clone(), r.join(", ")))
            .unwrap_or_default();
        format!("levels {rest} and {last}")
    } else {
        format!("level {levels}")
    }
}

impl Fact {
    /// The fact in a sentence; `now` for relative times.
    pub fn sentence(&self, name: &str, now: i64) -> String {
        match self {
            Fact::Running { pid, since } => {
                format!(
                    "{name} is running as pid {pid} since {}.",
                    when(*since, now)
                )
            }
            Fact::Starting => format!("{name} is being started."),
            Fact::Stopping { pid, signal } => {
                format!("{name} (pid {pid}) is being stopped; clinit sent it {signal}.")
            }
            Fact::ModeOff => format!("{name} has mode off: it never runs."),
            Fact::GroupNotTold { group } => format!(
                "group {group} has not been told a level since the daemon started (no goal was stored), so none of its entries runs; `clinit {group} LEVEL` starts it."
            ),
            Fact::Halting => "the daemon is shutting down: every entry is being stopped.".into(),
            Fact::Exclusive {
                group,
                owner,
                token,
                here,
            } => match (owner, token) {
                (Some(o), Some(t)) if o == here => format!(
                    "group {group} is exclusive: this node ({here}) owns it (fencing token {t}) and runs it at the cluster's goal."
                ),
                (Some(o), Some(t)) => format!(
                    "group {group} is exclusive: node {o} owns it (fencing token {t}), so nothing of it runs on this node ({here}); `clinit cluster move {group} {here}` moves it here."
                ),
                _ => format!(
                    "group {group} is exclusive and no node owns it now: the most preferred live eligible node takes it (`clinit cluster status`)."
                ),
            },
            Fact::NotAtLevel {
                group,
                level,
                levels,
            } => format!(
                "group {group} is at level {level}, and {name} runs at {} only.",
                levels_words(levels)
            ),
            Fact::AtLevel {
                group,
                level,
                levels,
            } => format!(
                "group {group} is at level {level}, one of the levels of {name} ({}).",
                levels_words(levels)
            ),
            Fact::StoppedByOperator {
                by,
                at,
                persistent: true,
            } => format!(
                "{name} was stopped by {} and stays stopped, across level switches and daemon restarts, until `clinit start {name}`.",
                by_at(by, *at, now)
            ),
            Fact::StoppedByOperator {
                by,
                at,
                persistent: false,
            } => format!(
                "{name} was stopped by {} until `clinit start {name}` or a daemon restart (--temporary).",
                by_at(by, *at, now)
            ),
            Fact::StartedTemporarily { by, at } => format!(
                "{name} was started by {} for this daemon run only: it is stopped again after a daemon restart.",
                by_at(by, *at, now)
            ),
            Fact::Throttled {
                rapid,
                next_try,
                delay_s,
            } => match delay_s {
                Some(d) => format!(
                    "{name} is in a respawn delay of {d:.0} s after {rapid} rapid restarts in a row; next try at {}.",
                    when(*next_try, now)
                ),
                None => format!(
                    "{name} is in a respawn delay after {rapid} rapid restarts in a row; next try at {}.",
                    when(*next_try, now)
                ),
            },
            Fact::GaveUp {
                rapid,
                limit,
                status,
            } => format!(
                "{name} gave up after {rapid} rapid restarts in a row{} (last {status}); `clinit start {name}` tries again.",
                limit
                    .map(|l| format!(" (respawn_give_up {l})"))
                    .unwrap_or_default()
            ),
            Fact::Exited { status, at, mode } => format!(
                "{name} ran and exited with {status}{}; a {mode} entry is not restarted (until its group is told a level again, or `clinit restart {name}`).",
                at.map(|t| format!(" at {}", when(t, now)))
                    .unwrap_or_default()
            ),
            Fact::Scheduled { schedule, next_run } => match next_run {
                Some(t) => format!(
                    "{name} is a cron entry ({schedule}); its next run is at {}.",
                    when(*t, now)
                ),
                None => format!("{name} is a cron entry ({schedule}) with no next run."),
            },
            Fact::LastExit { status, at } => {
                format!(
                    "the last exit of {name} was {status} at {}.",
                    when(*at, now)
                )
            }
            Fact::WaitingFor {
                tag,
                mode,
                running_s,
            } => format!(
                "the group is waiting for the {mode} entry {tag}{} before it starts the entries after it.",
                running_s
                    .map(|s| format!(" (running for {s} s)"))
                    .unwrap_or_default()
            ),
            Fact::OldVersionStopping { pid } => format!(
                "the old version of {name}{} (changed by a reread) is still stopping; the new one starts when it has stopped.",
                pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
            ),
            Fact::ChangedByReread { at, file, line } => format!(
                "the cltab line of {name} ({file}:{line}) was changed by a reread at {}.",
                when(*at, now)
            ),
            Fact::GroupLevel { level, state } => match level {
                Some(l) => format!("group {name} is at level {l}, state {state}."),
                None => format!("group {name} has no level (state {state})."),
            },
            Fact::ToldBy { level, by, at } => format!(
                "group {name} was told level {level} by {}.",
                by_at(by, Some(*at), now)
            ),
            Fact::Entries {
                total,
                of_level,
                running,
            } => format!(
                "group {name} has {total} {}; {of_level} of them {} enabled at its level, {running} {} now.",
                if *total == 1 { "entry" } else { "entries" },
                if *of_level == 1 { "is" } else { "are" },
                if *running == 1 { "runs" } else { "run" }
            ),
            Fact::TestFailed { tag, status } => {
                format!("group {name} is FAILED because the test entry {tag} exited with {status}.")
            }
            Fact::StillStopping { tags } => {
                format!("group {name} is waiting for {} to stop.", tags.join(", "))
            }
        }
    }
}

impl Explanation {
    /// Every fact in a sentence, one per line (names keep their case, so
    /// a sentence may start in lower case).
    pub fn sentences(&self, now: i64) -> Vec<String> {
        self.facts
            .iter()
            .map(|f| f.sentence(&self.name, now))
            .collect()
    }
}

/// The foreground entry that holds a group's start sequence back, if any.
fn waiting_for(g: &Group, now: Now) -> Option<Fact> {
    let Phase::Starting { level } = &g.phase else {
        return None;
    };
    g.slots
        .iter()
        .filter(|s| s.wanted(level) && s.spec.mode.is_foreground())
        .find_map(|s| match &s.proc {
            Proc::Running { since, .. } => Some(Fact::WaitingFor {
                tag: s.spec.tag.clone(),
                mode: s.spec.mode.to_string(),
                running_s: Some(now.at.saturating_duration_since(*since).as_secs()),
            }),
            Proc::Spawning { .. } => Some(Fact::WaitingFor {
                tag: s.spec.tag.clone(),
                mode: s.spec.mode.to_string(),
                running_s: None,
            }),
            _ => None,
        })
}

/// The delay of the last throttle of `tag`, from the recent events.
fn throttle_delay(tag: &str, events: &[Arc<Event>]) -> Option<f64> {
    events.iter().find_map(|e| match &e.kind {
        EventKind::Throttled {
            tag: t, delay_ms, ..
        } if t == tag => Some(*delay_ms as f64 / 1000.0),
        _ => None,
    })
}

/// Explain entry `tag`; `None` if there is no such entry. `events` are the
/// recent events, newest first.
pub fn entry(sup: &Supervisor, tag: &str, events: &[Arc<Event>], now: Now) -> Option<Explanation> {
    let (g, slot) = sup.entry(tag)?;
    let mut facts = Vec::new();
    let spec = &slot.spec;
    let levels = spec.levels.as_str().to_string();
    let wall = |t: std::time::Instant| now.wall_of(t).floor() as i64;
    // What its process does.
    match &slot.proc {
        Proc::Running { pid, since } => facts.push(Fact::Running {
            pid: *pid,
            since: wall(*since),
        }),
        Proc::Spawning { .. } => facts.push(Fact::Starting),
        Proc::Stopping { pid, phase, .. } => facts.push(Fact::Stopping {
            pid: *pid,
            signal: match phase {
                StopPhase::First => spec.opts.timing.stop_signal.as_str().to_string(),
                StopPhase::Term => "SIGTERM".into(),
                StopPhase::Kill => "SIGKILL".into(),
            },
        }),
        Proc::Backoff { until, .. } => facts.push(Fact::Throttled {
            rapid: slot.stats.rapid,
            next_try: wall(*until),
            delay_s: throttle_delay(tag, events),
        }),
        Proc::GaveUp { status } => facts.push(Fact::GaveUp {
            rapid: slot.stats.rapid,
            limit: spec.opts.timing.respawn.give_up,
            status: *status,
        }),
        Proc::Exited { status, .. } => facts.push(Fact::Exited {
            status: *status,
            at: slot.stats.last_exit.map(|(_, t)| t),
            mode: spec.mode.to_string(),
        }),
        Proc::Scheduled => facts.push(Fact::Scheduled {
            schedule: spec
                .opts
                .schedule
                .as_ref()
                .map(|s| s.as_str().to_string())
                .unwrap_or_default(),
            next_run: slot.next_run.map(|n| n.unix),
        }),
        Proc::Idle => {}
    }
    // Why, from the outside in: the mode, the group's level, the operator.
    if spec.mode == Mode::Off {
        facts.push(Fact::ModeOff);
    }
    match (&g.phase, g.active_level()) {
        (Phase::Halting { .. }, _) => facts.push(Fact::Halting),
        (_, None) => facts.push(Fact::GroupNotTold {
            group: g.name.clone(),
        }),
        (_, Some(level)) if spec.mode != Mode::Off => {
            let fact = if spec.wanted_at(level) {
                Fact::AtLevel {
                    group: g.name.clone(),
                    level: level.to_string(),
                    levels,
                }
            } else {
                Fact::NotAtLevel {
                    group: g.name.clone(),
                    level: level.to_string(),
                    levels,
                }
            };
            facts.push(fact);
        }
        _ => {}
    }
    let note = sup.operator_note(tag);
    let (by, at) = note
        .map(|n| (n.by.clone(), n.at))
        .unwrap_or((String::new(), None));
    match (slot.enable.file, slot.enable.run) {
        (false, false) => facts.push(Fact::StoppedByOperator {
            by,
            at,
            persistent: true,
        }),
        (true, false) => facts.push(Fact::StoppedByOperator {
            by,
            at,
            persistent: false,
        }),
        (false, true) => facts.push(Fact::StartedTemporarily { by, at }),
        (true, true) => {}
    }
    // What holds it back inside its group.
    if matches!(slot.proc, Proc::Idle) {
        if let Some(old) = sup.retired(tag).next() {
            facts.push(Fact::OldVersionStopping {
                pid: old.proc.pid(),
            });
        } else if g.active_level().is_some_and(|l| slot.wanted(l))
            && let Some(w) = waiting_for(g, now)
        {
            facts.push(w);
        }
    }
    // History.
    if !matches!(slot.proc, Proc::Exited { .. })
        && let Some((status, at)) = slot.stats.last_exit
    {
        facts.push(Fact::LastExit { status, at });
    }
    if let Some(at) = sup.configured_at(tag) {
        facts.push(Fact::ChangedByReread {
            at,
            file: sup.cltab.path.display().to_string(),
            line: spec.line,
        });
    }
    Some(Explanation {
        subject: "entry".into(),
        name: tag.to_string(),
        group: g.name.clone(),
        running: slot.proc.is_live(),
        facts,
    })
}

fn is_running(s: &Slot) -> bool {
    s.proc.is_live()
}

/// Explain group `name`; `None` if there is no such group. `events` are
/// the recent events, newest first.
pub fn group(sup: &Supervisor, name: &str, events: &[Arc<Event>], now: Now) -> Option<Explanation> {
    let g = sup.group(name)?;
    let mut facts = vec![Fact::GroupLevel {
        level: g.phase.level().map(str::to_string),
        state: g.state().as_str().to_string(),
    }];
    if let Some((level, by, at)) = events.iter().find_map(|e| match &e.kind {
        EventKind::Told { group, level, by } if group == name => {
            Some((level.clone(), by.clone(), e.time.floor() as i64))
        }
        _ => None,
    }) {
        facts.push(Fact::ToldBy { level, by, at });
    }
    match (&g.phase, g.active_level()) {
        (Phase::Halting { .. }, _) => facts.push(Fact::Halting),
        (_, None) => facts.push(Fact::GroupNotTold {
            group: g.name.clone(),
        }),
        _ => {}
    }
    let of_level = g
        .active_level()
        .map_or(0, |l| g.slots.iter().filter(|s| s.wanted(l)).count());
    facts.push(Fact::Entries {
        total: g.slots.len(),
        of_level,
        running: g.slots.iter().filter(|s| is_running(s)).count(),
    });
    if let Some(w) = waiting_for(g, now) {
        facts.push(w);
    }
    if let Phase::Settled {
        level,
        outcome: crate::supervisor::machine::Outcome::Failed,
    } = &g.phase
    {
        for s in g.slots.iter().filter(|s| s.wanted(level)) {
            if let (Mode::Test, Proc::Exited { status, .. }) = (s.spec.mode, &s.proc)
                && !status.success()
            {
                facts.push(Fact::TestFailed {
                    tag: s.spec.tag.clone(),
                    status: *status,
                });
            }
        }
    }
    let stopping: Vec<String> = g
        .slots
        .iter()
        .chain(g.retired.iter())
        .filter(|s| matches!(s.proc, Proc::Stopping { .. }))
        .map(|s| s.spec.tag.clone())
        .collect();
    if !stopping.is_empty() {
        facts.push(Fact::StillStopping { tags: stopping });
    }
    Some(Explanation {
        subject: "group".into(),
        name: name.to_string(),
        group: name.to_string(),
        running: g.slots.iter().chain(g.retired.iter()).any(is_running),
        facts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::machine::Control;
    use crate::supervisor::sim::Sim;

    const TAB: &str = "\
web:prep:3:wait:prep
web:app:13:respawn:app
web:flaky:3:respawn:flaky
web:one:3:once:one
web:never:3:off:never
:flaky::respawn_burst:1
:flaky::respawn_give_up:3
db:check:1:test:check
db:dbd:1:respawn:dbd
";

    fn names(x: &Explanation) -> Vec<String> {
        x.facts
            .iter()
            .map(|f| {
                serde_json::to_value(f).unwrap()["fact"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect()
    }

    /// Run `setup` on a fresh simulation, explain `name` (an entry, or a
    /// group when `group`), and compare the facts in order and one
    /// sentence that must appear.
    #[test]
    fn why_an_entry_or_group_runs_or_not() {
        type Setup = fn(&mut Sim);
        /// (case, name, a group?, setup, facts, a sentence)
        type Row<'a> = (&'a str, &'a str, bool, Setup, &'a [&'a str], &'a str);
        let rows: &[Row] = &[
            (
                "group never told",
                "app",
                false,
                |_| {},
                &["group_not_told"],
                "group web has not been told a level since the daemon started",
            ),
            (
                "group at another level",
                "app",
                false,
                |s| s.tell("web", "2"),
                &["not_at_level"],
                "group web is at level 2, and app runs at levels 1 and 3 only.",
            ),
            (
                "waiting for the wait entry",
                "app",
                false,
                |s| {
                    s.tell("web", "3");
                    s.advance(12_000);
                },
                &["at_level", "waiting_for"],
                "the group is waiting for the wait entry prep (running for 12 s)",
            ),
            (
                "running",
                "app",
                false,
                |s| {
                    s.tell("web", "3");
                    s.exit("prep", ExitStatus::Code(0));
                },
                &["running", "at_level"],
                "app is running as pid",
            ),
            (
                "stopped by an operator",
                "app",
                false,
                |s| {
                    s.tell("web", "3");
                    s.exit("prep", ExitStatus::Code(0));
                    s.control("app", Control::Stop { temporary: false });
                },
                &["stopping", "at_level", "stopped_by_operator"],
                "app was stopped by root (uid 0), ",
            ),
            (
                "stopped by an operator, process gone",
                "app",
                false,
                |s| {
                    s.tell("web", "3");
                    s.exit("prep", ExitStatus::Code(0));
                    s.control("app", Control::Stop { temporary: false });
                    s.exit("app", ExitStatus::Signal(2));
                },
                &["at_level", "stopped_by_operator", "last_exit"],
                "stays stopped, across level switches and daemon restarts, until `clinit start app`",
            ),
            (
                "throttled after rapid restarts",
                "flaky",
                false,
                |s| {
                    s.tell("web", "3");
                    s.exit("prep", ExitStatus::Code(0));
                    s.exit("flaky", ExitStatus::Code(1));
                    s.exit("flaky", ExitStatus::Code(1));
                },
                &["throttled", "at_level", "last_exit"],
                "flaky is in a respawn delay after 2 rapid restarts in a row; next try at",
            ),
            (
                "gave up",
                "flaky",
                false,
                |s| {
                    s.tell("web", "3");
                    s.exit("prep", ExitStatus::Code(0));
                    // Quick exits; each throttle delay (1 s, then 2 s)
                    // passes before the next start.
                    s.exit("flaky", ExitStatus::Code(1));
                    s.exit("flaky", ExitStatus::Code(1));
                    s.advance(1_000);
                    s.exit("flaky", ExitStatus::Code(1));
                    s.advance(2_000);
                    s.exit("flaky", ExitStatus::Code(1));
                },
                &["gave_up", "at_level", "last_exit"],
                "flaky gave up after 4 rapid restarts in a row (respawn_give_up 3) (last exit code 1); `clinit start flaky` tries again.",
            ),
            (
                "last exit was a signal",
                "app",
                false,
                |s| {
                    s.tell("web", "3");
                    s.exit("prep", ExitStatus::Code(0));
                    s.advance(30_000);
                    s.exit("app", ExitStatus::Signal(9));
                },
                &["running", "at_level", "last_exit"],
                "the last exit of app was signal 9 at",
            ),
            (
                "once entry that exited",
                "one",
                false,
                |s| {
                    s.tell("web", "3");
                    s.exit("prep", ExitStatus::Code(0));
                    s.exit("one", ExitStatus::Code(0));
                },
                &["exited", "at_level"],
                "one ran and exited with exit code 0 at",
            ),
            (
                "mode off",
                "never",
                false,
                |s| s.tell("web", "3"),
                &["mode_off"],
                "never has mode off: it never runs.",
            ),
            (
                "changed by a reread, old version stopping",
                "app",
                false,
                |s| {
                    s.tell("web", "3");
                    s.exit("prep", ExitStatus::Code(0));
                    s.reread(&TAB.replace("web:app:13:respawn:app", "web:app:13:respawn:app2"));
                },
                &["at_level", "old_version_stopping", "changed_by_reread"],
                "the cltab line of app (cltab:2) was changed by a reread at",
            ),
            (
                "group settled",
                "web",
                true,
                |s| {
                    s.tell("web", "3");
                    s.exit("prep", ExitStatus::Code(0));
                },
                &["group_level", "entries"],
                "group web has 5 entries; 4 of them are enabled at its level, 3 run now.",
            ),
            (
                "group waiting for its wait entry",
                "web",
                true,
                |s| s.tell("web", "3"),
                &["group_level", "entries", "waiting_for"],
                "group web is at level 3, state STARTING.",
            ),
            (
                "group failed by its test",
                "db",
                true,
                |s| {
                    s.tell("db", "1");
                    s.exit("check", ExitStatus::Code(2));
                },
                &["group_level", "entries", "test_failed"],
                "group db is FAILED because the test entry check exited with exit code 2.",
            ),
            (
                "group halting",
                "db",
                true,
                |s| {
                    s.tell("db", "1");
                    let a = s.sup.halt(s.now);
                    s.perform(a);
                },
                &["group_level", "halting", "entries", "still_stopping"],
                "group db is waiting for check to stop.",
            ),
        ];
        for (case, name, is_group, setup, want, sentence) in rows {
            let mut s = Sim::new(TAB);
            setup(&mut s);
            let x = if *is_group {
                group(&s.sup, name, &[], s.now)
            } else {
                entry(&s.sup, name, &[], s.now)
            }
            .unwrap_or_else(|| panic!("{case}: no such {name}"));
            assert_eq!(names(&x), *want, "{case}");
            let all = x.sentences(s.now.unix).join("\n");
            assert!(all.contains(sentence), "{case}: {all}");
        }
    }

    #[test]
    fn unknown_names_and_told_by_from_events() {
        let mut s = Sim::new(TAB);
        assert!(entry(&s.sup, "web", &[], s.now).is_none(), "web is a group");
        assert!(
            group(&s.sup, "app", &[], s.now).is_none(),
            "app is an entry"
        );
        assert!(entry(&s.sup, "nope", &[], s.now).is_none());
        s.tell("db", "1");
        let told = Arc::new(Event::new(
            4,
            1_800_000_100.0,
            EventKind::Told {
                group: "db".into(),
                level: "1".into(),
                by: "alice (uid 1000)".into(),
            },
        ));
        let x = group(&s.sup, "db", &[told], s.now).unwrap();
        assert!(names(&x).contains(&"told_by".to_string()));
        let all = x.sentences(1_800_000_160).join("\n");
        assert!(
            all.contains("group db was told level 1 by alice (uid 1000), ")
                && all.contains("(60 s ago)"),
            "{all}"
        );
    }
}
