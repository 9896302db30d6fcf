//! Settings lines (`:::name:value`) and per-entry option lines
//! (`:TAG::name:value`).
//!
//! Precedence, as in Cluster::Init: embedded default < command-line flag <
//! cltab setting < entry option. A [`Settings`] holds only what one scope of
//! the cltab said (the whole file, or one entry); resolving against defaults
//! and flags happens in [`crate::config`].

use super::ErrorKind;
use crate::schedule::Schedule;
use nix::sys::signal::Signal;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// Settings of the whole file only (`:::name:value`); the other settings
/// are the entry options below, `schedule` excepted.
const FILE_ONLY_SETTINGS: &[&str] = &[
    "socket",
    "clstat",
    "log",
    "logdir",
    "state",
    "socket_mode",
    "socket_group",
    "userlist",
    "restore_timeout",
];

/// Entry options that are not also settings.
const ENTRY_ONLY_OPTIONS: &[&str] = &["schedule"];

/// Every option name accepted in a per-entry `:TAG::name:value` line. All but
/// `schedule` are also settings, whose value they override for one entry.
pub const ENTRY_OPTION_NAMES: &[&str] = &[
    "schedule",
    "notifier",
    "notifier_format",
    "notifier_timeout",
    "stop_signal",
    "stop_term_after",
    "stop_kill_after",
    "respawn_fast",
    "respawn_burst",
    "respawn_delay",
    "respawn_delay_max",
    "respawn_reset",
    "respawn_give_up",
];

/// Whether `name` may be set in a `:::name:value` line.
pub fn is_setting(name: &str) -> bool {
    FILE_ONLY_SETTINGS.contains(&name)
        || (ENTRY_OPTION_NAMES.contains(&name) && !ENTRY_ONLY_OPTIONS.contains(&name))
}

/// Every setting name, for error messages and docs.
pub fn setting_names() -> Vec<&'static str> {
    FILE_ONLY_SETTINGS
        .iter()
        .chain(
            ENTRY_OPTION_NAMES
                .iter()
                .filter(|n| !ENTRY_ONLY_OPTIONS.contains(n)),
        )
        .copied()
        .collect()
}

/// The record format written to a notifier's standard input.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NotifierFormat {
    /// The AFS BOS `bnode_proc`/`bnode` record.
    #[default]
    Bos,
    /// One JSON object with the same facts plus group, level and host.
    Json,
}

/// Values set in one scope of a cltab; `None` means "not set here".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    pub socket: Option<PathBuf>,
    pub clstat: Option<PathBuf>,
    pub log: Option<PathBuf>,
    /// Directory for per-entry output files `<group>.<tag>.log`.
    pub logdir: Option<PathBuf>,
    /// Directory of the daemon's persistent state (goals, child records).
    pub state: Option<PathBuf>,
    pub socket_mode: Option<u32>,
    pub socket_group: Option<String>,
    pub userlist: Option<PathBuf>,
    pub restore_timeout: Option<Duration>,
    pub stop_signal: Option<Signal>,
    pub stop_term_after: Option<Duration>,
    pub stop_kill_after: Option<Duration>,
    pub respawn_fast: Option<Duration>,
    pub respawn_burst: Option<u32>,
    pub respawn_delay: Option<Duration>,
    pub respawn_delay_max: Option<Duration>,
    pub respawn_reset: Option<Duration>,
    /// Stop restarting after this many rapid restarts in a row (0: never).
    pub respawn_give_up: Option<u32>,
    pub notifier: Option<String>,
    pub notifier_format: Option<NotifierFormat>,
    pub notifier_timeout: Option<Duration>,
    /// Entry scope only.
    pub schedule: Option<Schedule>,
}

fn bad(name: &str, value: &str, why: &str) -> ErrorKind {
    ErrorKind::BadSetting {
        name: name.to_string(),
        value: value.to_string(),
        why: why.to_string(),
    }
}

/// Seconds, decimals allowed (`0.5`), non-negative, at most a day.
pub fn parse_seconds(value: &str) -> Result<Duration, String> {
    let secs: f64 = value
        .parse()
        .map_err(|_| "expected a number of seconds, e.g. 5 or 0.5".to_string())?;
    if !secs.is_finite() || !(0.0..=86_400.0).contains(&secs) {
        return Err("expected between 0 and 86400 seconds".to_string());
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A signal by name (`TERM`, `SIGTERM`, `term`) or number (`15`).
pub fn parse_signal(value: &str) -> Result<Signal, String> {
    let why = || "expected a signal name such as TERM or HUP, or its number".to_string();
    if let Ok(n) = value.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| why());
    }
    let upper = value.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    Signal::from_str(&name).map_err(|_| why())
}

fn path(name: &str, value: &str) -> Result<PathBuf, ErrorKind> {
    if value.is_empty() {
        Err(bad(name, value, "expected a path"))
    } else {
        Ok(PathBuf::from(value))
    }
}

impl Settings {
    /// Apply one settings or option line (the caller checks that `name` is
    /// allowed in its scope).
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), ErrorKind> {
        let secs = |v: &str| parse_seconds(v).map_err(|why| bad(name, v, &why));
        let count = |v: &str| {
            v.parse::<u32>()
                .map_err(|_| bad(name, v, "expected a whole number"))
        };
        match name {
            "socket" => self.socket = Some(path(name, value)?),
            "clstat" => self.clstat = Some(path(name, value)?),
            "log" => self.log = Some(path(name, value)?),
            "logdir" => self.logdir = Some(path(name, value)?),
            "state" => self.state = Some(path(name, value)?),
            "userlist" => self.userlist = Some(path(name, value)?),
            "socket_mode" => {
                let mode = u32::from_str_radix(value, 8)
                    .ok()
                    .filter(|m| *m <= 0o777)
                    .ok_or_else(|| bad(name, value, "expected an octal mode such as 0600"))?;
                self.socket_mode = Some(mode);
            }
            "socket_group" => {
                if value.is_empty() {
                    return Err(bad(name, value, "expected a group name or number"));
                }
                self.socket_group = Some(value.to_string());
            }
            "restore_timeout" => self.restore_timeout = Some(secs(value)?),
            "stop_signal" => {
                self.stop_signal = Some(parse_signal(value).map_err(|why| bad(name, value, &why))?)
            }
            "stop_term_after" => self.stop_term_after = Some(secs(value)?),
            "stop_kill_after" => self.stop_kill_after = Some(secs(value)?),
            "respawn_fast" => self.respawn_fast = Some(secs(value)?),
            "respawn_delay" => self.respawn_delay = Some(secs(value)?),
            "respawn_delay_max" => self.respawn_delay_max = Some(secs(value)?),
            "respawn_reset" => self.respawn_reset = Some(secs(value)?),
            "respawn_burst" => self.respawn_burst = Some(count(value)?),
            "respawn_give_up" => self.respawn_give_up = Some(count(value)?),
            "notifier" => {
                if value.is_empty() {
                    return Err(bad(name, value, "expected a command"));
                }
                self.notifier = Some(value.to_string());
            }
            "notifier_format" => {
                self.notifier_format = Some(match value {
                    "bos" => NotifierFormat::Bos,
                    "json" => NotifierFormat::Json,
                    _ => return Err(bad(name, value, "expected bos or json")),
                })
            }
            "notifier_timeout" => self.notifier_timeout = Some(secs(value)?),
            "schedule" => {
                self.schedule =
                    Some(Schedule::parse(value).map_err(|e| bad(name, value, &e.to_string()))?)
            }
            _ => return Err(ErrorKind::UnknownSetting(name.to_string())),
        }
        Ok(())
    }

    /// These settings with an entry's options laid over them.
    pub fn overlay(&self, entry: &Settings) -> Settings {
        let mut out = self.clone();
        macro_rules! take {
            ($($f:ident),*) => { $( if entry.$f.is_some() { out.$f = entry.$f.clone(); } )* };
        }
        take!(
            stop_signal,
            stop_term_after,
            stop_kill_after,
            respawn_fast,
            respawn_burst,
            respawn_delay,
            respawn_delay_max,
            respawn_reset,
            respawn_give_up,
            notifier,
            notifier_format,
            notifier_timeout,
            schedule
        );
        out
    }
}
