//! Lock service benchmark (issue 4), clinit side. Run through
//! `bash bench/locks.sh`, which also runs `bench/lock_peers.py` (flock and
//! etcd) and prints the ratios; alone: `cargo bench --bench locks [-- --json]`,
//! or only the one-client figure for SECS seconds: `-- --one SECS`, with
//! `--subscribers N` event subscribers following meanwhile (`--json`
//! prints it as one object).
//!
//! Against a `clinit lockd` in a temp dir, with the library client (one
//! connection per client thread, as a long-lived holder would have):
//! - acquire+release round trips per second and their p50/p99 latency for 1
//!   client, for 8 clients on one name, for 8 clients on 8 names;
//! - a holder's death (its connection closes) -> the next waiter granted;
//! - `clinit lock NAME -- true` wall time per call, and `flock FILE true`;
//! - one request's round trip, for scale: a ping (through the event loop)
//!   and a locks listing (served by the connection task).

use clinit::lock::LockMode;
use clinit::proto::{Reply, Request};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

#[path = "common.rs"]
mod common;
use common::{
    Subscribers, acquire, bin, connect, median, median_cli_ms, pct, raw_rtt_us, release,
    round_trip_us, shutdown, wait_queued,
};

struct Throughput {
    ops_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    clients: usize,
}

/// The entry for latencies `lat` (ms, one per acquire+release) of `clients`
/// clients over `wall` seconds: ops/s, p50, p99.
fn summarize(mut lat: Vec<f64>, wall: f64, clients: usize) -> Throughput {
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    Throughput {
        ops_s: lat.len() as f64 / wall,
        p50_ms: pct(&lat, 0.5),
        p99_ms: pct(&lat, 0.99),
        clients,
    }
}

/// `clients` threads, each on `name(i)`, acquire+release for `secs`;
/// `spin` sets the clients' spin budget (default: the library's).
fn throughput(
    sock: &Path,
    clients: usize,
    secs: f64,
    spin: Option<Duration>,
    name: impl Fn(usize) -> String,
) -> Throughput {
    let barrier = Arc::new(Barrier::new(clients + 1));
    let handles: Vec<_> = (0..clients)
        .map(|i| {
            let (sock, barrier, name) = (sock.to_path_buf(), barrier.clone(), name(i));
            std::thread::spawn(move || {
                let mut c = connect(&sock);
                if let Some(budget) = spin {
                    c.set_spin(budget);
                }
                let mut lat = Vec::with_capacity(1 << 20);
                barrier.wait();
                let end = Instant::now() + Duration::from_secs_f64(secs);
                while Instant::now() < end {
                    let t = Instant::now();
                    acquire(&mut c, &name);
                    release(&mut c, &name);
                    lat.push(t.elapsed().as_secs_f64() * 1e3);
                }
                lat
            })
        })
        .collect();
    barrier.wait();
    let t = Instant::now();
    let all: Vec<f64> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let wall = t.elapsed().as_secs_f64();
    summarize(all, wall, clients)
}

/// One client that pipelines each release with the next acquire (one round
/// trip per cycle; the daemon answers a connection's requests in order).
fn pipelined(sock: &Path, secs: f64) -> Throughput {
    let mut c = connect(sock);
    let acq = || Request::LockAcquire {
        name: "piped".into(),
        mode: LockMode::Exclusive,
        wait: true,
        timeout_ms: None,
        lease: None,
        what: "bench".into(),
    };
    let rel = || Request::LockRelease {
        name: "piped".into(),
        lease: None,
    };
    acquire(&mut c, "piped");
    let mut lat = Vec::with_capacity(1 << 20);
    let t0 = Instant::now();
    let end = t0 + Duration::from_secs_f64(secs);
    while Instant::now() < end {
        let t = Instant::now();
        c.send(rel()).unwrap();
        c.send(acq()).unwrap();
        assert!(matches!(c.recv().unwrap().1, Reply::Ok));
        assert!(matches!(c.recv().unwrap().1, Reply::Granted { .. }));
        lat.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let wall = t0.elapsed().as_secs_f64();
    release(&mut c, "piped");
    summarize(lat, wall, 1)
}

/// CPU time (ns) and voluntary context switches of a task (a
/// `/proc/.../task/TID` directory or `/proc/thread-self`).
fn task_cost(task: &Path) -> (u64, u64) {
    let cpu = std::fs::read_to_string(task.join("schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let cs = std::fs::read_to_string(task.join("status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0);
    (cpu, cs)
}

/// The sum of [`task_cost`] over a process's threads.
fn process_cost(pid: u32) -> (u64, u64) {
    let dir = PathBuf::from(format!("/proc/{pid}/task"));
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten().fold((0, 0), |(a, b), e| {
                let (x, y) = task_cost(&e.path());
                (a + x, b + y)
            })
        })
        .unwrap_or((0, 0))
}

/// One client, acquire+release on this thread for `secs`, and per request
/// (an acquire or a release): CPU time and voluntary context switches of
/// the client thread and of the daemon.
fn one_profiled(sock: &Path, secs: f64, daemon: u32, quiet: bool) -> f64 {
    let mut c = connect(sock);
    let me = Path::new("/proc/thread-self");
    let (c0, d0) = (task_cost(me), process_cost(daemon));
    let t0 = Instant::now();
    let end = t0 + Duration::from_secs_f64(secs);
    let mut n = 0u64;
    while Instant::now() < end {
        acquire(&mut c, "one");
        release(&mut c, "one");
        n += 1;
    }
    let wall = t0.elapsed().as_secs_f64();
    let (c1, d1) = (task_cost(me), process_cost(daemon));
    let reqs = (2 * n) as f64;
    if quiet {
        return n as f64 / wall;
    }
    println!(
        "1 client {:.0} lock+unlock/s ({:.1} us per request); per request: client {:.2} us CPU, {:.2} sleeps; daemon {:.2} us CPU, {:.2} sleeps",
        n as f64 / wall,
        wall * 1e6 / reqs,
        (c1.0 - c0.0) as f64 / 1e3 / reqs,
        (c1.1 - c0.1) as f64 / reqs,
        (d1.0 - d0.0) as f64 / 1e3 / reqs,
        (d1.1 - d0.1) as f64 / reqs,
    );
    n as f64 / wall
}

/// A holder's connection closes while a waiter blocks: time from the close
/// to the waiter's grant (median of 20).
fn death_to_grant_ms(sock: &Path) -> f64 {
    let mut samples = Vec::new();
    for i in 0..20 {
        let name = format!("death{i}");
        let mut holder = connect(sock);
        acquire(&mut holder, &name);
        let (tx, rx) = std::sync::mpsc::channel();
        let (sock2, name2) = (sock.to_path_buf(), name.clone());
        let waiter = std::thread::spawn(move || {
            let mut c = connect(&sock2);
            tx.send(()).unwrap();
            acquire(&mut c, &name2);
            Instant::now()
        });
        rx.recv().unwrap();
        // Let the waiter's request reach the daemon: wait until it is queued.
        wait_queued(sock, &name);
        let t = Instant::now();
        drop(holder); // the holder "dies": its connection closes
        let granted = waiter.join().unwrap();
        samples.push(granted.duration_since(t).as_secs_f64() * 1e3);
    }
    median(samples)
}

/// A thread that GETs /metrics every second from the port the daemon
/// logged, until stopped; counts the scrapes answered 200.
struct Scraper {
    stop: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<usize>,
}

impl Scraper {
    fn start(log: &Path) -> Scraper {
        let end = Instant::now() + Duration::from_secs(10);
        let port: u16 = loop {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            if let Some(p) = text.lines().find_map(|l| {
                l.split_once("HTTP listener on http://")?
                    .1
                    .split_whitespace()
                    .next()?
                    .rsplit(':')
                    .next()?
                    .parse()
                    .ok()
            }) {
                break p;
            }
            assert!(
                Instant::now() < end,
                "no HTTP listener in {}",
                log.display()
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        let (stop, rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            use std::io::{Read, Write};
            let mut ok = 0;
            loop {
                let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
                s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    .unwrap();
                let mut body = String::new();
                let _ = s.read_to_string(&mut body);
                ok += usize::from(body.starts_with("HTTP/1.1 200"));
                if rx.recv_timeout(Duration::from_secs(1)).is_ok() {
                    return ok;
                }
            }
        });
        Scraper { stop, thread }
    }

    fn stop(self) -> usize {
        let _ = self.stop.send(());
        self.thread.join().unwrap()
    }
}

fn main() {
    let json = std::env::args().any(|a| a == "--json");
    let dir = tempfile::tempdir().unwrap();
    let d: PathBuf = dir.path().to_path_buf();
    let cltab = d.join("cltab");
    // `--setting NAME:VALUE` (any number) adds a cltab setting
    // (`--setting http_listen:127.0.0.1:0` measures with /metrics on).
    let mut tab = format!(
        ":::socket:{0}/s\n:::log:{0}/log\n:::clstat:{0}/clstat\n:::state:{0}/state\n",
        d.display()
    );
    let args: Vec<String> = std::env::args().collect();
    for w in args.windows(2).filter(|w| w[0] == "--setting") {
        tab.push_str(&format!(":::{}\n", w[1]));
    }
    std::fs::write(&cltab, tab).unwrap();
    let mut lockd = Command::new(bin())
        .arg("-c")
        .arg(&cltab)
        .args(["lockd", "--idle", "60"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let sock = d.join("s");
    drop(connect(&sock));
    if let Some(secs) = std::env::args()
        .skip_while(|a| a != "--one")
        .nth(1)
        .and_then(|s| s.parse::<f64>().ok())
    {
        // Only the one-client figure, for SECS seconds, with what each side
        // spent per request (for profiling).
        let subs: usize = std::env::args()
            .skip_while(|a| a != "--subscribers")
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut followers = Subscribers::start(&cltab, subs);
        if !json {
            println!("raw UNIX-socket round trip {:.1} us", raw_rtt_us());
        }
        // `--scrape`: GET /metrics every second meanwhile, as a
        // Prometheus with a 1 s interval would.
        let scraper = std::env::args()
            .any(|a| a == "--scrape")
            .then(|| Scraper::start(&d.join("log")));
        let ops_s = one_profiled(&sock, secs, lockd.id(), json);
        let scrapes = scraper.map(Scraper::stop).unwrap_or(0);
        let following = followers.following();
        let bytes = followers.bytes();
        drop(followers);
        if json {
            println!(
                "{}",
                serde_json::json!({"one_ops_s": ops_s, "subscribers": subs, "following": following, "subscriber_bytes": bytes, "scrapes": scrapes})
            );
        } else if subs > 0 {
            println!(
                "{following} of {subs} event subscribers still following; they wrote {bytes} bytes"
            );
        }
        shutdown(&sock, &mut lockd);
        return;
    }

    let raw_us = raw_rtt_us();
    let ping_us = round_trip_us(&mut connect(&sock), 20_000, || Request::Ping);
    let rec_us = round_trip_us(&mut connect(&sock), 20_000, || Request::Locks {
        name: Some("none".into()),
        after: None,
    });
    let one = throughput(&sock, 1, 3.0, None, |_| "one".into());
    let one_nospin = throughput(&sock, 1, 3.0, Some(Duration::ZERO), |_| "one".into());
    let one_piped = pipelined(&sock, 3.0);
    let eight_one = throughput(&sock, 8, 3.0, None, |_| "shared-name".into());
    let eight_names = throughput(&sock, 8, 3.0, None, |i| format!("name{i}"));
    let death_ms = death_to_grant_ms(&sock);
    let clinit_cli_ms = median_cli_ms(50, || {
        let mut c = Command::new(bin());
        c.arg("-c").arg(&cltab).args(["lock", "cli", "--", "true"]);
        c
    });
    let lockfile = d.join("flock-file");
    let flock_cli_ms = median_cli_ms(50, || {
        let mut c = Command::new("flock");
        c.arg(&lockfile).arg("true");
        c
    });
    shutdown(&sock, &mut lockd);

    let t = |x: &Throughput| serde_json::json!({"ops_s": x.ops_s, "p50_ms": x.p50_ms, "p99_ms": x.p99_ms, "clients": x.clients});
    if json {
        println!(
            "{}",
            serde_json::json!({
                "one": t(&one),
                "one_nospin": t(&one_nospin),
                "one_pipelined": t(&one_piped),
                "eight_one_name": t(&eight_one),
                "eight_names": t(&eight_names),
                "death_to_grant_ms": death_ms,
                "cli_ms": clinit_cli_ms,
                "flock_cli_ms": flock_cli_ms,
                "ping_us": ping_us,
                "raw_rtt_us": raw_us,
                "locks_listing_us": rec_us,
            })
        );
    } else {
        for (what, x) in [
            ("1 client", &one),
            ("1 client, never spins", &one_nospin),
            ("1 client, pipelined", &one_piped),
            ("8 clients, one name", &eight_one),
            ("8 clients, 8 names", &eight_names),
        ] {
            println!(
                "{what:24} {:>9.0} lock+unlock/s  p50 {:.3} ms  p99 {:.3} ms",
                x.ops_s, x.p50_ms, x.p99_ms
            );
        }
        println!("holder death -> next grant: {death_ms:.3} ms");
        println!("raw UNIX-socket round trip (two threads): {raw_us:.1} us");
        println!(
            "one request round trip: ping (through the event loop) {ping_us:.1} us, locks listing (served by the connection task) {rec_us:.1} us"
        );
        println!(
            "clinit lock NAME -- true:   {clinit_cli_ms:.2} ms  (flock FILE true {flock_cli_ms:.2} ms, {:.2}x)",
            clinit_cli_ms / flock_cli_ms
        );
    }
}
