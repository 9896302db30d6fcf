//! One client connection, over any transport: framing, the hello and
//! version exchange, request ids, replies in request order, and streamed
//! replies (an events subscription answers with many frames).
//!
//! A connection's requests are served one after the other: a request is
//! read, routed ([`super::route`]), checked against the [`Policy`], served
//! (in this task for locks, records and events; by the event loop for
//! anything that needs the supervisor), and its reply written before the
//! next request is looked at. Pipelined requests wait in the buffer, so
//! replies can never be reordered, whatever a backend's latency. While a
//! reply is awaited (a lock that waits, a `wait`, a backend that answers
//! later) the connection keeps reading, to notice a client that went away.
//!
//! On the UNIX transport, after writing a reply the connection busy-waits
//! briefly for the next request (see [`crate::spin`]).

use super::event_loop::Msg;
use super::listen::Stream;
use super::policy::{Peer, Policy};
use super::route::{self, Target};
use crate::events::Events;
use crate::proto::{self, ErrorCode, ErrorReply, Hello, PROTOCOL_VERSION, Reply, ResponseFrame};
use crate::store::{LockBackend, RecordBackend};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Notify, mpsc, oneshot, watch};

/// What every connection task shares with the event loop.
pub(crate) struct Shared {
    /// Requests for the event loop.
    pub tx: mpsc::Sender<Msg>,
    /// Open connections.
    pub conns: AtomicUsize,
    /// The next connection id (from 1; lease ids have the top bit set).
    pub next_conn: AtomicU64,
    pub locks: Arc<Mutex<dyn LockBackend>>,
    pub records: Arc<Mutex<dyn RecordBackend>>,
    pub events: Events,
    pub policy: Policy,
    /// This machine's name, for lock holders.
    pub host: std::sync::Arc<str>,
    /// Whether start-up restore is over (until then requests wait).
    pub restored: watch::Sender<bool>,
    /// The daemon is exiting: subscriptions end.
    pub closing: watch::Sender<bool>,
    /// A connection task made the lock service's next deadline earlier.
    pub deadline_changed: Arc<Notify>,
    /// Requests read and not yet answered on their connection.
    pub in_request: InRequest,
    /// A connection task is spinning for its client's next request.
    pub spinning: AtomicBool,
    /// What one client may cost (the limit settings).
    pub limits: Limits,
    /// Refusals logged per peer in the current window (see [`LogLimiter`]).
    pub refusals: LogLimiter,
    /// The supervisor's cltab as of its last reread: a reread reads the
    /// file again and diffs against it off the event loop.
    pub cltab: Mutex<Arc<crate::cltab::Cltab>>,
    /// Cluster mode: the configuration and how the node stands.
    pub cluster: Option<Arc<crate::cluster::agent::ClusterHandle>>,
    /// The leases each limited user made (pruned of ended ones when
    /// counted).
    pub peer_leases: Mutex<std::collections::HashMap<String, Vec<u64>>>,
    /// The connections open per peer.
    pub peer_connections: Mutex<std::collections::HashMap<String, usize>>,
    /// The bytes of large frames each limited user is sending.
    pub frame_bytes: Arc<Mutex<std::collections::HashMap<String, usize>>>,
    /// Cluster mode: connections to close (they held a lock whose claim
    /// was lost), and the bell their tasks listen for.
    pub kicked: Mutex<std::collections::HashSet<u64>>,
    pub kick_bell: Notify,
    /// The daemon's parameters above the cltab (`--set`, `clinit setpar`).
    pub params: Arc<Mutex<crate::params::Params>>,
    /// What `/metrics` counts.
    pub metrics: super::metrics::Metrics,
}

/// The limit settings (see the README's "Limits"), resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// How long a client may take to send its hello, and a frame from its
    /// first byte to its last.
    pub client_timeout: std::time::Duration,
    pub lease_ttl_max: std::time::Duration,
    pub peer_connections_max: usize,
    pub peer_locks_max: usize,
    pub peer_leases_max: usize,
    pub peer_frame_bytes_max: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            client_timeout: std::time::Duration::from_secs(10),
            lease_ttl_max: std::time::Duration::from_secs(3600),
            peer_connections_max: 256,
            peer_locks_max: 1024,
            peer_leases_max: 64,
            peer_frame_bytes_max: 16 << 20,
        }
    }
}

impl Shared {
    /// Close connection `conn` (cluster mode: its lock's claim was lost;
    /// its client learns it by the connection closing).
    pub fn kick(&self, conn: u64) {
        self.kicked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(conn);
        self.kick_bell.notify_waiters();
    }

    /// Until connection `conn` is kicked.
    async fn kicked(&self, conn: u64) {
        loop {
            let bell = self.kick_bell.notified();
            tokio::pin!(bell);
            bell.as_mut().enable();
            if self
                .kicked
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&conn)
            {
                return;
            }
            bell.await;
        }
    }
}

impl Limits {
    /// The defaults, with what the cltab's settings say instead.
    pub fn from_settings(s: &crate::cltab::Settings) -> Limits {
        let d = Limits::default();
        Limits {
            client_timeout: s.client_timeout.unwrap_or(d.client_timeout),
            lease_ttl_max: s.lease_ttl_max.unwrap_or(d.lease_ttl_max),
            peer_connections_max: s.peer_connections_max.unwrap_or(d.peer_connections_max),
            peer_locks_max: s.peer_locks_max.unwrap_or(d.peer_locks_max),
            peer_leases_max: s.peer_leases_max.unwrap_or(d.peer_leases_max),
            peer_frame_bytes_max: s.peer_frame_bytes_max.unwrap_or(d.peer_frame_bytes_max),
        }
    }
}

/// One open connection counted against its peer; uncounted when dropped.
struct PeerSlot<'a> {
    shared: &'a Shared,
    key: String,
}

impl Drop for PeerSlot<'_> {
    fn drop(&mut self) {
        let mut m = self
            .shared
            .peer_connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = m.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.key);
            }
        }
    }
}

impl Shared {
    /// Root and the daemon's user on the local socket: no per-user limit
    /// applies to them.
    pub fn exempt(&self, peer: &Peer) -> bool {
        self.limited(peer).is_none()
    }

    /// Who `peer` is for per-peer limits, unless it is exempt (root and
    /// the daemon's user): a local uid, or a certificate identity (never
    /// exempt).
    pub fn limited<'p>(&self, peer: &'p Peer) -> Option<crate::lock::Who<'p>> {
        match peer {
            Peer::Local(u) if u.uid == 0 || u.uid == self.policy.daemon_uid => None,
            Peer::Local(u) => Some(crate::lock::Who::Uid(u.uid)),
            Peer::Certificate { subject } => Some(crate::lock::Who::Certificate(subject)),
        }
    }

    /// Count a new connection of `peer`, unless it has as many open as
    /// `peer_connections_max` allows (root and the daemon's user are not
    /// limited).
    fn open_slot(&self, peer: &Peer) -> Result<Option<PeerSlot<'_>>, String> {
        if self.exempt(peer) {
            return Ok(None);
        }
        let key = peer.key();
        let mut m = self
            .peer_connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let n = m.entry(key.clone()).or_insert(0);
        if *n >= self.limits.peer_connections_max {
            return Err(format!(
                "{key} has {n} connections open, the most peer_connections_max allows"
            ));
        }
        *n += 1;
        Ok(Some(PeerSlot { shared: self, key }))
    }
}

/// At most [`LogLimiter::LINES`] log lines per peer in each
/// [`LogLimiter::WINDOW`]; the lines held back are counted and reported
/// with the next line logged. A client that repeats a refused request in a
/// loop writes a few lines a minute, not a line per request.
#[derive(Default)]
pub struct LogLimiter(Mutex<std::collections::HashMap<String, (Instant, u32, u32)>>);

impl LogLimiter {
    pub const LINES: u32 = 5;
    pub const WINDOW: std::time::Duration = std::time::Duration::from_secs(10);

    /// Whether a line about `peer` may be logged now, and how many were
    /// held back since the last one logged.
    pub fn allow(&self, peer: &str, now: Instant) -> Option<u32> {
        let mut m = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if m.len() > 10_000 {
            m.retain(|_, (start, _, _)| now.duration_since(*start) < Self::WINDOW);
        }
        let (start, logged, held) = m.entry(peer.to_string()).or_insert((now, 0, 0));
        if now.duration_since(*start) >= Self::WINDOW {
            *start = now;
            *logged = 0;
        }
        if *logged < Self::LINES {
            *logged += 1;
            Some(std::mem::take(held))
        } else {
            *held += 1;
            None
        }
    }
}

impl Shared {
    /// A `Shared` for unit tests: an in-process lock service over `state`,
    /// `records`, open policy, restored.
    #[cfg(test)]
    pub fn for_tests(
        tx: mpsc::Sender<Msg>,
        state: Arc<Mutex<dyn crate::store::StateStore>>,
        records: Arc<Mutex<dyn RecordBackend>>,
    ) -> Shared {
        Shared {
            tx,
            conns: Default::default(),
            next_conn: 1.into(),
            locks: crate::lock::service::LocalLocks::shared(0, state, Default::default()),
            records,
            events: Events::new(100),
            policy: Policy::default(),
            host: "h".into(),
            restored: watch::Sender::new(true),
            closing: watch::Sender::new(false),
            deadline_changed: Default::default(),
            in_request: Default::default(),
            spinning: Default::default(),
            limits: Limits::default(),
            refusals: Default::default(),
            peer_leases: Default::default(),
            cltab: Mutex::new(Arc::new(crate::cltab::Cltab::empty(
                std::path::Path::new("cltab"),
                Default::default(),
            ))),
            cluster: None,
            peer_connections: Default::default(),
            frame_bytes: Default::default(),
            kicked: Default::default(),
            kick_bell: Default::default(),
            params: Default::default(),
            metrics: Default::default(),
        }
    }

    /// The parameters set above the cltab, as settings to lay over it.
    pub fn overrides(&self) -> crate::cltab::Settings {
        self.params
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .overrides()
    }

    pub fn locks(&self) -> std::sync::MutexGuard<'_, dyn LockBackend + 'static> {
        self.locks.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn records(&self) -> std::sync::MutexGuard<'_, dyn RecordBackend + 'static> {
        self.records.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Counts the requests that connection tasks have read and not yet
/// answered, so that the daemon can wait for the replies at exit.
#[derive(Default)]
pub(crate) struct InRequest {
    count: AtomicUsize,
    done: Notify,
}

impl InRequest {
    /// Marks one request as under way until the guard is dropped.
    pub fn begin(&self) -> InRequestGuard<'_> {
        self.count.fetch_add(1, Ordering::SeqCst);
        InRequestGuard(self)
    }

    /// Resolves once no request is under way.
    pub async fn idle(&self) {
        while self.count.load(Ordering::SeqCst) > 0 {
            // notify_one keeps a permit when nobody waits yet, so a guard
            // dropped between the check and this await is not missed.
            self.done.notified().await;
        }
    }
}

pub(crate) struct InRequestGuard<'a>(&'a InRequest);

impl Drop for InRequestGuard<'_> {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::SeqCst);
        self.0.done.notify_one();
    }
}

/// The read buffer a connection keeps between frames, at most.
const KEEP_BUF: usize = 64 * 1024;

/// The bytes of large frames (over [`KEEP_BUF`]) that each limited user's
/// connections are receiving at once, against `peer_frame_bytes_max`.
#[derive(Clone)]
pub(crate) struct FrameBudget {
    pub used: Arc<Mutex<std::collections::HashMap<String, usize>>>,
    /// Whose budget: [`Peer::key`].
    pub key: String,
    pub max: usize,
}

/// A connection's stream with the frames read ahead of time.
pub(crate) struct Conn<S> {
    stream: S,
    /// How long a frame may take from its first byte to its last.
    frame_deadline: std::time::Duration,
    buf: Vec<u8>,
    /// Bytes of `buf` that belong to the frame last returned by `next`.
    used: usize,
    /// The user's budget for large frames (`None`: not limited), and what
    /// the frame being received holds of it.
    budget: Option<FrameBudget>,
    reserved: usize,
}

impl<S> Drop for Conn<S> {
    fn drop(&mut self) {
        self.release();
    }
}

impl<S> Conn<S> {
    /// Give back what the last large frame held of the user's budget.
    fn release(&mut self) {
        if let (Some(b), true) = (&self.budget, self.reserved > 0) {
            let mut m = b.used.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(n) = m.get_mut(&b.key) {
                *n = n.saturating_sub(self.reserved);
                if *n == 0 {
                    m.remove(&b.key);
                }
            }
        }
        self.reserved = 0;
    }

    /// Count a large frame of `want` bytes against the user's budget.
    fn reserve(&mut self, want: usize) -> Result<(), proto::FrameError> {
        let Some(b) = &self.budget else {
            return Ok(());
        };
        if want <= KEEP_BUF || self.reserved > 0 {
            return Ok(());
        }
        let mut m = b.used.lock().unwrap_or_else(PoisonError::into_inner);
        let cur = m.get(&b.key).copied().unwrap_or(0);
        if cur + want > b.max {
            return Err(proto::FrameError::OverBudget(format!(
                "{} is already sending {cur} bytes in large frames; this frame of {want} bytes would pass peer_frame_bytes_max ({})",
                b.key, b.max
            )));
        }
        m.insert(b.key.clone(), cur + want);
        self.reserved = want;
        Ok(())
    }
}

impl<S: Stream> Conn<S> {
    pub fn new(stream: S, frame_deadline: std::time::Duration) -> Conn<S> {
        Conn {
            stream,
            frame_deadline,
            buf: Vec::new(),
            used: 0,
            budget: None,
            reserved: 0,
        }
    }

    /// Limit the large frames of this connection's user.
    pub fn with_budget(mut self, budget: Option<FrameBudget>) -> Conn<S> {
        self.budget = budget;
        self
    }

    /// The next frame's body (valid until the next call); `Closed` at end
    /// of stream.
    pub async fn next(&mut self) -> Result<&[u8], proto::FrameError> {
        self.buf.drain(..self.used);
        self.used = 0;
        self.release();
        // A large frame is not a reason to keep its memory for the life of
        // the connection: an idle connection keeps at most KEEP_BUF.
        if self.buf.capacity() > KEEP_BUF && self.buf.len() <= KEEP_BUF {
            self.buf.shrink_to(KEEP_BUF);
        }
        // Once a frame has begun, the rest must come within the deadline:
        // a client cannot hold a half-sent frame's memory for long.
        let mut begun: Option<Instant> = None;
        loop {
            if let Some(n) = proto::frame_len(&self.buf)? {
                self.used = n;
                return Ok(&self.buf[4..n]);
            }
            if let Some(len) = self.buf.get(..4) {
                let want = 4 + u32::from_be_bytes(len.try_into().expect("4 bytes")) as usize;
                self.reserve(want)?;
            }
            let got = if self.buf.is_empty() {
                self.fill().await?
            } else {
                let since = *begun.get_or_insert_with(Instant::now);
                let left = self.frame_deadline.saturating_sub(since.elapsed());
                match tokio::time::timeout(left, self.fill()).await {
                    Ok(r) => r?,
                    Err(_) => {
                        return Err(proto::FrameError::Slow(self.frame_deadline.as_secs_f64()));
                    }
                }
            };
            if got == 0 {
                return Err(match self.buf.get(..4) {
                    None if self.buf.is_empty() => proto::FrameError::Closed,
                    None => proto::FrameError::Truncated {
                        have: self.buf.len(),
                        want: 4,
                    },
                    Some(len) => proto::FrameError::Truncated {
                        have: self.buf.len() - 4,
                        want: u32::from_be_bytes(len.try_into().expect("4 bytes")) as usize,
                    },
                });
            }
        }
    }

    /// Whether a whole frame (or a framing error) is already buffered.
    pub fn has_frame(&self) -> bool {
        !matches!(proto::frame_len(&self.buf[self.used..]), Ok(None))
    }

    /// Poll the stream without sleeping until bytes, the end of stream or
    /// an error arrive (true; `next` tells which) or `budget` has passed
    /// (false; also at once when the transport cannot read without
    /// waiting). Between polls the other tasks run and the runtime polls
    /// its sockets (with a zero timeout); the thread keeps its CPU (no
    /// `sched_yield`, which made 8 clients on 8 names slower).
    pub async fn spin_for_more(&mut self, budget: std::time::Duration) -> bool {
        let start = Instant::now();
        loop {
            self.buf.reserve(4096);
            match self.stream.try_read_buf(&mut self.buf) {
                None => return false,
                Some(Err(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Some(_) => return true,
            }
            if start.elapsed() >= budget {
                return false;
            }
            tokio::task::yield_now().await;
        }
    }

    /// Read what is available into the buffer (cancel-safe); 0 at end of
    /// stream.
    async fn fill(&mut self) -> std::io::Result<usize> {
        self.buf.reserve(4096);
        self.stream.read_buf(&mut self.buf).await
    }

    /// Resolves when the peer closes the connection (or it fails), keeping
    /// any bytes that arrive meanwhile. Pends forever once too much is
    /// buffered, leaving the rest in the socket.
    pub async fn closed(&mut self) {
        loop {
            if self.buf.len() > proto::MAX_FRAME + 4 {
                return std::future::pending().await;
            }
            match self.fill().await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }

    /// Write bytes already framed.
    pub async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// Write one reply. A reply over the frame limit is never sent cut or
    /// with a wrapped length: the client gets `TOO_LARGE` instead.
    pub async fn reply(&mut self, id: u64, reply: Reply) -> std::io::Result<()> {
        let frame = match proto::encode_checked(&ResponseFrame { id, reply }) {
            Ok(f) => f,
            Err(size) => {
                tracing::warn!("a reply of {size} bytes is over the frame limit; sent TOO_LARGE");
                proto::encode(&ResponseFrame {
                    id,
                    reply: error(
                        ErrorCode::TooLarge,
                        format!(
                            "the reply ({size} bytes) exceeds the frame limit of {} bytes",
                            proto::MAX_FRAME
                        ),
                    ),
                })
            }
        };
        self.write(&frame).await
    }

    /// Wait for a reply that comes later, noticing meanwhile a client that
    /// goes away (`None`: it did, or the reply will never come).
    pub async fn await_reply(&mut self, rx: oneshot::Receiver<Reply>) -> Option<Reply> {
        tokio::select! {
            r = rx => r.ok(),
            _ = self.closed() => None,
        }
    }
}

pub(crate) fn error(code: ErrorCode, message: String) -> Reply {
    Reply::Error(ErrorReply { code, message })
}

pub(crate) fn shutting_down() -> Reply {
    error(
        ErrorCode::ShuttingDown,
        "the daemon is shutting down".into(),
    )
}

/// The hello exchange: the client's version must be ours.
async fn hello<S: Stream>(c: &mut Conn<S>) -> bool {
    let hello = match c.next().await {
        Ok(b) => serde_json::from_slice::<Hello>(b).ok(),
        Err(_) => return false,
    };
    match hello {
        Some(h) if h.version == PROTOCOL_VERSION => {
            c.write(&proto::encode(&Hello::ours())).await.is_ok()
        }
        other => {
            let (code, msg) = match other {
                Some(h) => (
                    ErrorCode::VersionMismatch,
                    format!(
                        "protocol version {} not supported (daemon speaks {PROTOCOL_VERSION})",
                        h.version
                    ),
                ),
                None => (ErrorCode::BadRequest, "expected a hello frame".to_string()),
            };
            let _ = c.reply(0, error(code, msg)).await;
            false
        }
    }
}

/// The id of a frame that could not be decoded, if it has one.
fn id_of(body: &[u8]) -> u64 {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("id").and_then(|i| i.as_u64()))
        .unwrap_or(0)
}

/// One client connection: handshake, then requests until it closes. A bad
/// frame gets an error reply and the connection is closed; the daemon is
/// never disturbed.
pub(crate) async fn serve<S: Stream>(stream: S, peer: Peer, conn: u64, shared: &Shared) {
    let budget = shared.limited(&peer).map(|_| FrameBudget {
        used: shared.frame_bytes.clone(),
        key: peer.key(),
        max: shared.limits.peer_frame_bytes_max,
    });
    let mut c = Conn::new(stream, shared.limits.client_timeout).with_budget(budget);
    let _slot = match shared.open_slot(&peer) {
        Ok(slot) => slot,
        Err(why) => {
            if shared.refusals.allow(&peer.key(), Instant::now()).is_some() {
                tracing::warn!("connection refused: {why}");
            }
            let _ = tokio::time::timeout(shared.limits.client_timeout, async {
                let _ = c.next().await;
                c.reply(0, error(ErrorCode::Limit, why)).await
            })
            .await;
            return;
        }
    };
    let mut spin = crate::spin::Backoff::new(crate::spin::budget().min(crate::spin::DAEMON_MAX));
    // A connection that never says hello is not kept.
    match tokio::time::timeout(shared.limits.client_timeout, hello(&mut c)).await {
        Ok(true) => {}
        Ok(false) => return,
        Err(_) => {
            let msg = format!(
                "no hello within {} s (client_timeout)",
                shared.limits.client_timeout.as_secs_f64()
            );
            let _ = tokio::time::timeout(
                shared.limits.client_timeout,
                c.reply(0, error(ErrorCode::BadRequest, msg)),
            )
            .await;
            return;
        }
    }
    let mut restored = shared.restored.subscribe();
    let cluster = shared.cluster.is_some();
    loop {
        let next = if cluster {
            // A lock of this connection may be lost with its claim: then
            // the connection is closed (see Shared::kick).
            tokio::select! {
                r = c.next() => r,
                _ = shared.kicked(conn) => {
                    tracing::warn!("closing connection {conn}: a lock it held was lost with this node's claim");
                    return;
                }
            }
        } else {
            c.next().await
        };
        let body = match next {
            Ok(b) => b,
            Err(proto::FrameError::Closed) => return,
            Err(e) => {
                let _answering = shared.in_request.begin();
                let code = match e {
                    proto::FrameError::OverBudget(_) => ErrorCode::Limit,
                    _ => ErrorCode::BadRequest,
                };
                let _ = c.reply(0, error(code, e.to_string())).await;
                return;
            }
        };
        // Until the reply is written (or the task ends).
        let answering = shared.in_request.begin();
        let frame = match proto::decode_request(body) {
            Ok(f) => f,
            Err(e) => {
                let id = id_of(body);
                let r = error(ErrorCode::BadRequest, format!("bad request: {e}"));
                if c.reply(id, r).await.is_err() {
                    return;
                }
                continue;
            }
        };
        // Until start-up has restored the goals, every request waits.
        if !*restored.borrow() && restored.wait_for(|r| *r).await.is_err() {
            return;
        }
        let began = shared.metrics.on().then(Instant::now);
        let route = route::route(frame.req);
        let handler = route.handler;
        let who = match shared.policy.check(&peer, route.right) {
            Ok(who) => who,
            Err(e) => {
                if let Some(held) = shared.refusals.allow(&peer.key(), Instant::now()) {
                    let held = match held {
                        0 => String::new(),
                        n => format!(" ({n} more refusals of this peer were not logged)"),
                    };
                    // Tagged as the requests served on the loop are.
                    let tag = format!("{} c{conn}#{}", peer.key(), frame.id);
                    let _req = tracing::info_span!("req", tag = %tag).entered();
                    tracing::warn!(
                        "refused {}: {e}{held}",
                        route.describe.as_deref().unwrap_or(route.handler)
                    );
                }
                if c.reply(frame.id, error(ErrorCode::Access, e.to_string()))
                    .await
                    .is_err()
                {
                    return;
                }
                continue;
            }
        };
        // A reread reads and parses the cltab in a blocking task (a large
        // file must not hold the event loop), then applies it on the loop.
        let target = match route.target {
            Target::Reread => Target::Loop {
                job: reread_job(shared).await,
                may_block: false,
            },
            t => t,
        };
        let reply = match target {
            Target::Lock(call, what) => {
                match super::handlers::locks::call(shared, conn, &peer, call, what) {
                    crate::store::Pending::Ready(r) => r,
                    // A lock that waits: notice meanwhile when the client
                    // goes away, so its locks and waits are dropped.
                    crate::store::Pending::Later(rx) => {
                        let r = if cluster {
                            // Another lock of this connection may be lost
                            // meanwhile (see Shared::kick).
                            tokio::select! {
                                r = c.await_reply(rx) => r,
                                _ = shared.kicked(conn) => None,
                            }
                        } else {
                            c.await_reply(rx).await
                        };
                        match r {
                            Some(r) => r,
                            None => return,
                        }
                    }
                }
            }
            Target::Locks { name, after } => {
                super::handlers::locks::list(shared, name.as_deref(), after.as_deref())
            }
            Target::Record(op) => super::handlers::records::call(shared, &peer, op).await,
            Target::Events(query) => {
                if !super::handlers::events::stream(&mut c, frame.id, query, shared).await {
                    return;
                }
                drop(answering);
                continue;
            }
            Target::Loop { job, may_block } => {
                let (tx, rx) = oneshot::channel();
                let msg = Msg::Job {
                    job,
                    right: route.right,
                    describe: route.describe,
                    peer: peer.clone(),
                    who: who.unwrap_or_default(),
                    handler: route.handler,
                    tag: format!("{} c{conn}#{}", peer.key(), frame.id),
                    reply: tx,
                };
                if shared.tx.send(msg).await.is_err() {
                    // The event loop is finishing its exit.
                    let _ = c.reply(frame.id, shutting_down()).await;
                    return;
                }
                let r = if may_block {
                    // A wait: notice meanwhile when the client goes away.
                    c.await_reply(rx).await
                } else {
                    rx.await.ok()
                };
                match r {
                    Some(r) => r,
                    None => return,
                }
            }
            // Made a loop job above; never a panic in the daemon.
            Target::Reread => error(ErrorCode::Internal, "reread not routed".into()),
        };
        if let Some(t0) = began {
            let took = t0.elapsed();
            shared.metrics.request(handler, took);
            if let Reply::Granted { .. } = &reply {
                // Over a millisecond: it waited for the lock.
                shared
                    .metrics
                    .granted((took > std::time::Duration::from_millis(1)).then_some(took));
            }
        }
        if c.reply(frame.id, reply).await.is_err() {
            return;
        }
        drop(answering);
        // Spin for the client's next request before sleeping (see
        // crate::spin), unless it is already here or another connection
        // is spinning (one spinner keeps the daemon awake; more would only
        // take turns at the thread the busy connections need).
        if !c.has_frame() && spin.try_now() && !shared.spinning.swap(true, Ordering::Relaxed) {
            let arrived = c.spin_for_more(spin.budget()).await;
            shared.spinning.store(false, Ordering::Relaxed);
            spin.record(arrived);
        }
    }
}

/// The loop job of a reread, with the cltab already read and parsed.
async fn reread_job(shared: &Shared) -> super::route::LoopJob {
    let base = shared
        .cltab
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let cluster = shared.cluster.clone();
    let over = shared.overrides();
    if let Some(h) = &cluster
        && h.view().rejected.is_some()
    {
        // The refused revision may apply now: the agent tries it again.
        h.refetch.notify_one();
    }
    let job = move || {
        match &cluster {
            // The node's local settings again over the cached shared cltab.
            Some(h) => h.reread(),
            None => crate::cltab::Cltab::load_over(&base.path, &over),
        }
        .map(|tab| crate::supervisor::Reread::plan(tab, base))
    };
    match tokio::task::spawn_blocking(job).await {
        Ok(loaded) => Box::new(move |d, c| Some(super::handlers::control::reread(d, c, loaded))),
        Err(e) => {
            let r = error(
                ErrorCode::Internal,
                format!("reading the cltab failed: {e}"),
            );
            Box::new(move |_, _| Some(r))
        }
    }
}

/// After a connection ended: its locks are released, its waits cancelled,
/// and the event loop is woken (to reconsider `clinit lockd`'s idle exit).
pub(crate) async fn closed(conn: u64, shared: &Shared) {
    let changes = {
        let mut locks = shared.locks();
        locks.connection_closed(conn);
        locks.take_changes()
    };
    shared.events.push_all(changes.into_iter().map(Into::into));
    if shared.cluster.is_some() {
        shared
            .kicked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&conn);
    }
    shared.conns.fetch_sub(1, Ordering::SeqCst);
    let _ = shared.tx.send(Msg::Closed).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::RecordError;
    use crate::store::{Pending, RecordCall, RecordOutcome};
    use std::time::Duration;

    #[test]
    fn log_lines_per_peer_are_limited_per_window_and_the_held_back_counted() {
        let l = LogLimiter::default();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // (peer, time in ms, expected)
        let steps: &[(&str, u64, Option<u32>)] = &[
            ("a", 0, Some(0)),
            ("a", 1, Some(0)),
            ("a", 2, Some(0)),
            ("a", 3, Some(0)),
            ("a", 4, Some(0)),
            ("a", 5, None),
            ("a", 6, None),
            ("b", 7, Some(0)),
            ("a", 9_999, None),
            ("a", 10_000, Some(3)),
            ("a", 10_001, Some(0)),
        ];
        for (i, (peer, ms, want)) in steps.iter().enumerate() {
            assert_eq!(l.allow(peer, at(*ms)), *want, "step {i}");
        }
    }
    use tokio::net::UnixStream;

    #[test]
    fn a_users_large_frames_share_one_budget() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let budget = FrameBudget {
                used: Default::default(),
                key: "uid 1000".into(),
                max: 300_000,
            };
            let head = |n: u32| n.to_be_bytes().to_vec();
            let (mut a1, b1) = UnixStream::pair().unwrap();
            let (mut a2, b2) = UnixStream::pair().unwrap();
            let mut c1 = Conn::new(b1, Limits::default().client_timeout).with_budget(Some(budget.clone()));
            let mut c2 = Conn::new(b2, Limits::default().client_timeout).with_budget(Some(budget.clone()));
            // c1 starts a frame of 200,000 bytes and stops half way.
            a1.write_all(&head(200_000)).await.unwrap();
            a1.write_all(&vec![b'x'; 100_000]).await.unwrap();
            let first = tokio::spawn(async move {
                let n = c1.next().await.map(|b| b.len()).unwrap();
                (c1, n)
            });
            // Until it is all in, a second one of 200,000 is over 300,000.
            while budget.used.lock().unwrap().get("uid 1000").is_none() {
                tokio::task::yield_now().await;
            }
            a2.write_all(&head(200_000)).await.unwrap();
            match c2.next().await {
                Err(e @ proto::FrameError::OverBudget(_)) => assert_eq!(
                    e.to_string(),
                    "uid 1000 is already sending 200004 bytes in large frames; this frame of 200004 bytes would pass peer_frame_bytes_max (300000)"
                ),
                other => panic!("{other:?}"),
            }
            // Small frames never count.
            let (mut a3, b3) = UnixStream::pair().unwrap();
            let mut c3 = Conn::new(b3, Limits::default().client_timeout).with_budget(Some(budget.clone()));
            a3.write_all(&proto::encode(&crate::proto::Request::Ping)).await.unwrap();
            assert!(c3.next().await.is_ok());
            // The first frame completes; once read past, its bytes are free.
            a1.write_all(&vec![b'x'; 100_000]).await.unwrap();
            let (c1, n) = first.await.unwrap();
            assert_eq!(n, 200_000);
            drop(c1);
            assert!(budget.used.lock().unwrap().is_empty());
        });
    }

    #[test]
    fn a_large_frame_does_not_keep_its_memory_and_a_cut_one_is_named() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (a, b) = UnixStream::pair().unwrap();
            let mut r = Conn::new(b, Limits::default().client_timeout);
            let mut a = a;
            let big = vec![b'x'; 2 << 20];
            let mut f = (big.len() as u32).to_be_bytes().to_vec();
            f.extend_from_slice(&big);
            let small = proto::encode(&crate::proto::Request::Ping);
            let writer = tokio::spawn(async move {
                a.write_all(&f).await.unwrap();
                a.write_all(&small).await.unwrap();
                // Then a frame that stops after 3 of its 10 bytes.
                a.write_all(&[0, 0, 0, 10, b'{', b'"', b'i']).await.unwrap();
            });
            assert_eq!(r.next().await.unwrap().len(), 2 << 20);
            assert!(r.buf.capacity() >= 2 << 20);
            assert_eq!(r.next().await.unwrap(), br#"{"op":"ping"}"#);
            assert!(r.buf.capacity() <= KEEP_BUF, "{}", r.buf.capacity());
            writer.await.unwrap();
            match r.next().await {
                Err(e @ proto::FrameError::Truncated { have: 3, want: 10 }) => assert_eq!(
                    e.to_string(),
                    "the stream ended inside a frame (3 of its 10 bytes came)"
                ),
                other => panic!("{other:?}"),
            }
        });
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(40))]
        /// Whatever length a frame declares and however its bytes are cut
        /// up: a frame within the cap comes whole and unchanged; one over
        /// the cap is refused from its length alone, never buffered whole.
        #[test]
        fn no_frame_over_the_cap_is_buffered_whole(
            declared in proptest::prop_oneof![
                0usize..4096,
                proto::MAX_FRAME - 16..proto::MAX_FRAME + 1,
                proto::MAX_FRAME + 1..u32::MAX as usize,
            ],
            chunks in proptest::collection::vec(1usize..70_000, 1..40),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let (mut a, b) = UnixStream::pair().unwrap();
                let mut r = Conn::new(b, Limits::default().client_timeout);
                // What is sent: the length, then the body (or, over the
                // cap, as much as 2 MiB of it).
                let sent = if declared > proto::MAX_FRAME { 2 << 20 } else { declared };
                let body: Vec<u8> = (0..sent).map(|i| (i % 251) as u8).collect();
                let mut bytes = (declared as u32).to_be_bytes().to_vec();
                bytes.extend_from_slice(&body);
                let writer = tokio::spawn(async move {
                    let mut at = 0;
                    for c in chunks.iter().cycle() {
                        if at >= bytes.len() {
                            break;
                        }
                        // At most some 200 writes, however small the cuts.
                        let end = (at + (*c).max(bytes.len() / 200)).min(bytes.len());
                        if a.write_all(&bytes[at..end]).await.is_err() {
                            break;
                        }
                        at = end;
                        tokio::task::yield_now().await;
                    }
                    a
                });
                let got = r.next().await.map(<[u8]>::to_vec);
                if declared > proto::MAX_FRAME {
                    assert!(
                        matches!(got, Err(proto::FrameError::TooLarge(n)) if n == declared),
                        "{declared}: {got:?}"
                    );
                    assert!(r.buf.len() < proto::MAX_FRAME, "{} bytes buffered", r.buf.len());
                } else {
                    assert_eq!(got.unwrap(), body, "{declared}");
                }
                drop(r);
                let _ = writer.await;
            });
        }
    }

    #[test]
    fn spinning_reads_what_comes_and_gives_up_on_silence() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (a, b) = UnixStream::pair().unwrap();
            let mut r = Conn::new(b, Limits::default().client_timeout);
            assert!(!r.has_frame());
            assert!(!r.spin_for_more(Duration::from_micros(50)).await);
            // Half a frame: bytes came, but no frame yet.
            let mut a = a;
            let frame = proto::encode(&crate::proto::Request::Ping);
            let (head, tail) = frame.split_at(6);
            a.write_all(head).await.unwrap();
            assert!(r.spin_for_more(Duration::from_secs(10)).await);
            assert!(!r.has_frame());
            a.write_all(tail).await.unwrap();
            assert!(r.spin_for_more(Duration::from_secs(10)).await);
            assert!(r.has_frame());
            assert_eq!(r.next().await.unwrap(), &frame[4..]);
            assert!(!r.has_frame());
            // The end of stream ends a spin too, and then the reader.
            drop(a);
            assert!(r.spin_for_more(Duration::from_secs(10)).await);
            assert!(matches!(r.next().await, Err(proto::FrameError::Closed)));
        });
    }

    type Answer = oneshot::Sender<Result<RecordOutcome, RecordError>>;

    /// A record store that answers when the test says.
    struct SlowRecords {
        answers: Arc<Mutex<Vec<Answer>>>,
    }

    impl RecordBackend for SlowRecords {
        fn call(&mut self, _: RecordCall) -> Pending<Result<RecordOutcome, RecordError>> {
            let (tx, rx) = oneshot::channel();
            self.answers.lock().unwrap().push(tx);
            Pending::Later(rx)
        }
    }

    fn shared_with(records: Arc<Mutex<dyn RecordBackend>>, dir: &std::path::Path) -> Arc<Shared> {
        let db = crate::store::sqlite::StateDb::open(dir).unwrap();
        let state: Arc<Mutex<dyn crate::store::StateStore>> = Arc::new(Mutex::new(db));
        let (tx, _) = mpsc::channel(1);
        Arc::new(Shared::for_tests(tx, state, records))
    }

    /// A client end: hello done.
    async fn client(shared: &Arc<Shared>, conn: u64) -> UnixStream {
        let (mut a, b) = UnixStream::pair().unwrap();
        let shared = shared.clone();
        tokio::spawn(async move {
            let root = Peer::Local(crate::daemon::policy::LocalUser {
                uid: 0,
                gid: 0,
                pid: None,
            });
            serve(b, root, conn, &shared).await;
        });
        a.write_all(&proto::encode(&Hello::ours())).await.unwrap();
        let _: Hello = read(&mut a).await;
        a
    }

    async fn read<T: for<'de> serde::Deserialize<'de>>(a: &mut UnixStream) -> T {
        let mut len = [0; 4];
        a.read_exact(&mut len).await.unwrap();
        let mut body = vec![0; u32::from_be_bytes(len) as usize];
        a.read_exact(&mut body).await.unwrap();
        serde_json::from_slice(&body).unwrap()
    }

    async fn send(a: &mut UnixStream, id: u64, req: crate::proto::Request) {
        let f = crate::proto::RequestFrame { id, req };
        a.write_all(&proto::encode(&f)).await.unwrap();
    }

    fn acquire(name: &str) -> crate::proto::Request {
        crate::proto::Request::LockAcquire {
            name: name.into(),
            mode: crate::lock::LockMode::Exclusive,
            wait: false,
            timeout_ms: None,
            lease: None,
            what: String::new(),
        }
    }

    /// Let every task run until it waits.
    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    #[test]
    fn a_backend_that_answers_later_neither_blocks_others_nor_reorders_replies() {
        let dir = tempfile::tempdir().unwrap();
        let answers = Arc::new(Mutex::new(Vec::new()));
        let records: Arc<Mutex<dyn RecordBackend>> = Arc::new(Mutex::new(SlowRecords {
            answers: answers.clone(),
        }));
        let shared = shared_with(records, dir.path());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut slow = client(&shared, 1).await;
            // A record request the store answers later, and a lock request
            // pipelined behind it.
            let get = crate::proto::RecordOp::Get {
                container: "c".into(),
                key: "k".into(),
            };
            send(&mut slow, 1, crate::proto::Request::Record(get)).await;
            send(&mut slow, 2, acquire("x")).await;
            settle().await;
            assert_eq!(answers.lock().unwrap().len(), 1, "the store was asked");
            // Another client is served meanwhile.
            let mut other = client(&shared, 2).await;
            send(&mut other, 7, acquire("y")).await;
            let r: ResponseFrame = read(&mut other).await;
            assert!(matches!(r.reply, Reply::Granted { .. }), "{r:?}");
            // Nothing came back on the slow connection yet, not even the
            // lock reply that needs no backend.
            settle().await;
            let mut probe = [0u8; 1];
            assert!(matches!(
                slow.try_read(&mut probe),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
            ));
            assert!(
                shared.locks().status(Some("x")).is_empty(),
                "x not served yet"
            );
            // The store answers: both replies come, in request order.
            let tx = answers.lock().unwrap().pop().unwrap();
            let rec = crate::records::Record {
                key: "k".into(),
                value: b"v".to_vec(),
                sig: 9,
            };
            tx.send(Ok(RecordOutcome::Record(rec))).unwrap();
            let first: ResponseFrame = read(&mut slow).await;
            let second: ResponseFrame = read(&mut slow).await;
            assert_eq!(first.id, 1);
            assert!(matches!(first.reply, Reply::Record { .. }), "{first:?}");
            assert_eq!(second.id, 2);
            assert!(matches!(second.reply, Reply::Granted { .. }), "{second:?}");
        });
    }
}
