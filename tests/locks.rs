//! The lock service, `clinit lock`, `clinit lockd` and the record store,
//! with the real binary. Held commands block on a FIFO, so the tests decide
//! when a lock is released without sleeping.

mod common;
use common::{Daemon, alive, wait_exit};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

fn mkfifo(d: &Daemon, name: &str) -> String {
    let p = d.path(name);
    nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    p.display().to_string()
}

/// `clinit lock ARGS` in the background.
fn lock_bg(d: &Daemon, args: &[&str]) -> Child {
    d.client(&["lock"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Open the FIFO for writing and close it: the reader's `read` returns.
/// Never blocks: without a reader (its command is gone) there is nothing
/// to release.
fn release_fifo(path: &str) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
    {
        Ok(mut f) => f.write_all(b"go\n").unwrap(),
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {}
        Err(e) => panic!("{path}: {e}"),
    }
}

fn finish(mut c: Child) -> Output {
    wait_exit(&mut c, "clinit lock did not finish");
    c.wait_with_output().unwrap()
}

/// A held command: opens FIFO (read-write: does not block), writes its
/// token to FILE, then blocks reading FIFO. The FIFO is open before the
/// token shows, so `release_fifo` after `wait_holds` always finds a reader.
fn held(file: &str, fifo: &str) -> String {
    format!("exec 3<>{fifo}; echo $CLINIT_LOCK_TOKEN $CLINIT_LOCK_NAME > {file}; read x <&3")
}

/// `clinit lock ARGS -- sh -c ...` whose command writes its pid to
/// `TAG.pid` and its token and lock name to `TAG.tok`, then blocks until
/// `release_fifo` of the returned FIFO.
fn holder(d: &Daemon, tag: &str, args: &[&str]) -> (Child, String) {
    let fifo = mkfifo(d, &format!("{tag}.fifo"));
    let cmd = format!(
        "echo $$ > {tag}.pid; {}",
        held(&format!("{tag}.tok"), &fifo)
    );
    let child = lock_bg(d, &[args, &["--", "sh", "-c", &cmd]].concat());
    (child, fifo)
}

/// Wait until the holder `tag` holds lock `name`.
fn wait_holds(d: &Daemon, tag: &str, name: &str) {
    d.wait_until(&format!("{tag} holds {name}"), || {
        d.read(&format!("{tag}.tok"))
            .ends_with(&format!(" {name}\n"))
    });
}

fn token(d: &Daemon, tag: &str) -> u64 {
    d.read(&format!("{tag}.tok"))
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

fn cmd_pid(d: &Daemon, tag: &str) -> i64 {
    d.read(&format!("{tag}.pid")).trim().parse().unwrap()
}

#[test]
fn exclusive_and_shared_contention_across_processes() {
    let d = Daemon::start("");
    let (a, f1) = holder(&d, "a", &["x"]);
    wait_holds(&d, "a", "x");
    let token_a = token(&d, "a");

    // Not grantable: --nowait exits 75 naming the holder.
    for args in [
        &["--nowait", "x", "--", "true"][..],
        &["--shared", "--nowait", "x", "--", "true"][..],
    ] {
        let out = d.run(&[&["lock"][..], args].concat());
        assert_eq!(out.status.code(), Some(75), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("lock x is busy"), "{err}");
        assert!(err.contains(&format!("token {token_a}")), "{err}");
        assert!(err.contains("clinit lock: sh -c"), "{err}");
        assert!(err.ends_with("[BUSY]\n"), "{err}");
    }
    let out = d.run(&["lock", "--timeout", "0.2", "x", "--", "true"]);
    assert_eq!(out.status.code(), Some(75));
    assert!(
        String::from_utf8_lossy(&out.stderr).ends_with("[TIMEOUT]\n"),
        "{out:?}"
    );
    let listing: serde_json::Value =
        serde_json::from_str(&d.ok(&["locks", "x", "--json"])).unwrap();
    let h = &listing[0]["holders"][0];
    assert_eq!(h["mode"], "exclusive");
    assert_eq!(h["token"], token_a);
    assert_eq!(h["info"]["uid"], 0);
    assert!(h["info"]["pid"].as_i64().unwrap() > 0);

    // A waiter queues behind the holder and is granted when it releases.
    let (b, f2) = holder(&d, "b", &["--shared", "x"]);
    d.wait_until("b waits", || {
        d.ok(&["locks", "x", "--json"]).contains("\"waiters\": [\n")
    });
    release_fifo(&f1);
    assert_eq!(finish(a).status.code(), Some(0));
    wait_holds(&d, "b", "x");
    // Shared holders share; an exclusive request is refused meanwhile.
    let (c, f3) = holder(&d, "c", &["--shared", "--nowait", "x"]);
    wait_holds(&d, "c", "x");
    assert_eq!(
        d.run(&["lock", "--nowait", "x", "--", "true"])
            .status
            .code(),
        Some(75)
    );
    let (tb, tc) = (token(&d, "b"), token(&d, "c"));
    assert!(
        token_a < tb && tb < tc,
        "tokens increase: {token_a} {tb} {tc}"
    );
    release_fifo(&f2);
    release_fifo(&f3);
    assert_eq!(finish(b).status.code(), Some(0));
    assert_eq!(finish(c).status.code(), Some(0));
    // The command's exit status is passed on.
    assert_eq!(
        d.run(&["lock", "x", "--", "sh", "-c", "exit 7"])
            .status
            .code(),
        Some(7)
    );
}

#[test]
fn a_dead_holder_loses_its_lock_to_the_waiter_and_it_is_logged() {
    let d = Daemon::start("");
    let (mut a, f1) = holder(&d, "a", &["x"]);
    wait_holds(&d, "a", "x");
    let b = lock_bg(&d, &["x", "--", "sh", "-c", "echo got > b.out"]);
    d.wait_until("b waits", || {
        d.ok(&["locks", "x", "--json"]).contains("\"waiters\": [\n")
    });
    a.kill().unwrap();
    a.wait().unwrap();
    assert_eq!(finish(b).status.code(), Some(0));
    assert_eq!(d.read("b.out"), "got\n");
    d.wait_until("warning logged", || {
        d.log()
            .contains("lock x released because its holder's connection closed")
    });
    // The killed holder's command died with it (it must not run on
    // without the lock).
    let a_cmd = cmd_pid(&d, "a");
    d.wait_until("holder's command gone", || !alive(a_cmd));
    release_fifo(&f1);
}

/// Pids of `clinit lockd` processes serving `socket`.
fn lockds(socket: &str) -> Vec<i64> {
    common::processes_with("cmdline", &["lockd", socket])
}

#[test]
fn concurrent_on_demand_starts_leave_one_lockd_and_a_lost_lock_stops_the_command() {
    // No daemon: `clinit lock` starts `clinit lockd` itself.
    let d = Daemon::prepare("");
    let socket = d.path("clinit.s").display().to_string();
    let runs: Vec<Child> = (0..4)
        .map(|i| {
            lock_bg(
                &d,
                &[
                    "y",
                    "--",
                    "sh",
                    "-c",
                    &format!("echo $CLINIT_LOCK_TOKEN > t{i}"),
                ],
            )
        })
        .collect();
    let mut said = 0;
    for r in runs {
        let out = finish(r);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        said += usize::from(err.contains("started clinit lockd"));
    }
    assert_eq!(said, 1, "the one run that started lockd says so");
    let pids = lockds(&socket);
    assert_eq!(pids.len(), 1, "exactly one lockd: {pids:?}");
    let tokens: std::collections::BTreeSet<String> =
        (0..4).map(|i| d.read(&format!("t{i}"))).collect();
    assert_eq!(tokens.len(), 4, "four distinct tokens: {tokens:?}");

    // The lock service dies while a command holds the lock: the command is
    // stopped and clinit lock exits 76.
    let (a, _f1) = holder(&d, "a", &["y"]);
    wait_holds(&d, "a", "y");
    let a_cmd = cmd_pid(&d, "a");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pids[0] as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let out = finish(a);
    assert_eq!(out.status.code(), Some(76));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("lost lock y"), "{err}");
    d.wait_until("command stopped", || !alive(a_cmd));
    // --no-start: no service and none started.
    let out = d.run(&["lock", "--no-start", "y", "--", "true"]);
    assert_eq!(out.status.code(), Some(69));
    assert!(
        String::from_utf8_lossy(&out.stderr).ends_with("[NO_LOCKMGR]\n"),
        "{out:?}"
    );
    assert!(lockds(&socket).is_empty());
}

#[test]
fn a_lockd_started_on_demand_keeps_its_state_and_log_next_to_its_socket() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("run");
    let socket = sub.join("l.s");
    let none = dir.path().join("no-cltab");
    let client = |args: &[&str]| {
        std::process::Command::new(common::bin())
            .arg("-c")
            .arg(&none)
            .arg("-s")
            .arg(&socket)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let out = client(&["lock", "v", "--", "true"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "started clinit lockd (pid {}",
            lockds(&socket.display().to_string())[0]
        )) && err.contains(&format!("its state and log are in {}", sub.display())),
        "{err}"
    );
    assert!(sub.join("lockd.log").is_file(), "its log beside the socket");
    assert!(
        sub.join("clinit.db").is_file(),
        "its state beside the socket"
    );
    // A second run finds it and says nothing about starting one.
    let out = client(&["lock", "v", "--", "true"]);
    assert!(out.status.success());
    assert!(
        out.stderr.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(client(&["shutdown"]).status.success());
}

/// A `clinit lockd` with `--idle MINUTES` in a temp dir, once it answers.
fn lockd_with_idle(minutes: &str) -> (Daemon, Child) {
    let d = Daemon::prepare("");
    let lockd = d
        .client(&["lockd", "--idle", minutes])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    d.wait_until("lockd answers", || d.run(&["locks"]).status.success());
    (d, lockd)
}

#[test]
fn the_lock_daemon_exits_when_idle() {
    let (d, mut lockd) = lockd_with_idle("0.01");
    // A lock held through a lease keeps it alive past its idle time (0.6 s)
    // with no client connected: it exits only after the lease (1.5 s) has
    // expired and released the lock.
    let ttl = Duration::from_millis(1500);
    let mut c = clinit::client::Client::connect(&d.path("clinit.s")).unwrap();
    let lease = match c.request(clinit::proto::Request::LeaseGrant {
        ttl_ms: ttl.as_millis() as u64,
    }) {
        Ok(clinit::proto::Reply::Lease { lease, .. }) => lease,
        other => panic!("{other:?}"),
    };
    let granted = c.request(clinit::proto::Request::LockAcquire {
        name: "z".into(),
        mode: clinit::lock::LockMode::Exclusive,
        wait: false,
        timeout_ms: None,
        lease: Some(lease),
        what: "idle test".into(),
    });
    assert!(matches!(granted, Ok(clinit::proto::Reply::Granted { .. })));
    let since = Instant::now();
    drop(c);
    let status = wait_exit(&mut lockd, "lockd did not exit when idle");
    assert!(status.success());
    assert!(since.elapsed() >= ttl, "exited after {:?}", since.elapsed());
    let log = d.log();
    let lost = log.find("lock z released because its lease expired");
    let idle = log.find("no lock held and no client");
    assert!(lost.is_some() && lost < idle, "{log}");
    assert!(
        d.log().contains("no lock held and no client"),
        "{}",
        d.log()
    );
}

#[test]
fn the_lock_daemon_answers_shutdown_before_it_exits() {
    let (d, mut lockd) = lockd_with_idle("60");
    let out = d.run(&["shutdown"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "all groups halting\n");
    assert!(wait_exit(&mut lockd, "lockd did not exit").success());
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    use clinit::proto::{Reply, Request};
    let d = Daemon::start("");
    let mut c = clinit::client::Client::connect(&d.path("clinit.s")).unwrap();
    let acquire = || Request::LockAcquire {
        name: "p".into(),
        mode: clinit::lock::LockMode::Exclusive,
        wait: true,
        timeout_ms: None,
        lease: None,
        what: "pipelined".into(),
    };
    let release = || Request::LockRelease {
        name: "p".into(),
        lease: None,
    };
    let Ok(Reply::Granted {
        token: mut last, ..
    }) = c.request(acquire())
    else {
        panic!("first acquire not granted");
    };
    for _ in 0..50 {
        // The release and the next acquire go out together; the daemon
        // (which may read both at once) must answer both, in order.
        let (r, a) = (c.send(release()).unwrap(), c.send(acquire()).unwrap());
        assert!(matches!(c.recv().unwrap(), (id, Reply::Ok) if id == r));
        match c.recv().unwrap() {
            (id, Reply::Granted { token, .. }) if id == a => {
                assert!(token > last, "{token} after {last}");
                last = token;
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn the_locks_listing_spells_modes_as_the_protocol_does() {
    let d = Daemon::start("");
    let (h, fifo) = holder(&d, "a", &["--shared", "vol"]);
    wait_holds(&d, "a", "vol");
    let out = d.ok(&["locks", "vol"]);
    let tok = token(&d, "a");
    assert!(
        out.contains(&format!("    held shared token {tok} since ")),
        "{out}"
    );
    release_fifo(&fifo);
    assert!(finish(h).status.success());
}

fn token_of(d: &Daemon) -> u64 {
    d.ok(&["lock", "t", "--", "sh", "-c", "echo $CLINIT_LOCK_TOKEN"])
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn tokens_strictly_increase_across_daemon_restarts() {
    let mut d = Daemon::start("");
    let t1 = token_of(&d);
    let t2 = token_of(&d);
    assert!(t1 < t2);
    d.stop();
    let mut d = d.launch(&[]);
    let t3 = token_of(&d);
    assert!(t2 < t3, "{t2} < {t3} after a restart");
    d.kill9();
    let d = d.launch(&[]);
    let t4 = token_of(&d);
    assert!(t3 < t4, "{t3} < {t4} after a SIGKILL");
}

fn rec(d: &Daemon, args: &[&str]) -> Output {
    d.run(&[&["record"][..], args].concat())
}

#[test]
fn records_with_update_signatures() {
    let mut d = Daemon::start("");
    let sig1: u64 = d
        .ok(&["record", "add", "vols", "backup", "node1"])
        .trim()
        .parse()
        .unwrap();
    assert_eq!(sig1 & 0xffff_ffff_ffff, 1, "the low 48 bits start at 1");
    let out = rec(&d, &["add", "vols", "backup", "node2"]);
    assert_eq!(out.status.code(), Some(14));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(r#"record "backup" already exists in container"#),
        "{err}"
    );
    let out = rec(&d, &["get", "vols", "nope"]);
    assert_eq!(out.status.code(), Some(15));
    assert_eq!(d.ok(&["record", "get", "vols", "backup"]), "node1\n");

    let sig2: u64 = d
        .ok(&[
            "record",
            "modify",
            "vols",
            "backup",
            "node2",
            "--sig",
            &sig1.to_string(),
        ])
        .trim()
        .parse()
        .unwrap();
    assert_eq!(sig2, sig1 + 1);
    // A stale signature collides, for modify and for delete.
    let out = rec(
        &d,
        &[
            "modify",
            "vols",
            "backup",
            "node3",
            "--sig",
            &sig1.to_string(),
        ],
    );
    assert_eq!(out.status.code(), Some(16));
    let out = rec(
        &d,
        &["delete", "vols", "backup", "--sig", &sig1.to_string()],
    );
    assert_eq!(out.status.code(), Some(16));
    let v: serde_json::Value =
        serde_json::from_str(&d.ok(&["record", "get", "vols", "backup", "--json"])).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"key": "backup", "value": "node2", "sig": sig2})
    );

    // Deleted and added again: a new generation, the old signature is dead.
    d.ok(&[
        "record",
        "delete",
        "vols",
        "backup",
        "--sig",
        &sig2.to_string(),
    ]);
    assert_eq!(rec(&d, &["get", "vols", "backup"]).status.code(), Some(15));
    let sig3: u64 = d
        .ok(&["record", "add", "vols", "backup", "node4"])
        .trim()
        .parse()
        .unwrap();
    assert_ne!(sig3, sig2);
    let out = rec(
        &d,
        &["modify", "vols", "backup", "x", "--sig", &sig2.to_string()],
    );
    assert_eq!(out.status.code(), Some(16));

    // Values from stdin, listing, and survival of a SIGKILL.
    let mut add = d
        .client(&["record", "add", "vols", "blob", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut add.stdin.take().unwrap(), b"line1\nline2\n").unwrap();
    assert!(add.wait_with_output().unwrap().status.success());
    let list: serde_json::Value =
        serde_json::from_str(&d.ok(&["record", "list", "vols", "--json"])).unwrap();
    assert_eq!(list[0]["key"], "backup");
    assert_eq!(list[1]["value"], "line1\nline2\n");
    d.kill9();
    let d = d.launch(&[]);
    assert_eq!(d.ok(&["record", "get", "vols", "backup"]), "node4\n");
    assert_eq!(d.ok(&["record", "get", "vols", "blob"]), "line1\nline2\n");
    // Delete with signature 0 is unconditional.
    d.ok(&["record", "delete", "vols", "blob"]);
    assert_eq!(rec(&d, &["get", "vols", "blob"]).status.code(), Some(15));
}

#[test]
fn signals_are_forwarded_and_leases_hold_locks() {
    let d = Daemon::start("");
    // SIGTERM to clinit lock reaches the command; the lock is released.
    let (a, _f1) = holder(&d, "a", &["x"]);
    wait_holds(&d, "a", "x");
    let a_cmd = cmd_pid(&d, "a");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(a.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let out = finish(a);
    assert_eq!(out.status.code(), Some(128 + 15));
    assert!(!alive(a_cmd));
    assert_eq!(
        d.run(&["lock", "--nowait", "x", "--", "true"])
            .status
            .code(),
        Some(0)
    );

    // clinit lock itself SIGKILLed: its lock is released, so the kernel
    // kills the command as well (it must not run on without the lock).
    let (mut k, _f0) = holder(&d, "k", &["x"]);
    wait_holds(&d, "k", "x");
    let k_cmd = cmd_pid(&d, "k");
    k.kill().unwrap();
    k.wait().unwrap();
    d.wait_until("command killed with its clinit lock", || !alive(k_cmd));

    // With --ttl the lock is held by a lease (lease ids have the top bit set),
    // renewed while the command runs, and revoked afterwards.
    let (b, f2) = holder(&d, "b", &["--ttl", "0.3", "y"]);
    wait_holds(&d, "b", "y");
    let v: serde_json::Value = serde_json::from_str(&d.ok(&["locks", "y", "--json"])).unwrap();
    let lease = v[0]["holders"][0]["holder"].as_u64().unwrap();
    assert!(lease > u64::MAX / 2, "held by a lease: {lease}");
    // A waiter that gives up after 1 s (more than three TTLs) finds it
    // still held: the lease was renewed meanwhile.
    let out = d.run(&["lock", "--timeout", "1", "y", "--", "true"]);
    assert_eq!(out.status.code(), Some(75));
    let v: serde_json::Value = serde_json::from_str(&d.ok(&["locks", "y", "--json"])).unwrap();
    assert_eq!(v[0]["holders"][0]["holder"].as_u64(), Some(lease));
    release_fifo(&f2);
    assert_eq!(finish(b).status.code(), Some(0));
    assert_eq!(d.ok(&["locks", "y", "--json"]).trim(), "[]");
}

#[test]
fn misuse_is_synch_err() {
    use clinit::client::{Client, ClientError};
    use clinit::lock::LockMode;
    use clinit::proto::{ErrorCode, Reply, Request};
    let d = Daemon::start("");
    let mut c = Client::connect(&d.path("clinit.s")).unwrap();
    let acquire = |c: &mut Client| {
        c.request(Request::LockAcquire {
            name: "m".into(),
            mode: LockMode::Shared,
            wait: false,
            timeout_ms: None,
            lease: None,
            what: "test".into(),
        })
    };
    let release = |c: &mut Client| {
        c.request(Request::LockRelease {
            name: "m".into(),
            lease: None,
        })
    };
    let code = |r: Result<Reply, ClientError>| match r {
        Err(ClientError::Daemon(e)) => (e.code, e.message),
        other => panic!("expected an error, got {other:?}"),
    };
    let (c1, msg) = code(release(&mut c));
    assert_eq!(c1, ErrorCode::SynchErr);
    assert!(msg.contains("lock m"), "{msg}");
    assert!(matches!(acquire(&mut c), Ok(Reply::Granted { .. })));
    assert_eq!(
        code(acquire(&mut c)).0,
        ErrorCode::SynchErr,
        "acquire twice"
    );
    assert!(matches!(release(&mut c), Ok(Reply::Ok)));
    assert_eq!(
        code(release(&mut c)).0,
        ErrorCode::SynchErr,
        "release twice"
    );
    let long = "n".repeat(256);
    let r = c.request(Request::LockAcquire {
        name: long,
        mode: LockMode::Exclusive,
        wait: false,
        timeout_ms: None,
        lease: None,
        what: String::new(),
    });
    assert_eq!(code(r).0, ErrorCode::BadName);
    let r = c.request(Request::LeaseRenew { lease: 12345 });
    assert_eq!(code(r).0, ErrorCode::SynchErr);
}

#[test]
fn a_record_write_fenced_with_an_older_token_is_refused() {
    let d = Daemon::start("");
    // A holder writes with its token, as a `clinit lock` command would.
    let write = |key: &str| {
        format!(
            "{} -c {} record add vol {key} v --fence vol:$CLINIT_LOCK_TOKEN && echo $CLINIT_LOCK_TOKEN",
            common::bin(),
            d.cltab().display()
        )
    };
    let first: u64 = d
        .ok(&["lock", "vol", "--", "sh", "-c", &write("a")])
        .lines()
        .last()
        .unwrap()
        .parse()
        .unwrap();
    let second: u64 = d
        .ok(&["lock", "vol", "--", "sh", "-c", &write("b")])
        .lines()
        .last()
        .unwrap()
        .parse()
        .unwrap();
    assert!(second > first);
    // The first holder, late: its token is stale now.
    let out = d.run(&[
        "record",
        "add",
        "vol",
        "late",
        "v",
        "--fence",
        &format!("vol:{first}"),
    ]);
    assert_eq!(out.status.code(), Some(21), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "record \"late\" in container \"vol\": token {first} of lock \"vol\" is stale: the record store has seen token {second}"
        )),
        "{err}"
    );
    assert_eq!(
        d.run(&["record", "get", "vol", "late"]).status.code(),
        Some(15)
    );
    // A bad --fence is a usage error.
    assert_eq!(
        d.run(&["record", "add", "vol", "x", "v", "--fence", "vol"])
            .status
            .code(),
        Some(2)
    );
}
