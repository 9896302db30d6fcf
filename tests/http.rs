//! The HTTP listener with the real binary: `/metrics` scraped and parsed
//! with a Prometheus text-format parser, the status page in a real
//! headless Chromium (it loads, shows the groups, and updates when a group
//! changes level, without reloading), server-sent events, and HTTPS with
//! client certificates off loopback.

mod common;
use common::{DEADLINE, Daemon, bin};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

/// A daemon with an HTTP listener on a free loopback port; its port.
fn start(entries: &str) -> (Daemon, u16) {
    let d = Daemon::prepare(&format!(":::http_listen:127.0.0.1:0\n{entries}")).launch(&[]);
    let port = http_port(&d);
    (d, port)
}

fn http_port(d: &Daemon) -> u16 {
    d.logged_port("HTTP listener on http://")
}

/// GET `path` over plain HTTP/1.1: (status, body).
fn get(port: u16, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    split_response(&raw)
}

fn split_response(raw: &[u8]) -> (u16, String) {
    let text = String::from_utf8_lossy(raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    // A chunked body: drop the chunk sizes.
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut rest = body;
        while let Some((size, after)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 || after.len() < n {
                break;
            }
            out.push_str(&after[..n]);
            rest = after[n..].trim_start_matches("\r\n");
        }
        out
    } else {
        body.to_string()
    };
    (status, body)
}

fn scrape(port: u16) -> prometheus_parse::Scrape {
    let (status, body) = get(port, "/metrics");
    assert_eq!(status, 200, "{body}");
    prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).unwrap()
}

fn value(s: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    s.samples
        .iter()
        .find(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match x.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
}

#[test]
fn metrics_parse_and_say_what_runs() {
    let (d, port) = start("web:a:1:respawn:exec sleep 100\nweb:b:1:wait:exit 3\nweb:::startup:1\n");
    d.wait_status("web", "web 1 DONE");
    d.ok(&["record", "add", "net", "k1", "v"]);
    d.ok(&["record", "add", "net", "k2", "vv"]);
    d.ok(&["lock", "vol", "--", "true"]);
    let s = scrape(port);
    type Row<'a> = (&'a str, &'a [(&'a str, &'a str)], f64);
    let rows: &[Row] = &[
        ("clinit_entry_up", &[("group", "web"), ("tag", "a")], 1.0),
        ("clinit_entry_up", &[("group", "web"), ("tag", "b")], 0.0),
        ("clinit_entry_starts_total", &[("tag", "a")], 1.0),
        ("clinit_entry_last_exit_code", &[("tag", "b")], 3.0),
        ("clinit_entry_gave_up", &[("tag", "a")], 0.0),
        (
            "clinit_group_level",
            &[("group", "web"), ("level", "1")],
            1.0,
        ),
        (
            "clinit_group_state",
            &[("group", "web"), ("state", "DONE")],
            1.0,
        ),
        ("clinit_records", &[("container", "net")], 2.0),
        ("clinit_record_bytes", &[("container", "net")], 3.0),
        ("clinit_locks_held", &[], 0.0),
        ("clinit_lock_holders", &[], 0.0),
        ("clinit_lock_waiters", &[], 0.0),
        ("clinit_lock_grants_total", &[], 1.0),
        ("clinit_entry_restarts_total", &[("tag", "a")], 0.0),
        ("clinit_entry_throttled", &[("tag", "a")], 0.0),
    ];
    for (name, labels, want) in rows {
        assert_eq!(value(&s, name, labels), Some(*want), "{name}{labels:?}");
    }
    // A hand-over: a waiter gets the lock when its holder lets go.
    let fifo = d.path("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let fifo_arg = format!("read x < {}", fifo.display());
    let mut holder = d
        .client(&["lock", "vol2", "--", "sh", "-c", &fifo_arg])
        .spawn()
        .unwrap();
    let count = |what: &str| -> usize {
        let v: serde_json::Value =
            serde_json::from_str(&d.ok(&["locks", "vol2", "--json"])).unwrap();
        v.as_array()
            .and_then(|a| a.first())
            .and_then(|c| c[what].as_array())
            .map_or(0, Vec::len)
    };
    d.wait_until("vol2 held", || count("holders") == 1);
    let mut waiter = d.client(&["lock", "vol2", "--", "true"]).spawn().unwrap();
    d.wait_until("a waiter on vol2", || count("waiters") == 1);
    std::fs::write(&fifo, "go\n").unwrap();
    assert!(common::wait_exit(&mut holder, "holder").success());
    assert!(common::wait_exit(&mut waiter, "waiter").success());
    let s = scrape(port);
    assert_eq!(
        value(&s, "clinit_lock_handover_seconds_count", &[]),
        Some(1.0),
        "one hand-over"
    );
    assert!(value(&s, "clinit_lock_wait_seconds_count", &[]).unwrap() >= 1.0);
    // Requests by kind, with a latency histogram.
    assert!(
        s.samples
            .iter()
            .any(|x| x.metric == "clinit_request_seconds"
                && x.labels.get("kind") == Some("locks::call")),
        "no locks::call requests counted"
    );
    assert!(value(&s, "clinit_process_resident_memory_bytes", &[]).unwrap() > 0.0);
    assert!(value(&s, "clinit_process_open_fds", &[]).unwrap() > 0.0);
    assert!(value(&s, "clinit_event_loop_lag_seconds", &[]).is_some());
    // Every sample has its # TYPE.
    for x in &s.samples {
        let base = x
            .metric
            .trim_end_matches("_bucket")
            .trim_end_matches("_sum")
            .trim_end_matches("_count");
        assert!(
            s.docs.contains_key(base) || s.docs.contains_key(&x.metric),
            "{} has no HELP",
            x.metric
        );
    }
    // Read-only, and unknown pages are named.
    assert_eq!(get(port, "/nope").0, 404);
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    assert_eq!(split_response(&raw).0, 405);
}

#[test]
fn status_json_and_server_sent_events() {
    let (d, port) = start("web:a:1,2:respawn:exec sleep 100\n");
    let (status, body) = get(port, "/status.json");
    assert_eq!(status, 200);
    let groups: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(groups[0]["group"], "web");
    // The event stream: the daemon's start is among the recent events,
    // and a tell shows up as it happens.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET /events HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    let end = Instant::now() + DEADLINE;
    let mut told = false;
    while !seen.contains("\"level\":\"2\"") {
        assert!(Instant::now() < end, "no level 2 event in:\n{seen}");
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "the stream ended:\n{seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        if !told && seen.contains("daemon_started") {
            assert!(seen.contains("text/event-stream"), "{seen}");
            d.ok(&["web", "2"]);
            told = true;
        }
    }
    assert!(seen.contains("\nid: "), "{seen}");
}

#[test]
fn https_with_client_certificates_off_loopback() {
    let d = Daemon::prepare("web:a:1:wait:true\n");
    let dir = d.dir.path().join("pki");
    let p = |s: &str| dir.join(s).to_str().unwrap().to_string();
    let run = |args: &[&str]| {
        let out = Command::new(bin()).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
    };
    run(&["ca", "init", &p("ca")]);
    run(&[
        "cert",
        "issue",
        "--ca",
        &p("ca"),
        "node1",
        "--server",
        "127.0.0.1",
        "--out",
        &p("server"),
    ]);
    run(&[
        "cert",
        "issue",
        "--ca",
        &p("ca"),
        "prometheus",
        "--out",
        &p("prom"),
    ]);
    let text = std::fs::read_to_string(d.cltab()).unwrap();
    std::fs::write(
        d.cltab(),
        format!(
            ":::http_listen:0.0.0.0:0\n:::tls_ca:{}\n:::tls_cert:{}\n:::tls_key:{}\n{text}",
            p("server/ca.pem"),
            p("server/cert.pem"),
            p("server/key.pem")
        ),
    )
    .unwrap();
    let d = d.launch(&[]);
    let port = d.logged_port("HTTP listener on https://");
    let fetch = |who: Option<&str>| -> Result<(u16, String), String> {
        let cert = who.map(|w| (p(&format!("{w}/cert.pem")), p(&format!("{w}/key.pem"))));
        let cfg = clinit::tls::client_config(
            std::path::Path::new(&p("server/ca.pem")),
            cert.as_ref()
                .map(|(c, k)| (std::path::Path::new(c), std::path::Path::new(k))),
        )
        .unwrap();
        let tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        tcp.set_read_timeout(Some(DEADLINE)).unwrap();
        let conn =
            rustls::ClientConnection::new(cfg, clinit::tls::server_name("127.0.0.1").unwrap())
                .unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        write!(
            tls,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .map_err(|e| e.to_string())?;
        let mut raw = Vec::new();
        match tls.read_to_end(&mut raw) {
            Ok(_) => Ok(split_response(&raw)),
            Err(e) if !raw.is_empty() => Err(format!("{e} after {} bytes", raw.len())),
            Err(e) => Err(e.to_string()),
        }
    };
    let (status, body) = fetch(Some("prom")).unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("clinit_entry_up"), "{body}");
    // Without a client certificate: no page.
    if let Ok((status, body)) = fetch(None) {
        assert_ne!(status, 200, "{body}");
    }
}

/// Chromium driven over the DevTools protocol on a pipe (fds 3 and 4 of
/// the browser): no WebSocket needed.
struct Browser {
    child: Child,
    to: std::fs::File,
    from: std::io::BufReader<std::fs::File>,
    next: u64,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn start() -> Browser {
        let exe = ["chromium", "chromium-browser", "google-chrome"]
            .into_iter()
            .find(|c| {
                Command::new("sh")
                    .args(["-c", &format!("command -v {c}")])
                    .output()
                    .is_ok_and(|o| o.status.success())
            })
            .expect("chromium is installed by scripts/test.sh");
        let cloexec = nix::fcntl::OFlag::O_CLOEXEC;
        let (cmd_r, cmd_w) = nix::unistd::pipe2(cloexec).unwrap();
        let (res_r, res_w) = nix::unistd::pipe2(cloexec).unwrap();
        let profile = tempfile::tempdir().unwrap();
        let (a, b) = (cmd_r.as_raw_fd(), res_w.as_raw_fd());
        let mut cmd = Command::new(exe);
        cmd.args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--remote-debugging-pipe",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("about:blank")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        // SAFETY: only dup2/fcntl between fork and exec.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(move || {
                // Out of the way first, so that 3 and 4 can be set whatever
                // numbers the pipes got.
                let a2 = libc::fcntl(a, libc::F_DUPFD, 100);
                let b2 = libc::fcntl(b, libc::F_DUPFD, 100);
                if a2 < 0 || b2 < 0 || libc::dup2(a2, 3) < 0 || libc::dup2(b2, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap();
        drop(cmd_r);
        drop(res_w);
        let to = std::fs::File::from(cmd_w);
        let from = std::io::BufReader::new(std::fs::File::from(res_r));
        Browser {
            child,
            to,
            from,
            next: 1,
            _profile: profile,
        }
    }

    /// Send a DevTools command; its result.
    fn call(
        &mut self,
        session: Option<&str>,
        method: &str,
        params: serde_json::Value,
    ) -> serde_json::Value {
        let id = self.next;
        self.next += 1;
        let mut msg = serde_json::json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = s.into();
        }
        let mut bytes = serde_json::to_vec(&msg).unwrap();
        bytes.push(0);
        self.to.write_all(&bytes).unwrap();
        loop {
            let mut raw = Vec::new();
            let n = std::io::BufRead::read_until(&mut self.from, 0, &mut raw).unwrap();
            assert!(n > 0, "chromium closed its DevTools pipe");
            raw.pop();
            let v: serde_json::Value = serde_json::from_slice(&raw).unwrap();
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    fn eval(&mut self, session: &str, js: &str) -> serde_json::Value {
        let r = self.call(
            Some(session),
            "Runtime.evaluate",
            serde_json::json!({"expression": js, "returnByValue": true, "awaitPromise": true}),
        );
        r["result"]["value"].clone()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_status_page_shows_the_groups_and_follows_a_level_switch_live() {
    let (d, port) = start("web:a:1,2:respawn:exec sleep 100\nweb:::startup:1\ndb:c:1:wait:true\n");
    d.wait_status("web", "web 1 DONE");
    let mut b = Browser::start();
    let target = b.call(
        None,
        "Target.createTarget",
        serde_json::json!({"url": format!("http://127.0.0.1:{port}/")}),
    )["targetId"]
        .as_str()
        .unwrap()
        .to_string();
    let session = b.call(
        None,
        "Target.attachToTarget",
        serde_json::json!({"targetId": target, "flatten": true}),
    )["sessionId"]
        .as_str()
        .unwrap()
        .to_string();
    let level = r#"(document.querySelector('[data-group="web"] .level') || {}).textContent || ''"#;
    let end = Instant::now() + DEADLINE;
    while b.eval(&session, level) != "1" {
        if Instant::now() >= end {
            let seen = b.eval(
                &session,
                "location.href + ' ' + document.readyState + ' ' + (document.body ? document.body.innerText.slice(0, 400) : '')",
            );
            panic!("the page never showed web at level 1: {seen}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // Both groups, and the entry of web.
    assert_eq!(
        b.eval(&session, "document.querySelectorAll('tr.group').length"),
        2
    );
    assert_eq!(
        b.eval(&session, "!!document.querySelector('[data-entry=\"a\"]')"),
        true
    );
    // A mark that a reload would wipe out.
    b.eval(&session, "window.__kept = 'yes'");
    b.eval(
        &session,
        "new Promise(r => { const t = setInterval(() => { if (document.getElementById('conn').className === 'live') { clearInterval(t); r(true); } }, 20); })",
    );
    d.ok(&["web", "2"]);
    let end = Instant::now() + DEADLINE;
    while b.eval(&session, level) != "2" {
        assert!(
            Instant::now() < end,
            "the page did not follow web to level 2"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(
        b.eval(&session, "window.__kept"),
        "yes",
        "the page reloaded"
    );
    let events = b.eval(&session, "document.getElementById('events').textContent");
    assert!(events.as_str().unwrap().contains("group_state"), "{events}");
}
