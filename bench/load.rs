//! Load with churn, with a generator in Rust (issue 15): the mix of
//! `bench/load_soak.py`, from CLIENTS threads of one process instead of
//! CLIENTS Python processes. On 2 cores the Python clients took more CPU
//! than the daemon they measured, so requests/s was the generator's
//! figure; here each request costs its client a few µs.
//!
//! CLIENTS threads each send REQS requests on one kept-open connection to
//! a daemon supervising 5 groups of 10 respawn entries, while they switch
//! those groups between levels 1-3. Mix per request: status of a group
//! 25 %, tell 12 %, stop/start of an entry 3 %, lock acquire (exclusive,
//! one of 20 names, waiting at most 50 ms) and release 25 %, record
//! add/get/modify 35 %.
//!
//! Prints requests/s in all, p50/p99 per kind, replies that should not
//! happen, client timeouts, the daemon's CPU, fds and RSS before and after,
//! zombies after; exits 1 if errors, timeouts or zombies are not 0 or fds
//! did not come back.
//!
//!     cargo bench --bench load -- [CLIENTS] [REQS]

#[path = "common.rs"]
mod common;

use clinit::client::{Client, ClientError};
use clinit::lock::LockMode;
use clinit::proto::{ControlAction, ErrorCode, RecordOp, Reply, Request};
use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const GROUPS: [&str; 5] = ["g0", "g1", "g2", "g3", "g4"];

/// xorshift64*: enough randomness for a request mix, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Default)]
struct Tally {
    lat: HashMap<&'static str, Vec<f64>>,
    errors: Vec<String>,
    timeouts: usize,
    lock_waits: usize,
}

fn client(sock: &Path, me: usize, n: usize) -> Tally {
    let mut t = Tally::default();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (me as u64 + 1).wrapping_mul(0x1234_5678_9ABC));
    let mut c = common::connect(sock);
    c.set_timeout(Duration::from_secs(10));
    let mut keys: Vec<(String, u64)> = Vec::new();
    let cont = format!("c{}", me % 5);
    let mut done = 0;
    while done < n {
        let x = rng.below(100);
        let (kind, req): (&'static str, Request) = if x < 25 {
            let group = GROUPS[rng.below(5) as usize].to_string();
            (
                "status",
                Request::Status {
                    group: Some(group),
                    brief: false,
                    from: None,
                    usage: false,
                },
            )
        } else if x < 37 {
            (
                "tell",
                Request::Tell {
                    group: GROUPS[rng.below(5) as usize].into(),
                    level: (1 + rng.below(3)).to_string(),
                },
            )
        } else if x < 40 {
            let g = GROUPS[rng.below(5) as usize];
            (
                "control",
                Request::Control {
                    tag: format!("{g}e{}", rng.below(10)),
                    action: if rng.below(2) == 0 {
                        ControlAction::Stop
                    } else {
                        ControlAction::Start
                    },
                    temporary: true,
                },
            )
        } else if x < 65 {
            (
                "lock_acquire",
                Request::LockAcquire {
                    name: format!("l{}", rng.below(20)),
                    mode: LockMode::Exclusive,
                    wait: true,
                    timeout_ms: Some(50),
                    lease: None,
                    what: "load".into(),
                },
            )
        } else {
            let y = rng.below(100);
            if keys.is_empty() || y < 25 {
                let key = format!("k{me}-{}", keys.len());
                keys.push((key.clone(), 0));
                (
                    "record_add",
                    Request::Record(RecordOp::Add {
                        container: cont.clone(),
                        key,
                        value_b64: "dmFsdWU=".into(),
                        fence: None,
                    }),
                )
            } else if y < 60 {
                let (key, _) = &keys[rng.below(keys.len() as u64) as usize];
                (
                    "record_get",
                    Request::Record(RecordOp::Get {
                        container: cont.clone(),
                        key: key.clone(),
                    }),
                )
            } else {
                let (key, sig) = &keys[rng.below(keys.len() as u64) as usize];
                (
                    "record_modify",
                    Request::Record(RecordOp::Modify {
                        container: cont.clone(),
                        key: key.clone(),
                        value_b64: "dmFsdWUy".into(),
                        sig: *sig,
                        fence: None,
                    }),
                )
            }
        };
        let lock_name = match &req {
            Request::LockAcquire { name, .. } => Some(name.clone()),
            _ => None,
        };
        let record_key = match &req {
            Request::Record(RecordOp::Add { key, .. } | RecordOp::Modify { key, .. }) => {
                Some(key.clone())
            }
            _ => None,
        };
        let at = Instant::now();
        let r = c.request(req);
        t.lat
            .entry(kind)
            .or_default()
            .push(at.elapsed().as_secs_f64());
        done += 1;
        match (kind, r) {
            ("lock_acquire", Ok(Reply::Granted { .. })) => {
                let at = Instant::now();
                let r = c.request(Request::LockRelease {
                    name: lock_name.unwrap_or_default(),
                    lease: None,
                });
                t.lat
                    .entry("lock_release")
                    .or_default()
                    .push(at.elapsed().as_secs_f64());
                done += 1;
                if !matches!(r, Ok(Reply::Ok)) {
                    t.errors.push(format!("lock_release: {r:?}"));
                }
            }
            ("lock_acquire", Err(ClientError::Daemon(e))) if e.code == ErrorCode::Timeout => {
                t.lock_waits += 1;
            }
            ("record_add" | "record_modify", Ok(Reply::Signature { sig, .. })) => {
                if let Some(k) = keys
                    .iter_mut()
                    .find(|(k, _)| Some(k) == record_key.as_ref())
                {
                    k.1 = sig;
                }
            }
            ("status", Ok(Reply::Status { .. }))
            | ("tell" | "control", Ok(Reply::Message { .. }))
            | ("record_get", Ok(Reply::Record { .. })) => {}
            (_, Err(ClientError::Protocol { err, .. })) if err.contains("no reply") => {
                t.timeouts += 1;
                c = common::connect(sock);
                c.set_timeout(Duration::from_secs(10));
            }
            (kind, r) => t.errors.push(format!("{kind}: {r:?}")),
        }
    }
    t
}

fn pct(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 * q) as usize).min(v.len() - 1)]
}

fn stat(pid: u32) -> (f64, f64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let f: Vec<&str> = s.rsplit_once(')').unwrap().1.split_whitespace().collect();
    let tick = 100.0; // USER_HZ
    (
        f[11].parse::<f64>().unwrap() / tick,
        f[12].parse::<f64>().unwrap() / tick,
    )
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

fn rss_mb(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

fn zombies(ppid: u32) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|s| {
                let f: Vec<&str> = s
                    .rsplit_once(')')
                    .map(|x| x.1)
                    .unwrap_or("")
                    .split_whitespace()
                    .collect();
                f.first() == Some(&"Z") && f.get(1) == Some(&ppid.to_string().as_str())
            })
        })
        .count()
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let clients = args.first().copied().unwrap_or(50);
    let reqs = args.get(1).copied().unwrap_or(1000);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sock = d.join("s");
    let mut cltab = format!(
        ":::socket:{0}/s\n:::log:{0}/log\n:::clstat:{0}/clstat\n:::state:{0}/state\n",
        d.display()
    );
    for g in GROUPS {
        for i in 0..10 {
            let levels = if i < 5 { "12" } else { "23" };
            cltab.push_str(&format!("{g}:{g}e{i}:{levels}:respawn:sleep 1000\n"));
        }
    }
    std::fs::write(d.join("cltab"), cltab).unwrap();
    let mut daemon = Command::new(common::bin())
        .args(["-c", d.join("cltab").to_str().unwrap(), "-d"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = daemon.id();
    let mut admin = common::connect(&sock);
    admin.set_timeout(Duration::from_secs(60));
    let settle = |c: &mut Client| {
        for g in GROUPS {
            c.request(Request::Tell {
                group: g.into(),
                level: "2".into(),
            })
            .unwrap();
        }
        for g in GROUPS {
            c.request(Request::Wait {
                group: g.into(),
                level: Some("2".into()),
                state: None,
                timeout_ms: 30_000,
            })
            .unwrap();
        }
    };
    settle(&mut admin);
    let (fd0, rss0) = (fds(pid), rss_mb(pid));
    let (u0, s0) = stat(pid);
    let t0 = Instant::now();
    let tallies: Vec<Tally> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..clients)
            .map(|me| {
                let sock = &sock;
                s.spawn(move || client(sock, me, reqs))
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let took = t0.elapsed().as_secs_f64();
    let (u1, s1) = stat(pid);
    let mut lat: HashMap<&str, Vec<f64>> = HashMap::new();
    let (mut errors, mut timeouts, mut lock_waits) = (Vec::new(), 0, 0);
    for t in tallies {
        for (k, v) in t.lat {
            lat.entry(k).or_default().extend(v);
        }
        errors.extend(t.errors);
        timeouts += t.timeouts;
        lock_waits += t.lock_waits;
    }
    settle(&mut admin);
    drop(admin);
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end && fds(pid) > fd0 {
        std::thread::sleep(Duration::from_millis(50));
    }
    let (fd1, rss1, z) = (fds(pid), rss_mb(pid), zombies(pid));
    let total: usize = lat.values().map(Vec::len).sum();
    println!(
        "{clients} client threads x {reqs} requests (Rust generator), 5 groups x 10 respawn entries switching levels"
    );
    println!(
        "{total} requests in {took:.2} s: {:.0} requests/s in all",
        total as f64 / took
    );
    println!(
        "{:14} {:>7} {:>8} {:>8} {:>8}",
        "kind", "count", "p50 ms", "p99 ms", "max ms"
    );
    let mut kinds: Vec<_> = lat.keys().copied().collect();
    kinds.sort();
    let mut all = Vec::new();
    for k in kinds {
        let v = lat.get_mut(k).unwrap();
        all.extend_from_slice(v);
        let max = v.iter().cloned().fold(0.0, f64::max);
        println!(
            "{k:14} {:7} {:8.2} {:8.2} {:8.2}",
            v.len(),
            pct(v, 0.5) * 1e3,
            pct(v, 0.99) * 1e3,
            max * 1e3
        );
    }
    let max = all.iter().cloned().fold(0.0, f64::max);
    println!(
        "{:14} {:7} {:8.2} {:8.2} {:8.2}",
        "all",
        all.len(),
        pct(&mut all, 0.5) * 1e3,
        pct(&mut all, 0.99) * 1e3,
        max * 1e3
    );
    println!("lock waits that timed out at 50 ms (expected under contention): {lock_waits}");
    println!(
        "error replies that should not happen: {}; client timeouts (10 s): {timeouts}",
        errors.len()
    );
    for e in errors.iter().take(10) {
        println!("  {e}");
    }
    println!(
        "daemon CPU during the run: user {:.2} s, system {:.2} s ({:.0} % of one core)",
        u1 - u0,
        s1 - s0,
        (u1 - u0 + s1 - s0) / took * 100.0
    );
    println!("daemon fds {fd0} -> {fd1}; RSS {rss0:.1} -> {rss1:.1} MB; zombies after: {z}");
    common::shutdown(&sock, &mut daemon);
    let ok = errors.is_empty() && timeouts == 0 && z == 0 && fd1 <= fd0;
    println!("{}", if ok { "OK" } else { "FAILED" });
    std::process::exit(if ok { 0 } else { 1 });
}
