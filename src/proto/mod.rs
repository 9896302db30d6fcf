//! Client/daemon protocol: length-prefixed JSON frames.
//!
//! Each frame is a 4-byte big-endian length followed by that many bytes of
//! UTF-8 JSON; frames larger than [`MAX_FRAME`] are refused. The client first
//! sends [`Hello`] with [`PROTOCOL_VERSION`]; the daemon answers with its own
//! `Hello` or an error. Then each [`RequestFrame`] gets one [`ResponseFrame`]
//! with the same id.

use crate::cltab::NotifierFormat;
use crate::lock::{ContainerStatus, LockMode};
use crate::supervisor::machine::{ExitStatus, GroupState};
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};

pub const PROTOCOL_VERSION: u32 = 1;
pub const MAX_FRAME: usize = 4 * 1024 * 1024;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Hello {
    pub version: u32,
    pub agent: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Ping,
    Tell {
        group: String,
        level: String,
    },
    /// Level and state of one group or all; `brief` leaves out the entries.
    Status {
        group: Option<String>,
        #[serde(default)]
        brief: bool,
    },
    Reread,
    Shutdown,
    /// Answer once `group` is at `level` (if given) and in `state` (if given;
    /// otherwise any settled state: DONE, PASSED, FAILED), or TIMEOUT.
    Wait {
        group: String,
        level: Option<String>,
        state: Option<GroupState>,
        timeout_ms: u64,
    },
    /// Stop, start or restart one entry (`clinit stop|start|restart TAG`).
    Control {
        tag: String,
        action: ControlAction,
        #[serde(default)]
        temporary: bool,
    },
    /// Restart every entry of one group, or of all groups (`group: null`).
    RestartGroup {
        group: Option<String>,
    },
    /// Add an entry to the cltab (`clinit create`).
    Create {
        group: String,
        tag: String,
        levels: String,
        mode: String,
        /// Entry options as (name, value), written as option lines.
        #[serde(default)]
        options: Vec<(String, String)>,
        command: String,
    },
    /// Stop an entry and remove it from the cltab (`clinit delete`).
    Delete {
        tag: String,
    },
    /// Take the lock on a container. Owned by this connection, or by
    /// `lease` when given. `wait: false` answers BUSY at once when the lock
    /// cannot be granted; otherwise the reply comes when it is granted, or
    /// TIMEOUT after `timeout_ms` (no limit when absent).
    LockAcquire {
        name: String,
        mode: LockMode,
        #[serde(default)]
        wait: bool,
        #[serde(default)]
        timeout_ms: Option<u64>,
        #[serde(default)]
        lease: Option<u64>,
        /// Who asks, for listings (e.g. "clinit lock: rsync ...").
        #[serde(default)]
        what: String,
    },
    LockRelease {
        name: String,
        #[serde(default)]
        lease: Option<u64>,
    },
    /// Create a lease: locks taken with it outlive this connection until
    /// the lease is revoked or not renewed within `ttl_ms`.
    LeaseGrant {
        ttl_ms: u64,
    },
    LeaseRenew {
        lease: u64,
    },
    LeaseRevoke {
        lease: u64,
    },
    /// Holders and waiters of one container or of all.
    Locks {
        name: Option<String>,
    },
    /// A record operation.
    Record(RecordOp),
}

/// Record operations; values travel base64-encoded (`value_b64`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "record", rename_all = "snake_case")]
pub enum RecordOp {
    Add {
        container: String,
        key: String,
        value_b64: String,
    },
    Get {
        container: String,
        key: String,
    },
    Modify {
        container: String,
        key: String,
        value_b64: String,
        sig: u64,
    },
    /// `sig` 0 deletes whatever the record's signature.
    Delete {
        container: String,
        key: String,
        sig: u64,
    },
    List {
        container: String,
    },
}

/// A record on the wire.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RecordWire {
    pub key: String,
    pub value_b64: String,
    pub sig: u64,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ControlAction {
    Stop,
    Start,
    Restart,
}

impl Request {
    /// Requests that change something need the right to (see the access
    /// rules in the README); the others are open to anyone who can connect.
    pub fn changes_something(&self) -> bool {
        !self.is_lock_service()
            && !matches!(
                self,
                Request::Ping | Request::Status { .. } | Request::Wait { .. }
            )
    }

    /// Requests for the lock service and the record store (open to every
    /// user who can connect).
    pub fn is_lock_service(&self) -> bool {
        matches!(
            self,
            Request::LockAcquire { .. }
                | Request::LockRelease { .. }
                | Request::LeaseGrant { .. }
                | Request::LeaseRenew { .. }
                | Request::LeaseRevoke { .. }
                | Request::Locks { .. }
                | Request::Record(_)
        )
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RequestFrame {
    pub id: u64,
    #[serde(flatten)]
    pub req: Request,
}

/// Stable error codes; see the README for their exit statuses.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    BadRequest,
    VersionMismatch,
    NoSuchGroup,
    CltabInvalid,
    Timeout,
    ShuttingDown,
    Internal,
    NoSuchEntry,
    Access,
    CltabChanged,
    /// A lock not grantable now (non-blocking request).
    Busy,
    /// Protocol misuse: releasing a lock not held, a second release,
    /// acquiring a lock already held, an unknown lease.
    SynchErr,
    /// No lock service reachable (client side).
    NoLockmgr,
    BadName,
    Exists,
    Noent,
    Collision,
    TooLarge,
}

impl ErrorCode {
    pub const fn exit_code(self) -> i32 {
        match self {
            ErrorCode::NoSuchGroup => 3,
            ErrorCode::CltabInvalid => 4,
            ErrorCode::Timeout => 6,
            ErrorCode::BadRequest | ErrorCode::VersionMismatch => 7,
            ErrorCode::ShuttingDown => 9,
            ErrorCode::Internal => 1,
            ErrorCode::NoSuchEntry => 3,
            ErrorCode::Access => 11,
            ErrorCode::CltabChanged => 12,
            ErrorCode::SynchErr => 13,
            ErrorCode::Exists => 14,
            ErrorCode::Noent => 15,
            ErrorCode::Collision => 16,
            ErrorCode::BadName | ErrorCode::TooLarge => 7,
            ErrorCode::NoLockmgr => 69,
            ErrorCode::Busy => 75,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorReply {
    pub code: ErrorCode,
    pub message: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EntryStatus {
    pub tag: String,
    pub mode: String,
    pub levels: String,
    pub command: String,
    pub state: String,
    pub pid: Option<i32>,
    /// Unix time (seconds) of the last start.
    pub started: Option<f64>,
    pub starts: u32,
    pub restarts: u32,
    pub last_exit: Option<ExitStatus>,
    /// `disabled`, `temporarily disabled`, `temporarily enabled`, or null
    /// when the entry runs normally.
    pub goal: Option<String>,
    /// Enabled across daemon restarts (BOS fileGoal).
    pub enabled: bool,
    /// Enabled now (BOS goal).
    pub running_enabled: bool,
    /// Unix seconds of the last start.
    pub last_start: Option<i64>,
    pub last_exit_at: Option<i64>,
    pub last_error: Option<ExitStatus>,
    pub last_error_at: Option<i64>,
    /// BOS restart-counting window: its start (Unix seconds) and restarts in it.
    pub rs_time: i64,
    pub rs_count: u32,
    /// Rapid restarts in a row.
    pub rapid: u32,
    pub throttled_until: Option<i64>,
    /// Stopped for too many errors (`respawn_give_up`).
    pub gave_up: bool,
    pub schedule: Option<String>,
    /// Unix seconds of a cron entry's next run.
    pub next_run: Option<i64>,
    pub notifier: Option<String>,
    pub notifier_format: Option<NotifierFormat>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct GroupStatus {
    pub group: String,
    pub level: Option<String>,
    pub state: GroupState,
    pub entries: Vec<EntryStatus>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reply {
    Ok,
    /// A request done, with the text the client prints (Cluster::Init's
    /// replies: "level transition started", "all groups halting").
    Message {
        text: String,
    },
    Pong,
    Status {
        groups: Vec<GroupStatus>,
    },
    Error(ErrorReply),
    /// A lock granted, with its fencing token.
    Granted {
        name: String,
        mode: LockMode,
        token: u64,
    },
    Lease {
        lease: u64,
        ttl_ms: u64,
    },
    Locks {
        containers: Vec<ContainerStatus>,
    },
    Record {
        record: RecordWire,
    },
    Records {
        records: Vec<RecordWire>,
    },
    /// The new signature of an added or modified record.
    Signature {
        sig: u64,
    },
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ResponseFrame {
    pub id: u64,
    #[serde(flatten)]
    pub reply: Reply,
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("connection closed")]
    Closed,
    #[error("frame of {0} bytes exceeds the limit of {MAX_FRAME}")]
    TooLarge(usize),
    #[error("malformed frame: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    let body = serde_json::to_vec(msg).expect("protocol types serialize");
    let mut out = Vec::with_capacity(body.len() + 4);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// Blocking read of one frame (the client side).
pub fn read_frame<T: for<'de> Deserialize<'de>>(r: &mut impl Read) -> Result<T, FrameError> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => FrameError::Closed,
        _ => FrameError::Io(e),
    })?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body)?;
    Ok(serde_json::from_slice(&body)?)
}

pub fn write_frame<T: Serialize>(w: &mut impl Write, msg: &T) -> Result<(), FrameError> {
    w.write_all(&encode(msg))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_have_a_stable_shape() {
        let cases = [
            (Request::Ping, r#"{"id":1,"op":"ping"}"#),
            (
                Request::Tell {
                    group: "web".into(),
                    level: "3".into(),
                },
                r#"{"id":1,"op":"tell","group":"web","level":"3"}"#,
            ),
            (
                Request::Status {
                    group: None,
                    brief: true,
                },
                r#"{"id":1,"op":"status","group":null,"brief":true}"#,
            ),
            (Request::Reread, r#"{"id":1,"op":"reread"}"#),
            (Request::Shutdown, r#"{"id":1,"op":"shutdown"}"#),
            (
                Request::Wait {
                    group: "web".into(),
                    level: Some("3".into()),
                    state: Some(GroupState::Done),
                    timeout_ms: 500,
                },
                r#"{"id":1,"op":"wait","group":"web","level":"3","state":"DONE","timeout_ms":500}"#,
            ),
        ];
        for (req, json) in cases {
            let frame = RequestFrame { id: 1, req };
            assert_eq!(serde_json::to_string(&frame).unwrap(), json);
            let back: RequestFrame = serde_json::from_str(json).unwrap();
            assert_eq!(back, frame);
        }
    }

    #[test]
    fn oversized_and_malformed_frames_are_errors() {
        let mut big = ((MAX_FRAME + 1) as u32).to_be_bytes().to_vec();
        big.extend_from_slice(b"{}");
        assert!(matches!(
            read_frame::<RequestFrame>(&mut &big[..]),
            Err(FrameError::TooLarge(_))
        ));
        let mut bad = 3u32.to_be_bytes().to_vec();
        bad.extend_from_slice(b"{x}");
        assert!(matches!(
            read_frame::<RequestFrame>(&mut &bad[..]),
            Err(FrameError::Malformed(_))
        ));
        assert!(matches!(
            read_frame::<RequestFrame>(&mut &b""[..]),
            Err(FrameError::Closed)
        ));
    }
}
