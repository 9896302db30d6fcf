//! The real binary, as a user runs it.

mod common;
use common::*;

/// An entry that ignores SIGINT and SIGTERM.
const STUBBORN: &str = "g:stubborn:1:respawn:trap '' INT TERM; while :; do sleep 0.05; done\n";

#[test]
fn modes_levels_and_status_file() {
    let mut d = Daemon::start(
        "web:prep:1:wait:echo prep $CLINIT_GROUP $CLINIT_TAG $CLINIT_LEVEL > prep.out\n\
         web:srv:12:respawn:sleep 1000\n\
         web:job:1:once:echo once >> once.out\n\
         web:never:1:off:echo off > off.out\n\
         web:chk:2:test:true\n",
    );
    d.ok(&["tell", "web", "1"]);
    d.wait_status("web", "web 1 DONE");
    // Commands run in the daemon's directory, with the CLINIT_* variables.
    assert_eq!(d.read("prep.out"), "prep web prep 1\n");
    // `once` runs in the background: DONE does not wait for it.
    d.wait_until("once entry ran", || d.read("once.out") == "once\n");
    assert_eq!(d.read("off.out"), "");
    assert_eq!(d.entry("srv")["state"], "running");
    assert_eq!(d.entry("prep")["last_exit"]["code"], 0);
    assert_eq!(d.entry("never")["state"], "idle");
    // The status file follows within CLSTAT_EVERY (50 ms).
    d.wait_until("clstat shows web 1 DONE", || {
        d.read("clstat") == "Cluster::Init::Group web 1 DONE\n"
    });
    let pid = d.entry("srv")["pid"].as_i64().unwrap();

    // Level 2 keeps srv running untouched, runs the test. The client prints
    // the daemon's reply, as Cluster::Init's did.
    assert_eq!(d.ok(&["web", "2"]), "level transition started\n");
    d.wait_status("web", "web 2 DONE");
    assert_eq!(d.entry("srv")["pid"].as_i64().unwrap(), pid);
    assert_eq!(d.entry("chk")["last_exit"]["code"], 0);

    // Unknown group: message and exit 3.
    let out = d.run(&["tell", "nope", "1"]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "clinit: no such group: nope [NO_SUCH_GROUP]"
    );

    // Shutdown stops everything, removes the socket, empties the status file.
    assert_eq!(d.ok(&["-k"]), "all groups halting\n");
    let st = d.stop();
    assert!(st.success());
    assert!(!alive(pid), "srv still alive after shutdown");
    assert!(!d.path("clinit.s").exists());
    assert_eq!(d.read("clstat"), "");
}

#[test]
fn test_entries_decide_passed_and_failed_and_level_zero_works() {
    let d = Daemon::start("0:t1:0:test:true\n0:t2:0:test:true\n0:t3:1:test:false\n");
    d.ok(&["tell", "0", "0"]);
    d.wait_status("0", "0 0 PASSED");
    d.ok(&["tell", "0", "1"]);
    d.wait_status("0", "0 1 FAILED");
    // Long labels and an empty level.
    d.ok(&["tell", "0", "nothing-here"]);
    d.wait_status("0", "0 nothing-here DONE");
}

#[test]
fn respawn_after_sigkill() {
    let d = Daemon::start("g:r:1:respawn:sleep 1000\n");
    d.ok(&["tell", "g", "1"]);
    d.wait_status("g", "g 1 DONE");
    let pid = d.entry("r")["pid"].as_i64().unwrap();
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    d.wait_until("respawned", || {
        d.entry("r")["pid"].as_i64().is_some_and(|p| p != pid)
    });
    assert_eq!(d.entry("r")["restarts"], 1);
    assert_eq!(d.entry("r")["last_exit"]["signal"], 9);
}

#[test]
fn throttle_is_logged() {
    let d = Daemon::start(":::respawn_burst:2\n:::respawn_delay:0.2\ng:r:1:respawn:exit 3\n");
    d.ok(&["tell", "g", "1"]);
    d.wait_until("throttle logged", || {
        d.log().contains("respawning too rapidly")
    });
    d.wait_until("throttle delay over", || {
        d.log().contains("throttle delay over")
    });
}

#[test]
fn stop_escalates_for_a_process_ignoring_int_and_term() {
    let d = Daemon::start(&format!(
        ":::stop_term_after:0.2\n:::stop_kill_after:0.2\n{STUBBORN}"
    ));
    d.ok(&["tell", "g", "1"]);
    d.wait_status("g", "g 1 DONE");
    let pid = d.entry("stubborn")["pid"].as_i64().unwrap();
    d.ok(&["tell", "g", "2"]);
    d.wait_status("g", "g 2 DONE");
    assert!(!alive(pid));
    assert!(d.log().contains("sent SIGTERM"), "{}", d.log());
    assert!(d.log().contains("sent SIGKILL"), "{}", d.log());
    assert_eq!(d.entry("stubborn")["last_exit"]["signal"], 9);
}

/// Start a daemon whose cltab has one entry built from the temp dir path.
fn with_entry(line: impl Fn(&std::path::Path) -> String) -> Daemon {
    let d = Daemon::prepare("");
    let text = std::fs::read_to_string(d.cltab()).unwrap() + &line(d.dir.path());
    std::fs::write(d.cltab(), text).unwrap();
    d.launch(&[])
}

fn grandchild_stops_with_entry(d: &Daemon) {
    d.ok(&["tell", "g", "1"]);
    d.wait_until("grandchild started", || {
        d.read("gc.pid").trim().parse::<i64>().is_ok()
    });
    let gc: i64 = d.read("gc.pid").trim().parse().unwrap();
    assert!(alive(gc));
    d.ok(&["tell", "g", "2"]);
    d.wait_status("g", "g 2 DONE");
    d.wait_until("grandchild stopped", || !alive(gc));
}

#[test]
fn grandchildren_in_the_process_group_stop_with_their_entry() {
    let d = with_entry(|dir| {
        format!(
            "g:tree:1:once:sleep 1000 & echo $! > {}/gc.pid; wait\n",
            dir.display()
        )
    });
    grandchild_stops_with_entry(&d);
}

/// The two ways the daemon finds an entry's processes that left its
/// process group: its cgroup (`auto`, where cgroup v2 can be written) and
/// a scan of what it adopted as subreaper (`off`).
const CGROUP_MODES: [&str; 2] = ["", ":::cgroup:off\n"];

#[test]
fn daemonized_grandchildren_are_adopted_and_stopped() {
    // setsid puts the grandchild in a new session and process group, out of
    // reach of the group signal; its parent exits at once, so the daemon
    // (a child subreaper) adopts it and stops it with its entry.
    for mode in CGROUP_MODES {
        let d = with_entry(|dir| {
            format!(
                "{mode}g:dmn:1:once:setsid sh -c 'echo $$ > {}/gc.pid; exec sleep 1000' &\n",
                dir.display()
            )
        });
        grandchild_stops_with_entry(&d);
        assert!(
            d.log().contains("leftover descendant"),
            "{mode}: {}",
            d.log()
        );
    }
}

#[test]
fn an_entrys_cgroup_holds_all_it_started_and_goes_with_the_daemon() {
    // The grandchild's parent (a setsid shell) is alive and is not the
    // daemon: no scan of the daemon's adopted children finds it, its cgroup
    // does.
    let mut d = with_entry(|dir| {
        format!(
            "g:deep:1:once:setsid sh -c 'sleep 1000 & echo $! > {}/gc.pid; wait' &\n",
            dir.display()
        )
    });
    let Some(root) = d.cgroup_root() else {
        assert!(
            !cgroup_v2_writable(),
            "cgroup v2 can be written here, yet the daemon keeps no cgroups: {}",
            d.log()
        );
        assert!(d.log().contains("no cgroup for entries ("), "{}", d.log());
        return;
    };
    assert!(root.is_dir(), "{}", root.display());
    d.ok(&["tell", "g", "1"]);
    d.wait_until("grandchild started", || {
        d.read("gc.pid").trim().parse::<i64>().is_ok()
    });
    let gc: i64 = d.read("gc.pid").trim().parse().unwrap();
    let name = root.file_name().unwrap().to_str().unwrap().to_string();
    let cg = cgroup_of(gc).unwrap();
    assert!(
        cg.contains(&format!("/{name}/")),
        "{cg} is not under {name}"
    );
    d.ok(&["tell", "g", "2"]);
    d.wait_status("g", "g 2 DONE");
    d.wait_until("grandchild stopped", || !alive(gc));
    // A stopped entry keeps its directory (its next start makes none); a
    // reread that removes the entry removes it.
    let dirs = || {
        std::fs::read_dir(&root)
            .unwrap()
            .flatten()
            .filter(|e| e.path().is_dir())
            .count()
    };
    assert_eq!(dirs(), 1);
    let text = std::fs::read_to_string(d.cltab()).unwrap();
    let without: String = text
        .lines()
        .filter(|l| l.starts_with(":::"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(d.cltab(), without).unwrap();
    d.ok(&["reread"]);
    d.wait_until("the removed entry's cgroup goes", || dirs() == 0);
    d.stop();
    assert!(!root.exists(), "{} outlives the daemon", root.display());
}

#[test]
fn cgroup_off_moves_no_child_and_a_cgroup_that_cannot_be_made_stops_the_start() {
    let d = Daemon::start(":::cgroup:off\ng:r:1:respawn:sleep 1000\n");
    assert!(d.log().contains("cgroup off:"), "{}", d.log());
    assert_eq!(d.cgroup_root(), None);
    d.ok(&["tell", "g", "1"]);
    d.wait_status("g", "g 1 DONE");
    let pid = d.entry("r")["pid"].as_i64().unwrap();
    assert_eq!(cgroup_of(pid), cgroup_of(std::process::id() as i64));

    // A directory asked for by name that is no cgroup: no start, exit 10,
    // the directory named.
    let bad = Daemon::prepare("");
    let dir = bad.dir.path().display().to_string();
    let text = std::fs::read_to_string(bad.cltab()).unwrap() + &format!(":::cgroup:{dir}\n");
    std::fs::write(bad.cltab(), text).unwrap();
    let out = bad.run(&["-d"]);
    assert_eq!(out.status.code(), Some(10), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "setting cgroup: {dir} is not a cgroup v2 directory"
        )),
        "{err}"
    );
    // A value that is neither auto, off nor a path: a cltab error, exit 4.
    let bad = Daemon::prepare(":::cgroup:sometimes\n");
    let out = bad.run(&["-d"]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cgroup"), "{err}");
    assert!(
        err.contains("expected auto, off or an absolute path"),
        "{err}"
    );
}

#[test]
fn reread_good_and_bad() {
    let d = Daemon::start("g:keep:1:respawn:sleep 1000\ng:chg:1:respawn:sleep 1000\n");
    d.ok(&["tell", "g", "1"]);
    d.wait_status("g", "g 1 DONE");
    let keep = d.entry("keep")["pid"].as_i64().unwrap();
    let chg = d.entry("chg")["pid"].as_i64().unwrap();
    let base = std::fs::read_to_string(d.cltab()).unwrap();
    let base = base
        .lines()
        .filter(|l| l.starts_with(":::"))
        .collect::<Vec<_>>()
        .join("\n");

    // A bad cltab: errors returned, exit 4, old configuration kept.
    std::fs::write(
        d.cltab(),
        format!("{base}\ng:keep:1:sometimes:x\ng::1:once:x\n"),
    )
    .unwrap();
    let out = d.run(&["reread"]);
    assert_eq!(out.status.code(), Some(4));
    let err = String::from_utf8_lossy(&out.stderr);
    let n = base.lines().count();
    assert!(
        err.contains(&format!("cltab:{}: unknown mode 'sometimes'", n + 1)),
        "{err}"
    );
    assert!(
        err.contains(&format!("cltab:{}: empty tag", n + 2)),
        "{err}"
    );
    assert_eq!(d.entry("keep")["pid"].as_i64().unwrap(), keep);

    // A good one: the changed entry is stopped and then started anew, the
    // unchanged one untouched.
    std::fs::write(
        d.cltab(),
        format!("{base}\ng:keep:1:respawn:sleep 1000\ng:chg:1:respawn:sleep 999\n"),
    )
    .unwrap();
    assert_eq!(d.ok(&[]), "cltab reread: 1 groups, 2 entries\n");
    d.wait_until("changed entry stopped", || !alive(chg));
    assert_eq!(d.entry("keep")["pid"].as_i64().unwrap(), keep);
    d.wait_until("new version started", || {
        d.entry("chg")["state"] == "running"
    });
    assert_eq!(d.entry("chg")["command"], "sleep 999");
    assert_ne!(d.entry("chg")["pid"].as_i64().unwrap(), chg);
}

#[test]
fn errors_have_exit_codes() {
    // Invalid cltab: the daemon refuses to start, exit 4, message on stderr.
    let d = Daemon::prepare("g:a:1:bogus:x\n");
    let out = d.run(&["-d"]);
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown mode 'bogus'"));
    // No daemon: exit 5 naming the socket, quickly.
    let t = std::time::Instant::now();
    let out = d.run(&["status"]);
    assert_eq!(out.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&out.stderr).contains("clinit.s"));
    assert!(t.elapsed() < std::time::Duration::from_secs(1));
}

#[test]
fn a_second_daemon_is_refused_and_a_stale_socket_replaced() {
    let d = Daemon::prepare("g:a:1:once:true\n");
    // A stale socket: bound once, its listener gone (a killed daemon's).
    drop(std::os::unix::net::UnixListener::bind(d.path("clinit.s")).unwrap());
    let d = d.launch(&[]);
    let out = d.run(&["-d"]);
    assert_eq!(out.status.code(), Some(8));
    assert!(String::from_utf8_lossy(&out.stderr).contains("another clinit daemon"));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(d.path("clinit.s"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn wait_answers_when_the_group_settles_or_times_out() {
    let d = Daemon::start(":::stop_term_after:5\ng:w:1:wait:sleep 0.3\ng:t:2:test:false\n");
    d.ok(&["tell", "g", "1"]);
    // Blocks in the daemon (no client polling) until the wait entry exits.
    assert_eq!(d.ok(&["wait", "g", "1"]).trim(), "g 1 DONE");
    d.ok(&["tell", "g", "2"]);
    assert_eq!(
        d.ok(&["wait", "g", "2", "--state", "failed"]).trim(),
        "g 2 FAILED"
    );
    let out = d.run(&["wait", "g", "9", "--timeout", "0.2"]);
    assert_eq!(out.status.code(), Some(6));
    assert!(String::from_utf8_lossy(&out.stderr).contains("timed out waiting for group g"));
    let out = d.run(&["wait", "nope"]);
    assert_eq!(out.status.code(), Some(3));
}

/// Raw protocol access, to send what the real client never would.
mod raw {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    pub const HELLO: &[u8] = br#"{"version":1,"agent":"test"}"#;

    pub fn send(s: &mut UnixStream, body: &[u8]) {
        s.write_all(&(body.len() as u32).to_be_bytes()).unwrap();
        s.write_all(body).unwrap();
    }

    pub fn recv(s: &mut UnixStream) -> serde_json::Value {
        let mut len = [0u8; 4];
        s.read_exact(&mut len).unwrap();
        let mut body = vec![0; u32::from_be_bytes(len) as usize];
        s.read_exact(&mut body).unwrap();
        serde_json::from_slice(&body).unwrap()
    }

    /// Everything the daemon sends until it closes the connection.
    pub fn rest(s: &mut UnixStream) -> String {
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }
}

#[test]
fn malformed_and_oversized_requests_do_not_disturb_the_daemon() {
    use std::io::Write;
    use std::os::unix::net::UnixStream;
    let d = Daemon::start("g:a:1:once:true\n");
    let sock = d.path("clinit.s");
    // Garbage instead of a hello.
    let mut s = UnixStream::connect(&sock).unwrap();
    raw::send(&mut s, b"hello");
    assert!(raw::rest(&mut s).contains("BAD_REQUEST"));
    // An oversized frame after a good hello.
    let mut s = UnixStream::connect(&sock).unwrap();
    raw::send(&mut s, raw::HELLO);
    s.write_all(&(u32::MAX).to_be_bytes()).unwrap();
    assert!(raw::rest(&mut s).contains("exceeds the limit"));
    // An unknown op keeps the connection and names the problem.
    let mut s = UnixStream::connect(&sock).unwrap();
    raw::send(&mut s, raw::HELLO);
    raw::send(&mut s, br#"{"id":7,"op":"explode"}"#);
    assert_eq!(raw::recv(&mut s)["version"], 1);
    let reply = raw::recv(&mut s);
    assert_eq!(reply["id"], 7);
    assert_eq!(reply["code"], "BAD_REQUEST");
    // Absurd numbers from a client: timeouts past the end of the clock, a
    // lease too long, a bad base64 value. The first three are answered at
    // once; the wait (for a level that never comes, until the end of the
    // clock) stays pending. Nothing crashes.
    let mut s = UnixStream::connect(&sock).unwrap();
    raw::send(&mut s, raw::HELLO);
    assert_eq!(raw::recv(&mut s)["version"], 1);
    let max = u64::MAX;
    for (i, body) in [
        format!(r#"{{"id":1,"op":"lock_acquire","name":"x","mode":"exclusive","wait":true,"timeout_ms":{max}}}"#),
        format!(r#"{{"id":2,"op":"lease_grant","ttl_ms":{max}}}"#),
        r#"{"id":3,"op":"record","record":"add","container":"c","key":"k","value_b64":"%%%"}"#.to_string(),
        format!(r#"{{"id":4,"op":"wait","group":"g","level":"nope","state":null,"timeout_ms":{max}}}"#),
    ]
    .iter()
    .enumerate()
    {
        raw::send(&mut s, body.as_bytes());
        if i < 3 {
            let reply = raw::recv(&mut s);
            assert_eq!(reply["id"], i as u64 + 1, "{reply}");
        }
    }
    // The daemon still serves.
    d.ok(&["tell", "g", "1"]);
    assert_eq!(d.ok(&["wait", "g"]).trim(), "g 1 DONE");
}

#[test]
fn a_daemonized_grandchild_ignoring_sigterm_is_killed() {
    for mode in CGROUP_MODES {
        let d = with_entry(|dir| {
            format!(
                "{mode}:::stop_kill_after:0.3\ng:dmn:1:once:setsid sh -c 'trap \"\" TERM; echo $$ > {}/gc.pid; while :; do sleep 0.05; done' &\n",
                dir.display()
            )
        });
        grandchild_stops_with_entry(&d);
        assert!(d.log().contains("sent SIGKILL"), "{mode}: {}", d.log());
    }
}

#[test]
fn sigterm_to_the_daemon_shuts_down_gracefully() {
    let mut d = Daemon::start("g:r:1:respawn:sleep 1000\n");
    d.ok(&["tell", "g", "1"]);
    d.ok(&["wait", "g"]);
    let pid = d.entry("r")["pid"].as_i64().unwrap();
    let mut child = d.child.take().unwrap();
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let st = wait_exit(&mut child, "the daemon did not exit on SIGTERM");
    assert!(st.success());
    assert!(!alive(pid));
    assert!(!d.path("clinit.s").exists());
    assert_eq!(d.read("clstat"), "");
}

#[test]
fn shutdown_is_answered_even_when_the_daemon_exits_at_once() {
    // Nothing runs, so the daemon exits right after it answers; the answer
    // must still reach the client.
    let mut d = Daemon::start("g:x:1:once:true\n");
    let out = d.run(&["shutdown"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "all groups halting\n");
    let mut child = d.child.take().unwrap();
    assert!(wait_exit(&mut child, "the daemon did not exit").success());
}

#[test]
fn a_wait_during_shutdown_is_told_at_once() {
    let mut d = Daemon::start(&format!(":::stop_term_after:600\n{STUBBORN}"));
    d.ok(&["tell", "g", "1"]);
    d.wait_status("g", "g 1 DONE");
    let pid = d.entry("stubborn")["pid"].as_i64().unwrap();
    assert_eq!(d.ok(&["shutdown"]), "all groups halting\n");
    // The entry ignores SIGINT and SIGTERM comes only after 600 s: the
    // daemon stays in its halt until this test kills the entry.
    let out = d.run(&["wait", "g", "1"]);
    assert_eq!(out.status.code(), Some(9), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("the daemon is shutting down"),
        "{out:?}"
    );
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let mut child = d.child.take().unwrap();
    assert!(wait_exit(&mut child, "the daemon did not exit").success());
}

#[test]
fn socket_mode_and_per_entry_log_files() {
    let d = with_entry(|dir| {
        format!(
            ":::socket_mode:0660\n:::logdir:{}/out\ng:hi:1:once:echo hello from $CLINIT_TAG\n",
            dir.display()
        )
    });
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(d.path("clinit.s"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o660);
    d.ok(&["tell", "g", "1"]);
    d.wait_until("output written", || {
        d.read("out/g.hi.log") == "hello from hi\n"
    });
}

#[test]
fn a_missing_program_exits_127_and_is_logged() {
    let d = Daemon::start("g:nf:1:wait:/nonexistent/prog --flag\ng:after:1:once:true\n");
    d.ok(&["tell", "g", "1"]);
    assert_eq!(d.ok(&["wait", "g"]).trim(), "g 1 DONE");
    assert_eq!(d.entry("nf")["last_exit"]["code"], 127);
    assert!(d.log().contains("/nonexistent/prog"), "{}", d.log());
    assert_eq!(d.entry("after")["last_exit"]["code"], 0);
}
