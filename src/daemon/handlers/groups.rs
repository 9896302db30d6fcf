//! Groups and levels: tell, status, wait, and explain.

use super::{message, no_group};
use crate::daemon::conn::{error, shutting_down};
use crate::daemon::event_loop::{Call, Daemon, Waiter};
use crate::daemon::view;
use crate::events::EventKind;
use crate::proto::{ErrorCode, Reply};
use crate::supervisor::Now;
use crate::supervisor::machine::GroupState;
use std::time::{Duration, Instant};

/// Tell a group a level: on this node (kept as the group's goal), or for
/// an exclusive group in cluster mode, as the cluster's goal in etcd
/// (applied by whichever node owns the group).
pub(crate) fn tell(d: &mut Daemon, c: &mut Call, group: &str, level: &str) -> Option<Reply> {
    if let Some(h) = d.shared.cluster.clone()
        && !d.sup.has_group(group)
    {
        // Cluster mode: the group may be in a shared cltab revision stored
        // a moment ago (`cluster push` then a tell): catch up first.
        let reply = c.reply.take()?;
        let shared = d.shared.clone();
        let (group, level, who) = (group.to_string(), level.to_string(), c.who.clone());
        tokio::spawn(async move {
            crate::cluster::agent::catch_up(&h).await;
            let job: crate::daemon::route::LoopJob =
                Box::new(move |d, c| tell_known(d, c, &group, &level));
            let answer = crate::cluster::agent::run_job(&shared, job, &who).await;
            let _ = reply.send(answer);
        });
        return None;
    }
    tell_known(d, c, group, level)
}

/// As [`tell`], the group known or not (no catching up).
fn tell_known(d: &mut Daemon, c: &mut Call, group: &str, level: &str) -> Option<Reply> {
    if let Some(h) = d.shared.cluster.clone()
        && d.sup.cltab.is_exclusive(group)
    {
        return crate::cluster::owners::tell_cluster(c, h, group, level);
    }
    Some(tell_here(d, c, group, level))
}

/// Tell a group a level on this node (and keep it as the group's goal).
pub(crate) fn tell_here(d: &mut Daemon, c: &Call, group: &str, level: &str) -> Reply {
    match d.sup.tell(group, level, Now::real()) {
        Some(actions) => {
            d.actions.extend(actions);
            d.shared.events.push(EventKind::Told {
                group: group.to_string(),
                level: level.to_string(),
                by: c.who.clone(),
            });
            message("level transition started")
        }
        None => no_group(group),
    }
}

/// Level and state of one group or all, with the entries unless `brief`.
pub(crate) fn status(
    d: &Daemon,
    group: Option<&str>,
    brief: bool,
    from: Option<crate::proto::StatusCursor>,
    usage: bool,
) -> Reply {
    if let Some(g) = group
        && !d.sup.has_group(g)
    {
        return no_group(g);
    }
    let (mut groups, more) = view::status_page(
        &d.sup,
        group,
        !brief,
        from.unwrap_or_default(),
        crate::proto::STATUS_PAGE,
        Now::real(),
    );
    if let Some(h) = &d.shared.cluster {
        for g in groups.iter_mut() {
            if d.sup.cltab.is_exclusive(&g.group)
                && let Some((node, token)) = h.exclusive.owner(&g.group)
            {
                g.owner = Some(node);
                g.token = Some(token);
            }
        }
    }
    if usage {
        add_usage(&mut groups);
    }
    Reply::Status { groups, more }
}

/// `clinit survey`, made where the data is: only the columns the query
/// reads are computed (a row of every column for 1,000 entries costs the
/// client more than the rest of the call), and only the chosen ones are
/// sent, in pages of at most [`crate::proto::STATUS_PAGE`] bytes.
pub(crate) fn survey(d: &Daemon, q: &crate::survey::Query, from: usize) -> Reply {
    use crate::survey::Table;
    if let Err(e) = q.check() {
        return error(ErrorCode::BadRequest, e.to_string());
    }
    let rows = match q.table {
        Table::Locks => q.apply_values(crate::survey::lock_rows(&d.shared.locks().status(None))),
        Table::Groups => {
            // Counted from the slots: no entry's status is made.
            let groups: Vec<_> = view::status(&d.sup, None, false, Now::real())
                .into_iter()
                .zip(d.sup.groups())
                .map(|(st, g)| {
                    let running = g.slots.iter().filter(|s| s.proc.pid().is_some()).count();
                    (st, g.slots.len(), running)
                })
                .collect();
            q.apply_values(crate::survey::group_rows(&groups))
        }
        Table::Entries => {
            // Only the values the query reads, straight from the slots.
            let now = Now::real();
            let wall = crate::events::wall_now();
            let usage = if q.reads("cpu") || q.reads("rss") {
                let pids: Vec<i32> = d
                    .sup
                    .groups()
                    .iter()
                    .flat_map(|g| g.slots.iter().filter_map(|s| s.proc.pid()))
                    .collect();
                crate::supervisor::usage::of_trees(&pids)
            } else {
                Default::default()
            };
            let names = q.needed();
            let rows = d
                .sup
                .groups()
                .iter()
                .flat_map(|g| g.slots.iter().map(move |s| (g, s)))
                .map(|(g, s)| {
                    let u = s.proc.pid().and_then(|p| usage.get(&p)).copied();
                    let f = view::entry_facts(&g.name, s, now, u);
                    names.iter().map(|c| f.value(wall, c)).collect()
                })
                .collect();
            q.apply_indexed(rows)
        }
    };
    let mut rows = rows;
    let total = rows.len();
    let from = from.min(total);
    rows.drain(..from);
    // Most surveys fit in one frame, which a bound on their size shows
    // without serializing them; measured row by row only if not.
    let mut end = total;
    let bound: usize = rows
        .iter()
        .map(|r| r.iter().map(|v| json_bound(v) + 1).sum::<usize>() + 3)
        .sum();
    if bound > crate::proto::STATUS_PAGE {
        let mut used = 0;
        end = from;
        for r in &rows {
            let size = crate::proto::json_len(r) + 1;
            if used + size > crate::proto::STATUS_PAGE && end > from {
                break;
            }
            used += size;
            end += 1;
        }
        rows.truncate(end - from);
    }
    Reply::Survey {
        columns: q.columns.clone(),
        more: (end < total).then_some(end),
        rows,
    }
}

/// At least as many bytes as `v` takes as JSON (a string's every byte
/// escaped as `\u00XX`).
fn json_bound(v: &serde_json::Value) -> usize {
    use serde_json::Value;
    match v {
        Value::Null | Value::Bool(_) => 5,
        Value::Number(_) => 24,
        Value::String(s) => 6 * s.len() + 2,
        Value::Array(a) => 2 + a.iter().map(|x| json_bound(x) + 1).sum::<usize>(),
        Value::Object(o) => {
            2 + o
                .iter()
                .map(|(k, x)| 6 * k.len() + 3 + json_bound(x) + 1)
                .sum::<usize>()
        }
    }
}

/// Each running entry's CPU time and RSS (its process tree, from /proc).
fn add_usage(groups: &mut [crate::proto::GroupStatus]) {
    let pids: Vec<i32> = groups
        .iter()
        .flat_map(|g| g.entries.iter().filter_map(|e| e.pid))
        .collect();
    let got = crate::supervisor::usage::of_trees(&pids);
    for e in groups.iter_mut().flat_map(|g| g.entries.iter_mut()) {
        if let Some((cpu, rss)) = e.pid.and_then(|p| got.get(&p)) {
            e.cpu = Some(*cpu);
            e.rss_kib = Some(*rss);
        }
    }
}

/// Answer once `group` is at `level` (if given) and in `state` (if given;
/// otherwise settled), or TIMEOUT: at once if it already is, else parked
/// until a change of the group or the deadline.
pub(crate) fn wait(
    d: &mut Daemon,
    c: &mut Call,
    group: String,
    level: Option<String>,
    state: Option<GroupState>,
    timeout_ms: u64,
) -> Option<Reply> {
    if d.halting {
        return Some(shutting_down());
    }
    if !d.sup.has_group(&group) {
        return Some(no_group(&group));
    }
    let reply = c.reply.take()?;
    // Clamped: a client's number must not overflow the clock.
    let deadline = Instant::now() + Duration::from_millis(timeout_ms.min(100 * 365 * 86_400_000));
    let w = Waiter {
        group,
        level,
        state,
        deadline,
        reply,
    };
    if w.satisfied(&d.sup) {
        let r = w.answer(&d.sup);
        d.replies.push((w.reply, r));
    } else {
        d.waiters.push(w);
    }
    None
}

/// Why an entry or a group (or both, when a tag names a group too) runs
/// or does not.
pub(crate) fn explain(d: &Daemon, name: &str) -> Reply {
    let now = Now::real();
    let recent = d.shared.events.lock().recent(500, |e| {
        e.kind.tag() == Some(name) || e.kind.group() == Some(name)
    });
    let mut explanations: Vec<_> = [
        crate::explain::entry(&d.sup, name, &recent, now),
        crate::explain::group(&d.sup, name, &recent, now),
    ]
    .into_iter()
    .flatten()
    .collect();
    if let Some(h) = &d.shared.cluster {
        for x in explanations.iter_mut() {
            if d.sup.cltab.is_exclusive(&x.group) {
                let owner = h.exclusive.owner(&x.group);
                x.facts.insert(
                    0,
                    crate::explain::Fact::Exclusive {
                        group: x.group.clone(),
                        owner: owner.as_ref().map(|o| o.0.clone()),
                        token: owner.map(|o| o.1),
                        here: h.cfg.node.clone(),
                    },
                );
            }
        }
    }
    if explanations.is_empty() {
        return error(
            ErrorCode::NoSuchEntry,
            format!(
                "no entry or group named {name} in {}",
                d.sup.cltab.path.display()
            ),
        );
    }
    Reply::Explain { explanations }
}

#[cfg(test)]
mod tests {
    use super::json_bound;
    use serde_json::{Value, json};

    /// The bound a survey page is cut by is never below the real size.
    #[test]
    fn a_json_bound_is_never_below_the_json() {
        let rows: Vec<Value> = vec![
            json!(null),
            json!(true),
            json!(u64::MAX),
            json!(-1.234_567_890_123_456_7e-300),
            json!(""),
            json!("plain"),
            json!("\u{1}\n\"\\ caf\u{e9} \u{1f600}"),
            json!(["web", 42, null, [1.5, "x"]]),
            json!({"k\n": {"a": [true, "\u{7f}"]}}),
        ];
        for v in rows {
            let len = serde_json::to_string(&v).unwrap().len();
            assert!(json_bound(&v) >= len, "{v}: {} < {len}", json_bound(&v));
        }
    }
}
