//! Parameters: every daemon-wide setting as a typed value with a default,
//! a value from the cltab, one from the command line (`--set NAME=VALUE`)
//! and, for those that can change while the daemon runs, a live one
//! (`clinit setpar`): default < cltab < command line < live.
//!
//! The values themselves are the settings of [`crate::cltab::SETTINGS`]
//! (one table, one parser per name). What this module adds is the layers
//! above the cltab and where each value came from: [`Params::overrides`]
//! is laid over the cltab's settings wherever the daemon parses its cltab
//! (start-up, reread, edits, cluster revisions), so a parameter set live
//! stays set across rereads. Entry options (`:TAG::name:value`) still win
//! for their entry: they are more specific than any daemon-wide value.
//!
//! Pure except [`Params::save`] / [`Params::load_persisted`], which read
//! and write `params.json` in the state directory (atomically).

use crate::cltab::{self, Settings};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Parameters that may change while the daemon runs (`clinit setpar`).
pub const LIVE: &[&str] = &[
    "loglevel",
    "lwords_keep",
    "maintenance",
    "events_keep",
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

/// Live parameters that change entries' timings: setting one re-resolves
/// every entry (as a reread of the same cltab would; nothing restarts).
/// The tail of [`LIVE`].
pub const TIMINGS: &[&str] = LIVE.split_at(4).1;

/// The file of persisted live values, in the state directory.
pub const FILE: &str = "params.json";

/// The built-in value of a parameter, as text ("" when unset means
/// "none": no logdir, no etcd, ...).
pub fn default_text(name: &str) -> &'static str {
    match name {
        "socket" => crate::config::DEFAULT_SOCKET,
        "clstat" => crate::config::DEFAULT_CLSTAT,
        "log" => crate::config::DEFAULT_LOG,
        "state" => crate::config::DEFAULT_STATE,
        "socket_mode" => "0600",
        "restore_timeout" => "30",
        "loglevel" => "info",
        "lwords_keep" => "1000",
        "log_prefix" => "on",
        "maintenance" => "off",
        "events_keep" => "10000",
        "client_timeout" => "10",
        "lease_ttl_max" => "3600",
        "peer_locks_max" => "1024",
        "peer_leases_max" => "64",
        "record_container_max" => "10000",
        "record_container_bytes_max" => "67108864",
        "record_bytes_max" => "1073741824",
        "peer_records_max" => "10000",
        "peer_record_bytes_max" => "67108864",
        "peer_frame_bytes_max" => "16777216",
        "peer_connections_max" => "256",
        "cgroup" => "auto",
        "cluster" => "clinit",
        "lease_ttl" => "10",
        "ineligible_for" => "60",
        "tls_ca" => "/etc/clinit/tls/ca.pem",
        "tls_cert" => "/etc/clinit/tls/cert.pem",
        "tls_key" => "/etc/clinit/tls/key.pem",
        "tls_handshake_timeout" => "5",
        "listen_connections_max" => "256",
        "lock_access" => "anyone",
        "record_access" => "anyone",
        "notifier_format" => "bos",
        "notifier_timeout" => "30",
        "stop_signal" => "INT",
        "stop_term_after" => "5",
        "stop_kill_after" => "10",
        "respawn_fast" => "1",
        "respawn_burst" => "5",
        "respawn_delay" => "1",
        "respawn_delay_max" => "60",
        "respawn_reset" => "10",
        "respawn_give_up" => "0",
        _ => "",
    }
}

/// Where a parameter's value comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Default,
    Cltab,
    CommandLine,
    /// Set with `clinit setpar` (until the daemon stops).
    Live,
    /// Set with `clinit setpar --persist` (kept in the state directory).
    Persisted,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Default => "default",
            Source::Cltab => "cltab",
            Source::CommandLine => "command line",
            Source::Live => "live",
            Source::Persisted => "persisted",
        }
    }
}

/// One parameter as `clinit params` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParamView {
    pub name: String,
    /// The value in force, as text ("" when none).
    pub value: String,
    pub source: Source,
    /// Whether `clinit setpar` may change it while the daemon runs.
    pub live: bool,
    /// The type of value (`SECS`, `on|off`, ...).
    pub kind: String,
    /// One line saying what it does.
    pub help: String,
}

/// Why a parameter cannot be read or set; each has a stable code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    #[error("no such parameter: {0} (`clinit params` lists them)")]
    Unknown(String),
    #[error(
        "parameter {0} cannot change while the daemon runs: set it in the cltab or with `clinit daemon --set {0}=VALUE` and restart"
    )]
    NotLive(String),
    #[error("bad value {value:?} for parameter {name}: {why}")]
    Bad {
        name: String,
        value: String,
        why: String,
    },
    #[error("{what} {path}: {why}")]
    File {
        what: &'static str,
        path: String,
        why: String,
    },
}

/// Whether `name` is a parameter (a setting of the whole file).
pub fn is_param(name: &str) -> bool {
    cltab::is_setting(name)
}

/// Check that `name` is a parameter and `value` a good value for it.
pub fn check(name: &str, value: &str) -> Result<(), ParamError> {
    if !is_param(name) {
        return Err(ParamError::Unknown(name.to_string()));
    }
    Settings::default().set(name, value).map_err(|e| match e {
        cltab::ErrorKind::BadSetting { why, .. } => ParamError::Bad {
            name: name.to_string(),
            value: value.to_string(),
            why,
        },
        other => ParamError::Bad {
            name: name.to_string(),
            value: value.to_string(),
            why: other.to_string(),
        },
    })
}

/// A value as the daemon shows it back: `on`/`off` for a boolean given as
/// `1`, `TRUE`, `yes`..., a log level in lower case; others as given.
pub fn canonical(name: &str, value: &str) -> String {
    let kind = cltab::SETTINGS
        .iter()
        .find(|s| s.name == name)
        .map(|s| s.value_name);
    match kind {
        Some("on|off") => match cltab::on_off(value) {
            Ok(true) => "on".into(),
            Ok(false) => "off".into(),
            Err(_) => value.to_string(),
        },
        _ if name == "loglevel" => value.trim().to_ascii_lowercase(),
        _ => value.to_string(),
    }
}

/// Check a `--set NAME=VALUE` argument.
pub fn parse_assignment(arg: &str) -> Result<(String, String), ParamError> {
    let (name, value) = arg.split_once('=').ok_or_else(|| ParamError::Bad {
        name: arg.to_string(),
        value: String::new(),
        why: "expected NAME=VALUE".into(),
    })?;
    let (name, value) = (name.trim(), value.trim());
    check(name, value)?;
    Ok((name.to_string(), value.to_string()))
}

/// A live value and whether it is kept across restarts.
#[derive(Clone, Debug, PartialEq, Eq)]
struct LiveValue {
    value: String,
    persisted: bool,
}

/// The layers above the cltab.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Params {
    cli: BTreeMap<String, String>,
    live: BTreeMap<String, LiveValue>,
    /// The persisted values as the file holds them (what a restart brings
    /// back).
    persisted: BTreeMap<String, String>,
}

/// What [`Params::set_live`] changed: the value before and after.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Changed {
    pub previous: ParamView,
}

impl Params {
    /// The command line's `--set` values (each already checked).
    pub fn with_cli(cli: impl IntoIterator<Item = (String, String)>) -> Params {
        Params {
            cli: cli.into_iter().collect(),
            ..Params::default()
        }
    }

    /// A named flag of `clinit daemon` (`--state-dir`, `-s`) whose value
    /// is the one in effect: shown as coming from the command line. (The
    /// cltab's setting, where there is one, still wins over these flags,
    /// as it always has; `--set` wins over both.)
    pub fn note_flag(&mut self, name: &str, value: String) {
        self.cli.entry(name.to_string()).or_insert(value);
    }

    /// Everything set above the cltab, as settings to lay over it.
    pub fn overrides(&self) -> Settings {
        let mut s = Settings::default();
        for (name, value) in self
            .cli
            .iter()
            .chain(self.live.iter().map(|(n, v)| (n, &v.value)))
        {
            // Checked when set; a value that no longer parses is skipped.
            let _ = s.set(name, value);
        }
        s
    }

    /// Every parameter, in the table's order, given the `name:value`
    /// settings lines of the cltab (the last of a name wins).
    pub fn view(&self, cltab: &[(String, String)]) -> Vec<ParamView> {
        cltab::SETTINGS
            .iter()
            .filter(|s| s.scope.is_setting())
            .map(|s| self.view_one(s, cltab))
            .collect()
    }

    /// One parameter, or [`ParamError::Unknown`].
    pub fn get(&self, name: &str, cltab: &[(String, String)]) -> Result<ParamView, ParamError> {
        cltab::SETTINGS
            .iter()
            .find(|s| s.name == name && s.scope.is_setting())
            .map(|s| self.view_one(s, cltab))
            .ok_or_else(|| ParamError::Unknown(name.to_string()))
    }

    fn view_one(&self, s: &cltab::SettingInfo, cltab: &[(String, String)]) -> ParamView {
        let (value, source) = if let Some(v) = self.live.get(s.name) {
            (
                v.value.clone(),
                if v.persisted {
                    Source::Persisted
                } else {
                    Source::Live
                },
            )
        } else if let Some(v) = self.cli.get(s.name) {
            (v.clone(), Source::CommandLine)
        } else if let Some((_, v)) = cltab.iter().rev().find(|(n, _)| n == s.name) {
            (v.clone(), Source::Cltab)
        } else {
            (default_text(s.name).to_string(), Source::Default)
        };
        ParamView {
            name: s.name.to_string(),
            value,
            source,
            live: LIVE.contains(&s.name),
            kind: s.value_name.to_string(),
            help: s.help.to_string(),
        }
    }

    /// These parameters with `name` set live to `value` (`None`: the live
    /// value removed, back to the command line's, the cltab's or the
    /// default). Checks everything first; `self` is not changed.
    pub fn with_live(
        &self,
        name: &str,
        value: Option<&str>,
        persist: bool,
    ) -> Result<Params, ParamError> {
        if !is_param(name) {
            return Err(ParamError::Unknown(name.to_string()));
        }
        if !LIVE.contains(&name) {
            return Err(ParamError::NotLive(name.to_string()));
        }
        let mut next = self.clone();
        let canonical = value.map(|v| canonical(name, v));
        match canonical.as_deref() {
            Some(v) => {
                check(name, v)?;
                next.live.insert(
                    name.to_string(),
                    LiveValue {
                        value: v.to_string(),
                        persisted: persist,
                    },
                );
                if persist {
                    next.persisted.insert(name.to_string(), v.to_string());
                }
            }
            None => {
                next.live.remove(name);
                if persist {
                    next.persisted.remove(name);
                }
            }
        }
        Ok(next)
    }

    /// Whether the persisted values differ from `other`'s (a write of the
    /// file is due).
    pub fn persisted_differs(&self, other: &Params) -> bool {
        self.persisted != other.persisted
    }

    /// The persisted value of `name`, which comes back at the next start.
    pub fn persisted(&self, name: &str) -> Option<&str> {
        self.persisted.get(name).map(String::as_str)
    }

    /// Read `params.json` of `state_dir`, if there is one: its values
    /// become live (persisted) values. A value that is no longer a live
    /// parameter or no longer parses is left out and named in the result.
    pub fn load_persisted(&mut self, state_dir: &Path) -> Result<Vec<String>, ParamError> {
        let path = state_dir.join(FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(ParamError::File {
                    what: "cannot read",
                    path: path.display().to_string(),
                    why: e.to_string(),
                });
            }
        };
        let map: BTreeMap<String, String> =
            serde_json::from_str(&text).map_err(|e| ParamError::File {
                what: "cannot parse",
                path: path.display().to_string(),
                why: e.to_string(),
            })?;
        let mut skipped = Vec::new();
        for (name, value) in map {
            match self.with_live(&name, Some(&value), true) {
                Ok(next) => *self = next,
                Err(e) => skipped.push(e.to_string()),
            }
        }
        Ok(skipped)
    }

    /// Write the persisted values to `params.json` of `state_dir`
    /// (atomically).
    pub fn save(&self, state_dir: &Path) -> Result<(), ParamError> {
        let path = state_dir.join(FILE);
        let mut text = serde_json::to_string_pretty(&self.persisted).expect("a map of strings");
        text.push('\n');
        crate::store::write_atomic(&path, text.as_bytes()).map_err(|e| ParamError::File {
            what: "cannot write",
            path: path.display().to_string(),
            why: e.to_string(),
        })
    }
}

/// The `:::name:value` lines of a cltab text, in order.
pub fn cltab_values(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for raw in text.lines() {
        let line = raw.trim_end_matches('\r');
        let mut f = line.splitn(5, ':');
        if let (Some(g), Some(t), Some(l), Some(name), Some(value)) =
            (f.next(), f.next(), f.next(), f.next(), f.next())
            && g.trim().is_empty()
            && t.trim().is_empty()
            && l.trim().is_empty()
            && !line.trim_start().starts_with('#')
            && is_param(name.trim())
        {
            out.push((name.trim().to_string(), value.trim().to_string()));
        }
    }
    out
}

/// The state directory's parameter file.
pub fn file_in(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_values_are_shown_in_one_spelling() {
        let rows = [
            ("maintenance", "TRUE", "on"),
            ("maintenance", "1", "on"),
            ("maintenance", "no", "off"),
            ("maintenance", "Off", "off"),
            ("loglevel", "DEBUG", "debug"),
            ("stop_term_after", "2.5", "2.5"),
            ("maintenance", "maybe", "maybe"),
        ];
        for (name, given, shown) in rows {
            assert_eq!(canonical(name, given), shown, "{name} {given}");
        }
    }

    fn v(p: &Params, name: &str, cltab: &[(String, String)]) -> (String, Source) {
        let x = p.get(name, cltab).unwrap();
        (x.value, x.source)
    }

    /// default < cltab < command line < live, for each layer present.
    #[test]
    fn each_layer_wins_over_the_ones_below() {
        let cltab = vec![("stop_kill_after".to_string(), "7".to_string())];
        let none: Vec<(String, String)> = Vec::new();
        let base = Params::default();
        let cli = Params::with_cli([("stop_kill_after".to_string(), "8".to_string())]);
        let live = cli.with_live("stop_kill_after", Some("9"), false).unwrap();
        let kept = cli.with_live("stop_kill_after", Some("3"), true).unwrap();
        type Row<'a> = (&'a Params, &'a [(String, String)], &'a str, Source);
        let rows: &[Row] = &[
            (&base, &none, "10", Source::Default),
            (&base, &cltab, "7", Source::Cltab),
            (&cli, &cltab, "8", Source::CommandLine),
            (&live, &cltab, "9", Source::Live),
            (&kept, &cltab, "3", Source::Persisted),
        ];
        for (p, c, value, source) in rows {
            assert_eq!(v(p, "stop_kill_after", c), (value.to_string(), *source));
        }
        assert_eq!(
            live.overrides().stop_kill_after,
            Some(std::time::Duration::from_secs(9))
        );
        // Removing the live value goes back to the command line's.
        let back = live.with_live("stop_kill_after", None, false).unwrap();
        assert_eq!(
            v(&back, "stop_kill_after", &cltab),
            ("8".into(), Source::CommandLine)
        );
    }

    #[test]
    fn refused_changes_leave_the_parameters_as_they_were() {
        let p = Params::default();
        let rows: &[(&str, &str, ParamError)] = &[
            ("nope", "1", ParamError::Unknown("nope".into())),
            ("socket", "/x", ParamError::NotLive("socket".into())),
            ("schedule", "now", ParamError::Unknown("schedule".into())),
            (
                "maintenance",
                "maybe",
                ParamError::Bad {
                    name: "maintenance".into(),
                    value: "maybe".into(),
                    why: "expected on or off (1/0, true/false)".into(),
                },
            ),
        ];
        for (name, value, want) in rows {
            assert_eq!(p.with_live(name, Some(value), true).unwrap_err(), *want);
        }
    }

    #[test]
    fn booleans_and_levels_take_their_spellings() {
        let rows: &[(&str, &str, bool)] = &[
            ("maintenance", "on", true),
            ("maintenance", "off", true),
            ("maintenance", "1", true),
            ("maintenance", "0", true),
            ("maintenance", "true", true),
            ("maintenance", "FALSE", true),
            ("maintenance", "2", false),
            ("loglevel", "debug", true),
            ("loglevel", "WARN", true),
            ("loglevel", "loud", false),
            ("events_keep", "0", false),
        ];
        for (name, value, ok) in rows {
            assert_eq!(check(name, value).is_ok(), *ok, "{name}={value}");
        }
    }

    #[test]
    fn every_live_parameter_is_a_setting_and_every_default_parses() {
        assert_eq!(TIMINGS.first(), Some(&"notifier_timeout"));
        assert_eq!(TIMINGS.last(), Some(&"respawn_give_up"));
        for name in LIVE.iter().chain(TIMINGS) {
            assert!(is_param(name), "{name}");
        }
        for s in cltab::SETTINGS.iter().filter(|s| s.scope.is_setting()) {
            let d = default_text(s.name);
            if !d.is_empty() {
                assert!(check(s.name, d).is_ok(), "{}: {d}", s.name);
            }
        }
    }

    #[test]
    fn persisted_values_come_back_and_bad_ones_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = Params::default()
            .with_live("loglevel", Some("debug"), true)
            .unwrap()
            .with_live("events_keep", Some("50"), false)
            .unwrap();
        p.save(dir.path()).unwrap();
        let mut q = Params::default();
        assert!(q.load_persisted(dir.path()).unwrap().is_empty());
        assert_eq!(v(&q, "loglevel", &[]), ("debug".into(), Source::Persisted));
        assert_eq!(v(&q, "events_keep", &[]), ("10000".into(), Source::Default));
        std::fs::write(
            dir.path().join(FILE),
            r#"{"loglevel":"loud","socket":"/x"}"#,
        )
        .unwrap();
        let mut r = Params::default();
        assert_eq!(r.load_persisted(dir.path()).unwrap().len(), 2);
        assert_eq!(r, Params::default());
    }

    #[test]
    fn cltab_values_reads_only_settings_lines() {
        let text = "# :::loglevel:trace\n:::loglevel:debug\nweb:a:1:wait:true\n:a::stop_signal:HUP\n:::events_keep: 5 \n";
        assert_eq!(
            cltab_values(text),
            [
                ("loglevel".to_string(), "debug".to_string()),
                ("events_keep".to_string(), "5".to_string())
            ]
        );
    }
}
