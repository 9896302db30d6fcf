//! The TCP transport for remote administration: mutual TLS (rustls, TLS
//! 1.3), the peer named by its client certificate (see [`crate::tls`]).
//!
//! Without TLS it serves only on loopback and only when the daemon was
//! started with `--insecure-loopback` (for tests and tunnels); such a peer
//! is the identity [`INSECURE_IDENTITY`].
//!
//! Limits: the TLS handshake must finish within `tls_handshake_timeout`
//! (a client that connects and sends nothing is closed), at most
//! `listen_connections_max` remote connections are served at once (one
//! over it gets a `LIMIT` error in place of the hello and is closed), and
//! TCP keep-alive finds a peer that vanished (its locks are then released
//! like those of any closed connection).

use super::{Incoming, Listener, Stream};
use crate::daemon::policy::Peer;
use crate::proto::{self, ErrorCode, ErrorReply, Reply, ResponseFrame};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// The identity of a peer of an insecure (plain TCP, loopback) listener.
pub const INSECURE_IDENTITY: &str = "insecure-loopback";

/// How a TCP listener serves.
#[derive(Clone)]
pub struct TcpSettings {
    /// None: plain TCP (loopback only, `--insecure-loopback`).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub handshake_timeout: Duration,
    pub max_connections: usize,
    /// Remote connections open now, over every TCP listener.
    pub open: Arc<AtomicUsize>,
}

pub struct TcpTransport {
    listener: TcpListener,
    addr: SocketAddr,
    settings: TcpSettings,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
}

impl TcpTransport {
    /// Bind `addr` (call within the runtime). Plain TCP on an address that
    /// is not loopback is refused here too, whatever the caller checked.
    pub fn bind(addr: SocketAddr, settings: TcpSettings) -> std::io::Result<TcpTransport> {
        if settings.tls.is_none() && !addr.ip().is_loopback() {
            return Err(std::io::Error::other(
                "a listener without TLS may only be bound to loopback",
            ));
        }
        let socket = match addr {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        if addr.is_ipv6() {
            // [::] serves IPv6 only; list 0.0.0.0 too for both.
            socket2::SockRef::from(&socket).set_only_v6(true)?;
        }
        socket.bind(addr)?;
        let listener = socket.listen(1024)?;
        let addr = listener.local_addr()?;
        let acceptor = settings.tls.clone().map(tokio_rustls::TlsAcceptor::from);
        Ok(TcpTransport {
            listener,
            addr,
            settings,
            acceptor,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

/// One remote connection counted in [`TcpSettings::open`] while it lives.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

pub struct TcpIncoming {
    stream: TcpStream,
    from: SocketAddr,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    handshake_timeout: Duration,
    /// Open connections before this one, and the most allowed.
    before: usize,
    max: usize,
    slot: Slot,
}

impl Listener for TcpTransport {
    type Incoming = TcpIncoming;

    async fn accept(&mut self) -> std::io::Result<TcpIncoming> {
        let (stream, from) = self.listener.accept().await?;
        let before = self.settings.open.fetch_add(1, Ordering::SeqCst);
        Ok(TcpIncoming {
            stream,
            from,
            acceptor: self.acceptor.clone(),
            handshake_timeout: self.settings.handshake_timeout,
            before,
            max: self.settings.max_connections,
            slot: Slot(self.settings.open.clone()),
        })
    }

    fn describe(&self) -> String {
        format!(
            "{} ({})",
            self.addr,
            if self.acceptor.is_some() {
                "TLS"
            } else {
                "INSECURE plain TCP"
            }
        )
    }
}

/// A remote connection: TLS, or plain TCP on loopback.
pub struct TcpConn {
    inner: Inner,
    _slot: Slot,
}

enum Inner {
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    Plain(TcpStream),
}

/// A `LIMIT` error in place of the hello.
async fn refuse<S: AsyncWrite + Unpin>(s: &mut S, message: String) {
    let frame = proto::encode(&ResponseFrame {
        id: 0,
        reply: Reply::Error(ErrorReply {
            code: ErrorCode::Limit,
            message,
        }),
    });
    let _ = s.write_all(&frame).await;
    let _ = s.shutdown().await;
}

impl Incoming for TcpIncoming {
    type Stream = TcpConn;

    async fn establish(self) -> std::io::Result<(TcpConn, Peer)> {
        let TcpIncoming {
            stream,
            from,
            acceptor,
            handshake_timeout,
            before,
            max,
            slot,
        } = self;
        // Far over the limit: not even a handshake.
        if before >= max.saturating_mul(2) {
            return Err(std::io::Error::other(format!(
                "closed at once: {before} remote connections are open (listen_connections_max {max}) (client {from})"
            )));
        }
        let _ = stream.set_nodelay(true);
        let keepalive = socket2::TcpKeepalive::new()
            .with_time(Duration::from_secs(30))
            .with_interval(Duration::from_secs(10))
            .with_retries(3);
        let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
        // The stream, and the identity its peer goes by (None: a
        // certificate that names none).
        let (inner, identity) = match acceptor {
            None => (Inner::Plain(stream), Some(INSECURE_IDENTITY.to_string())),
            Some(acceptor) => {
                let tls = match tokio::time::timeout(handshake_timeout, acceptor.accept(stream))
                    .await
                {
                    Err(_) => {
                        return Err(std::io::Error::other(format!(
                            "no TLS handshake from {from} within {} s (tls_handshake_timeout); closed",
                            handshake_timeout.as_secs_f64()
                        )));
                    }
                    Ok(Err(e)) => {
                        return Err(std::io::Error::other(format!(
                            "TLS handshake with {from} failed: {e}"
                        )));
                    }
                    Ok(Ok(s)) => s,
                };
                let identity = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .and_then(|c| crate::tls::identity(c));
                (Inner::Tls(Box::new(tls)), identity)
            }
        };
        let mut conn = TcpConn { inner, _slot: slot };
        if before >= max {
            let why = format!(
                "this daemon serves at most {max} remote connections at once (listen_connections_max); try again later"
            );
            refuse(&mut conn, why.clone()).await;
            return Err(std::io::Error::other(format!(
                "refused a client at {from}: {why}"
            )));
        }
        let Some(subject) = identity else {
            return Err(std::io::Error::other(format!(
                "the certificate of {from} names no identity (no CN, DNS name or URI); closed"
            )));
        };
        Ok((conn, Peer::Certificate { subject }))
    }
}

impl AsyncRead for TcpConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match &mut self.get_mut().inner {
            Inner::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Inner::Plain(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for TcpConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match &mut self.get_mut().inner {
            Inner::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Inner::Plain(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.get_mut().inner {
            Inner::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Inner::Plain(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.get_mut().inner {
            Inner::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Inner::Plain(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

impl Stream for TcpConn {}
