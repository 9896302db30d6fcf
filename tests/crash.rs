//! A daemon killed by SIGKILL at any moment: the next one finds every
//! process the killed one started, and then no tag runs twice.

mod common;

use common::*;
use std::collections::BTreeMap;

/// The CLINIT_TAG of each live process of `group`.
fn tags_of_group(group: &str) -> BTreeMap<i64, String> {
    processes_of_group(group)
        .into_iter()
        .filter_map(|pid| {
            let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
            let tag = env
                .split(|b| *b == 0)
                .find_map(|v| v.strip_prefix(b"CLINIT_TAG="))?;
            Some((pid, String::from_utf8_lossy(tag).into_owned()))
        })
        .collect()
}

/// The pid of each running entry, from the daemon's status.
fn running_pids(d: &Daemon) -> BTreeMap<String, i64> {
    let s = d.status_json();
    s.as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["entries"].as_array().unwrap())
        .filter(|e| e["state"] == "running")
        .map(|e| {
            (
                e["tag"].as_str().unwrap().to_string(),
                e["pid"].as_i64().unwrap(),
            )
        })
        .collect()
}

/// Every one of the `n` tags runs exactly once on the machine, as the
/// process the daemon says it runs.
fn each_tag_once(d: &Daemon, group: &str, n: usize) -> Result<(), String> {
    let procs = tags_of_group(group);
    let status = running_pids(d);
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    for tag in procs.values() {
        *count.entry(tag).or_default() += 1;
    }
    let twice: Vec<_> = count.iter().filter(|(_, c)| **c > 1).collect();
    if !twice.is_empty() {
        return Err(format!("tags running more than once: {twice:?}"));
    }
    if procs.len() != n || status.len() != n {
        return Err(format!(
            "{} processes, {} running in status, want {n}",
            procs.len(),
            status.len()
        ));
    }
    let untracked: Vec<_> = procs
        .iter()
        .filter(|(pid, tag)| status.get(*tag) != Some(pid))
        .collect();
    if !untracked.is_empty() {
        return Err(format!("processes the daemon does not know: {untracked:?}"));
    }
    Ok(())
}

#[test]
fn a_sigkill_at_the_first_child_of_a_restart_leaves_no_duplicate_and_no_orphan() {
    const N: usize = 200;
    for trial in 0..3 {
        let group = format!("wave{}x{trial}", std::process::id());
        let entries: String = (0..N)
            .map(|i| format!("{group}:e{i}:1:respawn:sleep 1000\n"))
            .collect();
        let mut d = Daemon::start(&format!(
            ":::stop_term_after:1\n:::stop_kill_after:1\n{entries}"
        ));
        d.ok(&["tell", &group, "1"]);
        d.wait_until("all running", || each_tag_once(&d, &group, N).is_ok());
        let old = processes_of_group(&group);

        assert_eq!(d.ok(&["restart", "--all"]), "all groups restarting\n");
        // The first process of the new wave that runs its command.
        let end = std::time::Instant::now() + DEADLINE;
        while !processes_of_group(&group).iter().any(|p| !old.contains(p)) {
            assert!(std::time::Instant::now() < end, "no new child appeared");
        }
        d.kill9();

        let mut d = d.launch(&[]);
        d.wait_until_for("each tag once", DEADLINE, || {
            each_tag_once(&d, &group, N).is_ok()
        });
        // Still so once the daemon has settled: nothing came back.
        assert_eq!(
            d.ok(&["wait", &group, "1"]).trim_end(),
            format!("{group} 1 DONE")
        );
        each_tag_once(&d, &group, N).unwrap_or_else(|e| panic!("trial {trial}: {e}"));
        assert!(
            old.iter().all(|p| !alive(*p)),
            "trial {trial}: an old child runs"
        );

        d.stop();
        let left = processes_of_group(&group);
        assert!(
            left.is_empty(),
            "trial {trial}: left after shutdown: {left:?}"
        );
    }
}

#[test]
fn a_daemonized_descendant_left_by_a_killed_daemon_is_stopped_by_the_next() {
    // The entry's shell exits at once; its setsid grandchild leaves the
    // entry's process group, so no child record reaches it. Found by its
    // cgroup (auto) or by the CLINIT_SOCKET it carries (off).
    for mode in ["", ":::cgroup:off\n"] {
        let mut d = Daemon::prepare(mode);
        let text = std::fs::read_to_string(d.cltab()).unwrap()
            + &format!(
                "g:dmn:1:respawn:setsid sh -c 'echo $$ >> {}/gc.pids; exec sleep 1000' & exec sleep 1000\n",
                d.dir.path().display()
            );
        std::fs::write(d.cltab(), text).unwrap();
        d = d.launch(&[]);
        d.ok(&["tell", "g", "1"]);
        d.wait_until("grandchild started", || !d.read("gc.pids").is_empty());
        let gc: i64 = d.read("gc.pids").lines().next().unwrap().parse().unwrap();
        d.wait_until("grandchild runs sleep", || {
            std::fs::read(format!("/proc/{gc}/cmdline")).is_ok_and(|c| c.starts_with(b"sleep"))
        });
        d.kill9();
        assert!(alive(gc), "{mode}: it outlives the killed daemon");

        let d = d.launch(&[]);
        d.wait_until("the old grandchild is stopped", || !alive(gc));
        assert!(
            d.log().contains(&format!(
                "process {gc} (g:dmn) was started by a previous run and has no record"
            )),
            "{mode}: {}",
            d.log()
        );
        // The restored entry started a new grandchild, which is not stopped.
        d.wait_until("a new grandchild", || {
            d.read("gc.pids").lines().count() == 2
        });
        let new: i64 = d.read("gc.pids").lines().nth(1).unwrap().parse().unwrap();
        assert!(alive(new), "{mode}");
    }
}

#[test]
fn a_descendant_that_cleared_its_environment_is_found_by_its_cgroup() {
    // `env -i` drops CLINIT_SOCKET, so only the cgroup knows it.
    let mut d = Daemon::prepare("");
    let text = std::fs::read_to_string(d.cltab()).unwrap()
        + &format!(
            "g:bare:1:respawn:env -i setsid sh -c 'echo $$ >> {}/gc.pids; exec sleep 1000' & exec sleep 1000\n",
            d.dir.path().display()
        );
    std::fs::write(d.cltab(), text).unwrap();
    d = d.launch(&[]);
    let Some(root) = d.cgroup_root() else {
        assert!(
            !cgroup_v2_writable(),
            "cgroup v2 can be written here, yet the daemon keeps no cgroups: {}",
            d.log()
        );
        return;
    };
    d.ok(&["tell", "g", "1"]);
    d.wait_until("grandchild started", || !d.read("gc.pids").is_empty());
    let gc: i64 = d.read("gc.pids").lines().next().unwrap().parse().unwrap();
    d.wait_until("grandchild runs sleep", || {
        std::fs::read(format!("/proc/{gc}/cmdline")).is_ok_and(|c| c.starts_with(b"sleep"))
    });
    let env = std::fs::read(format!("/proc/{gc}/environ")).unwrap();
    assert!(!env.windows(13).any(|w| w == b"CLINIT_SOCKET"));
    d.kill9();
    assert!(alive(gc), "it outlives the killed daemon");
    assert!(root.is_dir(), "the killed daemon's cgroup stays");

    let mut d = d.launch(&[]);
    d.wait_until("the old grandchild is stopped", || !alive(gc));
    d.wait_until("a new grandchild", || {
        d.read("gc.pids").lines().count() == 2
    });
    let new: i64 = d.read("gc.pids").lines().nth(1).unwrap().parse().unwrap();
    d.stop();
    assert!(
        !alive(new),
        "shutdown stops what cleared its environment too"
    );
    assert!(!root.exists(), "{} outlives the daemon", root.display());
}
