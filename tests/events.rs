//! `clinit events` and `clinit explain` with the real binary.

mod common;
use common::{DEADLINE, Daemon};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Every event the daemon keeps, as JSON objects.
fn events(d: &Daemon, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["events", "--json"];
    all.extend_from_slice(args);
    d.ok(&all)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

/// The sequence numbers are consecutive.
fn assert_consecutive(evs: &[Value]) {
    for w in evs.windows(2) {
        assert_eq!(
            w[1]["seq"].as_u64().unwrap(),
            w[0]["seq"].as_u64().unwrap() + 1,
            "{} then {}",
            w[0],
            w[1]
        );
    }
}

/// `want` appears in `evs` in this order (other events may come between):
/// each item is (kind, field, value) with an empty field for "any".
fn assert_in_order(evs: &[Value], want: &[(&str, &str, &str)]) {
    let mut i = 0;
    for (kind, field, value) in want {
        let found = evs[i..].iter().position(|e| {
            e["kind"] == *kind
                && (field.is_empty()
                    || e[*field].as_str() == Some(value)
                    || e[*field] == serde_json::from_str::<Value>(value).unwrap_or(Value::Null))
        });
        match found {
            Some(j) => i += j + 1,
            None => panic!(
                "no {kind} {field}={value} after event {i} in:\n{}",
                evs.iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("\n")
            ),
        }
    }
}

fn pid_of(d: &Daemon, tag: &str) -> i64 {
    d.entry(tag)["pid"].as_i64().unwrap_or(0)
}

#[test]
fn what_happens_is_told_in_order_with_consecutive_numbers() {
    let d = Daemon::start("web:app:3:respawn:sleep 1000\nweb:side:3:once:true\n");
    d.ok(&["web", "3"]);
    d.wait_until("app runs", || pid_of(&d, "app") > 0);
    let first = pid_of(&d, "app");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    d.wait_until("app respawned", || {
        let p = pid_of(&d, "app");
        p > 0 && p != first
    });
    d.ok(&["stop", "app"]);
    d.wait_until("app stopped", || d.entry("app")["state"] == "idle");
    // A lock handed over from one holder to a waiter.
    {
        use clinit::client::Client;
        use clinit::proto::{Reply, Request};
        let acquire = || Request::LockAcquire {
            name: "vol".into(),
            mode: clinit::lock::LockMode::Exclusive,
            wait: true,
            timeout_ms: None,
            lease: None,
            what: String::new(),
        };
        let mut a = Client::connect(&d.path("clinit.s")).unwrap();
        let mut b = Client::connect(&d.path("clinit.s")).unwrap();
        assert!(matches!(
            a.request(acquire()).unwrap(),
            Reply::Granted { .. }
        ));
        b.send(acquire()).unwrap();
        d.wait_until("b waits", || d.ok(&["locks", "vol"]).contains("waits"));
        a.request(Request::LockRelease {
            name: "vol".into(),
            lease: None,
        })
        .unwrap();
        assert!(matches!(b.recv().unwrap().1, Reply::Granted { .. }));
    }
    d.ok(&["record", "add", "net", "k", "v"]);
    let evs = events(&d, &[]);
    assert_eq!(evs[0]["seq"], 1);
    assert_consecutive(&evs);
    for e in &evs {
        assert!(e["time"].as_f64().unwrap() > 1.7e9, "{e}");
    }
    let sig9 = r#"{"signal":9}"#;
    assert_in_order(
        &evs,
        &[
            ("daemon_started", "", ""),
            ("told", "level", "3"),
            ("group_state", "state", "STARTING"),
            ("started", "tag", "app"),
            ("group_state", "state", "DONE"),
            ("exited", "status", sig9),
            ("started", "tag", "app"),
            ("operator", "action", "stopped"),
            ("exited", "requested", "true"),
            ("lock_granted", "name", "vol"),
            ("lock_released", "name", "vol"),
            ("lock_granted", "name", "vol"),
            ("lock_holder_died", "name", "vol"),
            ("record_added", "key", "k"),
        ],
    );
    // The hand-over: released by the first holder, granted to the waiter
    // with the next token.
    let vol: Vec<&Value> = evs.iter().filter(|e| e["name"] == "vol").collect();
    assert_eq!(vol[0]["kind"], "lock_granted");
    assert_eq!(vol[1]["kind"], "lock_released");
    assert_eq!(vol[1]["token"], vol[0]["token"]);
    assert_eq!(vol[2]["kind"], "lock_granted");
    assert!(vol[2]["token"].as_u64() > vol[1]["token"].as_u64());
    // The operator is named, and so is the lock's holder.
    let stop = evs.iter().find(|e| e["kind"] == "operator").unwrap();
    assert_eq!(stop["by"], "root (uid 0)");
    let granted = evs.iter().find(|e| e["kind"] == "lock_granted").unwrap();
    assert_eq!(granted["mode"], "exclusive");
    assert!(granted["token"].as_u64().unwrap() > 0);
    assert_eq!(granted["holder"]["uid"], 0);
    assert_eq!(granted["holder"]["pid"], std::process::id());
    // The same in words, one per line, numbered.
    let text = d.ok(&["events"]);
    assert!(text.lines().count() == evs.len(), "{text}");
    assert!(
        text.contains(" group web told level 3 by root (uid 0)\n"),
        "{text}"
    );
    assert!(
        text.contains(" lock vol granted (exclusive, token "),
        "{text}"
    );
    assert!(
        text.contains(" lock vol released: its holder died (exclusive, token "),
        "{text}"
    );
    // --group keeps the events about one group.
    let web = events(&d, &["--group", "web"]);
    assert!(!web.is_empty());
    assert!(web.iter().all(|e| e["group"] == "web"), "{web:?}");
    // --last N gives the newest N.
    let last2 = events(&d, &["--last", "2"]);
    assert_eq!(last2.len(), 2);
    assert_eq!(last2[1]["seq"], evs.last().unwrap()["seq"]);
}

#[test]
fn since_resumes_exactly_after_a_dropped_connection() {
    let d = Daemon::start("web:app:1:once:true\n");
    let mut follower = d
        .client(&["events", "--follow", "--json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(follower.stdout.take().unwrap()).lines();
    d.ok(&["web", "1"]);
    // Read until the group has settled, then drop the connection.
    let last = loop {
        let e: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
        if e["kind"] == "group_state" && e["state"] == "DONE" {
            break e["seq"].as_u64().unwrap();
        }
    };
    follower.kill().unwrap();
    follower.wait().unwrap();
    // Meanwhile more happens.
    d.ok(&["web", "2"]);
    d.ok(&["lock", "vol", "--", "true"]);
    let after = events(&d, &["--since", &last.to_string()]);
    assert_eq!(after[0]["seq"].as_u64().unwrap(), last + 1, "{after:?}");
    assert_consecutive(&after);
    assert_in_order(
        &after,
        &[("told", "level", "2"), ("lock_released", "name", "vol")],
    );
    // Following again from there gets the same, then goes on.
    let mut again = d
        .client(&["events", "--follow", "--json", "--since", &last.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(again.stdout.take().unwrap()).lines();
    let e: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(e["seq"].as_u64().unwrap(), last + 1);
    again.kill().unwrap();
    again.wait().unwrap();
}

#[test]
fn a_gap_is_reported_once_the_ring_has_wrapped() {
    let d = Daemon::start(":::events_keep:5\nweb:app:1:off:true\n");
    for level in ["1", "2", "3", "4"] {
        d.ok(&["web", level]);
    }
    let kept = events(&d, &[]);
    assert_eq!(kept.len(), 5, "only events_keep are kept: {kept:?}");
    let first = kept[0]["seq"].as_u64().unwrap();
    assert!(first > 2);
    let from1 = events(&d, &["--since", "1"]);
    assert_eq!(from1[0]["kind"], "gap");
    assert_eq!(from1[0]["since"], 1);
    assert_eq!(from1[0]["first"].as_u64().unwrap(), first);
    assert_eq!(&from1[1..], &kept[..]);
    let text = d.ok(&["events", "--since", "1"]);
    assert!(
        text.starts_with(&format!(
            "--- gap: events 2..{} are no longer kept by the daemon (see events_keep); continuing at {first}\n",
            first - 1
        )),
        "{text}"
    );
    // A number beyond the last one (from an earlier daemon run): a gap,
    // then everything kept.
    let future = events(&d, &["--since", "100000"]);
    assert_eq!(future[0]["kind"], "gap");
    assert_eq!(future.len(), kept.len() + 1);
}

#[test]
fn a_subscriber_that_stops_reading_delays_nobody_and_is_dropped() {
    use clinit::client::Client;
    use clinit::lock::LockMode;
    use clinit::proto::{ErrorCode, Reply, Request};
    let d = Daemon::start(":::events_keep:50\nweb:app:1:off:true\n");
    let socket = d.path("clinit.s");
    // A subscriber that never reads.
    let mut stuck = Client::connect(&socket).unwrap();
    stuck
        .send(Request::Events {
            since: None,
            last: None,
            group: None,
            follow: true,
        })
        .unwrap();
    // Thousands of events: far more than its socket buffer holds, and
    // than the daemon keeps.
    let mut c = Client::connect(&socket).unwrap();
    for _ in 0..2000 {
        let r = c
            .request(Request::LockAcquire {
                name: "flood".into(),
                mode: LockMode::Exclusive,
                wait: true,
                timeout_ms: None,
                lease: None,
                what: String::new(),
            })
            .unwrap();
        assert!(matches!(r, Reply::Granted { .. }));
        c.request(Request::LockRelease {
            name: "flood".into(),
            lease: None,
        })
        .unwrap();
    }
    // Another client is answered at once.
    let t = Instant::now();
    let out = d.run(&["status"]);
    assert!(out.status.success());
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "status took {:?}",
        t.elapsed()
    );
    // The stuck subscriber reads what was sent, then hears why it was
    // dropped.
    stuck.set_timeout(DEADLINE);
    let mut seen = 0u64;
    let err = loop {
        match stuck.recv() {
            Ok((_, Reply::Event { event })) => seen = event.seq,
            Ok((_, Reply::Subscribed { .. })) => {}
            Ok((_, other)) => panic!("{other:?}"),
            Err(clinit::client::ClientError::Daemon(e)) => break e,
            Err(e) => panic!("after event {seen}: {e}"),
        }
    };
    assert_eq!(err.code, ErrorCode::Lagged);
    assert!(
        err.message.contains(&format!("resume with --since {seen}")),
        "{}",
        err.message
    );
    assert!(d.log().contains("events subscriber dropped"), "{}", d.log());
}

#[test]
fn a_follower_ends_cleanly_when_the_daemon_shuts_down() {
    use std::io::Read;
    let mut d = Daemon::start("web:app:1:off:true\n");
    let mut follower = d
        .client(&["events", "--follow"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(follower.stdout.take().unwrap());
    // Subscribed: it has printed the first event.
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    assert!(
        first.starts_with("1 ") && first.contains("daemon started"),
        "{first}"
    );
    assert!(d.stop().success());
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    let status = common::wait_exit(&mut follower, "the follower did not exit");
    assert!(status.success(), "{status:?}");
    assert!(
        rest.contains("daemon shutting down by root (uid 0)"),
        "{rest}"
    );
}

/// `clinit explain NAME` as sentences, and `--json`'s facts by name.
fn explain(d: &Daemon, name: &str) -> (String, Vec<String>) {
    let text = d.ok(&["explain", name]);
    let json: Value = serde_json::from_str(&d.ok(&["explain", name, "--json"])).unwrap();
    let facts = json[0]["facts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["fact"].as_str().unwrap().to_string())
        .collect();
    (text, facts)
}

#[test]
fn explain_says_why_an_entry_runs_or_not() {
    let d = Daemon::start(
        "web:prep:3:wait:sleep 1000\n\
         web:app:13:respawn:sleep 1000\n\
         db:dbd:1:respawn:sleep 1000\n\
         db:flaky:1:respawn:exit 3\n\
         :flaky::respawn_burst:0\n\
         :flaky::respawn_delay:60\n\
         db:quick:1:respawn:exit 3\n\
         :quick::respawn_give_up:1\n\
         db:killed:1:respawn:sleep 1000\n\
         db:off:2:once:true\n",
    );
    // Never told.
    let (text, facts) = explain(&d, "app");
    assert!(text.starts_with("entry app (group web):\n"), "{text}");
    assert!(
        text.contains("group web has not been told a level since the daemon started"),
        "{text}"
    );
    assert_eq!(facts, ["group_not_told"]);
    // Waiting for a wait entry.
    d.ok(&["web", "3"]);
    d.wait_until("prep runs", || pid_of(&d, "prep") > 0);
    let (text, facts) = explain(&d, "app");
    assert!(
        text.contains("the group is waiting for the wait entry prep (running for "),
        "{text}"
    );
    assert_eq!(facts, ["at_level", "waiting_for"]);
    // At another level.
    d.ok(&["db", "1"]);
    d.wait_status("db", "db 1 DONE (1 gave up)");
    let (text, _) = explain(&d, "off");
    assert!(
        text.contains("group db is at level 1, and off runs at level 2 only."),
        "{text}"
    );
    // Throttled, gave up.
    d.wait_until("flaky throttled", || {
        d.entry("flaky")["state"] == "throttled"
    });
    let (text, facts) = explain(&d, "flaky");
    assert!(
        text.contains(
            "flaky is in a respawn delay of 60 s after 1 rapid restarts in a row; next try at"
        ),
        "{text}"
    );
    assert_eq!(facts, ["throttled", "at_level", "last_exit"]);
    assert!(
        text.contains("the last exit of flaky was exit code 3 at"),
        "{text}"
    );
    d.wait_until("quick gave up", || d.entry("quick")["gave_up"] == true);
    let (text, _) = explain(&d, "quick");
    assert!(
        text.contains("quick gave up after 2 rapid restarts in a row (respawn_give_up 1) (last exit code 3); `clinit start quick` tries again."),
        "{text}"
    );
    // The last exit was a signal.
    let pid = pid_of(&d, "killed");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    d.wait_until("killed respawned", || {
        let p = pid_of(&d, "killed");
        p > 0 && p != pid
    });
    let (text, _) = explain(&d, "killed");
    assert!(
        text.contains("the last exit of killed was signal 9 at"),
        "{text}"
    );
    // Stopped by an operator, across a restart of the daemon.
    d.ok(&["stop", "dbd"]);
    let (text, facts) = explain(&d, "dbd");
    assert!(
        text.contains("dbd was stopped by root (uid 0), ")
            && text.contains("and stays stopped, across level switches and daemon restarts, until `clinit start dbd`."),
        "{text}"
    );
    assert!(
        facts.contains(&"stopped_by_operator".to_string()),
        "{facts:?}"
    );
    // Changed by a reread.
    let tab = std::fs::read_to_string(d.cltab()).unwrap();
    std::fs::write(
        d.cltab(),
        tab.replace(
            "web:app:13:respawn:sleep 1000",
            "web:app:13:respawn:sleep 1001",
        ),
    )
    .unwrap();
    d.ok(&["reread"]);
    let (text, facts) = explain(&d, "app");
    assert!(text.contains("was changed by a reread at"), "{text}");
    assert!(
        facts.contains(&"changed_by_reread".to_string()),
        "{facts:?}"
    );
    // A group.
    let text = d.ok(&["explain", "db"]);
    assert!(
        text.starts_with("group db:\n  group db is at level 1, state DONE.\n"),
        "{text}"
    );
    assert!(
        text.contains("group db was told level 1 by root (uid 0), "),
        "{text}"
    );
    // Unknown: a clear error naming it, exit 3.
    let out = d.run(&["explain", "nope"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no entry or group named nope"),
        "{out:?}"
    );
}

#[test]
fn an_operator_stop_is_explained_after_a_daemon_restart() {
    let mut d = Daemon::start("db:dbd:1:respawn:sleep 1000\n");
    d.ok(&["db", "1"]);
    d.wait_until("dbd runs", || pid_of(&d, "dbd") > 0);
    d.ok(&["stop", "dbd"]);
    assert!(d.stop().success());
    let d = d.launch(&[]);
    let (text, _) = explain(&d, "dbd");
    assert!(
        text.contains("dbd was stopped by root (uid 0), ") && text.contains("stays stopped"),
        "{text}"
    );
    // Events start again at 1 in a new daemon run.
    let evs = events(&d, &[]);
    assert_eq!(evs[0]["seq"], 1);
    assert_eq!(evs[0]["kind"], "daemon_started");
}
