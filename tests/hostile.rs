//! Clients that mean harm, or are merely broken: what each may cost the
//! daemon and everyone else is bounded, and they get clear errors.

mod common;

use common::*;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

fn frame(body: &str) -> Vec<u8> {
    let mut f = (body.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(body.as_bytes());
    f
}

/// One frame's body, or None at end of stream.
fn read_frame(s: &mut UnixStream) -> Option<serde_json::Value> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).ok()?;
    let mut body = vec![0; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).ok()?;
    Some(serde_json::from_slice(&body).unwrap())
}

fn connect(d: &Daemon) -> UnixStream {
    let s = UnixStream::connect(d.path("clinit.s")).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s
}

fn hello(s: &mut UnixStream) {
    s.write_all(&frame(r#"{"version":1,"agent":"hostile"}"#))
        .unwrap();
    let h = read_frame(s).unwrap();
    assert_eq!(h["version"], 1, "{h}");
}

#[test]
fn a_stream_that_ends_inside_a_frame_gets_bad_request() {
    let d = Daemon::start("");
    let mut s = connect(&d);
    hello(&mut s);
    let mut partial = 100u32.to_be_bytes().to_vec();
    partial.extend_from_slice(b"{\"id\":7,\"o");
    s.write_all(&partial).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let r = read_frame(&mut s).expect("a reply");
    assert_eq!(r["code"], "BAD_REQUEST", "{r}");
    assert_eq!(
        r["message"],
        "the stream ended inside a frame (10 of its 100 bytes came)"
    );
    assert!(read_frame(&mut s).is_none(), "closed after");
}

#[test]
fn silent_and_slow_clients_are_dropped_after_client_timeout_and_delay_nobody() {
    let d = Daemon::start(":::client_timeout:0.5\n");
    // One that never says hello, one that starts a frame and stops.
    let t = Instant::now();
    let mut mute = connect(&d);
    let mut slow = connect(&d);
    hello(&mut slow);
    let mut partial = 1000u32.to_be_bytes().to_vec();
    partial.extend_from_slice(b"{\"id\":1");
    slow.write_all(&partial).unwrap();
    // Meanwhile others are served.
    assert!(d.run(&["status"]).status.success());

    let r = read_frame(&mut mute).expect("a reply");
    assert_eq!(r["code"], "BAD_REQUEST", "{r}");
    assert_eq!(r["message"], "no hello within 0.5 s (client_timeout)");
    assert!(read_frame(&mut mute).is_none(), "closed after");

    let r = read_frame(&mut slow).expect("a reply");
    assert_eq!(r["code"], "BAD_REQUEST", "{r}");
    assert_eq!(
        r["message"],
        "a frame was not completed within 0.5 s of its first byte (client_timeout)"
    );
    assert!(read_frame(&mut slow).is_none(), "closed after");
    // Not before the timeout (both timers started after `t`).
    assert!(
        t.elapsed() >= Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
}

/// Start the prepared daemon through `/bin/sh -c "SETUP; exec clinit ..."`
/// (a umask, a ulimit) and wait until it answers.
fn launch_under(d: &mut Daemon, setup: &str) {
    let child = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(format!(
            "{setup}; exec {} -c {} -d",
            bin(),
            d.cltab().display()
        ))
        .current_dir(d.dir.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    d.child = Some(child);
    d.wait_until("daemon answers", || d.run(&["status"]).status.success());
}

#[test]
fn files_are_never_world_writable_whatever_the_umask() {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let mut d = Daemon::prepare("g:a:1:once:true\n:::logdir:logs\n");
    // A state directory made beforehand, open to all: narrowed to 0700.
    let state = d.path("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).unwrap();
    launch_under(&mut d, "umask 000");
    d.ok(&["tell", "g", "1"]);
    d.wait_status("g", "g 1 DONE");
    d.ok(&["record", "add", "c", "k", "v"]);
    let mut seen = Vec::new();
    let mut dirs = vec![d.dir.path().to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let meta = e.metadata().unwrap();
            let name = e
                .path()
                .strip_prefix(d.dir.path())
                .unwrap()
                .display()
                .to_string();
            if meta.file_type().is_socket() {
                let mode = meta.permissions().mode() & 0o777;
                assert_eq!(mode, 0o600, "socket {name} has mode {mode:o}");
                continue;
            }
            if name == "cltab" {
                continue;
            }
            if meta.is_dir() {
                dirs.push(e.path());
            }
            let mode = meta.permissions().mode() & 0o777;
            assert_eq!(mode & 0o022, 0, "{name} has mode {mode:o}");
            // The state (directory, database, its journals) is private.
            if name.starts_with("state") {
                assert_eq!(mode & 0o077, 0, "{name} has mode {mode:o}");
            }
            seen.push(name);
        }
    }
    seen.sort();
    for want in [
        "log",
        "clstat",
        "clinit.s.lock",
        "logs",
        "logs/g.a.log",
        "state",
        "state/clinit.db",
        "state/clinit.db-wal",
    ] {
        assert!(seen.iter().any(|s| s == want), "{want} not among {seen:?}");
    }
}

#[test]
fn a_refused_request_neither_forges_log_lines_nor_floods_the_log() {
    let d = Daemon::prepare(":::socket_mode:0666\n");
    d.open_to_others();
    let d = d.launch(&[]);
    let forged = "web\n2026-12-01T00:00:00.000000Z  INFO shutdown (by root (uid 0))";
    let out = d.run_as(65534, 65534, &["tell", forged, "1"]);
    assert_eq!(out.status.code(), Some(11), "{out:?}");
    let log = d.log();
    assert!(
        log.contains("refused tell web\\n2026-12-01T00:00:00.000000Z  INFO shutdown"),
        "{log}"
    );
    assert!(
        !log.lines().any(|l| l.starts_with("2026-12-01T00:00:00")),
        "{log}"
    );

    // 20 refusals with 100 KB names: a few short lines (at most 5 lines of
    // at most ~450 bytes, the request tag included, per peer in each 10 s
    // window).
    let before = d.log().len();
    let big = "x".repeat(100_000);
    let t = Instant::now();
    for _ in 0..20 {
        let out = d.run_as(65534, 65534, &["tell", &big, "1"]);
        assert_eq!(out.status.code(), Some(11));
    }
    let windows = (t.elapsed().as_secs() / 10 + 2) as usize;
    let added = &d.log()[before..];
    let refusals = added.matches("refused tell").count();
    assert!(
        (1..=5 * windows).contains(&refusals),
        "{refusals} refusals logged in {windows} windows"
    );
    assert!(
        added.len() <= refusals * 450,
        "the log grew by {} bytes: {added}",
        added.len()
    );
}

#[test]
fn create_refuses_names_that_become_paths_or_comments_as_the_parser_does() {
    let d = Daemon::start(":::logdir:logs\ng:a:1:once:true\n");
    let cases: &[(&[&str], i32, &str)] = &[
        (
            &["create", ".", "/../ESCAPE", "1", "once", "--", "true"],
            7,
            "bad tag name '/../ESCAPE': it holds a '/'",
        ),
        (
            &["create", "#x", "t", "1", "once", "--", "true"],
            7,
            "bad group name '#x': it starts with '#'",
        ),
        (
            &["create", "g", "a\u{1b}[2J", "1", "once", "--", "true"],
            7,
            "bad tag name 'a\\u{1b}[2J': it holds a control character (newline, NUL, ...)",
        ),
    ];
    let before = d.read("cltab");
    for (args, code, msg) in cases {
        let out = d.run(args);
        assert_eq!(out.status.code(), Some(*code), "{args:?}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(msg), "{args:?}: {err}");
    }
    // A NUL in the command, through the protocol (argv cannot carry one).
    let mut s = connect(&d);
    hello(&mut s);
    s.write_all(&frame(
        r#"{"id":3,"op":"create","group":"g","tag":"n","levels":"1","mode":"once","options":[],"command":"tr\u0000ue"}"#,
    ))
    .unwrap();
    let r = read_frame(&mut s).unwrap();
    assert_eq!(r["code"], "BAD_REQUEST", "{r}");
    assert_eq!(
        r["message"],
        "bad command 'tr\\u{0}ue': it must be one non-empty line without NUL bytes"
    );
    assert_eq!(d.read("cltab"), before, "the cltab is unchanged");
    assert!(!d.path("ESCAPE").exists() && !d.path("logs").join("..").join("ESCAPE.log").exists());
}

#[test]
fn lease_ttls_and_connections_per_user_are_bounded_with_limit_errors() {
    let d =
        Daemon::prepare(":::socket_mode:0666\n:::lease_ttl_max:60\n:::peer_connections_max:2\n");
    d.open_to_others();
    let d = d.launch(&[]);
    // A lease longer than lease_ttl_max.
    let mut s = connect(&d);
    hello(&mut s);
    s.write_all(&frame(
        r#"{"id":5,"op":"lease_grant","ttl_ms":1000000000000000}"#,
    ))
    .unwrap();
    let r = read_frame(&mut s).unwrap();
    assert_eq!(r["code"], "LIMIT", "{r}");
    assert_eq!(
        r["message"],
        "a lease TTL of 1000000000000 s is over lease_ttl_max (60 s); renew a shorter lease instead"
    );
    s.write_all(&frame(r#"{"id":6,"op":"lease_grant","ttl_ms":60000}"#))
        .unwrap();
    assert_eq!(read_frame(&mut s).unwrap()["kind"], "lease");

    // `nobody` may hold two connections; root is not limited.
    assert!(d.run_as(65534, 65534, &["status"]).status.success());
    let holder = |name: &str| d.spawn_as(65534, 65534, &["lock", name, "--", "sleep", "1000"]);
    let mut held = [holder("one"), holder("two")];
    d.wait_until("both hold their lock", || {
        let l = d.ok(&["locks"]);
        l.contains("one") && l.contains("two")
    });
    let out = d.run_as(65534, 65534, &["lock", "three", "--", "true"]);
    assert_eq!(out.status.code(), Some(18), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("uid 65534 has 2 connections open, the most peer_connections_max allows"),
        "{err}"
    );
    // Root still gets in, and so does nobody once a connection closes.
    assert!(d.run(&["lock", "three", "--", "true"]).status.success());
    for h in &mut held {
        h.kill().unwrap();
        h.wait().unwrap();
    }
    d.wait_until("nobody gets in again", || {
        d.run_as(65534, 65534, &["lock", "three", "--", "true"])
            .status
            .success()
    });
}

#[test]
fn a_status_larger_than_a_frame_comes_whole_in_pages() {
    // About 7 MB of status: 12,000 entries with 500-byte commands, 9,000
    // of them (about 5 MB) in g0.
    let long = "x".repeat(500);
    let entries: String = (0..12_000)
        .map(|i| {
            let g = [0, 1, 2][(i >= 9_000) as usize + (i >= 10_500) as usize];
            format!("g{g}:t{i}:1:respawn:sleep 1 {long}\n")
        })
        .collect();
    let d = Daemon::start(&entries);
    // A wait answers with the group's first page of status (it used to be
    // TOO_LARGE: the whole group did not fit in a frame).
    for group in ["g0", "g1"] {
        d.ok(&["tell", group, "2"]);
        let out = d.run(&["wait", group, "--timeout", "30"]);
        assert!(out.status.success(), "{group}: {out:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("{group} 2 DONE\n")
        );
    }
    let out = d.run(&["status", "--json"]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        out.stdout.len() > 4 * 1024 * 1024,
        "{} bytes",
        out.stdout.len()
    );
    let groups: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let groups = groups.as_array().unwrap();
    let names: Vec<&str> = groups
        .iter()
        .map(|g| g["group"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["g0", "g1", "g2"]);
    let tags: Vec<String> = groups
        .iter()
        .flat_map(|g| g["entries"].as_array().unwrap())
        .map(|e| e["tag"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(tags.len(), 12_000);
    let mut sorted = tags.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 12_000, "no entry twice");
}

#[test]
fn locks_and_leases_per_user_are_bounded_with_limit_errors() {
    let d = Daemon::prepare(":::socket_mode:0666\n:::peer_locks_max:2\n:::peer_leases_max:1\n");
    d.open_to_others();
    let d = d.launch(&[]);
    assert!(d.run_as(65534, 65534, &["status"]).status.success());
    let holder = |args: &[&str]| {
        let all: Vec<&str> = ["lock"]
            .iter()
            .chain(args)
            .chain(&["--", "sleep", "1000"])
            .copied()
            .collect();
        d.spawn_as(65534, 65534, &all)
    };
    // One lock under a lease, one on a connection: nobody's two.
    let mut held = [holder(&["--ttl", "60", "one"]), holder(&["two"])];
    d.wait_until("both held", || {
        let l = d.ok(&["locks"]);
        l.contains("one") && l.contains("two")
    });
    let out = d.run_as(65534, 65534, &["lock", "three", "--", "true"]);
    assert_eq!(out.status.code(), Some(18), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "lock three: uid 65534 holds or waits for 2 locks, the most peer_locks_max allows"
        ),
        "{err}"
    );
    // Root is not limited.
    assert!(d.run(&["lock", "three", "--", "true"]).status.success());
    held[1].kill().unwrap();
    held[1].wait().unwrap();
    d.wait_until("two released", || !d.ok(&["locks"]).contains("two"));
    // A second lease is over peer_leases_max, a plain lock is fine again.
    let out = d.run_as(65534, 65534, &["lock", "--ttl", "60", "four", "--", "true"]);
    assert_eq!(out.status.code(), Some(18), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("uid 65534 has 1 live leases, the most peer_leases_max allows"),
        "{out:?}"
    );
    assert!(
        d.run_as(65534, 65534, &["lock", "four", "--", "true"])
            .status
            .success()
    );
    held[0].kill().unwrap();
    held[0].wait().unwrap();
}

#[test]
fn a_lock_listing_larger_than_a_frame_comes_whole_in_pages() {
    let d = Daemon::start("");
    let mut c = clinit::client::Client::connect(&d.path("clinit.s")).unwrap();
    let what = "w".repeat(300);
    // 12,000 locks of about 400 bytes each in the listing, pipelined
    // 100 at a time (neither side may fill the socket while the other
    // waits to write).
    let n = 12_000;
    for batch in 0..n / 100 {
        for i in batch * 100..(batch + 1) * 100 {
            c.send(clinit::proto::Request::LockAcquire {
                name: format!("lock-{i:05}"),
                mode: clinit::lock::LockMode::Exclusive,
                wait: false,
                timeout_ms: None,
                lease: None,
                what: what.clone(),
            })
            .unwrap();
        }
        for _ in 0..100 {
            let (_, r) = c.recv().unwrap();
            assert!(matches!(r, clinit::proto::Reply::Granted { .. }), "{r:?}");
        }
    }
    let out = d.run(&["locks", "--json"]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        out.stdout.len() > 4 * 1024 * 1024,
        "{} bytes",
        out.stdout.len()
    );
    let all: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), n);
    assert!(
        names.windows(2).all(|w| w[0] < w[1]),
        "in order, none twice"
    );
    // Holders' descriptions were cut to 256 bytes.
    assert_eq!(
        all[0]["holders"][0]["info"]["what"].as_str().unwrap().len(),
        256
    );
}

#[test]
fn records_per_user_are_bounded_with_limit_errors() {
    let d = Daemon::prepare(
        ":::socket_mode:0666\n:::peer_records_max:2\n:::peer_record_bytes_max:100\n",
    );
    d.open_to_others();
    let d = d.launch(&[]);
    let nobody = |args: &[&str]| d.run_as(65534, 65534, args);
    let sig = String::from_utf8(nobody(&["record", "add", "c", "k1", "v"]).stdout).unwrap();
    assert!(nobody(&["record", "add", "c", "k2", "v"]).status.success());
    let out = nobody(&["record", "add", "c", "k3", "v"]);
    assert_eq!(out.status.code(), Some(18), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("record \"k3\" in container \"c\": uid 65534 has written 2 records, the most peer_records_max allows"),
        "{err}"
    );
    // Bytes: growing one of its records past peer_record_bytes_max.
    let big = "x".repeat(100);
    let out = nobody(&["record", "modify", "c", "k1", &big, "--sig", sig.trim()]);
    assert_eq!(out.status.code(), Some(18), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("uid 65534 would have written 101 bytes of records, more than peer_record_bytes_max (100)"),
        "{err}"
    );
    // Root is not limited; nobody gets room back by deleting.
    for k in ["r1", "r2", "r3"] {
        d.ok(&["record", "add", "c", k, &big]);
    }
    assert!(nobody(&["record", "delete", "c", "k2"]).status.success());
    assert!(nobody(&["record", "add", "c", "k3", "v"]).status.success());
}

#[test]
fn out_of_descriptors_the_daemon_serves_what_it_has_backs_off_and_recovers() {
    let mut d = Daemon::prepare(":::client_timeout:120\n");
    // Few descriptors: clients can take all the daemon has left.
    launch_under(&mut d, "ulimit -n 48");
    let mut kept = connect(&d);
    hello(&mut kept);
    let failures = |d: &Daemon| d.log().matches("failed: Too many open files").count();
    let mut hogs = Vec::new();
    d.wait_until("accept fails for want of descriptors, six times", || {
        for _ in 0..8 {
            if let Ok(s) = UnixStream::connect(d.path("clinit.s")) {
                hogs.push(s);
            }
        }
        failures(&d) >= 6
    });
    // Backing off (10 ms doubling to 1 s), not spinning: a spinning accept
    // logs thousands of lines between two looks.
    let seen = failures(&d);
    assert!(seen < 40, "{seen} accept failures logged: it spins");
    // The connection it had is still served.
    kept.write_all(&frame(
        r#"{"id":1,"op":"status","group":null,"brief":true}"#,
    ))
    .unwrap();
    let r = read_frame(&mut kept).expect("a reply on the kept connection");
    assert_eq!(r["kind"], "status", "{r}");
    // Descriptors come back: new clients are served again.
    drop(hogs);
    d.wait_until("a new client is served again", || {
        d.run(&["status"]).status.success()
    });
}

#[test]
fn a_file_that_is_not_a_socket_at_the_socket_path_is_left_alone() {
    let d = Daemon::prepare("");
    std::fs::write(d.path("clinit.s"), "precious\n").unwrap();
    let out = d.run(&["-d"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not a socket"), "{err}");
    assert!(err.contains("clinit.s"), "{err}");
    assert_eq!(d.read("clinit.s"), "precious\n");
}
