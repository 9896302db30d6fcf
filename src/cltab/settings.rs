//! Settings lines (`:::name:value`).
//!
//! Precedence, as in Cluster::Init: embedded default < command-line flag <
//! cltab setting. A [`Settings`] holds only what the cltab said; resolving
//! against defaults and flags happens in [`crate::config`].

use super::ErrorKind;
use std::path::PathBuf;
use std::time::Duration;

/// Every setting name the parser accepts, for error messages and docs.
pub const SETTING_NAMES: &[&str] = &[
    "socket",
    "clstat",
    "log",
    "logdir",
    "socket_mode",
    "stop_term_after",
    "stop_kill_after",
    "respawn_fast",
    "respawn_burst",
    "respawn_delay",
    "respawn_delay_max",
    "respawn_reset",
];

/// Values set in a cltab; `None` means "not set here".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    pub socket: Option<PathBuf>,
    pub clstat: Option<PathBuf>,
    pub log: Option<PathBuf>,
    /// Directory for per-entry output files `<group>.<tag>.log`.
    pub logdir: Option<PathBuf>,
    pub socket_mode: Option<u32>,
    pub stop_term_after: Option<Duration>,
    pub stop_kill_after: Option<Duration>,
    pub respawn_fast: Option<Duration>,
    pub respawn_burst: Option<u32>,
    pub respawn_delay: Option<Duration>,
    pub respawn_delay_max: Option<Duration>,
    pub respawn_reset: Option<Duration>,
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

fn path(name: &str, value: &str) -> Result<PathBuf, ErrorKind> {
    if value.is_empty() {
        Err(bad(name, value, "expected a path"))
    } else {
        Ok(PathBuf::from(value))
    }
}

impl Settings {
    /// Apply one settings line.
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), ErrorKind> {
        let secs = |v: &str| parse_seconds(v).map_err(|why| bad(name, v, &why));
        match name {
            "socket" => self.socket = Some(path(name, value)?),
            "clstat" => self.clstat = Some(path(name, value)?),
            "log" => self.log = Some(path(name, value)?),
            "logdir" => self.logdir = Some(path(name, value)?),
            "socket_mode" => {
                let mode = u32::from_str_radix(value, 8)
                    .ok()
                    .filter(|m| *m <= 0o777)
                    .ok_or_else(|| bad(name, value, "expected an octal mode such as 0600"))?;
                self.socket_mode = Some(mode);
            }
            "stop_term_after" => self.stop_term_after = Some(secs(value)?),
            "stop_kill_after" => self.stop_kill_after = Some(secs(value)?),
            "respawn_fast" => self.respawn_fast = Some(secs(value)?),
            "respawn_delay" => self.respawn_delay = Some(secs(value)?),
            "respawn_delay_max" => self.respawn_delay_max = Some(secs(value)?),
            "respawn_reset" => self.respawn_reset = Some(secs(value)?),
            "respawn_burst" => {
                let n = value
                    .parse::<u32>()
                    .map_err(|_| bad(name, value, "expected a whole number"))?;
                self.respawn_burst = Some(n);
            }
            _ => return Err(ErrorKind::UnknownSetting(name.to_string())),
        }
        Ok(())
    }
}
