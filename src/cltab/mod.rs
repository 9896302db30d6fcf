//! The cltab file: configuration model and parser.
//!
//! A cltab is Cluster::Init's inittab-like file. Each entry line is
//! `group:tag:levels:mode:command`; the command is everything after the fourth
//! colon. Lines `:::name:value` are settings. Parsing is pure (text in, model
//! or a list of every error out) so it is table-tested without files.
//!
//! Invariants of a parsed [`Cltab`]: tags are unique across the whole file,
//! group and tag are non-empty, every mode is known, every setting is known and
//! its value valid.

pub mod edit;
pub mod group;
pub use group::{FenceTimes, GroupOpts, Placement};
mod settings;

pub use settings::{
    Access, LogLevel, NotifierFormat, SETTINGS, Scope, SettingInfo, Settings, entry_option_names,
    is_entry_option, is_setting, on_off, parse_seconds, parse_signal, setting_names,
};

use crate::config::Timing;
use crate::schedule::Schedule;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How an entry runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Foreground: the level switch waits for it to exit.
    Wait,
    /// Background, started once, never restarted.
    Once,
    /// Background, restarted whenever it exits.
    Respawn,
    /// Never started; a running process of it is stopped.
    Off,
    /// Foreground; its exit status decides PASSED/FAILED for the group.
    Test,
    /// Background, run at the times of its `schedule` option while the group
    /// is at one of its levels; never restarted after a failure.
    Cron,
}

impl Mode {
    pub fn parse(s: &str) -> Option<Mode> {
        Some(match s {
            "wait" => Mode::Wait,
            "once" => Mode::Once,
            "respawn" => Mode::Respawn,
            "off" => Mode::Off,
            "test" => Mode::Test,
            "cron" => Mode::Cron,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Wait => "wait",
            Mode::Once => "once",
            Mode::Respawn => "respawn",
            Mode::Off => "off",
            Mode::Test => "test",
            Mode::Cron => "cron",
        }
    }

    /// Foreground entries block the start sequence until they exit.
    pub fn is_foreground(self) -> bool {
        matches!(self, Mode::Wait | Mode::Test)
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The levels field of an entry, kept as written.
///
/// A field with a comma is a list of labels (empty items ignored); a field
/// without a comma is a set of one-character levels; in both cases the whole
/// field also matches as one label.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Levels(String);

impl Levels {
    pub fn new(field: &str) -> Levels {
        Levels(field.to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn contains(&self, level: &str) -> bool {
        if level.is_empty() {
            return false;
        }
        if self.0 == level {
            return true;
        }
        if self.0.contains(',') {
            self.0
                .split(',')
                .any(|item| !item.is_empty() && item == level)
        } else {
            let mut chars = level.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) => self.0.contains(c),
                _ => false,
            }
        }
    }
}

/// One cltab entry line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub group: String,
    pub tag: String,
    pub levels: Levels,
    pub mode: Mode,
    pub command: String,
    /// 1-based line number in the file.
    pub line: usize,
    pub opts: EntryOpts,
}

/// An entry's notifier program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notifier {
    /// Run under `/bin/sh -c`. Shared by every entry that has it (a
    /// setting of the file is one string, not one copy per entry).
    pub command: std::sync::Arc<str>,
    pub format: NotifierFormat,
}

/// What an entry's option lines (and the file's settings) make of it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EntryOpts {
    /// Stop signal, stop timeouts, respawn policy, notifier timeout: the
    /// file's settings with the entry's options laid over them.
    pub timing: Timing,
    /// `cron` entries only.
    pub schedule: Option<Schedule>,
    pub notifier: Option<Notifier>,
    /// Its group is exclusive (`GROUP:::placement:exclusive`): in cluster
    /// mode its processes start only while this node owns the group.
    pub exclusive: bool,
    /// The entry's own option lines as (name, value), in file order, for
    /// display.
    pub written: Vec<(String, String)>,
}

impl Entry {
    /// Whether the entry should run (or have run) at `level`.
    pub fn wanted_at(&self, level: &str) -> bool {
        self.mode != Mode::Off && self.levels.contains(level)
    }
}

/// A parsed, valid cltab.
#[derive(Clone, Debug)]
pub struct Cltab {
    pub path: PathBuf,
    pub settings: Settings,
    /// Entries in file order.
    pub entries: Vec<Arc<Entry>>,
    /// The text this was parsed from: `create` and `delete` refuse to edit
    /// a file that no longer has it.
    pub text: String,
    /// Group options (`GROUP:::name:value`) of the groups that have some.
    pub groups: std::collections::BTreeMap<String, GroupOpts>,
}

impl Cltab {
    /// Group names in order of first appearance.
    pub fn groups(&self) -> Vec<&str> {
        let mut seen = std::collections::HashSet::new();
        self.entries
            .iter()
            .map(|e| e.group.as_str())
            .filter(|g| seen.insert(*g))
            .collect()
    }

    /// Each group (in order of first appearance) with its entries, in one
    /// pass (not one pass per group).
    pub fn by_group(&self) -> Vec<(&str, Vec<Arc<Entry>>)> {
        let mut index: std::collections::HashMap<&str, usize> = Default::default();
        let mut out: Vec<(&str, Vec<Arc<Entry>>)> = Vec::new();
        for e in &self.entries {
            let i = *index.entry(&e.group).or_insert_with(|| {
                out.push((&e.group, Vec::new()));
                out.len() - 1
            });
            out[i].1.push(e.clone());
        }
        out
    }

    pub fn entries_of<'a>(&'a self, group: &'a str) -> impl Iterator<Item = &'a Arc<Entry>> + 'a {
        self.entries.iter().filter(move |e| e.group == group)
    }

    /// A cltab with settings and no entries (the lock daemon's).
    pub fn empty(path: &Path, settings: Settings) -> Cltab {
        Cltab {
            path: path.to_path_buf(),
            settings,
            entries: Vec::new(),
            text: String::new(),
            groups: Default::default(),
        }
    }

    /// The options of `group` (defaults if it has none).
    pub fn group_opts(&self, group: &str) -> GroupOpts {
        self.groups.get(group).cloned().unwrap_or_default()
    }

    /// Whether `group` is exclusive.
    pub fn is_exclusive(&self, group: &str) -> bool {
        self.groups.get(group).is_some_and(GroupOpts::exclusive)
    }

    /// The exclusive groups, by name, with their options.
    pub fn exclusive_groups(&self) -> impl Iterator<Item = (&str, &GroupOpts)> {
        self.groups
            .iter()
            .filter(|(_, o)| o.exclusive())
            .map(|(g, o)| (g.as_str(), o))
    }

    /// The fencing timings of this cltab's settings (see [`FenceTimes`]).
    pub fn fence_times(&self) -> Result<FenceTimes, String> {
        FenceTimes::of(
            self.settings
                .lease_ttl
                .unwrap_or(crate::cluster::DEFAULT_LEASE_TTL),
            self.settings.fence_margin,
        )
    }

    /// Read and parse a cltab file.
    pub fn load(path: &Path) -> Result<Cltab, CltabErrors> {
        parse(path, &read_text(path)?)
    }

    /// [`Cltab::load`] with `over` (the daemon's parameters set on the
    /// command line or live) laid over the file's settings.
    pub fn load_over(path: &Path, over: &Settings) -> Result<Cltab, CltabErrors> {
        parse_shared(path, &read_text(path)?, over)
    }
}

/// The largest cltab clinit reads: 16 MiB, some 300,000 entries. A larger
/// file is refused before it is read whole (it would hold up a reread for
/// seconds and take hundreds of MB to parse).
pub const MAX_CLTAB_BYTES: u64 = 16 << 20;

enum Read {
    Io(std::io::Error),
    TooLarge(u64),
}

/// A file's bytes, at most [`MAX_CLTAB_BYTES`] (checked on its size first,
/// then on what is read: the file may grow meanwhile).
fn read_bounded(path: &Path) -> Result<Vec<u8>, Read> {
    use std::io::Read as _;
    let f = std::fs::File::open(path).map_err(Read::Io)?;
    let size = f.metadata().map_err(Read::Io)?.len();
    if size > MAX_CLTAB_BYTES {
        return Err(Read::TooLarge(size));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    f.take(MAX_CLTAB_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(Read::Io)?;
    if bytes.len() as u64 > MAX_CLTAB_BYTES {
        return Err(Read::TooLarge(bytes.len() as u64));
    }
    Ok(bytes)
}

/// A cltab file's text; a file that is not UTF-8 is an error naming the
/// line and byte of its first bad byte.
pub fn read_text(path: &Path) -> Result<String, CltabErrors> {
    let one = |line: usize, kind: ErrorKind| CltabErrors {
        errors: vec![CltabError {
            file: path.to_path_buf(),
            line,
            kind,
        }],
    };
    let bytes = read_bounded(path).map_err(|e| match e {
        Read::Io(e) => one(0, ErrorKind::Unreadable(e.to_string())),
        Read::TooLarge(size) => one(0, ErrorKind::TooLarge { size }),
    })?;
    String::from_utf8(bytes).map_err(|e| {
        let bytes = e.as_bytes();
        let at = e.utf8_error().valid_up_to();
        let line = bytes[..at].iter().filter(|b| **b == b'\n').count() + 1;
        let start = bytes[..at]
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |i| i + 1);
        one(
            line,
            ErrorKind::NotUtf8 {
                byte: at - start + 1,
            },
        )
    })
}

/// What is wrong with one line.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ErrorKind {
    #[error("cannot read the cltab: {0}")]
    Unreadable(String),
    #[error("byte {byte} of this line is not UTF-8 (a cltab is UTF-8 text)")]
    NotUtf8 { byte: usize },
    #[error(
        "the cltab is {size} bytes, more than the {} MiB clinit reads; split it or remove unused entries",
        MAX_CLTAB_BYTES >> 20
    )]
    TooLarge { size: u64 },
    #[error(
        "the log file name of entry {}:{} ({}.{}.log) would be {len} bytes, more than the {MAX_FILE_NAME} a file name may have; shorten the group or the tag",
        crate::logsafe::Safe(group),
        crate::logsafe::Safe(tag),
        crate::logsafe::Safe(group),
        crate::logsafe::Safe(tag)
    )]
    LogNameTooLong {
        group: String,
        tag: String,
        len: usize,
    },
    #[error("too few fields: expected group:tag:levels:mode:command")]
    TooFewFields,
    #[error("empty group name")]
    EmptyGroup,
    #[error("empty tag")]
    EmptyTag,
    #[error("bad {what} name '{}': {why}", crate::logsafe::Safe(name))]
    BadName {
        what: &'static str,
        name: String,
        why: String,
    },
    #[error("the command holds a NUL byte")]
    NulInCommand,
    #[error(
        "entry {0} in a node's local cltab: in cluster mode entries live in the shared cltab (clinit cluster push); the local cltab holds this node's settings only"
    )]
    LocalEntry(String),
    #[error("unknown mode '{0}' (expected wait, once, respawn, off, test or cron)")]
    UnknownMode(String),
    #[error("duplicate tag '{tag}' (first used on line {first_line})")]
    DuplicateTag { tag: String, first_line: usize },
    #[error(
        "entry {tag} of group {group} would write the log file {name} under logdir, as the entry on line {first_line} does"
    )]
    LogNameShared {
        group: String,
        tag: String,
        name: String,
        first_line: usize,
    },
    #[error("unknown setting '{0}' (known: {known})", known = setting_names().join(", "))]
    UnknownSetting(String),
    #[error("bad value '{value}' for setting '{name}': {why}")]
    BadSetting {
        name: String,
        value: String,
        why: String,
    },
    #[error("'{0}' is an entry option, not a setting: write it as :TAG::{0}:VALUE")]
    EntryOnlySetting(String),
    #[error("unknown option '{name}' for entry '{tag}' (known: {known})", known = entry_option_names().join(", "))]
    UnknownOption { tag: String, name: String },
    #[error("option line for tag '{0}', but no entry has that tag")]
    OptionForUnknownTag(String),
    #[error("option '{name}' for entry '{tag}' given twice (first on line {first_line})")]
    DuplicateOption {
        tag: String,
        name: String,
        first_line: usize,
    },
    #[error("bad value '{value}' for option '{name}' of entry '{tag}': {why}")]
    BadOption {
        tag: String,
        name: String,
        value: String,
        why: String,
    },
    #[error(
        "cron entry '{0}' has no schedule: add a line :{0}::schedule:SPEC (e.g. 03:00, sat 03:00, now, or */5 * * * *)"
    )]
    MissingSchedule(String),
    #[error("entry '{tag}' has a schedule but its mode is {mode}; only cron entries take one")]
    ScheduleNotCron { tag: String, mode: Mode },
    #[error("unknown option '{name}' for group '{group}' (known: placement, nodes)")]
    UnknownGroupOption { group: String, name: String },
    #[error("option line for group '{0}', but no entry is in that group")]
    OptionForUnknownGroup(String),
    #[error("option '{name}' for group '{group}' given twice (first on line {first_line})")]
    DuplicateGroupOption {
        group: String,
        name: String,
        first_line: usize,
    },
    #[error("bad value '{value}' for option '{name}' of group '{group}': {why}")]
    BadGroupOption {
        group: String,
        name: String,
        value: String,
        why: String,
    },
    #[error(
        "group '{0}' names nodes but is not exclusive: add {0}:::placement:exclusive (nodes only restrict exclusive groups)"
    )]
    NodesNotExclusive(String),
    #[error("exclusive group '{group}' cannot be fenced with these settings: {why}")]
    FenceTimes { group: String, why: String },
}

impl ErrorKind {
    /// Stable code of this error, for scripts and docs.
    pub fn code(&self) -> &'static str {
        match self {
            ErrorKind::Unreadable(_) => "CLTAB_UNREADABLE",
            ErrorKind::NotUtf8 { .. } => "CLTAB_NOT_UTF8",
            ErrorKind::TooLarge { .. } => "CLTAB_TOO_LARGE",
            ErrorKind::LogNameTooLong { .. } => "CLTAB_LOG_NAME_TOO_LONG",
            ErrorKind::TooFewFields => "CLTAB_TOO_FEW_FIELDS",
            ErrorKind::EmptyGroup => "CLTAB_EMPTY_GROUP",
            ErrorKind::EmptyTag => "CLTAB_EMPTY_TAG",
            ErrorKind::BadName { .. } => "CLTAB_BAD_NAME",
            ErrorKind::NulInCommand => "CLTAB_NUL_IN_COMMAND",
            ErrorKind::LocalEntry(_) => "CLTAB_LOCAL_ENTRY",
            ErrorKind::UnknownMode(_) => "CLTAB_UNKNOWN_MODE",
            ErrorKind::DuplicateTag { .. } => "CLTAB_DUPLICATE_TAG",
            ErrorKind::LogNameShared { .. } => "CLTAB_LOG_NAME_SHARED",
            ErrorKind::UnknownSetting(_) => "CLTAB_UNKNOWN_SETTING",
            ErrorKind::BadSetting { .. } => "CLTAB_BAD_SETTING",
            ErrorKind::EntryOnlySetting(_) => "CLTAB_ENTRY_ONLY_SETTING",
            ErrorKind::UnknownOption { .. } => "CLTAB_UNKNOWN_OPTION",
            ErrorKind::OptionForUnknownTag(_) => "CLTAB_OPTION_UNKNOWN_TAG",
            ErrorKind::DuplicateOption { .. } => "CLTAB_DUPLICATE_OPTION",
            ErrorKind::BadOption { .. } => "CLTAB_BAD_OPTION",
            ErrorKind::MissingSchedule(_) => "CLTAB_MISSING_SCHEDULE",
            ErrorKind::ScheduleNotCron { .. } => "CLTAB_SCHEDULE_NOT_CRON",
            ErrorKind::UnknownGroupOption { .. } => "CLTAB_UNKNOWN_GROUP_OPTION",
            ErrorKind::OptionForUnknownGroup(_) => "CLTAB_OPTION_UNKNOWN_GROUP",
            ErrorKind::DuplicateGroupOption { .. } => "CLTAB_DUPLICATE_GROUP_OPTION",
            ErrorKind::BadGroupOption { .. } => "CLTAB_BAD_GROUP_OPTION",
            ErrorKind::NodesNotExclusive(_) => "CLTAB_NODES_NOT_EXCLUSIVE",
            ErrorKind::FenceTimes { .. } => "CLTAB_FENCE_TIMES",
        }
    }
}

/// One error, naming file and line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CltabError {
    pub file: PathBuf,
    pub line: usize,
    pub kind: ErrorKind,
}

impl fmt::Display for CltabError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(
                f,
                "{}: {} [{}]",
                self.file.display(),
                self.kind,
                self.kind.code()
            )
        } else {
            write!(
                f,
                "{}:{}: {} [{}]",
                self.file.display(),
                self.line,
                self.kind,
                self.kind.code()
            )
        }
    }
}

/// Every error found in one cltab, in line order.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct CltabErrors {
    pub errors: Vec<CltabError>,
}

impl fmt::Display for CltabErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl CltabErrors {
    pub fn lines(&self) -> Vec<String> {
        self.errors.iter().map(|e| e.to_string()).collect()
    }
}

/// The longest group or tag name, in bytes.
pub const MAX_NAME: usize = 255;

/// Whether `name` may be a group or a tag name, as the parser and `clinit
/// create` both check it: at most [`MAX_NAME`] bytes, no control
/// character (a newline would split the line, a NUL ends a C string), no
/// `/` (with `logdir`, names become file names `GROUP.TAG.log`), not
/// starting with `#` (the line would be a comment) and no `:` (the field
/// separator). The reason when not.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.len() > MAX_NAME {
        Err(format!(
            "{} bytes, more than the {MAX_NAME} allowed",
            name.len()
        ))
    } else if name.chars().any(char::is_control) {
        Err("it holds a control character (newline, NUL, ...)".into())
    } else if name.contains('/') {
        Err("it holds a '/'".into())
    } else if name.contains(':') {
        Err("it holds a ':'".into())
    } else if name.starts_with('#') {
        Err("it starts with '#'".into())
    } else if name.trim() != name {
        Err("it starts or ends with blanks".into())
    } else {
        Ok(())
    }
}

/// The longest file name the system takes (NAME_MAX).
const MAX_FILE_NAME: usize = 255;

/// An entry's output log is `GROUP.TAG.log` (under `logdir`): that must be
/// one file name the system takes. `Err`: its length in bytes.
pub fn check_log_name(group: &str, tag: &str) -> Result<(), usize> {
    let len = group.len() + 1 + tag.len() + ".log".len();
    if len > MAX_FILE_NAME {
        Err(len)
    } else {
        Ok(())
    }
}

/// Split a line into at most five fields: the fifth keeps its colons.
fn split_fields(line: &str) -> Option<[&str; 5]> {
    let mut it = line.splitn(5, ':');
    Some([it.next()?, it.next()?, it.next()?, it.next()?, it.next()?])
}

/// The settings of the cltab file at `path` (none if it cannot be read),
/// as a client reads them.
pub fn file_settings(path: &Path) -> Settings {
    std::fs::read_to_string(path)
        .map(|t| scan_settings(&t))
        .unwrap_or_default()
}

/// Parse cltab text. `path` is only used in error messages and kept in the model.
pub fn parse(path: &Path, text: &str) -> Result<Cltab, CltabErrors> {
    parse_under(path, text, None)
}

/// Parse a cluster's shared cltab `text` for a node whose local cltab has
/// the settings `local`: every setting `local` sets wins over the shared
/// one, for the file and for every entry (as if the local lines came last).
pub fn parse_shared(path: &Path, text: &str, local: &Settings) -> Result<Cltab, CltabErrors> {
    parse_under(path, text, Some(local))
}

fn parse_under(path: &Path, text: &str, local: Option<&Settings>) -> Result<Cltab, CltabErrors> {
    let mut errors = Vec::new();
    let mut entries: Vec<Entry> = Vec::new();
    let mut settings = Settings::default();
    // Option lines: (line, tag, name, value).
    let mut options: Vec<(usize, String, String, String)> = Vec::new();
    // Group option lines: (line, group, name, value).
    let mut group_options: Vec<(usize, String, String, String)> = Vec::new();
    // Where each tag is in `entries`: lookups stay O(1), so parsing is
    // linear in the number of lines.
    let mut by_tag: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut err = |line: usize, kind: ErrorKind| {
        errors.push(CltabError {
            file: path.to_path_buf(),
            line,
            kind,
        })
    };

    for (idx, raw) in text.lines().enumerate() {
        let line_no = idx + 1;
        let line = raw.trim_end_matches('\r');
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let Some([group, tag, levels, mode, command]) = split_fields(line) else {
            err(line_no, ErrorKind::TooFewFields);
            continue;
        };
        let (group, tag, levels, mode) = (group.trim(), tag.trim(), levels.trim(), mode.trim());

        if group.is_empty() && tag.is_empty() && levels.is_empty() {
            // A settings line: `:::name:value`.
            if !is_setting(mode) && is_entry_option(mode) {
                err(line_no, ErrorKind::EntryOnlySetting(mode.to_string()));
            } else if let Err(kind) = settings.set(mode, command.trim()) {
                err(line_no, kind);
            }
            continue;
        }
        if group.is_empty() && !tag.is_empty() && levels.is_empty() {
            // An entry option line: `:TAG::name:value`.
            options.push((
                line_no,
                tag.to_string(),
                mode.to_string(),
                command.trim().to_string(),
            ));
            continue;
        }
        if !group.is_empty() && tag.is_empty() && levels.is_empty() {
            // A group option line: `GROUP:::name:value`.
            group_options.push((
                line_no,
                group.to_string(),
                mode.to_string(),
                command.trim().to_string(),
            ));
            continue;
        }
        if group.is_empty() {
            err(line_no, ErrorKind::EmptyGroup);
        }
        if tag.is_empty() {
            err(line_no, ErrorKind::EmptyTag);
        }
        let mut bad = false;
        for (what, name) in [("group", group), ("tag", tag)] {
            if let Err(why) = check_name(name) {
                err(
                    line_no,
                    ErrorKind::BadName {
                        what,
                        name: name.to_string(),
                        why,
                    },
                );
                bad = true;
            }
        }
        if !bad && let Err(len) = check_log_name(group, tag) {
            err(
                line_no,
                ErrorKind::LogNameTooLong {
                    group: group.to_string(),
                    tag: tag.to_string(),
                    len,
                },
            );
            bad = true;
        }
        if command.contains('\0') {
            err(line_no, ErrorKind::NulInCommand);
            bad = true;
        }
        if bad {
            continue;
        }
        let parsed_mode = Mode::parse(mode);
        if parsed_mode.is_none() {
            err(line_no, ErrorKind::UnknownMode(mode.to_string()));
        }
        if !tag.is_empty()
            && let Some(&first) = by_tag.get(tag)
        {
            err(
                line_no,
                ErrorKind::DuplicateTag {
                    tag: tag.to_string(),
                    first_line: entries[first].line,
                },
            );
            continue;
        }
        if let (Some(mode), false, false) = (parsed_mode, group.is_empty(), tag.is_empty()) {
            by_tag.insert(tag.to_string(), entries.len());
            entries.push(Entry {
                group: group.to_string(),
                tag: tag.to_string(),
                levels: Levels::new(levels),
                mode,
                command: command.to_string(),
                line: line_no,
                opts: EntryOpts::default(),
            });
        }
    }

    if let Some(local) = local {
        settings = settings.overridden_by(local);
    }
    // Under logdir each entry writes GROUP.TAG.log: group `a.b` tag `c`
    // and group `a` tag `b.c` would share one file.
    if settings.logdir.is_some() {
        let mut names: std::collections::HashMap<String, usize> = Default::default();
        for e in &entries {
            let name = format!("{}.{}.log", e.group, e.tag);
            match names.get(&name) {
                Some(&first) => err(
                    e.line,
                    ErrorKind::LogNameShared {
                        group: e.group.clone(),
                        tag: e.tag.clone(),
                        name,
                        first_line: first,
                    },
                ),
                None => {
                    names.insert(name, e.line);
                }
            }
        }
    }
    // Entry options, then every entry resolved against the file's settings.
    let mut scoped: Vec<(Settings, Vec<(String, usize)>)> =
        vec![(Settings::default(), Vec::new()); entries.len()];
    let mut bad_schedule: Vec<String> = Vec::new();
    for (line_no, tag, name, value) in options {
        let Some(&i) = by_tag.get(&tag) else {
            err(line_no, ErrorKind::OptionForUnknownTag(tag));
            continue;
        };
        if !is_entry_option(&name) {
            err(line_no, ErrorKind::UnknownOption { tag, name });
            continue;
        }
        let (opts, seen) = &mut scoped[i];
        if let Some((_, first_line)) = seen.iter().find(|(n, _)| *n == name) {
            let first_line = *first_line;
            err(
                line_no,
                ErrorKind::DuplicateOption {
                    tag,
                    name,
                    first_line,
                },
            );
            continue;
        }
        match opts.set(&name, &value) {
            Ok(()) => {
                seen.push((name.clone(), line_no));
                entries[i].opts.written.push((name, value));
            }
            Err(ErrorKind::BadSetting { name, value, why }) => {
                if name == "schedule" {
                    bad_schedule.push(tag.clone());
                }
                err(
                    line_no,
                    ErrorKind::BadOption {
                        tag,
                        name,
                        value,
                        why,
                    },
                )
            }
            Err(other) => err(line_no, other),
        }
    }
    // Group options, checked against the groups the entries make.
    let mut groups: std::collections::BTreeMap<String, GroupOpts> = Default::default();
    let mut group_seen: Vec<(String, String, usize)> = Vec::new();
    for (line_no, g, name, value) in group_options {
        if !entries.iter().any(|e| e.group == g) {
            err(line_no, ErrorKind::OptionForUnknownGroup(g));
            continue;
        }
        if !group::GROUP_OPTIONS.contains(&name.as_str()) {
            err(line_no, group::unknown(&g, &name));
            continue;
        }
        if let Some((_, _, first_line)) =
            group_seen.iter().find(|(gg, n, _)| *gg == g && *n == name)
        {
            let first_line = *first_line;
            err(
                line_no,
                ErrorKind::DuplicateGroupOption {
                    group: g,
                    name,
                    first_line,
                },
            );
            continue;
        }
        group_seen.push((g.clone(), name.clone(), line_no));
        let opts = groups.entry(g.clone()).or_default();
        if opts.line == 0 || name == "placement" {
            opts.line = line_no;
        }
        if let Err(why) = group::set(opts, &name, &value) {
            err(
                line_no,
                ErrorKind::BadGroupOption {
                    group: g,
                    name,
                    value,
                    why,
                },
            );
        }
    }
    let fence = FenceTimes::of(
        settings
            .lease_ttl
            .unwrap_or(crate::cluster::DEFAULT_LEASE_TTL),
        settings.fence_margin,
    );
    for (g, opts) in &groups {
        if !opts.nodes.is_empty() && !opts.exclusive() {
            err(opts.line, ErrorKind::NodesNotExclusive(g.clone()));
        }
        if let (true, Err(why)) = (opts.exclusive(), &fence) {
            err(
                opts.line,
                ErrorKind::FenceTimes {
                    group: g.clone(),
                    why: why.clone(),
                },
            );
        }
    }
    for (entry, (own, _)) in entries.iter_mut().zip(scoped) {
        entry.opts.exclusive = groups.get(&entry.group).is_some_and(GroupOpts::exclusive);
        let eff = settings.overlay(&own);
        match (entry.mode, &eff.schedule) {
            (Mode::Cron, None) if !bad_schedule.contains(&entry.tag) => {
                err(entry.line, ErrorKind::MissingSchedule(entry.tag.clone()))
            }
            (mode, Some(_)) if mode != Mode::Cron => err(
                entry.line,
                ErrorKind::ScheduleNotCron {
                    tag: entry.tag.clone(),
                    mode,
                },
            ),
            _ => {}
        }
        entry.opts.timing = Timing::resolve(&eff);
        entry.opts.schedule = eff.schedule.clone();
        entry.opts.notifier = eff.notifier.clone().map(|command| Notifier {
            command,
            format: eff.notifier_format.unwrap_or_default(),
        });
    }

    errors.sort_by_key(|e| e.line);
    if errors.is_empty() {
        Ok(Cltab {
            path: path.to_path_buf(),
            settings,
            entries: entries.into_iter().map(Arc::new).collect(),
            text: text.to_string(),
            groups,
        })
    } else {
        Err(CltabErrors { errors })
    }
}

/// Read only the settings of a cltab, ignoring entry errors: the client uses
/// this to find the socket path. Unknown or bad settings are ignored here
/// (the daemon reports them).
pub fn scan_settings(text: &str) -> Settings {
    let mut settings = Settings::default();
    for raw in text.lines() {
        let line = raw.trim_end_matches('\r');
        if let Some([g, t, l, name, value]) = split_fields(line)
            && g.trim().is_empty()
            && t.trim().is_empty()
            && l.trim().is_empty()
        {
            let _ = settings.set(name.trim(), value.trim());
        }
    }
    settings
}

#[cfg(test)]
mod tests;
