//! `clinit survey`: a table of groups, entries or locks with the columns,
//! filters and sort order the caller chooses (pure: rows in, text out).
//!
//! Two spellings of one query:
//!
//! - named: `clinit survey entries --columns group,tag,state
//!   --filter group=web --sort -restarts`;
//! - cdadm's compact form: `clinit survey -e +gtsp group=web s:t`: `-g`,
//!   `-e` or `-l` picks the table, `+LETTERS` the columns (one letter
//!   each, [`Table::letters`]), `NAME=VALUE` words filter, and a word
//!   with a colon sorts (`s:t`: by state, then tag; a `-` after a letter
//!   sorts that key descending: `r-:t`).
//!
//! Filters: `NAME=VALUE`, `NAME!=VALUE` (text, case-insensitive; a
//! trailing `*` matches a prefix), `NAME<N`, `NAME>N` (numbers).

use crate::lock::ContainerStatus;
use crate::proto::GroupStatus;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Which table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Table {
    Groups,
    Entries,
    Locks,
}

/// One column: its name, its compact letter, and what it shows.
pub struct Column {
    pub name: &'static str,
    pub letter: char,
    pub help: &'static str,
}

const fn col(name: &'static str, letter: char, help: &'static str) -> Column {
    Column { name, letter, help }
}

pub const GROUP_COLUMNS: &[Column] = &[
    col("group", 'g', "the group's name"),
    col("level", 'l', "the level it is at (or going to)"),
    col("state", 's', "STARTING, STOPPING, DONE, PASSED or FAILED"),
    col(
        "goal",
        'o',
        "the level it was last told (kept across restarts)",
    ),
    col("entries", 'e', "how many entries it has"),
    col("running", 'r', "how many of them run now"),
];

pub const ENTRY_COLUMNS: &[Column] = &[
    col("group", 'g', "the entry's group"),
    col("tag", 't', "the entry's tag"),
    col("levels", 'v', "the levels it runs at"),
    col("mode", 'm', "wait, once, respawn, off, test or cron"),
    col(
        "state",
        's',
        "running, starting, stopping, exited, throttled, ...",
    ),
    col("pid", 'p', "its process id, when it runs"),
    col("start_time", 'b', "when it was last started (local time)"),
    col("uptime", 'u', "how long it has run since its last start"),
    col("starts", 'n', "how many times it was started"),
    col(
        "restarts",
        'r',
        "how many times it was restarted after an exit",
    ),
    col("rapid", 'q', "quick exits in a row (respawn throttling)"),
    col("last_exit", 'x', "its last exit: a code or a signal"),
    col("cpu", 'c', "CPU seconds of its process tree"),
    col("rss", 'k', "resident memory of its process tree, KiB"),
    col(
        "goal",
        'o',
        "what an operator decided: disabled, temporarily ...",
    ),
    col(
        "stopped",
        'S',
        "yes when stopped by an operator (clinit stop)",
    ),
    col("gave_up", 'G', "yes when it stopped for too many errors"),
];

pub const LOCK_COLUMNS: &[Column] = &[
    col("name", 'n', "the lock's container name"),
    col("mode", 'm', "exclusive or shared (of its holders)"),
    col("holders", 'h', "how many hold it"),
    col("waiters", 'w', "how many wait for it"),
    col("token", 't', "the fencing token of its newest grant"),
    col("since", 's', "when its oldest holder got it (local time)"),
];

impl Table {
    pub fn parse(s: &str) -> Option<Table> {
        match s {
            "groups" | "group" | "g" => Some(Table::Groups),
            "entries" | "entry" | "e" => Some(Table::Entries),
            "locks" | "lock" | "l" => Some(Table::Locks),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Table::Groups => "groups",
            Table::Entries => "entries",
            Table::Locks => "locks",
        }
    }

    pub fn columns(self) -> &'static [Column] {
        match self {
            Table::Groups => GROUP_COLUMNS,
            Table::Entries => ENTRY_COLUMNS,
            Table::Locks => LOCK_COLUMNS,
        }
    }

    /// The columns shown when none are chosen.
    pub fn default_columns(self) -> &'static [&'static str] {
        match self {
            Table::Groups => &["group", "level", "state", "goal", "entries", "running"],
            Table::Entries => &[
                "group",
                "tag",
                "mode",
                "state",
                "pid",
                "uptime",
                "restarts",
                "last_exit",
            ],
            Table::Locks => &["name", "mode", "holders", "waiters", "token", "since"],
        }
    }

    /// The letter → column table of the compact form.
    pub fn letters(self) -> String {
        self.columns()
            .iter()
            .map(|c| format!("{}={}", c.letter, c.name))
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn by_letter(self, l: char) -> Option<&'static str> {
        self.columns()
            .iter()
            .find(|c| c.letter == l)
            .map(|c| c.name)
    }

    pub fn has(self, name: &str) -> bool {
        self.columns().iter().any(|c| c.name == name)
    }
}

/// How a filter compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Gt,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filter {
    pub column: String,
    pub op: Op,
    pub value: String,
}

/// A survey, as asked (sent to the daemon, which makes the rows).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Query {
    pub table: Table,
    pub columns: Vec<String>,
    pub filters: Vec<Filter>,
    /// (column, descending).
    pub sort: Vec<(String, bool)>,
}

/// A query the caller got wrong; every one names what and lists what is
/// there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SurveyError {
    #[error("no column {column} in survey {table} (columns: {known})")]
    NoColumn {
        table: &'static str,
        column: String,
        known: String,
    },
    #[error("no column letter {letter} in survey {table} (letters: {known})")]
    NoLetter {
        table: &'static str,
        letter: char,
        known: String,
    },
    #[error("bad filter {0:?}: expected NAME=VALUE, NAME!=VALUE, NAME<N or NAME>N")]
    BadFilter(String),
    #[error("filter {0:?}: {1} compares numbers")]
    NotANumber(String, &'static str),
    #[error("unknown survey table {0:?}: groups, entries or locks")]
    NoTable(String),
    #[error("survey: two tables named ({0} and {1})")]
    TwoTables(&'static str, &'static str),
}

fn no_column(table: Table, column: &str) -> SurveyError {
    SurveyError::NoColumn {
        table: table.name(),
        column: column.to_string(),
        known: table
            .columns()
            .iter()
            .map(|c| c.name)
            .collect::<Vec<_>>()
            .join(","),
    }
}

/// Parse one filter word.
pub fn parse_filter(table: Table, word: &str) -> Result<Filter, SurveyError> {
    let (column, op, value) = if let Some((c, v)) = word.split_once("!=") {
        (c, Op::Ne, v)
    } else if let Some((c, v)) = word.split_once('=') {
        (c, Op::Eq, v)
    } else if let Some((c, v)) = word.split_once('<') {
        (c, Op::Lt, v)
    } else if let Some((c, v)) = word.split_once('>') {
        (c, Op::Gt, v)
    } else {
        return Err(SurveyError::BadFilter(word.to_string()));
    };
    if column.is_empty() {
        return Err(SurveyError::BadFilter(word.to_string()));
    }
    if !table.has(column) {
        return Err(no_column(table, column));
    }
    if matches!(op, Op::Lt | Op::Gt) && value.parse::<f64>().is_err() {
        return Err(SurveyError::NotANumber(
            word.to_string(),
            if op == Op::Lt { "<" } else { ">" },
        ));
    }
    Ok(Filter {
        column: column.to_string(),
        op,
        value: value.to_string(),
    })
}

impl Query {
    /// The named form: a table, `--columns a,b`, `--filter` words and
    /// `--sort` keys (`-key` descending).
    pub fn named(
        table: Table,
        columns: &[String],
        filters: &[String],
        sort: &[String],
    ) -> Result<Query, SurveyError> {
        let columns: Vec<String> = if columns.is_empty() {
            table
                .default_columns()
                .iter()
                .map(|c| c.to_string())
                .collect()
        } else {
            columns
                .iter()
                .flat_map(|c| c.split(','))
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .collect()
        };
        for c in &columns {
            if !table.has(c) {
                return Err(no_column(table, c));
            }
        }
        let filters = filters
            .iter()
            .map(|f| parse_filter(table, f))
            .collect::<Result<_, _>>()?;
        let mut keys = Vec::new();
        for k in sort.iter().flat_map(|k| k.split(',')) {
            let (name, desc) = match k.trim().strip_prefix('-') {
                Some(n) => (n, true),
                None => (k.trim().trim_start_matches('+'), false),
            };
            if !table.has(name) {
                return Err(no_column(table, name));
            }
            keys.push((name.to_string(), desc));
        }
        Ok(Query {
            table,
            columns,
            filters,
            sort: keys,
        })
    }

    /// cdadm's compact form: `words` after the table flag.
    pub fn compact(table: Table, words: &[String]) -> Result<Query, SurveyError> {
        let known = || table.letters();
        let letter = |l: char| {
            table.by_letter(l).ok_or(SurveyError::NoLetter {
                table: table.name(),
                letter: l,
                known: known(),
            })
        };
        let mut columns = Vec::new();
        let mut filters = Vec::new();
        let mut sort = Vec::new();
        for w in words {
            if let Some(letters) = w.strip_prefix('+') {
                for l in letters.chars() {
                    columns.push(letter(l)?.to_string());
                }
            } else if w.contains(['=', '<', '>']) {
                filters.push(parse_filter(table, w)?);
            } else {
                for key in w.split(':').filter(|k| !k.is_empty()) {
                    let mut chars = key.chars();
                    let l = chars.next().expect("not empty");
                    let desc = match chars.as_str() {
                        "" => false,
                        "-" => true,
                        _ => return Err(SurveyError::BadFilter(w.clone())),
                    };
                    sort.push((letter(l)?.to_string(), desc));
                }
            }
        }
        if columns.is_empty() {
            columns = table
                .default_columns()
                .iter()
                .map(|c| c.to_string())
                .collect();
        }
        Ok(Query {
            table,
            columns,
            filters,
            sort,
        })
    }

    /// Every column the query reads: shown, filtered or sorted on.
    pub fn reads(&self, column: &str) -> bool {
        self.columns.iter().any(|c| c == column)
            || self.filters.iter().any(|f| f.column == column)
            || self.sort.iter().any(|(c, _)| c == column)
    }

    /// A query that names only columns of its table (one from another
    /// client than ours is checked again by the daemon).
    pub fn check(&self) -> Result<(), SurveyError> {
        let names = self
            .columns
            .iter()
            .chain(self.filters.iter().map(|f| &f.column))
            .chain(self.sort.iter().map(|(c, _)| c));
        for c in names {
            if !self.table.has(c) {
                return Err(no_column(self.table, c));
            }
        }
        Ok(())
    }

    /// The columns the query reads, each once: the chosen ones first,
    /// then those only filtered or sorted on. Rows for
    /// [`Query::apply_indexed`] hold these, in this order.
    pub fn needed(&self) -> Vec<String> {
        let mut names = self.columns.clone();
        for c in self
            .filters
            .iter()
            .map(|f| &f.column)
            .chain(self.sort.iter().map(|(c, _)| c))
        {
            if !names.contains(c) {
                names.push(c.clone());
            }
        }
        names
    }

    /// Filter and sort rows of [`Query::needed`] values, then keep the
    /// chosen columns, in their order.
    pub fn apply_indexed(&self, mut rows: Vec<Vec<Value>>) -> Vec<Vec<Value>> {
        let names = self.needed();
        let at = |c: &str| names.iter().position(|n| n == c);
        let filters: Vec<(Option<usize>, &Filter)> =
            self.filters.iter().map(|f| (at(&f.column), f)).collect();
        rows.retain(|r| {
            filters
                .iter()
                .all(|(i, f)| matches(i.and_then(|i| r.get(i)), f))
        });
        let keys: Vec<(Option<usize>, bool)> =
            self.sort.iter().map(|(c, desc)| (at(c), *desc)).collect();
        if !keys.is_empty() {
            rows.sort_by(|a, b| {
                for (i, desc) in &keys {
                    let o = compare(i.and_then(|i| a.get(i)), i.and_then(|i| b.get(i)));
                    let o = if *desc { o.reverse() } else { o };
                    if o != std::cmp::Ordering::Equal {
                        return o;
                    }
                }
                std::cmp::Ordering::Equal
            });
        }
        let shown = self.columns.len();
        for r in &mut rows {
            r.truncate(shown);
        }
        rows
    }

    /// Rows of values back into objects keyed by the chosen columns.
    pub fn as_objects(&self, rows: Vec<Vec<Value>>) -> Vec<Map<String, Value>> {
        rows.into_iter()
            .map(|r| self.columns.iter().cloned().zip(r).collect())
            .collect()
    }

    /// Filter, sort and keep only the chosen columns, from rows of every
    /// column; values in the chosen columns' order.
    pub fn apply_values(&self, rows: Vec<Map<String, Value>>) -> Vec<Vec<Value>> {
        let names = self.needed();
        let rows = rows
            .into_iter()
            .map(|mut r| {
                names
                    .iter()
                    .map(|c| r.remove(c).unwrap_or(Value::Null))
                    .collect()
            })
            .collect();
        self.apply_indexed(rows)
    }

    /// Filter, sort and keep only the chosen columns.
    pub fn apply(&self, rows: Vec<Map<String, Value>>) -> Vec<Map<String, Value>> {
        let rows = self.apply_values(rows);
        self.as_objects(rows)
    }
}

fn text(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => if *b { "yes" } else { "no" }.to_string(),
        Some(v) => v.to_string(),
    }
}

fn matches(v: Option<&Value>, f: &Filter) -> bool {
    match f.op {
        Op::Eq | Op::Ne => {
            let have = text(v).to_ascii_lowercase();
            let want = f.value.to_ascii_lowercase();
            let eq = match want.strip_suffix('*') {
                Some(prefix) => have.starts_with(prefix),
                None => have == want,
            };
            eq == (f.op == Op::Eq)
        }
        Op::Lt | Op::Gt => {
            let (Some(have), Ok(want)) = (v.and_then(Value::as_f64), f.value.parse::<f64>()) else {
                return false;
            };
            if f.op == Op::Lt {
                have < want
            } else {
                have > want
            }
        }
    }
}

/// Numbers by value, text by text; an empty value sorts first.
fn compare(a: Option<&Value>, b: Option<&Value>) -> std::cmp::Ordering {
    match (a.and_then(Value::as_f64), b.and_then(Value::as_f64)) {
        (Some(x), Some(y)) => x.total_cmp(&y),
        (None, Some(_)) => std::cmp::Ordering::Less,
        (Some(_), None) => std::cmp::Ordering::Greater,
        (None, None) => text(a).cmp(&text(b)),
    }
}

/// `3d 4h`, `2h 5m`, `4m 10s`, `12s`.
pub fn duration_text(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    let (d, h, m, s) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

/// What the entries table shows of one entry, borrowed from the
/// supervisor's own slot (`daemon::view::entry_facts`): no status is built
/// for a survey.
#[derive(Clone, Debug, PartialEq)]
pub struct EntryFacts<'a> {
    pub group: &'a str,
    pub tag: &'a str,
    pub levels: &'a str,
    pub mode: &'a str,
    pub state: &'a str,
    pub pid: Option<i32>,
    /// Unix time of the last start, while it runs or stops.
    pub started: Option<f64>,
    pub starts: u32,
    pub restarts: u32,
    pub rapid: u32,
    pub last_exit: Option<crate::supervisor::machine::ExitStatus>,
    pub cpu: Option<f64>,
    pub rss_kib: Option<u64>,
    pub goal: Option<&'a str>,
    pub running_enabled: bool,
    pub gave_up: bool,
}

impl EntryFacts<'_> {
    /// The value of one column (null for a name that is none).
    pub fn value(&self, now: f64, column: &str) -> Value {
        let or_null = |v: Option<Value>| v.unwrap_or(Value::Null);
        match column {
            "group" => self.group.into(),
            "tag" => self.tag.into(),
            "levels" => self.levels.into(),
            "mode" => self.mode.into(),
            "state" => self.state.into(),
            "pid" => or_null(self.pid.map(Value::from)),
            "start_time" => or_null(self.started.map(|t| {
                let mut s = crate::logging::local_time(t);
                s.truncate(19);
                s.into()
            })),
            "uptime" => match (self.pid.is_some(), self.started) {
                (true, Some(t)) => Value::from(((now - t).max(0.0) * 1000.0).round() / 1000.0),
                _ => Value::Null,
            },
            "starts" => self.starts.into(),
            "restarts" => self.restarts.into(),
            "rapid" => self.rapid.into(),
            "last_exit" => or_null(self.last_exit.map(|x| x.to_string().into())),
            "cpu" => or_null(self.cpu.map(|c| Value::from((c * 100.0).round() / 100.0))),
            "rss" => or_null(self.rss_kib.map(Value::from)),
            "goal" => or_null(self.goal.map(Value::from)),
            "stopped" => (!self.running_enabled).into(),
            "gave_up" => self.gave_up.into(),
            _ => Value::Null,
        }
    }
}

/// The rows of the groups table: each group's status (without entries),
/// with how many entries it has and how many of them run.
pub fn group_rows(groups: &[(GroupStatus, usize, usize)]) -> Vec<Map<String, Value>> {
    groups
        .iter()
        .map(|(g, entries, running)| {
            let mut r = Map::new();
            r.insert("group".into(), g.group.clone().into());
            r.insert(
                "level".into(),
                g.level
                    .clone()
                    .filter(|l| !l.is_empty())
                    .map_or(Value::Null, Value::from),
            );
            r.insert("state".into(), g.state.as_str().into());
            r.insert(
                "goal".into(),
                g.goal.clone().map_or(Value::Null, Value::from),
            );
            r.insert("entries".into(), (*entries).into());
            r.insert("running".into(), (*running).into());
            r
        })
        .collect()
}

/// The rows of the locks table.
pub fn lock_rows(containers: &[ContainerStatus]) -> Vec<Map<String, Value>> {
    containers
        .iter()
        .map(|c| {
            let mut r = Map::new();
            r.insert("name".into(), c.name.clone().into());
            let mode = c.holders.first().map(|h| h.mode.as_str());
            r.insert("mode".into(), mode.map_or(Value::Null, Value::from));
            r.insert("holders".into(), c.holders.len().into());
            r.insert("waiters".into(), c.waiters.len().into());
            r.insert(
                "token".into(),
                c.holders
                    .iter()
                    .map(|h| h.token)
                    .max()
                    .map_or(Value::Null, Value::from),
            );
            r.insert(
                "since".into(),
                c.holders
                    .iter()
                    .map(|h| h.since)
                    .min()
                    .map_or(Value::Null, |t| {
                        crate::logging::local_time(t as f64)
                            .chars()
                            .take(19)
                            .collect::<String>()
                            .into()
                    }),
            );
            r
        })
        .collect()
}

/// How a value prints in a table cell: `-` for none, durations for
/// uptime.
fn cell(column: &str, v: &Value) -> String {
    match (column, v) {
        (_, Value::Null) => "-".into(),
        ("uptime", v) => v.as_f64().map_or("-".into(), duration_text),
        (_, v) => {
            let t = text(Some(v));
            if t.is_empty() { "-".into() } else { t }
        }
    }
}

/// The rows (values in the order of `columns`) as aligned columns (a
/// header first unless `no_header`).
pub fn render_table(columns: &[String], rows: &[Vec<Value>], no_header: bool) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            columns
                .iter()
                .enumerate()
                .map(|(i, c)| cell(c, r.get(i).unwrap_or(&Value::Null)))
                .map(|t| crate::logsafe::Safe(&t).to_string())
                .collect()
        })
        .collect();
    let heads: Vec<String> = columns.iter().map(|c| c.to_ascii_uppercase()).collect();
    let widths: Vec<usize> = (0..columns.len())
        .map(|i| {
            cells
                .iter()
                .map(|r| r[i].chars().count())
                .chain((!no_header).then(|| heads[i].len()))
                .max()
                .unwrap_or(1)
        })
        .collect();
    let mut out = String::new();
    let mut line = |words: &[String]| {
        let mut l = String::new();
        for (i, w) in words.iter().enumerate() {
            if i + 1 == words.len() {
                l.push_str(w);
            } else {
                l.push_str(w);
                l.push_str(&" ".repeat(widths[i] - w.chars().count() + 2));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    if !no_header {
        line(&heads);
    }
    for r in &cells {
        line(r);
    }
    out
}

/// The rows as tab-separated values (a header of column names first
/// unless `no_header`); tabs and newlines in values are escaped.
pub fn render_tsv(columns: &[String], rows: &[Vec<Value>], no_header: bool) -> String {
    let esc = |s: String| {
        s.replace('\\', "\\\\")
            .replace('\t', "\\t")
            .replace('\n', "\\n")
    };
    let mut out = String::new();
    if !no_header {
        out.push_str(&columns.join("\t"));
        out.push('\n');
    }
    for r in rows {
        let words: Vec<String> = (0..columns.len()).map(|i| esc(text(r.get(i)))).collect();
        out.push_str(&words.join("\t"));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(pairs: &[(&str, Value)]) -> Map<String, Value> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    fn rows() -> Vec<Map<String, Value>> {
        vec![
            row(&[
                ("group", "web".into()),
                ("tag", "a".into()),
                ("state", "running".into()),
                ("restarts", 3.into()),
            ]),
            row(&[
                ("group", "web".into()),
                ("tag", "b".into()),
                ("state", "exited".into()),
                ("restarts", 9.into()),
            ]),
            row(&[
                ("group", "db".into()),
                ("tag", "c".into()),
                ("state", "running".into()),
                ("restarts", 1.into()),
            ]),
        ]
    }

    fn tags(q: &Query) -> Vec<String> {
        q.apply(rows()).iter().map(|r| text(r.get("tag"))).collect()
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    /// The named and the compact form of the same query agree, and each
    /// filter and sort does what it says.
    #[test]
    fn filters_and_sorts_in_both_forms() {
        let rows: &[(Query, &[&str])] = &[
            (
                Query::named(
                    Table::Entries,
                    &s(&["tag"]),
                    &s(&["group=web"]),
                    &s(&["-restarts"]),
                )
                .unwrap(),
                &["b", "a"],
            ),
            (
                Query::compact(Table::Entries, &s(&["+t", "group=web", "r-"])).unwrap(),
                &["b", "a"],
            ),
            (
                Query::named(
                    Table::Entries,
                    &s(&["tag"]),
                    &s(&["state=RUNNING"]),
                    &s(&["tag"]),
                )
                .unwrap(),
                &["a", "c"],
            ),
            (
                Query::compact(Table::Entries, &s(&["+gtsp", "state=running", "g:t"])).unwrap(),
                &["c", "a"],
            ),
            (
                Query::named(Table::Entries, &[], &s(&["restarts>2"]), &s(&["restarts"])).unwrap(),
                &["a", "b"],
            ),
            (
                Query::named(Table::Entries, &[], &s(&["restarts<2"]), &[]).unwrap(),
                &["c"],
            ),
            (
                Query::named(Table::Entries, &[], &s(&["group!=web"]), &[]).unwrap(),
                &["c"],
            ),
            (
                Query::named(Table::Entries, &[], &s(&["group=w*"]), &s(&["-tag"])).unwrap(),
                &["b", "a"],
            ),
        ];
        for (q, want) in rows {
            assert_eq!(tags(q), s(want), "{q:?}");
        }
        let q = Query::compact(Table::Entries, &s(&["+gtsp", "group=web", "s:t"])).unwrap();
        assert_eq!(q.columns, s(&["group", "tag", "state", "pid"]));
        assert_eq!(
            q.sort,
            vec![("state".to_string(), false), ("tag".to_string(), false)]
        );
    }

    #[test]
    fn only_the_chosen_columns_come_out_in_their_order() {
        let q = Query::named(Table::Entries, &s(&["tag,group"]), &[], &[]).unwrap();
        let out = q.apply_values(rows());
        assert_eq!(out[0], vec![Value::from("a"), Value::from("web")]);
        let table = render_table(&q.columns, &out, false);
        assert_eq!(table.lines().next(), Some("TAG  GROUP"));
        assert_eq!(table.lines().nth(1), Some("a    web"));
        assert_eq!(
            render_tsv(&q.columns, &out, true).lines().next(),
            Some("a\tweb")
        );
    }

    #[test]
    fn mistakes_name_what_is_wrong() {
        let rows: &[(Result<Query, SurveyError>, &str)] = &[
            (
                Query::named(Table::Entries, &s(&["nope"]), &[], &[]),
                "no column nope in survey entries",
            ),
            (
                Query::named(Table::Groups, &[], &s(&["grp=web"]), &[]),
                "no column grp in survey groups",
            ),
            (
                Query::named(Table::Entries, &[], &s(&["web"]), &[]),
                "bad filter \"web\"",
            ),
            (
                Query::named(Table::Entries, &[], &s(&["restarts>many"]), &[]),
                "compares numbers",
            ),
            (
                Query::compact(Table::Locks, &s(&["+z"])),
                "no column letter z in survey locks",
            ),
            (
                Query::named(Table::Locks, &[], &[], &s(&["-tag"])),
                "no column tag in survey locks",
            ),
        ];
        for (r, want) in rows {
            let e = r.clone().unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
    }

    #[test]
    fn durations_read_well() {
        let rows: &[(f64, &str)] = &[
            (0.4, "0s"),
            (12.0, "12s"),
            (250.0, "4m 10s"),
            (7500.0, "2h 5m"),
            (273_600.0, "3d 4h"),
        ];
        for (secs, want) in rows {
            assert_eq!(duration_text(*secs), *want);
        }
    }

    /// Filtering and sorting on columns not shown: the daemon's rows hold
    /// them after the chosen ones, and they are cut before sending.
    #[test]
    fn rows_of_values_filter_and_sort_on_columns_not_shown() {
        let q = Query::named(
            Table::Entries,
            &s(&["tag"]),
            &s(&["group=web"]),
            &s(&["-restarts"]),
        )
        .unwrap();
        assert_eq!(q.needed(), s(&["tag", "group", "restarts"]));
        let rows: Vec<Vec<Value>> = vec![
            vec!["a".into(), "web".into(), 3.into()],
            vec!["b".into(), "web".into(), 9.into()],
            vec!["c".into(), "db".into(), 1.into()],
        ];
        assert_eq!(
            q.apply_indexed(rows),
            vec![vec![Value::from("b")], vec![Value::from("a")]]
        );
        // The same through rows of every column.
        assert_eq!(
            q.apply_values(super::tests::rows()),
            vec![vec![Value::from("b")], vec![Value::from("a")]]
        );
    }

    #[test]
    fn entry_values_of_a_slot() {
        let f = EntryFacts {
            group: "web",
            tag: "a",
            levels: "1",
            mode: "respawn",
            state: "running",
            pid: Some(42),
            started: Some(100.0),
            starts: 3,
            restarts: 2,
            rapid: 0,
            last_exit: None,
            cpu: None,
            rss_kib: None,
            goal: None,
            running_enabled: true,
            gave_up: false,
        };
        assert_eq!(f.value(160.0, "uptime"), 60.0);
        assert_eq!(f.value(160.0, "pid"), 42);
        assert_eq!(f.value(160.0, "starts"), 3);
        assert_eq!(
            ["restarts", "nope"].map(|c| f.value(160.0, c)),
            [Value::from(2), Value::Null]
        );
    }

    #[test]
    fn tsv_escapes_tabs_and_newlines() {
        let r = vec![vec![Value::from("a\tb\nc")]];
        assert_eq!(render_tsv(&s(&["tag"]), &r, true), "a\\tb\\nc\n");
    }
}
