//! Test harness: runs the real `clinit` binary in a temp dir with its own
//! socket, and waits on state queries with deadlines (never fixed sleeps).

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const DEADLINE: Duration = Duration::from_secs(20);

pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub child: Option<Child>,
    /// The daemon's binary when not the build's (a copy, to be replaced).
    pub exe: Option<PathBuf>,
    /// Signals the daemon is started with ignored (as from a background
    /// job, or under nohup).
    pub ignore: Vec<i32>,
}

/// Start `cmd` with `sigs` ignored.
pub fn ignoring(cmd: &mut Command, sigs: &[i32]) {
    use std::os::unix::process::CommandExt;
    let sigs = sigs.to_vec();
    // SAFETY: in the forked child before exec: only sigaction, which is
    // async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            for &sig in &sigs {
                let mut ign: libc::sigaction = std::mem::zeroed();
                ign.sa_sigaction = libc::SIG_IGN;
                libc::sigaction(sig, &ign, std::ptr::null_mut());
            }
            Ok(())
        });
    }
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_clinit")
}

impl Daemon {
    /// Write a cltab (socket, clstat and log settings are prepended) and
    /// start the daemon; returns once it answers on its socket.
    pub fn start(entries: &str) -> Daemon {
        Daemon::prepare(entries).launch(&[])
    }

    pub fn prepare(entries: &str) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        let text = format!(
            ":::socket:{p}/clinit.s\n:::clstat:{p}/clstat\n:::log:{p}/log\n:::state:{p}/state\n{entries}",
            p = p.display()
        );
        std::fs::write(p.join("cltab"), text).unwrap();
        Daemon {
            dir,
            child: None,
            exe: None,
            ignore: Vec::new(),
        }
    }

    pub fn spawn(self) -> Daemon {
        self.spawn_with(&[])
    }

    /// Start the daemon with extra flags (`--no-restore`, `--noauth`).
    pub fn spawn_with(mut self, extra: &[&str]) -> Daemon {
        let exe = self.exe.clone().unwrap_or_else(|| bin().into());
        let mut cmd = Command::new(exe);
        ignoring(&mut cmd, &self.ignore);
        let child = cmd
            .args(["-c", self.cltab().to_str().unwrap(), "-d"])
            .args(extra)
            // Children inherit the daemon's directory: keep their files here.
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            // A file, not a pipe nobody reads: a daemon that logs much
            // to its stderr must not block on a full pipe.
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.dir.path().join("daemon.stderr"))
                    .unwrap(),
            )
            .spawn()
            .unwrap();
        self.child = Some(child);
        self
    }

    /// Start the daemon with extra flags, for the first time or again in
    /// the same directory (after stop or kill9), and wait until it answers.
    pub fn launch(self, extra: &[&str]) -> Daemon {
        let d = self.spawn_with(extra);
        d.wait_until("daemon answers", || d.run(&["status"]).status.success());
        d
    }

    /// Let another uid reach the socket and read the cltab.
    pub fn open_to_others(&self) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(self.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(self.cltab(), std::fs::Permissions::from_mode(0o644)).unwrap();
    }

    /// SIGKILL the daemon (its children live on) and reap it.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Run the client as another user, from a copy of the binary in the
    /// test's directory (the build tree may not be reachable for that user).
    pub fn run_as(&self, uid: u32, gid: u32, args: &[&str]) -> Output {
        self.as_user(uid, gid, args, |c| c.output())
    }

    /// Start the client as another user (as `run_as`), its output
    /// discarded; the caller waits for it.
    pub fn spawn_as(&self, uid: u32, gid: u32, args: &[&str]) -> Child {
        self.as_user(uid, gid, args, |c| {
            c.stdout(Stdio::null()).stderr(Stdio::null()).spawn()
        })
    }

    fn as_user<T>(
        &self,
        uid: u32,
        gid: u32,
        args: &[&str],
        start: impl Fn(&mut Command) -> std::io::Result<T>,
    ) -> T {
        use std::os::unix::process::CommandExt;
        let copy = self.path("clinit-client");
        if !copy.exists() {
            std::fs::copy(bin(), &copy).unwrap();
        }
        // Another test thread that forks while the copy is open for writing
        // holds it open until its exec: running the copy then fails with
        // ETXTBSY for a moment.
        let end = Instant::now() + DEADLINE;
        loop {
            let mut c = Command::new(&copy);
            c.current_dir("/")
                .arg("-c")
                .arg(self.cltab())
                .args(args)
                .uid(uid)
                .gid(gid)
                .stdin(Stdio::null());
            match start(&mut c) {
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && Instant::now() < end => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                other => return other.unwrap(),
            }
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn cltab(&self) -> PathBuf {
        self.path("cltab")
    }

    /// The client, `clinit -c CLTAB ARGS`, run in the test's directory;
    /// stdio is left to the caller.
    pub fn client(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.current_dir(self.dir.path())
            .arg("-c")
            .arg(self.cltab())
            .args(args);
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.client(args).stdin(Stdio::null()).output().unwrap()
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "clinit {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn status_json(&self) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["status", "--json"])).unwrap()
    }

    /// The entry's status, or None while the daemon has no such entry
    /// (or does not answer).
    pub fn entry_opt(&self, tag: &str) -> Option<serde_json::Value> {
        let out = self.run(&["status", "--json"]);
        let all: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        all.as_array()?
            .iter()
            .flat_map(|g| g["entries"].as_array().into_iter().flatten())
            .find(|e| e["tag"] == tag)
            .cloned()
    }

    pub fn entry(&self, tag: &str) -> serde_json::Value {
        for g in self.status_json().as_array().unwrap() {
            for e in g["entries"].as_array().unwrap() {
                if e["tag"] == tag {
                    return e.clone();
                }
            }
        }
        panic!("no entry {tag}");
    }

    pub fn wait_until(&self, what: &str, cond: impl FnMut() -> bool) {
        self.wait_until_for(what, DEADLINE, cond)
    }

    pub fn wait_until_for(&self, what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
        let end = Instant::now() + limit;
        while !cond() {
            assert!(
                Instant::now() < end,
                "timed out waiting for: {what}\nlog:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Wait until `clinit status GROUP` prints exactly `line`.
    pub fn wait_status(&self, group: &str, line: &str) {
        self.wait_until(&format!("status '{line}'"), || {
            String::from_utf8_lossy(&self.run(&["status", group]).stdout).trim() == line
        });
    }

    /// The port of the first log line with `after` followed by `HOST:PORT`
    /// (or `:PORT`), once the daemon has written it.
    pub fn logged_port(&self, after: &str) -> u16 {
        let mut port = 0;
        self.wait_until(&format!("'{after}' in the log"), || {
            port = self
                .log()
                .lines()
                .find_map(|l| {
                    l.split_once(after)?
                        .1
                        .split_whitespace()
                        .next()?
                        .rsplit(':')
                        .next()?
                        .parse()
                        .ok()
                })
                .unwrap_or(0);
            port != 0
        });
        port
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("log")).unwrap_or_default()
    }

    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap_or_default()
    }

    /// Shut down and wait for the daemon to exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let _ = self.run(&["shutdown"]);
        let mut child = self.child.take().unwrap();
        wait_exit(&mut child, "daemon did not exit")
    }
}

impl Drop for Daemon {
    /// Shut the daemon down gracefully (SIGTERM), so that its children do
    /// not outlive the test; SIGKILL only if it hangs.
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = try_wait_for(&mut c, DEADLINE);
            let _ = c.kill();
            let _ = c.wait();
        }
        // A daemon that had to be killed leaves its cgroup directories for
        // the next daemon on its socket; a test's socket has none: remove
        // them (and whatever is still in them).
        if let Some(root) = self.cgroup_root().filter(|r| r.exists()) {
            for sub in std::fs::read_dir(&root).into_iter().flatten().flatten() {
                if sub.path().is_dir() {
                    let _ = std::fs::write(sub.path().join("cgroup.kill"), "1");
                    let end = Instant::now() + DEADLINE;
                    while std::fs::remove_dir(sub.path()).is_err() && Instant::now() < end {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
            }
            let _ = std::fs::remove_dir(&root);
        }
    }
}

/// The child's exit status once it has exited, or None after `limit`.
pub fn try_wait_for(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let end = Instant::now() + limit;
    loop {
        if let Some(st) = child.try_wait().ok().flatten() {
            return Some(st);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Wait (with the test deadline) for a child to exit.
pub fn wait_exit(child: &mut Child, what: &str) -> std::process::ExitStatus {
    try_wait_for(child, DEADLINE).unwrap_or_else(|| panic!("{what}"))
}

/// Live processes (zombies excluded) whose /proc/PID/`file`, split at NUL
/// bytes, has an item equal to each of `items`, sorted by pid.
pub fn processes_with(file: &str, items: &[&str]) -> Vec<i64> {
    let mut out = Vec::new();
    for ent in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = ent.file_name().to_str().and_then(|s| s.parse::<i64>().ok()) else {
            continue;
        };
        let Ok(data) = std::fs::read(format!("/proc/{pid}/{file}")) else {
            continue;
        };
        let fields: Vec<&[u8]> = data.split(|b| *b == 0).collect();
        if items.iter().all(|i| fields.contains(&i.as_bytes())) && alive(pid) {
            out.push(pid);
        }
    }
    out.sort();
    out
}

/// Pids of live processes whose environment has CLINIT_GROUP=`group`.
pub fn processes_of_group(group: &str) -> Vec<i64> {
    processes_with("environ", &[&format!("CLINIT_GROUP={group}")])
}

pub fn alive(pid: i64) -> bool {
    // Zombies count as gone.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit_once(')')
                .map(|(_, r)| r.trim_start().starts_with('Z'))
                .unwrap_or(true)
        })
        .unwrap_or(false)
}

/// Whether this process could make a cgroup v2 directory beside its own,
/// as the daemon's `cgroup: auto` tries to (probed by making and removing
/// one), so that a test can tell what the daemon must have done.
pub fn cgroup_v2_writable() -> bool {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let Some(mount) = mountinfo.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        (right.split_whitespace().next()? == "cgroup2").then(|| left.split_whitespace().nth(4))?
    }) else {
        return false;
    };
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let Some(own) = own.lines().find_map(|l| l.strip_prefix("0::")) else {
        return false;
    };
    let probe = PathBuf::from(mount)
        .join(own.trim_start_matches('/'))
        .join(format!("clinit-test-probe.{}", std::process::id()));
    let made = std::fs::create_dir(&probe).is_ok();
    let writable = made
        && std::fs::OpenOptions::new()
            .write(true)
            .open(probe.join("cgroup.procs"))
            .is_ok();
    if made {
        let _ = std::fs::remove_dir(&probe);
    }
    writable
}

/// The path of the `0::` line of /proc/PID/cgroup (the process's cgroup
/// v2 directory, relative to the hierarchy's mount).
pub fn cgroup_of(pid: i64) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_string)
}

impl Daemon {
    /// The daemon's cgroup directory, as its log says at start-up; `None`
    /// if it keeps no cgroups.
    pub fn cgroup_root(&self) -> Option<PathBuf> {
        const SAYS: &str = "each entry's processes are kept in a cgroup under ";
        let log = self.log();
        let at = log.find(SAYS)? + SAYS.len();
        Some(PathBuf::from(log[at..].lines().next()?.trim()))
    }
}

/// A free TCP port on loopback for a server a test starts (etcd).
///
/// Not one the kernel hands out for `:0`: a port taken that way and
/// released is in the ephemeral range, where any outgoing connection
/// (a daemon's to etcd, a proxy's) may take it as its source port before
/// the server binds it; that was a flaky "address already in use". These
/// come from below that range (20000-32767), in turn from a start that
/// depends on the process, and each is checked free when given.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_768;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        (std::process::id().wrapping_mul(7919)) % SPAN,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    loop {
        let port = (LOW + NEXT.fetch_add(1, Ordering::SeqCst) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A real etcd (one member, or several for the failure tests) on free
/// loopback ports, its data in a temp dir; stopped when dropped.
/// `scripts/test.sh` installs it (Debian's etcd-server) when missing.
pub struct Etcd {
    pub dir: tempfile::TempDir,
    /// Every member's client URL, comma-separated (the `etcd` setting).
    pub url: String,
    members: Vec<Member>,
}

struct Member {
    name: String,
    client: u16,
    peer: u16,
    child: Option<Child>,
}

impl Etcd {
    pub fn start() -> Etcd {
        Etcd::start_members(1)
    }

    pub fn start_members(n: usize) -> Etcd {
        let members: Vec<Member> = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client: free_port(),
                peer: free_port(),
                child: None,
            })
            .collect();
        let url = members
            .iter()
            .map(|m| format!("http://127.0.0.1:{}", m.client))
            .collect::<Vec<_>>()
            .join(",");
        let mut e = Etcd {
            dir: tempfile::tempdir().unwrap(),
            url,
            members,
        };
        match e.try_launch() {
            Ok(()) => e,
            // A port was taken between the check and etcd's bind (by
            // something outside this test): once more, on other ports.
            Err(log) if log.contains("address already in use") => {
                drop(e);
                Etcd::start_members(n)
            }
            Err(log) => panic!("{log}"),
        }
    }

    /// Start every member that is not running (again: same ports, same
    /// data), and wait until each running one is healthy.
    pub fn launch(&mut self) {
        if let Err(e) = self.try_launch() {
            panic!("{e}");
        }
    }

    fn try_launch(&mut self) -> Result<(), String> {
        let initial = self
            .members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",");
        for m in self.members.iter_mut().filter(|m| m.child.is_none()) {
            let client = format!("http://127.0.0.1:{}", m.client);
            let peer = format!("http://127.0.0.1:{}", m.peer);
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.path().join(format!("{}.log", m.name)))
                .unwrap();
            let child = Command::new("etcd")
                .args(["--name", &m.name, "--data-dir"])
                .arg(self.dir.path().join(format!("data-{}", m.name)))
                .args(["--listen-client-urls", &client])
                .args(["--advertise-client-urls", &client])
                .args(["--listen-peer-urls", &peer])
                .args(["--initial-advertise-peer-urls", &peer])
                .args(["--initial-cluster", &initial])
                .args(["--initial-cluster-token", "clinit-test"])
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("etcd (Debian's etcd-server; scripts/test.sh installs it)");
            m.child = Some(child);
        }
        let end = Instant::now() + DEADLINE;
        let dir = self.dir.path().to_path_buf();
        for m in self.members.iter_mut().filter(|m| m.child.is_some()) {
            while !healthy(m.client) {
                let log = || {
                    std::fs::read_to_string(dir.join(format!("{}.log", m.name))).unwrap_or_default()
                };
                let exited = m
                    .child
                    .as_mut()
                    .is_some_and(|c| c.try_wait().ok().flatten().is_some());
                if exited || Instant::now() >= end {
                    return Err(format!(
                        "etcd member {} did not become healthy:\n{}",
                        m.name,
                        log()
                    ));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        // Healthy members, and a leader that commits.
        while self.members.iter().filter(|m| m.child.is_some()).count() * 2 > self.members.len()
            && !self.writable()
        {
            if Instant::now() >= end {
                return Err("etcd does not commit writes".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// A write through every running member goes through (a quorum has a
    /// leader, and each member reaches it): `etcdctl put`.
    fn writable(&self) -> bool {
        self.members.iter().filter(|m| m.child.is_some()).all(|m| {
            Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .args(["--endpoints", &format!("http://127.0.0.1:{}", m.client)])
                .args(["--command-timeout", "2s", "put", "/probe", "x"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
    }

    /// Remove every member's data (an etcd made anew at the next launch).
    pub fn wipe(&self) {
        for m in &self.members {
            let _ = std::fs::remove_dir_all(self.dir.path().join(format!("data-{}", m.name)));
        }
    }

    /// SIGKILL member `i`.
    pub fn kill_member(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn stop(&mut self) {
        for m in &mut self.members {
            if let Some(mut c) = m.child.take() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(c.id() as i32),
                    nix::sys::signal::Signal::SIGTERM,
                );
                if try_wait_for(&mut c, DEADLINE).is_none() {
                    let _ = c.kill();
                    let _ = c.wait();
                }
            }
        }
    }
}

/// GET /health of the member on `port` answers {"health":"true"}.
fn healthy(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /health HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body.contains("\"health\":\"true\"")
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Linger 0: closing the socket resets the connection (RST).
fn reset(s: &std::net::TcpStream) {
    let _ = nix::sys::socket::setsockopt(
        s,
        nix::sys::socket::sockopt::Linger,
        &libc::linger {
            l_onoff: 1,
            l_linger: 0,
        },
    );
}

/// A TCP proxy on a free loopback port to `upstream` (a `host:port`), that
/// a test can blackhole: from then on nothing is forwarded either way, and
/// nothing read (bytes wait in the sockets' buffers, as TCP keeps
/// retransmitting through a partition; connections stay open, nothing is
/// refused) until it is healed. It never drops bytes: no network cuts holes
/// into a live TCP stream. Or cut: every connection is reset and new ones
/// are refused (closed at once) until healed. Threads end with the test
/// process.
pub struct Proxy {
    pub port: u16,
    blackholed: std::sync::Arc<std::sync::atomic::AtomicBool>,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    live: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl Proxy {
    pub fn start(upstream: &str) -> Proxy {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::{Arc, Mutex};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let blackholed = Arc::new(AtomicBool::new(false));
        let cut = Arc::new(AtomicBool::new(false));
        let live: Arc<Mutex<Vec<std::net::TcpStream>>> = Default::default();
        let up = upstream.to_string();
        let (bh, cut2, live2) = (blackholed.clone(), cut.clone(), live.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(client) = conn else { return };
                if cut2.load(Ordering::SeqCst) {
                    reset(&client);
                    drop(client);
                    continue;
                }
                let bh = bh.clone();
                let up = up.clone();
                let live = live2.clone();
                std::thread::spawn(move || {
                    let pipe = |mut from: std::net::TcpStream,
                                mut to: Option<std::net::TcpStream>,
                                bh: Arc<AtomicBool>| {
                        use std::io::{Read, Write};
                        let mut buf = [0u8; 16384];
                        let pause = || {
                            while bh.load(Ordering::SeqCst) {
                                std::thread::sleep(Duration::from_millis(5));
                            }
                        };
                        loop {
                            pause();
                            let n = match from.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            pause();
                            if let Some(t) = &mut to
                                && t.write_all(&buf[..n]).is_err()
                            {
                                break;
                            }
                        }
                        if let Some(t) = to {
                            let _ = t.shutdown(std::net::Shutdown::Write);
                        }
                    };
                    let Ok(server) = std::net::TcpStream::connect(&up) else {
                        return;
                    };
                    {
                        let mut l = live.lock().unwrap();
                        l.push(client.try_clone().unwrap());
                        l.push(server.try_clone().unwrap());
                    }
                    let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                    let bh2 = bh.clone();
                    std::thread::spawn(move || pipe(s2, Some(c2), bh2));
                    pipe(client, Some(server), bh);
                });
            }
        });
        Proxy {
            port,
            blackholed,
            cut,
            live,
        }
    }

    /// Forward nothing from now on (until healed).
    pub fn blackhole(&self) {
        self.blackholed
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Reset every connection, and refuse new ones until healed.
    pub fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        for s in self.live.lock().unwrap().drain(..) {
            reset(&s);
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Forward again.
    pub fn heal(&self) {
        self.blackholed
            .store(false, std::sync::atomic::Ordering::SeqCst);
        self.cut.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}
