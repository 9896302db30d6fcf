//! The daemon: one event loop driven by child exits (SIGCHLD), timers,
//! signals and client requests. No polling: the loop sleeps until the next
//! event or the executor's next timer.

pub mod auth;

use crate::cltab::Cltab;
use crate::config::{CliPaths, Paths};
use crate::proto::{
    self, ErrorCode, ErrorReply, Hello, PROTOCOL_VERSION, Reply, Request, RequestFrame,
    ResponseFrame,
};
use crate::store::{Embedded, Store, write_atomic};
use crate::supervisor::Supervisor;
use crate::supervisor::executor::{EntryEvent, Executor};
use crate::supervisor::machine::{Action, GroupState, ProcEvent};
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, oneshot};

/// Why the daemon could not start; each maps to an exit status.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Cltab(#[from] crate::cltab::CltabErrors),
    #[error("another clinit daemon is running on {0}")]
    AlreadyRunning(String),
    #[error("{what} {path}: {err}")]
    Io {
        what: &'static str,
        path: String,
        err: std::io::Error,
    },
}

impl StartError {
    pub fn exit_code(&self) -> i32 {
        match self {
            StartError::Cltab(_) => 4,
            StartError::AlreadyRunning(_) => 8,
            StartError::Io { .. } => 10,
        }
    }
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StartError {
    let path = path.display().to_string();
    move |err| StartError::Io { what, path, err }
}

type Incoming = (Request, oneshot::Sender<Reply>);

/// A parked `wait` request.
struct Waiter {
    group: String,
    level: Option<String>,
    state: Option<GroupState>,
    deadline: Instant,
    reply: oneshot::Sender<Reply>,
}

impl Waiter {
    fn satisfied(&self, sup: &Supervisor) -> bool {
        sup.level_state(&self.group).is_some_and(|(level, state)| {
            self.level.as_deref().is_none_or(|l| Some(l) == level)
                && match self.state {
                    Some(s) => s == state,
                    None => state.is_settled(),
                }
        })
    }
}

fn ensure_parent(path: &Path) -> Result<(), StartError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io_err("cannot create directory for", path))?;
    }
    Ok(())
}

/// Run the daemon in the foreground until it is shut down.
pub fn run(cli: &CliPaths) -> Result<(), StartError> {
    let cltab = Cltab::load(&cli.cltab())?;
    let paths = Paths::resolve(cli, &cltab.settings);
    for p in [&paths.socket, &paths.clstat, &paths.log] {
        ensure_parent(p)?;
    }
    if let Some(dir) = &paths.logdir {
        std::fs::create_dir_all(dir).map_err(io_err("cannot create log directory", dir))?;
    }
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&paths.log)
        .map_err(io_err("cannot open log", &paths.log))?;
    init_tracing(&log);

    // One daemon per socket: hold an exclusive lock on <socket>.lock for life.
    let lock_path = paths.socket_lock();
    let lock_file = File::create(&lock_path).map_err(io_err("cannot create", &lock_path))?;
    let lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|_| StartError::AlreadyRunning(paths.socket.display().to_string()))?;

    // We hold the lock, so a socket file left behind is stale.
    let _ = std::fs::remove_file(&paths.socket);
    let old_mask = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(io_err("cannot start runtime for", &paths.socket))?;
    let listener = {
        let _g = rt.enter();
        UnixListener::bind(&paths.socket)
    };
    nix::sys::stat::umask(old_mask);
    let listener = listener.map_err(io_err("cannot bind socket", &paths.socket))?;
    std::fs::set_permissions(
        &paths.socket,
        std::fs::Permissions::from_mode(paths.socket_mode),
    )
    .map_err(io_err("cannot set mode of socket", &paths.socket))?;

    #[cfg(target_os = "linux")]
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        tracing::warn!("cannot become child subreaper: {e}");
    }

    let kill_after = crate::config::Timing::resolve(&cltab.settings).kill_after;
    let executor = Executor::new(log, paths.logdir.clone(), kill_after);
    let result = rt.block_on(event_loop(
        listener,
        Supervisor::new(cltab),
        executor,
        paths.clone(),
    ));
    let _ = std::fs::remove_file(&paths.socket);
    let _ = write_atomic(&paths.clstat, b"");
    drop(lock);
    let _ = std::fs::remove_file(&lock_path);
    result
}

fn init_tracing(log: &File) {
    use tracing_subscriber::fmt::writer::MakeWriterExt;
    let file = log.try_clone().expect("dup log fd");
    let writer = std::io::stderr.and(std::sync::Mutex::new(file));
    let _ = tracing_subscriber::fmt()
        .with_writer(writer)
        .with_ansi(false)
        .with_target(false)
        .try_init();
}

async fn event_loop(
    listener: UnixListener,
    mut sup: Supervisor,
    mut exec: Executor,
    paths: Paths,
) -> Result<(), StartError> {
    let mut sigchld = signal(SignalKind::child()).map_err(io_err("signal setup", &paths.socket))?;
    let mut sigterm =
        signal(SignalKind::terminate()).map_err(io_err("signal setup", &paths.socket))?;
    let mut sigint =
        signal(SignalKind::interrupt()).map_err(io_err("signal setup", &paths.socket))?;
    let (tx, mut rx) = mpsc::channel::<Incoming>(256);
    tokio::spawn(accept_loop(listener, tx));

    tracing::info!(
        "clinit daemon started, pid {}, socket {}",
        std::process::id(),
        paths.socket.display()
    );
    let mut last_summary = None;
    let mut halting = false;
    let mut store = Embedded::new(&paths.clstat);
    let mut waiters: Vec<Waiter> = Vec::new();
    write_status(&sup, &mut store, &mut last_summary);

    loop {
        if halting && sup.is_quiet() && !exec.has_leftovers() {
            tracing::info!("every process has stopped; exiting");
            return Ok(());
        }
        let deadline = waiters
            .iter()
            .map(|w| w.deadline)
            .chain(exec.next_deadline())
            .min();
        let mut events: VecDeque<EntryEvent> = VecDeque::new();
        let mut actions: Vec<Action> = Vec::new();
        tokio::select! {
            _ = sigchld.recv() => events.extend(exec.reap()),
            _ = sigterm.recv(), if !halting => { halting = true; actions = begin_halt(&mut sup) }
            _ = sigint.recv(), if !halting => { halting = true; actions = begin_halt(&mut sup) }
            _ = sleep_until(deadline) => {
                let now = Instant::now();
                for t in exec.due_timers(now) {
                    events.push_back((t.group, t.tag, ProcEvent::Timer(t.kind)));
                }
            }
            Some((req, reply)) = rx.recv() => {
                if let Request::Wait { group, level, state, timeout_ms } = req {
                    if sup.has_group(&group) {
                        let deadline = Instant::now() + std::time::Duration::from_millis(timeout_ms);
                        waiters.push(Waiter { group, level, state, deadline, reply });
                    } else {
                        let _ = reply.send(error(ErrorCode::NoSuchGroup, format!("no such group: {group}")));
                    }
                } else {
                    let (r, a) = handle(req, &mut sup, &mut halting);
                    let _ = reply.send(r);
                    actions = a;
                }
            }
        }
        // Drain: actions produce events (spawn results), events produce actions.
        loop {
            for a in actions.drain(..) {
                if let Some(e) = exec.perform(a) {
                    events.push_back(e);
                }
            }
            let Some((g, t, ev)) = events.pop_front() else {
                break;
            };
            actions = sup.proc_event(&g, &t, ev, Instant::now());
        }
        write_status(&sup, &mut store, &mut last_summary);
        answer_waiters(&mut waiters, &sup);
    }
}

/// Answer every waiter whose condition holds or whose time is up.
fn answer_waiters(waiters: &mut Vec<Waiter>, sup: &Supervisor) {
    let now = Instant::now();
    for w in std::mem::take(waiters) {
        if w.reply.is_closed() {
            continue;
        }
        if w.satisfied(sup) {
            let groups = sup.status(Some(&w.group), true, now);
            let _ = w.reply.send(Reply::Status { groups });
        } else if now >= w.deadline {
            let want = match (&w.level, w.state) {
                (Some(l), Some(s)) => format!("level {l} and state {}", s.as_str()),
                (Some(l), None) => format!("level {l} settled"),
                (None, Some(s)) => format!("state {}", s.as_str()),
                (None, None) => "a settled state".to_string(),
            };
            let _ = w.reply.send(error(
                ErrorCode::Timeout,
                format!("timed out waiting for group {} to reach {want}", w.group),
            ));
        } else {
            waiters.push(w);
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

fn begin_halt(sup: &mut Supervisor) -> Vec<Action> {
    tracing::info!("shutting down: stopping every group");
    sup.halt(Instant::now())
}

fn write_status(
    sup: &Supervisor,
    store: &mut impl Store,
    last: &mut Option<
        Vec<(
            String,
            Option<String>,
            crate::supervisor::machine::GroupState,
        )>,
    >,
) {
    let now = sup.summary();
    if last.as_ref() == Some(&now) {
        return;
    }
    if let Err(e) = store.write_status(&sup.clstat()) {
        tracing::error!("{e}");
    }
    *last = Some(now);
}

fn message(text: &str) -> Reply {
    Reply::Message {
        text: text.to_string(),
    }
}

fn error(code: ErrorCode, message: String) -> Reply {
    Reply::Error(ErrorReply { code, message })
}

fn handle(req: Request, sup: &mut Supervisor, halting: &mut bool) -> (Reply, Vec<Action>) {
    let now = Instant::now();
    if *halting
        && !matches!(
            req,
            Request::Ping | Request::Status { .. } | Request::Shutdown
        )
    {
        return (
            error(
                ErrorCode::ShuttingDown,
                "the daemon is shutting down".into(),
            ),
            vec![],
        );
    }
    match req {
        Request::Ping => (Reply::Pong, vec![]),
        // Parked by the event loop, never handled here.
        Request::Wait { .. } => (error(ErrorCode::Internal, "wait not parked".into()), vec![]),
        Request::Tell { group, level } => match sup.tell(&group, &level, now) {
            Some(actions) => {
                tracing::info!("tell {group} {level}");
                (message("level transition started"), actions)
            }
            None => (
                error(ErrorCode::NoSuchGroup, format!("no such group: {group}")),
                vec![],
            ),
        },
        Request::Status { group, brief } => {
            if let Some(g) = &group
                && !sup.has_group(g)
            {
                return (
                    error(ErrorCode::NoSuchGroup, format!("no such group: {g}")),
                    vec![],
                );
            }
            (
                Reply::Status {
                    groups: sup.status(group.as_deref(), !brief, now),
                },
                vec![],
            )
        }
        Request::Reread => match Cltab::load(&sup.cltab.path.clone()) {
            Ok(tab) => {
                tracing::info!("reread {}", tab.path.display());
                let text = format!(
                    "cltab reread: {} groups, {} entries",
                    tab.groups().len(),
                    tab.entries.len()
                );
                (message(&text), sup.reread(tab, now))
            }
            Err(e) => {
                tracing::error!("reread failed; keeping the running configuration:\n{e}");
                (error(ErrorCode::CltabInvalid, e.to_string()), vec![])
            }
        },
        Request::Shutdown => {
            if *halting {
                return (message("all groups halting"), vec![]);
            }
            *halting = true;
            (message("all groups halting"), begin_halt(sup))
        }
    }
}

async fn accept_loop(listener: UnixListener, tx: mpsc::Sender<Incoming>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve(stream, tx.clone()));
            }
            Err(e) => tracing::warn!("accept failed: {e}"),
        }
    }
}

async fn read_frame(stream: &mut UnixStream) -> Result<Vec<u8>, proto::FrameError> {
    let mut len = [0u8; 4];
    stream
        .read_exact(&mut len)
        .await
        .map_err(|_| proto::FrameError::Closed)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > proto::MAX_FRAME {
        return Err(proto::FrameError::TooLarge(len));
    }
    let mut body = vec![0; len];
    stream.read_exact(&mut body).await?;
    Ok(body)
}

/// One client connection: handshake, then requests until it closes. A bad
/// frame gets an error reply and the connection is closed; the daemon is
/// never disturbed.
async fn serve(mut stream: UnixStream, tx: mpsc::Sender<Incoming>) {
    let hello = match read_frame(&mut stream).await {
        Ok(b) => serde_json::from_slice::<Hello>(&b).ok(),
        Err(_) => return,
    };
    match hello {
        Some(h) if h.version == PROTOCOL_VERSION => {
            let me = Hello {
                version: PROTOCOL_VERSION,
                agent: format!("clinit {}", env!("CARGO_PKG_VERSION")),
            };
            if stream.write_all(&proto::encode(&me)).await.is_err() {
                return;
            }
        }
        other => {
            let msg = match other {
                Some(ref h) => format!(
                    "protocol version {} not supported (daemon speaks {PROTOCOL_VERSION})",
                    h.version
                ),
                None => "expected a hello frame".to_string(),
            };
            let code = if other.is_some() {
                ErrorCode::VersionMismatch
            } else {
                ErrorCode::BadRequest
            };
            let _ = stream
                .write_all(&proto::encode(&ResponseFrame {
                    id: 0,
                    reply: error(code, msg),
                }))
                .await;
            return;
        }
    }
    loop {
        let body = match read_frame(&mut stream).await {
            Ok(b) => b,
            Err(proto::FrameError::Closed) => return,
            Err(e) => {
                let r = ResponseFrame {
                    id: 0,
                    reply: error(ErrorCode::BadRequest, e.to_string()),
                };
                let _ = stream.write_all(&proto::encode(&r)).await;
                return;
            }
        };
        let frame: RequestFrame = match serde_json::from_slice(&body) {
            Ok(f) => f,
            Err(e) => {
                let id = serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v.get("id").and_then(|i| i.as_u64()))
                    .unwrap_or(0);
                let r = ResponseFrame {
                    id,
                    reply: error(ErrorCode::BadRequest, format!("bad request: {e}")),
                };
                if stream.write_all(&proto::encode(&r)).await.is_err() {
                    return;
                }
                continue;
            }
        };
        let (otx, orx) = oneshot::channel();
        if tx.send((frame.req, otx)).await.is_err() {
            return;
        }
        let Ok(reply) = orx.await else { return };
        let r = ResponseFrame {
            id: frame.id,
            reply,
        };
        if stream.write_all(&proto::encode(&r)).await.is_err() {
            return;
        }
    }
}
