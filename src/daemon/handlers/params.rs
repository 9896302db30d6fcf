//! The operator's console on the daemon itself: `null`, parameters
//! (`params`, `getpar`, `setpar`), last words and reopening the log.

use crate::daemon::conn::error;
use crate::daemon::event_loop::{Call, Daemon};
use crate::params::{ParamError, Params};
use crate::proto::{ErrorCode, Reply};
use crate::supervisor::Now;
use std::sync::PoisonError;

/// Alive: version, pid, uptime.
pub(crate) fn null(d: &Daemon) -> Reply {
    Reply::Alive {
        version: env!("CARGO_PKG_VERSION").to_string(),
        pid: std::process::id(),
        uptime: (crate::events::wall_now() - d.shared.events.started).max(0.0),
        maintenance: d.maintenance,
    }
}

fn param_error(e: ParamError) -> Reply {
    let code = match &e {
        ParamError::Unknown(_) => ErrorCode::NoSuchParam,
        ParamError::NotLive(_) => ErrorCode::NotLive,
        ParamError::Bad { .. } => ErrorCode::BadValue,
        ParamError::File { .. } => ErrorCode::Internal,
    };
    error(code, e.to_string())
}

fn params(d: &Daemon) -> Params {
    d.shared
        .params
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
}

/// The `:::name:value` lines in force: the cltab's, and in cluster mode
/// the node's local cltab's over the shared one's.
fn cltab_values(d: &Daemon) -> Vec<(String, String)> {
    let mut v = crate::params::cltab_values(&d.sup.cltab.text);
    if let Some(h) = &d.shared.cluster
        && let Ok(text) = std::fs::read_to_string(&h.local_cltab)
    {
        v.extend(crate::params::cltab_values(&text));
    }
    v
}

/// Every parameter, or one.
pub(crate) fn list(d: &Daemon, name: Option<&str>) -> Reply {
    let p = params(d);
    let raw = cltab_values(d);
    match name {
        None => Reply::Params {
            params: p.view(&raw),
        },
        Some(n) => match p.get(n, &raw) {
            Ok(v) => Reply::Params { params: vec![v] },
            Err(e) => param_error(e),
        },
    }
}

/// The cltab the daemon runs, parsed again under `p`'s values.
fn reparse(d: &Daemon, p: &Params) -> Result<crate::cltab::Cltab, String> {
    let over = p.overrides();
    let tab = &d.sup.cltab;
    match &d.shared.cluster {
        Some(h) => {
            let local =
                crate::cluster::agent::load_local(&h.local_cltab).map_err(|e| e.to_string())?;
            crate::cltab::parse_shared(&tab.path, &tab.text, &local.settings.overridden_by(&over))
        }
        None => crate::cltab::parse_shared(&tab.path, &tab.text, &over),
    }
    .map_err(|e| e.to_string())
}

/// Set `name` live. Everything is checked before anything changes: the
/// name, the value, the cltab under the new value, and (with `persist`)
/// the write of the state directory's file; then the value takes effect.
pub(crate) fn setpar(
    d: &mut Daemon,
    c: &Call,
    name: &str,
    value: Option<&str>,
    persist: bool,
) -> Reply {
    let cur = params(d);
    let next = match cur.with_live(name, value, persist) {
        Ok(n) => n,
        Err(e) => return param_error(e),
    };
    let raw = cltab_values(d);
    let previous = cur.get(name, &raw).expect("checked by with_live");
    let tab = match reparse(d, &next) {
        Ok(t) => t,
        Err(why) => {
            return error(
                ErrorCode::BadValue,
                format!(
                    "parameter {name}: the cltab would not be valid with {}:\n{why}",
                    value.unwrap_or("its value removed")
                ),
            );
        }
    };
    if next.persisted_differs(&cur)
        && let Err(e) = next.save(&d.paths.state)
    {
        return param_error(e);
    }
    *d.shared
        .params
        .lock()
        .unwrap_or_else(PoisonError::into_inner) = next.clone();
    let now = next.get(name, &raw).expect("checked by with_live");
    // Every value again from the new settings (only the one named
    // changed); entries take new timings without restarting.
    let s = tab.settings.clone();
    crate::logging::set_level(s.loglevel.unwrap_or_default());
    crate::logging::set_lwords_keep(s.lwords_keep.unwrap_or(crate::logging::DEFAULT_LWORDS));
    d.shared
        .events
        .lock()
        .set_keep(s.events_keep.unwrap_or(crate::events::DEFAULT_KEEP));
    let diff = crate::supervisor::reread_diff(&d.sup.cltab, &tab);
    let by_group = crate::supervisor::grouped(&tab);
    let ((actions, _), old) = d.sup.reread_with(tab, diff, by_group, Now::real());
    d.actions.extend(actions);
    super::control::after_reread(d, [old]);
    d.set_maintenance(s.maintenance.unwrap_or(false), &c.who);
    let kept = match (persist, next.persisted(name)) {
        (false, Some(v)) if now.source != crate::params::Source::Persisted => {
            format!("; the persisted value {v} returns at restart")
        }
        _ => String::new(),
    };
    tracing::info!(
        "parameter {name} is {} ({}), was {} ({}){kept}",
        shown(&now.value),
        now.source.as_str(),
        shown(&previous.value),
        previous.source.as_str()
    );
    Reply::SetPar {
        previous: Box::new(previous),
        now: Box::new(now),
    }
}

fn shown(v: &str) -> &str {
    if v.is_empty() { "(none)" } else { v }
}

/// Write the last words to the log and return them.
pub(crate) fn lastwords(c: &Call) -> Reply {
    crate::logging::dump_last_words(&format!("asked by {}", c.who));
    Reply::LastWords {
        lines: crate::logging::last_words(),
    }
}

/// Reopen the log file.
pub(crate) fn reopen(d: &mut Daemon) -> Reply {
    match d.reopen_log() {
        Ok(Some(path)) => super::message(&format!("log reopened: {}", path.display())),
        Ok(None) => super::message("no log file to reopen (logging to standard error)"),
        Err(e) => error(ErrorCode::Internal, e),
    }
}
