//! The one event loop: child exits (SIGCHLD), timers, signals and the
//! requests that need the supervisor. No polling: the loop sleeps until
//! the next event or deadline.
//!
//! A turn: perform the actions of the last event (spawns report back at
//! once, exits feed the machines) until none is left; fan the
//! supervisor's changes out (events, the status file, parked `wait`s);
//! hand the turn's store ops to the state store; send the turn's replies
//! once the ops are durable (at once for SQLite, when its channel answers
//! for a store that answers later — without holding the loop up).

use super::conn::{Shared, error, shutting_down};
use super::policy::{Peer, Right};
use super::route::LoopJob;
use super::{StartError, io_err, view};
use crate::config::Paths;
use crate::events::EventKind;
use crate::proto::{ErrorCode, Reply};
use crate::store::{Pending, StateStore, StatusFile};
use crate::supervisor::executor::{Adopted, Sweep, scan_adopted};
use crate::supervisor::executor::{EntryEvent, Executor};
use crate::supervisor::machine::{Action, GroupState, ProcEvent};
use crate::supervisor::spawn::Gated;
use crate::supervisor::{Change, Now, Supervisor};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, oneshot};

/// What connection tasks tell the event loop.
pub(crate) enum Msg {
    /// A request for the event loop, already allowed by the policy.
    Job {
        job: LoopJob,
        right: Right,
        /// The request in the words of the log (changes and shutdown).
        describe: Option<String>,
        peer: Peer,
        /// Who asked, as the policy described them (for logged rights).
        who: String,
        /// The router's name of the handler (`groups::tell`).
        handler: &'static str,
        /// The request's tag in the log: peer, connection and request id.
        tag: String,
        reply: oneshot::Sender<Reply>,
    },
    /// A connection closed (its locks are already released).
    Closed,
}

/// One request being served by a loop handler.
pub(crate) struct Call {
    #[allow(dead_code)]
    pub peer: Peer,
    /// Who asked ("root (uid 0)"), for changes; empty for reads.
    pub who: String,
    /// Taken by a handler that answers later (a parked `wait`).
    pub reply: Option<oneshot::Sender<Reply>>,
}

/// A parked `wait` request.
pub(crate) struct Waiter {
    pub group: String,
    pub level: Option<String>,
    pub state: Option<GroupState>,
    pub deadline: Instant,
    pub reply: oneshot::Sender<Reply>,
}

impl Waiter {
    pub fn satisfied(&self, sup: &Supervisor) -> bool {
        sup.level_state(&self.group).is_some_and(|(level, state)| {
            self.level.as_deref().is_none_or(|l| Some(l) == level)
                && match self.state {
                    Some(s) => s == state,
                    None => state.is_settled(),
                }
        })
    }

    /// The reply once the condition holds.
    /// The group's status, in one page: a group whose entries do not fit
    /// in one (about 3 MiB) gets its first page and `more`, from which a
    /// `status` request goes on, like any status page.
    pub fn answer(&self, sup: &Supervisor) -> Reply {
        let (groups, more) = view::status_page(
            sup,
            Some(&self.group),
            true,
            Default::default(),
            crate::proto::STATUS_PAGE,
            Now::real(),
        );
        Reply::Status { groups, more }
    }

    fn timed_out(&self) -> Reply {
        let want = match (&self.level, self.state) {
            (Some(l), Some(s)) => format!("level {l} and state {}", s.as_str()),
            (Some(l), None) => format!("level {l} settled"),
            (None, Some(s)) => format!("state {}", s.as_str()),
            (None, None) => "a settled state".to_string(),
        };
        error(
            ErrorCode::Timeout,
            format!("timed out waiting for group {} to reach {want}", self.group),
        )
    }
}

/// The daemon's state, owned by the event loop.
pub(crate) struct Daemon {
    pub sup: Supervisor,
    pub exec: Executor,
    pub state: Arc<Mutex<dyn StateStore>>,
    pub status_file: StatusFile,
    pub shared: Arc<Shared>,
    pub waiters: Vec<Waiter>,
    pub halting: bool,
    pub paths: Paths,
    /// `clinit lockd`: exit after this long with no lock, lease or
    /// connection.
    pub idle_exit: Option<Duration>,
    /// Actions of this turn, for the executor.
    pub actions: Vec<Action>,
    /// Replies of this turn, sent once its store ops are durable.
    pub replies: Vec<(oneshot::Sender<Reply>, Reply)>,
    /// The status file is behind the groups' states.
    clstat_dirty: bool,
    /// When the status file was last written.
    clstat_written: Option<Instant>,
    /// Maintenance mode (parameter `maintenance`): starts are held.
    pub maintenance: bool,
    /// Spawns held back in maintenance mode, done when it ends.
    held: Vec<Action>,
    /// systemd's notification socket (`Type=notify`).
    pub sd_notify: Option<super::notify::Notify>,
}

/// The status file is rewritten at most this often: each rewrite creates
/// and frees an inode (a temp file renamed over the old), which under a
/// stream of level switches took a fifth of the daemon's time.
pub const CLSTAT_EVERY: Duration = Duration::from_millis(50);

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

impl Daemon {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        sup: Supervisor,
        exec: Executor,
        state: Arc<Mutex<dyn StateStore>>,
        shared: Arc<Shared>,
        paths: Paths,
        idle_exit: Option<Duration>,
    ) -> Daemon {
        Daemon {
            status_file: StatusFile::new(&paths.clstat),
            sup,
            exec,
            state,
            shared,
            waiters: Vec::new(),
            halting: false,
            paths,
            idle_exit,
            actions: Vec::new(),
            replies: Vec::new(),
            clstat_dirty: true,
            clstat_written: None,
            maintenance: false,
            held: Vec::new(),
            sd_notify: None,
        }
    }

    /// Tell systemd (when it started the daemon).
    fn notify(&self, msg: &str) {
        if let Some(n) = &self.sd_notify {
            n.send(msg);
        }
    }

    /// The one-line status systemd shows.
    fn status_line(&self) -> String {
        let groups = self.sup.groups();
        let running: usize = groups
            .iter()
            .map(|g| g.slots.iter().filter(|s| s.proc.pid().is_some()).count())
            .sum();
        format!(
            "STATUS={} groups, {running} processes running{}",
            groups.len(),
            if self.maintenance {
                "; MAINTENANCE MODE"
            } else {
                ""
            }
        )
    }

    /// Turn maintenance mode on or off. Off: the starts held meanwhile are
    /// done now (supervision resumes from the recorded state).
    pub fn set_maintenance(&mut self, on: bool, by: &str) {
        if on == self.maintenance {
            return;
        }
        self.maintenance = on;
        if on {
            tracing::warn!(
                "maintenance mode ON (by {by}): every process is kept as it is; nothing is started, restarted or stopped by the daemon, and tells are refused"
            );
        } else {
            tracing::warn!(
                "maintenance mode OFF (by {by}): supervision resumes; {} held starts are done now",
                self.held.len()
            );
            self.actions.append(&mut self.held);
        }
        self.shared.events.push(EventKind::Maintenance {
            on,
            by: by.to_string(),
        });
        self.notify(&self.status_line());
    }

    /// Reopen the log file (logrotate); children write to the new one.
    pub fn reopen_log(&mut self) -> Result<Option<std::path::PathBuf>, String> {
        match crate::logging::reopen() {
            Ok(Some(f)) => {
                self.exec.set_log(f);
                let path = crate::logging::path();
                tracing::info!("log reopened");
                Ok(path)
            }
            Ok(None) => Ok(None),
            Err(e) => {
                let path = crate::logging::path().unwrap_or_default();
                tracing::error!("cannot reopen the log {}: {e}", path.display());
                Err(format!("cannot reopen the log {}: {e}", path.display()))
            }
        }
    }

    pub async fn run(
        mut self,
        mut rx: mpsc::Receiver<Msg>,
        goals: Vec<(String, String)>,
        started: Instant,
    ) -> Result<(), StartError> {
        let sig = |k| signal(k).map_err(io_err("signal setup", &self.paths.socket));
        let mut sigchld = sig(SignalKind::child())?;
        let mut sigterm = sig(SignalKind::terminate())?;
        let mut sigint = sig(SignalKind::interrupt())?;
        // SIGHUP reopens the log (logrotate's postrotate).
        let mut sighup = sig(SignalKind::hangup())?;

        tracing::info!(
            "clinit daemon started, pid {}, socket {}, state {}",
            std::process::id(),
            self.paths.socket.display(),
            self.paths.state.display()
        );
        self.shared.events.push(EventKind::DaemonStarted {
            pid: std::process::id(),
            version: format!("clinit {}", env!("CARGO_PKG_VERSION")),
        });
        // Restore goals before any request is handled: connection tasks
        // hold their requests until `restored`.
        let mut restoring: Vec<String> = Vec::new();
        for (group, level) in goals {
            match self.sup.tell(&group, &level, Now::real()) {
                Some(a) => {
                    tracing::info!("restoring group {group} to its goal, level {level}");
                    self.actions.extend(a);
                    restoring.push(group);
                }
                None => tracing::warn!(
                    "goal of group {group} (level {level}) not restored: the cltab has no such group"
                ),
            }
        }
        let restore_deadline = Instant::now() + self.paths.restore_timeout;
        let mut events: VecDeque<EntryEvent> = VecDeque::new();
        let mut restored = false;
        let mut idle_since: Option<Instant> = None;
        let mut next_ping: Option<Instant> = None;
        let mut last_status = String::new();
        let mut status_seq = u64::MAX;
        let deadline_changed = self.shared.deadline_changed.clone();

        // The one sweep for adopted leftovers in flight (a /proc scan, off
        // the loop), with the sweeps it answers.
        let mut sweeping: Option<(Vec<Sweep>, tokio::task::JoinHandle<Vec<Adopted>>)> = None;

        loop {
            self.drain(&mut events);
            self.fan_out();
            self.persist();
            if sweeping.is_none() {
                let sweeps = self.exec.take_sweeps();
                if !sweeps.is_empty() {
                    sweeping = Some((sweeps, tokio::task::spawn_blocking(scan_adopted)));
                }
            }
            if !restored {
                restoring.retain(|g| {
                    !self
                        .sup
                        .level_state(g)
                        .is_some_and(|(_, st)| st.is_settled())
                });
                if restoring.is_empty() || Instant::now() >= restore_deadline {
                    restored = true;
                    self.shared.restored.send_replace(true);
                    self.notify(&format!(
                        "READY=1\nMAINPID={}\n{}",
                        std::process::id(),
                        self.status_line()
                    ));
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
                && sweeping.is_none()
                && self.exec.notifier_count() == 0
            {
                tracing::info!("every process has stopped; exiting");
                self.finish_replies(&mut rx).await;
                return Ok(());
            }
            let idle_deadline = match self.idle_exit {
                Some(idle)
                    if self.shared.conns.load(std::sync::atomic::Ordering::SeqCst) == 0
                        && self.shared.locks().is_idle() =>
                {
                    let since = *idle_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= idle {
                        tracing::info!(
                            "no lock held and no client for {} s; exiting",
                            idle.as_secs()
                        );
                        self.shared.closing.send_replace(true);
                        return Ok(());
                    }
                    Some(since + idle)
                }
                _ => {
                    idle_since = None;
                    None
                }
            };
            // systemd's STATUS=, sent when the summary changes. Every
            // change of it (a start, an exit, maintenance) is an event, so
            // it is looked at only when the event ring moved.
            if restored && self.sd_notify.is_some() {
                let seq = self.shared.events.lock().last();
                if seq != status_seq {
                    status_seq = seq;
                    let line = self.status_line();
                    if line != last_status {
                        self.notify(&line);
                        last_status = line;
                    }
                }
            }
            // systemd's watchdog: pinged from this loop, so a loop that
            // hangs stops the pings.
            let ping_due = self
                .sd_notify
                .as_ref()
                .and_then(|n| n.ping_every())
                .map(|every| {
                    let due = *next_ping.get_or_insert_with(|| Instant::now() + every);
                    if due <= Instant::now() {
                        self.notify("WATCHDOG=1");
                        next_ping = Some(Instant::now() + every);
                    }
                    next_ping.unwrap_or(due)
                });
            let deadline = self
                .waiters
                .iter()
                .map(|w| w.deadline)
                .chain(ping_due)
                .chain(self.exec.next_deadline())
                .chain(self.shared.locks().next_deadline())
                .chain(idle_deadline)
                .chain(self.clstat_due())
                .chain((!restored).then_some(restore_deadline))
                .min();
            tokio::select! {
                _ = sigchld.recv() => events.extend(self.exec.reap()),
                _ = sigterm.recv(), if !self.halting => self.begin_halt("SIGTERM"),
                _ = sigint.recv(), if !self.halting => self.begin_halt("SIGINT"),
                _ = sighup.recv() => {
                    let _ = self.reopen_log();
                }
                _ = sleep_until(deadline) => {
                    let now = Instant::now();
                    for t in self.exec.due_timers(now) {
                        events.push_back((t.group, t.tag, ProcEvent::Timer(t.kind)));
                    }
                    let changes = {
                        let mut locks = self.shared.locks();
                        locks.tick(now);
                        locks.take_changes()
                    };
                    self.shared.events.push_all(changes.into_iter().map(Into::into));
                    self.expire_waiters(now);
                }
                _ = deadline_changed.notified() => {}
                found = async { (&mut sweeping.as_mut().expect("guarded").1).await },
                    if sweeping.is_some() =>
                {
                    let (sweeps, _) = sweeping.take().expect("guarded");
                    self.exec.finish_sweeps(&sweeps, found.unwrap_or_default());
                }
                Some(msg) = rx.recv() => match msg {
                    // The connection task released its locks; this wakes the
                    // loop to reconsider the idle exit and drop the waits of
                    // clients that went away.
                    Msg::Closed => self.waiters.retain(|w| !w.reply.is_closed()),
                    Msg::Job { job, right, describe, peer, who, handler, tag, reply } => {
                        let span = tracing::info_span!("req", tag = %tag);
                        let _in = span.enter();
                        self.serve(job, right, describe, peer, who, handler, reply)
                    }
                },
            }
        }
    }

    /// Serve one request; its reply goes out after this turn's store ops
    /// are durable.
    #[allow(clippy::too_many_arguments)]
    fn serve(
        &mut self,
        job: LoopJob,
        right: Right,
        describe: Option<String>,
        peer: Peer,
        who: String,
        handler: &'static str,
        reply: oneshot::Sender<Reply>,
    ) {
        // While shutting down, and in `clinit lockd`, nothing changes.
        if right == Right::Change {
            if self.halting {
                self.replies.push((reply, shutting_down()));
                return;
            }
            if self.idle_exit.is_some() {
                self.replies.push((
                    reply,
                    error(
                        ErrorCode::BadRequest,
                        "this is clinit lockd: it serves locks and records only".into(),
                    ),
                ));
                return;
            }
        }
        // Maintenance mode: no operator's request that starts or stops
        // entries; the console's own requests (setpar turns it off) still
        // pass, and so does the cluster agent's (its starts are held like
        // every other).
        if right == Right::Change
            && self.maintenance
            && !handler.starts_with("params::")
            && !handler.starts_with("cluster::")
        {
            let what = describe.as_deref().unwrap_or(handler);
            tracing::info!("refused {what} (by {who}): maintenance mode");
            self.replies.push((
                reply,
                error(
                    ErrorCode::Maintenance,
                    format!(
                        "{what} refused: maintenance mode is on (nothing is started or stopped); `clinit setpar maintenance off` resumes supervision"
                    ),
                ),
            ));
            return;
        }
        let mut call = Call {
            peer,
            who,
            reply: Some(reply),
        };
        let r = job(self, &mut call);
        // Logged as done only when it was: a refused or failed request is
        // logged with why.
        if let Some(d) = &describe {
            match &r {
                Some(Reply::Error(e)) => {
                    tracing::info!(
                        "{d} (by {}) failed: {} [{}]",
                        call.who,
                        e.message,
                        e.code.name()
                    )
                }
                _ => tracing::info!("{d} (by {})", call.who),
            }
        }
        if let (Some(r), Some(tx)) = (r, call.reply) {
            self.replies.push((tx, r));
        }
    }

    /// Perform actions until no event is left: spawn results and exits
    /// produce events, events produce actions.
    fn drain(&mut self, events: &mut VecDeque<EntryEvent>) {
        loop {
            for a in std::mem::take(&mut self.actions) {
                if self.maintenance
                    && let Action::Spawn { spec, .. } = &a
                {
                    tracing::info!(
                        "maintenance: not starting {}:{}; it starts when maintenance ends",
                        spec.group,
                        spec.tag
                    );
                    self.held.push(a);
                    continue;
                }
                if let Some(e) = self.exec.perform(a) {
                    events.push_back(e);
                }
            }
            let Some((g, t, ev)) = events.pop_front() else {
                break;
            };
            self.actions = self.sup.proc_event(&g, &t, ev, Now::real());
        }
    }

    /// The supervisor's changes of this turn: to the event stream, to the
    /// status file (a group changed) and to the `wait`s of those groups.
    fn fan_out(&mut self) {
        let changes = self.sup.take_changes();
        if changes.is_empty() {
            return;
        }
        for c in &changes {
            if let Change::GaveUp { group, tag, .. } = c {
                crate::logging::dump_last_words(&format!("entry {group}:{tag} gave up"));
            }
        }
        let mut groups: Vec<String> = Vec::new();
        for c in &changes {
            if let Change::Group { group, .. } = c {
                self.clstat_dirty = true;
                if !groups.contains(group) {
                    groups.push(group.clone());
                }
            }
        }
        self.shared
            .events
            .push_all(changes.into_iter().map(EventKind::from));
        if groups.is_empty() || self.waiters.is_empty() {
            return;
        }
        for w in std::mem::take(&mut self.waiters) {
            if w.reply.is_closed() {
                continue;
            }
            if groups.contains(&w.group) && w.satisfied(&self.sup) {
                let r = w.answer(&self.sup);
                self.replies.push((w.reply, r));
            } else {
                self.waiters.push(w);
            }
        }
    }

    /// Answer the `wait`s whose time is up.
    fn expire_waiters(&mut self, now: Instant) {
        for w in std::mem::take(&mut self.waiters) {
            if w.reply.is_closed() {
                continue;
            }
            if now >= w.deadline {
                let r = w.timed_out();
                self.replies.push((w.reply, r));
            } else {
                self.waiters.push(w);
            }
        }
    }

    /// Write this turn's changes: the store (one atomic apply) before any
    /// reply goes out, and the status file when a group changed.
    fn persist(&mut self) {
        let mut ops = self.sup.take_ops();
        ops.extend(self.exec.take_ops());
        // Children forked this turn run their commands only once their
        // records are durable: after a crash before that, the next daemon
        // could not find them (see `supervisor::spawn`).
        let gates = self.exec.take_gates();
        let done = if ops.is_empty() {
            None
        } else {
            Some(
                self.state
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .apply(ops),
            )
        };
        if self.clstat_due().is_some_and(|due| due <= Instant::now()) {
            self.clstat_dirty = false;
            self.clstat_written = Some(Instant::now());
            if let Err(e) = self.status_file.write_status(&view::clstat(&self.sup)) {
                tracing::error!("{e}");
            }
        }
        let replies = std::mem::take(&mut self.replies);
        match done {
            None | Some(Pending::Ready(Ok(()))) => {
                release(gates, None);
                send(replies);
            }
            Some(Pending::Ready(Err(e))) => {
                tracing::error!("{e}");
                crate::logging::dump_last_words(&format!("state store failure: {e}"));
                release(gates, Some(&e.to_string()));
                send(replies);
            }
            // The store answers later: the children start and the replies
            // go out then, and the loop goes on meanwhile.
            Some(Pending::Later(rx)) => {
                tokio::spawn(async move {
                    match rx.await {
                        Ok(Ok(())) => release(gates, None),
                        Ok(Err(e)) => {
                            tracing::error!("{e}");
                            crate::logging::dump_last_words(&format!("state store failure: {e}"));
                            release(gates, Some(&e.to_string()));
                        }
                        Err(_) => {
                            tracing::error!("the state store stopped before it answered");
                            release(gates, Some("the state store stopped"));
                        }
                    }
                    send(replies);
                });
            }
        }
    }

    /// When the status file is to be written next (`None`: it is current).
    fn clstat_due(&self) -> Option<Instant> {
        self.clstat_dirty.then(|| match self.clstat_written {
            Some(at) => at + CLSTAT_EVERY,
            None => Instant::now(),
        })
    }

    /// Before the daemon exits: let the connection tasks write the replies
    /// they were given (the runtime would drop them unsent, and `clinit
    /// shutdown` would see its connection closed instead of its answer).
    /// Requests that will never be answered now get `SHUTTING_DOWN` (those
    /// still queued for the event loop, and `wait`s) or are dropped
    /// (blocked lock requests: their clients see the lock service go, as
    /// after a crash); event subscriptions end. Bounded: a client that does
    /// not read its replies cannot hold the exit up for more than a second.
    async fn finish_replies(&mut self, rx: &mut mpsc::Receiver<Msg>) {
        rx.close();
        while let Ok(msg) = rx.try_recv() {
            if let Msg::Job { reply, .. } = msg {
                let _ = reply.send(shutting_down());
            }
        }
        for w in self.waiters.drain(..) {
            let _ = w.reply.send(shutting_down());
        }
        self.shared.locks().shutdown();
        self.shared.closing.send_replace(true);
        let _ = tokio::time::timeout(Duration::from_secs(1), self.shared.in_request.idle()).await;
    }

    /// Stop every group and exit once every process has stopped; `by` is
    /// who asked (or the signal).
    pub fn begin_halt(&mut self, by: &str) {
        // Held starts would keep their entries waiting for a spawn that
        // never comes: they go out, and are stopped with the rest.
        self.set_maintenance(false, by);
        self.halting = true;
        self.notify("STOPPING=1\nSTATUS=stopping every group");
        tracing::info!("shutting down: stopping every group");
        self.shared
            .events
            .push(EventKind::DaemonShutdown { by: by.to_string() });
        let actions = self.sup.halt(Now::real());
        self.actions.extend(actions);
    }
}

/// Let gated children run their commands. When their records could not be
/// written (`failed`), they run all the same: a service that does not start
/// because the state disk is full is worse than the duplicate a crash in
/// that state could cause; the log says so.
fn release(gates: Vec<Gated>, failed: Option<&str>) {
    if let (Some(why), false) = (failed, gates.is_empty()) {
        tracing::error!(
            "{} children start without a record of their pids ({why}): if the daemon dies now, the next one cannot stop them",
            gates.len()
        );
    }
    crate::supervisor::spawn::release(gates);
}

fn send(replies: Vec<(oneshot::Sender<Reply>, Reply)>) {
    for (tx, r) in replies {
        let _ = tx.send(r);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::policy::LocalUser;
    use crate::daemon::route::{Target, route};
    use crate::proto::Request;
    use crate::store::{DisabledNote, Persisted, StoreError, StoreOp};

    type Answer = (Vec<StoreOp>, oneshot::Sender<Result<(), StoreError>>);

    /// A state store whose applies answer when the test says.
    struct SlowState {
        answers: Arc<Mutex<Vec<Answer>>>,
    }

    impl StateStore for SlowState {
        fn location(&self) -> String {
            "slow".into()
        }
        fn load(&mut self) -> Result<Persisted, StoreError> {
            Ok(Default::default())
        }
        fn disabled_notes(&mut self) -> Result<Vec<DisabledNote>, StoreError> {
            Ok(vec![])
        }
        fn apply(&mut self, ops: Vec<StoreOp>) -> Pending<Result<(), StoreError>> {
            let (tx, rx) = oneshot::channel();
            self.answers.lock().unwrap().push((ops, tx));
            Pending::Later(rx)
        }
        fn token_floor(&mut self) -> Result<u64, StoreError> {
            Ok(0)
        }
        fn reserve_tokens(&mut self, _: u64) -> Pending<Result<(), StoreError>> {
            Pending::Ready(Ok(()))
        }
    }

    fn job(req: Request) -> (LoopJob, Right) {
        let r = route(req);
        match r.target {
            Target::Loop { job, .. } => (job, r.right),
            _ => panic!("not served by the loop"),
        }
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// A daemon on `text` over `state`, with a record store in `dir`.
    fn test_daemon(dir: &std::path::Path, state: Arc<Mutex<dyn StateStore>>, text: &str) -> Daemon {
        let records: Arc<Mutex<dyn crate::store::RecordBackend>> =
            Arc::new(Mutex::new(crate::records::LocalRecords::new(Arc::new(
                Mutex::new(crate::store::sqlite::StateDb::open(dir).unwrap()),
            ))));
        let (tx, _rx) = mpsc::channel(1);
        let shared = Arc::new(Shared::for_tests(tx, state.clone(), records));
        let sup = Supervisor::new(crate::supervisor::sim::cltab(text), Default::default());
        *shared.cltab.lock().unwrap() = sup.cltab.clone();
        let log = std::fs::File::create(dir.join("log")).unwrap();
        let paths = Paths {
            cltab: dir.join("cltab"),
            socket: dir.join("s"),
            clstat: dir.join("clstat"),
            log: dir.join("log"),
            logdir: None,
            socket_mode: 0o600,
            socket_group: None,
            state: dir.join("state"),
            userlist: None,
            restore_timeout: Duration::from_secs(1),
        };
        Daemon::new(
            sup,
            Executor::new(log, None, std::path::Path::new("s")),
            state,
            shared,
            paths,
            None,
        )
    }

    /// A reread diffed off the loop against a cltab that a create has
    /// replaced meanwhile is diffed again against the current one.
    #[test]
    fn a_reread_planned_against_an_older_cltab_is_diffed_again() {
        let rt = runtime();
        let _g = rt.enter();
        let dir = tempfile::tempdir().unwrap();
        let state: Arc<Mutex<dyn StateStore>> = Arc::new(Mutex::new(SlowState {
            answers: Default::default(),
        }));
        let mut d = test_daemon(dir.path(), state, "g:a:1:off:true\n");
        let cltab = crate::supervisor::sim::cltab;
        let events = |d: &Daemon| {
            d.shared
                .events
                .lock()
                .recent(10, |e| matches!(e.kind, EventKind::Reread { .. }))
        };
        let call = || Call {
            peer: Peer::Local(LocalUser {
                uid: 0,
                gid: 0,
                pid: None,
            }),
            who: "root".into(),
            reply: None,
        };
        for (between, added, removed) in [
            // Nothing between: the plan's diff is applied as made.
            (None, vec!["b"], vec![]),
            // A create of c between: c is removed by this reread.
            (
                Some("g:a:1:off:true\ng:c:1:off:true\n"),
                vec!["b"],
                vec!["c"],
            ),
        ] {
            let base = d.sup.cltab.clone();
            // Back to a alone first, so each row starts from it.
            if base.entries.len() != 1 {
                d.sup.reread(cltab("g:a:1:off:true\n"), Now::real());
            }
            let base = d.sup.cltab.clone();
            let plan =
                crate::supervisor::Reread::plan(cltab("g:a:1:off:true\ng:b:1:off:true\n"), base);
            if let Some(text) = between {
                d.sup.reread(cltab(text), Now::real());
            }
            let reply = super::super::handlers::control::reread(&mut d, &call(), Ok(plan));
            assert!(matches!(reply, Reply::Message { .. }), "{reply:?}");
            let ev = events(&d);
            match &ev[0].kind {
                EventKind::Reread {
                    added: a,
                    removed: r,
                    ..
                } => {
                    assert_eq!(a, &added, "{between:?}");
                    assert_eq!(r, &removed, "{between:?}");
                }
                other => panic!("{other:?}"),
            }
            let tags: Vec<&str> = d.sup.cltab.entries.iter().map(|e| e.tag.as_str()).collect();
            assert_eq!(tags, ["a", "b"]);
            // The connections' copy is the applied cltab.
            assert!(Arc::ptr_eq(&d.shared.cltab.lock().unwrap(), &d.sup.cltab));
        }
    }

    #[test]
    fn replies_wait_for_a_store_that_answers_later_and_the_loop_goes_on() {
        let rt = runtime();
        let _g = rt.enter();
        let dir = tempfile::tempdir().unwrap();
        let answers = Arc::new(Mutex::new(Vec::new()));
        let state: Arc<Mutex<dyn StateStore>> = Arc::new(Mutex::new(SlowState {
            answers: answers.clone(),
        }));
        // An entry that never runs: telling its group changes only the goal.
        let mut d = test_daemon(dir.path(), state, "g:a:1:off:true\n");
        let root = Peer::Local(LocalUser {
            uid: 0,
            gid: 0,
            pid: None,
        });
        let (told_tx, mut told) = oneshot::channel();
        let (j, right) = job(Request::Tell {
            group: "g".into(),
            level: "1".into(),
        });
        d.serve(
            j,
            right,
            None,
            root.clone(),
            "root".into(),
            "groups::tell",
            told_tx,
        );
        d.fan_out();
        d.persist();
        // The goal went to the store, which has not answered: no reply yet.
        assert_eq!(answers.lock().unwrap().len(), 1);
        assert_eq!(
            answers.lock().unwrap()[0].0,
            vec![StoreOp::SetGoal {
                group: "g".into(),
                level: "1".into()
            }]
        );
        assert!(told.try_recv().is_err());
        // The loop goes on: a status is answered meanwhile.
        let (status_tx, mut status) = oneshot::channel();
        let (j, right) = job(Request::Status {
            group: None,
            brief: true,
            from: None,
            usage: false,
        });
        d.serve(
            j,
            right,
            None,
            root,
            String::new(),
            "groups::status",
            status_tx,
        );
        d.fan_out();
        d.persist();
        assert!(matches!(status.try_recv(), Ok(Reply::Status { .. })));
        assert!(told.try_recv().is_err());
        // The store answers: the tell's reply goes out.
        let (_, done) = answers.lock().unwrap().pop().unwrap();
        done.send(Ok(())).unwrap();
        rt.block_on(async {
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
        });
        assert!(matches!(told.try_recv(), Ok(Reply::Message { .. })));
    }
}
