//! What both benchmarks (`core.rs`, `locks.rs`) need; each pulls this file
//! in with `#[path = "common.rs"] mod common;`.

use clinit::client::Client;
use clinit::lock::LockMode;
use clinit::proto::{Reply, Request};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Connect to the daemon at `sock`, retrying while it starts (30 s at most).
pub fn connect(sock: &Path) -> Client {
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        match Client::connect(sock) {
            Ok(c) => return c,
            Err(e) if Instant::now() > end => panic!("daemon never answered: {e}"),
            Err(_) => std::thread::yield_now(),
        }
    }
}

#[allow(dead_code)] // not every bench uses it
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Median wall time, in ms, of `n` runs of the command `cmd` makes (each
/// must succeed; its output is dropped).
#[allow(dead_code)] // not every bench uses it
pub fn median_cli_ms(n: usize, mut cmd: impl FnMut() -> Command) -> f64 {
    median(
        (0..n)
            .map(|_| {
                let t = Instant::now();
                let st = cmd().stdout(Stdio::null()).status().unwrap();
                assert!(st.success());
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect(),
    )
}

/// Mean round trip, in µs, of `n` requests made by `req` on one connection.
#[allow(dead_code)] // not every bench uses it
pub fn round_trip_us(c: &mut Client, n: usize, req: impl Fn() -> Request) -> f64 {
    let t = Instant::now();
    for _ in 0..n {
        c.request(req()).unwrap();
    }
    t.elapsed().as_secs_f64() * 1e6 / n as f64
}

/// A raw UNIX-socket round trip between two threads (100 bytes each way,
/// blocking reads), in µs: the floor under every request, measured in the
/// same run because this figure moves with the machine's load.
#[allow(dead_code)] // not every bench uses it
pub fn raw_rtt_us() -> f64 {
    let (mut a, mut b) = UnixStream::pair().unwrap();
    let echo = std::thread::spawn(move || {
        let mut buf = [0u8; 256];
        loop {
            match b.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => b.write_all(&buf[..n]).unwrap(),
            }
        }
    });
    let msg = [7u8; 100];
    let mut buf = [0u8; 256];
    let mut round = |a: &mut UnixStream| {
        a.write_all(&msg).unwrap();
        let mut got = 0;
        while got < msg.len() {
            got += a.read(&mut buf).unwrap();
        }
    };
    for _ in 0..1000 {
        round(&mut a);
    }
    let n = 50_000;
    let t = Instant::now();
    for _ in 0..n {
        round(&mut a);
    }
    let us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
    drop(a);
    echo.join().unwrap();
    us
}

/// Ask the daemon at `sock` to shut down (on a new connection) and wait for
/// its process `child` to exit; errors of either are ignored.
#[allow(dead_code)] // not every bench uses it
pub fn shutdown(sock: &Path, child: &mut Child) {
    let mut c = connect(sock);
    let _ = c.request(Request::Shutdown);
    let _ = child.wait();
}

/// The `clinit` under test: this build's, or `$CLINIT_BIN` (to compare
/// two builds' daemons in one run).
pub fn bin() -> String {
    std::env::var("CLINIT_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_clinit").to_string())
}

/// `n` event subscribers: `clinit events --follow --json --last 1` each,
/// printing to /dev/null, as an operator's `clinit events -f` would.
/// Started and following (each has printed its first event) when
/// [`Subscribers::start`] returns; killed when dropped.
#[allow(dead_code)] // not every bench uses it
pub struct Subscribers(Vec<Child>);

#[allow(dead_code)]
impl Subscribers {
    pub fn start(cltab: &Path, n: usize) -> Subscribers {
        let subs = Subscribers(
            (0..n)
                .map(|_| {
                    Command::new(bin())
                        .arg("-c")
                        .arg(cltab)
                        .args(["events", "--follow", "--json", "--last", "1"])
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .spawn()
                        .unwrap()
                })
                .collect(),
        );
        // Following once it has written its first event (to /dev/null):
        // its /proc/PID/io counts the bytes.
        let end = Instant::now() + Duration::from_secs(30);
        for s in &subs.0 {
            while written(s.id()) == 0 {
                assert!(Instant::now() < end, "subscriber {} never followed", s.id());
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        subs
    }

    /// How many still follow (a subscriber that fell too far behind is
    /// dropped by the daemon and exits).
    pub fn following(&mut self) -> usize {
        let mut n = 0;
        for c in &mut self.0 {
            if c.try_wait().ok().flatten().is_none() {
                n += 1;
            }
        }
        n
    }

    /// Bytes the subscribers have written (the events they received).
    pub fn bytes(&self) -> u64 {
        self.0.iter().map(|c| written(c.id())).sum()
    }
}

impl Drop for Subscribers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `wchar` of /proc/PID/io: bytes the process has written.
fn written(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("wchar:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Take lock `name` exclusively, waiting; its token.
#[allow(dead_code)] // not every bench uses it
pub fn acquire(c: &mut Client, name: &str) -> u64 {
    match c
        .request(Request::LockAcquire {
            name: name.into(),
            mode: LockMode::Exclusive,
            wait: true,
            timeout_ms: None,
            lease: None,
            what: "bench".into(),
        })
        .unwrap()
    {
        Reply::Granted { token, .. } => token,
        other => panic!("{other:?}"),
    }
}

/// Release lock `name`.
#[allow(dead_code)] // not every bench uses it
pub fn release(c: &mut Client, name: &str) {
    c.request(Request::LockRelease {
        name: name.into(),
        lease: None,
    })
    .unwrap();
}

/// The `p` quantile of `sorted` (NaN when empty).
#[allow(dead_code)] // not every bench uses it
pub fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Until a request waits for lock `name` on the daemon at `sock` (30 s at
/// most).
#[allow(dead_code)] // not every bench uses it
pub fn wait_queued(sock: &Path, name: &str) {
    let mut probe = connect(sock);
    let give_up = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(
            Instant::now() < give_up,
            "the waiter on {name} never queued"
        );
        if let Ok(Reply::Locks { containers, .. }) = probe.request(Request::Locks {
            name: Some(name.to_string()),
            after: None,
        }) && containers.first().is_some_and(|c| !c.waiters.is_empty())
        {
            return;
        }
        std::thread::yield_now();
    }
}
