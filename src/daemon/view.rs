//! Views of the supervisor's state in the protocol's and the status
//! file's terms, built at the edge (the supervisor knows no wire types).

use crate::proto::{EntryStatus, GroupStatus};
use crate::supervisor::machine::{Group, Proc, Slot};
use crate::supervisor::{Now, Supervisor};

/// The status file text, in Cluster::Init's format; groups never told are
/// not listed (Cluster::Init creates a group at its first tell).
pub fn clstat(sup: &Supervisor) -> String {
    let mut out = String::new();
    for g in sup.groups() {
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

/// Level, state and (with `entries`) every entry of one group or all.
pub fn status(sup: &Supervisor, only: Option<&str>, entries: bool, now: Now) -> Vec<GroupStatus> {
    sup.groups()
        .iter()
        .filter(|g| only.is_none_or(|o| o == g.name))
        .map(|g| group_status(g, entries, now))
        .collect()
}

fn group_status(g: &Group, entries: bool, now: Now) -> GroupStatus {
    GroupStatus {
        group: g.name.clone(),
        level: g.phase.level().map(str::to_string),
        state: g.state(),
        entries: if entries {
            g.slots.iter().map(|s| entry_status(s, now)).collect()
        } else {
            Vec::new()
        },
    }
}

fn entry_status(s: &Slot, now: Now) -> EntryStatus {
    EntryStatus {
        tag: s.spec.tag.clone(),
        mode: s.spec.mode.to_string(),
        levels: s.spec.levels.as_str().to_string(),
        command: s.spec.command.clone(),
        state: s.proc.name().to_string(),
        pid: s.proc.pid(),
        started: match s.proc {
            Proc::Running { since, .. } | Proc::Stopping { since, .. } => Some(now.wall_of(since)),
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
            Proc::Backoff { until, .. } => Some(now.wall_of(until).round() as i64),
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
        notifier: s.spec.opts.notifier.as_ref().map(|n| n.command.to_string()),
        notifier_format: s.spec.opts.notifier.as_ref().map(|n| n.format),
    }
}
