//! The daemon: one event loop driven by child exits (SIGCHLD), timers,
//! signals and client requests. No polling: the loop sleeps until the next
//! event or the executor's next timer.

pub mod auth;
mod locks;

use crate::cltab::{Cltab, edit};
use crate::config::{CliPaths, Paths, Timing};
use crate::proto::{
    self, ControlAction, ErrorCode, ErrorReply, Hello, PROTOCOL_VERSION, Reply, Request,
    ResponseFrame,
};
use crate::supervisor::leftovers::{Leftover, stop_leftovers};
use crate::store::sqlite::{StateDb, StoreOp};
use crate::store::{Embedded, Store, write_atomic};
use crate::supervisor::executor::{EntryEvent, Executor};
use crate::supervisor::machine::{Action, Control, GroupState, ProcEvent};
use crate::supervisor::{Now, Supervisor};
use auth::{Peer, Policy};
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, oneshot};

/// How the daemon was started.
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub paths: CliPaths,
    /// Do not restore the groups' goals at start-up.
    pub no_restore: bool,
    /// Allow every user to change anything.
    pub noauth: bool,
    /// `clinit lockd`: serve only locks and records (no cltab entries),
    /// and exit after this long idle.
    pub lockd_idle: Option<std::time::Duration>,
}

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
    #[error("state store: {0}")]
    State(#[from] crate::store::StoreError),
}

impl StartError {
    pub fn exit_code(&self) -> i32 {
        match self {
            StartError::Cltab(_) => 4,
            StartError::AlreadyRunning(_) => 8,
            StartError::State(crate::store::StoreError::Busy { .. }) => 8,
            StartError::Io { .. } | StartError::State(_) => 10,
        }
    }
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StartError {
    let path = path.display().to_string();
    move |err| StartError::Io { what, path, err }
}

/// What connection tasks tell the event loop.
enum Msg {
    Request {
        conn: u64,
        req: Request,
        peer: Peer,
        reply: oneshot::Sender<Reply>,
    },
    /// A connection closed (its locks are already released).
    Closed,
}

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
///
/// Start-up order: cltab, log, the socket lock, the state store; then
/// leftover children of a previous run that was killed are stopped; the
/// socket is bound; goals are restored; only then are requests handled.
pub fn run(opts: &Options) -> Result<(), StartError> {
    let started = Instant::now();
    // Read the spin budget now (the docs say the daemon reads
    // CLINIT_SPIN_US when it starts), so that a bad value is reported at
    // start-up and not at the first connection.
    let _ = crate::spin::budget();
    let cli = &opts.paths;
    let cltab = match opts.lockd_idle {
        // The lock daemon runs no entries; it reads only the settings that
        // place its socket, state and log.
        Some(_) => {
            let text = std::fs::read_to_string(cli.cltab()).unwrap_or_default();
            Cltab::empty(&cli.cltab(), crate::cltab::scan_settings(&text))
        }
        None => Cltab::load(&cli.cltab())?,
    };
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

    if opts.noauth {
        let msg = "WARNING: started with --noauth: EVERY user who can open the socket may change groups, entries and the cltab";
        eprintln!("clinit: {msg}");
        tracing::warn!("{msg}");
    }
    let mut db = StateDb::open(&paths.state)?;
    let persisted = db.load()?;
    let timing = Timing::resolve(&cltab.settings);
    if !persisted.children.is_empty() {
        tracing::warn!(
            "{} children of a previous run are recorded in {}: stopping those still alive before anything starts",
            persisted.children.len(),
            db.path().display()
        );
        let outcomes = stop_leftovers(&persisted.children, timing.term_after, timing.kill_after);
        let stopped = outcomes
            .iter()
            .filter(|o| matches!(o, Leftover::Stopped { .. }))
            .count();
        tracing::info!("stopped {stopped} leftover children of the previous run");
        let ops: Vec<StoreOp> = persisted
            .children
            .iter()
            .map(|c| StoreOp::RemoveChild { pid: c.pid })
            .collect();
        db.apply(&ops)?;
    }

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
    if let Some(group) = &paths.socket_group {
        let gid =
            resolve_group(group).map_err(io_err("cannot use socket_group for", &paths.socket))?;
        nix::unistd::chown(&paths.socket, None, Some(gid))
            .map_err(|e| std::io::Error::from_raw_os_error(e as i32))
            .map_err(io_err("cannot set the group of socket", &paths.socket))?;
    }

    // A starter (`clinit lock` starting `clinit lockd`) waits on this pipe.
    if let Some(fd) = std::env::var("CLINIT_READY_FD")
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
    {
        // SAFETY: the starter passed this descriptor for us to own.
        let f = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let _ = std::io::Write::write_all(&mut &f, b"ready\n");
        drop(f);
        // SAFETY: single-threaded here; nothing else reads the environment.
        unsafe { std::env::remove_var("CLINIT_READY_FD") };
    }

    #[cfg(target_os = "linux")]
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        tracing::warn!("cannot become child subreaper: {e}");
    }

    let executor = Executor::new(log, paths.logdir.clone());
    let disabled = persisted.disabled.iter().cloned().collect();
    let goals = if opts.no_restore {
        if !persisted.goals.is_empty() {
            tracing::info!(
                "--no-restore: not restoring the goals of {} groups",
                persisted.goals.len()
            );
        }
        Vec::new()
    } else {
        persisted.goals
    };
    let policy = Policy {
        noauth: opts.noauth,
        daemon_uid: nix::unistd::geteuid().as_raw(),
        userlist: paths.userlist.clone(),
    };
    let token_floor = db.token_floor()?;
    let db = Arc::new(Mutex::new(db));
    let host = crate::config::hostname();
    let daemon = Daemon {
        locks: Arc::new(Mutex::new(locks::LockService::new(
            token_floor,
            db.clone(),
            host,
        ))),
        restored: Arc::new(AtomicBool::new(false)),
        deadline_changed: Arc::new(tokio::sync::Notify::new()),
        conns: Default::default(),
        in_request: Default::default(),
        idle_exit: opts.lockd_idle,
        sup: Supervisor::new(cltab, disabled),
        exec: executor,
        db,
        store: Embedded::new(&paths.clstat),
        policy,
        waiters: Vec::new(),
        halting: false,
        last_summary: None,
        paths: paths.clone(),
    };
    let result = rt.block_on(daemon.event_loop(listener, goals, started));
    let _ = std::fs::remove_file(&paths.socket);
    let _ = write_atomic(&paths.clstat, b"");
    drop(lock);
    let _ = std::fs::remove_file(&lock_path);
    result
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

type Summary = Vec<(String, Option<String>, GroupState)>;

/// The daemon's state, owned by the event loop.
struct Daemon {
    sup: Supervisor,
    exec: Executor,
    db: Arc<Mutex<StateDb>>,
    store: Embedded,
    policy: Policy,
    waiters: Vec<Waiter>,
    halting: bool,
    last_summary: Option<Summary>,
    paths: Paths,
    /// Shared with the connection tasks, which serve lock requests directly.
    locks: Arc<Mutex<locks::LockService>>,
    /// Whether start-up restore is over (until then every request goes
    /// through the event loop, which holds it).
    restored: Arc<AtomicBool>,
    /// A connection task made the lock service's next deadline earlier.
    deadline_changed: Arc<tokio::sync::Notify>,
    /// Open client connections (counted by the connection tasks).
    conns: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// Requests read and not yet answered on their connection.
    in_request: Arc<InRequest>,
    /// `clinit lockd`: exit after this long with no lock, lease or
    /// connection.
    idle_exit: Option<std::time::Duration>,
}

impl Daemon {
    async fn event_loop(
        mut self,
        listener: UnixListener,
        goals: Vec<(String, String)>,
        started: Instant,
    ) -> Result<(), StartError> {
        let sig = |k| signal(k).map_err(io_err("signal setup", &self.paths.socket));
        let mut sigchld = sig(SignalKind::child())?;
        let mut sigterm = sig(SignalKind::terminate())?;
        let mut sigint = sig(SignalKind::interrupt())?;
        let (tx, mut rx) = mpsc::channel::<Msg>(256);
        tokio::spawn(accept_loop(
            listener,
            Shared {
                tx,
                conns: self.conns.clone(),
                locks: self.locks.clone(),
                restored: self.restored.clone(),
                deadline_changed: self.deadline_changed.clone(),
                in_request: self.in_request.clone(),
                spinning: Default::default(),
            },
        ));

        tracing::info!(
            "clinit daemon started, pid {}, socket {}, state {}",
            std::process::id(),
            self.paths.socket.display(),
            self.paths.state.display()
        );
        // Restore goals before any request is handled: requests that arrive
        // meanwhile wait in the channel.
        let mut restoring: Vec<String> = Vec::new();
        let mut actions: Vec<Action> = Vec::new();
        for (group, level) in goals {
            match self.sup.tell(&group, &level, Now::real()) {
                Some(a) => {
                    tracing::info!("restoring group {group} to its goal, level {level}");
                    actions.extend(a);
                    restoring.push(group);
                }
                None => tracing::warn!(
                    "goal of group {group} (level {level}) not restored: the cltab has no such group"
                ),
            }
        }
        let restore_deadline = Instant::now() + self.paths.restore_timeout;
        let mut events: VecDeque<EntryEvent> = VecDeque::new();
        let mut replies: Vec<(oneshot::Sender<Reply>, Reply)> = Vec::new();
        let mut restored = false;
        let mut idle_since: Option<Instant> = None;

        loop {
            self.drain(&mut actions, &mut events);
            self.persist();
            for (tx, r) in replies.drain(..) {
                let _ = tx.send(r);
            }
            self.answer_waiters();
            if !restored {
                restoring.retain(|g| {
                    !self
                        .sup
                        .level_state(g)
                        .is_some_and(|(_, st)| st.is_settled())
                });
                if restoring.is_empty() || Instant::now() >= restore_deadline {
                    restored = true;
                    self.restored
                        .store(true, std::sync::atomic::Ordering::SeqCst);
                    if restoring.is_empty() {
                        tracing::info!(
                            "goals restored in {:.1} ms; serving requests",
                            started.elapsed().as_secs_f64() * 1000.0
                        );
                    } else {
                        tracing::warn!(
                            "groups {} not settled after restore_timeout; serving requests anyway",
                            restoring.join(", ")
                        );
                    }
                }
            }
            if self.halting
                && self.sup.is_quiet()
                && !self.exec.has_leftovers()
                && self.exec.notifier_count() == 0
            {
                tracing::info!("every process has stopped; exiting");
                self.finish_replies(&mut rx).await;
                return Ok(());
            }
            let idle_deadline = match self.idle_exit {
                Some(idle)
                    if self.conns.load(std::sync::atomic::Ordering::SeqCst) == 0
                        && self
                            .locks
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .manager
                            .is_idle() =>
                {
                    let since = *idle_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= idle {
                        tracing::info!(
                            "no lock held and no client for {} s; exiting",
                            idle.as_secs()
                        );
                        return Ok(());
                    }
                    Some(since + idle)
                }
                _ => {
                    idle_since = None;
                    None
                }
            };
            let deadline = self
                .waiters
                .iter()
                .map(|w| w.deadline)
                .chain(self.exec.next_deadline())
                .chain(
                    self.locks
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .manager
                        .next_deadline(),
                )
                .chain(idle_deadline)
                .chain((!restored).then_some(restore_deadline))
                .min();
            tokio::select! {
                _ = sigchld.recv() => events.extend(self.exec.reap()),
                _ = sigterm.recv(), if !self.halting => actions = self.begin_halt(),
                _ = sigint.recv(), if !self.halting => actions = self.begin_halt(),
                _ = sleep_until(deadline) => {
                    let now = Instant::now();
                    for t in self.exec.due_timers(now) {
                        events.push_back((t.group, t.tag, ProcEvent::Timer(t.kind)));
                    }
                    let mut locks = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
                    if locks.manager.next_deadline().is_some_and(|d| d <= now) {
                        locks.lock_step(crate::lock::LockEvent::Tick);
                    }
                }
                _ = self.deadline_changed.notified() => {}
                Some(msg) = rx.recv(), if restored => match msg {
                    // The connection task released its locks; this wakes the
                    // loop to reconsider the idle exit.
                    Msg::Closed => {}
                    Msg::Request { conn, req, peer, reply } => {
                    if req.is_lock_service() {
                        let mut reply = Some(reply);
                        let now = self.locks.lock().unwrap_or_else(PoisonError::into_inner).handle_lock(conn, req, &peer, || reply.take().expect("parked once"));
                        if let (Some(r), Some(tx)) = (now, reply) {
                            let _ = tx.send(r);
                        }
                    } else if let Request::Wait { group, level, state, timeout_ms } = req {
                        if self.halting {
                            let _ = reply.send(shutting_down());
                        } else if self.sup.has_group(&group) {
                            // Clamped: a client's number must not overflow the clock.
                            let deadline = Instant::now() + std::time::Duration::from_millis(timeout_ms.min(100 * 365 * 86_400_000));
                            self.waiters.push(Waiter { group, level, state, deadline, reply });
                        } else {
                            let _ = reply.send(no_group(&group).0);
                        }
                    } else {
                        let (r, a) = self.handle(req, &peer);
                        replies.push((reply, r));
                        actions = a;
                    }
                    }
                },
            }
        }
    }

    /// Perform actions until no event is left: spawn results and exits
    /// produce events, events produce actions.
    fn drain(&mut self, actions: &mut Vec<Action>, events: &mut VecDeque<EntryEvent>) {
        loop {
            for a in actions.drain(..) {
                if let Some(e) = self.exec.perform(a) {
                    events.push_back(e);
                }
            }
            let Some((g, t, ev)) = events.pop_front() else {
                break;
            };
            *actions = self.sup.proc_event(&g, &t, ev, Now::real());
        }
    }

    /// Write this turn's changes: the store (one transaction) before any
    /// reply goes out, and the status file when a group changed.
    fn persist(&mut self) {
        let mut ops = self.sup.take_ops();
        ops.extend(self.exec.take_ops());
        if !ops.is_empty()
            && let Err(e) = self
                .db
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .apply(&ops)
        {
            tracing::error!("{e}");
        }
        let now = self.sup.summary();
        if self.last_summary.as_ref() == Some(&now) {
            return;
        }
        if let Err(e) = self.store.write_status(&self.sup.clstat()) {
            tracing::error!("{e}");
        }
        self.last_summary = Some(now);
    }

    /// Before the daemon exits: let the connection tasks write the replies
    /// they were given (the runtime would drop them unsent, and `clinit
    /// shutdown` would see its connection closed instead of its answer).
    /// Requests that will never be answered now get `SHUTTING_DOWN` (those
    /// still queued for the event loop, and `wait`s) or are dropped
    /// (blocked lock requests: their clients see the lock service go, as
    /// after a crash). Bounded: a client that does not read its replies
    /// cannot hold the exit up for more than a second.
    async fn finish_replies(&mut self, rx: &mut mpsc::Receiver<Msg>) {
        rx.close();
        while let Ok(msg) = rx.try_recv() {
            if let Msg::Request { reply, .. } = msg {
                let _ = reply.send(shutting_down());
            }
        }
        for w in self.waiters.drain(..) {
            let _ = w.reply.send(shutting_down());
        }
        self.locks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pending
            .clear();
        let _ =
            tokio::time::timeout(std::time::Duration::from_secs(1), self.in_request.idle()).await;
    }

    /// Answer every waiter whose condition holds or whose time is up.
    fn answer_waiters(&mut self) {
        let now = Instant::now();
        for w in std::mem::take(&mut self.waiters) {
            if w.reply.is_closed() {
                continue;
            }
            if w.satisfied(&self.sup) {
                let groups = self.sup.status(Some(&w.group), true, Now::real());
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
                self.waiters.push(w);
            }
        }
    }

    fn begin_halt(&mut self) -> Vec<Action> {
        self.halting = true;
        tracing::info!("shutting down: stopping every group");
        self.sup.halt(Now::real())
    }

    fn handle(&mut self, req: Request, peer: &Peer) -> (Reply, Vec<Action>) {
        let now = Now::real();
        let who = if req.changes_something() {
            match self.policy.check_change(peer) {
                Ok(who) => who,
                Err(e) => {
                    tracing::warn!("refused {}: {e}", describe(&req));
                    return (error(ErrorCode::Access, e.to_string()), vec![]);
                }
            }
        } else {
            String::new()
        };
        // While shutting down, and in `clinit lockd`, only these are served.
        if !matches!(
            req,
            Request::Ping | Request::Status { .. } | Request::Shutdown
        ) {
            if self.halting {
                return (shutting_down(), vec![]);
            }
            if self.idle_exit.is_some() {
                return (
                    error(
                        ErrorCode::BadRequest,
                        "this is clinit lockd: it serves locks and records only".into(),
                    ),
                    vec![],
                );
            }
        }
        if req.changes_something() {
            tracing::info!("{} (by {who})", describe(&req));
        }
        let sup = &mut self.sup;
        match req {
            Request::Ping => (Reply::Pong, vec![]),
            // Parked by the event loop, never handled here.
            Request::Wait { .. } => (error(ErrorCode::Internal, "wait not parked".into()), vec![]),
            Request::Tell { group, level } => match sup.tell(&group, &level, now) {
                Some(actions) => (message("level transition started"), actions),
                None => no_group(&group),
            },
            Request::Status { group, brief } => {
                if let Some(g) = &group
                    && !sup.has_group(g)
                {
                    return no_group(g);
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
                if self.halting {
                    return (message("all groups halting"), vec![]);
                }
                (message("all groups halting"), self.begin_halt())
            }
            Request::Control {
                tag,
                action,
                temporary,
            } => {
                let op = match action {
                    ControlAction::Stop => Control::Stop { temporary },
                    ControlAction::Start => Control::Start { temporary },
                    ControlAction::Restart => Control::Restart,
                };
                match sup.control(&tag, op, now) {
                    Ok((actions, text)) => (message(&text), actions),
                    Err(e) => (error(ErrorCode::NoSuchEntry, e.to_string()), vec![]),
                }
            }
            Request::RestartGroup { group: Some(group) } => match sup.restart_group(&group, now) {
                Some(actions) => (message(&format!("group {group} restarting")), actions),
                None => no_group(&group),
            },
            Request::RestartGroup { group: None } => {
                (message("all groups restarting"), sup.restart_all(now))
            }
            Request::Create {
                group,
                tag,
                levels,
                mode,
                options,
                command,
            } => self.create(&group, &tag, &levels, &mode, &options, &command, now),
            Request::Delete { tag } => self.delete(&tag, now),
            // Routed to the lock service by the event loop.
            _ => (
                error(ErrorCode::Internal, "lock request not routed".into()),
                vec![],
            ),
        }
    }

    /// The cltab text as on disk, if it is still what the daemon read.
    fn unchanged_cltab(&self) -> Result<String, Reply> {
        let path = &self.sup.cltab.path;
        match std::fs::read_to_string(path) {
            Ok(text) if text == self.sup.cltab.text => Ok(text),
            Ok(_) => Err(error(
                ErrorCode::CltabChanged,
                format!(
                    "{} changed on disk since the daemon read it; run `clinit reread` first, so that edit is not lost",
                    path.display()
                ),
            )),
            Err(e) => Err(error(
                ErrorCode::CltabInvalid,
                format!("cannot read {}: {e}", path.display()),
            )),
        }
    }

    /// Edit the cltab: `change` turns its text (refused if it changed on
    /// disk since the daemon read it) into the new text, which is parsed,
    /// written atomically and applied.
    fn edit_cltab(
        &mut self,
        now: Now,
        change: impl FnOnce(&str) -> Result<String, Reply>,
    ) -> Result<Vec<Action>, Reply> {
        let text = change(&self.unchanged_cltab()?)?;
        let path = self.sup.cltab.path.clone();
        let tab = crate::cltab::parse(&path, &text)
            .map_err(|e| error(ErrorCode::CltabInvalid, e.to_string()))?;
        write_atomic(&path, text.as_bytes()).map_err(|e| {
            error(
                ErrorCode::Internal,
                format!("cannot write {}: {e}", path.display()),
            )
        })?;
        Ok(self.sup.reread(tab, now))
    }

    #[allow(clippy::too_many_arguments)]
    fn create(
        &mut self,
        group: &str,
        tag: &str,
        levels: &str,
        mode: &str,
        options: &[(String, String)],
        command: &str,
        now: Now,
    ) -> (Reply, Vec<Action>) {
        let bad = |m: String| (error(ErrorCode::BadRequest, m), vec![]);
        for (what, v) in [
            ("group", group),
            ("tag", tag),
            ("levels", levels),
            ("mode", mode),
        ] {
            if v.contains([':', '\n', '\r']) || v.trim() != v || (what != "levels" && v.is_empty())
            {
                return bad(format!(
                    "bad {what} '{v}': it must be non-empty and contain no ':', newline or surrounding blanks"
                ));
            }
        }
        if command.trim().is_empty() || command.contains(['\n', '\r']) {
            return bad(format!(
                "bad command '{command}': it must be one non-empty line"
            ));
        }
        for (name, value) in options {
            if name.contains([':', '\n', '\r']) || value.contains(['\n', '\r']) {
                return bad(format!(
                    "bad option '{name}={value}': one line, no ':' in the name"
                ));
            }
        }
        let mut lines = vec![format!("{group}:{tag}:{levels}:{mode}:{command}")];
        lines.extend(options.iter().map(|(n, v)| format!(":{tag}::{n}:{v}")));
        match self.edit_cltab(now, |text| Ok(edit::insert_entry(text, group, &lines))) {
            Ok(actions) => {
                let line = self
                    .sup
                    .cltab
                    .entries
                    .iter()
                    .find(|e| e.tag == tag)
                    .map(|e| e.line)
                    .unwrap_or(0);
                let running = actions
                    .iter()
                    .any(|a| matches!(a, Action::Spawn { spec, .. } if spec.tag == tag));
                let text = format!(
                    "created {tag} in group {group} at {}:{line}{}",
                    self.sup.cltab.path.display(),
                    if running { "; started" } else { "" }
                );
                (message(&text), actions)
            }
            Err(r) => (r, vec![]),
        }
    }

    fn delete(&mut self, tag: &str, now: Now) -> (Reply, Vec<Action>) {
        let removed = self.edit_cltab(now, |text| {
            edit::remove_entry(text, tag)
                .ok_or_else(|| error(ErrorCode::NoSuchEntry, format!("no such entry: {tag}")))
        });
        match removed {
            Ok(actions) => {
                self.sup.forget(tag);
                let stopping = actions
                    .iter()
                    .any(|a| matches!(a, Action::Signal { tag: t, .. } if t == tag));
                let text = format!(
                    "deleted {tag} from {}{}",
                    self.sup.cltab.path.display(),
                    if stopping { "; stopping it" } else { "" }
                );
                (message(&text), actions)
            }
            Err(r) => (r, vec![]),
        }
    }
}

/// A request in the words of the log.
fn describe(req: &Request) -> String {
    match req {
        Request::Tell { group, level } => format!("tell {group} {level}"),
        Request::Reread => "reread".into(),
        Request::Shutdown => "shutdown".into(),
        Request::Control {
            tag,
            action,
            temporary,
        } => format!(
            "{} {tag}{}",
            match action {
                ControlAction::Stop => "stop",
                ControlAction::Start => "start",
                ControlAction::Restart => "restart",
            },
            if *temporary { " --temporary" } else { "" }
        ),
        Request::RestartGroup { group: Some(g) } => format!("restart --group {g}"),
        Request::RestartGroup { group: None } => "restart --all".into(),
        Request::Create {
            group,
            tag,
            levels,
            mode,
            command,
            ..
        } => format!("create {group}:{tag}:{levels}:{mode}:{command}"),
        Request::Delete { tag } => format!("delete {tag}"),
        other => format!("{other:?}"),
    }
}

fn shutting_down() -> Reply {
    error(
        ErrorCode::ShuttingDown,
        "the daemon is shutting down".into(),
    )
}

fn no_group(group: &str) -> (Reply, Vec<Action>) {
    (
        error(ErrorCode::NoSuchGroup, format!("no such group: {group}")),
        vec![],
    )
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

fn message(text: &str) -> Reply {
    Reply::Message {
        text: text.to_string(),
    }
}

fn error(code: ErrorCode, message: String) -> Reply {
    Reply::Error(ErrorReply { code, message })
}

/// Counts the requests that connection tasks have read and not yet
/// answered, so that the daemon can wait for the replies at exit.
#[derive(Default)]
struct InRequest {
    count: std::sync::atomic::AtomicUsize,
    done: tokio::sync::Notify,
}

impl InRequest {
    /// Marks one request as under way until the guard is dropped.
    fn begin(self: &Arc<Self>) -> InRequestGuard {
        self.count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        InRequestGuard(self.clone())
    }

    /// Resolves once no request is under way.
    async fn idle(&self) {
        while self.count.load(std::sync::atomic::Ordering::SeqCst) > 0 {
            // notify_one keeps a permit when nobody waits yet, so a guard
            // dropped between the check and this await is not missed.
            self.done.notified().await;
        }
    }
}

struct InRequestGuard(Arc<InRequest>);

impl Drop for InRequestGuard {
    fn drop(&mut self) {
        self.0
            .count
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        self.0.done.notify_one();
    }
}

/// What every connection task shares with the event loop.
#[derive(Clone)]
struct Shared {
    tx: mpsc::Sender<Msg>,
    conns: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    locks: Arc<Mutex<locks::LockService>>,
    restored: Arc<AtomicBool>,
    deadline_changed: Arc<tokio::sync::Notify>,
    in_request: Arc<InRequest>,
    /// A connection task is spinning for its client's next request.
    spinning: Arc<AtomicBool>,
}

async fn accept_loop(listener: UnixListener, shared: Shared) {
    use std::sync::atomic::Ordering;
    // Connection ids count up from 1; lease ids have the top bit set.
    let mut next_conn: u64 = 1;
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let conn = next_conn;
                next_conn += 1;
                shared.conns.fetch_add(1, Ordering::SeqCst);
                let shared = shared.clone();
                tokio::spawn(async move {
                    serve(stream, conn, &shared).await;
                    shared
                        .locks
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .connection_closed(conn);
                    shared.conns.fetch_sub(1, Ordering::SeqCst);
                    let _ = shared.tx.send(Msg::Closed).await;
                });
            }
            Err(e) => tracing::warn!("accept failed: {e}"),
        }
    }
}

/// Reads frames from a connection, buffering what arrives early.
struct FrameReader {
    rd: tokio::net::unix::OwnedReadHalf,
    buf: Vec<u8>,
    /// Bytes of `buf` that belong to the frame last returned by `next`.
    used: usize,
}

impl FrameReader {
    /// The next frame's body (valid until the next call); `Closed` at end
    /// of stream.
    async fn next(&mut self) -> Result<&[u8], proto::FrameError> {
        self.buf.drain(..self.used);
        self.used = 0;
        loop {
            if let Some(n) = proto::frame_len(&self.buf)? {
                self.used = n;
                return Ok(&self.buf[4..n]);
            }
            if self.fill().await? == 0 {
                return Err(proto::FrameError::Closed);
            }
        }
    }

    /// Whether a whole frame (or a framing error) is already buffered.
    fn has_frame(&self) -> bool {
        !matches!(proto::frame_len(&self.buf[self.used..]), Ok(None))
    }

    /// Poll the socket without sleeping until bytes, the end of stream or
    /// an error arrive (true; `next` tells which) or `budget` has passed
    /// (false). Between polls the other tasks run and the runtime polls
    /// its sockets (with a zero timeout); the thread keeps its CPU (no
    /// `sched_yield`, which made 8 clients on 8 names slower).
    async fn spin_for_more(&mut self, budget: std::time::Duration) -> bool {
        let start = Instant::now();
        loop {
            self.buf.reserve(4096);
            match self.rd.try_read_buf(&mut self.buf) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                _ => return true,
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
        self.rd.read_buf(&mut self.buf).await
    }

    /// Resolves when the peer closes the connection (or it fails), keeping
    /// any bytes that arrive meanwhile. Pends forever once too much is
    /// buffered, leaving the rest in the socket.
    async fn closed(&mut self) {
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
}

/// One client connection: handshake, then requests until it closes. A bad
/// frame gets an error reply and the connection is closed; the daemon is
/// never disturbed.
async fn serve(stream: UnixStream, conn: u64, shared: &Shared) {
    let peer = match stream.peer_cred() {
        Ok(c) => Peer {
            uid: c.uid(),
            pid: c.pid(),
        },
        Err(e) => {
            tracing::warn!("cannot read the peer credentials of a connection: {e}");
            return;
        }
    };
    let (rd, mut wr) = stream.into_split();
    let mut reader = FrameReader {
        rd,
        buf: Vec::new(),
        used: 0,
    };
    let mut spin = crate::spin::Backoff::new(crate::spin::budget().min(crate::spin::DAEMON_MAX));
    let hello = match reader.next().await {
        Ok(b) => serde_json::from_slice::<Hello>(b).ok(),
        Err(_) => return,
    };
    match hello {
        Some(h) if h.version == PROTOCOL_VERSION => {
            let me = Hello::ours();
            if wr.write_all(&proto::encode(&me)).await.is_err() {
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
            let _ = wr
                .write_all(&proto::encode(&ResponseFrame {
                    id: 0,
                    reply: error(code, msg),
                }))
                .await;
            return;
        }
    }
    loop {
        let body = match reader.next().await {
            Ok(b) => b,
            Err(proto::FrameError::Closed) => return,
            Err(e) => {
                let _answering = shared.in_request.begin();
                let r = ResponseFrame {
                    id: 0,
                    reply: error(ErrorCode::BadRequest, e.to_string()),
                };
                let _ = wr.write_all(&proto::encode(&r)).await;
                return;
            }
        };
        // Until the reply is written (or the task ends).
        let answering = shared.in_request.begin();
        let frame = match proto::decode_request(body) {
            Ok(f) => f,
            Err(e) => {
                let id = serde_json::from_slice::<serde_json::Value>(body)
                    .ok()
                    .and_then(|v| v.get("id").and_then(|i| i.as_u64()))
                    .unwrap_or(0);
                let r = ResponseFrame {
                    id,
                    reply: error(ErrorCode::BadRequest, format!("bad request: {e}")),
                };
                if wr.write_all(&proto::encode(&r)).await.is_err() {
                    return;
                }
                continue;
            }
        };
        let reply = if frame.req.is_lock_service()
            && shared.restored.load(std::sync::atomic::Ordering::SeqCst)
        {
            // Served right here, on the daemon's one thread; most are
            // answered at once, without a channel.
            let mut parked = None;
            let now = {
                let mut locks = shared.locks.lock().unwrap_or_else(PoisonError::into_inner);
                let before = locks.manager.next_deadline();
                let now = locks.handle_lock(conn, frame.req, &peer, || {
                    let (tx, rx) = oneshot::channel();
                    parked = Some(rx);
                    tx
                });
                let after = locks.manager.next_deadline();
                if after.is_some_and(|a| before.is_none_or(|b| a < b)) {
                    shared.deadline_changed.notify_one();
                }
                now
            };
            match (now, parked) {
                (Some(r), _) => r,
                // A blocked lock: notice meanwhile when the client goes
                // away, so its locks and waits are dropped.
                (None, Some(rx)) => tokio::select! {
                    r = rx => match r {
                        Ok(r) => r,
                        Err(_) => return,
                    },
                    _ = reader.closed() => return,
                },
                (None, None) => unreachable!("handle_lock parks what it does not answer"),
            }
        } else {
            let (otx, mut orx) = oneshot::channel();
            let may_block = matches!(
                frame.req,
                Request::Wait { .. } | Request::LockAcquire { wait: true, .. }
            );
            let msg = Msg::Request {
                conn,
                req: frame.req,
                peer,
                reply: otx,
            };
            if shared.tx.send(msg).await.is_err() {
                // The event loop is finishing its exit.
                let r = ResponseFrame {
                    id: frame.id,
                    reply: shutting_down(),
                };
                let _ = wr.write_all(&proto::encode(&r)).await;
                return;
            }
            if may_block {
                // A wait (or a lock before the daemon took requests): notice
                // meanwhile when the client goes away.
                tokio::select! {
                    r = &mut orx => match r {
                        Ok(r) => r,
                        Err(_) => return,
                    },
                    _ = reader.closed() => return,
                }
            } else {
                match orx.await {
                    Ok(r) => r,
                    Err(_) => return,
                }
            }
        };
        let r = ResponseFrame {
            id: frame.id,
            reply,
        };
        if wr.write_all(&proto::encode(&r)).await.is_err() {
            return;
        }
        drop(answering);
        // Spin for the client's next request before sleeping (see
        // crate::spin), unless it is already here or another connection
        // is spinning (one spinner keeps the daemon awake; more would only
        // take turns at the thread the busy connections need).
        if !reader.has_frame()
            && spin.try_now()
            && !shared
                .spinning
                .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            let arrived = reader.spin_for_more(spin.budget()).await;
            shared
                .spinning
                .store(false, std::sync::atomic::Ordering::Relaxed);
            spin.record(arrived);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn spinning_reads_what_comes_and_gives_up_on_silence() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (a, b) = UnixStream::pair().unwrap();
            let (rd, _wr) = b.into_split();
            let mut r = FrameReader {
                rd,
                buf: Vec::new(),
                used: 0,
            };
            assert!(!r.has_frame());
            assert!(!r.spin_for_more(Duration::from_micros(50)).await);
            // Half a frame: bytes came, but no frame yet.
            use tokio::io::AsyncWriteExt;
            let mut a = a;
            let frame = proto::encode(&Request::Ping);
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
}
