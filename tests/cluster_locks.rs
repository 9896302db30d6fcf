//! Cluster-wide locks against a real etcd: exclusion across nodes, tokens
//! rising across nodes and restarts, a holder node killed, a node cut off
//! from etcd by a proxy that drops its traffic.

mod common;

use common::*;
use std::process::{Child, Command, Stdio};

/// A node of the cluster at `etcd` (endpoints), lease TTL `ttl` seconds.
fn node(etcd: &str, name: &str, ttl: u64) -> Daemon {
    Daemon::start(&format!(
        ":::etcd:{etcd}\n:::node:{name}\n:::lease_ttl:{ttl}\n"
    ))
}

/// `clinit lock` on node `d`, in the background; its output in files of
/// `d`'s directory named after `tag`.
fn lock_bg(d: &Daemon, tag: &str, args: &[&str]) -> Child {
    Command::new(bin())
        .args(["-c", d.cltab().to_str().unwrap(), "lock"])
        .args(args)
        .current_dir(d.dir.path())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(d.path(&format!("{tag}.out"))).unwrap())
        .stderr(std::fs::File::create(d.path(&format!("{tag}.err"))).unwrap())
        .spawn()
        .unwrap()
}

/// The holders of lock `name` as node `d` lists them: (host, token).
fn holders(d: &Daemon, name: &str) -> Vec<(String, u64)> {
    let out = d.run(&["locks", name, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v.as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["holders"].as_array().cloned().unwrap_or_default())
        .map(|h| {
            (
                h["info"]["host"].as_str().unwrap_or_default().to_string(),
                h["token"].as_u64().unwrap_or_default(),
            )
        })
        .collect()
}

/// How many requests wait for lock `name` on node `d`.
fn waiters(d: &Daemon, name: &str) -> usize {
    let out = d.run(&["locks", name, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v.as_array()
        .into_iter()
        .flatten()
        .map(|c| c["waiters"].as_array().map_or(0, Vec::len))
        .sum()
}

/// Take "vol" on node `d` once, waiting: the token it was granted.
fn lock_once(d: &Daemon) -> u64 {
    d.ok(&["lock", "vol", "--", "sh", "-c", "echo $CLINIT_LOCK_TOKEN"])
        .trim()
        .parse()
        .unwrap()
}

fn token_in(d: &Daemon, file: &str) -> u64 {
    d.read(file).trim().parse().unwrap_or_else(|_| {
        panic!("{file}: {:?}", d.read(file));
    })
}

#[test]
fn locks_exclude_across_nodes_and_tokens_rise_across_nodes_and_restarts() {
    let etcd = Etcd::start();
    let n1 = node(&etcd.url, "n1", 10);
    let mut n2 = node(&etcd.url, "n2", 10);
    // n1 holds "vol" until told to let go.
    let mut a = lock_bg(
        &n1,
        "a",
        &[
            "vol",
            "--",
            "sh",
            "-c",
            "echo $CLINIT_LOCK_TOKEN > a.token; while [ ! -e a.go ]; do sleep 0.02; done",
        ],
    );
    n1.wait_until("n1 holds vol", || !n1.read("a.token").is_empty());
    let t1 = token_in(&n1, "a.token");
    // The other node sees n1's claim, and cannot have the lock now.
    n2.wait_until("n2 lists n1's claim", || {
        holders(&n2, "vol").iter().any(|(h, _)| h == "n1")
    });
    let out = n2.run(&["lock", "--nowait", "vol", "--", "true"]);
    assert_eq!(out.status.code(), Some(75), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("lock vol is busy") && err.contains("claim of node n1"),
        "{err}"
    );
    // A waiter on n2 gets it once n1's holder is done, with a higher token.
    let mut b = lock_bg(
        &n2,
        "b",
        &["vol", "--", "sh", "-c", "echo $CLINIT_LOCK_TOKEN > b.token"],
    );
    n2.wait_until("n2's request waits", || waiters(&n2, "vol") == 1);
    assert!(
        n2.read("b.token").is_empty(),
        "n2 ran while n1 held the lock"
    );
    std::fs::write(n1.path("a.go"), "").unwrap();
    assert!(wait_exit(&mut a, "n1's lock command").success());
    assert!(wait_exit(&mut b, "n2's lock command").success());
    let t2 = token_in(&n2, "b.token");
    assert!(t2 > t1, "n2's token {t2} after n1's {t1}");
    // Taken again on n2 (its claim is cached there): higher still.
    let t3 = lock_once(&n2);
    assert!(t3 > t2, "{t3} after {t2}");
    // Shared locks are held by both nodes at once.
    let mut s = lock_bg(
        &n1,
        "s",
        &[
            "--shared",
            "ro",
            "--",
            "sh",
            "-c",
            "echo $CLINIT_LOCK_TOKEN > s.token; while [ ! -e s.go ]; do sleep 0.02; done",
        ],
    );
    n1.wait_until("n1 holds ro", || !n1.read("s.token").is_empty());
    n2.ok(&["lock", "--shared", "--nowait", "ro", "--", "true"]);
    let out = n2.run(&["lock", "--nowait", "ro", "--", "true"]);
    assert_eq!(
        out.status.code(),
        Some(75),
        "exclusive while shared: {out:?}"
    );
    std::fs::write(n1.path("s.go"), "").unwrap();
    assert!(wait_exit(&mut s, "n1's shared lock command").success());
    // n2 restarts: its next token is higher than any before.
    n2.stop();
    let n2 = n2.launch(&[]);
    let t4 = lock_once(&n2);
    assert!(t4 > t3, "after a restart {t4} after {t3}");
    // And n1, which had given the lock up, gets a higher one again.
    let t5 = lock_once(&n1);
    assert!(t5 > t4, "{t5} after {t4}");
}

#[test]
fn a_holder_node_killed_gives_its_locks_to_another_node_after_its_lease() {
    let etcd = Etcd::start_members(3);
    let mut n1 = node(&etcd.url, "n1", 3);
    let n2 = node(&etcd.url, "n2", 3);
    let mut a = lock_bg(
        &n1,
        "a",
        &[
            "vol",
            "--",
            "sh",
            "-c",
            "echo $CLINIT_LOCK_TOKEN > a.token; exec sleep 1000",
        ],
    );
    n1.wait_until("n1 holds vol", || !n1.read("a.token").is_empty());
    let t1 = token_in(&n1, "a.token");
    let mut b = lock_bg(
        &n2,
        "b",
        &["vol", "--", "sh", "-c", "echo $CLINIT_LOCK_TOKEN > b.token"],
    );
    n2.wait_until("n2 waits behind n1", || {
        holders(&n2, "vol").iter().any(|(h, _)| h == "n1")
    });
    // The holder's node dies (its lock command sees its lock service go
    // and stops its command); n2 is granted once n1's lease has expired.
    n1.kill9();
    assert_eq!(wait_exit(&mut a, "n1's lock command").code(), Some(76));
    assert!(wait_exit(&mut b, "n2's lock command").success());
    let t2 = token_in(&n2, "b.token");
    assert!(t2 > t1, "{t2} after {t1}");
}

/// n1 holds "vol" with a command deaf to SIGTERM (only the SIGKILL after
/// the grace stops it); n2 waits for "vol" with a command that records in
/// `b.seen` whether n1's command still ran when n2 was granted the lock.
fn deaf_holder_and_waiter(n1: &Daemon, n2: &Daemon) -> (Child, Child) {
    let a = lock_bg(
        n1,
        "a",
        &[
            "vol",
            "--",
            "sh",
            "-c",
            "trap '' TERM; echo $$ > a.pid; echo $CLINIT_LOCK_TOKEN > a.token; exec sleep 1000",
        ],
    );
    n1.wait_until("n1 holds vol", || !n1.read("a.token").is_empty());
    let pid = n1.read("a.pid").trim().to_string();
    let check = format!(
        "if kill -0 {pid} 2>/dev/null; then echo alive; else echo stopped; fi > b.seen; echo $CLINIT_LOCK_TOKEN > b.token"
    );
    let b = lock_bg(n2, "b", &["vol", "--", "sh", "-c", &check]);
    n2.wait_until("n2 waits behind n1", || {
        holders(n2, "vol").iter().any(|(h, _)| h == "n1")
    });
    (a, b)
}

/// n1 takes "vol" again after n2: a higher token than n2's.
fn takes_part_again(n1: &Daemon, n2: &Daemon) {
    let t = lock_once(n1);
    assert!(t > token_in(n2, "b.token"));
}

#[test]
fn a_node_cut_off_from_etcd_stops_its_lock_command_before_another_node_is_granted() {
    let etcd = Etcd::start_members(3);
    let first = etcd
        .url
        .split(',')
        .next()
        .unwrap()
        .trim_start_matches("http://")
        .to_string();
    let proxy = Proxy::start(&first);
    // n1 reaches etcd only through the proxy.
    let n1 = node(&format!("http://127.0.0.1:{}", proxy.port), "n1", 4);
    let n2 = node(&etcd.url, "n2", 4);
    let (mut a, mut b) = deaf_holder_and_waiter(&n1, &n2);
    proxy.blackhole();
    assert_eq!(wait_exit(&mut a, "n1's lock command").code(), Some(76));
    let err = n1.read("a.err");
    assert!(err.contains("lost lock vol"), "{err}");
    assert!(wait_exit(&mut b, "n2's lock command").success());
    assert_eq!(n2.read("b.seen").trim(), "stopped");
    assert!(token_in(&n2, "b.token") > token_in(&n1, "a.token"));
    // The lock agent said why (its deadline passed, or a keep-alive could
    // not even be sent before it).
    let log = n1.log();
    assert!(
        log.contains("cluster locks: ") && log.contains("the lock lease"),
        "{log}"
    );
    // Healed, n1 takes part again: it gets the lock after n2, with a
    // higher token.
    proxy.heal();
    takes_part_again(&n1, &n2);
}

#[test]
fn a_frozen_daemon_lets_its_lock_command_stop_before_another_node_is_granted() {
    let etcd = Etcd::start();
    let n1 = node(&etcd.url, "n1", 4);
    let n2 = node(&etcd.url, "n2", 4);
    let (mut a, mut b) = deaf_holder_and_waiter(&n1, &n2);
    // n1's daemon freezes: it renews nothing and closes no connection.
    let daemon = nix::unistd::Pid::from_raw(n1.child.as_ref().unwrap().id() as i32);
    nix::sys::signal::kill(daemon, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let code = wait_exit(&mut a, "n1's lock command").code();
    let err = n1.read("a.err");
    assert_eq!(code, Some(76), "{err}");
    assert!(err.contains("the lock service did not answer"), "{err}");
    assert!(wait_exit(&mut b, "n2's lock command").success());
    assert_eq!(n2.read("b.seen").trim(), "stopped");
    nix::sys::signal::kill(daemon, nix::sys::signal::Signal::SIGCONT).unwrap();
    // Thawed, n1 finds its claims lost and takes part again.
    takes_part_again(&n1, &n2);
}

#[test]
fn a_node_cut_off_briefly_still_stops_its_lock_command_before_another_node_is_granted() {
    // Cut off just long enough to lose its claims, then healed at once:
    // the node must not hand its locks over (by revoking its old lease)
    // before its lock commands are stopped.
    let etcd = Etcd::start();
    let proxy = Proxy::start(etcd.url.trim_start_matches("http://"));
    let n1 = node(&format!("http://127.0.0.1:{}", proxy.port), "n1", 4);
    let n2 = node(&etcd.url, "n2", 4);
    let (mut a, mut b) = deaf_holder_and_waiter(&n1, &n2);
    proxy.blackhole();
    n1.wait_until("n1's lock command hears its lock is lost", || {
        n1.read("a.err").contains("lost lock vol")
    });
    proxy.heal();
    assert_eq!(wait_exit(&mut a, "n1's lock command").code(), Some(76));
    assert!(wait_exit(&mut b, "n2's lock command").success());
    assert_eq!(n2.read("b.seen").trim(), "stopped");
    takes_part_again(&n1, &n2);
}
