//! The operator's console with the real binary: parameters from each
//! source, live changes taking effect, refused changes leaving nothing
//! half-applied, maintenance mode, startup levels, survey in both forms,
//! null, last words, reopen, completions and the man page.

mod common;
use common::Daemon;
use serde_json::Value;

fn param(d: &Daemon, name: &str) -> Value {
    serde_json::from_str(&d.ok(&["getpar", name, "--json"])).unwrap()
}

fn source_of(d: &Daemon, name: &str) -> (String, String) {
    let p = param(d, name);
    (
        p["value"].as_str().unwrap().to_string(),
        p["source"].as_str().unwrap().to_string(),
    )
}

#[test]
fn parameters_come_from_default_cltab_command_line_live_and_persisted() {
    let mut d = Daemon::prepare(
        ":::stop_term_after:7\n:::respawn_burst:4\nweb:a:1:respawn:exec sleep 100\n",
    )
    .launch(&["--set", "respawn_burst=6", "--set", "loglevel=debug"]);
    let rows: &[(&str, &str, &str)] = &[
        ("stop_kill_after", "10", "default"),
        ("stop_term_after", "7", "cltab"),
        ("respawn_burst", "6", "command_line"),
        ("loglevel", "debug", "command_line"),
    ];
    for (name, value, source) in rows {
        assert_eq!(
            source_of(&d, name),
            (value.to_string(), source.to_string()),
            "{name}"
        );
    }
    // The listing has every setting, each with its source and live flag.
    let all: Vec<Value> = serde_json::from_str(&d.ok(&["params", "--json"])).unwrap();
    let live: Vec<&str> = all
        .iter()
        .filter(|p| p["live"] == true)
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert!(live.contains(&"maintenance") && live.contains(&"loglevel"));
    assert!(
        all.iter()
            .any(|p| p["name"] == "socket" && p["live"] == false)
    );
    let text = d.ok(&["params"]);
    assert!(text.starts_with("NAME"), "{text}");

    // setpar prints the previous value; the new one is live.
    assert_eq!(d.ok(&["setpar", "stop_term_after", "2"]).trim(), "7");
    assert_eq!(
        source_of(&d, "stop_term_after"),
        ("2".into(), "live".into())
    );
    // A persisted value survives a restart; a live one does not.
    assert_eq!(
        d.ok(&["setpar", "respawn_delay", "3", "--persist"]).trim(),
        "1"
    );
    assert!(d.path("state/params.json").exists());
    d.stop();
    let d = d.launch(&[]);
    assert_eq!(
        source_of(&d, "respawn_delay"),
        ("3".into(), "persisted".into())
    );
    assert_eq!(
        source_of(&d, "stop_term_after"),
        ("7".into(), "cltab".into())
    );
    // --unset --persist forgets it for good.
    d.ok(&["setpar", "respawn_delay", "--unset", "--persist"]);
    assert_eq!(
        source_of(&d, "respawn_delay"),
        ("1".into(), "default".into())
    );
    assert!(!d.read("state/params.json").contains("respawn_delay"));
}

#[test]
fn refused_changes_have_codes_and_change_nothing() {
    let d = Daemon::start("web:a:1:respawn:exec sleep 100\n");
    let before = d.ok(&["params", "--json"]);
    let rows: &[(&[&str], i32, &str)] = &[
        (&["setpar", "nope", "1"], 3, "no such parameter: nope"),
        (&["getpar", "nope"], 3, "no such parameter: nope"),
        (
            &["setpar", "socket", "/x"],
            27,
            "cannot change while the daemon runs",
        ),
        (
            &["setpar", "maintenance", "maybe"],
            7,
            "bad value \"maybe\"",
        ),
        (&["setpar", "stop_kill_after", "-1"], 7, "stop_kill_after"),
        (&["setpar", "events_keep", "0"], 7, "events_keep"),
    ];
    for (args, code, says) in rows {
        let out = d.run(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(*code), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    assert_eq!(d.ok(&["params", "--json"]), before);
    // A bad value given on the command line stops the daemon before it
    // starts, naming it.
    let out = std::process::Command::new(common::bin())
        .args([
            "-c",
            d.cltab().to_str().unwrap(),
            "daemon",
            "--set",
            "loglevel=loud",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("loglevel"));
}

#[test]
fn live_changes_take_effect() {
    let d = Daemon::start("web:a:1:respawn:exec sleep 100\nweb:b:1:wait:echo quiet-marker\n");
    d.ok(&["web", "1"]);
    d.wait_status("web", "web 1 DONE");
    // loglevel: debug lines appear once it is debug.
    d.ok(&["setpar", "loglevel", "debug"]);
    d.ok(&["restart", "b"]);
    d.wait_until("a debug line", || d.log().contains("DEBUG"));
    // events_keep shrinks the ring.
    d.ok(&["setpar", "events_keep", "2"]);
    let ev = d.ok(&["events"]);
    assert!(ev.lines().count() <= 2, "{ev}");
    // A timing: the explain of the entry shows the new stop signal.
    d.ok(&["setpar", "stop_signal", "TERM"]);
    let pid = d.entry("a")["pid"].as_i64().unwrap();
    d.ok(&["stop", "a"]);
    d.wait_until("a stopped", || d.entry("a")["pid"].is_null());
    assert!(
        d.log().contains(&format!("pid {pid} exited: signal 15")),
        "{}",
        d.log()
    );
    // The entry was not restarted by the change itself.
    assert_eq!(d.entry("b")["starts"], 2);
}

#[test]
fn maintenance_holds_starts_refuses_tells_and_resumes() {
    let d = Daemon::start("web:a:1:respawn:exec sleep 100\ndb:c:2:respawn:exec sleep 100\n");
    d.ok(&["web", "1"]);
    d.wait_until("a runs", || d.entry("a")["pid"].is_i64());
    assert_eq!(d.ok(&["setpar", "maintenance", "on"]).trim(), "off");
    // A tell is refused with its code.
    let out = d.run(&["db", "2"]);
    assert_eq!(out.status.code(), Some(28));
    assert!(String::from_utf8_lossy(&out.stderr).contains("maintenance mode is on"));
    // An exit is recorded; the respawn is held.
    let pid = d.entry("a")["pid"].as_i64().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    d.wait_until("the exit recorded", || {
        d.entry("a")["last_exit"].is_object() || d.entry("a")["last_exit"].is_string()
    });
    d.wait_until("the start held", || {
        d.log().contains("maintenance: not starting web:a")
    });
    assert!(d.entry("a")["pid"].is_null());
    assert!(d.ok(&["null"]).contains("MAINTENANCE"));
    // Off: the held start is done.
    d.ok(&["setpar", "maintenance", "off"]);
    d.wait_until("a runs again", || {
        d.entry("a")["pid"].as_i64().is_some_and(|p| p != pid)
    });
    d.ok(&["db", "2"]);
    d.wait_status("db", "db 2 DONE");
    let ev = d.ok(&["events"]);
    assert!(
        ev.contains("maintenance mode on") && ev.contains("maintenance mode off"),
        "{ev}"
    );
}

#[test]
fn a_startup_level_applies_only_without_a_stored_goal() {
    let mut d = Daemon::start("web:a:1,2:respawn:exec sleep 100\nweb:::startup:1\n");
    d.wait_status("web", "web 1 DONE");
    d.ok(&["web", "2"]);
    d.wait_status("web", "web 2 DONE");
    d.stop();
    // The stored goal (2) wins over the startup level at the next start.
    let d = d.launch(&[]);
    d.wait_status("web", "web 2 DONE");
}

#[test]
fn survey_in_both_forms() {
    let d = Daemon::start(
        "web:a:1:respawn:exec sleep 100\nweb:b:1:respawn:exec sleep 101\ndb:c:1:wait:true\n",
    );
    d.ok(&["web", "1"]);
    d.ok(&["db", "1"]);
    d.wait_status("web", "web 1 DONE");
    d.wait_status("db", "db 1 DONE");
    let named = d.ok(&[
        "survey",
        "entries",
        "--columns",
        "group,tag,state,pid,cpu,rss",
        "--filter",
        "group=web",
        "--filter",
        "state=RUNNING",
        "--sort",
        "-tag",
    ]);
    let lines: Vec<&str> = named.lines().collect();
    assert_eq!(lines.len(), 3, "{named}");
    assert!(lines[0].starts_with("GROUP  TAG  STATE"), "{named}");
    assert!(lines[1].starts_with("web    b    running"), "{named}");
    assert!(lines[2].starts_with("web    a    running"), "{named}");
    // RSS of a running sleep is known.
    let rss: u64 = lines[1].split_whitespace().last().unwrap().parse().unwrap();
    assert!(rss > 0, "{named}");
    // cdadm's form gives the same rows.
    let compact = d.ok(&[
        "survey",
        "-e",
        "+gtspck",
        "group=web",
        "state=running",
        "t-",
    ]);
    assert_eq!(compact, named);
    // JSON: exactly the chosen columns.
    let rows: Vec<serde_json::Map<String, Value>> =
        serde_json::from_str(&d.ok(&["survey", "-e", "+gts", "--json"])).unwrap();
    assert_eq!(rows.len(), 3);
    for r in &rows {
        let mut keys: Vec<&str> = r.keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(keys, ["group", "state", "tag"]);
    }
    // TSV without a header, groups table.
    let tsv = d.ok(&[
        "survey",
        "groups",
        "--columns",
        "group,level,running",
        "-o",
        "tsv",
        "--no-header",
        "--sort",
        "group",
    ]);
    assert_eq!(tsv, "db\t1\t0\nweb\t1\t2\n");
    // Locks.
    let locks = d.ok(&["survey", "locks"]);
    assert!(locks.starts_with("NAME"), "{locks}");
    // A query from another client is checked by the daemon too.
    let q: clinit::survey::Query = serde_json::from_value(serde_json::json!({
        "table": "entries", "columns": ["tag", "nope"], "filters": [], "sort": [["x", true]]
    }))
    .unwrap();
    let mut c = clinit::client::Client::connect(&d.path("clinit.s")).unwrap();
    match c.request(clinit::proto::Request::Survey { query: q, from: 0 }) {
        Err(clinit::client::ClientError::Daemon(e)) => {
            assert_eq!(e.code, clinit::proto::ErrorCode::BadRequest);
            assert!(e.message.contains("no column nope"), "{}", e.message);
        }
        other => panic!("{other:?}"),
    }
    // Mistakes are usage errors that name the column.
    let out = d.run(&["survey", "entries", "--columns", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no column nope"));
}

#[test]
fn null_lastwords_and_reopen() {
    let d = Daemon::start("web:a:1:wait:true\n");
    let alive = d.ok(&["null"]);
    assert!(alive.starts_with("alive: clinit "), "{alive}");
    assert!(alive.contains("round trip"), "{alive}");
    assert_eq!(d.ok(&["ping"]).lines().count(), 1);
    // A debug record below the log level is in the last words.
    d.ok(&["web", "1"]);
    d.wait_status("web", "web 1 DONE");
    assert!(!d.log().contains("DEBUG"));
    let words = d.ok(&["lastwords"]);
    assert!(words.contains("DEBUG"), "{words}");
    assert!(d.log().contains("LAST WORDS (asked by"), "{}", d.log());
    // Reopen: the log moved away, a new one is written.
    std::fs::rename(d.path("log"), d.path("log.1")).unwrap();
    assert!(d.ok(&["reopen"]).contains("log reopened"));
    d.ok(&["web", "1"]);
    d.wait_until("the new log written", || d.log().contains("tell web 1"));
    // SIGHUP too.
    std::fs::rename(d.path("log"), d.path("log.2")).unwrap();
    let pid = d.child.as_ref().unwrap().id() as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    d.wait_until("reopened on SIGHUP", || d.path("log").exists());
    // Requests carry their tag in the log.
    assert!(
        d.read("log.1").contains("req{tag=uid "),
        "{}",
        d.read("log.1")
    );
}

#[test]
fn a_panic_writes_its_place_and_the_last_words() {
    // The hidden test hook: CLINIT_TEST_PANIC makes the daemon panic once
    // it serves requests.
    let d = Daemon::prepare("web:a:1:wait:true\n");
    let out = std::process::Command::new(common::bin())
        .args(["-c", d.cltab().to_str().unwrap(), "daemon"])
        .env("CLINIT_TEST_PANIC", "1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let log = d.log();
    assert!(log.contains("PANIC in thread"), "{log}");
    assert!(log.contains("src/daemon/mod.rs"), "{log}");
    assert!(log.contains("LAST WORDS (panic at"), "{log}");
    assert!(log.contains("END OF LAST WORDS"), "{log}");
}

#[test]
fn completions_and_the_man_page_come_from_the_commands() {
    for sh in ["bash", "zsh", "fish"] {
        let out = std::process::Command::new(common::bin())
            .args(["completions", sh])
            .output()
            .unwrap();
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("setpar") && text.contains("survey"), "{sh}");
    }
    let out = std::process::Command::new(common::bin())
        .arg("man")
        .output()
        .unwrap();
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(
        page.starts_with(".ie") || page.contains(".TH clinit 1"),
        "{page}"
    );
    for section in [
        ".SH \"CLINIT SETPAR\"",
        ".SH \"CLINIT SURVEY\"",
        ".SH \"CLINIT LOCK\"",
    ] {
        assert!(page.contains(section), "{section}");
    }
}

#[test]
fn errors_end_with_their_code_and_mistyped_commands_are_not_tells() {
    let d = Daemon::start("web:a:1:wait:true\n");
    let rows: &[(&[&str], i32, &str)] = &[
        (
            &["tell", "nope", "1"],
            3,
            "no such group: nope [NO_SUCH_GROUP]",
        ),
        (&["stauts"], 2, "did you mean `status`?"),
        (&["evnets", "1"], 2, "did you mean `events`?"),
        (&["record", "get", "c", "k"], 15, "[NOENT]"),
    ];
    for (args, code, says) in rows {
        let out = d.run(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(*code), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    // A mistyped word never reached the daemon as a tell.
    assert!(!d.log().contains("stauts"), "{}", d.log());
    // A level alone says which group it tells.
    let host = String::from_utf8(
        std::process::Command::new("hostname")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let out = d.run(&["9"]);
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains(&format!("telling group {} (this host)", host.trim())),
        "{out:?}"
    );
    // --json: the error as an object on standard output, same exit code.
    let out = d.run(&["record", "get", "c", "k", "--json"]);
    assert_eq!(out.status.code(), Some(15));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"]["code"], "NOENT");
    assert!(v["error"]["message"].as_str().unwrap().contains("k"));
    // A cltab that does not exist is named; no daemon says how to start one.
    let out = std::process::Command::new(common::bin())
        .args(["-c", "/nonexistent/cltab", "status"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the cltab /nonexistent/cltab does not exist"),
        "{err}"
    );
    let dir = tempfile::tempdir().unwrap();
    let cltab = dir.path().join("cltab");
    std::fs::write(&cltab, format!(":::socket:{}/s\n", dir.path().display())).unwrap();
    let out = std::process::Command::new(common::bin())
        .arg("-c")
        .arg(&cltab)
        .arg("status")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("start one with `clinit -c"), "{err}");
    assert!(err.ends_with("[NO_DAEMON]\n"), "{err}");
}

#[test]
fn records_print_in_one_base_on_whole_lines() {
    let d = Daemon::start("");
    let sig: u64 = d
        .ok(&["record", "add", "c", "k", "v1"])
        .trim()
        .parse()
        .unwrap();
    // get ends with a newline; --raw prints the bytes alone.
    assert_eq!(d.ok(&["record", "get", "c", "k"]), "v1\n");
    assert_eq!(d.ok(&["record", "get", "c", "k", "--raw"]), "v1");
    // --sig in hex is the same signature; a stale one names both in decimal.
    let sig2: u64 = d
        .ok(&[
            "record",
            "modify",
            "c",
            "k",
            "v2",
            "--sig",
            &format!("{sig:#x}"),
        ])
        .trim()
        .parse()
        .unwrap();
    assert_eq!(sig2, sig + 1);
    let out = d.run(&[
        "record",
        "modify",
        "c",
        "k",
        "v3",
        "--sig",
        &sig.to_string(),
    ]);
    assert_eq!(out.status.code(), Some(16));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "its signature is {sig2} ({sig2:#x}), not {sig} ({sig:#x})"
        )) && err.ends_with("[COLLISION]\n"),
        "{err}"
    );
    let out = d.run(&["record", "delete", "c", "k", "--sig", "12ab"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a signature"), "{err}");
    // A command-line mistake carries its code too.
    assert!(err.lines().next().unwrap().ends_with(" [USAGE]"), "{err}");
    let out = d.run(&["setpar", "loglevel"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.lines().next().unwrap().ends_with(" [USAGE]"), "{err}");
    // --help is no error.
    let out = d.run(&["setpar", "--help"]);
    assert!(out.status.success() && !String::from_utf8_lossy(&out.stdout).contains("[USAGE]"));
    // list: one line per record, whatever the value holds.
    let mut add = d
        .client(&["record", "add", "c", "two words", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut add.stdin.take().unwrap(), b"a\nb\t\\\xff").unwrap();
    assert!(add.wait().unwrap().success());
    let list = d.ok(&["record", "list", "c"]);
    assert_eq!(
        list,
        format!("k {sig2} v2\ntwo\\x20words {} a\\nb\\t\\\\\\xff\n", {
            let v: Value =
                serde_json::from_str(&d.ok(&["record", "get", "c", "two words", "--json"]))
                    .unwrap();
            v["sig"].as_u64().unwrap()
        })
    );
    // An empty container prints nothing (the note goes to a terminal only).
    let out = d.run(&["record", "list", "empty"]);
    assert!(out.status.success() && out.stdout.is_empty() && out.stderr.is_empty());
}

#[test]
fn a_lock_command_without_the_double_dash_gets_the_fix() {
    let d = Daemon::prepare("");
    let out = d.run(&["lock", "--shared", "vol", "rsync", "-a", "x"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    let fix = format!(
        "tip: put `--` between the lock's name and the command: clinit -c {} lock --shared vol -- rsync -a x",
        d.cltab().display()
    );
    assert!(err.contains(&fix), "{err}");
    // Nothing was started for it.
    assert!(!d.path("clinit.s").exists());
}

#[test]
fn dash_v_prints_the_status_when_the_reread_is_refused_or_fails() {
    let d = Daemon::prepare(":::socket_mode:0666\ng:a:1:wait:true\n");
    d.open_to_others();
    let d = d.launch(&[]);
    d.ok(&["tell", "g", "1"]);
    d.wait_status("g", "g 1 DONE");
    // Refused to the caller: a note, the status, exit 0.
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let out = d.run_as(nobody.uid.as_raw(), nobody.gid.as_raw(), &["-v"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("the reread was not done") && err.contains("[ACCESS]"),
        "{err}"
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "g 1 DONE\n");
    // A bad cltab: its errors, then the status, and the reread's code.
    let text = d.read("cltab");
    std::fs::write(d.cltab(), format!("{text}g:b:1:nonsense:true\n")).unwrap();
    let out = d.run(&["-v"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(
        err.contains("nonsense") && err.contains("[CLTAB_INVALID]"),
        "{err}"
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "g 1 DONE\n");
    // A good one: reread, then the status.
    std::fs::write(d.cltab(), format!("{text}g:b:1:wait:true\n")).unwrap();
    let out = d.run(&["-v"]);
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn wait_fails_on_failed_gave_up_shows_and_restart_says_nothing_started() {
    let d = Daemon::start(
        "t:x:1:test:false\n\
         app:quick:1:respawn:exit 3\n\
         :quick::respawn_give_up:1\n\
         :quick::respawn_fast:60\n\
         app:off:2:respawn:sleep 100\n\
         app:held:1:respawn:sleep 100\n",
    );
    // A group that settles in FAILED: the status, then exit 30.
    d.ok(&["tell", "t", "1"]);
    let out = d.run(&["wait", "t"]);
    assert_eq!(out.status.code(), Some(30), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "t 1 FAILED\n");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("[GROUP_FAILED]"),
        "{out:?}"
    );
    // Waiting for FAILED itself is a success.
    assert_eq!(
        d.run(&["wait", "t", "--state", "FAILED"]).status.code(),
        Some(0)
    );
    // An entry that gave up shows in the short status.
    d.ok(&["tell", "app", "1"]);
    d.wait_until("quick gave up", || d.entry("quick")["gave_up"] == true);
    assert_eq!(d.ok(&["status", "app"]), "app 1 DONE (1 gave up)\n");
    // Giving up writes the last words to the log.
    d.wait_until("last words of the give-up", || {
        d.log().contains("LAST WORDS (entry app:quick gave up)")
    });
    // Every exit is in the log at info: who, pid, status, run time.
    let log = d.log();
    assert!(
        log.lines().any(|l| l.contains(" INFO ")
            && l.contains("app:quick pid ")
            && l.contains(" exited: exit code 3 after ")
            && l.ends_with(" s")),
        "{log}"
    );
    // Restart of an entry that does not run: nothing started, exit 29.
    d.ok(&["stop", "held"]);
    for (tag, says) in [
        (
            "held",
            "held was not restarted: it is disabled (`clinit start held`",
        ),
        ("off", "group app is at level 1, and off runs at levels '2'"),
    ] {
        let out = d.run(&["restart", tag]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(29), "{tag}: {err}");
        assert!(
            err.contains(says) && err.ends_with("[NOT_STARTED]\n"),
            "{err}"
        );
    }
    assert_eq!(d.entry("held")["pid"], Value::Null);
    assert_eq!(d.entry("off")["pid"], Value::Null);
}

#[test]
fn childrens_lines_in_the_shared_log_carry_group_and_tag() {
    let d = Daemon::prepare(
        "web:talk:1:once:sh -c 'echo one; echo two >&2; read x < fifo; echo three; printf last'\n\
         plain:raw:1:once:echo unprefixed\n",
    );
    nix::unistd::mkfifo(
        &d.path("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    let d = d.launch(&[]);
    d.ok(&["tell", "web", "1"]);
    d.wait_until("both lines, prefixed", || {
        let log = d.log();
        log.contains("\nweb:talk: one\n") && log.contains("\nweb:talk: two\n")
    });
    // Moved away and reopened: a running child's next lines go to the new
    // file, since the daemon writes them.
    std::fs::rename(d.path("log"), d.path("log.1")).unwrap();
    d.ok(&["reopen"]);
    std::fs::write(d.path("fifo"), "go\n").unwrap();
    d.wait_until("the rest in the new log", || {
        let log = d.log();
        log.contains("\nweb:talk: three\n") && log.contains("\nweb:talk: last\n")
    });
    assert!(!d.read("log.1").contains("three"));
    // log_prefix:off: children write to the file directly, as they are.
    let d2 = Daemon::prepare(":::log_prefix:off\nplain:raw:1:once:echo unprefixed\n").launch(&[]);
    d2.ok(&["tell", "plain", "1"]);
    d2.wait_until("the raw line", || d2.log().contains("\nunprefixed\n"));
    assert!(!d2.log().contains("plain:raw: unprefixed"));
}

#[test]
fn a_named_daemon_flag_in_effect_shows_as_the_command_lines() {
    let d = Daemon::prepare("web:a:1:wait:true\n");
    // No state setting in the cltab: --state-dir is the one in effect.
    let text = d.read("cltab");
    let without: String = text
        .lines()
        .filter(|l| !l.starts_with(":::state:"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(d.cltab(), without).unwrap();
    let dir = d.path("flagged-state");
    let d = d.launch(&["--state-dir", dir.to_str().unwrap()]);
    assert_eq!(
        source_of(&d, "state"),
        (dir.display().to_string(), "command_line".into())
    );
    assert!(dir.join("clinit.db").exists());
    // The socket came from the cltab: shown so.
    assert_eq!(source_of(&d, "socket").1, "cltab");
}

#[test]
fn byebye_is_shutdown() {
    let mut d = Daemon::start("web:a:1:respawn:exec sleep 100\nweb:::startup:1\n");
    d.wait_status("web", "web 1 DONE");
    assert_eq!(d.ok(&["byebye"]).trim(), "all groups halting");
    let mut child = d.child.take().unwrap();
    assert!(common::wait_exit(&mut child, "daemon did not exit").success());
    assert!(d.log().contains("shutdown"), "{}", d.log());
}
