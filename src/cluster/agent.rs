//! A node's side of cluster mode: the task beside the event loop that
//! keeps the node registered, follows the shared cltab and the goals told
//! to this node through etcd, and publishes the node's groups.
//!
//! It changes nothing itself: a new cltab revision or a goal becomes a job
//! for the event loop, exactly as a `reread` or a `tell` from a local
//! client (same handlers, same rules), and the node's answer is written
//! back to etcd. While etcd cannot be reached the node keeps supervising
//! what it last knew (the cached cltab revision) and tries again every
//! second or so; [`ClusterView`] says how things stand, for `status` and
//! the log.

use super::{
    Applied, CachedCltab, ClusterConfig, ClusterError, Goal, GroupSummary, NodeInfo, NodeState,
    now_unix,
};
use crate::cltab::Cltab;
use crate::daemon::conn::Shared;
use crate::daemon::event_loop::Msg;
use crate::daemon::policy::{LocalUser, Peer, Right};
use crate::daemon::route::LoopJob;
use crate::proto::{Reply, Request};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::oneshot;

/// How a node stands with the cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClusterView {
    pub cluster: String,
    pub node: String,
    pub endpoints: String,
    pub connected: bool,
    /// Unix seconds since `connected` last changed (0: never connected).
    pub since: i64,
    /// Why etcd could not be reached, while it cannot.
    pub error: Option<String>,
    /// The shared cltab revision the node runs (0: none yet).
    pub cltab_rev: i64,
    /// A newer revision the node could not apply, and why.
    pub rejected: Option<(i64, String)>,
}

/// What the daemon keeps for cluster mode.
pub struct ClusterHandle {
    pub cfg: ClusterConfig,
    /// The node's local cltab (its node-local settings).
    pub local_cltab: PathBuf,
    pub state_dir: PathBuf,
    pub socket: PathBuf,
    /// When the daemon started (Unix seconds), for its registration.
    pub started: i64,
    /// The shared cltab revision the node runs, for those who wait until
    /// it runs one (a `create` or `delete` in cluster mode).
    pub applied: tokio::sync::watch::Sender<i64>,
    /// The revision the node runs and its text, set on the event loop in
    /// the very job that applies it: what `create`/`delete` edit and what
    /// a local `reread` applies again (never an older cache file).
    pub running: Arc<Mutex<(i64, String)>>,
    /// Told by a local `reread` while a revision is refused: the agent
    /// reads the shared cltab again (the cause may be fixed now).
    pub refetch: tokio::sync::Notify,
    pub view: Mutex<ClusterView>,
    /// Exclusive groups: permits, the watchdog, owners as last seen.
    pub exclusive: Arc<super::owners::Exclusive>,
    /// The daemon's parameters (`--set`, `clinit setpar`), laid over the
    /// local settings.
    pub params: Arc<Mutex<crate::params::Params>>,
}

impl ClusterHandle {
    pub fn view(&self) -> ClusterView {
        self.view
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set(&self, f: impl FnOnce(&mut ClusterView)) {
        f(&mut self.view.lock().unwrap_or_else(PoisonError::into_inner));
    }

    /// The cltab a node runs: the shared `text` of revision `rev` under its
    /// local settings (read again from the local cltab, which must hold no
    /// entries).
    pub fn compose(&self, rev: i64, text: &str) -> Result<Cltab, crate::cltab::CltabErrors> {
        let local = load_local(&self.local_cltab)?;
        crate::cltab::parse_shared(&self.cfg.cltab_name(rev), text, &self.local_over(&local))
    }

    /// The local settings with the daemon's parameters over them.
    pub fn local_over(&self, local: &Cltab) -> crate::cltab::Settings {
        let over = self
            .params
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .overrides();
        local.settings.overridden_by(&over)
    }

    /// The lock of [`ClusterHandle::running`], for a loop job to set.
    fn running_handle(&self) -> Arc<Mutex<(i64, String)>> {
        self.running.clone()
    }

    /// The revision the node runs and its text.
    pub fn running(&self) -> (i64, String) {
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// What a `reread` on this node applies: the local cltab's settings
    /// again over the shared revision it runs.
    pub fn reread(&self) -> Result<Cltab, crate::cltab::CltabErrors> {
        let (rev, text) = self.running();
        self.compose(rev, &text)
    }
}

/// `create` or `delete` in cluster mode: `change` the text of the shared
/// revision this node runs, store the result if that revision is still
/// the stored one, and answer once this node runs the new revision (so
/// that, as on one machine, the entry has started or stopping has begun).
pub(crate) fn edit_shared(
    c: &mut crate::daemon::event_loop::Call,
    h: Arc<ClusterHandle>,
    change: impl FnOnce(&str) -> Result<String, Reply>,
    done: impl FnOnce(i64) -> String + Send + 'static,
) -> Option<Reply> {
    use crate::daemon::conn::error;
    use crate::proto::ErrorCode;
    let view = h.view();
    if !view.connected {
        return Some(error(
            ErrorCode::EtcdUnreachable,
            format!(
                "cannot reach etcd at {}: the shared cltab cannot be edited now",
                view.endpoints
            ),
        ));
    }
    let (rev, running) = h.running();
    let text = match change(&running) {
        Ok(t) => t,
        Err(r) => return Some(r),
    };
    if let Err(e) = crate::cltab::parse(&h.cfg.cltab_name(rev), &text) {
        return Some(error(ErrorCode::CltabInvalid, e.to_string()));
    }
    let reply = c.reply.take()?;
    tokio::spawn(async move {
        let answer = match super::store_cltab(&h.cfg, &text, Some(rev)).await {
            Ok(new) => {
                let mut runs = h.applied.subscribe();
                let wait = runs.wait_for(|r| *r >= new);
                match tokio::time::timeout(Duration::from_secs(30), wait).await {
                    Ok(Ok(_)) => Reply::Message { text: done(new) },
                    _ => error(
                        ErrorCode::Timeout,
                        format!(
                            "stored as shared cltab revision {new}, but this node does not run it yet (see its log)"
                        ),
                    ),
                }
            }
            Err(ClusterError::Collision { current, .. }) => error(
                ErrorCode::CltabChanged,
                format!(
                    "the shared cltab changed since this node read it (revision {current}, this node runs {rev}); try again"
                ),
            ),
            Err(e) => error(ErrorCode::EtcdUnreachable, e.to_string()),
        };
        let _ = reply.send(answer);
    });
    None
}

/// A node's local cltab: settings only. An entry there is an error: in
/// cluster mode every entry is in the shared cltab, so that one file says
/// what runs where (docs/architecture.md, "Cluster mode").
pub fn load_local(path: &std::path::Path) -> Result<Cltab, crate::cltab::CltabErrors> {
    let local = Cltab::load(path)?;
    if local.entries.is_empty() {
        return Ok(local);
    }
    Err(crate::cltab::CltabErrors {
        errors: local
            .entries
            .iter()
            .map(|e| crate::cltab::CltabError {
                file: path.to_path_buf(),
                line: e.line,
                kind: crate::cltab::ErrorKind::LocalEntry(e.tag.clone()),
            })
            .collect(),
    })
}

/// Until the daemon closes.
async fn closed(rx: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|c| *c).await.map(|_| ());
}

/// The agent task: runs until the daemon closes.
pub(crate) async fn run(handle: Arc<ClusterHandle>, shared: Arc<Shared>) {
    let mut closing = shared.closing.subscribe();
    let mut delay = Duration::from_millis(500);
    let mut said: Option<String> = None;
    loop {
        // The session sees the daemon close itself, and revokes the lease
        // before it returns (so the others see the node gone at once).
        let outcome = session(&handle, &shared).await;
        if *closing.borrow() {
            return;
        }
        let why = match outcome {
            Ok(()) => return,
            Err(e) => e.to_string(),
        };
        let was = handle.view().connected;
        handle.set(|v| {
            if v.connected || v.since == 0 {
                v.since = now_unix();
            }
            v.connected = false;
            v.error = Some(why.clone());
        });
        if was || said.as_deref() != Some(why.as_str()) {
            tracing::warn!(
                "{why}; supervising shared cltab revision {} as last known, retrying",
                handle.view().cltab_rev
            );
            said = Some(why);
            delay = Duration::from_millis(500);
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = closed(&mut closing) => return,
        }
        delay = (delay * 2).min(Duration::from_secs(4));
    }
}

fn etcd_err(cfg: &ClusterConfig) -> impl Fn(etcd_client::Error) -> ClusterError + '_ {
    move |e| cfg.unreachable(e)
}

/// One connected stretch: until etcd fails (an error) or the daemon
/// closes (`Ok`).
async fn session(h: &ClusterHandle, shared: &Shared) -> Result<(), ClusterError> {
    use etcd_client::{GetOptions, PutOptions, WatchOptions};
    let cfg = &h.cfg;
    let err = etcd_err(cfg);
    let mut c = cfg.connect().await?;
    let ttl = cfg.lease_ttl.as_secs().max(1) as i64;
    let lease = c.lease_grant(ttl, None).await.map_err(&err)?.id();
    let (mut keeper, mut alive) = c.lease_keep_alive(lease).await.map_err(&err)?;
    let info = NodeInfo {
        node: cfg.node.clone(),
        socket: h.socket.display().to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        pid: std::process::id(),
        started: h.started,
    };
    c.put(
        cfg.node_key(&cfg.node),
        serde_json::to_vec(&info).unwrap_or_default(),
        Some(PutOptions::new().with_lease(lease)),
    )
    .await
    .map_err(&err)?;

    // Where etcd stands now: the watches start right after it.
    let tab = c.get(cfg.cltab_key(), None).await.map_err(&err)?;
    let rev = tab.header().map_or(0, |x| x.revision());
    let goals = c
        .get(
            cfg.goals_prefix(&cfg.node),
            Some(GetOptions::new().with_prefix()),
        )
        .await
        .map_err(&err)?;
    let mut cltab_watch = c
        .watch(
            cfg.cltab_key(),
            Some(WatchOptions::new().with_start_revision(rev + 1)),
        )
        .await
        .map_err(&err)?;
    let mut goal_watch = c
        .watch(
            cfg.goals_prefix(&cfg.node),
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(rev + 1),
            ),
        )
        .await
        .map_err(&err)?;
    let was_down = !h.view().connected;
    h.set(|v| {
        v.connected = true;
        v.since = now_unix();
        v.error = None;
    });
    if was_down {
        tracing::info!(
            "connected to etcd at {} as node {} of cluster {}",
            cfg.endpoints_text(),
            cfg.node,
            cfg.cluster
        );
    }
    if let Some(kv) = tab.kvs().first() {
        apply_cltab(h, shared, kv.mod_revision(), kv.value()).await;
    }
    for kv in goals.kvs() {
        apply_goal(h, shared, &mut c, kv).await?;
    }
    // Subscribed before the first publication, so no change falls between.
    let mut events = shared.events.subscribe();
    let mut seen = *events.borrow_and_update();
    let mut published: Option<NodeState> = None;
    publish(h, shared, &mut c, &mut published).await?;

    let mut closing = shared.closing.subscribe();
    let mut tick = tokio::time::interval(Duration::from_millis((ttl as u64 * 1000 / 3).max(200)));
    // A connection that stalls without failing (no answer, no error) ends
    // the session too: the registration would lapse unnoticed.
    let mut renewed = tokio::time::Instant::now();
    let lapse = Duration::from_secs(ttl as u64);
    loop {
        tokio::select! {
            _ = tick.tick() => tokio::time::timeout(lapse, keeper.keep_alive())
                .await
                .map_err(|_| cfg.unreachable("a keep-alive of the node's lease could not be sent"))?
                .map_err(&err)?,
            _ = tokio::time::sleep_until(renewed + lapse) => {
                return Err(cfg.unreachable(format!(
                    "the node's lease was not renewed within {ttl} s"
                )));
            }
            m = alive.message() => match m.map_err(&err)? {
                Some(r) if r.ttl() > 0 => renewed = tokio::time::Instant::now(),
                _ => return Err(cfg.unreachable("the node's lease expired")),
            },
            m = cltab_watch.message() => {
                let resp = watched(cfg, m, "the shared cltab")?;
                for ev in resp.events() {
                    match (ev.event_type(), ev.kv()) {
                        (etcd_client::EventType::Put, Some(kv)) => {
                            apply_cltab(h, shared, kv.mod_revision(), kv.value()).await
                        }
                        _ => tracing::warn!(
                            "the shared cltab was deleted from etcd; keeping revision {}",
                            h.view().cltab_rev
                        ),
                    }
                }
            }
            _ = h.refetch.notified() => {
                let tab = c.get(cfg.cltab_key(), None).await.map_err(&err)?;
                if let Some(kv) = tab.kvs().first() {
                    let refused = h.view().rejected.is_some_and(|(r, _)| r == kv.mod_revision());
                    if refused {
                        // Force it: the node runs an older one.
                        h.set(|v| v.rejected = None);
                    }
                    apply_cltab(h, shared, kv.mod_revision(), kv.value()).await;
                }
            }
            m = goal_watch.message() => {
                let resp = watched(cfg, m, "this node's goals")?;
                for ev in resp.events() {
                    if let (etcd_client::EventType::Put, Some(kv)) = (ev.event_type(), ev.kv()) {
                        apply_goal(h, shared, &mut c, kv).await?;
                    }
                }
            }
            r = events.changed() => {
                if r.is_err() {
                    return Ok(());
                }
                // Only what can change a group's level or state (a group's
                // events, a reread) is worth a look; lock and record
                // traffic is not.
                let upto = *events.borrow_and_update();
                let mut relevant = false;
                let scanned = shared.events.lock().scan(seen, usize::MAX, |e| {
                    e.kind.group().is_some() || matches!(e.kind, crate::events::EventKind::Reread { .. })
                }, |_| relevant = true);
                seen = scanned.unwrap_or(upto);
                if relevant || scanned.is_err() {
                    publish(h, shared, &mut c, &mut published).await?;
                }
            }
            _ = closed(&mut closing) => {
                // Gone at once for the others, not after the TTL.
                let _ = c.lease_revoke(lease).await;
                return Ok(());
            }
        }
    }
}

/// A watch's next response; an error ends the session when the watch
/// failed, ended or was cancelled (compacted past it: a new session reads
/// everything again).
pub(super) fn watched(
    cfg: &ClusterConfig,
    m: Result<Option<etcd_client::WatchResponse>, etcd_client::Error>,
    what: &str,
) -> Result<etcd_client::WatchResponse, ClusterError> {
    match m.map_err(|e| cfg.unreachable(e))? {
        None => Err(cfg.unreachable(format!("the watch of {what} ended"))),
        Some(r) if r.canceled() => Err(cfg.unreachable(format!(
            "etcd cancelled the watch of {what} ({})",
            r.cancel_reason()
        ))),
        Some(r) => Ok(r),
    }
}

/// Run `req` on the event loop as the daemon itself; its reply.
async fn on_loop(shared: &Shared, req: Request, describe: Option<String>, who: &str) -> Reply {
    let route = crate::daemon::route::route(req);
    let crate::daemon::route::Target::Loop { job, .. } = route.target else {
        return crate::daemon::conn::error(
            crate::proto::ErrorCode::Internal,
            "not a request for the event loop".into(),
        );
    };
    job_on_loop(shared, job, route.right, describe, who).await
}

pub(super) async fn job_on_loop(
    shared: &Shared,
    job: LoopJob,
    right: Right,
    describe: Option<String>,
    who: &str,
) -> Reply {
    let (tx, rx) = oneshot::channel();
    let msg = Msg::Job {
        job,
        right,
        describe,
        peer: Peer::Local(LocalUser {
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
            pid: None,
        }),
        who: who.to_string(),
        handler: "cluster::agent",
        tag: format!("cluster {who}"),
        reply: tx,
    };
    if shared.tx.send(msg).await.is_err() {
        return crate::daemon::conn::error(
            crate::proto::ErrorCode::ShuttingDown,
            "the daemon is exiting".into(),
        );
    }
    rx.await.unwrap_or_else(|_| {
        crate::daemon::conn::error(
            crate::proto::ErrorCode::ShuttingDown,
            "the daemon is exiting".into(),
        )
    })
}

/// Wait (up to 10 s) until this node runs the shared cltab revision
/// stored in etcd now, if etcd answers.
pub(crate) async fn catch_up(h: &ClusterHandle) {
    let wait = async {
        let mut c = h.cfg.connect().await.ok()?;
        let got = tokio::time::timeout(super::REQUEST_TIMEOUT, c.get(h.cfg.cltab_key(), None))
            .await
            .ok()?
            .ok()?;
        let rev = got.kvs().first()?.mod_revision();
        let mut runs = h.applied.subscribe();
        runs.wait_for(|r| *r >= rev).await.ok().map(|_| ())
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), wait).await;
}

/// Run a changing job on the event loop for a client `who`; its reply.
pub(crate) async fn run_job(shared: &Shared, job: LoopJob, who: &str) -> Reply {
    job_on_loop(shared, job, Right::Change, None, who).await
}

/// Apply shared cltab revision `rev` with the reread rules, unless the
/// node runs it already; a revision that does not parse is refused and
/// the node keeps the one it runs.
async fn apply_cltab(h: &ClusterHandle, shared: &Shared, rev: i64, value: &[u8]) {
    let text = String::from_utf8_lossy(value).into_owned();
    let base = shared
        .cltab
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let cur = h.view().cltab_rev;
    if rev <= cur {
        if rev == cur {
            return;
        }
        if text == h.running().1 {
            // An etcd restored or made anew holds the same text at a lower
            // revision: run it under that revision, or every compare
            // against it (create, delete) would fail.
            h.running.lock().unwrap_or_else(PoisonError::into_inner).0 = rev;
            h.set(|v| v.cltab_rev = rev);
            h.applied.send_replace(rev);
            let _ = (CachedCltab { rev, text }).save(&h.state_dir);
            return;
        }
        // Revisions only grow in one etcd: an older one with other text
        // comes from an etcd restored from a backup or made anew.
        tracing::warn!(
            "etcd's shared cltab is at revision {rev}, below the {cur} this node runs, with other text: etcd was restored or replaced; applying its cltab"
        );
    }
    let composed = {
        let text = text.clone();
        let h_local = h.local_cltab.clone();
        let name = h.cfg.cltab_name(rev);
        let over = h
            .params
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .overrides();
        tokio::task::spawn_blocking(move || {
            let local = load_local(&h_local)?;
            crate::cltab::parse_shared(&name, &text, &local.settings.overridden_by(&over))
                .map(|tab| crate::supervisor::Reread::plan(tab, base))
        })
        .await
    };
    let plan = match composed {
        Ok(Ok(plan)) => plan,
        Ok(Err(errors)) => {
            let cur = h.view().cltab_rev;
            tracing::error!(
                "cannot apply shared cltab revision {rev} (written by a newer clinit?); keeping revision {cur}:\n{errors}"
            );
            h.set(|v| v.rejected = Some((rev, errors.to_string())));
            return;
        }
        Err(e) => {
            tracing::error!("reading shared cltab revision {rev} failed: {e}");
            return;
        }
    };
    let hold = h.running_handle();
    let applied_text = text.clone();
    let job: LoopJob = Box::new(move |d, c| {
        let reply = crate::daemon::handlers::control::reread(d, c, Ok(plan));
        if matches!(reply, Reply::Message { .. }) {
            *hold.lock().unwrap_or_else(PoisonError::into_inner) = (rev, applied_text);
        }
        Some(reply)
    });
    let reply = job_on_loop(
        shared,
        job,
        Right::Change,
        Some(format!("apply shared cltab revision {rev}")),
        "etcd",
    )
    .await;
    match reply {
        Reply::Message { .. } => {
            h.set(|v| {
                v.cltab_rev = rev;
                v.rejected = None;
            });
            h.applied.send_replace(rev);
            if let Err(e) = (CachedCltab { rev, text }).save(&h.state_dir) {
                tracing::warn!(
                    "cannot cache shared cltab revision {rev} in {}: {e}",
                    h.state_dir.display()
                );
            }
        }
        other => tracing::error!("shared cltab revision {rev} not applied: {other:?}"),
    }
}

/// Apply a goal told to this node through etcd, unless it was answered
/// already; write the answer.
async fn apply_goal(
    h: &ClusterHandle,
    shared: &Shared,
    c: &mut etcd_client::Client,
    kv: &etcd_client::KeyValue,
) -> Result<(), ClusterError> {
    let cfg = &h.cfg;
    let prefix = cfg.goals_prefix(&cfg.node);
    let Some(group) = std::str::from_utf8(kv.key())
        .ok()
        .and_then(|k| k.strip_prefix(&prefix))
        .map(str::to_string)
    else {
        return Ok(());
    };
    let applied_key = cfg.applied_key(&cfg.node, &group);
    let done = c
        .get(applied_key.clone(), None)
        .await
        .map_err(etcd_err(cfg))?;
    let answered = done
        .kvs()
        .first()
        .and_then(|a| serde_json::from_slice::<Applied>(a.value()).ok())
        .is_some_and(|a| a.goal_rev >= kv.mod_revision());
    if answered {
        return Ok(());
    }
    let answer = match serde_json::from_slice::<Goal>(kv.value()) {
        Err(e) => Applied {
            goal_rev: kv.mod_revision(),
            code: Some("BAD_REQUEST".into()),
            message: format!("the goal is not JSON of a level: {e}"),
        },
        Ok(goal) => {
            // A goal told right after a push that made its group: run that
            // revision first (the two watches are apart, in no order).
            if kv.mod_revision() > h.view().cltab_rev {
                let tab = c.get(cfg.cltab_key(), None).await.map_err(etcd_err(cfg))?;
                if let Some(t) = tab.kvs().first()
                    && t.mod_revision() > h.view().cltab_rev
                {
                    apply_cltab(h, shared, t.mod_revision(), t.value()).await;
                }
            }
            let reply = on_loop(
                shared,
                Request::Tell {
                    group: group.clone(),
                    level: goal.level.clone(),
                },
                Some(format!("tell {group} {} (through etcd)", goal.level)),
                &goal.by,
            )
            .await;
            match reply {
                Reply::Message { text } => Applied {
                    goal_rev: kv.mod_revision(),
                    code: None,
                    message: text,
                },
                Reply::Error(e) => Applied {
                    goal_rev: kv.mod_revision(),
                    code: Some(
                        serde_json::to_value(e.code)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_string))
                            .unwrap_or_default(),
                    ),
                    message: e.message,
                },
                other => Applied {
                    goal_rev: kv.mod_revision(),
                    code: Some("INTERNAL".into()),
                    message: format!("unexpected reply {other:?}"),
                },
            }
        }
    };
    c.put(
        applied_key,
        serde_json::to_vec(&answer).unwrap_or_default(),
        None,
    )
    .await
    .map_err(etcd_err(cfg))?;
    Ok(())
}

/// Publish the node's groups if they changed since the last publication.
async fn publish(
    h: &ClusterHandle,
    shared: &Shared,
    c: &mut etcd_client::Client,
    last: &mut Option<NodeState>,
) -> Result<(), ClusterError> {
    let reply = on_loop(
        shared,
        Request::Status {
            group: None,
            brief: true,
            from: None,
            usage: false,
        },
        None,
        "",
    )
    .await;
    let Reply::Status { groups, .. } = reply else {
        return Ok(());
    };
    let groups: Vec<GroupSummary> = groups
        .into_iter()
        .map(|g| GroupSummary {
            group: g.group,
            level: g.level,
            state: g.state.as_str().to_string(),
        })
        .collect();
    let cltab_rev = h.view().cltab_rev;
    if last
        .as_ref()
        .is_some_and(|l| l.groups == groups && l.cltab_rev == cltab_rev)
    {
        return Ok(());
    }
    let state = NodeState {
        node: h.cfg.node.clone(),
        cltab_rev,
        updated: now_unix(),
        groups,
    };
    c.put(
        h.cfg.state_key(&h.cfg.node),
        serde_json::to_vec(&state).unwrap_or_default(),
        None,
    )
    .await
    .map_err(etcd_err(&h.cfg))?;
    *last = Some(state);
    Ok(())
}
