//! Every process clinit starts begins with default signal actions and
//! nothing blocked, whatever clinit itself was started with: a daemon or a
//! `clinit lock` started from a background job ignores SIGINT and SIGQUIT,
//! under nohup SIGHUP too, and exec keeps what is ignored.

mod common;

use common::*;

const IGNORED: [i32; 3] = [libc::SIGINT, libc::SIGQUIT, libc::SIGHUP];

/// The SigIgn and SigBlk lines that `file` (a copy of /proc/PID/status)
/// holds.
fn masks(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.starts_with("SigIgn:") || l.starts_with("SigBlk:"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

const CLEAN: [&str; 2] = ["SigBlk: 0000000000000000", "SigIgn: 0000000000000000"];

#[test]
fn entries_notifiers_and_lock_commands_start_with_default_signals() {
    let mut d = Daemon::prepare(
        "web:a:1:once:cat /proc/self/status > entry.status\n\
         :a::notifier:cat /proc/self/status > notifier.status\n",
    );
    d.ignore = IGNORED.to_vec();
    let d = d.launch(&[]);
    // The test's own ignores reached the daemon (or the test proves nothing).
    let pid = d.child.as_ref().unwrap().id();
    let own = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(!masks(&own).contains(&CLEAN[1].to_string()), "{own}");
    d.ok(&["web", "1"]);
    d.wait_until("the entry and its notifier ran", || {
        d.read("entry.status").contains("SigIgn") && d.read("notifier.status").contains("SigIgn")
    });
    let sorted = |t: String| {
        let mut m = masks(&t);
        m.sort();
        m
    };
    assert_eq!(sorted(d.read("entry.status")), CLEAN, "entry");
    assert_eq!(sorted(d.read("notifier.status")), CLEAN, "notifier");
    // `clinit lock` started with the same ignores.
    let mut cmd = std::process::Command::new(bin());
    ignoring(&mut cmd, &IGNORED);
    let out = cmd
        .args([
            "-c",
            d.cltab().to_str().unwrap(),
            "lock",
            "vol",
            "--",
            "cat",
            "/proc/self/status",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        sorted(String::from_utf8_lossy(&out.stdout).into_owned()),
        CLEAN,
        "lock command"
    );
}
