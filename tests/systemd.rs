//! systemd integration with the real binary: sd_notify to a fake
//! `NOTIFY_SOCKET` (READY=1 once restored goals settled, STATUS=,
//! WATCHDOG=1 with `WATCHDOG_USEC`, STOPPING=1), and socket activation of
//! `clinit lockd` with a passed listening socket (`LISTEN_FDS`).

mod common;
use common::{DEADLINE, Daemon, bin, wait_exit};
use std::os::unix::net::{UnixDatagram, UnixListener};
use std::process::{Command, Stdio};
use std::time::Instant;

/// Datagrams received on `sock` until `until` holds for one of them.
fn receive_until(sock: &UnixDatagram, what: &str, until: impl Fn(&str) -> bool) -> Vec<String> {
    sock.set_read_timeout(Some(DEADLINE)).unwrap();
    let end = Instant::now() + DEADLINE;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        assert!(Instant::now() < end, "no {what}; got {got:?}");
        let n = sock
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no {what} ({e}); got {got:?}"));
        let m = String::from_utf8_lossy(&buf[..n]).to_string();
        let done = until(&m);
        got.push(m);
        if done {
            return got;
        }
    }
}

#[test]
fn notify_ready_after_the_restore_then_watchdog_and_stopping() {
    let d = Daemon::prepare("web:a:1:respawn:exec sleep 100\nweb:::startup:1\n");
    let sock_path = d.path("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    let mut child = Command::new(bin())
        .args(["-c", d.cltab().to_str().unwrap(), "daemon"])
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "200000")
        .current_dir(d.dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let got = receive_until(&sock, "READY=1", |m| m.contains("READY=1"));
    let ready = got.last().unwrap();
    assert!(
        ready.contains(&format!("MAINPID={}", child.id())),
        "{ready}"
    );
    assert!(
        ready.contains("STATUS=1 groups, 1 processes running"),
        "{ready}"
    );
    // Ready means restored: the group is already at its level.
    assert_eq!(d.ok(&["status", "web"]).trim(), "web 1 DONE");
    // The watchdog is pinged (at half of 200 ms).
    receive_until(&sock, "WATCHDOG=1", |m| m == "WATCHDOG=1");
    receive_until(&sock, "a second WATCHDOG=1", |m| m == "WATCHDOG=1");
    // Maintenance shows in the status.
    d.ok(&["setpar", "maintenance", "on"]);
    receive_until(&sock, "STATUS with maintenance", |m| {
        m.contains("MAINTENANCE MODE")
    });
    d.ok(&["setpar", "maintenance", "off"]);
    // The entries do not inherit the variables.
    let pid = d.entry("a")["pid"].as_i64().unwrap();
    let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    assert!(!String::from_utf8_lossy(&env).contains("NOTIFY_SOCKET"));
    // The status follows the processes.
    d.ok(&["tell", "web", "0"]);
    receive_until(&sock, "STATUS with no process", |m| {
        m.contains("STATUS=1 groups, 0 processes running")
    });
    d.ok(&["shutdown"]);
    receive_until(&sock, "STOPPING=1", |m| m.contains("STOPPING=1"));
    assert!(wait_exit(&mut child, "daemon did not exit").success());
}

#[test]
fn lockd_serves_a_socket_passed_by_the_service_manager() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("lockd.s");
    let cltab = dir.path().join("cltab");
    std::fs::write(
        &cltab,
        format!(
            ":::socket:{s}\n:::state:{d}/state\n:::log:{d}/log\n:::clstat:{d}/clstat\n",
            s = socket.display(),
            d = dir.path().display()
        ),
    )
    .unwrap();
    let mut child = activated(&socket, &cltab, &["lockd", "--idle", "10"]);
    let client = |args: &[&str]| {
        Command::new(bin())
            .arg("-c")
            .arg(&cltab)
            .args(args)
            .output()
            .unwrap()
    };
    // A lock through the passed socket, without any lockd started on
    // demand (--no-start).
    let out = client(&["lock", "--no-start", "vol", "--", "true"]);
    assert!(out.status.success(), "{out:?}");
    let log = std::fs::read_to_string(dir.path().join("log")).unwrap();
    assert!(log.contains("socket-activated"), "{log}");
    // It leaves the socket in place when it exits (the manager's).
    let out = client(&["shutdown"]);
    assert!(out.status.success(), "{out:?}");
    wait_exit(&mut child, "lockd did not exit");
    assert!(socket.exists(), "the passed socket was removed");
}

/// Start `clinit -c CLTAB ARGS...` as a service manager would for socket
/// activation: `socket` bound here and passed as fd 3 with `LISTEN_FDS=1`
/// and `LISTEN_PID` of the process it starts (the shell's pid, which exec
/// keeps).
fn activated(
    socket: &std::path::Path,
    cltab: &std::path::Path,
    args: &[&str],
) -> std::process::Child {
    let listener = UnixListener::bind(socket).unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&listener);
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        "c=$1; shift; LISTEN_FDS=1 LISTEN_PID=$$ exec \"$0\" -c \"$c\" \"$@\"",
        bin(),
        cltab.to_str().unwrap(),
    ])
    .args(args)
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    // SAFETY: only dup2 and fcntl between fork and exec.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(move || {
            // The listener may be fd 3 already: then dup2 does nothing
            // and close-on-exec must be cleared by hand.
            let r = if fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, 3)
            };
            if r < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().unwrap();
    drop(listener);
    child
}

#[test]
fn the_daemon_serves_a_socket_passed_by_the_service_manager() {
    let d = Daemon::prepare("web:a:1:wait:true\nweb:::startup:1\n");
    let socket = d.path("clinit.s");
    let mut child = activated(&socket, &d.cltab(), &["daemon"]);
    d.wait_status("web", "web 1 DONE");
    assert!(d.log().contains("socket-activated"), "{}", d.log());
    d.ok(&["shutdown"]);
    wait_exit(&mut child, "daemon did not exit");
    assert!(socket.exists(), "the passed socket was removed");
}
