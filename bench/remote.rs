//! Remote administration over loopback TLS (issue 13), clinit's side; run
//! by `bench/remote.sh` beside supervisord's remote XML-RPC.
//!
//! One run measures, with certificates made by `clinit ca`/`clinit cert`
//! in a temp dir and a daemon with N `sleep` entries (default 1,000)
//! listening on a free loopback port:
//!
//! - `tls_echo_us`: the floor, a raw TLS 1.3 round trip (rustls, the same
//!   configs as clinit's, 100 bytes each way) between two threads;
//! - `ping_us`: one request (ping) on a kept-open `clinit --host`
//!   connection: p50 and p99 of 5,000;
//! - `status_rpc_ms`: one whole status of N entries on a kept-open
//!   connection (median of 20);
//! - `cli_status_ms`: `clinit -H 127.0.0.1:PORT status` as a whole CLI
//!   call, connect, TLS handshake and all (median of 21);
//! - `lock_unlock_per_s`: lock + unlock pairs per second for one remote
//!   client on a kept-open connection (5,000 pairs).
//!
//! Output: one JSON object on stdout.

#[path = "common.rs"]
mod common;

use clinit::client::{Client, Remote, Target};
use clinit::lock::LockMode;
use clinit::proto::{Reply, Request};
use common::{bin, median};
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

fn clinit(args: &[&str]) {
    let st = Command::new(bin())
        .args(args)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "clinit {args:?}");
}

/// The TLS floor: a rustls server thread echoing, a rustls client, over
/// loopback TCP, 100 bytes each way; mean µs per round trip.
fn tls_echo_us(pki: &Path) -> (f64, f64) {
    let server =
        clinit::tls::server_config(&clinit::tls::Files::in_dir(&pki.join("server"))).unwrap();
    let a = pki.join("alice");
    let client = clinit::tls::client_config(
        &a.join("ca.pem"),
        Some((&a.join("cert.pem"), &a.join("key.pem"))),
    )
    .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let echo = std::thread::spawn(move || {
        let (sock, _) = listener.accept().unwrap();
        sock.set_nodelay(true).unwrap();
        let conn = rustls::ServerConnection::new(server).unwrap();
        let mut s = rustls::StreamOwned::new(conn, sock);
        let mut buf = [0u8; 256];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if s.write_all(&buf[..n]).and_then(|()| s.flush()).is_err() {
                        return;
                    }
                }
            }
        }
    });
    let sock = std::net::TcpStream::connect(addr).unwrap();
    sock.set_nodelay(true).unwrap();
    let name = clinit::tls::server_name("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(client, name).unwrap();
    let mut c = rustls::StreamOwned::new(conn, sock);
    let msg = [7u8; 100];
    let mut buf = [0u8; 256];
    let mut round = |c: &mut rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>| {
        c.write_all(&msg).unwrap();
        c.flush().unwrap();
        let mut got = 0;
        while got < msg.len() {
            got += c.read(&mut buf).unwrap();
        }
    };
    for _ in 0..1000 {
        round(&mut c);
    }
    let mut each = Vec::with_capacity(5000);
    for _ in 0..5000 {
        let t = Instant::now();
        round(&mut c);
        each.push(t.elapsed().as_secs_f64() * 1e6);
    }
    c.conn.send_close_notify();
    let _ = c.flush();
    drop(c);
    echo.join().unwrap();
    (percentile(each.clone(), 0.5), percentile(each, 0.99))
}

fn main() {
    let n: usize = std::env::var("N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = |s: &str| d.join(s).to_str().unwrap().to_string();
    clinit(&["ca", "init", &p("pki/ca")]);
    clinit(&[
        "cert",
        "issue",
        "--ca",
        &p("pki/ca"),
        "node1",
        "--server",
        "127.0.0.1",
        "--out",
        &p("pki/server"),
    ]);
    clinit(&[
        "cert",
        "issue",
        "--ca",
        &p("pki/ca"),
        "alice",
        "--out",
        &p("pki/alice"),
    ]);
    std::fs::write(d.join("users"), "cert:alice\n").unwrap();
    let mut cltab = format!(
        ":::socket:{0}/s\n:::clstat:{0}/clstat\n:::log:{0}/log\n:::state:{0}/state\n:::userlist:{0}/users\n",
        d.display()
    );
    for i in 0..n {
        cltab.push_str(&format!("g:e{i}:1:respawn:sleep 100000\n"));
    }
    std::fs::write(d.join("cltab"), cltab).unwrap();
    let mut daemon = Command::new(bin())
        .args(["-c", &p("cltab"), "daemon", "--listen", "127.0.0.1:0"])
        .args(["--tls-ca", &p("pki/server/ca.pem")])
        .args(["--tls-cert", &p("pki/server/cert.pem")])
        .args(["--tls-key", &p("pki/server/key.pem")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut local = common::connect(&d.join("s"));
    const SAYS: &str = "remote administration on 127.0.0.1:";
    let log = std::fs::read_to_string(d.join("log")).unwrap();
    let at = log.find(SAYS).expect("the listener is logged") + SAYS.len();
    let port: u16 = log[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap();
    local
        .request(Request::Tell {
            group: "g".into(),
            level: "1".into(),
        })
        .unwrap();
    local.set_timeout(Duration::from_secs(120));
    local
        .request(Request::Wait {
            group: "g".into(),
            level: Some("1".into()),
            state: None,
            timeout_ms: 120_000,
        })
        .unwrap();

    let a = d.join("pki/alice");
    let tls = clinit::tls::client_config(
        &a.join("ca.pem"),
        Some((&a.join("cert.pem"), &a.join("key.pem"))),
    )
    .unwrap();
    let target = Target::Remote(Remote {
        host: "127.0.0.1".into(),
        port,
        tls: Some(Arc::clone(&tls)),
        ca: a.join("ca.pem"),
        no_cert: None,
    });
    let mut c = Client::open(&target).unwrap();
    for _ in 0..1000 {
        c.request(Request::Ping).unwrap();
    }
    let mut each = Vec::with_capacity(5000);
    for _ in 0..5000 {
        let t = Instant::now();
        c.request(Request::Ping).unwrap();
        each.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let (ping_p50, ping_p99) = (percentile(each.clone(), 0.5), percentile(each, 0.99));
    let status_rpc_ms = median(
        (0..20)
            .map(|_| {
                let t = Instant::now();
                let g = c.status_all(None, false).unwrap();
                assert_eq!(g[0].entries.len(), n);
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect(),
    );
    let pairs = 5000;
    let t = Instant::now();
    for _ in 0..pairs {
        let r = c
            .request(Request::LockAcquire {
                name: "vol".into(),
                mode: LockMode::Exclusive,
                wait: false,
                timeout_ms: None,
                lease: None,
                what: "bench".into(),
            })
            .unwrap();
        assert!(matches!(r, Reply::Granted { .. }), "{r:?}");
        c.request(Request::LockRelease {
            name: "vol".into(),
            lease: None,
        })
        .unwrap();
    }
    let lock_unlock_per_s = pairs as f64 / t.elapsed().as_secs_f64();
    let host = format!("127.0.0.1:{port}");
    let cli_status_ms = common::median_cli_ms(21, || {
        let mut c = Command::new(bin());
        c.env("HOME", d)
            .args(["-H", &host])
            .args(["--tls-ca", &p("pki/alice/ca.pem")])
            .args(["--tls-cert", &p("pki/alice/cert.pem")])
            .args(["--tls-key", &p("pki/alice/key.pem")])
            .arg("status");
        c
    });
    let (echo_p50, echo_p99) = tls_echo_us(&d.join("pki"));
    drop(c);
    common::shutdown(&d.join("s"), &mut daemon);
    println!(
        "{}",
        serde_json::json!({
            "n": n,
            "tls_echo_us_p50": echo_p50,
            "tls_echo_us_p99": echo_p99,
            "ping_us_p50": ping_p50,
            "ping_us_p99": ping_p99,
            "status_rpc_ms": status_rpc_ms,
            "cli_status_ms": cli_status_ms,
            "lock_unlock_per_s": lock_unlock_per_s,
        })
    );
}
