//! Cluster lock benchmark (issue 11), clinit side. Run through
//! `bash bench/cluster_locks.sh`, which also runs `bench/lock_peers.py`
//! (etcd's own lock API in the same run) and prints the ratios; alone:
//! `cargo bench --bench cluster_locks [-- --json]`.
//!
//! Starts its own one-member etcd (`etcd` on PATH; free loopback ports, data
//! in a temp dir, stopped at the end) and two clinit daemons in cluster
//! mode, nodes n1 and n2 (default lease_ttl, 10 s), and measures with the
//! library client (one connection per client thread):
//! - `one`: 1 client on n1, acquire+release of one name for 3 s: after the
//!   first claim, every cycle is served from the lock cache (no etcd round
//!   trip while no other node wants the lock);
//! - `eight_one_name`: 8 clients on n1, one name;
//! - `two_nodes`: 1 client on n1 and 1 on n2 taking turns at one name (every
//!   hand-over goes through etcd); ops of both together, and the latency of
//!   each acquire+release;
//! - `death_to_grant_s`: a holder on n1, a waiter on n2; n1's daemon gets
//!   SIGKILL at a random point of its keep-alive cycle; kill -> waiter
//!   granted (3 times; n1 is started again between runs);
//! - `cli_ms`: `clinit lock NAME -- true` on n1, median of 50.

use clinit::proto::{Reply, Request};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

#[path = "common.rs"]
mod common;
use common::{acquire, bin, connect, median, median_cli_ms, pct, release, wait_queued};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Etcd {
    child: Child,
    url: String,
}

impl Etcd {
    fn start(dir: &Path) -> Etcd {
        let (client, peer) = (free_port(), free_port());
        let url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let child = Command::new("etcd")
            .args(["--name", "b0", "--data-dir"])
            .arg(dir.join("etcd-data"))
            .args([
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
            ])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("b0={peer_url}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("etcd.log")).unwrap())
            .spawn()
            .expect("etcd on PATH (bench/cluster_locks.sh installs Debian's etcd-server)");
        let e = Etcd { child, url };
        let end = Instant::now() + Duration::from_secs(30);
        while !Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args([
                "--endpoints",
                &e.url,
                "--command-timeout",
                "2s",
                "put",
                "/b",
                "x",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            assert!(Instant::now() < end, "etcd did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
        e
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

/// A clinit daemon in cluster mode, node `name`, in `dir/name`.
struct Node {
    child: Option<Child>,
    cltab: PathBuf,
    sock: PathBuf,
}

impl Node {
    fn start(dir: &Path, name: &str, etcd: &str) -> Node {
        let d = dir.join(name);
        std::fs::create_dir_all(&d).unwrap();
        let cltab = d.join("cltab");
        std::fs::write(
            &cltab,
            format!(
                ":::socket:{0}/s\n:::log:{0}/log\n:::clstat:{0}/clstat\n:::state:{0}/state\n:::etcd:{etcd}\n:::node:{name}\n:::cgroup:off\n",
                d.display()
            ),
        )
        .unwrap();
        let mut n = Node {
            child: None,
            sock: d.join("s"),
            cltab,
        };
        n.launch();
        n
    }

    fn launch(&mut self) {
        self.child = Some(
            Command::new(bin())
                .arg("-c")
                .arg(&self.cltab)
                .arg("-d")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let mut c = connect(&self.sock);
        // Connected to etcd: a lock can be claimed.
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Reply::Node { cluster: Some(v) }) = c.request(Request::Node)
                && v.connected
            {
                break;
            }
            assert!(Instant::now() < end, "node never connected to etcd");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = c.wait();
        }
    }
}

/// One client thread per socket in `socks`, each acquire+release of `name`
/// for `secs`: (ops/s of all together, p50 ms, p99 ms, ops). Tokens are
/// checked to rise per client.
fn throughput(socks: &[PathBuf], name: &str, secs: f64) -> serde_json::Value {
    let barrier = Arc::new(Barrier::new(socks.len() + 1));
    let handles: Vec<_> = socks
        .iter()
        .map(|sock| {
            let (sock, barrier, name) = (sock.clone(), barrier.clone(), name.to_string());
            std::thread::spawn(move || {
                let mut c = connect(&sock);
                let mut lat = Vec::with_capacity(1 << 20);
                let mut last = 0;
                let mut bases = std::collections::BTreeSet::new();
                barrier.wait();
                let end = Instant::now() + Duration::from_secs_f64(secs);
                while Instant::now() < end {
                    let t = Instant::now();
                    let token = acquire(&mut c, &name);
                    assert!(token > last, "token {token} after {last}");
                    last = token;
                    bases.insert(token >> clinit::lock::CLAIM_SHIFT);
                    release(&mut c, &name);
                    lat.push(t.elapsed().as_secs_f64() * 1e3);
                }
                (lat, bases)
            })
        })
        .collect();
    barrier.wait();
    let t = Instant::now();
    let mut lat: Vec<f64> = Vec::new();
    let mut claims = std::collections::BTreeSet::new();
    for h in handles {
        let (l, b) = h.join().unwrap();
        lat.extend(l);
        claims.extend(b);
    }
    let wall = t.elapsed().as_secs_f64();
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    serde_json::json!({
        "ops_s": lat.len() as f64 / wall,
        "p50_ms": pct(&lat, 0.5),
        "p99_ms": pct(&lat, 0.99),
        "ops": lat.len(),
        "clients": socks.len(),
        // Claims made in etcd during the run (each a hand-over between
        // nodes, or the first claim).
        "claims": claims.len(),
        "claims_s": claims.len() as f64 / wall,
    })
}

/// A holder on n1, a waiter on n2, n1 SIGKILLed at a random point of its
/// keep-alive cycle: seconds from the kill to the waiter's grant.
fn death_to_grant_s(n1: &mut Node, n2: &Node, i: usize) -> f64 {
    let name = format!("death{i}");
    let mut holder = connect(&n1.sock);
    acquire(&mut holder, &name);
    let (tx, rx) = std::sync::mpsc::channel();
    let (sock2, name2) = (n2.sock.clone(), name.clone());
    let waiter = std::thread::spawn(move || {
        let mut c = connect(&sock2);
        tx.send(()).unwrap();
        acquire(&mut c, &name2);
        Instant::now()
    });
    rx.recv().unwrap();
    // The waiter's request is queued on n2.
    wait_queued(&n2.sock, &name);
    // A random point of the keep-alive cycle (TTL/3 = 3.3 s).
    let pause = (std::process::id() as u64 * 7919 + i as u64 * 104_729) % 3300;
    std::thread::sleep(Duration::from_millis(pause));
    let t = Instant::now();
    n1.kill9();
    let granted = waiter.join().unwrap();
    drop(holder);
    let s = granted.duration_since(t).as_secs_f64();
    n1.launch();
    s
}

fn main() {
    let json = std::env::args().any(|a| a == "--json");
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(dir.path());
    let mut n1 = Node::start(dir.path(), "n1", &etcd.url);
    let n2 = Node::start(dir.path(), "n2", &etcd.url);
    let secs = 4.0;

    let one = throughput(std::slice::from_ref(&n1.sock), "one", secs);
    let eight = throughput(&vec![n1.sock.clone(); 8], "eight", secs);
    let two_nodes = throughput(&[n1.sock.clone(), n2.sock.clone()], "pair", secs);
    let cli_ms = median_cli_ms(50, || {
        let mut c = Command::new(bin());
        c.arg("-c")
            .arg(&n1.cltab)
            .args(["lock", "cli", "--", "true"]);
        c
    });
    let deaths: Vec<f64> = (0..3).map(|i| death_to_grant_s(&mut n1, &n2, i)).collect();
    let out = serde_json::json!({
        "one": one,
        "eight_one_name": eight,
        "two_nodes": two_nodes,
        "cli_ms": cli_ms,
        "death_to_grant_s": median(deaths.clone()),
        "death_to_grant_samples_s": deaths,
        "lease_ttl_s": 10,
    });
    if json {
        println!("{out}");
    } else {
        println!("{}", serde_json::to_string_pretty(&out).unwrap());
    }
    drop(n1);
    drop(n2);
    drop(etcd);
}
