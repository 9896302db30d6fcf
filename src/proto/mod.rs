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

impl Hello {
    /// This build's hello (client and daemon send the same).
    pub fn ours() -> Hello {
        Hello {
            version: PROTOCOL_VERSION,
            agent: format!("clinit {}", env!("CARGO_PKG_VERSION")),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Ping,
    /// How this node stands with its cluster (`clinit status` in cluster
    /// mode).
    Node,
    Tell {
        group: String,
        level: String,
    },
    /// Level and state of one group or all; `brief` leaves out the entries.
    /// A status too large for one frame comes in pages: `from` is the
    /// `more` of the previous page.
    Status {
        group: Option<String>,
        #[serde(default)]
        brief: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from: Option<StatusCursor>,
        /// Add each running entry's CPU time and memory (a scan of
        /// /proc: asked only by those who show them).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        usage: bool,
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
        /// A listing larger than a frame comes in pages: the `more` of the
        /// previous page (the last lock it listed).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<String>,
    },
    /// A record operation.
    Record(RecordOp),
    /// A streamed reply: a [`Reply::Subscribed`] header, the remembered
    /// events after `since` (after the last `last` ones, when given;
    /// otherwise all kept), then, with `follow`, every new event until
    /// the client closes; without, [`Reply::EventsEnd`]. `group` keeps
    /// only the events about that group.
    Events {
        #[serde(default)]
        since: Option<u64>,
        #[serde(default)]
        last: Option<u64>,
        #[serde(default)]
        group: Option<String>,
        #[serde(default)]
        follow: bool,
    },
    /// Why an entry or a group is (not) running.
    Explain {
        name: String,
    },
    /// Is the daemon alive: its version, pid and uptime (`clinit null`).
    Null,
    /// Every parameter (`name: None`) or one, with its value and source.
    Params {
        #[serde(default)]
        name: Option<String>,
    },
    /// Set a parameter while the daemon runs (`value: None` removes the
    /// live value); `persist` keeps it across daemon restarts.
    SetPar {
        name: String,
        #[serde(default)]
        value: Option<String>,
        #[serde(default)]
        persist: bool,
    },
    /// Write the last words to the log, and return them.
    LastWords,
    /// Reopen the log file (for logrotate).
    Reopen,
    /// `clinit survey`: the daemon makes the rows (only the columns the
    /// query reads), filters, sorts and keeps the chosen columns. A result
    /// too large for one frame comes in pages: `from` is the `more` of
    /// the previous page.
    Survey {
        query: crate::survey::Query,
        #[serde(default)]
        from: usize,
    },
}

/// Record operations; values travel base64-encoded (`value_b64`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "record", rename_all = "snake_case")]
pub enum RecordOp {
    Add {
        container: String,
        key: String,
        value_b64: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fence: Option<Fence>,
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
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fence: Option<Fence>,
    },
    /// `sig` 0 deletes whatever the record's signature.
    Delete {
        container: String,
        key: String,
        sig: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fence: Option<Fence>,
    },
    List {
        container: String,
    },
}

/// A fencing token a record write presents: the write is done only if
/// `token` is at least the highest token the record store has seen for
/// the lock `lock` (else `STALE_TOKEN`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Fence {
    pub lock: String,
    pub token: u64,
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

/// A request on the wire: `{"id": N, "op": ..., the request's fields}`.
/// Deserialized by `framed`, not by a derived `flatten`.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct RequestFrame {
    pub id: u64,
    #[serde(flatten)]
    pub req: Request,
}

impl<'de> Deserialize<'de> for RequestFrame {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (id, req) = framed(d, "request")?;
        Ok(RequestFrame { id, req })
    }
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
    /// An events subscriber fell further behind than the daemon keeps.
    Lagged,
    /// A per-peer limit or a maximum setting was reached.
    Limit,
    /// Cluster mode: etcd cannot be reached now.
    EtcdUnreachable,
    /// A record write fenced with a token older than one the store has
    /// seen for that lock.
    StaleToken,
    /// No parameter of that name.
    NoSuchParam,
    /// A value a parameter does not take.
    BadValue,
    /// A parameter that cannot change while the daemon runs.
    NotLive,
    /// Refused: the daemon is in maintenance mode.
    Maintenance,
    /// `restart` of an entry that does not run (disabled, or not at its
    /// group's level): nothing was started.
    NotStarted,
    /// `clinit wait`: the group settled in FAILED (client side).
    GroupFailed,
}

impl ErrorCode {
    /// The code as it is on the wire and in messages (`NO_SUCH_GROUP`).
    pub fn name(self) -> String {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::String(s)) => s,
            _ => format!("{self:?}"),
        }
    }

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
            ErrorCode::Lagged => 17,
            ErrorCode::Limit => 18,
            ErrorCode::EtcdUnreachable => 19,
            ErrorCode::StaleToken => 21,
            ErrorCode::NoSuchParam => 3,
            ErrorCode::BadValue => 7,
            ErrorCode::NotLive => 27,
            ErrorCode::Maintenance => 28,
            ErrorCode::NotStarted => 29,
            ErrorCode::GroupFailed => 30,
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
    /// CPU seconds of its process tree (only when a status asks for
    /// `usage`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<f64>,
    /// Resident memory of its process tree, KiB (with `usage`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rss_kib: Option<u64>,
}

/// Where a page of status starts: the index of a group among those asked
/// for, and of an entry in it.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct StatusCursor {
    pub group: usize,
    pub entry: usize,
}

/// About how many bytes of status (or of a lock listing) one page holds
/// (a frame is 4 MiB).
pub const STATUS_PAGE: usize = 3 * 1024 * 1024;

/// Bytes `v` takes as JSON (without making the JSON).
pub fn json_len<T: serde::Serialize>(v: &T) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len();
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    let _ = serde_json::to_writer(&mut c, v);
    c.0
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct GroupStatus {
    pub group: String,
    pub level: Option<String>,
    pub state: GroupState,
    pub entries: Vec<EntryStatus>,
    /// Cluster mode, an exclusive group: the node that owns it and its
    /// fencing token (absent: no node owns it, or not exclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<i64>,
    /// The level it was last told, kept across restarts (its goal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goal: Option<String>,
    /// How many of its entries gave up (too many errors in a row); the
    /// short status shows `(N gave up)`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub gave_up: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
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
    /// This node in its cluster; `None` in single-node mode.
    Node {
        cluster: Option<Box<crate::cluster::agent::ClusterView>>,
    },
    Status {
        groups: Vec<GroupStatus>,
        /// More follows: ask again with `from` set to this. The first group
        /// of the next page continues the last of this one when it has the
        /// same name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        more: Option<StatusCursor>,
    },
    Error(ErrorReply),
    /// A lock granted, with its fencing token.
    Granted {
        name: String,
        mode: LockMode,
        token: u64,
        /// Cluster mode: if this connection closes while the lock is held,
        /// the lock may be gone within this many milliseconds: a holder
        /// stops what it does under the lock within that time (`clinit
        /// lock` kills its command).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        grace_ms: Option<u64>,
    },
    Lease {
        lease: u64,
        ttl_ms: u64,
    },
    Locks {
        containers: Vec<ContainerStatus>,
        /// More follows: ask again with `after` set to this.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        more: Option<String>,
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
    /// The first frame of an events subscription: the oldest and newest
    /// event numbers kept, and when this daemon run started (Unix seconds;
    /// numbers start at 1 in every run).
    Subscribed {
        first: u64,
        last: u64,
        started: f64,
    },
    /// One event of a subscription.
    Event {
        event: Box<crate::events::Event>,
    },
    /// Events after `since` are no longer kept: the next one sent is
    /// `first` (the oldest kept).
    Gap {
        since: u64,
        first: u64,
    },
    /// The end of a subscription without `follow`: every event up to
    /// `last` was sent.
    EventsEnd {
        last: u64,
    },
    Explain {
        explanations: Vec<crate::explain::Explanation>,
    },
    /// The answer to [`Request::Null`].
    Alive {
        version: String,
        pid: u32,
        /// Seconds since the daemon started.
        uptime: f64,
        /// Maintenance mode is on.
        #[serde(default)]
        maintenance: bool,
    },
    Params {
        params: Vec<crate::params::ParamView>,
    },
    /// A parameter set live: before and now.
    SetPar {
        previous: Box<crate::params::ParamView>,
        now: Box<crate::params::ParamView>,
    },
    LastWords {
        lines: Vec<String>,
    },
    /// The rows of a survey: one array of values per row, in the order of
    /// `columns`.
    Survey {
        columns: Vec<String>,
        rows: Vec<Vec<serde_json::Value>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        more: Option<usize>,
    },
}

/// A reply on the wire: `{"id": N, "kind": ..., the reply's fields}`.
/// Deserialized by `framed`, not by a derived `flatten`.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ResponseFrame {
    pub id: u64,
    #[serde(flatten)]
    pub reply: Reply,
}

impl<'de> Deserialize<'de> for ResponseFrame {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (id, reply) = framed(d, "reply")?;
        Ok(ResponseFrame { id, reply })
    }
}

/// Reads a frame object: its `id` is set aside and the rest of the map goes
/// straight to `T` (an internally tagged enum), which buffers it once. A
/// derived `#[serde(flatten)]` buffers the whole object first and `T` then
/// buffers it again; that was a measurable part of a lock round trip.
fn framed<'de, D, T>(d: D, what: &'static str) -> Result<(u64, T), D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    use serde::de::{Error, MapAccess, Visitor, value::MapAccessDeserializer};

    struct Frame<T>(std::marker::PhantomData<T>, &'static str);

    impl<'de, T: Deserialize<'de>> Visitor<'de> for Frame<T> {
        type Value = (u64, T);

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(f, "a {} object", self.1)
        }

        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            let mut id = None;
            let t = T::deserialize(MapAccessDeserializer::new(IdAside { map, id: &mut id }))?;
            let id = id.ok_or_else(|| A::Error::missing_field("id"))?;
            Ok((id, t))
        }
    }

    d.deserialize_map(Frame(std::marker::PhantomData, what))
}

/// A map with its `id` entry taken out (into `id`).
struct IdAside<'a, A> {
    map: A,
    id: &'a mut Option<u64>,
}

/// A map key, borrowed from the input when it has no escapes.
enum Key<'de> {
    Borrowed(&'de str),
    Owned(String),
}

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> serde::de::Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key::Borrowed(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key::Owned(v.to_string()))
            }
            fn visit_string<E>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key::Owned(v))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

impl<'de, A: serde::de::MapAccess<'de>> serde::de::MapAccess<'de> for IdAside<'_, A> {
    type Error = A::Error;

    fn next_key_seed<K: serde::de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        use serde::de::{
            Error,
            value::{BorrowedStrDeserializer, StringDeserializer},
        };
        loop {
            let key = match self.map.next_key::<Key<'de>>()? {
                None => return Ok(None),
                Some(k) => k,
            };
            let name = match &key {
                Key::Borrowed(s) => *s,
                Key::Owned(s) => s.as_str(),
            };
            if name == "id" {
                if self.id.is_some() {
                    return Err(A::Error::duplicate_field("id"));
                }
                *self.id = Some(self.map.next_value()?);
                continue;
            }
            return match key {
                Key::Borrowed(s) => seed.deserialize(BorrowedStrDeserializer::new(s)),
                Key::Owned(s) => seed.deserialize(StringDeserializer::new(s)),
            }
            .map(Some);
        }
    }

    fn next_value_seed<V: serde::de::DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, A::Error> {
        self.map.next_value_seed(seed)
    }

    fn size_hint(&self) -> Option<usize> {
        self.map.size_hint()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("connection closed")]
    Closed,
    #[error("frame of {0} bytes exceeds the limit of {MAX_FRAME}")]
    TooLarge(usize),
    #[error("the stream ended inside a frame ({have} of its {want} bytes came)")]
    Truncated { have: usize, want: usize },
    #[error("{0}")]
    OverBudget(String),
    #[error("a frame was not completed within {0} s of its first byte (client_timeout)")]
    Slow(f64),
    #[error("malformed frame: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(&[0; 4]);
    serde_json::to_writer(&mut out, msg).expect("protocol types serialize");
    // Never a wrapped length: the caller checks the size (see
    // `encode_checked`); a body over u32 is cut to an empty frame here.
    let len = u32::try_from(out.len() - 4).unwrap_or(0);
    if len == 0 && out.len() > 4 {
        out.truncate(4);
    }
    out[..4].copy_from_slice(&len.to_be_bytes());
    out
}

/// [`encode`], or the size of the body when it is over [`MAX_FRAME`] (the
/// frame is not made).
pub fn encode_checked<T: Serialize>(msg: &T) -> Result<Vec<u8>, usize> {
    let out = encode(msg);
    match out.len() - 4 {
        0 if out.len() == 4 => Err(usize::MAX),
        n if n > MAX_FRAME => Err(n),
        _ => Ok(out),
    }
}

/// A request frame's body. Lock acquires and releases as this crate's
/// client writes them (`{"id":N,"op":"lock_acquire",...`) take a fast path
/// that reads them as one flat struct; everything else, and anything the
/// fast path does not take, goes through [`RequestFrame`]'s deserializer,
/// which is the reference: the fast path only ever gives what it would.
pub fn decode_request(body: &[u8]) -> Result<RequestFrame, serde_json::Error> {
    match hot_request(body) {
        Some(f) => Ok(f),
        None => serde_json::from_slice(body),
    }
}

/// The fast path of [`decode_request`]: `None` when it does not apply.
fn hot_request(body: &[u8]) -> Option<RequestFrame> {
    /// The fields of both hot requests, and no other: a field the fast
    /// path would skip unchecked (a number out of range, found by fuzzing)
    /// sends the frame to the reference.
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Hot<'a> {
        id: u64,
        op: &'a str,
        name: String,
        #[serde(default)]
        mode: Option<LockMode>,
        #[serde(default)]
        wait: bool,
        #[serde(default)]
        timeout_ms: Option<u64>,
        #[serde(default)]
        lease: Option<u64>,
        #[serde(default)]
        what: String,
    }
    if !hot_op(body, b"\"op\":\"lock_") {
        return None;
    }
    // A field the fast path skips is not checked as the reference (which
    // reads every field) checks it: so no escape at all (a lone surrogate
    // `\ud800` in a skipped string), and UTF-8 throughout (both found by
    // fuzzing). This crate's client escapes nothing in a plain name.
    if body.contains(&b'\\') {
        return None;
    }
    let h = serde_json::from_str::<Hot>(std::str::from_utf8(body).ok()?).ok()?;
    // Exhaustive literals: a new field in either request does not compile
    // until it is read here too.
    let req = match (h.op, h.mode) {
        ("lock_acquire", Some(mode)) => Request::LockAcquire {
            name: h.name,
            mode,
            wait: h.wait,
            timeout_ms: h.timeout_ms,
            lease: h.lease,
            what: h.what,
        },
        ("lock_release", _) => Request::LockRelease {
            name: h.name,
            lease: h.lease,
        },
        _ => return None,
    };
    Some(RequestFrame { id: h.id, req })
}

/// A reply frame's body: lock grants and plain `ok`s, as the daemon writes
/// them, take a fast path like [`decode_request`]'s.
pub fn decode_reply(body: &[u8]) -> Result<ResponseFrame, serde_json::Error> {
    match hot_reply(body) {
        Some(f) => Ok(f),
        None => serde_json::from_slice(body),
    }
}

/// The fast path of [`decode_reply`]: `None` when it does not apply.
fn hot_reply(body: &[u8]) -> Option<ResponseFrame> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Hot<'a> {
        id: u64,
        kind: &'a str,
        name: Option<String>,
        mode: Option<LockMode>,
        token: Option<u64>,
        grace_ms: Option<u64>,
    }
    // Only these two kinds: any other reply (a listing can be megabytes)
    // is not read twice.
    if !hot_op(body, b"\"kind\":\"ok\"") && !hot_op(body, b"\"kind\":\"granted\"") {
        return None;
    }
    if body.contains(&b'\\') {
        return None;
    }
    let h = serde_json::from_str::<Hot>(std::str::from_utf8(body).ok()?).ok()?;
    let reply = match (h.kind, h.name, h.mode, h.token) {
        ("ok", None, None, None) => Reply::Ok,
        ("granted", Some(name), Some(mode), Some(token)) => Reply::Granted {
            name,
            mode,
            token,
            grace_ms: h.grace_ms,
        },
        _ => return None,
    };
    Some(ResponseFrame { id: h.id, reply })
}

/// Whether `body` starts `{"id":DIGITS,` followed by `tag`: the shape this
/// crate writes, checked before a fast path parses anything.
fn hot_op(body: &[u8], tag: &[u8]) -> bool {
    let Some(rest) = body.strip_prefix(b"{\"id\":") else {
        return false;
    };
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    rest[digits..]
        .strip_prefix(b",")
        .is_some_and(|r| r.starts_with(tag))
}

/// The length of the whole frame at the start of `buf` (4 + its body), or
/// `None` while part of it has yet to arrive.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, FrameError> {
    let Some(len) = buf.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes(len.try_into().expect("4 bytes")) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    Ok((buf.len() >= 4 + len).then_some(4 + len))
}

/// Blocking read of one frame (the client side).
pub fn read_frame<T: for<'de> Deserialize<'de>>(r: &mut impl Read) -> Result<T, FrameError> {
    read_frame_with(r, |b| serde_json::from_slice(b))
}

/// Blocking read of one frame, decoded by `decode`.
pub fn read_frame_with<T>(
    r: &mut impl Read,
    decode: impl FnOnce(&[u8]) -> Result<T, serde_json::Error>,
) -> Result<T, FrameError> {
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
    Ok(decode(&body)?)
}

pub fn write_frame<T: Serialize>(w: &mut impl Write, msg: &T) -> Result<(), FrameError> {
    w.write_all(&encode(msg))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inputs the fuzzer (bench/fuzz.sh, target `frame`) found where a
    /// fast path took what the reference deserializer refuses; each must
    /// now be refused by both, or taken by both alike.
    #[test]
    fn fast_paths_agree_with_the_reference_on_fuzzer_findings() {
        let table: &[&[u8]] = &[
            // Not UTF-8 in a field the fast path skips.
            b"{\"id\":0,\"op\":\"lock_acquire\",\"name\":\"vol\",\"mode\":\"exclusive\",\"wa't\":true,\"timeout_ms\":null,\"lease\":null,\"7hat\":\"\x8e\"}",
            b"{\"id\":1,\"kind\":\"ok\",\"x\":\"\xff\"}",
            // A lone surrogate escape in a skipped field.
            b"{\"id\":0,\"op\":\"lock_acquire\",\"name\":\"j\",\"mode\":\"exclusive\",\"x\":\"\\ud800\"}",
            b"{\"id\":1,\"kind\":\"ok\",\"x\":\"\\udc00\"}",
            // A number out of range in a skipped field.
            b"{\"id\":0,\"op\":\"lock_acquire\",\"name\":\"j\",\"mode\":\"exclusive\",\"x\":9006E00104747500}",
            b"{\"id\":1,\"kind\":\"ok\",\"x\":1e999}",
            // What the client writes still takes the fast path alike.
            b"{\"id\":7,\"op\":\"lock_acquire\",\"name\":\"vol\",\"mode\":\"shared\",\"wait\":true,\"timeout_ms\":null,\"lease\":null,\"what\":\"x\"}",
            b"{\"id\":8,\"op\":\"lock_release\",\"name\":\"vol\",\"lease\":null}",
        ];
        for body in table {
            let fast = decode_request(body).ok();
            let reference = serde_json::from_slice::<RequestFrame>(body).ok();
            assert_eq!(fast, reference, "{}", String::from_utf8_lossy(body));
            let fast = decode_reply(body).ok();
            let reference = serde_json::from_slice::<ResponseFrame>(body).ok();
            assert_eq!(fast, reference, "{}", String::from_utf8_lossy(body));
        }
    }

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
                    from: None,
                    usage: false,
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
    fn frames_read_the_id_wherever_it_is() {
        let acquire = Request::LockAcquire {
            name: "vol".into(),
            mode: LockMode::Shared,
            wait: true,
            timeout_ms: Some(5),
            lease: None,
            what: "x".into(),
        };
        let record = Request::Record(RecordOp::Delete {
            container: "c".into(),
            key: "k".into(),
            sig: 0,
            fence: None,
        });
        let ok = [
            (r#"{"id":7,"op":"ping"}"#, 7, Request::Ping),
            (r#"{"op":"ping","id":7}"#, 7, Request::Ping),
            (
                r#"{"op":"ping","extra":[1,{"a":2}],"id":7}"#,
                7,
                Request::Ping,
            ),
            (
                r#"{"op":"lock_acquire","name":"vol","id":9,"mode":"shared","wait":true,"timeout_ms":5,"what":"x"}"#,
                9,
                acquire.clone(),
            ),
            // An escaped key is not borrowed from the input.
            (
                r#"{"\u0069d":3,"op":"lock_acquire","n\u0061me":"vol","mode":"shared","wait":true,"timeout_ms":5,"what":"x"}"#,
                3,
                acquire,
            ),
            (
                r#"{"id":1,"op":"record","record":"delete","container":"c","key":"k","sig":0}"#,
                1,
                record,
            ),
        ];
        for (json, id, req) in ok {
            let f: RequestFrame =
                serde_json::from_str(json).unwrap_or_else(|e| panic!("{json}: {e}"));
            assert_eq!(f, RequestFrame { id, req }, "{json}");
        }
        let bad = [
            (r#"{"op":"ping"}"#, "missing field `id`"),
            (r#"{"id":1,"op":"ping","id":2}"#, "duplicate field `id`"),
            (r#"{"id":1}"#, "missing field `op`"),
            (r#"{"id":1,"op":"fly"}"#, "unknown variant `fly`"),
            (r#"{"id":"1","op":"ping"}"#, "invalid type: string"),
            (
                r#"{"id":1,"op":"tell","group":"web"}"#,
                "missing field `level`",
            ),
            (r#"[1,"ping"]"#, "expected a request object"),
        ];
        for (json, want) in bad {
            let e = serde_json::from_str::<RequestFrame>(json)
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{json}: {e}");
        }
        let replies = [
            (
                ResponseFrame {
                    id: 4,
                    reply: Reply::Granted {
                        name: "vol".into(),
                        mode: LockMode::Exclusive,
                        token: 12,
                        grace_ms: None,
                    },
                },
                r#"{"id":4,"kind":"granted","name":"vol","mode":"exclusive","token":12}"#,
            ),
            (
                ResponseFrame {
                    id: 6,
                    reply: Reply::Granted {
                        name: "vol".into(),
                        mode: LockMode::Shared,
                        token: 5 << 20 | 1,
                        grace_ms: Some(2500),
                    },
                },
                r#"{"id":6,"kind":"granted","name":"vol","mode":"shared","token":5242881,"grace_ms":2500}"#,
            ),
            (
                ResponseFrame {
                    id: 5,
                    reply: Reply::Error(ErrorReply {
                        code: ErrorCode::Busy,
                        message: "held".into(),
                    }),
                },
                r#"{"id":5,"kind":"error","code":"BUSY","message":"held"}"#,
            ),
        ];
        for (frame, json) in replies {
            assert_eq!(serde_json::to_string(&frame).unwrap(), json);
            assert_eq!(serde_json::from_str::<ResponseFrame>(json).unwrap(), frame);
        }
    }

    #[test]
    fn fast_paths_give_what_the_reference_decoders_give() {
        fn same<T: PartialEq + std::fmt::Debug>(
            a: Result<T, serde_json::Error>,
            b: Result<T, serde_json::Error>,
            json: &str,
        ) {
            match (a, b) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "{json}"),
                (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "{json}"),
                (a, b) => panic!("{json}: fast {a:?}, reference {b:?}"),
            }
        }
        let requests = [
            r#"{"id":1,"op":"lock_acquire","name":"v","mode":"exclusive","wait":true,"timeout_ms":null,"lease":null,"what":"x"}"#,
            r#"{"id":2,"op":"lock_acquire","name":"v","mode":"shared"}"#,
            r#"{"id":3,"op":"lock_acquire","name":"v","mode":"shared","timeout_ms":5,"lease":9,"extra":1}"#,
            r#"{"id":4,"op":"lock_acquire","name":"v"}"#,
            r#"{"id":5,"op":"lock_acquire","name":"v","mode":null}"#,
            r#"{"id":6,"op":"lock_acquire","name":"v","mode":"shared","wait":null}"#,
            r#"{"id":7,"op":"lock_acquire","name":"v","name":"w","mode":"shared"}"#,
            r#"{"id":8,"op":"lock_acquire","name":"\u0076","mode":"shared"}"#,
            r#"{"id":9,"op":"lock_release","name":"v","lease":null}"#,
            r#"{"id":10,"op":"lock_release","name":"v","mode":"bogus"}"#,
            r#"{"id":11,"op":"lock_release","name":"v","mode":"shared","wait":true}"#,
            r#"{"id":12,"op":"lock_release"}"#,
            r#"{"id":13,"op":"lock_releasex","name":"v"}"#,
            r#"{"id":14,"op":"lock_acquire","op":"ping","name":"v","mode":"shared"}"#,
            r#"{"id":15,"op":"locks","name":"v"}"#,
            r#"{"id":-1,"op":"lock_release","name":"v"}"#,
            r#"{"id":16,"op":"lock_release","name":"v"} x"#,
            r#"{"id":17,"op":"lock_release","name":"v""#,
            r#"{"op":"lock_release","name":"v","id":18}"#,
        ];
        for json in requests {
            same(
                decode_request(json.as_bytes()),
                serde_json::from_str(json),
                json,
            );
        }
        // The fast path did take the common shapes; one with a field it
        // does not know (3) goes to the reference.
        assert!(hot_request(requests[2].as_bytes()).is_none());
        for i in [0, 1, 8, 10] {
            assert!(
                hot_request(requests[i].as_bytes()).is_some(),
                "{}",
                requests[i]
            );
        }
        assert!(hot_request(requests[18].as_bytes()).is_none());
        let replies = [
            r#"{"id":1,"kind":"ok"}"#,
            r#"{"id":2,"kind":"granted","name":"v","mode":"shared","token":7}"#,
            r#"{"id":3,"kind":"granted","name":"v","mode":"shared"}"#,
            r#"{"id":4,"kind":"ok","token":7}"#,
            r#"{"id":5,"kind":"error","code":"BUSY","message":"held"}"#,
            r#"{"id":6,"kind":"pong"}"#,
            r#"{"id":7,"kind":"granted","name":"v","mode":"shared","token":-7}"#,
        ];
        for json in replies {
            same(
                decode_reply(json.as_bytes()),
                serde_json::from_str(json),
                json,
            );
        }
        for i in [0, 1] {
            assert!(hot_reply(replies[i].as_bytes()).is_some(), "{}", replies[i]);
        }
        assert!(hot_reply(replies[4].as_bytes()).is_none());
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
