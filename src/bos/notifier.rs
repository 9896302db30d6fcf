//! The AFS BOS notifier record, byte for byte as `bosserver` documents it,
//! so that existing BOS notifier scripts work unchanged.
//!
//! OpenAFS 1.8.9 writes `flags:` where the documented format has
//! `lastSignal:`, and leaves out `lastErrorName:` (see
//! `tests/data/bos/README.md`). clinit writes the documented fields; every
//! other line matches the captures in `tests/data/bos/`.

use crate::supervisor::machine::{ExitStatus, Notice};
use std::fmt::Write;

/// The facts one record carries. Times are Unix seconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub com_line: String,
    /// Core file name, if the process left one.
    pub core_name: Option<String>,
    pub pid: i32,
    /// Exit code, 0 if killed by a signal.
    pub last_exit: i32,
    /// Signal number, 0 if it exited.
    pub last_signal: i32,
    /// The entry's tag.
    pub name: String,
    pub rs_time: i64,
    /// Restarts in the window, before the exit being reported.
    pub rs_count: u32,
    pub proc_start_time: i64,
    pub proc_starts: u32,
    pub last_any_exit: i64,
    /// 0 if there never was an error exit.
    pub last_error_exit: i64,
    pub error_code: i32,
    pub error_signal: i32,
    pub last_error_name: String,
    /// Whether the entry should be running.
    pub goal: bool,
}

impl Record {
    /// The record as BOS writes it to a notifier's standard input.
    pub fn to_bos(&self) -> String {
        let mut s = String::new();
        let _ = write!(
            s,
            "BEGIN bnode_proc\ncomLine: {}\ncoreName: {}\npid: {}\nlastExit: {}\nlastSignal: {}\nEND bnode_proc\n",
            one_line(&self.com_line),
            self.core_name
                .as_deref()
                .map(one_line)
                .unwrap_or_else(|| "(null)".into()),
            self.pid,
            self.last_exit,
            self.last_signal,
        );
        let _ = write!(
            s,
            "BEGIN bnode\nname: {}\nrsTime: {}\nrsCount: {}\nprocStartTime: {}\nprocStarts: {}\nlastAnyExit: {}\nlastErrorExit: {}\nerrorCode: {}\nerrorSignal: {}\nlastErrorName: {}\ngoal: {}\nEND bnode\n",
            one_line(&self.name),
            self.rs_time,
            self.rs_count,
            self.proc_start_time,
            self.proc_starts,
            self.last_any_exit,
            self.last_error_exit,
            self.error_code,
            self.error_signal,
            one_line(&self.last_error_name),
            u8::from(self.goal),
        );
        s
    }
}

impl Record {
    /// The record of one exit of an entry.
    pub fn from_notice(n: &Notice) -> Record {
        let (last_exit, last_signal) = split(n.status);
        let (error_code, error_signal) =
            n.stats.last_error.map(|(s, _)| split(s)).unwrap_or((0, 0));
        Record {
            com_line: n.command.clone(),
            core_name: None,
            pid: n.pid,
            last_exit,
            last_signal,
            name: n.tag.clone(),
            rs_time: n.stats.rs_time,
            rs_count: n.stats.rs_count,
            proc_start_time: n.stats.last_start.unwrap_or(0),
            proc_starts: n.stats.starts,
            last_any_exit: n.at,
            last_error_exit: n.stats.last_error.map(|(_, t)| t).unwrap_or(0),
            error_code,
            error_signal,
            last_error_name: n.tag.clone(),
            goal: n.goal,
        }
    }
}

/// (exit code, signal): one of them is 0.
fn split(status: ExitStatus) -> (i32, i32) {
    match status {
        ExitStatus::Code(c) => (c, 0),
        ExitStatus::Signal(s) => (0, s),
    }
}

/// The JSON notifier record: one object on one line with the BOS record's
/// facts under plain names, plus group, level, host and whether this exit
/// counts as an error.
pub fn json(n: &Notice, host: &str) -> String {
    let r = Record::from_notice(n);
    let v = serde_json::json!({
        "group": n.group,
        "tag": r.name,
        "level": n.level,
        "host": host,
        "command": r.com_line,
        "core": r.core_name,
        "pid": r.pid,
        "exit_code": r.last_exit,
        "signal": r.last_signal,
        "error": n.error,
        "rs_time": r.rs_time,
        "rs_count": r.rs_count,
        "proc_start_time": r.proc_start_time,
        "proc_starts": r.proc_starts,
        "last_any_exit": r.last_any_exit,
        "last_error_exit": r.last_error_exit,
        "error_code": r.error_code,
        "error_signal": r.error_signal,
        "last_error_name": r.last_error_name,
        "goal": r.goal,
    });
    format!("{v}\n")
}

/// Every value stays on its line: a newline in a command would otherwise
/// start a bogus field for the notifier's parser.
fn one_line(v: &str) -> String {
    v.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The capture with OpenAFS 1.8.9's two deviations from the documented
    /// format replaced: `flags:` becomes `lastSignal:`, and `lastErrorName:`
    /// is added before `goal:`.
    fn documented(capture: &str, last_signal: i32, last_error_name: &str) -> String {
        let mut out = String::new();
        for line in capture.lines() {
            if line.starts_with("flags:") {
                out.push_str(&format!("lastSignal: {last_signal}\n"));
                continue;
            }
            if line.starts_with("goal:") {
                out.push_str(&format!("lastErrorName: {last_error_name}\n"));
            }
            out.push_str(line);
            out.push('\n');
        }
        out
    }

    fn capture(name: &str) -> String {
        let path = format!("{}/tests/data/bos/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn base() -> Record {
        Record {
            com_line: "/srv/bos/bin/ctlexit.sh".into(),
            core_name: None,
            pid: 0,
            last_exit: 0,
            last_signal: 0,
            name: "notified".into(),
            rs_time: 1795277359,
            rs_count: 0,
            proc_start_time: 0,
            proc_starts: 0,
            last_any_exit: 0,
            last_error_exit: 0,
            error_code: 0,
            error_signal: 0,
            last_error_name: "notified".into(),
            goal: true,
        }
    }

    #[test]
    fn records_match_real_bosserver_captures_line_by_line() {
        // (capture, record, lastSignal written by clinit)
        let cases = [
            (
                "01-exit0.stdin",
                Record {
                    pid: 9778,
                    proc_start_time: 1795277346,
                    proc_starts: 1,
                    last_any_exit: 1795277359,
                    ..base()
                },
                0,
            ),
            (
                "02-exit3.stdin",
                Record {
                    pid: 9846,
                    last_exit: 3,
                    rs_count: 1,
                    proc_start_time: 1795277359,
                    proc_starts: 2,
                    last_any_exit: 1795277367,
                    last_error_exit: 1795277367,
                    error_code: 3,
                    ..base()
                },
                0,
            ),
            (
                "03-sigkill.stdin",
                Record {
                    pid: 9933,
                    last_signal: 9,
                    rs_count: 2,
                    proc_start_time: 1795277367,
                    proc_starts: 3,
                    last_any_exit: 1795277373,
                    last_error_exit: 1795277367,
                    error_code: 3,
                    ..base()
                },
                9,
            ),
            (
                "05-sigsegv.stdin",
                Record {
                    pid: 10299,
                    last_signal: 11,
                    rs_count: 4,
                    proc_start_time: 1795277382,
                    proc_starts: 5,
                    last_any_exit: 1795277389,
                    last_error_exit: 1795277389,
                    error_code: 3,
                    error_signal: 11,
                    ..base()
                },
                11,
            ),
            (
                "08-stop-sigterm.stdin",
                Record {
                    pid: 10448,
                    last_signal: 15,
                    rs_time: 1795277661,
                    proc_start_time: 1795277389,
                    proc_starts: 6,
                    last_any_exit: 1795277661,
                    last_error_exit: 1795277389,
                    error_code: 3,
                    error_signal: 11,
                    goal: false,
                    ..base()
                },
                15,
            ),
            (
                "09-fs-file-sigsegv.stdin",
                Record {
                    com_line: "/srv/bos/bin/fsproc.sh fileserver -p 8".into(),
                    core_name: Some("file".into()),
                    pid: 23395,
                    last_signal: 11,
                    name: "fs".into(),
                    rs_time: 1795277991,
                    proc_start_time: 1795277973,
                    proc_starts: 2,
                    last_any_exit: 1795277991,
                    last_error_exit: 1795277991,
                    error_signal: 11,
                    last_error_name: "fs".into(),
                    ..base()
                },
                11,
            ),
        ];
        for (file, record, sig) in cases {
            let want = documented(&capture(file), sig, &record.last_error_name);
            let got = record.to_bos();
            for (i, (g, w)) in got.lines().zip(want.lines()).enumerate() {
                assert_eq!(g, w, "{file}, line {}", i + 1);
            }
            assert_eq!(got, want, "{file}");
        }
    }

    #[test]
    fn values_never_break_the_line_structure() {
        let r = Record {
            com_line: "a\nb".into(),
            name: "x\ry".into(),
            ..base()
        };
        let text = r.to_bos();
        assert_eq!(text.lines().count(), 20);
        assert!(text.contains("comLine: a b\n"));
        assert!(text.contains("name: x y\n"));
    }
}
