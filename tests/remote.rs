//! Remote administration: the daemon's TCP listener with mutual TLS, and
//! `clinit --host`, with certificates made by `clinit ca` and `clinit
//! cert` in the test's directory. Everything on loopback, on ports the
//! kernel picks (the daemon logs the one it bound).

mod common;

use common::*;
use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

/// A CA and certificates made with the CLI: the server's (for 127.0.0.1
/// and localhost), alice's (listed in the UserList), bob's (not listed),
/// and the odd ones.
struct Pki {
    dir: PathBuf,
}

fn clinit(args: &[&str]) -> Output {
    let out = Command::new(bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "clinit {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

impl Pki {
    fn new(dir: &Path) -> Pki {
        let dir = dir.join("pki");
        let p = |s: &str| dir.join(s).to_str().unwrap().to_string();
        clinit(&["ca", "init", &p("ca"), "--name", "test CA"]);
        clinit(&["ca", "init", &p("other-ca"), "--name", "other CA"]);
        let issue = |ca: &str, name: &str, out: &str, extra: &[&str]| {
            let mut args = vec!["cert", "issue", "--ca", ca, name, "--out", out];
            args.extend_from_slice(extra);
            clinit(&args);
        };
        let server = ["--server", "127.0.0.1,localhost,::1"];
        issue(&p("ca"), "node1", &p("server"), &server);
        issue(&p("ca"), "alice", &p("alice"), &[]);
        issue(&p("ca"), "bob", &p("bob"), &[]);
        issue(&p("other-ca"), "mallory", &p("mallory"), &[]);
        let past = ["--not-before", "2020-01-01", "--not-after", "2020-12-31"];
        issue(&p("ca"), "alice", &p("expired"), &past);
        issue(
            &p("ca"),
            "node9",
            &p("server-node9"),
            &["--server", "node9"],
        );
        let mut old = server.to_vec();
        old.extend_from_slice(&past);
        issue(&p("ca"), "node1", &p("server-expired"), &old);
        Pki { dir }
    }

    fn file(&self, who: &str, f: &str) -> String {
        self.dir.join(who).join(f).to_str().unwrap().to_string()
    }

    /// The daemon's flags: listen on a free loopback port with `server`'s
    /// certificate.
    fn serve(&self, server: &str) -> Vec<String> {
        vec![
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--tls-ca".into(),
            self.file(server, "ca.pem"),
            "--tls-cert".into(),
            self.file(server, "cert.pem"),
            "--tls-key".into(),
            self.file(server, "key.pem"),
        ]
    }
}

/// A daemon serving `entries` over TLS with `server`'s certificate; alice
/// is in its UserList.
fn start(entries: &str, settings: &str, server: &str) -> (Daemon, Pki, u16) {
    let d = Daemon::prepare("");
    let pki = Pki::new(d.dir.path());
    std::fs::write(d.path("users"), "cert:alice\n").unwrap();
    let text = std::fs::read_to_string(d.cltab()).unwrap();
    std::fs::write(
        d.cltab(),
        format!(
            "{text}:::userlist:{}\n{settings}{entries}",
            d.path("users").display()
        ),
    )
    .unwrap();
    let flags = pki.serve(server);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let d = d.launch(&flags);
    let port = listening_port(&d);
    (d, pki, port)
}

/// The port the daemon says it serves remote administration on.
fn listening_port(d: &Daemon) -> u16 {
    logged_port(d, "127.0.0.1")
}

/// The port of the log line `remote administration on ADDR:PORT` (ADDR as
/// the log writes it: `127.0.0.1`, `[::1]`), once the daemon has written it.
fn logged_port(d: &Daemon, addr: &str) -> u16 {
    d.logged_port(&format!("remote administration on {addr}"))
}

/// `clinit -H 127.0.0.1:PORT` as `who` (a directory of the PKI: its
/// ca.pem, cert.pem and key.pem), with a HOME of its own (no default
/// files), stdio left to the caller.
fn remote(d: &Daemon, pki: &Pki, port: u16, who: &str, args: &[&str]) -> Command {
    let mut c = Command::new(bin());
    c.current_dir(d.dir.path())
        .env("HOME", d.path("home"))
        .env_remove("CLINIT_HOST")
        .arg("-H")
        .arg(format!("127.0.0.1:{port}"))
        .args(["--tls-ca", &pki.file(who, "ca.pem")])
        .args(["--tls-cert", &pki.file(who, "cert.pem")])
        .args(["--tls-key", &pki.file(who, "key.pem")])
        .args(args)
        .stdin(Stdio::null());
    c
}

fn run(d: &Daemon, pki: &Pki, port: u16, who: &str, args: &[&str]) -> Output {
    remote(d, pki, port, who, args).output().unwrap()
}

fn ok(d: &Daemon, pki: &Pki, port: u16, who: &str, args: &[&str]) -> String {
    let out = run(d, pki, port, who, args);
    assert!(
        out.status.success(),
        "clinit -H {args:?} as {who} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The exit code and standard error of a command that must fail.
fn refused(out: Output) -> (i32, String) {
    assert!(!out.status.success(), "succeeded: {out:?}");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const ENTRIES: &str = "web:w1:1,2:respawn:sleep 1000\nweb:w2:2:respawn:sleep 1001\n";

#[test]
fn every_client_command_works_over_tls() {
    let (d, pki, port) = start(ENTRIES, "", "server");
    let a = |args: &[&str]| ok(&d, &pki, port, "alice", args);
    // Reading, and the Cluster::Init form with -v.
    assert_eq!(a(&["status"]), "web - IDLE\n");
    let out = a(&["-v", "web", "1"]);
    assert!(out.contains("web 1"), "{out}");
    a(&["wait", "web", "1"]);
    a(&["tell", "web", "2"]);
    assert_eq!(a(&["wait", "web", "2"]), "web 2 DONE\n");
    let st: serde_json::Value = serde_json::from_str(&a(&["status", "--json"])).unwrap();
    assert_eq!(st[0]["entries"].as_array().unwrap().len(), 2);
    assert!(a(&["status", "--long"]).contains("Instance w2, (group web, mode respawn)"));
    // Entry control.
    assert!(a(&["stop", "w2"]).contains("w2"));
    d.wait_until("w2 stopped", || d.entry("w2")["state"] == "idle");
    a(&["start", "w2"]);
    d.wait_until("w2 runs", || d.entry("w2")["state"] == "running");
    a(&["restart", "w2"]);
    a(&["restart", "--group", "web"]);
    // The cltab: create, delete, reread.
    let out = a(&["create", "web", "w3", "2", "respawn", "--", "sleep", "1002"]);
    assert!(out.contains("created w3 in group web"), "{out}");
    d.wait_until("w3 runs", || d.entry("w3")["state"] == "running");
    a(&["delete", "w3"]);
    assert!(!d.read("cltab").contains("w3"));
    a(&["reread"]);
    // Locks and records.
    let out = a(&[
        "lock",
        "vol",
        "--",
        "sh",
        "-c",
        "echo token=$CLINIT_LOCK_TOKEN",
    ]);
    assert!(out.starts_with("token="), "{out}");
    assert!(!a(&["locks"]).contains("held"));
    let sig = a(&["record", "add", "hosts", "web1", "10.0.0.5"]);
    assert!(!sig.trim().is_empty());
    assert_eq!(a(&["record", "get", "hosts", "web1"]), "10.0.0.5\n");
    // Events and explain: the tell is alice's.
    let ev = a(&["events", "--group", "web"]);
    assert!(ev.contains("group web"), "{ev}");
    let why = a(&["explain", "web"]);
    assert!(why.contains("by certificate alice"), "{why}");
    // Shut down from afar.
    a(&["shutdown"]);
    let mut d = d;
    let mut child = d.child.take().unwrap();
    let st = wait_exit(&mut child, "daemon did not exit after a remote shutdown");
    assert!(st.success(), "{st:?}");
}

#[test]
fn a_read_only_identity_reads_and_is_refused_changes() {
    let (d, pki, port) = start(ENTRIES, "", "server");
    assert_eq!(ok(&d, &pki, port, "bob", &["status"]), "web - IDLE\n");
    ok(&d, &pki, port, "bob", &["locks"]);
    ok(&d, &pki, port, "bob", &["events"]);
    let (code, err) = refused(run(&d, &pki, port, "bob", &["web", "1"]));
    assert_eq!(code, 11, "{err}");
    assert!(
        err.contains("certificate bob may not change anything"),
        "{err}"
    );
    let (code, err) = refused(run(&d, &pki, port, "bob", &["shutdown"]));
    assert_eq!(code, 11, "{err}");
    assert!(d.log().contains("refused tell web 1: certificate bob"));
    // Locks and records are open to every authenticated peer by default.
    ok(&d, &pki, port, "bob", &["lock", "v", "--", "true"]);
    // A listed identity may change.
    ok(&d, &pki, port, "alice", &["web", "1"]);
    d.wait_status("web", "web 1 DONE");
    // The UserList is read at every check.
    std::fs::write(d.path("users"), "cert:alice\ncert:bob\n").unwrap();
    ok(&d, &pki, port, "bob", &["web", "2"]);
    d.wait_status("web", "web 2 DONE");
}

#[test]
fn bad_certificates_are_refused_each_with_its_message() {
    let (d, pki, port) = start(ENTRIES, "", "server");
    // No certificate: the server refuses before any request is read.
    let mut c = Command::new(bin());
    c.env("HOME", d.path("home"))
        .args(["-H", &format!("127.0.0.1:{port}")])
        .args(["--tls-ca", &pki.file("alice", "ca.pem"), "status"])
        .stdin(Stdio::null());
    let (code, err) = refused(c.output().unwrap());
    assert_eq!(code, 25, "{err}");
    assert!(
        err.contains("refused your certificate: you sent none"),
        "{err}"
    );
    // A certificate of another CA.
    let mut c = remote(&d, &pki, port, "mallory", &["status"]);
    c.args(["--tls-ca", &pki.file("alice", "ca.pem")]);
    let (code, err) = refused(c.output().unwrap());
    assert_eq!(code, 25, "{err}");
    assert!(
        err.contains("your certificate is not signed by the server's CA"),
        "{err}"
    );
    // An expired certificate.
    let (code, err) = refused(run(&d, &pki, port, "expired", &["status"]));
    assert_eq!(code, 25, "{err}");
    assert!(err.contains("your certificate has expired"), "{err}");
    // The server's certificate checked against another CA.
    let mut c = remote(&d, &pki, port, "alice", &["status"]);
    c.args(["--tls-ca", &pki.file("mallory", "ca.pem")]);
    let (code, err) = refused(c.output().unwrap());
    assert_eq!(code, 24, "{err}");
    assert!(
        err.contains("the server's certificate is not signed by your CA"),
        "{err}"
    );
    // The daemon logged each failed handshake, with the client's address.
    d.wait_until("handshake failures logged", || {
        d.log().matches("TLS handshake with 127.0.0.1:").count() >= 3
    });
    // And still serves.
    ok(&d, &pki, port, "alice", &["status"]);
}

#[test]
fn a_server_certificate_for_another_name_or_expired_is_refused() {
    let (d, pki, port) = start("", "", "server-node9");
    let (code, err) = refused(run(&d, &pki, port, "alice", &["status"]));
    assert_eq!(code, 24, "{err}");
    assert!(
        err.contains("the server's certificate is for other names (node9), not 127.0.0.1"),
        "{err}"
    );
    drop(d);
    let (d, pki, port) = start("", "", "server-expired");
    let (code, err) = refused(run(&d, &pki, port, "alice", &["status"]));
    assert_eq!(code, 24, "{err}");
    assert!(
        err.contains("the server's certificate has expired"),
        "{err}"
    );
}

#[test]
fn connection_errors_have_their_codes() {
    let d = Daemon::prepare("");
    let pki = Pki::new(d.dir.path());
    // Nobody listens on a port just released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (code, err) = refused(run(&d, &pki, port, "alice", &["status"]));
    assert_eq!(code, 23, "{err}");
    assert!(err.contains("cannot connect to 127.0.0.1:"), "{err}");
    let mut c = remote(&d, &pki, port, "alice", &["status"]);
    c.args(["-H", "no-such-host.invalid"]);
    let (code, err) = refused(c.output().unwrap());
    assert_eq!(code, 22, "{err}");
    assert!(err.contains("cannot resolve no-such-host.invalid"), "{err}");
    // A missing certificate file names it.
    let mut c = remote(&d, &pki, port, "alice", &["status"]);
    c.args(["--tls-cert", "/nonexistent/cert.pem"]);
    let (code, err) = refused(c.output().unwrap());
    assert_eq!(code, 26, "{err}");
    assert!(err.contains("/nonexistent/cert.pem"), "{err}");
    // A bad host.
    let mut c = remote(&d, &pki, port, "alice", &["status"]);
    c.args(["-H", "node1:http"]);
    let (code, err) = refused(c.output().unwrap());
    assert_eq!(code, 2, "{err}");
}

#[test]
fn a_remote_holder_cut_off_releases_its_lock_to_a_waiter_elsewhere() {
    let (d, pki, port) = start("", "", "server");
    // The remote holder reaches the daemon through a proxy the test cuts.
    let proxy = Proxy::start(&format!("127.0.0.1:{port}"));
    let mut holder = remote(
        &d,
        &pki,
        proxy.port,
        "alice",
        &[
            "lock",
            "vol",
            "--",
            "sh",
            "-c",
            "echo held; exec sleep 1000",
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "held\n");
    // A local waiter.
    let waiter = d
        .client(&["lock", "vol", "--", "sh", "-c", "echo granted > granted"])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    d.wait_until("the local client waits", || {
        d.ok(&["locks", "vol"]).contains("wait")
    });
    // The remote holder is named by its certificate.
    let view = d.ok(&["locks", "vol"]);
    assert!(
        view.contains("[certificate alice] clinit lock: sh -c"),
        "{view}"
    );
    proxy.cut();
    d.wait_until("the waiter is granted", || d.read("granted") == "granted\n");
    let mut waiter = waiter;
    assert!(wait_exit(&mut waiter, "waiter").success());
    // The remote command was stopped: its lock was lost.
    let st = wait_exit(&mut holder, "remote holder");
    let mut err = String::new();
    holder
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(st.code(), Some(76), "{err}");
    assert!(err.contains("lost lock vol"), "{err}");
}

#[test]
fn a_silent_tcp_client_is_closed_after_the_handshake_timeout() {
    let (d, pki, port) = start("", ":::tls_handshake_timeout:0.5\n", "server");
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let started = Instant::now();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut b = [0u8; 16];
    // Closed by the daemon (end of stream or a reset), not by our timeout.
    match s.read(&mut b) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("expected the daemon to close: {other:?}"),
    }
    assert!(started.elapsed() < DEADLINE);
    d.wait_until("the close is logged", || {
        d.log().contains("no TLS handshake from 127.0.0.1:")
    });
    ok(&d, &pki, port, "alice", &["status"]);
}

#[test]
fn the_connection_limit_holds() {
    let (d, pki, port) = start("", ":::listen_connections_max:2\n", "server");
    // Two followers keep their connections open.
    let mut followers: Vec<_> = (0..2)
        .map(|_| {
            let mut c = remote(&d, &pki, port, "alice", &["events", "--follow"])
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            // Served: the daemon start event comes first.
            let mut line = String::new();
            std::io::BufReader::new(c.stdout.take().unwrap())
                .read_line(&mut line)
                .unwrap();
            assert!(!line.is_empty());
            c
        })
        .collect();
    let (code, err) = refused(run(&d, &pki, port, "alice", &["status"]));
    assert_eq!(code, 18, "{err}");
    assert!(
        err.contains("at most 2 remote connections") && err.contains("listen_connections_max"),
        "{err}"
    );
    // Local clients are not counted.
    d.ok(&["status"]);
    // One goes: a remote client is served again.
    let mut f = followers.pop().unwrap();
    f.kill().unwrap();
    f.wait().unwrap();
    d.wait_until("a slot is free", || {
        run(&d, &pki, port, "alice", &["status"]).status.success()
    });
    for mut f in followers {
        let _ = f.kill();
        let _ = f.wait();
    }
}

#[test]
fn plain_tcp_only_on_loopback_and_only_when_asked() {
    // Without --insecure-loopback, a listener needs its certificate files.
    let d = Daemon::prepare("");
    let out = d
        .client(&[
            "-d",
            "--listen",
            "127.0.0.1:0",
            "--tls-ca",
            "/nonexistent/ca.pem",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let (code, err) = refused(out);
    assert_eq!(code, 26, "{err}");
    assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    // Plain TCP on an address that is not loopback is refused.
    let out = d
        .client(&["-d", "--insecure-loopback", "--listen", "0.0.0.0:0"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let (code, err) = refused(out);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("loopback only"), "{err}");
    // On loopback it serves, warns, and its peers may only read.
    let d = d.launch(&["--insecure-loopback", "--listen", "127.0.0.1:0"]);
    d.wait_until("the warning", || d.log().contains("WITHOUT TLS"));
    let port = logged_port(&d, "127.0.0.1");
    let plain = |args: &[&str]| {
        Command::new(bin())
            .env("HOME", d.path("home"))
            .args(["--insecure-loopback", "-H", &format!("127.0.0.1:{port}")])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let out = plain(&["status"]);
    assert!(out.status.success(), "{out:?}");
    let (code, err) = refused(plain(&["shutdown"]));
    assert_eq!(code, 11, "{err}");
    assert!(err.contains("insecure-loopback"), "{err}");
}

#[test]
fn ca_and_cert_commands_refuse_to_overwrite_and_show_what_they_made() {
    let dir = tempfile::tempdir().unwrap();
    let p = |s: &str| dir.path().join(s).to_str().unwrap().to_string();
    clinit(&["ca", "init", &p("ca")]);
    let out = Command::new(bin())
        .args(["ca", "init", &p("ca")])
        .output()
        .unwrap();
    let (code, err) = refused(out);
    assert_eq!(code, 14, "{err}");
    assert!(err.contains("ca.pem exists"), "{err}");
    clinit(&[
        "cert",
        "issue",
        "--ca",
        &p("ca"),
        "web-node",
        "--server",
        "10.1.2.3,web.example.org",
        "--days",
        "30",
        "--out",
        &p("node"),
    ]);
    let shown = String::from_utf8(clinit(&["cert", "show", &p("node/cert.pem")]).stdout).unwrap();
    assert!(shown.contains("identity:   web-node"), "{shown}");
    assert!(
        shown.contains("IP:10.1.2.3, DNS:web.example.org"),
        "{shown}"
    );
    assert!(shown.contains("(valid)"), "{shown}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(p("node/key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let mode = std::fs::metadata(p("ca/ca.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let out = Command::new(bin())
        .args(["cert", "issue", "--ca", &p("ca"), "x", "--out", &p("node")])
        .output()
        .unwrap();
    let (code, err) = refused(out);
    assert_eq!(code, 14, "{err}");
    assert!(err.contains("--force"), "{err}");
    clinit(&[
        "cert",
        "issue",
        "--ca",
        &p("ca"),
        "x",
        "--out",
        &p("node"),
        "--force",
    ]);
    // A CA directory without its key.
    let out = Command::new(bin())
        .args(["cert", "issue", "--ca", &p("node"), "y", "--out", &p("y")])
        .output()
        .unwrap();
    let (code, err) = refused(out);
    assert_eq!(code, 26, "{err}");
    assert!(err.contains("ca.key"), "{err}");
}

#[test]
fn a_certificate_identity_is_held_to_the_per_peer_limits() {
    use clinit::client::{Client, ClientError, Remote, Target};
    use clinit::proto::{ErrorCode, Request};
    let (d, pki, port) = start("", ":::peer_locks_max:2\n:::peer_leases_max:1\n", "server");
    let tls = clinit::tls::client_config(
        Path::new(&pki.file("bob", "ca.pem")),
        Some((
            Path::new(&pki.file("bob", "cert.pem")),
            Path::new(&pki.file("bob", "key.pem")),
        )),
    )
    .unwrap();
    let target = Target::Remote(Remote {
        host: "127.0.0.1".into(),
        port,
        tls: Some(tls),
        ca: PathBuf::from(pki.file("bob", "ca.pem")),
        no_cert: None,
    });
    let acquire = |c: &mut Client, name: &str| {
        c.request(Request::LockAcquire {
            name: name.into(),
            mode: clinit::lock::LockMode::Exclusive,
            wait: false,
            timeout_ms: None,
            lease: None,
            what: "test".into(),
        })
    };
    // Two connections of one identity count together.
    let mut c1 = Client::open(&target).unwrap();
    let mut c2 = Client::open(&target).unwrap();
    acquire(&mut c1, "a").unwrap();
    acquire(&mut c2, "b").unwrap();
    match acquire(&mut c2, "c") {
        Err(ClientError::Daemon(e)) => {
            assert_eq!(e.code, ErrorCode::Limit);
            assert!(
                e.message.contains("cert bob holds or waits for 2 locks"),
                "{}",
                e.message
            );
        }
        other => panic!("expected LIMIT: {other:?}"),
    }
    c1.request(Request::LeaseGrant { ttl_ms: 60_000 }).unwrap();
    match c2.request(Request::LeaseGrant { ttl_ms: 60_000 }) {
        Err(ClientError::Daemon(e)) => {
            assert_eq!(e.code, ErrorCode::Limit);
            assert!(
                e.message.contains("cert bob has 1 live leases"),
                "{}",
                e.message
            );
        }
        other => panic!("expected LIMIT: {other:?}"),
    }
    // Another identity is not held to bob's count; nor is a local root.
    ok(&d, &pki, port, "alice", &["lock", "c", "--", "true"]);
    d.ok(&["lock", "d", "--", "true"]);
    // The holder's identity is in the locks view.
    let view: serde_json::Value = serde_json::from_str(&d.ok(&["locks", "--json"])).unwrap();
    let held = view.to_string();
    assert!(held.contains(r#""identity":"bob""#), "{held}");
}

#[test]
fn ipv6_listens_and_connects() {
    let d = Daemon::prepare("");
    let pki = Pki::new(d.dir.path());
    let mut flags = pki.serve("server");
    flags[1] = "[::1]:0".into();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let d = d.launch(&flags);
    let port = logged_port(&d, "[::1]");
    let mut c = remote(&d, &pki, port, "alice", &["status"]);
    c.args(["-H", &format!("[::1]:{port}")]);
    let out = c.output().unwrap();
    assert!(out.status.success(), "{out:?}");
}
