//! Entry control (stop, start, restart of an entry, a group or all),
//! reread, and the cltab edits of create and delete.

use super::{message, no_group};
use crate::cltab::{Cltab, edit};
use crate::daemon::conn::error;
use crate::daemon::event_loop::{Call, Daemon};
use crate::events::EventKind;
use crate::logsafe::Safe;
use crate::proto::{ControlAction, ErrorCode, Reply};
use crate::store::write_atomic;
use crate::supervisor::Now;
use crate::supervisor::machine::{Action, Control};
use std::sync::Arc;

/// `clinit stop|start|restart TAG`.
pub(crate) fn entry(
    d: &mut Daemon,
    c: &Call,
    tag: &str,
    action: ControlAction,
    temporary: bool,
) -> Reply {
    let op = match action {
        ControlAction::Stop => Control::Stop { temporary },
        ControlAction::Start => Control::Start { temporary },
        ControlAction::Restart => Control::Restart,
    };
    match d.sup.control(tag, op, &c.who, Now::real()) {
        Ok((actions, text)) => {
            d.actions.extend(actions);
            if let Some((g, _)) = d.sup.entry(tag) {
                d.shared.events.push(EventKind::Operator {
                    group: g.name.clone(),
                    tag: tag.to_string(),
                    action: match action {
                        ControlAction::Stop => "stopped",
                        ControlAction::Start => "started",
                        ControlAction::Restart => "restarted",
                    }
                    .into(),
                    temporary,
                    by: c.who.clone(),
                });
            }
            message(&text)
        }
        Err(e @ crate::supervisor::ControlError::NoSuchEntry(_)) => {
            error(ErrorCode::NoSuchEntry, e.to_string())
        }
        Err(e @ crate::supervisor::ControlError::NotStarted { .. }) => {
            error(ErrorCode::NotStarted, e.to_string())
        }
    }
}

/// `clinit restart --group G` (`Some`) or `--all` (`None`).
pub(crate) fn restart_group(d: &mut Daemon, c: &Call, group: Option<&str>) -> Reply {
    let now = Now::real();
    let (reply, actions) = match group {
        Some(g) => match d.sup.restart_group(g, now) {
            Some(actions) => (message(&format!("group {g} restarting")), actions),
            None => return no_group(g),
        },
        None => (message("all groups restarting"), d.sup.restart_all(now)),
    };
    d.actions.extend(actions);
    d.shared.events.push(EventKind::RestartGroup {
        group: group.map(str::to_string),
        by: c.who.clone(),
    });
    reply
}

/// Read the cltab again and apply it; a bad cltab changes nothing.
/// Apply a cltab read and parsed off the loop (see `Target::Reread`).
pub(crate) fn reread(
    d: &mut Daemon,
    c: &Call,
    loaded: Result<crate::supervisor::Reread, crate::cltab::CltabErrors>,
) -> Reply {
    match loaded {
        Ok(plan) => {
            let text = format!(
                "cltab reread: {} groups, {} entries",
                plan.grouped.len(),
                plan.cltab.entries.len()
            );
            // The diff made off the loop holds if nothing changed the
            // cltab since; else it is made again here.
            let ((actions, diff), old) = if Arc::ptr_eq(&plan.base, &d.sup.cltab) {
                d.sup
                    .reread_with(plan.cltab, plan.diff, plan.grouped, Now::real())
            } else {
                let diff = crate::supervisor::reread_diff(&d.sup.cltab, &plan.cltab);
                d.sup
                    .reread_with(plan.cltab, diff, plan.grouped, Now::real())
            };
            d.actions.extend(actions);
            after_reread(d, [old, plan.base]);
            d.shared.events.push(EventKind::Reread {
                added: diff.added,
                changed: diff.changed,
                removed: diff.removed,
                by: c.who.clone(),
            });
            message(&text)
        }
        Err(e) => {
            tracing::error!("reread failed; keeping the running configuration:\n{e}");
            error(ErrorCode::CltabInvalid, e.to_string())
        }
    }
}

/// The cltab text as on disk, if it is still what the daemon read.
fn unchanged_cltab(d: &Daemon) -> Result<String, Reply> {
    let path = &d.sup.cltab.path;
    match std::fs::read_to_string(path) {
        Ok(text) if text == d.sup.cltab.text => Ok(text),
        Ok(_) => Err(error(
            ErrorCode::CltabChanged,
            format!(
                "{} changed on disk since the daemon read it; run `clinit reread` first, so that edit is not lost",
                path.display()
            ),
        )),
        Err(e) => Err(error(
            ErrorCode::CltabInvalid,
            format!("cannot read {}: {e}", path.display()),
        )),
    }
}

/// Edit the cltab: `change` turns its text (refused if it changed on disk
/// since the daemon read it) into the new text, which is parsed, written
/// atomically and applied.
fn edit_cltab(
    d: &mut Daemon,
    change: impl FnOnce(&str) -> Result<String, Reply>,
) -> Result<Vec<Action>, Reply> {
    let text = change(&unchanged_cltab(d)?)?;
    let path = d.sup.cltab.path.clone();
    let tab = crate::cltab::parse(&path, &text)
        .map_err(|e| error(ErrorCode::CltabInvalid, e.to_string()))?;
    write_atomic(&path, text.as_bytes()).map_err(|e| {
        error(
            ErrorCode::Internal,
            format!("cannot write {}: {e}", path.display()),
        )
    })?;
    let diff = crate::supervisor::reread_diff(&d.sup.cltab, &tab);
    let by_group = crate::supervisor::grouped(&tab);
    let ((actions, _), old) = d.sup.reread_with(tab, diff, by_group, Now::real());
    after_reread(d, [old]);
    Ok(actions)
}

/// After the cltab changed: the connections' copy is the new one, the
/// cgroups of entries no longer in it go once empty, and the old cltab
/// (as large as the file) is freed off the event loop.
pub(crate) fn after_reread<const N: usize>(d: &mut Daemon, old: [Arc<Cltab>; N]) {
    let previous = std::mem::replace(
        &mut *d
            .shared
            .cltab
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
        d.sup.cltab.clone(),
    );
    if d.exec.cgroup_count().unwrap_or(0) > 0 {
        let tags: std::collections::HashSet<&str> =
            d.sup.cltab.entries.iter().map(|e| e.tag.as_str()).collect();
        d.exec.retain_cgroups(|_, tag| tags.contains(tag));
    }
    let garbage = (old, previous);
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => drop(rt.spawn_blocking(move || drop(garbage))),
        Err(_) => drop(garbage),
    }
}

/// `clinit create`: add an entry (and its option lines) after its group's
/// last line, and start it if its group is at one of its levels.
#[allow(clippy::too_many_arguments)]
pub(crate) fn create(
    d: &mut Daemon,
    c: &mut Call,
    group: &str,
    tag: &str,
    levels: &str,
    mode: &str,
    options: &[(String, String)],
    command: &str,
) -> Option<Reply> {
    let bad = |m: String| error(ErrorCode::BadRequest, m);
    // Names as the parser checks them (the line must parse back to this
    // entry, not to a comment or another one).
    for (what, v) in [("group", group), ("tag", tag)] {
        if let Err(why) = crate::cltab::check_name(v) {
            return Some(error(
                ErrorCode::BadName,
                format!("bad {what} name '{}': {why}", Safe(v)),
            ));
        }
    }
    if let Err(len) = crate::cltab::check_log_name(group, tag) {
        return Some(error(
            ErrorCode::BadName,
            format!(
                "the log file name of entry {}:{} would be {len} bytes, more than the 255 a file name may have; shorten the group or the tag",
                Safe(group),
                Safe(tag)
            ),
        ));
    }
    for (what, v) in [
        ("group", group),
        ("tag", tag),
        ("levels", levels),
        ("mode", mode),
    ] {
        if v.contains(':')
            || v.chars().any(char::is_control)
            || v.trim() != v
            || (what != "levels" && v.is_empty())
        {
            return Some(bad(format!(
                "bad {what} '{}': it must be non-empty and contain no ':', control character or surrounding blanks",
                Safe(v)
            )));
        }
    }
    if command.trim().is_empty() || command.contains(['\n', '\r', '\0']) {
        return Some(bad(format!(
            "bad command '{}': it must be one non-empty line without NUL bytes",
            Safe(command)
        )));
    }
    for (name, value) in options {
        if name.contains(':')
            || name.chars().any(char::is_control)
            || value.contains(['\n', '\r', '\0'])
        {
            return Some(bad(format!(
                "bad option '{}={}': one line, no ':' or control character in the name",
                Safe(name),
                Safe(value)
            )));
        }
    }
    let mut lines = vec![format!("{group}:{tag}:{levels}:{mode}:{command}")];
    lines.extend(options.iter().map(|(n, v)| format!(":{tag}::{n}:{v}")));
    if let Some(h) = d.shared.cluster.clone() {
        let (t, g) = (tag.to_string(), group.to_string());
        return crate::cluster::agent::edit_shared(
            c,
            h,
            |text| Ok(edit::insert_entry(text, group, &lines)),
            move |rev| format!("created {t} in group {g} in the shared cltab, revision {rev}"),
        );
    }
    Some(
        match edit_cltab(d, |text| Ok(edit::insert_entry(text, group, &lines))) {
            Ok(actions) => {
                let line = d
                    .sup
                    .cltab
                    .entries
                    .iter()
                    .find(|e| e.tag == tag)
                    .map(|e| e.line)
                    .unwrap_or(0);
                let running = actions
                    .iter()
                    .any(|a| matches!(a, Action::Spawn { spec, .. } if spec.tag == tag));
                d.actions.extend(actions);
                d.shared.events.push(EventKind::CltabEdit {
                    op: "create".into(),
                    group: group.to_string(),
                    tag: tag.to_string(),
                    by: c.who.clone(),
                });
                message(&format!(
                    "created {tag} in group {group} at {}:{line}{}",
                    d.sup.cltab.path.display(),
                    if running { "; started" } else { "" }
                ))
            }
            Err(r) => r,
        },
    )
}

/// `clinit delete`: stop an entry gracefully and remove its lines.
pub(crate) fn delete(d: &mut Daemon, c: &mut Call, tag: &str) -> Option<Reply> {
    let group = d.sup.entry(tag).map(|(g, _)| g.name.clone());
    if let Some(h) = d.shared.cluster.clone() {
        let t = tag.to_string();
        return crate::cluster::agent::edit_shared(
            c,
            h,
            |text| {
                edit::remove_entry(text, tag)
                    .ok_or_else(|| error(ErrorCode::NoSuchEntry, format!("no such entry: {tag}")))
            },
            move |rev| format!("deleted {t} from the shared cltab, revision {rev}"),
        );
    }
    let removed = edit_cltab(d, |text| {
        edit::remove_entry(text, tag)
            .ok_or_else(|| error(ErrorCode::NoSuchEntry, format!("no such entry: {tag}")))
    });
    Some(match removed {
        Ok(actions) => {
            d.sup.forget(tag);
            let stopping = actions
                .iter()
                .any(|a| matches!(a, Action::Signal { tag: t, .. } if t == tag));
            d.actions.extend(actions);
            d.shared.events.push(EventKind::CltabEdit {
                op: "delete".into(),
                group: group.unwrap_or_default(),
                tag: tag.to_string(),
                by: c.who.clone(),
            });
            message(&format!(
                "deleted {tag} from {}{}",
                d.sup.cltab.path.display(),
                if stopping { "; stopping it" } else { "" }
            ))
        }
        Err(r) => r,
    })
}
