//! Talking to a daemon over its UNIX socket (blocking; used by the CLI and
//! by tests).

use crate::proto::{
    self, ErrorCode, ErrorReply, Hello, PROTOCOL_VERSION, Reply, Request, RequestFrame,
    ResponseFrame,
};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the clinit daemon at {path}: {err}")]
    NoDaemon { path: PathBuf, err: String },
    #[error("{}", .0.message)]
    Daemon(ErrorReply),
    #[error("protocol error talking to {path}: {err}")]
    Protocol { path: PathBuf, err: String },
}

impl ClientError {
    pub fn exit_code(&self) -> i32 {
        match self {
            ClientError::NoDaemon { .. } => 5,
            ClientError::Daemon(e) => e.code.exit_code(),
            ClientError::Protocol { .. } => ErrorCode::BadRequest.exit_code(),
        }
    }
}

pub struct Client {
    stream: UnixStream,
    /// Replies are read through a buffer: one read per reply, usually.
    reader: std::io::BufReader<UnixStream>,
    path: PathBuf,
    next_id: u64,
}

impl Client {
    /// Connect and exchange hellos; gives up within a second.
    pub fn connect(path: &Path) -> Result<Client, ClientError> {
        let no = |err: String| ClientError::NoDaemon {
            path: path.to_path_buf(),
            err,
        };
        let mut stream = UnixStream::connect(path).map_err(|e| no(e.to_string()))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(1)))
            .map_err(|e| no(e.to_string()))?;
        proto::write_frame(
            &mut stream,
            &Hello {
                version: PROTOCOL_VERSION,
                agent: format!("clinit {}", env!("CARGO_PKG_VERSION")),
            },
        )
        .map_err(|e| no(e.to_string()))?;
        let hello: serde_json::Value =
            proto::read_frame(&mut stream).map_err(|e| no(e.to_string()))?;
        if hello.get("version").is_none() {
            let r: ResponseFrame = serde_json::from_value(hello).map_err(|e| no(e.to_string()))?;
            if let Reply::Error(e) = r.reply {
                return Err(ClientError::Daemon(e));
            }
        }
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .map_err(|e| no(e.to_string()))?;
        let reader = std::io::BufReader::new(stream.try_clone().map_err(|e| no(e.to_string()))?);
        Ok(Client {
            reader,
            stream,
            path: path.to_path_buf(),
            next_id: 1,
        })
    }

    /// The connection's file descriptor (to poll it for end of stream).
    pub fn fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.stream.as_raw_fd()
    }

    /// How long to wait for a reply (default 60 s).
    pub fn set_timeout(&mut self, t: Duration) {
        let _ = self.stream.set_read_timeout(Some(t));
    }

    /// Send a request without waiting for its reply (pipelining: the
    /// daemon answers a connection's requests in order); returns its id.
    pub fn send(&mut self, req: Request) -> Result<u64, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        proto::write_frame(&mut self.stream, &RequestFrame { id, req }).map_err(|e| {
            ClientError::Protocol {
                path: self.path.clone(),
                err: e.to_string(),
            }
        })?;
        Ok(id)
    }

    /// The next reply of a request sent with [`Client::send`], with its id.
    pub fn recv(&mut self) -> Result<(u64, Reply), ClientError> {
        let resp: ResponseFrame =
            proto::read_frame(&mut self.reader).map_err(|e| ClientError::Protocol {
                path: self.path.clone(),
                err: e.to_string(),
            })?;
        match resp.reply {
            Reply::Error(e) => Err(ClientError::Daemon(e)),
            r => Ok((resp.id, r)),
        }
    }

    pub fn request(&mut self, req: Request) -> Result<Reply, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let perr = |e: proto::FrameError| ClientError::Protocol {
            path: self.path.clone(),
            err: e.to_string(),
        };
        proto::write_frame(&mut self.stream, &RequestFrame { id, req }).map_err(perr)?;
        let resp: ResponseFrame = proto::read_frame(&mut self.reader).map_err(perr)?;
        match resp.reply {
            Reply::Error(e) => Err(ClientError::Daemon(e)),
            r => Ok(r),
        }
    }
}
