//! Talking to a daemon (blocking; used by the CLI and by tests): over its
//! UNIX socket, or over TCP with mutual TLS (`clinit --host`; see
//! [`crate::tls`]).

use crate::proto::{
    self, ErrorCode, ErrorReply, Hello, Reply, Request, RequestFrame, ResponseFrame,
};
use crate::spin::Backoff;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the clinit daemon at {path}: {err}")]
    NoDaemon { path: PathBuf, err: String },
    #[error("{}", .0.message)]
    Daemon(ErrorReply),
    #[error("protocol error talking to {path}: {err}")]
    Protocol { path: PathBuf, err: String },
    #[error("cannot resolve {host}: {err}")]
    Resolve { host: String, err: String },
    #[error("cannot connect to {addr}: {err}")]
    Connect { addr: String, err: String },
    #[error("TLS handshake with {addr} failed: {why}")]
    ServerCert { addr: String, why: String },
    #[error("{addr} refused your certificate: {why}")]
    CertRefused { addr: String, why: String },
    #[error("{0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("{0}")]
    Usage(String),
}

impl ClientError {
    /// The stable code printed in brackets after the message.
    pub fn code(&self) -> String {
        match self {
            ClientError::NoDaemon { .. } => "NO_DAEMON".into(),
            ClientError::Daemon(e) => e.code.name(),
            ClientError::Protocol { .. } => "PROTOCOL".into(),
            ClientError::Resolve { .. } => "RESOLVE".into(),
            ClientError::Connect { .. } => "CONNECT".into(),
            ClientError::ServerCert { .. } => "SERVER_CERT".into(),
            ClientError::CertRefused { .. } => "CERT_REFUSED".into(),
            ClientError::Tls(_) => "TLS".into(),
            ClientError::Usage(_) => "USAGE".into(),
        }
    }

    pub fn exit_code(&self) -> i32 {
        match self {
            ClientError::NoDaemon { .. } => 5,
            ClientError::Daemon(e) => e.code.exit_code(),
            ClientError::Protocol { .. } => ErrorCode::BadRequest.exit_code(),
            ClientError::Resolve { .. } => 22,
            ClientError::Connect { .. } => 23,
            ClientError::ServerCert { .. } => 24,
            ClientError::CertRefused { .. } => 25,
            ClientError::Tls(e) => e.exit_code(),
            ClientError::Usage(_) => 2,
        }
    }
}

/// Where a client's requests go.
#[derive(Clone, Debug)]
pub enum Target {
    /// The daemon's UNIX socket.
    Unix(PathBuf),
    /// A daemon's TCP listener (`clinit --host`).
    Remote(Remote),
}

/// A remote daemon, and how to talk to it.
#[derive(Clone, Debug)]
pub struct Remote {
    pub host: String,
    pub port: u16,
    /// None: plain TCP, to loopback only (`--insecure-loopback`).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// The CA file the server's certificate must chain to (for messages).
    pub ca: PathBuf,
    /// Said when the server refuses a client that had no certificate to
    /// present (where none was found).
    pub no_cert: Option<String>,
}

impl Remote {
    fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// How long a remote connection and its TLS handshake may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The connection beneath a [`Client`].
enum Conn {
    Unix(UnixStream),
    Tcp(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Conn {
    fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        match self {
            Conn::Unix(s) => s.as_fd(),
            Conn::Tcp(s) => s.as_fd(),
            Conn::Tls(s) => s.sock.as_fd(),
        }
    }

    fn set_read_timeout(&self, t: Duration) -> std::io::Result<()> {
        match self {
            Conn::Unix(s) => s.set_read_timeout(Some(t)),
            Conn::Tcp(s) => s.set_read_timeout(Some(t)),
            Conn::Tls(s) => s.sock.set_read_timeout(Some(t)),
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Unix(s) => s.read(buf),
            Conn::Tcp(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Conn::Unix(s) => s.write(buf),
            Conn::Tcp(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Conn::Unix(s) => s.flush(),
            Conn::Tcp(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
        }
    }
}

/// What a failed TLS exchange means, in words a user can act on.
fn tls_failure(r: &Remote, e: &std::io::Error) -> ClientError {
    use rustls::{AlertDescription as A, CertificateError as C, Error as E};
    let addr = r.addr();
    let server = |why: String| ClientError::ServerCert {
        addr: addr.clone(),
        why,
    };
    let Some(te) = e.get_ref().and_then(|i| i.downcast_ref::<E>()) else {
        return server(match e.kind() {
            std::io::ErrorKind::UnexpectedEof => "the server closed the connection during the TLS handshake (is it a clinit TLS listener? its log says why)".into(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                format!("no answer within {} s", CONNECT_TIMEOUT.as_secs())
            }
            _ => e.to_string(),
        });
    };
    match te {
        E::InvalidCertificate(c) => server(match c {
            C::UnknownIssuer | C::BadSignature => format!(
                "the server's certificate is not signed by your CA ({})",
                r.ca.display()
            ),
            C::NotValidForName => format!(
                "the server's certificate is for other names, not {}",
                r.host
            ),
            C::NotValidForNameContext { presented, .. } => format!(
                "the server's certificate is for other names ({}), not {}",
                presented
                    .iter()
                    // rustls words them `DnsName("node9")`: the name only.
                    .map(|p| match (p.find('"'), p.rfind('"')) {
                        (Some(a), Some(b)) if b > a => &p[a + 1..b],
                        _ => p.as_str(),
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
                r.host
            ),
            C::Expired | C::ExpiredContext { .. } => "the server's certificate has expired".into(),
            C::NotValidYet | C::NotValidYetContext { .. } => {
                "the server's certificate is not valid yet".into()
            }
            other => format!("the server's certificate is not acceptable: {other:?}"),
        }),
        E::AlertReceived(a) => {
            let why = match a {
                A::CertificateRequired => format!(
                    "you sent none{}",
                    r.no_cert
                        .as_deref()
                        .map(|h| format!(" ({h})"))
                        .unwrap_or_default()
                ),
                A::CertificateExpired => "your certificate has expired".into(),
                A::UnknownCA => "your certificate is not signed by the server's CA".into(),
                A::BadCertificate | A::UnsupportedCertificate | A::CertificateUnknown => {
                    "your certificate is not acceptable to it".into()
                }
                A::CertificateRevoked => "your certificate is revoked".into(),
                A::AccessDenied => "access denied".into(),
                other => return server(format!("the server sent alert {other:?}")),
            };
            ClientError::CertRefused { addr, why }
        }
        other => server(other.to_string()),
    }
}

pub struct Client {
    /// The connection; replies are read through the buffer (one read per
    /// reply, usually), requests written to the stream beneath it.
    reader: std::io::BufReader<Conn>,
    /// Where it is connected, for messages.
    path: PathBuf,
    next_id: u64,
    /// How long to wait for a reply.
    timeout: Duration,
    /// Whether to busy-wait for the next reply before sleeping.
    spin: Backoff,
}

impl Client {
    /// Connect to the daemon's UNIX socket and exchange hellos; gives up
    /// within a second.
    pub fn connect(path: &Path) -> Result<Client, ClientError> {
        let no = |err: String| ClientError::NoDaemon {
            path: path.to_path_buf(),
            err,
        };
        let stream = UnixStream::connect(path).map_err(|e| no(e.to_string()))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(1)))
            .map_err(|e| no(e.to_string()))?;
        let mut conn = Conn::Unix(stream);
        exchange_hellos(&mut conn).map_err(|e| match e {
            Hellos::Refused(e) => ClientError::Daemon(e),
            Hellos::Failed(e) => no(e),
            Hellos::Io(e) => no(e.to_string()),
        })?;
        Ok(Client::over(
            conn,
            path.to_path_buf(),
            crate::spin::budget(),
        ))
    }

    /// Connect to `target` and exchange hellos.
    pub fn open(target: &Target) -> Result<Client, ClientError> {
        match target {
            Target::Unix(path) => Client::connect(path),
            Target::Remote(r) => Client::connect_remote(r),
        }
    }

    fn connect_remote(r: &Remote) -> Result<Client, ClientError> {
        use std::net::ToSocketAddrs;
        let addr = r.addr();
        let addrs: Vec<std::net::SocketAddr> = (r.host.as_str(), r.port)
            .to_socket_addrs()
            .map_err(|e| ClientError::Resolve {
                host: r.host.clone(),
                err: e.to_string(),
            })?
            .collect();
        if r.tls.is_none()
            && let Some(a) = addrs.iter().find(|a| !a.ip().is_loopback())
        {
            return Err(ClientError::Usage(format!(
                "--insecure-loopback talks plain TCP to loopback only, and {} is {}",
                r.host,
                a.ip()
            )));
        }
        let mut last = None;
        let mut sock = None;
        for a in &addrs {
            match TcpStream::connect_timeout(a, CONNECT_TIMEOUT) {
                Ok(s) => {
                    sock = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let Some(sock) = sock else {
            return Err(ClientError::Connect {
                addr,
                err: last.map_or("no address".into(), |e| e.to_string()),
            });
        };
        let setup = |e: std::io::Error| ClientError::Connect {
            addr: addr.clone(),
            err: e.to_string(),
        };
        sock.set_nodelay(true).map_err(setup)?;
        sock.set_read_timeout(Some(CONNECT_TIMEOUT))
            .map_err(setup)?;
        sock.set_write_timeout(Some(CONNECT_TIMEOUT))
            .map_err(setup)?;
        let mut conn = match &r.tls {
            None => Conn::Tcp(sock),
            Some(cfg) => {
                let name = crate::tls::server_name(&r.host).map_err(ClientError::Usage)?;
                let tc = rustls::ClientConnection::new(cfg.clone(), name).map_err(|e| {
                    ClientError::ServerCert {
                        addr: addr.clone(),
                        why: e.to_string(),
                    }
                })?;
                let mut s = rustls::StreamOwned::new(tc, sock);
                while s.conn.is_handshaking() {
                    s.conn
                        .complete_io(&mut s.sock)
                        .map_err(|e| tls_failure(r, &e))?;
                }
                Conn::Tls(Box::new(s))
            }
        };
        // The server checks a client certificate after the handshake ends
        // on this side: its refusal comes as the answer to the hello.
        exchange_hellos(&mut conn).map_err(|e| match e {
            Hellos::Refused(e) => ClientError::Daemon(e),
            Hellos::Failed(_) => match &conn {
                Conn::Tls(_) => ClientError::ServerCert {
                    addr: addr.clone(),
                    why: "no hello from the server".into(),
                },
                _ => ClientError::Protocol {
                    path: PathBuf::from(&addr),
                    err: "no hello from the server (is it a clinit listener without TLS?)".into(),
                },
            },
            Hellos::Io(e) => match &conn {
                Conn::Tls(_) => tls_failure(r, &e),
                _ => ClientError::Protocol {
                    path: PathBuf::from(&addr),
                    err: e.to_string(),
                },
            },
        })?;
        let _ = conn.set_read_timeout(Duration::from_secs(60));
        // Spinning pays on a UNIX socket only.
        Ok(Client::over(conn, PathBuf::from(addr), Duration::ZERO))
    }

    fn over(conn: Conn, path: PathBuf, spin: Duration) -> Client {
        let mut c = Client {
            // Large enough for a batch of streamed events in one read.
            reader: std::io::BufReader::with_capacity(1 << 16, conn),
            path,
            next_id: 1,
            timeout: Duration::ZERO,
            spin: Backoff::new(spin),
        };
        c.set_timeout(Duration::from_secs(60));
        c
    }

    /// Whether the daemon closed the connection, looked at while no reply
    /// is expected (nothing else comes then).
    pub fn peer_closed(&mut self) -> bool {
        use std::os::fd::AsRawFd;
        let peek = |fd: i32| {
            let mut b = [0u8; 1];
            match nix::sys::socket::recv(
                fd,
                &mut b,
                nix::sys::socket::MsgFlags::MSG_PEEK | nix::sys::socket::MsgFlags::MSG_DONTWAIT,
            ) {
                Ok(0) => true,
                Ok(_) => false,
                Err(nix::errno::Errno::EAGAIN) => false,
                Err(_) => true,
            }
        };
        match self.reader.get_mut() {
            Conn::Unix(s) => peek(s.as_raw_fd()),
            Conn::Tcp(s) => peek(s.as_raw_fd()),
            // What arrives is TLS records: a close_notify, an alert, or
            // the end of the stream all mean closed.
            Conn::Tls(s) => {
                if s.sock.set_nonblocking(true).is_err() {
                    return true;
                }
                let closed = loop {
                    match s.conn.read_tls(&mut s.sock) {
                        Ok(0) => break true,
                        Ok(_) => match s.conn.process_new_packets() {
                            Err(_) => break true,
                            Ok(st) if st.peer_has_closed() => break true,
                            Ok(_) => continue,
                        },
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break false,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(_) => break true,
                    }
                };
                closed || s.sock.set_nonblocking(false).is_err()
            }
        }
    }

    /// The connection (to poll it for end of stream).
    pub fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.reader.get_ref().fd()
    }

    /// How long to busy-wait for a reply before sleeping (see
    /// [`crate::spin`]); zero never spins. The default is
    /// [`crate::spin::budget`].
    pub fn set_spin(&mut self, budget: Duration) {
        self.spin = Backoff::new(budget);
    }

    /// How long to wait for a reply (default 60 s).
    pub fn set_timeout(&mut self, t: Duration) {
        self.timeout = t;
        let _ = self.reader.get_ref().set_read_timeout(t);
    }

    /// Wait until a reply can be read. A thread blocked in `read` on a UNIX
    /// socket is also woken each time the daemon consumes one of its
    /// requests (the kernel signals "write space" on the same wait queue),
    /// so every round trip would cost a second sleep and wake-up; `poll`
    /// for input only is not woken by that. Measured: 2 sleeps per request
    /// become 1, about 1 µs of client and daemon CPU each.
    ///
    /// Before sleeping it may spin a little (see [`crate::spin`]).
    fn await_reply(&mut self) -> Result<(), ClientError> {
        if !self.reader.buffer().is_empty() {
            return Ok(());
        }
        // TLS may hold decrypted bytes that poll cannot see: its reads
        // wait, up to the socket's read timeout.
        if matches!(self.reader.get_ref(), Conn::Tls(_)) {
            return Ok(());
        }
        if self.spin.try_now() {
            let arrived = spin_until_readable(self.as_fd(), self.spin.budget());
            self.spin.record(arrived);
            if arrived {
                return Ok(());
            }
        }
        match wait_readable(self.as_fd(), self.timeout) {
            // Readable, closed or failed: the read tells which.
            Ok(true) => Ok(()),
            Ok(false) => Err(ClientError::Protocol {
                path: self.path.clone(),
                err: format!("no reply within {:?}", self.timeout),
            }),
            Err(e) => Err(ClientError::Protocol {
                path: self.path.clone(),
                err: format!("poll: {e}"),
            }),
        }
    }

    /// Send a request without waiting for its reply (pipelining: the
    /// daemon answers a connection's requests in order); returns its id.
    pub fn send(&mut self, req: Request) -> Result<u64, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let conn = self.reader.get_mut();
        proto::write_frame(conn, &RequestFrame { id, req })
            .and_then(|()| conn.flush().map_err(Into::into))
            .map_err(|e| ClientError::Protocol {
                path: self.path.clone(),
                err: e.to_string(),
            })?;
        Ok(id)
    }

    /// The next reply of a request sent with [`Client::send`], with its id.
    pub fn recv(&mut self) -> Result<(u64, Reply), ClientError> {
        self.await_reply()?;
        let resp = self.read_reply().map_err(|e| ClientError::Protocol {
            path: self.path.clone(),
            err: match e {
                proto::FrameError::Io(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    format!("no reply within {:?}", self.timeout)
                }
                e => e.to_string(),
            },
        })?;
        match resp.reply {
            Reply::Error(e) => Err(ClientError::Daemon(e)),
            r => Ok((resp.id, r)),
        }
    }

    /// One reply frame; decoded in place when the buffer holds all of it.
    fn read_reply(&mut self) -> Result<ResponseFrame, proto::FrameError> {
        use std::io::BufRead;
        let buf = self.reader.fill_buf()?;
        if let Some(n) = proto::frame_len(buf)? {
            let r = proto::decode_reply(&buf[4..n]);
            self.reader.consume(n);
            return Ok(r?);
        }
        proto::read_frame_with(&mut self.reader, proto::decode_reply)
    }

    /// The status of one group or all, every page of it (a status larger
    /// than a frame comes in pages; see `Request::Status`), merged.
    pub fn status_all(
        &mut self,
        group: Option<String>,
        brief: bool,
    ) -> Result<Vec<crate::proto::GroupStatus>, ClientError> {
        self.status_with(group, brief, false)
    }

    /// [`Client::status_all`], with each running entry's CPU time and
    /// memory when `usage`.
    pub fn status_with(
        &mut self,
        group: Option<String>,
        brief: bool,
        usage: bool,
    ) -> Result<Vec<crate::proto::GroupStatus>, ClientError> {
        let mut all: Vec<crate::proto::GroupStatus> = Vec::new();
        let mut from = None;
        loop {
            let reply = self.request(Request::Status {
                group: group.clone(),
                brief,
                from,
                usage,
            })?;
            let Reply::Status { groups, more } = reply else {
                return Err(match reply {
                    Reply::Error(e) => ClientError::Daemon(e),
                    other => ClientError::Protocol {
                        path: self.path.clone(),
                        err: format!("unexpected reply to status: {other:?}"),
                    },
                });
            };
            // The first group of a following page may continue the last.
            let continued = from.is_some();
            for (i, g) in groups.into_iter().enumerate() {
                match all.last_mut() {
                    Some(last) if i == 0 && continued && last.group == g.group => {
                        last.entries.extend(g.entries);
                        last.level = g.level;
                        last.state = g.state;
                    }
                    _ => all.push(g),
                }
            }
            match more {
                Some(m) => from = Some(m),
                None => return Ok(all),
            }
        }
    }

    /// Every row of a survey (page by page). Its frames are decoded
    /// straight into rows of values, not through [`Reply`] (whose tagged
    /// form buffers a whole frame before decoding it: for 1,000 rows that
    /// was a millisecond of a CLI call).
    pub fn survey(
        &mut self,
        query: &crate::survey::Query,
    ) -> Result<Vec<Vec<serde_json::Value>>, ClientError> {
        #[derive(serde::Deserialize)]
        struct Page {
            kind: String,
            #[serde(default)]
            rows: Vec<Vec<serde_json::Value>>,
            #[serde(default)]
            more: Option<usize>,
            #[serde(default)]
            code: Option<proto::ErrorCode>,
            #[serde(default)]
            message: String,
        }
        let mut all = Vec::new();
        let mut from = 0;
        loop {
            self.send(Request::Survey {
                query: query.clone(),
                from,
            })?;
            let page = self.recv_raw(|body| serde_json::from_slice::<Page>(body))?;
            let page = page.map_err(|e| ClientError::Protocol {
                path: self.path.clone(),
                err: e.to_string(),
            })?;
            match (page.kind.as_str(), page.code) {
                ("survey", _) => {}
                ("error", Some(code)) => {
                    return Err(ClientError::Daemon(ErrorReply {
                        code,
                        message: page.message,
                    }));
                }
                (kind, _) => {
                    return Err(ClientError::Protocol {
                        path: self.path.clone(),
                        err: format!("unexpected reply to survey: {kind}"),
                    });
                }
            }
            all.extend(page.rows);
            match page.more {
                Some(m) if m > from => from = m,
                _ => return Ok(all),
            }
        }
    }

    pub fn request(&mut self, req: Request) -> Result<Reply, ClientError> {
        self.send(req)?;
        Ok(self.recv()?.1)
    }

    /// The next frame's body, as it came, handed to `f` (for a caller that
    /// passes frames of a streamed reply through without decoding them).
    pub fn recv_raw<R>(&mut self, f: impl FnOnce(&[u8]) -> R) -> Result<R, ClientError> {
        use std::io::{BufRead, Read};
        self.await_reply()?;
        let protocol = |e: String| ClientError::Protocol {
            path: self.path.clone(),
            err: e,
        };
        let buf = self
            .reader
            .fill_buf()
            .map_err(|e| protocol(e.to_string()))?;
        match proto::frame_len(buf).map_err(|e| protocol(e.to_string()))? {
            Some(n) => {
                let r = f(&buf[4..n]);
                self.reader.consume(n);
                Ok(r)
            }
            None if buf.is_empty() => Err(protocol(proto::FrameError::Closed.to_string())),
            None => {
                let mut len = [0u8; 4];
                self.reader
                    .read_exact(&mut len)
                    .map_err(|e| protocol(e.to_string()))?;
                let len = u32::from_be_bytes(len) as usize;
                if len > proto::MAX_FRAME {
                    return Err(protocol(proto::FrameError::TooLarge(len).to_string()));
                }
                let mut body = vec![0; len];
                self.reader
                    .read_exact(&mut body)
                    .map_err(|e| protocol(e.to_string()))?;
                Ok(f(&body))
            }
        }
    }

    /// Whether a whole frame is already buffered (the next `recv` will not
    /// wait).
    pub fn has_frame(&self) -> bool {
        matches!(proto::frame_len(self.reader.buffer()), Ok(Some(_)))
    }
}

/// Why the hellos were not exchanged.
enum Hellos {
    /// The daemon answered with an error (a limit, shutting down, ...).
    Refused(ErrorReply),
    /// Reading or writing failed.
    Io(std::io::Error),
    /// Something else came.
    Failed(String),
}

/// Send our hello and read the daemon's.
fn exchange_hellos(conn: &mut Conn) -> Result<(), Hellos> {
    let io = |e: proto::FrameError| match e {
        proto::FrameError::Io(e) => Hellos::Io(e),
        e => Hellos::Failed(e.to_string()),
    };
    proto::write_frame(conn, &Hello::ours()).map_err(io)?;
    conn.flush().map_err(Hellos::Io)?;
    let hello: serde_json::Value = proto::read_frame(conn).map_err(io)?;
    if hello.get("version").is_none() {
        let r: ResponseFrame =
            serde_json::from_value(hello).map_err(|e| Hellos::Failed(e.to_string()))?;
        if let Reply::Error(e) = r.reply {
            return Err(Hellos::Refused(e));
        }
    }
    Ok(())
}

/// Poll `fd` without blocking, yielding the CPU between polls, until it is
/// readable (true) or `budget` has passed or polling failed (false; the
/// caller's own `poll` then waits or reports the error).
fn spin_until_readable(fd: std::os::fd::BorrowedFd, budget: Duration) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let start = std::time::Instant::now();
    loop {
        let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::ZERO) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => {}
            // Readable, closed or failed: the caller's read tells which.
            Ok(_) => return true,
            Err(_) => return false,
        }
        if start.elapsed() >= budget {
            return false;
        }
        std::thread::yield_now();
    }
}

/// Wait up to `limit` until `fd` is readable (or closed): false when the
/// time ran out. Interrupted waits go on with the time left.
pub(crate) fn wait_readable(fd: std::os::fd::BorrowedFd, limit: Duration) -> nix::Result<bool> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let end = std::time::Instant::now() + limit;
    loop {
        let left = end.saturating_duration_since(std::time::Instant::now());
        let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
        match poll(
            &mut fds,
            PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX),
        ) {
            Ok(0) => return Ok(false),
            Ok(_) => return Ok(true),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in daemon on a socket in a temp dir: answers the hello, then
    /// hands each request to `answer`, which writes what it likes.
    fn fake_daemon(
        answer: impl FnOnce(&mut UnixStream) + Send + 'static,
    ) -> (PathBuf, std::thread::JoinHandle<()>) {
        let dir = std::env::temp_dir().join(format!(
            "clinit-client-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let t = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let _: Hello = proto::read_frame(&mut s).unwrap();
            proto::write_frame(&mut s, &Hello::ours()).unwrap();
            answer(&mut s);
            let _ = std::fs::remove_dir_all(dir);
        });
        (path, t)
    }

    fn pong(s: &mut UnixStream) {
        let req: RequestFrame = proto::read_frame(s).unwrap();
        let r = ResponseFrame {
            id: req.id,
            reply: Reply::Message {
                text: "pong".into(),
            },
        };
        proto::write_frame(s, &r).unwrap();
    }

    #[test]
    fn a_reply_that_comes_while_spinning_is_read_and_resets_the_backoff() {
        let (path, t) = fake_daemon(pong);
        let mut c = Client::connect(&path).unwrap();
        // As after three spins that found nothing, with the skips used up.
        c.spin = Backoff::after_misses(Duration::from_secs(10), 3);
        let r = c.request(Request::Ping).unwrap();
        assert!(
            matches!(r, Reply::Message { ref text } if text == "pong"),
            "{r:?}"
        );
        assert_eq!(
            skips_after_a_miss(&mut c.spin),
            1,
            "the spin found the reply"
        );
        t.join().unwrap();
    }

    /// How many waits a spin that finds nothing now skips: 1 when the last
    /// spin found its message, more when misses came before.
    fn skips_after_a_miss(b: &mut Backoff) -> usize {
        while !b.try_now() {}
        b.record(false);
        (0..1000).take_while(|_| !b.try_now()).count()
    }

    /// Wait (10 s at most) until thread `tid` of this process sleeps.
    fn until_asleep(tid: i32) {
        let stat = format!("/proc/self/task/{tid}/stat");
        let end = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let s = std::fs::read_to_string(&stat).unwrap();
            if crate::supervisor::leftovers::stat_field(&s, 3) == Some("S") {
                return;
            }
            assert!(std::time::Instant::now() < end, "never slept: {s}");
            std::thread::yield_now();
        }
    }

    #[test]
    fn a_reply_after_a_failed_spin_is_still_read_and_backs_off() {
        // The stand-in answers only once the client sleeps in its poll, so
        // the client's spin has found nothing.
        let me = nix::unistd::gettid().as_raw();
        let (path, t) = fake_daemon(move |s| {
            let req: RequestFrame = proto::read_frame(s).unwrap();
            until_asleep(me);
            let r = ResponseFrame {
                id: req.id,
                reply: Reply::Message {
                    text: "late".into(),
                },
            };
            proto::write_frame(s, &r).unwrap();
        });
        let mut c = Client::connect(&path).unwrap();
        c.set_spin(Duration::from_micros(1));
        let r = c.request(Request::Ping).unwrap();
        assert!(
            matches!(r, Reply::Message { ref text } if text == "late"),
            "{r:?}"
        );
        assert_eq!(
            (c.spin.try_now(), c.spin.try_now()),
            (false, true),
            "one spin found nothing: the next reply is waited for without one"
        );
        t.join().unwrap();
    }

    #[test]
    fn a_daemon_that_closes_while_the_client_spins_gives_an_error() {
        let (path, t) = fake_daemon(|s| {
            let _: RequestFrame = proto::read_frame(s).unwrap();
            s.shutdown(std::net::Shutdown::Both).unwrap();
        });
        let mut c = Client::connect(&path).unwrap();
        c.spin = Backoff::after_misses(Duration::from_secs(10), 3);
        let e = c.request(Request::Ping).unwrap_err();
        assert!(matches!(e, ClientError::Protocol { .. }), "{e:?}");
        assert_eq!(
            skips_after_a_miss(&mut c.spin),
            1,
            "the close ended the spin"
        );
        t.join().unwrap();
    }

    #[test]
    fn spinning_sees_a_reply_already_there_and_gives_up_on_none() {
        use std::io::Write;
        use std::os::fd::AsFd;
        let (mut a, b) = UnixStream::pair().unwrap();
        assert!(!spin_until_readable(b.as_fd(), Duration::from_micros(50)));
        a.write_all(b"x").unwrap();
        assert!(spin_until_readable(b.as_fd(), Duration::from_micros(50)));
    }
}
