//! What both benchmarks (`core.rs`, `locks.rs`) need; each pulls this file
//! in with `#[path = "common.rs"] mod common;`.

use clinit::client::Client;
use clinit::proto::Request;
use std::path::Path;
use std::process::{Command, Stdio};
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

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Median wall time, in ms, of `n` runs of the command `cmd` makes (each
/// must succeed; its output is dropped).
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
pub fn round_trip_us(c: &mut Client, n: usize, req: impl Fn() -> Request) -> f64 {
    let t = Instant::now();
    for _ in 0..n {
        c.request(req()).unwrap();
    }
    t.elapsed().as_secs_f64() * 1e6 / n as f64
}
