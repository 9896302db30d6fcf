//! Exclusive groups against a real etcd: at most one node runs the group,
//! it moves when its owner dies, freezes or is cut off, on `cluster move`
//! and when a `test` entry fails; a node not in `nodes` never runs it; a
//! preferred node coming back does not take it back.
//!
//! Each test runs a 3-member etcd on loopback; a node that a test cuts
//! off reaches etcd (one member) through a proxy of the test's.
//!
//! Every process of the group appends "node token time" to a shared file
//! several times a second; [`check`] fails the test if the tokens in that
//! file ever go down or one token appears for two nodes (two owners
//! interleaving: A, B, A).

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const TTL: u64 = 3;

/// One test at a time: each runs a 3-member etcd and two or three nodes,
/// and ten of those at once on a small machine starve etcd's elections
/// (a member not healthy within the harness's deadline).
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A node at `etcd` (endpoints) named `name`.
fn node(etcd: &str, name: &str) -> Daemon {
    Daemon::start(&format!(
        ":::etcd:{etcd}\n:::node:{name}\n:::lease_ttl:{TTL}\n"
    ))
}

/// The shared directory with the writer script and its output.
struct Shared {
    dir: tempfile::TempDir,
}

impl Shared {
    fn new() -> Shared {
        let dir = tempfile::tempdir().unwrap();
        let script = format!(
            "while :; do echo \"$CLINIT_NODE $CLINIT_FENCE_TOKEN $(date +%s%N)\" >> {}; sleep 0.1; done\n",
            dir.path().join("appends").display()
        );
        std::fs::write(dir.path().join("writer.sh"), script).unwrap();
        Shared { dir }
    }

    fn writer(&self) -> String {
        format!("sh {}", self.dir.path().join("writer.sh").display())
    }

    fn appends(&self) -> PathBuf {
        self.dir.path().join("appends")
    }
}

/// Push `text` as the shared cltab through `d`.
fn push(d: &Daemon, text: &str) {
    let file = d.path("shared.cltab");
    std::fs::write(&file, text).unwrap();
    d.ok(&["cluster", "push", file.to_str().unwrap()]);
}

/// The runs of (node, token) in the appends file, in order; panics if a
/// token goes down or one token shows two nodes.
fn check(path: &Path) -> Vec<(String, i64)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut runs: Vec<(String, i64)> = Vec::new();
    let mut owner_of: std::collections::HashMap<i64, String> = Default::default();
    for line in text.lines() {
        let mut w = line.split(' ');
        let (Some(node), Some(token)) = (w.next(), w.next()) else {
            continue;
        };
        let token: i64 = token
            .parse()
            .unwrap_or_else(|_| panic!("no token in {line:?}:\n{text}"));
        if let Some(n) = owner_of.insert(token, node.to_string()) {
            assert_eq!(n, node, "token {token} seen for two nodes:\n{text}");
        }
        if let Some((_, last)) = runs.last() {
            assert!(
                token >= *last,
                "token went down from {last} to {token} (two owners interleaving):\n{text}"
            );
        }
        if runs.last().is_none_or(|(_, t)| *t != token) {
            runs.push((node.to_string(), token));
        }
    }
    runs
}

/// The node of the last run, once appends are being made by a node
/// other than `not` (and with a newer token than `after`).
fn wait_owner(
    d: &Daemon,
    s: &Shared,
    not: Option<&str>,
    after: i64,
    limit: Duration,
) -> (String, i64) {
    let mut got = None;
    d.wait_until_for("a new owner's appends", limit, || {
        let runs = check(&s.appends());
        got = runs
            .last()
            .filter(|(n, t)| *t > after && not != Some(n.as_str()))
            .cloned();
        got.is_some()
    });
    got.unwrap()
}

/// The failover since `fault` (the new owner's first append seen) is
/// within `lease_ttl` + 4 s: the goal is `lease_ttl` + 2 s (measured by
/// bench/exclusive_soak.sh); the test leaves room for a loaded machine.
fn assert_bound(fault: Instant) {
    let took = fault.elapsed();
    assert!(
        took <= Duration::from_secs(TTL + 4),
        "failover took {took:?} with lease_ttl {TTL} s"
    );
}

/// The first etcd member's `host:port`, for a proxy in front of it.
fn first_member(etcd: &Etcd) -> String {
    let url = etcd.url.split(',').next().unwrap();
    url.trim_start_matches("http://").to_string()
}

fn cluster_json(d: &Daemon) -> serde_json::Value {
    let out = d.run(&["cluster", "status", "--json"]);
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

fn group_view(d: &Daemon) -> serde_json::Value {
    cluster_json(d)["groups"]
        .as_array()
        .and_then(|g| g.iter().find(|g| g["group"] == "web").cloned())
        .unwrap_or_default()
}

/// Processes of this test's group web that node `name` started (other
/// tests run nodes of the same names at the same time).
fn web_on(s: &Shared, name: &str) -> Vec<i64> {
    let script = s.dir.path().join("writer.sh");
    let mine = processes_with("cmdline", &[script.to_str().unwrap()]);
    processes_with(
        "environ",
        &["CLINIT_GROUP=web", &format!("CLINIT_NODE={name}")],
    )
    .into_iter()
    .filter(|p| mine.contains(p))
    .collect()
}

fn setup(nodes_opt: &str) -> (Etcd, Shared, Daemon, Daemon) {
    let etcd = Etcd::start_members(3);
    let s = Shared::new();
    let n1 = node(&etcd.url, "n1");
    let n2 = node(&etcd.url, "n2");
    push(
        &n1,
        &format!(
            "web:::placement:exclusive\n{nodes_opt}web:w:3:respawn:{}\n",
            s.writer()
        ),
    );
    (etcd, s, n1, n2)
}

#[test]
fn one_node_runs_it_at_the_cluster_goal_with_its_token_and_a_node_not_in_nodes_never_does() {
    let _serial = serial();
    let etcd = Etcd::start_members(3);
    let s = Shared::new();
    let n1 = node(&etcd.url, "n1");
    // n2 feeds a watchdog device (here a plain file) while it owns a group.
    let dev = s.dir.path().join("watchdog-device");
    std::fs::write(&dev, "").unwrap();
    let n2 = Daemon::start(&format!(
        ":::etcd:{}\n:::node:n2\n:::lease_ttl:{TTL}\n:::hw_watchdog:{}\n",
        etcd.url,
        dev.display()
    ));
    let n3 = node(&etcd.url, "n3");
    push(
        &n1,
        &format!(
            "web:::placement:exclusive\nweb:::nodes:n2,n1\nweb:w:3:respawn:{}\nlocal:l:3:once:true\n",
            s.writer()
        ),
    );
    // The goal told on a node that may not run it.
    let out = n3.ok(&["web", "3"]);
    assert!(
        out.contains("goal of exclusive group web set to level 3"),
        "{out}"
    );
    // n2 is the most preferred: it owns and runs the group.
    let (owner, token) = wait_owner(&n1, &s, None, 0, DEADLINE);
    assert_eq!(owner, "n2");
    assert!(token > 0);
    let v = group_view(&n1);
    assert_eq!(v["owner"], "n2", "{v}");
    assert_eq!(v["token"], token, "{v}");
    assert_eq!(v["goal"], "3", "{v}");
    assert_eq!(v["placement"], "exclusive", "{v}");
    // Status on a non-owner names the owner; on the owner, it runs.
    n1.wait_until("n1 shows the owner", || {
        let st = String::from_utf8_lossy(&n1.run(&["status", "web"]).stdout).to_string();
        st.starts_with("web - ") && st.trim().ends_with(&format!("owner n2 token {token}"))
    });
    n2.wait_status("web", &format!("web 3 DONE owner n2 token {token}"));
    // explain says why it does not run here.
    let why = n1.ok(&["explain", "web"]);
    assert!(
        why.contains(&format!(
            "node n2 owns it (fencing token {token}), so nothing of it runs on this node (n1)"
        )),
        "{why}"
    );
    // The environment of its processes.
    let pids = web_on(&s, "n2");
    assert!(!pids.is_empty());
    let env = std::fs::read(format!("/proc/{}/environ", pids[0])).unwrap();
    let env = String::from_utf8_lossy(&env);
    assert!(
        env.contains(&format!("CLINIT_FENCE_TOKEN={token}")),
        "{env}"
    );
    // A few more appends, all n2's.
    n1.wait_until("more appends", || {
        std::fs::read_to_string(s.appends())
            .unwrap_or_default()
            .lines()
            .count()
            >= 10
    });
    assert_eq!(check(&s.appends()), vec![("n2".to_string(), token)]);
    assert!(web_on(&s, "n1").is_empty() && web_on(&s, "n3").is_empty());
    n2.wait_until("the device fed", || {
        std::fs::read(&dev)
            .unwrap_or_default()
            .iter()
            .filter(|b| **b == 0)
            .count()
            >= 2
    });
    // A local tell of a non-exclusive group still works on each node.
    n3.ok(&["local", "3"]);
    n3.wait_status("local", "local 3 DONE");
    // The goal set to no level stops it everywhere.
    n1.ok(&["web", ""]);
    n2.wait_until("web stopped", || web_on(&s, "n2").is_empty());
    assert_eq!(check(&s.appends()).len(), 1);
}

#[test]
fn a_killed_owner_is_replaced_within_the_lease_and_does_not_take_the_group_back() {
    let _serial = serial();
    let (_etcd, s, mut n1, n2) = setup("web:::nodes:n1,n2\n");
    n2.ok(&["web", "3"]);
    let (owner, t1) = wait_owner(&n1, &s, None, 0, DEADLINE);
    assert_eq!(owner, "n1");
    // The owner's token fences writes to the record store.
    let fence = |t: i64| format!("group:web:{t}");
    n2.ok(&["record", "add", "vol", "k1", "v", "--fence", &fence(t1)]);
    n1.kill9();
    let killed = Instant::now();
    let (owner, t2) = wait_owner(&n2, &s, Some("n1"), t1, DEADLINE);
    assert_bound(killed);
    assert_eq!(owner, "n2");
    assert!(t2 > t1);
    // The killed daemon's watchdog stopped its processes.
    n2.wait_until("n1's processes gone", || web_on(&s, "n1").is_empty());
    n2.ok(&["record", "add", "vol", "k2", "v", "--fence", &fence(t2)]);
    let out = n2.run(&["record", "add", "vol", "k3", "v", "--fence", &fence(t1)]);
    assert_eq!(out.status.code(), Some(21), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("STALE_TOKEN")
            || String::from_utf8_lossy(&out.stderr).contains("stale"),
        "{out:?}"
    );
    // n1 comes back: preferred, yet n2 keeps the group.
    let n1 = n1.launch(&[]);
    n1.wait_until("n1 registered as a candidate", || {
        group_view(&n1)["candidates"]
            .as_array()
            .is_some_and(|c| c.len() == 2)
    });
    n1.wait_until("n1 shows the owner", || {
        String::from_utf8_lossy(&n1.run(&["status", "web"]).stdout).contains("owner n2")
    });
    assert!(web_on(&s, "n1").is_empty());
    let runs = check(&s.appends());
    assert_eq!(runs.last().unwrap(), &("n2".to_string(), t2));
}

#[test]
fn a_frozen_owner_is_fenced_by_its_watchdog_and_does_not_restart_the_group_when_it_resumes() {
    let _serial = serial();
    let (_etcd, s, n1, n2) = setup("");
    n1.ok(&["web", "3"]);
    let (owner, t1) = wait_owner(&n1, &s, None, 0, DEADLINE);
    let (frozen, other) = if owner == "n1" {
        (&n1, &n2)
    } else {
        (&n2, &n1)
    };
    let pid = frozen.child.as_ref().unwrap().id() as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .unwrap();
    let frozen_at = Instant::now();
    let (new, t2) = wait_owner(other, &s, Some(&owner), t1, DEADLINE);
    assert_bound(frozen_at);
    assert_ne!(new, owner);
    assert!(t2 > t1);
    // The watchdog killed the frozen node's processes.
    assert!(
        web_on(&s, &owner).is_empty(),
        "the frozen owner's processes still run"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGCONT,
    )
    .unwrap();
    // It resumes, learns it lost the group, and answers with the owner.
    frozen.wait_until("the resumed node shows the new owner", || {
        String::from_utf8_lossy(&frozen.run(&["status", "web"]).stdout)
            .contains(&format!("owner {new}"))
    });
    // More appends from the new owner only.
    let n = std::fs::read_to_string(s.appends())
        .unwrap_or_default()
        .lines()
        .count();
    other.wait_until("more appends", || {
        std::fs::read_to_string(s.appends())
            .unwrap_or_default()
            .lines()
            .count()
            >= n + 10
    });
    assert!(
        web_on(&s, &owner).is_empty(),
        "the resumed node started the group again:\n{}",
        frozen.log()
    );
    let runs = check(&s.appends());
    assert_eq!(runs.last().unwrap(), &(new, t2));
}

/// n1 owns the group, reaching etcd through a proxy; `fault` cuts it off:
/// n2 takes over only once n1 has stopped, and n1, healed, does not run it
/// again.
fn owner_cut_off(fault: impl Fn(&Proxy)) {
    let etcd = Etcd::start_members(3);
    let s = Shared::new();
    let proxy = Proxy::start(&first_member(&etcd));
    let n1 = node(&format!("http://127.0.0.1:{}", proxy.port), "n1");
    let n2 = node(&etcd.url, "n2");
    push(
        &n2,
        &format!(
            "web:::placement:exclusive\nweb:::nodes:n1,n2\nweb:w:3:respawn:{}\n",
            s.writer()
        ),
    );
    n2.ok(&["web", "3"]);
    let (owner, t1) = wait_owner(&n2, &s, None, 0, DEADLINE);
    assert_eq!(owner, "n1");
    fault(&proxy);
    let cut_at = Instant::now();
    let (owner, t2) = wait_owner(&n2, &s, Some("n1"), t1, DEADLINE);
    assert_bound(cut_at);
    assert_eq!(owner, "n2");
    assert!(web_on(&s, "n1").is_empty());
    proxy.heal();
    n1.wait_until("n1 sees n2 own it", || {
        String::from_utf8_lossy(&n1.run(&["status", "web"]).stdout).contains("owner n2")
    });
    assert!(web_on(&s, "n1").is_empty());
    assert_eq!(check(&s.appends()).last().unwrap(), &("n2".to_string(), t2));
}

#[test]
fn an_owner_cut_off_from_etcd_stops_before_another_takes_over() {
    let _serial = serial();
    owner_cut_off(Proxy::blackhole);
}

#[test]
fn move_hands_over_gracefully_and_a_failing_test_entry_moves_the_group() {
    let _serial = serial();
    let etcd = Etcd::start_members(3);
    let s = Shared::new();
    let n1 = node(&etcd.url, "n1");
    let n2 = node(&etcd.url, "n2");
    // `check` fails on n1 only (its node name), after the writer started.
    push(
        &n1,
        &format!(
            "web:::placement:exclusive\nweb:::nodes:n1,n2\n:::ineligible_for:600\nweb:w:3:respawn:{}\nweb:check:3:test:sh -c '[ ! -e {} ] || [ \"$CLINIT_NODE\" != n1 ]'\n",
            s.writer(),
            s.dir.path().join("fail-n1").display()
        ),
    );
    n1.ok(&["web", "3"]);
    let (owner, t1) = wait_owner(&n1, &s, None, 0, DEADLINE);
    assert_eq!(owner, "n1");
    // Refusals name the group and the node.
    let out = n1.run(&["cluster", "move", "web", "n1"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("node n1 owns exclusive group web already")
    );
    let out = n1.run(&["cluster", "move", "web", "n9"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("node n9 cannot take exclusive group web")
    );
    let out = n1.run(&["cluster", "move", "nosuch"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("nosuch is not an exclusive group"));
    // Move to n2.
    let out = n1.ok(&["cluster", "move", "web", "n2"]);
    assert!(out.contains("moved from node n1 to node n2"), "{out}");
    let (owner, t2) = wait_owner(&n1, &s, Some("n1"), t1, DEADLINE);
    assert_eq!(owner, "n2");
    assert!(web_on(&s, "n1").is_empty());
    // And back, to the next eligible node.
    let out = n1.ok(&["cluster", "move", "web"]);
    assert!(out.contains("to node n1"), "{out}");
    let (_, t3) = wait_owner(&n1, &s, Some("n2"), t2, DEADLINE);
    // Now the test entry fails on n1: it gives the group up, n2 takes it.
    std::fs::write(s.dir.path().join("fail-n1"), "").unwrap();
    n1.ok(&["restart", "--group", "web"]);
    let (owner, t4) = wait_owner(&n2, &s, Some("n1"), t3, DEADLINE);
    assert_eq!(owner, "n2");
    assert!(t4 > t3);
    n1.wait_until("n1 logged the release", || {
        n1.log().contains("a test entry failed")
    });
    let runs = check(&s.appends());
    let nodes: Vec<&str> = runs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(nodes, ["n1", "n2", "n1", "n2"], "{runs:?}");
}

#[test]
fn an_owner_whose_connections_are_reset_stops_before_another_takes_over() {
    let _serial = serial();
    owner_cut_off(Proxy::cut);
}

/// The etcd member that leads, by its client URL's index.
fn leader(etcd: &Etcd) -> usize {
    let out = std::process::Command::new("etcdctl")
        .args(["--endpoints", &etcd.url, "endpoint", "status", "-w", "json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .position(|m| m["Status"]["header"]["member_id"] == m["Status"]["leader"])
        .expect("a leader")
}

#[test]
fn killing_the_etcd_leader_never_lets_two_nodes_run_the_group() {
    let _serial = serial();
    let mut etcd = Etcd::start_members(3);
    let s = Shared::new();
    let n1 = node(&etcd.url, "n1");
    let n2 = node(&etcd.url, "n2");
    push(
        &n1,
        &format!(
            "web:::placement:exclusive\nweb:::nodes:n1,n2\nweb:w:3:respawn:{}\n",
            s.writer()
        ),
    );
    n1.ok(&["web", "3"]);
    let (_, t1) = wait_owner(&n1, &s, None, 0, DEADLINE);
    let before = std::fs::read_to_string(s.appends())
        .unwrap()
        .lines()
        .count();
    etcd.kill_member(leader(&etcd));
    // A new leader is elected; the group goes on (on one node or moved,
    // never on two), and appends go on.
    n1.wait_until("appends go on after the leader died", || {
        std::fs::read_to_string(s.appends())
            .unwrap_or_default()
            .lines()
            .count()
            >= before + 40
    });
    let runs = check(&s.appends());
    assert!(runs[0].1 == t1 && runs.len() <= 2, "{runs:?}");
    let (owner, token) = runs.last().unwrap().clone();
    n2.wait_until("n2 shows the owner", || {
        String::from_utf8_lossy(&n2.run(&["status", "web"]).stdout)
            .contains(&format!("owner {owner} token {token}"))
    });
}

#[test]
fn a_daemon_whose_binary_was_replaced_still_starts_its_watchdog_and_runs_the_group() {
    let _serial = serial();
    let etcd = Etcd::start_members(3);
    let s = Shared::new();
    // n1 runs from a copy of the binary, removed once it runs (an upgrade
    // or a rebuild replaces the file under a running daemon).
    let mut d = Daemon::prepare(&format!(
        ":::etcd:{}\n:::node:n1\n:::lease_ttl:{TTL}\n",
        etcd.url
    ));
    let copy = d.path("clinit-copy");
    std::fs::copy(bin(), &copy).unwrap();
    d.exe = Some(copy.clone());
    let n1 = d.launch(&[]);
    std::fs::remove_file(&copy).unwrap();
    push(
        &n1,
        &format!(
            "web:::placement:exclusive\nweb:w:3:respawn:{}\n",
            s.writer()
        ),
    );
    n1.ok(&["web", "3"]);
    let (owner, _) = wait_owner(&n1, &s, None, 0, DEADLINE);
    assert_eq!(owner, "n1");
    assert!(
        n1.log().contains("fencing watchdog started"),
        "{}",
        n1.log()
    );
}

#[test]
fn an_owner_whose_connection_is_reset_briefly_keeps_the_group_and_its_token() {
    let _serial = serial();
    let etcd = Etcd::start_members(3);
    let s = Shared::new();
    let proxy = Proxy::start(&first_member(&etcd));
    // A long lease: the reconnection has 5 s before the owner must stop.
    let n1 = Daemon::start(&format!(
        ":::etcd:http://127.0.0.1:{}\n:::node:n1\n:::lease_ttl:10\n",
        proxy.port
    ));
    push(
        &n1,
        &format!(
            "web:::placement:exclusive\nweb:w:3:respawn:{}\n",
            s.writer()
        ),
    );
    n1.ok(&["web", "3"]);
    let (_, t1) = wait_owner(&n1, &s, None, 0, DEADLINE);
    proxy.cut();
    proxy.heal();
    // The connection was lost and made again (the log says so), the lease
    // kept: the same token writes on.
    n1.wait_until("the connection lost", || {
        n1.log().contains("exclusive groups: ")
    });
    let n = std::fs::read_to_string(s.appends())
        .unwrap()
        .lines()
        .count();
    n1.wait_until("more appends", || {
        std::fs::read_to_string(s.appends())
            .unwrap_or_default()
            .lines()
            .count()
            >= n + 20
    });
    assert_eq!(check(&s.appends()), vec![("n1".to_string(), t1)]);
    assert!(
        !n1.log().contains("can no longer be renewed"),
        "{}",
        n1.log()
    );
}

#[test]
fn in_single_node_mode_an_exclusive_group_runs_as_any_group() {
    let _serial = serial();
    let d = Daemon::start("web:::placement:exclusive\nweb:a:1:respawn:sleep 1000\n");
    let out = d.ok(&["web", "1"]);
    assert!(out.contains("level transition started"), "{out}");
    d.wait_status("web", "web 1 DONE");
    assert_eq!(d.entry("a")["state"], "running");
}
