//! Views of the supervisor's state in the protocol's and the status
//! file's terms, built at the edge (the supervisor knows no wire types).

use crate::proto::{EntryStatus, GroupStatus, StatusCursor};
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
/// One page of status from `from`: groups (and their entries unless
/// `entries` is false) until about `budget` bytes, and where the next page
/// starts if more is left. A page holds at least one item, however large.
pub fn status_page(
    sup: &Supervisor,
    only: Option<&str>,
    entries: bool,
    from: StatusCursor,
    budget: usize,
    now: Now,
) -> (Vec<GroupStatus>, Option<StatusCursor>) {
    let mut out: Vec<GroupStatus> = Vec::new();
    let mut used = 0;
    let groups = sup
        .groups()
        .iter()
        .filter(|g| only.is_none_or(|o| o == g.name))
        .enumerate()
        .skip(from.group);
    for (gi, g) in groups {
        let mut head = group_status(g, false, now);
        let first = if gi == from.group { from.entry } else { 0 };
        let size = crate::proto::json_len(&head);
        if used + size > budget && !out.is_empty() {
            return (
                out,
                Some(StatusCursor {
                    group: gi,
                    entry: first,
                }),
            );
        }
        used += size;
        if entries {
            for (ei, s) in g.slots.iter().enumerate().skip(first) {
                let e = entry_status(s, now);
                let size = crate::proto::json_len(&e) + 1;
                if used + size > budget && (!out.is_empty() || !head.entries.is_empty()) {
                    out.push(head);
                    return (
                        out,
                        Some(StatusCursor {
                            group: gi,
                            entry: ei,
                        }),
                    );
                }
                used += size;
                head.entries.push(e);
            }
        }
        out.push(head);
    }
    (out, None)
}

/// What the survey shows of a slot, borrowed (see
/// [`crate::survey::EntryFacts`]); `usage`: its CPU seconds and RSS.
pub fn entry_facts<'a>(
    group: &'a str,
    s: &'a Slot,
    now: Now,
    usage: Option<(f64, u64)>,
) -> crate::survey::EntryFacts<'a> {
    crate::survey::EntryFacts {
        group,
        tag: &s.spec.tag,
        levels: s.spec.levels.as_str(),
        mode: s.spec.mode.as_str(),
        state: s.proc.name(),
        pid: s.proc.pid(),
        started: started(s, now),
        starts: s.stats.starts,
        restarts: s.stats.restarts,
        rapid: s.stats.rapid,
        last_exit: s.stats.last_exit.map(|(st, _)| st),
        cpu: usage.map(|u| u.0),
        rss_kib: usage.map(|u| u.1),
        goal: s.enable.describe(),
        running_enabled: s.enable.run,
        gave_up: matches!(s.proc, Proc::GaveUp { .. }),
    }
}

/// When the slot's process was started, while it runs or stops.
fn started(s: &Slot, now: Now) -> Option<f64> {
    match s.proc {
        Proc::Running { since, .. } | Proc::Stopping { since, .. } => Some(now.wall_of(since)),
        _ => None,
    }
}

/// Every group (or one) whole, with no paging (the survey's rows; the
/// tests).
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
        owner: None,
        token: None,
        goal: g.phase.level().map(str::to_string),
        gave_up: g
            .slots
            .iter()
            .filter(|s| matches!(s.proc, Proc::GaveUp { .. }))
            .count() as u32,
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
        started: started(s, now),
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
        cpu: None,
        rss_kib: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sup(text: &str) -> Supervisor {
        let tab = crate::cltab::parse(std::path::Path::new("cltab"), text).unwrap();
        Supervisor::new(tab, Default::default())
    }

    /// Every page fits its budget unless it holds one item only, and the
    /// pages joined (a group continued across pages merged) are the whole
    /// status, for budgets from "one item a page" up to "all in one".
    #[test]
    fn status_pages_join_to_the_whole_status() {
        let mut text = String::new();
        for (g, n) in [("a", 3), ("c", 5), ("d", 1)] {
            for i in 0..n {
                text.push_str(&format!(
                    "{g}:{g}{i}:1:respawn:sleep {}\n",
                    "9".repeat(i * 40)
                ));
            }
        }
        let s = sup(&text);
        let now = Now::real();
        let whole = status(&s, None, true, now);
        let brief = status(&s, None, false, now);
        for budget in [1, 100, 200, 400, 800, 1_000_000] {
            for (entries, want) in [(true, &whole), (false, &brief)] {
                let mut all: Vec<GroupStatus> = Vec::new();
                let mut from = StatusCursor::default();
                let mut pages = 0;
                loop {
                    pages += 1;
                    assert!(pages < 100, "budget {budget}: no progress");
                    let (groups, more) = status_page(&s, None, entries, from, budget, now);
                    let items: usize =
                        groups.len() + groups.iter().map(|g| g.entries.len()).sum::<usize>();
                    assert!(items >= 1, "budget {budget}: an empty page");
                    let size: usize = groups.iter().map(crate::proto::json_len).sum();
                    if items > 2 {
                        assert!(
                            size <= budget + 200,
                            "budget {budget}: page of {size} bytes"
                        );
                    }
                    for (i, g) in groups.into_iter().enumerate() {
                        match all.last_mut() {
                            Some(last) if i == 0 && pages > 1 && last.group == g.group => {
                                last.entries.extend(g.entries)
                            }
                            _ => all.push(g),
                        }
                    }
                    match more {
                        Some(m) => from = m,
                        None => break,
                    }
                }
                assert_eq!(&all, want, "budget {budget}, entries {entries}");
                if budget == 1_000_000 {
                    assert_eq!(pages, 1);
                }
            }
        }
    }
}
