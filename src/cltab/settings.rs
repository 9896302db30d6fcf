//! Settings lines (`:::name:value`) and per-entry option lines
//! (`:TAG::name:value`), defined once in [`SETTINGS`].
//!
//! Precedence, as in Cluster::Init: embedded default < command-line flag <
//! cltab setting < entry option. A [`Settings`] holds only what one scope of
//! the cltab said (the whole file, or one entry); resolving against defaults
//! and flags happens in [`crate::config`].
//!
//! One table: the `settings!` invocation below declares each name once,
//! with its type, where it may be written, its parser and its help line.
//! The struct fields, [`Settings::set`], [`Settings::overlay`], the list
//! of entry options and `clinit create`'s option flags all come from it,
//! so a new setting or entry option is one line here.

use super::ErrorKind;
use crate::schedule::Schedule;
use nix::sys::signal::Signal;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// Where a name may be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Only as a setting of the whole file (`:::name:value`).
    File,
    /// As a setting, and as an entry option that overrides it for one
    /// entry (`:TAG::name:value`).
    Both,
    /// Only as an entry option.
    Entry,
}

impl Scope {
    /// Allowed in a `:::name:value` line.
    pub fn is_setting(self) -> bool {
        self != Scope::Entry
    }

    /// Allowed in a `:TAG::name:value` line.
    pub fn is_option(self) -> bool {
        self != Scope::File
    }
}

/// One row of the table: what the docs, the parser and the CLI know of a
/// name.
#[derive(Clone, Copy, Debug)]
pub struct SettingInfo {
    pub name: &'static str,
    pub scope: Scope,
    /// What the value is, for help texts (`SECS`, `PATH`, ...).
    pub value_name: &'static str,
    /// One line saying what it does.
    pub help: &'static str,
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

/// Who may use a service of the daemon (`lock_access`, `record_access`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Access {
    /// Everyone who can connect (the default for locks and records).
    #[default]
    Anyone,
    /// Only those who may change things: root, the daemon's user and the
    /// UserList.
    Userlist,
}

impl Access {
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Anyone => "anyone",
            Access::Userlist => "userlist",
        }
    }
}

/// The daemon log's level (`loglevel`).
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    #[default]
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub const ALL: [LogLevel; 5] = [
        LogLevel::Error,
        LogLevel::Warn,
        LogLevel::Info,
        LogLevel::Debug,
        LogLevel::Trace,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }

    pub fn parse(value: &str) -> Result<LogLevel, String> {
        let v = value.to_ascii_lowercase();
        LogLevel::ALL
            .into_iter()
            .find(|l| l.as_str() == v || (v == "warning" && *l == LogLevel::Warn))
            .ok_or_else(|| "expected error, warn, info, debug or trace".into())
    }
}

macro_rules! settings {
    ($( $name:ident : $ty:ty = $scope:ident, $value_name:literal, $parse:expr, $help:literal; )*) => {
        /// Values set in one scope of a cltab; `None` means "not set here".
        #[derive(Clone, Debug, Default, PartialEq, Eq)]
        pub struct Settings {
            $( #[doc = $help] pub $name: Option<$ty>, )*
        }

        /// Every setting and entry option, in the order of the docs.
        pub const SETTINGS: &[SettingInfo] = &[
            $( SettingInfo {
                name: stringify!($name),
                scope: Scope::$scope,
                value_name: $value_name,
                help: $help,
            }, )*
        ];

        impl Settings {
            /// Apply one settings or option line (the caller checks that
            /// `name` is allowed in its scope).
            pub fn set(&mut self, name: &str, value: &str) -> Result<(), ErrorKind> {
                match name {
                    $( stringify!($name) => {
                        let parse: fn(&str) -> Result<$ty, String> = $parse;
                        self.$name = Some(parse(value).map_err(|why| bad(name, value, &why))?);
                    } )*
                    _ => return Err(ErrorKind::UnknownSetting(name.to_string())),
                }
                Ok(())
            }

            /// These settings (a shared cltab's) with every setting that
            /// `local` (a node's local cltab) sets laid over them.
            pub fn overridden_by(&self, local: &Settings) -> Settings {
                let mut out = self.clone();
                $( if local.$name.is_some() {
                    out.$name = local.$name.clone();
                } )*
                out
            }

            /// These settings with an entry's options laid over them.
            pub fn overlay(&self, entry: &Settings) -> Settings {
                let mut out = self.clone();
                $( if Scope::$scope.is_option() && entry.$name.is_some() {
                    out.$name = entry.$name.clone();
                } )*
                out
            }
        }
    };
}

settings! {
    socket: PathBuf = File, "PATH", path,
        "the daemon's UNIX socket";
    clstat: PathBuf = File, "PATH", path,
        "the status file, in Cluster::Init's format";
    log: PathBuf = File, "PATH", path,
        "the daemon's log, which also takes the children's output";
    logdir: PathBuf = File, "DIR", path,
        "a directory for per-entry output files GROUP.TAG.log";
    state: PathBuf = File, "DIR", path,
        "the directory of the persistent state (goals, stopped entries, children, records)";
    socket_mode: u32 = File, "MODE", octal_mode,
        "the socket's permissions, in octal";
    socket_group: String = File, "GROUP", group_name,
        "the group that owns the socket";
    userlist: PathBuf = File, "PATH", path,
        "the UserList: users who may change things besides root and the daemon's user";
    restore_timeout: Duration = File, "SECS", parse_seconds,
        "how long start-up waits for restored groups to settle before serving";
    loglevel: LogLevel = File, "LEVEL", LogLevel::parse,
        "the daemon log's level: error, warn, info (default), debug or trace";
    log_prefix: bool = File, "on|off", on_off,
        "prefix each line children write to the shared log with their group:tag, through a pipe the daemon reads (default on); off: children write to the log file directly";
    lwords_keep: usize = File, "N", positive_count,
        "how many recent log records of every level the daemon keeps in memory as last words, written out when something goes wrong (default 1000)";
    maintenance: bool = File, "on|off", on_off,
        "maintenance mode: keep every process as it is; start, restart and stop nothing, refuse tells (default off)";
    events_keep: usize = File, "N", positive_count,
        "how many recent events the daemon keeps for `clinit events` (default 10000)";
    client_timeout: Duration = File, "SECS", parse_seconds,
        "how long a client may take to send its hello, and any frame from its first byte to its last (default 10)";
    lease_ttl_max: Duration = File, "SECS", parse_seconds,
        "the longest lease TTL a client may ask for (default 3600)";
    peer_locks_max: usize = File, "N", positive_count,
        "how many locks one user may hold and wait for at once, root and the daemon's user excepted (default 1024)";
    peer_leases_max: usize = File, "N", positive_count,
        "how many live leases one user may have, root and the daemon's user excepted (default 64)";
    record_container_max: usize = File, "N", positive_count,
        "how many records one container may hold (default 10000)";
    record_container_bytes_max: usize = File, "BYTES", byte_count,
        "how many bytes of values one container may hold (default 67108864, 64 MiB)";
    record_bytes_max: usize = File, "BYTES", byte_count,
        "how many bytes of values the whole record store may hold (default 1073741824, 1 GiB)";
    peer_records_max: usize = File, "N", positive_count,
        "how many records one user (uid or certificate) may have last written, root and the daemon's user excepted (default 10000)";
    peer_record_bytes_max: usize = File, "BYTES", byte_count,
        "how many bytes of values the records one user last wrote may hold, root and the daemon's user excepted (default 67108864, 64 MiB)";
    peer_frame_bytes_max: usize = File, "BYTES", byte_count,
        "how many bytes of large frames (over 64 KiB) one user's connections may be receiving at once, root and the daemon's user excepted (default 16777216, 16 MiB)";
    peer_connections_max: usize = File, "N", positive_count,
        "how many connections one user (uid or certificate) may have open at once, root and the daemon's user excepted (default 256)";
    cgroup: crate::supervisor::cgroup::CgroupMode = File, "MODE", crate::supervisor::cgroup::CgroupMode::parse,
        "where each entry's processes are kept: auto (default: a cgroup v2 directory beside the daemon's own cgroup, if one can be made), off, or a cgroup v2 directory to make the daemon's under";
    etcd: Vec<String> = File, "URLS", endpoints,
        "etcd endpoints, comma-separated (http://127.0.0.1:2379,...): setting it turns cluster mode on";
    node: String = File, "NAME", node_name,
        "this node's name in the cluster (default: the host name)";
    cluster: String = File, "NAME", node_name,
        "the cluster's name, the prefix of its keys in etcd (default clinit), so several clusters can share one etcd";
    lease_ttl: Duration = File, "SECS", parse_seconds,
        "the TTL of this node's etcd lease: how long after its last keep-alive a dead or cut-off node counts as gone (default 10)";
    fence_margin: Duration = File, "SECS", parse_seconds,
        "how long before its lease can expire an exclusive group's watchdog SIGKILLs the group when renewals fail (default lease_ttl/6, at least 0.2)";
    hw_watchdog: PathBuf = File, "PATH", path,
        "a watchdog device (/dev/watchdog, softdog) the fencing watchdog feeds while this node owns an exclusive group: a node that stops renewing is reset";
    ineligible_for: Duration = File, "SECS", parse_seconds,
        "how long a node whose exclusive group FAILED (a test entry failed) stays ineligible for that group (default 60)";
    etcd_ca: PathBuf = File, "PATH", path,
        "the CA certificate (PEM) that etcd's server certificate must chain to (https endpoints)";
    etcd_cert: PathBuf = File, "PATH", path,
        "this node's client certificate (PEM) for etcd";
    etcd_key: PathBuf = File, "PATH", path,
        "the key (PEM) of etcd_cert";
    etcd_user: String = File, "NAME", node_name,
        "the etcd user to authenticate as (with etcd_password_file)";
    etcd_password_file: PathBuf = File, "PATH", path,
        "a file holding etcd_user's password (its first line)";
    listen: Vec<String> = File, "ADDRS", listen_addrs,
        "TCP addresses to serve remote administration on, comma-separated (HOST, HOST:PORT, [IPV6]:PORT; port 4072 when none is given): mutual TLS with tls_ca, tls_cert and tls_key (default: no TCP listener)";
    tls_ca: PathBuf = File, "PATH", path,
        "the CA certificate (PEM) that remote clients' certificates must chain to (default /etc/clinit/tls/ca.pem)";
    tls_cert: PathBuf = File, "PATH", path,
        "the daemon's certificate (PEM) for its TCP listener (default /etc/clinit/tls/cert.pem)";
    tls_key: PathBuf = File, "PATH", path,
        "the key (PEM) of tls_cert (default /etc/clinit/tls/key.pem)";
    tls_handshake_timeout: Duration = File, "SECS", parse_seconds,
        "how long a remote client may take to finish its TLS handshake before it is closed (default 5)";
    listen_connections_max: usize = File, "N", positive_count,
        "how many remote (TCP) connections the daemon serves at once (default 256)";
    http_listen: String = File, "ADDR", http_addr,
        "the HTTP listener of /metrics and the status page, HOST:PORT (port 0: a free one); plain HTTP on loopback, HTTPS with the tls_* files and client certificates elsewhere (default: none)";
    lock_access: Access = File, "WHO", access,
        "who may take locks: anyone (default) or userlist (who may change things)";
    record_access: Access = File, "WHO", access,
        "who may use records: anyone (default) or userlist (who may change things)";
    schedule: Schedule = Entry, "SPEC", schedule,
        "when a cron entry runs: now, HH:MM, \"sat 03:00\", \"3:00 pm\", or a cron expression such as \"*/5 * * * *\"";
    notifier: std::sync::Arc<str> = Both, "PROG", command,
        "a program run under /bin/sh -c after every exit, fed the exit record";
    notifier_format: NotifierFormat = Both, "FORMAT", notifier_format,
        "the notifier's record: bos (AFS BOS bnode record) or json";
    notifier_timeout: Duration = Both, "SECS", parse_seconds,
        "kill the notifier after this many seconds";
    stop_signal: Signal = Both, "SIG", parse_signal,
        "the first stop signal (default INT)";
    stop_term_after: Duration = Both, "SECS", parse_seconds,
        "seconds from the first stop signal to SIGTERM";
    stop_kill_after: Duration = Both, "SECS", parse_seconds,
        "seconds from SIGTERM to SIGKILL";
    respawn_fast: Duration = Both, "SECS", parse_seconds,
        "a run shorter than this is a rapid restart";
    respawn_burst: u32 = Both, "N", count,
        "rapid restarts allowed before throttling";
    respawn_delay: Duration = Both, "SECS", parse_seconds,
        "the first throttle delay";
    respawn_delay_max: Duration = Both, "SECS", parse_seconds,
        "the longest throttle delay";
    respawn_reset: Duration = Both, "SECS", parse_seconds,
        "a run this long clears the rapid-restart count";
    respawn_give_up: u32 = Both, "N", count,
        "stop restarting after N rapid restarts in a row (0: never)";
}

/// The row of `name`, if it is a setting or an entry option.
pub fn info(name: &str) -> Option<&'static SettingInfo> {
    SETTINGS.iter().find(|s| s.name == name)
}

/// Whether `name` may be set in a `:::name:value` line.
pub fn is_setting(name: &str) -> bool {
    info(name).is_some_and(|s| s.scope.is_setting())
}

/// Whether `name` may be given in a `:TAG::name:value` line.
pub fn is_entry_option(name: &str) -> bool {
    info(name).is_some_and(|s| s.scope.is_option())
}

/// Every setting name, for error messages and docs.
pub fn setting_names() -> Vec<&'static str> {
    SETTINGS
        .iter()
        .filter(|s| s.scope.is_setting())
        .map(|s| s.name)
        .collect()
}

/// Every entry option name, in table order.
pub fn entry_option_names() -> Vec<&'static str> {
    SETTINGS
        .iter()
        .filter(|s| s.scope.is_option())
        .map(|s| s.name)
        .collect()
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

fn path(value: &str) -> Result<PathBuf, String> {
    if value.is_empty() {
        Err("expected a path".into())
    } else {
        Ok(PathBuf::from(value))
    }
}

/// The non-empty items of a comma-separated list, trimmed.
fn comma_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_string)
        .collect()
}

fn listen_addrs(value: &str) -> Result<Vec<String>, String> {
    let addrs = comma_list(value);
    if addrs.is_empty() {
        return Err("expected addresses such as 0.0.0.0:4072 or [::]:4072".into());
    }
    for a in &addrs {
        crate::tls::parse_listen(a)?;
    }
    Ok(addrs)
}

fn endpoints(value: &str) -> Result<Vec<String>, String> {
    let urls = comma_list(value);
    if urls.is_empty() {
        return Err("expected etcd endpoints such as http://127.0.0.1:2379".into());
    }
    match urls
        .iter()
        .find(|u| !(u.starts_with("http://") || u.starts_with("https://")))
    {
        Some(u) => Err(format!("{u} is not an http:// or https:// URL")),
        None => Ok(urls),
    }
}

/// A node, cluster or user name: what a key of etcd may hold between
/// slashes.
fn node_name(value: &str) -> Result<String, String> {
    if value.is_empty() || value.len() > 255 {
        Err("expected a name of 1 to 255 bytes".into())
    } else if value.contains('/') || value.chars().any(|c| c.is_control() || c.is_whitespace()) {
        Err("a name holds no '/', blank or control character".into())
    } else {
        Ok(value.to_string())
    }
}

fn octal_mode(value: &str) -> Result<u32, String> {
    u32::from_str_radix(value, 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| "expected an octal mode such as 0600".into())
}

fn group_name(value: &str) -> Result<String, String> {
    if value.is_empty() {
        Err("expected a group name or number".into())
    } else {
        Ok(value.to_string())
    }
}

fn count(value: &str) -> Result<u32, String> {
    value
        .parse::<u32>()
        .map_err(|_| "expected a whole number".into())
}

fn positive_count(value: &str) -> Result<usize, String> {
    value
        .parse::<usize>()
        .ok()
        .filter(|n| (1..=10_000_000).contains(n))
        .ok_or_else(|| "expected a whole number from 1 to 10000000".into())
}

/// A size in bytes: from 1 to 1 TiB (the byte limits' defaults are
/// above [`positive_count`]'s range).
fn byte_count(value: &str) -> Result<usize, String> {
    value
        .parse::<usize>()
        .ok()
        .filter(|n| (1..=1usize << 40).contains(n))
        .ok_or_else(|| "expected a number of bytes from 1 to 1099511627776 (1 TiB)".into())
}

fn access(value: &str) -> Result<Access, String> {
    match value {
        "anyone" => Ok(Access::Anyone),
        "userlist" => Ok(Access::Userlist),
        _ => Err("expected anyone or userlist".into()),
    }
}

/// A boolean: on/off, 1/0, true/false, yes/no.
pub fn on_off(value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "on" | "1" | "true" | "yes" => Ok(true),
        "off" | "0" | "false" | "no" => Ok(false),
        _ => Err("expected on or off (1/0, true/false)".into()),
    }
}

fn http_addr(value: &str) -> Result<String, String> {
    crate::tls::parse_http_listen(value)?;
    Ok(value.to_string())
}

fn command(value: &str) -> Result<std::sync::Arc<str>, String> {
    if value.is_empty() {
        Err("expected a command".into())
    } else if value.contains('\0') {
        Err("the command holds a NUL byte".into())
    } else {
        Ok(value.into())
    }
}

fn notifier_format(value: &str) -> Result<NotifierFormat, String> {
    match value {
        "bos" => Ok(NotifierFormat::Bos),
        "json" => Ok(NotifierFormat::Json),
        _ => Err("expected bos or json".into()),
    }
}

fn schedule(value: &str) -> Result<Schedule, String> {
    Schedule::parse(value).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table's scopes, as the docs list them: which names are settings,
    /// which entry options, which both.
    #[test]
    fn scopes_of_the_table() {
        let rows: &[(&str, bool, bool)] = &[
            ("socket", true, false),
            ("events_keep", true, false),
            ("lock_access", true, false),
            ("record_access", true, false),
            ("schedule", false, true),
            ("notifier", true, true),
            ("stop_signal", true, true),
            ("respawn_give_up", true, true),
            ("no_such", false, false),
        ];
        for (name, setting, option) in rows {
            assert_eq!(is_setting(name), *setting, "{name}");
            assert_eq!(is_entry_option(name), *option, "{name}");
        }
        assert_eq!(
            entry_option_names(),
            [
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
            ]
        );
    }

    #[test]
    fn overlay_takes_only_entry_options() {
        let mut file = Settings::default();
        file.set("socket", "/a").unwrap();
        file.set("stop_signal", "TERM").unwrap();
        file.set("respawn_burst", "3").unwrap();
        let mut entry = Settings::default();
        entry.set("stop_signal", "HUP").unwrap();
        // Not an option: an entry scope never holds it, but if it did, the
        // overlay would not take it.
        entry.socket = Some("/b".into());
        let eff = file.overlay(&entry);
        assert_eq!(eff.stop_signal, Some(Signal::SIGHUP));
        assert_eq!(eff.respawn_burst, Some(3));
        assert_eq!(eff.socket, Some(PathBuf::from("/a")));
    }

    #[test]
    fn values_are_checked() {
        let rows: &[(&str, &str, bool)] = &[
            ("events_keep", "1", true),
            ("events_keep", "0", false),
            ("events_keep", "x", false),
            ("lock_access", "userlist", true),
            ("lock_access", "nobody", false),
            ("record_access", "anyone", true),
            ("socket_mode", "0660", true),
            ("socket_mode", "999", false),
            ("notifier_format", "json", true),
            ("notifier_format", "xml", false),
            ("listen", "0.0.0.0:4072", true),
            ("listen", "node1, [::]:5000", true),
            ("listen", "[::1]", true),
            ("listen", "node1:http", false),
            ("listen", " , ", false),
            ("listen", "[::1", false),
            ("listen_connections_max", "0", false),
            ("tls_handshake_timeout", "0.5", true),
        ];
        for (name, value, ok) in rows {
            let r = Settings::default().set(name, value);
            assert_eq!(r.is_ok(), *ok, "{name}={value}: {r:?}");
            if let Err(ErrorKind::BadSetting {
                name: n, value: v, ..
            }) = r
            {
                assert_eq!((n.as_str(), v.as_str()), (*name, *value));
            }
        }
    }
}
