//! Cluster mode against a real etcd: the shared cltab, nodes applying it,
//! the cluster's status and tells through etcd.

mod common;

use common::*;

/// A node of the cluster on `etcd`: its own socket, state and name.
fn node(etcd: &Etcd, name: &str) -> Daemon {
    Daemon::start(&format!(":::etcd:{}\n:::node:{name}\n", etcd.url))
}

/// Write `text` to a file in `d`'s directory and push it; the revision.
fn push(d: &Daemon, text: &str, expect: Option<i64>) -> std::process::Output {
    let file = d.path("shared.cltab");
    std::fs::write(&file, text).unwrap();
    let mut args = vec!["cluster", "push", file.to_str().unwrap()];
    let e = expect.map(|e| e.to_string());
    if let Some(e) = &e {
        args.extend(["--expect", e.as_str()]);
    }
    d.run(&args)
}

fn rev_of(out: &std::process::Output) -> i64 {
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// The pid of each running entry of `d`.
fn pids(d: &Daemon) -> std::collections::BTreeMap<String, i64> {
    d.status_json()
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["entries"].as_array().unwrap().clone())
        .filter(|e| e["state"] == "running")
        .map(|e| {
            (
                e["tag"].as_str().unwrap().to_string(),
                e["pid"].as_i64().unwrap(),
            )
        })
        .collect()
}

fn cluster_status(d: &Daemon) -> serde_json::Value {
    serde_json::from_str(&d.ok(&["cluster", "status", "--json"])).unwrap()
}

#[test]
fn push_validates_and_compares_and_pull_gives_back_what_is_stored() {
    let etcd = Etcd::start();
    let n1 = node(&etcd, "n1");
    // Nothing stored yet.
    let out = n1.run(&["cluster", "pull"]);
    assert_eq!(out.status.code(), Some(15), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("no shared cltab is stored in etcd under /clinit/cltab")
    );
    // An invalid file: every error, with file and line; nothing stored.
    let out = push(&n1, "web:a:1:sometimes:x\nweb::1:once:x\n", None);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    let file = n1.path("shared.cltab").display().to_string();
    assert!(
        err.contains(&format!("{file}:1: unknown mode 'sometimes'")),
        "{err}"
    );
    assert!(err.contains(&format!("{file}:2: empty tag")), "{err}");
    assert_eq!(n1.run(&["cluster", "pull"]).status.code(), Some(15));
    // Stored only if still absent (--expect 0), then only at its revision.
    let text = "# the web tier\nweb:a:1:respawn:sleep 1000\n";
    let rev = rev_of(&push(&n1, text, Some(0)));
    let out = push(&n1, text, Some(0));
    assert_eq!(out.status.code(), Some(16), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!(
            "the shared cltab is at revision {rev}, not 0: pull it again, merge, and push with --expect {rev}"
        )),
        "{out:?}"
    );
    let rev2 = rev_of(&push(
        &n1,
        &format!("{text}web:b:1:respawn:sleep 1000\n"),
        Some(rev),
    ));
    assert!(rev2 > rev);
    let pulled: serde_json::Value =
        serde_json::from_str(&n1.ok(&["cluster", "pull", "--json"])).unwrap();
    assert_eq!(pulled["rev"], rev2);
    assert_eq!(
        pulled["cltab"],
        format!("{text}web:b:1:respawn:sleep 1000\n")
    );
    assert_eq!(
        n1.ok(&["cluster", "pull"]),
        format!("{text}web:b:1:respawn:sleep 1000\n")
    );
}

#[test]
fn every_node_applies_a_new_revision_with_the_reread_rules() {
    let etcd = Etcd::start();
    let n1 = node(&etcd, "n1");
    let n2 = node(&etcd, "n2");
    let v1 = "web:keep:1:respawn:sleep 1000\nweb:chg:1:respawn:sleep 1000\nweb:gone:1:respawn:sleep 1000\n";
    let rev = rev_of(&push(&n1, v1, None));
    for n in [&n1, &n2] {
        n.wait_until("the node runs the revision", || {
            n.run(&["status", "web"]).status.success()
        });
        n.ok(&["tell", "web", "1"]);
        n.wait_status("web", "web 1 DONE");
    }
    let before = [pids(&n1), pids(&n2)];
    let v2 = "web:keep:1:respawn:sleep 1000\nweb:chg:1:respawn:sleep 999\nweb:new:1:respawn:sleep 1000\n";
    let rev2 = rev_of(&push(&n1, v2, Some(rev)));
    for (n, old) in [&n1, &n2].into_iter().zip(&before) {
        n.wait_until("the new revision runs", || {
            let p = pids(n);
            p.len() == 3 && p.contains_key("new") && p["chg"] != old["chg"]
        });
        let now = pids(n);
        assert_eq!(now["keep"], old["keep"], "an unchanged entry is untouched");
        assert!(!alive(old["gone"]), "a deleted entry is stopped");
        assert!(
            !alive(old["chg"]),
            "a changed entry is stopped, then started anew"
        );
        assert_eq!(n.entry("chg")["command"], "sleep 999");
    }
    // The cluster's status, from etcd alone: both nodes, the revision
    // they run, their groups.
    n1.wait_until("both nodes publish the revision", || {
        let s = cluster_status(&n1);
        s["nodes"].as_array().unwrap().len() == 2
            && s["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .all(|n| n["cltab_rev"] == rev2)
    });
    let s = cluster_status(&n2);
    for (i, name) in ["n1", "n2"].into_iter().enumerate() {
        let n = &s["nodes"][i];
        assert_eq!(n["node"], name);
        assert_eq!(n["alive"], true);
        assert_eq!(n["groups"][0]["group"], "web");
        assert_eq!(n["groups"][0]["level"], "1");
        assert_eq!(n["groups"][0]["state"], "DONE");
    }
}

#[test]
fn a_group_is_told_on_another_node_through_etcd() {
    let etcd = Etcd::start();
    let n1 = node(&etcd, "n1");
    let mut n2 = node(&etcd, "n2");
    rev_of(&push(&n1, "web:a:12:respawn:sleep 1000\n", None));
    n2.wait_until("n2 runs the cltab", || {
        n2.run(&["status", "web"]).status.success()
    });
    // Told from n1, taken by n2, answered as a local tell.
    assert_eq!(
        n1.ok(&["--node", "n2", "web", "1"]),
        "level transition started\n"
    );
    n2.wait_status("web", "web 1 DONE");
    assert_eq!(
        n1.ok(&["tell", "--node", "n2", "web", "2"]),
        "level transition started\n"
    );
    n2.wait_status("web", "web 2 DONE");
    n1.wait_status("web", "web - IDLE");
    // A group n2 does not have: n2's error, with its exit status.
    let out = n1.run(&["--node", "n2", "db", "1"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("node n2: no such group: db"),
        "{out:?}"
    );
    // A goal told right after the push that makes its group.
    let rev = rev_of(&push(
        &n1,
        "web:a:12:respawn:sleep 1000\ndb:x:1:respawn:sleep 1000\n",
        None,
    ));
    assert_eq!(
        n1.ok(&["--node", "n2", "db", "1"]),
        "level transition started\n",
        "after revision {rev}"
    );
    n2.wait_status("db", "db 1 DONE");
    // A node name that cannot be one.
    let out = n1.run(&["--node", "a/b", "web", "1"]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    // The goal survives n2's restart, as a local one does; a clean
    // shutdown revokes n2's lease: gone at once, not after lease_ttl.
    n2.stop();
    n1.wait_until_for("n2 gone at once", std::time::Duration::from_secs(5), || {
        cluster_status(&n1)["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["node"] == "n2" && n["alive"] == false)
    });
    let n2 = n2.launch(&[]);
    n2.wait_status("web", "web 2 DONE");
    // The cluster's status says n2 is alive again.
    n1.wait_until("n2 alive", || {
        cluster_status(&n1)["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["node"] == "n2" && n["alive"] == true)
    });
}

#[test]
fn a_node_started_while_etcd_is_down_runs_its_cache_and_catches_up() {
    let mut etcd = Etcd::start();
    let mut n1 = node(&etcd, "n1");
    let rev = rev_of(&push(&n1, "web:a:1:respawn:sleep 1000\n", None));
    n1.wait_until("n1 runs the revision", || {
        n1.run(&["status", "web"]).status.success()
    });
    n1.ok(&["tell", "web", "1"]);
    n1.wait_status("web", "web 1 DONE");
    n1.stop();
    etcd.stop();
    // etcd down: the node starts on its cached revision, says why in the
    // log, and a client command that needs etcd fails fast, naming it.
    let n1 = n1.launch(&[]);
    n1.wait_status("web", "web 1 DONE");
    n1.wait_until("the log says etcd is unreachable", || {
        n1.log()
            .contains(&format!("cannot reach etcd at {}", etcd.url))
    });
    assert!(n1.log().contains(&format!(
        "supervising shared cltab revision {rev} as last known"
    )));
    let t = std::time::Instant::now();
    let out = n1.run(&["cluster", "status"]);
    assert_eq!(out.status.code(), Some(19), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains(&format!("cannot reach etcd at {}", etcd.url))
    );
    assert!(
        t.elapsed() < std::time::Duration::from_secs(15),
        "{:?}",
        t.elapsed()
    );
    // `status` says so.
    n1.wait_until("status says etcd is unreachable", || {
        n1.ok(&["status"]).contains("UNREACHABLE since")
    });
    let st = n1.ok(&["status"]);
    assert!(st.starts_with("web 1 DONE\n"), "{st}");
    let says = format!(
        "# cluster clinit, node n1: etcd {} UNREACHABLE since ",
        etcd.url
    );
    assert!(st.contains(&says), "{st}");
    assert!(
        st.ends_with(&format!("; shared cltab revision {rev}\n")),
        "{st}"
    );
    // A second node that never saw the cluster starts with nothing.
    let n2 = node(&etcd, "n2");
    n2.wait_until("n2 finds etcd unreachable", || {
        n2.ok(&["status"]).contains("UNREACHABLE since")
    });
    let st = n2.ok(&["status"]);
    assert!(st.starts_with("# cluster clinit, node n2: etcd "), "{st}");
    assert!(st.ends_with("; shared cltab revision 0\n"), "{st}");
    // etcd back: both catch up.
    etcd.launch();
    n2.wait_until("n2 gets the cltab", || {
        n2.run(&["status", "web"]).status.success()
    });
    n1.wait_until("n1 reconnects", || {
        n1.ok(&["status"])
            .contains(&format!("etcd {} connected since", etcd.url))
    });
    let rev2 = rev_of(&push(&n1, "web:a:1:respawn:sleep 999\n", Some(rev)));
    n1.wait_until("n1 applies the new revision", || {
        n1.entry("a")["command"] == "sleep 999"
    });
    n2.wait_until("n2 applies it too", || {
        n2.entry("a")["command"] == "sleep 999"
    });
    n1.wait_until("published", || {
        cluster_status(&n1)["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["cltab_rev"] == rev2)
    });
}

#[test]
fn entries_in_a_local_cltab_are_refused_in_cluster_mode() {
    let etcd = Etcd::start();
    let d = Daemon::prepare(&format!(":::etcd:{}\nweb:a:1:once:true\n", etcd.url));
    let out = d.run(&["-d"]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    let line = std::fs::read_to_string(d.cltab()).unwrap().lines().count();
    assert!(
        err.contains(&format!(
            "{}:{line}: entry a in a node's local cltab: in cluster mode entries live in the shared cltab",
            d.cltab().display()
        )),
        "{err}"
    );
    assert!(err.contains("[CLTAB_LOCAL_ENTRY]"), "{err}");
    // Not in cluster mode: the cluster commands say so.
    let single = Daemon::prepare("");
    let out = single.run(&["cluster", "status"]);
    assert_eq!(out.status.code(), Some(20), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not in cluster mode"));
}

#[test]
fn create_and_delete_edit_the_shared_cltab_keeping_its_comments() {
    let mut etcd = Etcd::start();
    let n1 = node(&etcd, "n1");
    let n2 = node(&etcd, "n2");
    let text = "# web tier\nweb:a:1:respawn:sleep 1000\n# end of web\n";
    rev_of(&push(&n1, text, None));
    for n in [&n1, &n2] {
        n.wait_until("runs the cltab", || {
            n.run(&["status", "web"]).status.success()
        });
        n.ok(&["tell", "web", "1"]);
        n.wait_status("web", "web 1 DONE");
    }
    let out = n1.ok(&["create", "web", "c", "1", "respawn", "--", "sleep", "1000"]);
    let rev: i64 = out
        .trim()
        .strip_prefix("created c in group web in the shared cltab, revision ")
        .unwrap_or_else(|| panic!("{out}"))
        .parse()
        .unwrap();
    // This node runs it when the command returns; the other one follows.
    assert_eq!(n1.entry("c")["state"], "running");
    n2.wait_until("n2 runs c", || n2.entry("c")["state"] == "running");
    let pulled: serde_json::Value =
        serde_json::from_str(&n2.ok(&["cluster", "pull", "--json"])).unwrap();
    assert_eq!(pulled["rev"], rev);
    assert_eq!(
        pulled["cltab"],
        "# web tier\nweb:a:1:respawn:sleep 1000\nweb:c:1:respawn:sleep 1000\n# end of web\n"
    );
    // Deleted from n2: stopped on both.
    let pids = [
        n1.entry("c")["pid"].as_i64().unwrap(),
        n2.entry("c")["pid"].as_i64().unwrap(),
    ];
    let out = n2.ok(&["delete", "c"]);
    assert!(
        out.starts_with("deleted c from the shared cltab, revision "),
        "{out}"
    );
    for p in pids {
        n1.wait_until("c stopped", || !alive(p));
    }
    assert_eq!(n1.ok(&["cluster", "pull"]), text);
    // An unknown tag, as on one machine.
    let out = n1.run(&["delete", "nope"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    // etcd down: refused at once, naming it.
    etcd.stop();
    n1.wait_until("n1 notices", || n1.ok(&["status"]).contains("UNREACHABLE"));
    let out = n1.run(&["create", "web", "d", "1", "once", "--", "true"]);
    assert_eq!(out.status.code(), Some(19), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!(
            "cannot reach etcd at {}: the shared cltab cannot be edited now",
            etcd.url
        )),
        "{out:?}"
    );
}

#[test]
fn a_revision_a_node_cannot_parse_is_refused_and_the_old_one_kept() {
    let etcd = Etcd::start();
    let n1 = node(&etcd, "n1");
    let rev = rev_of(&push(&n1, "web:a:1:respawn:sleep 1000\n", None));
    n1.wait_until("n1 runs it", || n1.run(&["status", "web"]).status.success());
    // As a newer clinit might write it: a mode this one does not know.
    let out = std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", &etcd.url, "put", "/clinit/cltab"])
        .arg("web:a:1:respawn:sleep 1000\nweb:b:1:someday:true\n")
        .output()
        .expect("etcdctl (Debian's etcd-client; scripts/test.sh installs it)");
    assert!(out.status.success(), "{out:?}");
    n1.wait_until("n1 refuses it", || {
        n1.ok(&["status"]).contains("refused: see the log")
    });
    let st = n1.ok(&["status"]);
    assert!(
        st.contains(&format!("shared cltab revision {rev} (revision ")),
        "{st}"
    );
    assert!(
        n1.log().contains("cannot apply shared cltab revision"),
        "{}",
        n1.log()
    );
    assert!(n1.log().contains("unknown mode 'someday'"), "{}", n1.log());
    assert_eq!(n1.run(&["status", "web"]).status.code(), Some(0));
    assert!(n1.status_json()[0]["entries"].as_array().unwrap().len() == 1);
}

#[test]
fn records_are_shared_by_every_node_with_the_signature_rules_and_fencing() {
    let mut etcd = Etcd::start();
    let n1 = node(&etcd, "n1");
    let n2 = node(&etcd, "n2");
    let sig: u64 = n1
        .ok(&["record", "add", "hosts/eu", "web1", "10.0.0.5"])
        .trim()
        .parse()
        .unwrap();
    assert_eq!(sig & ((1 << 48) - 1), 1, "a new record's counter is 1");
    assert_eq!(n2.ok(&["record", "get", "hosts/eu", "web1"]), "10.0.0.5\n");
    // EXISTS from the other node.
    assert_eq!(
        n2.run(&["record", "add", "hosts/eu", "web1", "x"])
            .status
            .code(),
        Some(14)
    );
    // n2 modifies with the signature it read; n1's stale one collides.
    let got: serde_json::Value =
        serde_json::from_str(&n2.ok(&["record", "get", "hosts/eu", "web1", "--json"])).unwrap();
    assert_eq!(got["sig"], sig);
    let sig2: u64 = n2
        .ok(&[
            "record",
            "modify",
            "hosts/eu",
            "web1",
            "10.0.0.6",
            "--sig",
            &sig.to_string(),
        ])
        .trim()
        .parse()
        .unwrap();
    assert_eq!(sig2, sig + 1, "same generation, counter + 1");
    let out = n1.run(&[
        "record",
        "modify",
        "hosts/eu",
        "web1",
        "lost",
        "--sig",
        &sig.to_string(),
    ]);
    assert_eq!(out.status.code(), Some(16), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!(
            "record \"web1\" in container \"hosts/eu\" has changed: its signature is {sig2} ({sig2:#x}), not {sig} ({sig:#x})"
        )),
        "{out:?}"
    );
    // A container whose name holds '/' does not see another's keys.
    n1.ok(&["record", "add", "hosts", "eu/web9", "no"]);
    n1.ok(&["record", "add", "hosts/eu", "a", "first"]);
    let list = n2.ok(&["record", "list", "hosts/eu"]);
    let rows: Vec<(&str, &str)> = list
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.splitn(3, ' ').collect();
            (f[0], f[2])
        })
        .collect();
    assert_eq!(rows, [("a", "first"), ("web1", "10.0.0.6")], "{list}");
    // Delete with signature 0, from either node; then NOENT.
    n1.ok(&["record", "delete", "hosts/eu", "web1"]);
    assert_eq!(
        n2.run(&["record", "get", "hosts/eu", "web1"]).status.code(),
        Some(15)
    );
    // Fencing across nodes: n2's older token is refused once n1 wrote
    // with a newer one.
    n1.ok(&["record", "add", "vol", "state", "v1", "--fence", "vol:100"]);
    let out = n2.run(&["record", "add", "vol", "late", "v", "--fence", "vol:50"]);
    assert_eq!(out.status.code(), Some(21), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("token 50 of lock \"vol\" is stale: the record store has seen token 100"),
        "{out:?}"
    );
    assert_eq!(
        n1.run(&["record", "get", "vol", "late"]).status.code(),
        Some(15)
    );
    n2.ok(&["record", "delete", "vol", "state", "--fence", "vol:100"]);
    // etcd down: the store is unreachable, said so.
    etcd.stop();
    let out = n1.run(&["record", "get", "vol", "state"]);
    assert_eq!(out.status.code(), Some(19), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot reach etcd at"),
        "{out:?}"
    );
}

#[test]
fn a_node_follows_an_etcd_made_anew_whose_revisions_start_again() {
    let mut etcd = Etcd::start();
    let n1 = node(&etcd, "n1");
    let mut rev = 0;
    for i in 0..5 {
        rev = rev_of(&push(
            &n1,
            &format!("web:a:1:respawn:sleep {}\n", 1000 + i),
            None,
        ));
    }
    n1.wait_until("n1 runs the last revision", || {
        n1.entry_opt("a")
            .is_some_and(|e| e["command"] == "sleep 1004")
    });
    // etcd lost and made anew: its revisions start again, below rev.
    etcd.stop();
    etcd.wipe();
    etcd.launch();
    let fresh = rev_of(&push(&n1, "web:a:1:respawn:sleep 999\n", None));
    assert!(fresh < rev, "{fresh} < {rev}");
    n1.wait_until("n1 applies the new etcd's cltab", || {
        n1.entry_opt("a")
            .is_some_and(|e| e["command"] == "sleep 999")
    });
    assert!(
        n1.log().contains("etcd was restored or replaced"),
        "{}",
        n1.log()
    );
}

#[test]
fn a_killed_etcd_member_stops_nothing_while_a_quorum_answers() {
    let mut etcd = Etcd::start_members(3);
    let n1 = node(&etcd, "n1");
    let n2 = node(&etcd, "n2");
    let rev = rev_of(&push(&n1, "web:a:1:respawn:sleep 1000\n", None));
    n2.wait_until("n2 runs it", || n2.run(&["status", "web"]).status.success());
    n2.ok(&["tell", "web", "1"]);
    n2.wait_status("web", "web 1 DONE");
    let pid = n2.entry("a")["pid"].as_i64().unwrap();
    // One member of three killed: two still make a quorum.
    etcd.kill_member(0);
    let rev2 = rev_of(&push(
        &n1,
        "web:a:1:respawn:sleep 1000\nweb:b:1:respawn:sleep 1000\n",
        Some(rev),
    ));
    n2.wait_until("n2 runs the new revision", || pids(&n2).contains_key("b"));
    assert_eq!(n2.entry("a")["pid"].as_i64().unwrap(), pid, "untouched");
    assert_eq!(
        n1.ok(&["--node", "n2", "web", "2"]),
        "level transition started\n"
    );
    n2.wait_status("web", "web 2 DONE");
    n1.wait_until("the status is published", || {
        cluster_status(&n1)["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["cltab_rev"] == rev2)
    });
    // Two of three killed: no quorum; the nodes go on supervising.
    etcd.kill_member(1);
    let out = n1.run(&["cluster", "pull"]);
    assert_eq!(out.status.code(), Some(19), "{out:?}");
    n2.ok(&["tell", "web", "1"]);
    n2.wait_until("n2 supervises on", || pids(&n2).len() == 2);
    // The members back: the nodes catch up.
    etcd.launch();
    let out = push(&n1, "web:a:1:respawn:sleep 1000\n", Some(rev2));
    assert!(out.status.success(), "push with the members back: {out:?}");
    let rev3 = rev_of(&out);
    n2.wait_until("n2 runs revision 3", || {
        n2.ok(&["status"])
            .contains(&format!("shared cltab revision {rev3}"))
    });
    assert!(n2.status_json()[0]["entries"].as_array().unwrap().len() == 1);
}

#[test]
fn a_revision_refused_for_a_local_mistake_applies_after_the_fix_and_a_reread() {
    let etcd = Etcd::start();
    let n1 = node(&etcd, "n1");
    let rev = rev_of(&push(&n1, "web:a:1:respawn:sleep 1000\n", None));
    n1.wait_until("n1 runs it", || {
        n1.ok(&["status"])
            .contains(&format!("shared cltab revision {rev}"))
    });
    // An entry slipped into the local cltab: the next revision is refused.
    let local = std::fs::read_to_string(n1.cltab()).unwrap();
    std::fs::write(n1.cltab(), format!("{local}web:z:1:once:true\n")).unwrap();
    let rev2 = rev_of(&push(&n1, "web:a:1:respawn:sleep 999\n", Some(rev)));
    n1.wait_until("n1 refuses it", || {
        n1.ok(&["status"])
            .contains(&format!("(revision {rev2} refused"))
    });
    assert!(n1.log().contains("CLTAB_LOCAL_ENTRY"), "{}", n1.log());
    // Fixed, then a reread: the refused revision is tried again.
    std::fs::write(n1.cltab(), local).unwrap();
    n1.ok(&["reread"]);
    n1.wait_until("n1 runs the revision", || {
        n1.ok(&["status"])
            .contains(&format!("shared cltab revision {rev2}\n"))
    });
    assert_eq!(n1.entry("a")["command"], "sleep 999");
}
