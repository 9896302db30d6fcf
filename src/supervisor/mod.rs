//! Supervision: groups, processes, runlevel switching.
//!
//! [`machine`] holds the pure state machines; [`Supervisor`] routes events to
//! the right group (still pure); [`executor`] performs the actions.

pub mod executor;
pub mod machine;

use crate::cltab::Cltab;
use crate::config::Timing;
use crate::proto::{EntryStatus, GroupStatus};
use machine::{Action, Group, GroupEvent, GroupState, Phase, Proc, ProcEvent};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Every group of the current cltab, plus groups removed by a reread whose
/// processes are still stopping.
pub struct Supervisor {
    pub cltab: Cltab,
    pub timing: Timing,
    groups: Vec<Group>,
    removed: Vec<Group>,
}

impl Supervisor {
    pub fn new(cltab: Cltab) -> Supervisor {
        let timing = Timing::resolve(&cltab.settings);
        let groups = cltab
            .groups()
            .into_iter()
            .map(|g| Group::new(g, cltab.entries_of(g).cloned()))
            .collect();
        Supervisor {
            cltab,
            timing,
            groups,
            removed: Vec::new(),
        }
    }

    fn step(&mut self, name: &str, ev: GroupEvent, now: Instant) -> Option<Vec<Action>> {
        let timing = self.timing;
        for list in [&mut self.groups, &mut self.removed] {
            if let Some(i) = list.iter().position(|g| g.name == name) {
                let g = std::mem::replace(&mut list[i], Group::new("", []));
                let (g, actions) = g.step(ev, now, &timing);
                list[i] = g;
                return Some(actions);
            }
        }
        None
    }

    /// Tell a group a level; `None` when there is no such group.
    pub fn tell(&mut self, group: &str, level: &str, now: Instant) -> Option<Vec<Action>> {
        if !self.groups.iter().any(|g| g.name == group) {
            return None;
        }
        self.step(
            group,
            GroupEvent::Tell {
                level: level.to_string(),
            },
            now,
        )
    }

    pub fn proc_event(
        &mut self,
        group: &str,
        tag: &str,
        ev: ProcEvent,
        now: Instant,
    ) -> Vec<Action> {
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

    pub fn halt(&mut self, now: Instant) -> Vec<Action> {
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

    /// Replace the cltab. Changed and deleted entries are stopped gracefully;
    /// groups that disappeared are stopped and then forgotten.
    pub fn reread(&mut self, cltab: Cltab, now: Instant) -> Vec<Action> {
        let timing = Timing::resolve(&cltab.settings);
        self.timing = timing;
        let mut old = std::mem::take(&mut self.groups);
        let mut actions = Vec::new();
        for name in cltab.groups() {
            let specs: Vec<_> = cltab.entries_of(name).cloned().collect();
            let group = match old.iter().position(|g| g.name == name) {
                Some(i) => old.remove(i),
                None => Group::new(name, []),
            };
            let (g, a) = group.reconfigure(specs, now, &timing);
            actions.extend(a);
            self.groups.push(g);
        }
        for group in old {
            let (g, a) = group.reconfigure(Vec::new(), now, &timing);
            actions.extend(a);
            if !g.is_quiet() {
                self.removed.push(g);
            }
        }
        self.cltab = cltab;
        actions
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
            if let Some(level) = g.phase.level()
                && !matches!(g.phase, Phase::Idle)
            {
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

    pub fn status(&self, only: Option<&str>, entries: bool, now: Instant) -> Vec<GroupStatus> {
        let wall_now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let unix = |t: Instant| wall_now - now.saturating_duration_since(t).as_secs_f64();
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
                    })
                    .collect(),
            })
            .collect()
    }
}
