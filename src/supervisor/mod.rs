//! Supervision: groups, processes, runlevel switching.
//!
//! [`machine`] holds the pure state machines; [`Supervisor`] routes events to
//! the right group (still pure); [`executor`] performs the actions.

pub mod executor;
pub mod leftovers;
pub mod machine;

use crate::cltab::Cltab;
use crate::proto::{EntryStatus, GroupStatus};
use crate::store::sqlite::StoreOp;
use machine::{Action, Control, Group, GroupEvent, GroupState, Proc, ProcEvent};
use std::collections::HashSet;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The present moment, as the machines see it: a monotonic instant for
/// timers and the wall clock (Unix seconds) for history and schedules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    pub at: Instant,
    pub unix: i64,
}

impl Now {
    pub fn real() -> Now {
        Now {
            at: Instant::now(),
            unix: unix_now(),
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
}

/// Every group of the current cltab, plus groups removed by a reread whose
/// processes are still stopping.
pub struct Supervisor {
    pub cltab: Cltab,
    groups: Vec<Group>,
    removed: Vec<Group>,
    /// Tags stopped with `clinit stop` (not `--temporary`): kept in the store.
    disabled: HashSet<String>,
    /// Changes for the store since the last [`Supervisor::take_ops`].
    ops: Vec<StoreOp>,
}

impl Supervisor {
    pub fn new(cltab: Cltab, disabled: HashSet<String>) -> Supervisor {
        let is_disabled = |t: &str| disabled.contains(t);
        let groups = cltab
            .groups()
            .into_iter()
            .map(|g| Group::new(g, cltab.entries_of(g).cloned(), &is_disabled))
            .collect();
        Supervisor {
            cltab,
            groups,
            removed: Vec::new(),
            disabled,
            ops: Vec::new(),
        }
    }

    /// Store changes made since the last call.
    pub fn take_ops(&mut self) -> Vec<StoreOp> {
        std::mem::take(&mut self.ops)
    }

    fn step(&mut self, name: &str, ev: GroupEvent, now: Now) -> Option<Vec<Action>> {
        for list in [&mut self.groups, &mut self.removed] {
            if let Some(i) = list.iter().position(|g| g.name == name) {
                let g = std::mem::replace(&mut list[i], Group::new("", [], &|_| false));
                let (g, actions) = g.step(ev, now.at, now.unix);
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

    /// An operator's stop, start or restart of one entry. Returns the
    /// actions and the text for the operator.
    pub fn control(
        &mut self,
        tag: &str,
        op: Control,
        now: Now,
    ) -> Result<(Vec<Action>, String), ControlError> {
        let (group, was) = match self.slot(tag) {
            Some((g, s)) => (g.name.clone(), s.enable),
            None => return Err(ControlError::NoSuchEntry(tag.to_string())),
        };
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
        }
        let (g, slot) = self.slot(tag).expect("the entry is still there");
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
    pub fn reread(&mut self, cltab: Cltab, now: Now) -> Vec<Action> {
        let mut old = std::mem::take(&mut self.groups);
        let mut actions = Vec::new();
        let disabled = self.disabled.clone();
        let is_disabled = |t: &str| disabled.contains(t);
        for name in cltab.groups() {
            let specs: Vec<_> = cltab.entries_of(name).cloned().collect();
            let group = match old.iter().position(|g| g.name == name) {
                Some(i) => old.remove(i),
                None => Group::new(name, [], &is_disabled),
            };
            let (g, a) = group.reconfigure(specs, now.at, now.unix, &is_disabled);
            actions.extend(a);
            self.groups.push(g);
        }
        for group in old {
            let (g, a) = group.reconfigure(Vec::new(), now.at, now.unix, &is_disabled);
            actions.extend(a);
            if !g.is_quiet() {
                self.removed.push(g);
            }
        }
        self.cltab = cltab;
        actions
    }

    /// Forget what the store keeps about a deleted entry.
    pub fn forget(&mut self, tag: &str) {
        self.disabled.remove(tag);
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

    /// (group, level, state) of every group, for change detection.
    pub fn summary(&self) -> Vec<(String, Option<String>, GroupState)> {
        self.groups
            .iter()
            .map(|g| {
                (
                    g.name.clone(),
                    g.phase.level().map(str::to_string),
                    g.state(),
                )
            })
            .collect()
    }

    /// The status file text, in Cluster::Init's format; groups never told are
    /// not listed (Cluster::Init creates a group at its first tell).
    pub fn clstat(&self) -> String {
        let mut out = String::new();
        for g in &self.groups {
            if let Some(level) = g.phase.level() {
                out.push_str(&format!(
                    "Cluster::Init::Group {} {} {}\n",
                    g.name,
                    level,
                    g.state().as_str()
                ));
            }
        }
        out
    }

    pub fn status(&self, only: Option<&str>, entries: bool, now: Now) -> Vec<GroupStatus> {
        let wall_now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let unix = |t: Instant| wall_now - now.at.saturating_duration_since(t).as_secs_f64();
        self.groups
            .iter()
            .filter(|g| only.is_none_or(|o| o == g.name))
            .map(|g| GroupStatus {
                group: g.name.clone(),
                level: g.phase.level().map(str::to_string),
                state: g.state(),
                entries: g
                    .slots
                    .iter()
                    .filter(|_| entries)
                    .map(|s| EntryStatus {
                        tag: s.spec.tag.clone(),
                        mode: s.spec.mode.to_string(),
                        levels: s.spec.levels.as_str().to_string(),
                        command: s.spec.command.clone(),
                        state: s.proc.name().to_string(),
                        pid: s.proc.pid(),
                        started: match s.proc {
                            Proc::Running { since, .. } | Proc::Stopping { since, .. } => {
                                Some(unix(since))
                            }
                            _ => None,
                        },
                        starts: s.stats.starts,
                        restarts: s.stats.restarts,
                        last_exit: s.stats.last_exit.map(|(st, _)| st),
                        goal: s.enable.describe().map(str::to_string),
                        enabled: s.enable.file,
                        running_enabled: s.enable.run,
                        last_start: s.stats.last_start,
                        last_exit_at: s.stats.last_exit.map(|(_, t)| t),
                        last_error: s.stats.last_error.map(|(st, _)| st),
                        last_error_at: s.stats.last_error.map(|(_, t)| t),
                        rs_time: s.stats.rs_time,
                        rs_count: s.stats.rs_count,
                        rapid: s.stats.rapid,
                        throttled_until: match s.proc {
                            Proc::Backoff { until, .. } => Some(unix(until).round() as i64),
                            _ => None,
                        },
                        gave_up: matches!(s.proc, Proc::GaveUp { .. }),
                        schedule: s
                            .spec
                            .opts
                            .schedule
                            .as_ref()
                            .map(|x| x.as_str().to_string()),
                        next_run: s.next_run.map(|n| n.unix),
                        notifier: s.spec.opts.notifier.as_ref().map(|n| n.command.clone()),
                        notifier_format: s.spec.opts.notifier.as_ref().map(|n| n.format),
                    })
                    .collect(),
            })
            .collect()
    }
}
