//! systemd integration without libsystemd: `sd_notify` (a datagram to
//! `$NOTIFY_SOCKET`: `READY=1`, `STATUS=`, `STOPPING=1`, `WATCHDOG=1`)
//! and socket activation (`$LISTEN_FDS`/`$LISTEN_PID`: the listening
//! socket is descriptor 3).
//!
//! Both protocols are a few lines of a stable, documented interface
//! (sd_notify(3), sd_listen_fds(3)); a crate would add nothing but a
//! dependency.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// The service manager's notification socket, if the daemon was started
/// by one (`Type=notify`).
pub struct Notify {
    sock: UnixDatagram,
    addr: std::os::unix::net::SocketAddr,
    /// `WatchdogSec=`: ping at half of it.
    pub watchdog: Option<Duration>,
}

impl Notify {
    /// From the environment; the variables are removed, so that the
    /// entries' processes do not inherit them.
    pub fn from_env() -> Option<Notify> {
        let path = std::env::var_os("NOTIFY_SOCKET")?;
        let watchdog = watchdog_from_env();
        // SAFETY: called at start-up, before any other thread reads the
        // environment.
        unsafe {
            std::env::remove_var("NOTIFY_SOCKET");
            std::env::remove_var("WATCHDOG_USEC");
            std::env::remove_var("WATCHDOG_PID");
        }
        let bytes = std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str());
        let addr = match bytes.strip_prefix(b"@") {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                std::os::unix::net::SocketAddr::from_abstract_name(name).ok()?
            }
            None => std::os::unix::net::SocketAddr::from_pathname(&path).ok()?,
        };
        let sock = UnixDatagram::unbound().ok()?;
        Some(Notify {
            sock,
            addr,
            watchdog,
        })
    }

    /// Send one notification (several `KEY=VALUE` lines); a failure is
    /// logged, never fatal.
    pub fn send(&self, msg: &str) {
        if let Err(e) = self.sock.send_to_addr(msg.as_bytes(), &self.addr) {
            tracing::warn!("cannot notify the service manager ({msg:?}): {e}");
        }
    }

    /// How often the event loop sends `WATCHDOG=1`.
    pub fn ping_every(&self) -> Option<Duration> {
        self.watchdog.map(|w| w / 2)
    }
}

fn watchdog_from_env() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    // WATCHDOG_PID, when set, must be ours.
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// The listening socket systemd passed (`LISTEN_FDS=1`, `LISTEN_PID` ours),
/// taken over; `None` when not socket-activated.
pub fn activated_socket() -> Option<std::os::unix::net::UnixListener> {
    let fds: u32 = std::env::var("LISTEN_FDS").ok()?.parse().ok()?;
    let pid: u32 = std::env::var("LISTEN_PID").ok()?.parse().ok()?;
    // SAFETY: start-up, one thread.
    unsafe {
        std::env::remove_var("LISTEN_FDS");
        std::env::remove_var("LISTEN_PID");
        std::env::remove_var("LISTEN_FDNAMES");
    }
    if pid != std::process::id() || fds < 1 {
        return None;
    }
    if fds > 1 {
        tracing::warn!("{fds} sockets passed by the service manager: using the first (fd 3)");
    }
    // Descriptor 3 must be a listening UNIX stream socket.
    let fd = 3;
    let ok = nix::sys::socket::getsockopt(
        // SAFETY: fd 3 was passed to us; borrowed only for the check.
        &unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) },
        nix::sys::socket::sockopt::AcceptConn,
    )
    .unwrap_or(false);
    if !ok {
        tracing::warn!("LISTEN_FDS is set but descriptor 3 is not a listening socket; ignored");
        return None;
    }
    // SAFETY: the service manager passed fd 3 for us to own.
    let l =
        unsafe { <std::os::unix::net::UnixListener as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // Close-on-exec: the entries must not inherit it.
    let _ = nix::fcntl::fcntl(
        &l,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    );
    Some(l)
}
