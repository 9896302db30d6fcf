//! Core supervisor benchmark (issue 2). Run through `bash bench/run.sh`,
//! which also measures supervisord and prints ratios; alone:
//! `cargo bench --bench core -- [N] [--json]`. `-- N --start-only
//! [--subscribers K]` measures only the tell -> all N running, with K
//! event subscribers following (`bash bench/events.sh`). `$CLINIT_BIN`
//! picks another build's binary. `-- N --restart-all [--unrelated M]`
//! measures `restart --all` of N entries with M unrelated processes on the
//! host (default 2,000): time until all N run again, the daemon's CPU
//! time meanwhile, and the latency of pings sent throughout (issue 16).
//! `--setting NAME:VALUE` (repeatable) adds a setting to every cltab it
//! writes: `--setting cgroup:off` measures the daemon without cgroups.
//!
//! Measures, with N respawn entries of `sleep`:
//! - bare spawn loop: std::process::Command spawning N sleeps;
//! - clinit daemon start -> all N running (tell + wait reply);
//! - CLI `clinit status` wall time at N and at 10 entries;
//! - one in-process request round trip (Ping) and a raw UNIX-socket round trip;
//! - daemon RSS with N children;
//! - SIGKILL of a respawn child -> new pid visible in status;
//! - daemon start -> all goals restored (first answer, N entries running
//!   again) after a clean shutdown, and after a SIGKILL of the daemon (its N
//!   leftover children are stopped first).

use clinit::client::Client;
use clinit::proto::{Reply, Request};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "common.rs"]
mod common;
use common::{Subscribers, bin, connect, median, median_cli_ms, raw_rtt_us, round_trip_us};

fn bare_spawn(n: usize) -> f64 {
    let t = Instant::now();
    let mut kids: Vec<_> = (0..n)
        .map(|_| {
            Command::new("sleep")
                .arg("100000")
                .stdin(Stdio::null())
                .spawn()
                .expect("spawn sleep")
        })
        .collect();
    let dt = t.elapsed().as_secs_f64();
    for k in &mut kids {
        let _ = k.kill();
        let _ = k.wait();
    }
    dt
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

struct Run {
    all_running_s: f64,
    cli_status_ms: f64,
    request_us: f64,
    rss_mb: f64,
    respawn_ms: f64,
    restore_s: f64,
    crash_restore_s: f64,
}

fn start_daemon(cltab: &Path) -> std::process::Child {
    Command::new(bin())
        .arg("-c")
        .arg(cltab)
        .arg("-d")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn wait_exit(daemon: &mut std::process::Child) {
    let end = Instant::now() + Duration::from_secs(60);
    while daemon.try_wait().unwrap().is_none() {
        if Instant::now() > end {
            let _ = daemon.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Start the daemon on a state directory that holds goals and time it to
/// its first answer, which comes only once the goals are restored; check
/// that group `b` is settled at level 1 with `n` entries running.
fn time_restore(cltab: &Path, sock: &Path, n: usize) -> (f64, std::process::Child, Client) {
    let t = Instant::now();
    let daemon = start_daemon(cltab);
    let mut c = connect(sock);
    let reply = c
        .request(Request::Status {
            group: Some("b".into()),
            brief: false,
            from: None,
            usage: false,
        })
        .unwrap();
    let secs = t.elapsed().as_secs_f64();
    let Reply::Status { groups, .. } = reply else {
        panic!("no status")
    };
    assert_eq!(groups[0].level.as_deref(), Some("1"));
    assert!(groups[0].state.is_settled());
    let running = groups[0]
        .entries
        .iter()
        .filter(|e| e.state == "running")
        .count();
    assert_eq!(running, n, "all entries running again");
    (secs, daemon, c)
}

fn cpu_s(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let f: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0
}

fn entry_pids(c: &mut Client) -> Vec<Option<i32>> {
    let Reply::Status { groups, .. } = c
        .request(Request::Status {
            group: Some("b".into()),
            brief: false,
            from: None,
            usage: false,
        })
        .unwrap()
    else {
        panic!("no status")
    };
    groups[0]
        .entries
        .iter()
        .map(|e| (e.state == "running").then_some(e.pid).flatten())
        .collect()
}

/// `restart --all` of `n` entries with `unrelated` other processes alive.
fn restart_all(n: usize, unrelated: usize) -> serde_json::Value {
    let mut others: Vec<_> = (0..unrelated)
        .map(|_| {
            Command::new("sleep")
                .arg("600")
                .stdin(Stdio::null())
                .spawn()
                .expect("spawn sleep")
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let cltab = write_cltab(dir.path(), n);
    let mut daemon = start_daemon(&cltab);
    let sock = dir.path().join("s");
    let mut c = connect(&sock);
    tell_and_wait(&mut c, "b", 120_000);
    let old = entry_pids(&mut c);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pinger = {
        let stop = stop.clone();
        let mut p = connect(&sock);
        std::thread::spawn(move || {
            let mut lat = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let t = Instant::now();
                p.request(Request::Ping).unwrap();
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
                std::thread::sleep(Duration::from_millis(1));
            }
            lat
        })
    };
    let cpu0 = cpu_s(daemon.id());
    let t = Instant::now();
    c.request(Request::RestartGroup { group: None }).unwrap();
    loop {
        let now = entry_pids(&mut c);
        if now.iter().zip(&old).all(|(p, o)| p.is_some() && p != o) {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "restart --all never finished"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let secs = t.elapsed().as_secs_f64();
    let cpu = cpu_s(daemon.id()) - cpu0;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut lat = pinger.join().unwrap();
    lat.sort_by(f64::total_cmp);
    let pct = |q: f64| lat[((lat.len() - 1) as f64 * q) as usize];
    c.request(Request::Shutdown).unwrap();
    wait_exit(&mut daemon);
    for o in &mut others {
        let _ = o.kill();
        let _ = o.wait();
    }
    serde_json::json!({
        "n": n,
        "unrelated": unrelated,
        "restart_all_s": secs,
        "daemon_cpu_s": cpu,
        "ping_ms_p50": pct(0.5),
        "ping_ms_p99": pct(0.99),
        "ping_ms_max": pct(1.0),
        "pings": lat.len(),
    })
}

/// A daemon on a cltab of `n` entries (none started): time to its first
/// answer (parse included), a `reread` (and the longest ping meanwhile),
/// a whole `status` with entries, and the RSS.
fn scale(n: usize) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut tab = format!(
        ":::socket:{0}/s\n:::clstat:{0}/clstat\n:::log:{0}/log\n:::state:{0}/state\n:::notifier:logger -t clinit\n",
        d.display()
    );
    for i in 0..n {
        tab.push_str(&format!("g{}:t{i}:1:respawn:sleep 100000\n", i % 100));
    }
    let cltab = d.join("cltab");
    std::fs::write(&cltab, &tab).unwrap();
    let t = Instant::now();
    let mut daemon = start_daemon(&cltab);
    let sock = d.join("s");
    let mut c = connect(&sock);
    c.request(Request::Ping).unwrap();
    let start_s = t.elapsed().as_secs_f64();
    let rss_mb = rss_kb(daemon.id()) as f64 / 1024.0;

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pinger = {
        let stop = stop.clone();
        let mut p = connect(&sock);
        std::thread::spawn(move || {
            let mut worst: f64 = 0.0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let t = Instant::now();
                p.request(Request::Ping).unwrap();
                worst = worst.max(t.elapsed().as_secs_f64());
                std::thread::sleep(Duration::from_millis(1));
            }
            worst
        })
    };
    let t = Instant::now();
    c.set_timeout(Duration::from_secs(600));
    c.request(Request::Reread).unwrap();
    let reread_s = t.elapsed().as_secs_f64();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let ping_max_s = pinger.join().unwrap();

    let t = Instant::now();
    let groups = c.status_all(None, false).unwrap();
    let status_s = t.elapsed().as_secs_f64();
    assert_eq!(groups.iter().map(|g| g.entries.len()).sum::<usize>(), n);
    c.request(Request::Shutdown).unwrap();
    wait_exit(&mut daemon);
    serde_json::json!({
        "entries": n,
        "start_to_first_answer_s": start_s,
        "reread_s": reread_s,
        "ping_max_during_reread_s": ping_max_s,
        "status_s": status_s,
        "rss_mb": rss_mb,
    })
}

/// Tell `group` level 1 and block until it has settled there.
fn tell_and_wait(c: &mut Client, group: &str, timeout_ms: u64) {
    c.request(Request::Tell {
        group: group.into(),
        level: "1".into(),
    })
    .unwrap();
    c.request(Request::Wait {
        group: group.into(),
        level: Some("1".into()),
        state: None,
        timeout_ms,
    })
    .unwrap();
}

fn cli_status_ms(cltab: &Path) -> f64 {
    median_cli_ms(15, || {
        let mut c = Command::new(bin());
        c.arg("-c").arg(cltab).arg("status");
        c
    })
}

/// The cltab of `n` respawn entries in group `b` (and one in `r`), in `d`.
/// Settings given with `--setting NAME:VALUE` (any number), written into
/// every cltab the benchmark makes (`--setting cgroup:off` measures the
/// daemon without cgroups).
static SETTINGS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();

fn write_cltab(d: &Path, n: usize) -> std::path::PathBuf {
    let mut tab = format!(
        ":::socket:{0}/s\n:::clstat:{0}/clstat\n:::log:{0}/log\n:::state:{0}/state\n:::stop_term_after:1\n:::stop_kill_after:1\nr:r0:1:respawn:sleep 100000\n",
        d.display()
    );
    for s in SETTINGS.get().into_iter().flatten() {
        tab.push_str(&format!(":::{s}\n"));
    }
    for i in 0..n {
        tab.push_str(&format!("b:s{i}:1:respawn:sleep 100000\n"));
    }
    let cltab = d.join("cltab");
    std::fs::write(&cltab, tab).unwrap();
    cltab
}

/// Tell -> all `n` entries running (s), with `subs` event subscribers
/// following meanwhile; and how many still follow at the end.
fn start_only(n: usize, subs: usize) -> (f64, usize) {
    let dir = tempfile::tempdir().unwrap();
    let cltab = write_cltab(dir.path(), n);
    let mut daemon = start_daemon(&cltab);
    let sock = dir.path().join("s");
    let mut c = connect(&sock);
    let mut followers = Subscribers::start(&cltab, subs);
    let t = Instant::now();
    tell_and_wait(&mut c, "b", 120_000);
    let secs = t.elapsed().as_secs_f64();
    let following = followers.following();
    drop(followers);
    c.request(Request::Shutdown).unwrap();
    wait_exit(&mut daemon);
    (secs, following)
}

fn clinit_run(n: usize) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cltab = write_cltab(d, n);

    let t = Instant::now();
    let mut daemon = start_daemon(&cltab);
    let sock = d.join("s");
    let mut c = connect(&sock);
    tell_and_wait(&mut c, "b", 120_000);
    let all_running_s = t.elapsed().as_secs_f64();

    let cli_status_ms = cli_status_ms(&cltab);

    let request_us = round_trip_us(&mut c, 20_000, || Request::Ping);

    let rss_mb = rss_kb(daemon.id()) as f64 / 1024.0;

    tell_and_wait(&mut c, "r", 10_000);
    let pid_of = |c: &mut Client| -> Option<i32> {
        match c
            .request(Request::Status {
                group: Some("r".into()),
                brief: false,
                from: None,
                usage: false,
            })
            .unwrap()
        {
            Reply::Status { groups, .. } => groups[0].entries[0].pid,
            _ => None,
        }
    };
    let mut samples = Vec::new();
    for _ in 0..5 {
        let end = Instant::now() + Duration::from_secs(10);
        let old = loop {
            if let Some(p) = pid_of(&mut c) {
                break p;
            }
            assert!(Instant::now() < end);
        };
        let t = Instant::now();
        unsafe { libc::kill(old, libc::SIGKILL) };
        loop {
            if let Some(p) = pid_of(&mut c)
                && p != old
            {
                break;
            }
            assert!(Instant::now() < end, "no respawn");
        }
        samples.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let respawn_ms = median(samples);

    c.request(Request::Shutdown).unwrap();
    wait_exit(&mut daemon);
    let (restore_s, mut daemon, _c) = time_restore(&cltab, &sock, n);
    daemon.kill().unwrap();
    daemon.wait().unwrap();
    let (crash_restore_s, mut daemon, mut c) = time_restore(&cltab, &sock, n);
    c.request(Request::Shutdown).unwrap();
    wait_exit(&mut daemon);
    Run {
        all_running_s,
        cli_status_ms,
        request_us,
        rss_mb,
        respawn_ms,
        restore_s,
        crash_restore_s,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let json = args.iter().any(|a| a == "--json");
    // N is the first number that is not the value of an option.
    let mut n: Option<usize> = None;
    let mut subs = 0;
    let mut settings = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--setting" {
            settings.extend(it.next().cloned());
        } else if a == "--subscribers" {
            subs = it.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        } else if a == "--unrelated" {
            it.next();
        } else if n.is_none() {
            n = a.parse().ok();
        }
    }
    SETTINGS.set(settings).unwrap();
    if args.iter().any(|a| a == "--scale") {
        for n in [1_000, 10_000, 100_000] {
            let r = scale(n);
            if json {
                println!("{r}");
            } else {
                println!(
                    "{n} entries: start -> first answer {:.3} s, reread {:.3} s (ping max {:.3} s meanwhile), whole status {:.3} s, RSS {:.1} MB",
                    r["start_to_first_answer_s"].as_f64().unwrap(),
                    r["reread_s"].as_f64().unwrap(),
                    r["ping_max_during_reread_s"].as_f64().unwrap(),
                    r["status_s"].as_f64().unwrap(),
                    r["rss_mb"].as_f64().unwrap()
                );
            }
        }
        return;
    }
    if args.iter().any(|a| a == "--parse") {
        for n in [1_000, 10_000, 100_000] {
            let mut text = String::from(":::notifier:logger -t clinit\n");
            for i in 0..n {
                text.push_str(&format!("g{}:t{i}:1:respawn:sleep 100000\n", i % 100));
            }
            let t = Instant::now();
            let tab = clinit::cltab::parse(Path::new("cltab"), &text).unwrap();
            let secs = t.elapsed().as_secs_f64();
            assert_eq!(tab.entries.len(), n);
            if json {
                println!(
                    "{}",
                    serde_json::json!({"entries": n, "bytes": text.len(), "parse_s": secs})
                );
            } else {
                println!("parse {n} entries ({} bytes): {secs:.3} s", text.len());
            }
        }
        return;
    }
    let n = n.unwrap_or(1000);
    if args.iter().any(|a| a == "--restart-all") {
        let unrelated = args
            .iter()
            .position(|a| a == "--unrelated")
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(2000);
        let r = restart_all(n, unrelated);
        if json {
            println!("{r}");
        } else {
            println!(
                "restart --all of {n} entries, {unrelated} unrelated processes: all running again in {:.3} s; daemon CPU {:.3} s; ping p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} pings)",
                r["restart_all_s"].as_f64().unwrap(),
                r["daemon_cpu_s"].as_f64().unwrap(),
                r["ping_ms_p50"].as_f64().unwrap(),
                r["ping_ms_p99"].as_f64().unwrap(),
                r["ping_ms_max"].as_f64().unwrap(),
                r["pings"]
            );
        }
        return;
    }
    if args.iter().any(|a| a == "--start-only") {
        let (secs, following) = start_only(n, subs);
        if json {
            println!(
                "{}",
                serde_json::json!({"n": n, "subscribers": subs, "following": following, "tell_to_all_running_s": secs})
            );
        } else {
            println!(
                "tell -> all {n} running: {secs:.3} s with {subs} event subscribers ({following} still following)"
            );
        }
        return;
    }
    let bare_s = bare_spawn(n);
    let raw_us = raw_rtt_us();
    let big = clinit_run(n);
    let small = clinit_run(10);
    if json {
        println!(
            "{}",
            serde_json::json!({
                "n": n,
                "bare_spawn_s": bare_s,
                "raw_socket_rtt_us": raw_us,
                "start_to_all_running_s": big.all_running_s,
                "cli_status_ms": big.cli_status_ms,
                "cli_status_ms_n10": small.cli_status_ms,
                "request_us": big.request_us,
                "rss_mb": big.rss_mb,
                "respawn_ms": big.respawn_ms,
                "restore_s": big.restore_s,
                "crash_restore_s": big.crash_restore_s,
            })
        );
    } else {
        println!("N = {n}");
        println!("bare spawn loop, N sleeps:          {bare_s:.3} s");
        println!(
            "clinit start -> all running:        {:.3} s ({:.2}x bare)",
            big.all_running_s,
            big.all_running_s / bare_s
        );
        println!(
            "clinit CLI status (N / 10 entries): {:.2} ms / {:.2} ms",
            big.cli_status_ms, small.cli_status_ms
        );
        println!(
            "in-process request round trip:      {:.1} us ({:.2}x raw socket {raw_us:.1} us)",
            big.request_us,
            big.request_us / raw_us
        );
        println!("daemon RSS with N children:         {:.1} MB", big.rss_mb);
        println!(
            "SIGKILL -> respawned pid:           {:.2} ms",
            big.respawn_ms
        );
        println!(
            "start -> goals restored, N running: {:.3} s (after SIGKILL of the daemon: {:.3} s)",
            big.restore_s, big.crash_restore_s
        );
    }
}
