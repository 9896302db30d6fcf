//! The UNIX socket transport: peers are local users (SO_PEERCRED).
//!
//! The socket is bound under umask 0177 and then given `socket_mode` and
//! `socket_group`, so it is never more open than asked.

use super::{Incoming, Listener, Stream};
use crate::daemon::policy::{LocalUser, Peer};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use tokio::net::{UnixListener, UnixStream};

pub struct UnixTransport {
    listener: UnixListener,
    path: PathBuf,
}

impl UnixTransport {
    /// Bind `path` (a stale file must be gone), then set its mode and
    /// group. Call within the runtime. The error says which step failed.
    pub fn bind(
        path: &Path,
        mode: u32,
        group: Option<&str>,
    ) -> Result<UnixTransport, (&'static str, std::io::Error)> {
        let old_mask = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
        let listener = UnixListener::bind(path);
        nix::sys::stat::umask(old_mask);
        let listener = listener.map_err(|e| ("cannot bind socket", e))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| ("cannot set mode of socket", e))?;
        if let Some(group) = group {
            let gid = resolve_group(group).map_err(|e| ("cannot use socket_group for", e))?;
            nix::unistd::chown(path, None, Some(gid))
                .map_err(|e| std::io::Error::from_raw_os_error(e as i32))
                .map_err(|e| ("cannot set the group of socket", e))?;
        }
        Ok(UnixTransport {
            listener,
            path: path.to_path_buf(),
        })
    }
}

impl UnixTransport {
    /// A socket the service manager bound and passed (socket activation):
    /// its mode and group are the socket unit's. Call within the runtime.
    pub fn adopt(
        std: std::os::unix::net::UnixListener,
        path: &Path,
    ) -> std::io::Result<UnixTransport> {
        std.set_nonblocking(true)?;
        Ok(UnixTransport {
            listener: UnixListener::from_std(std)?,
            path: path.to_path_buf(),
        })
    }
}

fn resolve_group(name: &str) -> std::io::Result<nix::unistd::Gid> {
    if let Ok(n) = name.parse::<u32>() {
        return Ok(nix::unistd::Gid::from_raw(n));
    }
    match nix::unistd::Group::from_name(name) {
        Ok(Some(g)) => Ok(g.gid),
        Ok(None) => Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("no such group '{name}'"),
        )),
        Err(e) => Err(std::io::Error::from_raw_os_error(e as i32)),
    }
}

impl Listener for UnixTransport {
    type Incoming = UnixStream;

    async fn accept(&mut self) -> std::io::Result<UnixStream> {
        self.listener.accept().await.map(|(s, _)| s)
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}

impl Incoming for UnixStream {
    type Stream = UnixStream;

    async fn establish(self) -> std::io::Result<(UnixStream, Peer)> {
        let c = self.peer_cred()?;
        let peer = Peer::Local(LocalUser {
            uid: c.uid(),
            gid: c.gid(),
            pid: c.pid(),
        });
        Ok((self, peer))
    }
}

impl Stream for UnixStream {
    fn try_read_buf(&mut self, buf: &mut Vec<u8>) -> Option<std::io::Result<usize>> {
        Some(UnixStream::try_read_buf(self, buf))
    }
}
