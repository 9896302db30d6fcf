//! BOS-style instance management (issue 3), with the real binary: goals that
//! survive the daemon, stop/start/restart, crash recovery, create/delete,
//! cron entries, notifiers, restart statistics and access control.

mod common;
use common::{Daemon, alive, processes_of_group};
use std::time::Duration;

fn pid_of(d: &Daemon, tag: &str) -> i64 {
    d.entry(tag)["pid"].as_i64().unwrap_or(0)
}

fn running(d: &Daemon, tag: &str) -> bool {
    d.entry(tag)["state"] == "running"
}

#[test]
fn goals_are_restored_before_requests_are_served_unless_no_restore() {
    let mut d =
        Daemon::start("g:a:1:respawn:sleep 1000\ng:b:2:respawn:sleep 1000\nh:c:1:once:true\n");
    d.ok(&["tell", "g", "2"]);
    d.wait_status("g", "g 2 DONE");
    d.stop();
    // The very first answer already has the goal restored: no wait here.
    let mut d = d.launch(&[]);
    assert_eq!(d.ok(&["status"]), "g 2 DONE\nh - IDLE\n");
    assert!(running(&d, "b"));
    assert!(d.log().contains("restoring group g to its goal, level 2"));
    d.stop();
    let mut d = d.launch(&["--no-restore"]);
    assert_eq!(d.ok(&["status"]), "g - IDLE\nh - IDLE\n");
    // The goal is still kept for the next normal start.
    d.stop();
    let d = d.launch(&[]);
    assert_eq!(d.ok(&["status"]), "g 2 DONE\nh - IDLE\n");
}

#[test]
fn stop_and_start_persist_unless_temporary() {
    let mut d = Daemon::start(
        "g:a:1:respawn:sleep 1000\ng:b:1:respawn:sleep 1000\ng:c:1:respawn:sleep 1000\n",
    );
    d.ok(&["tell", "g", "1"]);
    d.wait_until("all run", || ["a", "b", "c"].iter().all(|t| running(&d, t)));
    let a = pid_of(&d, "a");
    assert_eq!(d.ok(&["stop", "a"]), "a stopping (disabled)\n");
    assert_eq!(
        d.ok(&["stop", "--temporary", "b"]),
        "b stopping (temporarily disabled)\n"
    );
    d.wait_until("a and b stopped", || {
        d.entry("a")["state"] == "idle" && d.entry("b")["state"] == "idle"
    });
    assert!(!alive(a));
    assert_eq!(d.entry("a")["goal"], "disabled");
    assert_eq!(d.entry("b")["goal"], "temporarily disabled");
    // A level switch does not start a stopped entry.
    d.ok(&["tell", "g", "1"]);
    d.wait_status("g", "g 1 DONE");
    assert_eq!(d.entry("a")["state"], "idle");
    let long = d.ok(&["status", "--long"]);
    assert!(
        long.contains("Instance a, (group g, mode respawn) disabled, currently shutdown.\n"),
        "{long}"
    );
    assert!(
        long.contains(
            "Instance b, (group g, mode respawn) temporarily disabled, currently shutdown.\n"
        ),
        "{long}"
    );

    // Across a daemon restart: the persistent stop stays, the temporary one
    // is forgotten.
    d.stop();
    let d = d.launch(&[]);
    d.wait_status("g", "g 1 DONE");
    assert_eq!(d.entry("a")["state"], "idle");
    assert_eq!(d.entry("a")["goal"], "disabled");
    assert!(running(&d, "b"));
    assert!(d.entry("b")["goal"].is_null());

    assert_eq!(
        d.ok(&["start", "--temporary", "a"]),
        "a started (temporarily enabled)\n"
    );
    d.wait_until("a runs", || running(&d, "a"));
    assert_eq!(d.entry("a")["goal"], "temporarily enabled");
    assert_eq!(d.ok(&["start", "a"]), "a started\n");
    assert!(d.entry("a")["goal"].is_null());

    // Unknown entries are an error with its own code.
    let out = d.run(&["stop", "nope"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such entry: nope"));
}

#[test]
fn restart_an_entry_a_group_or_everything() {
    let d = Daemon::start(
        "g:a:1:respawn:sleep 1000\ng:b:1:respawn:sleep 1000\nh:c:1:respawn:sleep 1000\n",
    );
    d.ok(&["tell", "g", "1"]);
    d.ok(&["tell", "h", "1"]);
    d.wait_until("all run", || ["a", "b", "c"].iter().all(|t| running(&d, t)));
    let pids = |d: &Daemon| ["a", "b", "c"].map(|t| pid_of(d, t));
    let before = pids(&d);

    assert_eq!(d.ok(&["restart", "a"]), "a restarting\n");
    d.wait_until("a again", || {
        running(&d, "a") && pid_of(&d, "a") != before[0]
    });
    assert!(!alive(before[0]));
    assert_eq!(pid_of(&d, "b"), before[1]);

    let mid = pids(&d);
    assert_eq!(d.ok(&["restart", "--group", "g"]), "group g restarting\n");
    d.wait_until("g again", || {
        let now = pids(&d);
        running(&d, "a") && running(&d, "b") && now[0] != mid[0] && now[1] != mid[1]
    });
    assert_eq!(pid_of(&d, "c"), before[2]);

    let mid = pids(&d);
    assert_eq!(d.ok(&["restart", "--all"]), "all groups restarting\n");
    d.wait_until("all again", || {
        let now = pids(&d);
        ["a", "b", "c"].iter().all(|t| running(&d, t)) && (0..3).all(|i| now[i] != mid[i])
    });
    assert_eq!(d.entry("a")["starts"], 4);
    assert_eq!(d.run(&["restart"]).status.code(), Some(2));
}

#[test]
fn sigkill_of_the_daemon_leaves_nothing_running_twice() {
    // A group name of its own, to count its processes on the machine.
    let group = format!("crash{}", std::process::id());
    let entries: String = (0..50)
        .map(|i| format!("{group}:e{i}:1:respawn:sleep 1000\n"))
        .collect();
    let mut d = Daemon::start(&entries);
    d.ok(&["tell", &group, "1"]);
    d.wait_status(&group, &format!("{group} 1 DONE"));
    d.wait_until("50 running", || processes_of_group(&group).len() == 50);
    let old = processes_of_group(&group);

    d.kill9();
    // The children outlive the daemon.
    assert_eq!(processes_of_group(&group), old);

    let d = d.launch(&[]);
    // Served only after the leftovers were stopped and the goal restored.
    assert_eq!(d.ok(&["status", &group]), format!("{group} 1 DONE\n"));
    let now = processes_of_group(&group);
    assert_eq!(now.len(), 50, "exactly 50 run: {now:?}");
    assert!(old.iter().all(|p| !alive(*p)), "an old child still runs");
    assert!(now.iter().all(|p| !old.contains(p)));
    let log = d.log();
    assert!(log.contains("stopped 50 leftover children"), "{log}");
}

const COMMENTED: &str = "# web servers\nweb:w1:1:respawn:sleep 1000\n# trailing comment of web\n\n# databases\ndb:d1:1:respawn:sleep 1000\n# end\n";

#[test]
fn create_and_delete_edit_the_cltab_keeping_comments() {
    let d = Daemon::start(COMMENTED);
    d.ok(&["tell", "web", "1"]);
    d.wait_until("w1 runs", || running(&d, "w1"));
    let before = d.read("cltab");

    let out = d.ok(&[
        "create",
        "web",
        "w2",
        "1",
        "respawn",
        "--notifier",
        "cat > /dev/null",
        "--stop-signal",
        "TERM",
        "--",
        "sleep",
        "1001",
    ]);
    assert!(out.contains("created w2 in group web at"), "{out}");
    assert!(out.ends_with("; started\n"), "{out}");
    let after = d.read("cltab");
    assert_eq!(
        after,
        before.replace(
            "web:w1:1:respawn:sleep 1000\n",
            "web:w1:1:respawn:sleep 1000\nweb:w2:1:respawn:sleep 1001\n:w2::notifier:cat > /dev/null\n:w2::stop_signal:TERM\n"
        )
    );
    d.wait_until("w2 runs", || running(&d, "w2"));
    assert_eq!(d.entry("w2")["notifier"], "cat > /dev/null");

    // Shell syntax in the command words is kept; a new group goes at the end.
    d.ok(&[
        "create",
        "misc",
        "m1",
        "2",
        "once",
        "--",
        "echo hi > m1.out",
    ]);
    assert!(
        d.read("cltab")
            .ends_with("# end\nmisc:m1:2:once:echo hi > m1.out\n")
    );
    d.ok(&["tell", "misc", "2"]);
    d.wait_until("m1 ran", || d.read("m1.out") == "hi\n");

    // Refused with the parser's errors: a duplicate tag, a bad mode, a bad option.
    let out = d.run(&["create", "db", "w1", "1", "once", "--", "true"]);
    assert_eq!(out.status.code(), Some(4));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("duplicate tag 'w1'"), "{err}");
    assert!(err.contains("CLTAB_DUPLICATE_TAG"), "{err}");
    let out = d.run(&["create", "db", "x", "1", "sometimes", "--", "true"]);
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown mode 'sometimes'"));
    let out = d.run(&["create", "db", "x", "1", "cron", "--", "true"]);
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("CLTAB_MISSING_SCHEDULE"));
    let out = d.run(&["create", "db", "x:y", "1", "once", "--", "true"]);
    assert_eq!(out.status.code(), Some(7));
    assert!(
        !d.read("cltab").contains(":x"),
        "a refused create wrote nothing"
    );

    // Delete stops the entry and removes its line and option lines only.
    let w2 = pid_of(&d, "w2");
    let out = d.ok(&["delete", "w2"]);
    assert!(out.contains("deleted w2 from"), "{out}");
    d.wait_until("w2 stopped", || !alive(w2));
    let text = d.read("cltab");
    assert_eq!(text, format!("{before}misc:m1:2:once:echo hi > m1.out\n"));
    assert!(!d.ok(&["status", "--json"]).contains("\"w2\""));
    assert_eq!(d.run(&["delete", "w2"]).status.code(), Some(3));

    // A manual edit since the last read: both are refused until a reread.
    std::fs::write(d.cltab(), format!("{text}# edited by hand\n")).unwrap();
    for args in [
        &["create", "web", "w3", "1", "once", "--", "true"][..],
        &["delete", "w1"][..],
    ] {
        let out = d.run(args);
        assert_eq!(out.status.code(), Some(12), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("changed on disk"), "{err}");
        assert!(err.contains("clinit reread"), "{err}");
    }
    assert!(d.read("cltab").ends_with("# edited by hand\n"));
    d.ok(&["reread"]);
    d.ok(&["create", "web", "w3", "1", "once", "--", "true"]);
    assert!(d.read("cltab").contains("# edited by hand\n"));
}

/// A whole minute ahead, as local "HH:MM" and Unix seconds: the next one,
/// or the one after when the next is under 10 s away (so the daemon, told a
/// moment later, computes the same time).
fn next_minute() -> (String, i64) {
    use chrono::{Local, TimeZone, Timelike};
    let now = Local::now();
    let ahead = if now.second() >= 50 { 120 } else { 60 };
    let next = now.timestamp() - i64::from(now.second()) + ahead;
    let t = Local.timestamp_opt(next, 0).unwrap();
    (format!("{:02}:{:02}", t.hour(), t.minute()), next)
}

#[test]
fn cron_entries_run_now_and_at_their_time() {
    let (hhmm, at) = next_minute();
    let d = Daemon::start(&format!(
        "c:once:1:cron:echo ran >> now.out\n:once::schedule:now\nc:later:1:cron:echo ran >> later.out\n:later::schedule:{hhmm}\n"
    ));
    d.ok(&["tell", "c", "1"]);
    d.wait_until("now ran", || d.read("now.out") == "ran\n");
    d.wait_status("c", "c 1 DONE");
    let later = d.entry("later");
    assert_eq!(later["state"], "scheduled");
    assert_eq!(later["schedule"], hhmm.as_str());
    assert_eq!(later["next_run"], at);
    let long = d.ok(&["status", "--long"]);
    assert!(
        long.contains(&format!(
            "Instance later, (group c, mode cron) currently running normally.\n    Auxiliary status is: run next at {}.\n",
            clinit::schedule::ctime(at)
        )),
        "{long}"
    );
    assert!(
        long.contains(&format!("    Command 2 is '{hhmm}'\n")),
        "{long}"
    );
    // It runs at its minute, once, and is scheduled again a day later.
    d.wait_until_for("later ran", Duration::from_secs(150), || {
        d.read("later.out") == "ran\n"
    });
    d.wait_until("scheduled again", || {
        let e = d.entry("later");
        e["state"] == "scheduled" && e["next_run"] == at + 86_400
    });
    assert_eq!(d.entry("later")["starts"], 1);
    // `now` ran exactly once.
    assert_eq!(d.read("now.out"), "ran\n");
    assert_eq!(d.entry("once")["state"], "exited");
}

/// The BOS record the daemon should have written for the last exit of
/// `tag` (process `pid`), built from its status.
fn expected_record(
    d: &Daemon,
    tag: &str,
    command: &str,
    pid: i64,
    last_signal: i64,
    goal: u8,
) -> String {
    let e = d.entry(tag);
    let (code, sig) = match &e["last_exit"] {
        v if v.get("code").is_some() => (v["code"].as_i64().unwrap(), 0),
        v => (0, v["signal"].as_i64().unwrap()),
    };
    assert_eq!(sig, last_signal);
    let (ecode, esig) = match &e["last_error"] {
        v if v.get("code").is_some() => (v["code"].as_i64().unwrap(), 0),
        v if v.get("signal").is_some() => (0, v["signal"].as_i64().unwrap()),
        _ => (0, 0),
    };
    format!(
        "BEGIN bnode_proc\ncomLine: {command}\ncoreName: (null)\npid: {pid}\nlastExit: {code}\nlastSignal: {sig}\nEND bnode_proc\nBEGIN bnode\nname: {tag}\nrsTime: {}\nrsCount: {}\nprocStartTime: {}\nprocStarts: {}\nlastAnyExit: {}\nlastErrorExit: {}\nerrorCode: {ecode}\nerrorSignal: {esig}\nlastErrorName: {tag}\ngoal: {goal}\nEND bnode\n",
        e["rs_time"],
        e["rs_count"],
        e["last_start"],
        e["starts"],
        e["last_exit_at"],
        e["last_error_at"].as_i64().unwrap_or(0),
    )
}

#[test]
fn notifier_gets_the_bos_record_for_exits_signals_and_stops() {
    let d = Daemon::start(
        "n:e3:1:once:echo $$ > e3.pid; exit 3\n:e3::notifier:cat > e3.rec\n\
         n:usr1:1:once:sleep 1000\n:usr1::notifier:cat > usr1.rec\n\
         n:stopped:1:respawn:sleep 1000\n:stopped::notifier:cat > stopped.rec\n",
    );
    d.ok(&["tell", "n", "1"]);
    d.wait_until("usr1 and stopped run", || {
        running(&d, "usr1") && running(&d, "stopped")
    });
    let usr1 = pid_of(&d, "usr1");
    let stopped = pid_of(&d, "stopped");

    // Exit code 3: an error exit, goal 1 (the entry still belongs to the level).
    d.wait_until("e3 record", || d.read("e3.rec").ends_with("END bnode\n"));
    let e3: i64 = d.read("e3.pid").trim().parse().unwrap();
    let want = expected_record(&d, "e3", "echo $$ > e3.pid; exit 3", e3, 0, 1);
    assert_lines(&d.read("e3.rec"), &want);
    assert!(d.read("e3.rec").contains("lastExit: 3\n"));
    assert!(d.read("e3.rec").contains("errorCode: 3\n"));

    // Death by SIGUSR1: an error exit by signal 10.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(usr1 as i32),
        nix::sys::signal::Signal::SIGUSR1,
    )
    .unwrap();
    d.wait_until("usr1 record", || {
        d.read("usr1.rec").ends_with("END bnode\n")
    });
    let want = expected_record(&d, "usr1", "sleep 1000", usr1, 10, 1);
    assert_lines(&d.read("usr1.rec"), &want);
    assert!(d.read("usr1.rec").contains("errorSignal: 10\n"));

    // A stop clinit was asked for: not an error, goal 0.
    d.ok(&["stop", "stopped"]);
    d.wait_until("stopped record", || {
        d.read("stopped.rec").ends_with("END bnode\n")
    });
    let want = expected_record(&d, "stopped", "sleep 1000", stopped, 2, 0);
    assert_lines(&d.read("stopped.rec"), &want);
    assert!(d.read("stopped.rec").contains("lastErrorExit: 0\n"));
}

fn assert_lines(got: &str, want: &str) {
    for (i, (g, w)) in got.lines().zip(want.lines()).enumerate() {
        assert_eq!(g, w, "record line {}\ngot:\n{got}\nwant:\n{want}", i + 1);
    }
    assert_eq!(got, want);
}

#[test]
fn json_notifier_and_a_failing_or_hanging_notifier_never_block() {
    let d = Daemon::start(
        ":::notifier_timeout:0.3\n\
         j:js:1:once:exit 4\n:js::notifier:cat > js.json\n:js::notifier_format:json\n\
         j:hang:1:once:true\n:hang::notifier:sleep 1000\n\
         j:bad:1:once:true\n:bad::notifier:exit 9\n\
         j:after:1:respawn:sleep 1000\n",
    );
    d.ok(&["tell", "j", "1"]);
    d.wait_until("json record", || d.read("js.json").ends_with("}\n"));
    let v: serde_json::Value = serde_json::from_str(&d.read("js.json")).unwrap();
    assert_eq!(v["group"], "j");
    assert_eq!(v["tag"], "js");
    assert_eq!(v["level"], "1");
    assert_eq!(v["exit_code"], 4);
    assert_eq!(v["signal"], 0);
    assert_eq!(v["error"], true);
    assert_eq!(v["goal"], true);
    assert_eq!(v["command"], "exit 4");
    let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
    assert_eq!(v["host"], host.as_str());
    assert_eq!(v["last_any_exit"], d.entry("js")["last_exit_at"]);
    // Supervision went on meanwhile; the hanging notifier is killed at its
    // timeout and the failing one is logged.
    d.wait_until("after runs", || running(&d, "after"));
    d.wait_until("timeout logged", || {
        d.log().contains("j:hang: notifier") && d.log().contains("timed out")
    });
    d.wait_until("failure logged", || {
        d.log().contains("j:bad: notifier") && d.log().contains("exit code 9")
    });
}

#[test]
fn status_long_tells_the_history_and_give_up_stops_a_failing_entry() {
    let d = Daemon::start(
        "f:fail:1:respawn:exit 3\n:fail::respawn_give_up:2\n:fail::respawn_burst:10\n:fail::notifier:true\n",
    );
    d.ok(&["tell", "f", "1"]);
    d.wait_until("gave up", || d.entry("fail")["state"] == "gave-up");
    let e = d.entry("fail");
    assert_eq!(e["starts"], 3);
    assert_eq!(e["gave_up"], true);
    assert_eq!(e["last_error"]["code"], 3);
    assert!(d.log().contains("stopped for too many errors"));
    let long = d.ok(&["status", "--long", "f"]);
    let t = |k: &str| clinit::schedule::ctime(e[k].as_i64().unwrap());
    assert_eq!(
        long,
        format!(
            "f 1 DONE (1 gave up)\n\nInstance fail, (group f, mode respawn) stopped for too many errors, currently shutdown.\n    Process last started at {} (3 proc starts)\n    Last exit at {}\n    Last error exit at {}, by exiting with code 3\n    Command 1 is 'exit 3'\n    Notifier  is 'true'\n",
            t("last_start"),
            t("last_exit_at"),
            t("last_error_at")
        )
    );
    // An operator's start tries again.
    d.ok(&["start", "fail"]);
    d.wait_until("tried again", || {
        d.entry("fail")["starts"].as_u64().unwrap() >= 4
    });
}

#[test]
fn changes_need_root_the_daemon_user_or_the_userlist() {
    let d =
        Daemon::prepare(":::socket_mode:0666\n:::userlist:UserList\ng:a:1:respawn:sleep 1000\n");
    // Let `nobody` reach the socket and read the cltab.
    d.open_to_others();
    let text = d
        .read("cltab")
        .replace("UserList", &d.path("UserList").display().to_string());
    std::fs::write(d.cltab(), text).unwrap();
    std::fs::write(d.path("UserList"), "# operators\nalice\n").unwrap();
    let d = d.launch(&[]);
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let (uid, gid) = (nobody.uid.as_raw(), nobody.gid.as_raw());

    // Read-only requests are open to anyone who can connect.
    let out = d.run_as(uid, gid, &["status"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Changes are refused, naming the uid, with their own exit code.
    let out = d.run_as(uid, gid, &["tell", "g", "1"]);
    assert_eq!(out.status.code(), Some(11));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("uid {uid}")), "{err}");
    assert!(
        d.log()
            .lines()
            .any(|l| l.contains(&format!("req{{tag=uid {uid} c"))
                && l.contains("refused tell g 1")),
        "the refusal is tagged with its request: {}",
        d.log()
    );
    assert_eq!(d.ok(&["status", "g"]), "g - IDLE\n");

    // Listed in the UserList: allowed at once, and logged with the user.
    std::fs::write(d.path("UserList"), "# operators\nalice\nnobody\n").unwrap();
    let out = d.run_as(uid, gid, &["tell", "g", "1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    d.wait_status("g", "g 1 DONE");
    assert!(
        d.log()
            .contains(&format!("tell g 1 (by nobody (uid {uid}))"))
    );
    d.ok(&["tell", "g", "2"]);
    assert!(d.log().contains("tell g 2 (by root (uid 0))"));
}

#[test]
fn noauth_allows_everyone_and_warns_and_socket_group_is_set() {
    use std::os::unix::fs::MetadataExt;
    let d = Daemon::prepare(":::socket_mode:0660\n:::socket_group:nogroup\ng:a:1:once:true\n");
    d.open_to_others();
    let d = d.launch(&["--noauth"]);
    let sock = std::fs::metadata(d.path("clinit.s")).unwrap();
    let nogroup = nix::unistd::Group::from_name("nogroup").unwrap().unwrap();
    assert_eq!(sock.gid(), nogroup.gid.as_raw());
    assert_eq!(sock.mode() & 0o777, 0o660);
    assert!(d.log().contains("--noauth"));
    // nobody is in group nogroup, so it can connect, and --noauth lets it change.
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let out = d.run_as(
        nobody.uid.as_raw(),
        nogroup.gid.as_raw(),
        &["tell", "g", "1"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
