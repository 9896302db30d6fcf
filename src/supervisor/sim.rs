//! A simulated supervisor for tests: a manual clock, pids handed out in
//! order, spawns that succeed at once, timers kept until fired. Nothing
//! sleeps and no process is started.

use super::machine::{Action, ExitStatus, Pid, ProcEvent, Timer};
use super::{Now, Supervisor};
use crate::cltab::Cltab;
use std::collections::HashSet;
use std::time::{Duration, Instant};

pub struct Sim {
    pub sup: Supervisor,
    pub now: Now,
    next_pid: Pid,
    /// Armed timers, fired by [`Sim::advance`].
    timers: Vec<(Instant, Timer)>,
}

/// Parse `text` as a cltab named `cltab`.
pub fn cltab(text: &str) -> Cltab {
    crate::cltab::parse(std::path::Path::new("cltab"), text).expect("valid cltab")
}

impl Sim {
    pub fn new(text: &str) -> Sim {
        Sim {
            sup: Supervisor::new(cltab(text), HashSet::new()),
            now: Now {
                at: Instant::now(),
                unix: 1_800_000_000,
                wall_us: 1_800_000_000_000_000,
            },
            next_pid: 100,
            timers: Vec::new(),
        }
    }

    /// Perform actions as the executor would, feeding spawn results back.
    pub fn perform(&mut self, actions: Vec<Action>) {
        let mut todo = actions;
        while !todo.is_empty() {
            let mut next = Vec::new();
            for a in todo {
                match a {
                    Action::Spawn { spec, .. } => {
                        let pid = self.next_pid;
                        self.next_pid += 1;
                        next.extend(self.sup.proc_event(
                            &spec.group,
                            &spec.tag,
                            ProcEvent::Spawned { pid },
                            self.now,
                        ));
                    }
                    Action::ArmTimer { at, timer } => self.timers.push((at, timer)),
                    _ => {}
                }
            }
            todo = next;
        }
    }

    pub fn tell(&mut self, group: &str, level: &str) {
        let a = self.sup.tell(group, level, self.now).expect("group exists");
        self.perform(a);
    }

    /// The pid of `tag`'s process.
    pub fn pid(&self, tag: &str) -> Pid {
        self.sup
            .entry(tag)
            .and_then(|(_, s)| s.proc.pid())
            .unwrap_or_else(|| panic!("{tag} runs no process"))
    }

    /// The process of `tag` exits with `status`.
    pub fn exit(&mut self, tag: &str, status: ExitStatus) {
        let pid = self.pid(tag);
        let group = self.sup.entry(tag).map(|(g, _)| g.name.clone()).unwrap();
        let a = self
            .sup
            .proc_event(&group, tag, ProcEvent::Exited { pid, status }, self.now);
        self.perform(a);
    }

    /// Let `ms` pass, firing the timers that come due.
    pub fn advance(&mut self, ms: u64) {
        let d = Duration::from_millis(ms);
        self.now.at += d;
        self.now.wall_us += d.as_micros() as i64;
        self.now.unix = self.now.wall_us.div_euclid(1_000_000);
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.timers)
            .into_iter()
            .partition(|(at, _)| *at <= self.now.at);
        self.timers = later;
        for (_, t) in due {
            let a = self
                .sup
                .proc_event(&t.group, &t.tag, ProcEvent::Timer(t.kind), self.now);
            self.perform(a);
        }
    }

    pub fn control(&mut self, tag: &str, op: super::machine::Control) {
        let (a, _) = self
            .sup
            .control(tag, op, "root (uid 0)", self.now)
            .expect("entry exists");
        self.perform(a);
    }

    pub fn reread(&mut self, text: &str) {
        let (a, _) = self.sup.reread(cltab(text), self.now);
        self.perform(a);
    }
}
