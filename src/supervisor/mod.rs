//! Supervision: groups, processes, runlevel switching.
//!
//! [`machine`] holds the pure state machines; [`Supervisor`] routes events to
//! the right group (still pure) and reports what changed ([`Change`]) and
//! what must be kept ([`StoreOp`]); [`executor`] performs the actions and
//! [`leftovers`] stops the children of a previous, killed daemon.
//!
//! Nothing here builds protocol types: status views are made at the edge
//! (`daemon::view`).

pub mod cgroup;
pub mod executor;
pub mod leftovers;
pub mod machine;
pub mod relay;
#[cfg(test)]
pub mod sim;
pub mod spawn;
pub mod usage;

use crate::cltab::Cltab;
use crate::store::StoreOp;
use machine::{Action, Control, ExitStatus, Group, GroupEvent, GroupState, Pid, Proc, ProcEvent};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The present moment, as the machines see it: a monotonic instant for
/// timers and the wall clock for history and schedules (`unix` in seconds,
/// `wall_us` the same moment in microseconds, for views).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    pub at: Instant,
    pub unix: i64,
    pub wall_us: i64,
}

impl Now {
    pub fn real() -> Now {
        let wall_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as i64)
            .unwrap_or(0);
        Now {
            at: Instant::now(),
            unix: wall_us.div_euclid(1_000_000),
            wall_us,
        }
    }

    /// The wall-clock time (Unix seconds, with fraction) of instant `t`.
    pub fn wall_of(&self, t: Instant) -> f64 {
        let wall = self.wall_us as f64 / 1e6;
        if t <= self.at {
            wall - (self.at - t).as_secs_f64()
        } else {
            wall + (t - self.at).as_secs_f64()
        }
    }
}

pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Why an operator's request about an entry was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ControlError {
    #[error("no such entry: {0}")]
    NoSuchEntry(String),
    /// `restart` of an entry that would not run: nothing was started.
    #[error("{tag} was not restarted: {why}")]
    NotStarted { tag: String, why: String },
}

/// What an operator last did to an entry, for `clinit explain`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperatorNote {
    pub action: Control,
    /// Who, as the access check described them ("root (uid 0)"); empty
    /// when not known.
    pub by: String,
    /// Unix seconds; `None` when not known.
    pub at: Option<i64>,
}

/// What a reread changed: tags added, changed (command or mode) and
/// removed, in cltab order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RereadDiff {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
}

/// A change the supervisor made, reported once, as a value. The daemon
/// fans these out to the status file, to waiting clients and to the event
/// stream.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// A group's level or state changed.
    Group {
        group: String,
        old_level: Option<String>,
        level: Option<String>,
        old: GroupState,
        state: GroupState,
    },
    /// An entry's process started.
    Started {
        group: String,
        tag: String,
        pid: Pid,
    },
    /// An entry's process ended after running `ran`; `requested`: during
    /// a stop clinit asked for.
    Exited {
        group: String,
        tag: String,
        pid: Pid,
        status: ExitStatus,
        ran: Duration,
        requested: bool,
    },
    /// An entry's command could not be started.
    SpawnFailed { group: String, tag: String },
    /// A respawn entry waits `delay` before its next start (at `until`,
    /// Unix seconds) after `rapid` rapid restarts in a row.
    Throttled {
        group: String,
        tag: String,
        delay: Duration,
        until: f64,
        rapid: u32,
    },
    /// A respawn entry stopped restarting (`respawn_give_up`).
    GaveUp {
        group: String,
        tag: String,
        rapid: u32,
        status: ExitStatus,
    },
    /// A cron run was skipped: the previous run still runs.
    RunSkipped { group: String, tag: String },
}

impl Change {
    /// The group a change is about.
    pub fn group(&self) -> &str {
        match self {
            Change::Group { group, .. }
            | Change::Started { group, .. }
            | Change::Exited { group, .. }
            | Change::SpawnFailed { group, .. }
            | Change::Throttled { group, .. }
            | Change::GaveUp { group, .. }
            | Change::RunSkipped { group, .. } => group,
        }
    }
}

/// The changes to one entry that an event made, from its process state
/// before and after (`None`: no such slot any more) — pure, so it is
/// table-tested.
pub fn entry_changes(
    group: &str,
    tag: &str,
    ev: &ProcEvent,
    before: Option<&machine::Slot>,
    after: Option<&machine::Slot>,
    now: Now,
) -> Vec<Change> {
    let (g, t) = (group.to_string(), tag.to_string());
    let mut out = Vec::new();
    let was = before.map(|s| &s.proc);
    let is = after.map(|s| &s.proc);
    match ev {
        ProcEvent::Spawned { pid } => out.push(Change::Started {
            group: g.clone(),
            tag: t.clone(),
            pid: *pid,
        }),
        ProcEvent::SpawnFailed => out.push(Change::SpawnFailed {
            group: g.clone(),
            tag: t.clone(),
        }),
        ProcEvent::Exited { pid, status } => match was {
            Some(Proc::Running { pid: p, since }) | Some(Proc::Stopping { pid: p, since, .. })
                if p == pid =>
            {
                out.push(Change::Exited {
                    group: g.clone(),
                    tag: t.clone(),
                    pid: *pid,
                    status: *status,
                    ran: now.at.saturating_duration_since(*since),
                    requested: matches!(was, Some(Proc::Stopping { .. })),
                })
            }
            _ => {}
        },
        ProcEvent::Timer(machine::TimerKind::Cron { .. })
            if was.is_some_and(|p| p.is_live()) && was == is =>
        {
            out.push(Change::RunSkipped {
                group: g.clone(),
                tag: t.clone(),
            })
        }
        _ => {}
    }
    let rapid = after.map(|s| s.stats.rapid).unwrap_or(0);
    match (was, is) {
        (Some(Proc::Backoff { .. }), Some(Proc::Backoff { .. })) => {}
        (_, Some(Proc::Backoff { until, .. })) => out.push(Change::Throttled {
            group: g.clone(),
            tag: t.clone(),
            delay: until.saturating_duration_since(now.at),
            until: now.wall_of(*until),
            rapid,
        }),
        (Some(Proc::GaveUp { .. }), _) => {}
        (_, Some(Proc::GaveUp { status })) => out.push(Change::GaveUp {
            group: g,
            tag: t,
            rapid,
            status: *status,
        }),
        _ => {}
    }
    out
}

/// A cltab read and parsed for a reread, with its diff from the cltab it
/// was compared with (`base`), made off the event loop. The loop applies
/// the diff if `base` is still the supervisor's cltab, and diffs again
/// otherwise (another reread, a create or a delete came between).
pub struct Reread {
    pub cltab: Cltab,
    pub base: std::sync::Arc<Cltab>,
    pub diff: RereadDiff,
    /// `cltab`'s entries by group, made off the loop too (its length is
    /// how many groups `cltab` has).
    pub grouped: Grouped,
}

impl Reread {
    /// Diff `cltab` against `base` (the cltab the supervisor had when the
    /// reread was asked).
    pub fn plan(cltab: Cltab, base: std::sync::Arc<Cltab>) -> Reread {
        let diff = reread_diff(&base, &cltab);
        let grouped = grouped(&cltab);
        Reread {
            cltab,
            base,
            diff,
            grouped,
        }
    }
}

/// A cltab's entries by group, in cltab order (owned, so that it can be
/// made off the event loop and handed over).
pub type Grouped = Vec<(String, Vec<std::sync::Arc<crate::cltab::Entry>>)>;

/// [`Cltab::by_group`], owned.
pub fn grouped(cltab: &Cltab) -> Grouped {
    cltab
        .by_group()
        .into_iter()
        .map(|(g, specs)| (g.to_string(), specs))
        .collect()
}

/// What a reread from `old` to `new` changes: an entry is changed when
/// its command or mode differs (as [`Group::reconfigure`] decides), or
/// its group.
pub fn reread_diff(old: &Cltab, new: &Cltab) -> RereadDiff {
    let before: HashMap<&str, &crate::cltab::Entry> =
        old.entries.iter().map(|e| (e.tag.as_str(), &**e)).collect();
    let after: HashSet<&str> = new.entries.iter().map(|e| e.tag.as_str()).collect();
    let mut diff = RereadDiff::default();
    for e in &new.entries {
        match before.get(e.tag.as_str()) {
            None => diff.added.push(e.tag.clone()),
            Some(o) if o.command != e.command || o.mode != e.mode || o.group != e.group => {
                diff.changed.push(e.tag.clone())
            }
            Some(_) => {}
        }
    }
    diff.removed = old
        .entries
        .iter()
        .filter(|e| !after.contains(e.tag.as_str()))
        .map(|e| e.tag.clone())
        .collect();
    diff
}

/// The slot an entry event is for: a retired slot of `tag` with the
/// event's pid, else the current slot of `tag` (as [`Group::step`] picks).
fn slot_for<'a>(g: &'a Group, tag: &str, ev: &ProcEvent) -> Option<&'a machine::Slot> {
    let by_pid = match ev {
        ProcEvent::Exited { pid, .. } => Some(*pid),
        ProcEvent::Timer(machine::TimerKind::Escalate { pid, .. }) => Some(*pid),
        _ => None,
    };
    by_pid
        .and_then(|pid| {
            g.retired
                .iter()
                .find(|s| s.spec.tag == tag && s.proc.pid() == Some(pid))
        })
        .or_else(|| g.slots.iter().find(|s| s.spec.tag == tag))
}

/// Every group of the current cltab, plus groups removed by a reread whose
/// processes are still stopping.
pub struct Supervisor {
    /// Shared with the connections, which diff a reread against it off
    /// the event loop ([`Supervisor::reread_with`]).
    pub cltab: std::sync::Arc<Cltab>,
    groups: Vec<Group>,
    removed: Vec<Group>,
    /// Tags stopped with `clinit stop` (not `--temporary`): kept in the store.
    disabled: HashSet<String>,
    /// Changes for the store since the last [`Supervisor::take_ops`].
    ops: Vec<StoreOp>,
    /// Changes since the last [`Supervisor::take_changes`].
    changes: Vec<Change>,
    /// What operators last did to entries.
    notes: HashMap<String, OperatorNote>,
}

impl Supervisor {
    pub fn new(cltab: Cltab, disabled: HashSet<String>) -> Supervisor {
        let is_disabled = |t: &str| disabled.contains(t);
        let groups = cltab
            .by_group()
            .into_iter()
            .map(|(g, specs)| Group::new(g, specs, &is_disabled))
            .collect();
        Supervisor {
            cltab: std::sync::Arc::new(cltab),
            groups,
            removed: Vec::new(),
            disabled,
            ops: Vec::new(),
            changes: Vec::new(),
            notes: HashMap::new(),
        }
    }

    /// Changes made since the last call.
    pub fn take_changes(&mut self) -> Vec<Change> {
        std::mem::take(&mut self.changes)
    }

    /// Store changes made since the last call.
    pub fn take_ops(&mut self) -> Vec<StoreOp> {
        std::mem::take(&mut self.ops)
    }

    fn step(&mut self, name: &str, ev: GroupEvent, now: Now) -> Option<Vec<Action>> {
        for list in [&mut self.groups, &mut self.removed] {
            if let Some(i) = list.iter().position(|g| g.name == name) {
                let g = std::mem::replace(&mut list[i], Group::new("", [], &|_| false));
                let before = (g.phase.level().map(str::to_string), g.state());
                // An entry event: its slot before and after, for the report.
                let entry = match &ev {
                    GroupEvent::Proc { tag, ev } => {
                        Some((tag.clone(), ev.clone(), slot_for(&g, tag, ev).cloned()))
                    }
                    _ => None,
                };
                let (g, actions) = g.step(ev, now.at, now.unix);
                if let Some((tag, ev, was)) = entry {
                    let is = slot_for(&g, &tag, &ev);
                    self.changes
                        .extend(entry_changes(&g.name, &tag, &ev, was.as_ref(), is, now));
                }
                let after = (g.phase.level(), g.state());
                if (before.0.as_deref(), before.1) != after {
                    self.changes.push(Change::Group {
                        group: g.name.clone(),
                        old_level: before.0,
                        level: after.0.map(str::to_string),
                        old: before.1,
                        state: after.1,
                    });
                }
                list[i] = g;
                return Some(actions);
            }
        }
        None
    }

    /// Tell a group a level and keep it as the group's goal; `None` when
    /// there is no such group.
    pub fn tell(&mut self, group: &str, level: &str, now: Now) -> Option<Vec<Action>> {
        if !self.groups.iter().any(|g| g.name == group) {
            return None;
        }
        self.ops.push(StoreOp::SetGoal {
            group: group.to_string(),
            level: level.to_string(),
        });
        self.step(
            group,
            GroupEvent::Tell {
                level: level.to_string(),
            },
            now,
        )
    }

    pub fn proc_event(&mut self, group: &str, tag: &str, ev: ProcEvent, now: Now) -> Vec<Action> {
        let actions = self
            .step(
                group,
                GroupEvent::Proc {
                    tag: tag.to_string(),
                    ev,
                },
                now,
            )
            .unwrap_or_default();
        self.removed.retain(|g| !g.is_quiet());
        actions
    }

    fn slot(&self, tag: &str) -> Option<(&Group, &machine::Slot)> {
        self.groups
            .iter()
            .find_map(|g| g.slots.iter().find(|s| s.spec.tag == tag).map(|s| (g, s)))
    }

    /// An operator's stop, start or restart of one entry, asked by `by`.
    /// Returns the actions and the text for the operator.
    pub fn control(
        &mut self,
        tag: &str,
        op: Control,
        by: &str,
        now: Now,
    ) -> Result<(Vec<Action>, String), ControlError> {
        let (group, was) = match self.slot(tag) {
            Some((g, s)) => (g.name.clone(), s.enable),
            None => return Err(ControlError::NoSuchEntry(tag.to_string())),
        };
        // A restart starts nothing for an entry that does not run: say so
        // (and change nothing) rather than report a restart.
        if matches!(op, Control::Restart)
            && let Some((g, slot)) = self.slot(tag)
        {
            let why = if !slot.enable.run {
                Some(format!(
                    "it is {} (`clinit start {tag}` enables and starts it)",
                    slot.enable.describe().unwrap_or("disabled")
                ))
            } else {
                match g.active_level() {
                    Some(l) if slot.spec.wanted_at(l) => None,
                    Some(l) => Some(format!(
                        "group {} is at level {l}, and {tag} runs at levels '{}'",
                        g.name,
                        slot.spec.levels.as_str()
                    )),
                    None => Some(format!("group {} is at no level", g.name)),
                }
            };
            if let Some(why) = why {
                return Err(ControlError::NotStarted {
                    tag: tag.to_string(),
                    why,
                });
            }
        }
        let actions = self
            .step(
                &group,
                GroupEvent::Control {
                    tag: tag.to_string(),
                    op,
                },
                now,
            )
            .unwrap_or_default();
        let file_now = self
            .slot(tag)
            .map(|(_, s)| s.enable.file)
            .unwrap_or(was.file);
        if file_now != was.file {
            let disabled = !file_now;
            if disabled {
                self.disabled.insert(tag.to_string());
            } else {
                self.disabled.remove(tag);
            }
            self.ops.push(StoreOp::SetDisabled {
                tag: tag.to_string(),
                disabled,
            });
            if disabled {
                self.ops.push(StoreOp::NoteDisabled {
                    tag: tag.to_string(),
                    by: by.to_string(),
                    at: now.unix,
                });
            }
        }
        if !matches!(op, Control::Restart) {
            self.notes.insert(
                tag.to_string(),
                OperatorNote {
                    action: op,
                    by: by.to_string(),
                    at: Some(now.unix),
                },
            );
        }
        // A control never removes a slot; the fallback keeps a broken
        // invariant from taking the daemon down.
        let Some((g, slot)) = self.slot(tag) else {
            return Err(ControlError::NoSuchEntry(tag.to_string()));
        };
        let at_level = g.active_level().is_some_and(|l| slot.spec.wanted_at(l));
        let how = slot
            .enable
            .describe()
            .map(|d| format!(" ({d})"))
            .unwrap_or_default();
        let text = match op {
            Control::Stop { .. } if slot.proc.is_live() => format!("{tag} stopping{how}"),
            Control::Stop { .. } => format!("{tag} stopped{how}"),
            Control::Start { .. } | Control::Restart if at_level => match op {
                Control::Restart => format!("{tag} restarting{how}"),
                _ => format!("{tag} started{how}"),
            },
            Control::Start { .. } | Control::Restart => format!(
                "{tag} enabled{how}; it runs when group {} is at one of levels '{}' (now {})",
                g.name,
                slot.spec.levels.as_str(),
                g.phase.level().unwrap_or("not told a level")
            ),
        };
        Ok((actions, text))
    }

    /// Stop every entry of a group and run its level's start sequence
    /// again; `None` when there is no such group.
    pub fn restart_group(&mut self, group: &str, now: Now) -> Option<Vec<Action>> {
        if !self.has_group(group) {
            return None;
        }
        self.step(group, GroupEvent::Restart, now)
    }

    pub fn restart_all(&mut self, now: Now) -> Vec<Action> {
        let names: Vec<String> = self.groups.iter().map(|g| g.name.clone()).collect();
        names
            .iter()
            .flat_map(|n| self.step(n, GroupEvent::Restart, now).unwrap_or_default())
            .collect()
    }

    pub fn halt(&mut self, now: Now) -> Vec<Action> {
        let names: Vec<String> = self
            .groups
            .iter()
            .chain(self.removed.iter())
            .map(|g| g.name.clone())
            .collect();
        names
            .iter()
            .flat_map(|n| self.step(n, GroupEvent::Halt, now).unwrap_or_default())
            .collect()
    }

    /// Replace the cltab. Changed and deleted entries are stopped gracefully
    /// (a changed one then starts anew); groups that disappeared are stopped
    /// and then forgotten.
    pub fn reread(&mut self, cltab: Cltab, now: Now) -> (Vec<Action>, RereadDiff) {
        let diff = reread_diff(&self.cltab, &cltab);
        let by_group = grouped(&cltab);
        self.reread_with(cltab, diff, by_group, now).0
    }

    /// [`Supervisor::reread`] with the diff from the current cltab already
    /// made (off the event loop: see [`Reread::plan`]). Returns the old
    /// cltab too, for the caller to drop where its size costs nobody.
    pub fn reread_with(
        &mut self,
        cltab: Cltab,
        diff: RereadDiff,
        by_group: Grouped,
        now: Now,
    ) -> ((Vec<Action>, RereadDiff), std::sync::Arc<Cltab>) {
        let mut old: Vec<Option<Group>> = std::mem::take(&mut self.groups)
            .into_iter()
            .map(Some)
            .collect();
        let at: HashMap<String, usize> = old
            .iter()
            .enumerate()
            .filter_map(|(i, g)| g.as_ref().map(|g| (g.name.clone(), i)))
            .collect();
        let mut actions = Vec::new();
        let disabled = std::mem::take(&mut self.disabled);
        let is_disabled = |t: &str| disabled.contains(t);
        for (name, specs) in by_group {
            let group = match at.get(&name).and_then(|&i| old[i].take()) {
                Some(g) => g,
                None => Group::new(&name, [], &is_disabled),
            };
            let (g, a) = group.reconfigure(specs, now.at, now.unix, &is_disabled);
            actions.extend(a);
            self.groups.push(g);
        }
        for group in old.into_iter().flatten() {
            let (g, a) = group.reconfigure(Vec::new(), now.at, now.unix, &is_disabled);
            actions.extend(a);
            if !g.is_quiet() {
                self.removed.push(g);
            }
        }
        self.disabled = disabled;
        let old = std::mem::replace(&mut self.cltab, std::sync::Arc::new(cltab));
        ((actions, diff), old)
    }

    /// Forget what the store keeps about a deleted entry.
    pub fn forget(&mut self, tag: &str) {
        self.disabled.remove(tag);
        self.notes.remove(tag);
        self.ops.push(StoreOp::ForgetEntry {
            tag: tag.to_string(),
        });
    }

    pub fn is_quiet(&self) -> bool {
        self.groups
            .iter()
            .chain(self.removed.iter())
            .all(Group::is_quiet)
    }

    pub fn has_group(&self, name: &str) -> bool {
        self.groups.iter().any(|g| g.name == name)
    }

    /// Level and state of one group.
    pub fn level_state(&self, name: &str) -> Option<(Option<&str>, GroupState)> {
        self.groups
            .iter()
            .find(|g| g.name == name)
            .map(|g| (g.phase.level(), g.state()))
    }

    /// Every current group, in cltab order.
    pub fn groups(&self) -> &[Group] {
        &self.groups
    }

    /// A current group by name.
    pub fn group(&self, name: &str) -> Option<&Group> {
        self.groups.iter().find(|g| g.name == name)
    }

    /// An entry of the current cltab, with its group.
    pub fn entry(&self, tag: &str) -> Option<(&Group, &machine::Slot)> {
        self.slot(tag)
    }

    /// Old versions of `tag` (changed or deleted by a reread) that are
    /// still stopping.
    pub fn retired(&self, tag: &str) -> impl Iterator<Item = &machine::Slot> {
        self.groups
            .iter()
            .chain(self.removed.iter())
            .flat_map(|g| g.retired.iter())
            .filter(move |s| s.spec.tag == tag)
    }

    /// What an operator last did to `tag` (stop, start), by whom and when.
    pub fn operator_note(&self, tag: &str) -> Option<&OperatorNote> {
        self.notes.get(tag)
    }

    /// Who disabled entries before this daemon started (from the store).
    pub fn restore_notes(&mut self, notes: impl IntoIterator<Item = (String, OperatorNote)>) {
        self.notes.extend(notes);
    }

    /// When a reread last added or changed `tag` (Unix seconds); `None`
    /// when its line is as the daemon first read it.
    pub fn configured_at(&self, tag: &str) -> Option<i64> {
        self.slot(tag).and_then(|(_, s)| s.configured)
    }
}

#[cfg(test)]
mod tests {
    use super::machine::{Control, ExitStatus};
    use super::sim::Sim;
    use super::*;

    const TAB: &str = "\
web:prep:3:wait:prep
web:app:3:respawn:app
:app::respawn_burst:0
web:cron:3:cron:job
:cron::schedule:*/5 * * * *
";

    /// A change in a few words, for the table.
    fn short(c: &Change) -> String {
        match c {
            Change::Group {
                level, old, state, ..
            } => format!(
                "group {} {}->{}",
                level.as_deref().unwrap_or("-"),
                old.as_str(),
                state.as_str()
            ),
            Change::Started { tag, .. } => format!("started {tag}"),
            Change::Exited {
                tag,
                status,
                requested,
                ran,
                ..
            } => format!(
                "exited {tag} {status}{} after {}ms",
                if *requested { " asked" } else { "" },
                ran.as_millis()
            ),
            Change::SpawnFailed { tag, .. } => format!("spawn failed {tag}"),
            Change::Throttled {
                tag, delay, rapid, ..
            } => format!("throttled {tag} {}ms rapid {rapid}", delay.as_millis()),
            Change::GaveUp { tag, .. } => format!("gave up {tag}"),
            Change::RunSkipped { tag, .. } => format!("skipped {tag}"),
        }
    }

    #[test]
    fn each_turn_reports_its_changes_once() {
        type Step = fn(&mut Sim);
        let rows: &[(&str, Step, &[&str])] = &[
            (
                "tell starts the wait entry",
                |s| s.tell("web", "3"),
                &["group 3 IDLE->STARTING", "started prep"],
            ),
            (
                "the wait entry ends, the rest start, the group settles",
                |s| {
                    s.advance(1500);
                    s.exit("prep", ExitStatus::Code(0));
                },
                &[
                    "exited prep exit code 0 after 1500ms",
                    "started app",
                    "group 3 STARTING->DONE",
                ],
            ),
            (
                "a respawn entry that exits at once is throttled",
                |s| s.exit("app", ExitStatus::Code(1)),
                &[
                    "exited app exit code 1 after 0ms",
                    "throttled app 1000ms rapid 1",
                ],
            ),
            ("its delay passes", |s| s.advance(1000), &["started app"]),
            (
                "an operator stop: the exit is one that was asked for",
                |s| {
                    s.advance(200);
                    s.control("app", Control::Stop { temporary: true });
                    s.exit("app", ExitStatus::Signal(2));
                },
                &["exited app signal 2 asked after 200ms"],
            ),
            (
                "another level stops nothing more and settles",
                |s| s.tell("web", "4"),
                &["group 4 DONE->DONE"],
            ),
            (
                "nothing happens, nothing is reported",
                |s| s.advance(10),
                &[],
            ),
        ];
        let mut s = Sim::new(TAB);
        for (case, step, want) in rows {
            step(&mut s);
            let got: Vec<String> = s.sup.take_changes().iter().map(short).collect();
            assert_eq!(got, *want, "{case}");
        }
    }

    #[test]
    fn a_reread_names_what_it_added_changed_and_removed() {
        let mut s = Sim::new(TAB);
        s.tell("web", "3");
        let (_, diff) = s.sup.reread(
            sim::cltab("web:prep:3:wait:prep\nweb:app:3:respawn:app --new\nweb:extra:3:once:x\n"),
            s.now,
        );
        assert_eq!(
            diff,
            RereadDiff {
                added: vec!["extra".into()],
                changed: vec!["app".into()],
                removed: vec!["cron".into()],
            }
        );
        assert_eq!(s.sup.configured_at("app"), Some(s.now.unix));
        assert_eq!(s.sup.configured_at("prep"), None);
        assert_eq!(s.sup.configured_at("cron"), None);
    }

    #[test]
    fn operator_notes_say_who_and_when_and_persist_a_stop() {
        let mut s = Sim::new(TAB);
        s.tell("web", "3");
        s.sup.take_ops();
        s.control("app", Control::Stop { temporary: false });
        let note = s.sup.operator_note("app").unwrap();
        assert_eq!(
            (note.by.as_str(), note.at),
            ("root (uid 0)", Some(s.now.unix))
        );
        assert_eq!(
            s.sup.take_ops(),
            vec![
                StoreOp::SetDisabled {
                    tag: "app".into(),
                    disabled: true
                },
                StoreOp::NoteDisabled {
                    tag: "app".into(),
                    by: "root (uid 0)".into(),
                    at: s.now.unix
                },
            ]
        );
        s.sup.forget("app");
        assert!(s.sup.operator_note("app").is_none());
    }
}
