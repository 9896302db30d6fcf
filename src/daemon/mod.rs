//! The daemon: start-up, then one event loop.
//!
//! A request's path: a [`listen::Listener`] accepts a connection; its task
//! (`conn`) reads frames, exchanges hellos, and for each request asks the
//! router (`route`) which handler serves it and which right it needs,
//! checks the right against the [`policy::Policy`], and has the handler
//! serve it — in the connection task (locks, records, events) or in the
//! `event_loop` (everything that needs the supervisor). Handlers live in
//! `handlers`, one file per family; the backends they call sit behind the
//! traits of [`crate::store`].

pub(crate) mod conn;
pub(crate) mod event_loop;
pub(crate) mod handlers;
pub(crate) mod http;
pub mod listen;
pub(crate) mod metrics;
pub mod notify;
pub mod policy;
pub(crate) mod route;
pub(crate) mod view;

use crate::cltab::Cltab;
use crate::config::{CliPaths, Paths, Timing};
use crate::events::Events;
use crate::lock::service::LocalLocks;
use crate::records::LocalRecords;
use crate::store::sqlite::StateDb;
use crate::store::worker::StoreWorker;
use crate::store::{StateStore, StoreOp, write_atomic};
use crate::supervisor::executor::Executor;
use crate::supervisor::leftovers::{Leftover, stop_leftovers};
use crate::supervisor::{OperatorNote, Supervisor};
use conn::Shared;
use listen::unix::UnixTransport;
use policy::Policy;
use std::fs::File;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, mpsc, watch};

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
    /// `--etcd`, `--node`, `--cluster` (cluster mode).
    pub cluster: crate::cluster::ClusterFlags,
    /// `--listen`, `--tls-*`, `--insecure-loopback` (remote administration).
    pub remote: RemoteFlags,
    /// `--set NAME=VALUE`: parameters given on the command line (checked).
    pub set: Vec<(String, String)>,
}

/// The command-line flags of remote administration; a cltab setting of
/// the same name wins, as for every setting.
#[derive(Clone, Debug, Default)]
pub struct RemoteFlags {
    /// `--listen ADDR,...`.
    pub listen: Option<Vec<String>>,
    pub tls_ca: Option<std::path::PathBuf>,
    pub tls_cert: Option<std::path::PathBuf>,
    pub tls_key: Option<std::path::PathBuf>,
    /// Serve plain TCP (loopback only) instead of TLS.
    pub insecure_loopback: bool,
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
    #[error("setting cgroup: {0}")]
    Cgroup(#[from] crate::supervisor::cgroup::CgroupError),
    #[error("{0}")]
    Cluster(#[from] crate::cluster::ClusterError),
    #[error("remote administration: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("{0}")]
    Params(#[from] crate::params::ParamError),
}

impl StartError {
    pub fn exit_code(&self) -> i32 {
        match self {
            StartError::Cltab(_) => 4,
            StartError::AlreadyRunning(_) => 8,
            StartError::State(crate::store::StoreError::Busy { .. }) => 8,
            StartError::Io { .. } | StartError::State(_) | StartError::Cgroup(_) => 10,
            StartError::Cluster(e) => e.exit_code(),
            StartError::Tls(e) => e.exit_code(),
            StartError::Params(_) => 10,
        }
    }
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StartError {
    let path = path.display().to_string();
    move |err| StartError::Io { what, path, err }
}

fn ensure_parent(path: &Path) -> Result<(), StartError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::config::files::dirs(dir).map_err(io_err("cannot create directory for", path))?;
    }
    Ok(())
}

/// The TCP listeners of remote administration (`listen`), bound, or none.
/// TLS unless `--insecure-loopback`, which is refused for any address
/// that is not loopback. Call within the runtime.
fn bind_remote(
    flags: &RemoteFlags,
    settings: &crate::cltab::Settings,
) -> Result<Vec<listen::tcp::TcpTransport>, StartError> {
    use crate::tls::TlsError;
    use std::net::ToSocketAddrs;
    let Some(addrs) = settings.listen.as_ref().or(flags.listen.as_ref()) else {
        if flags.insecure_loopback {
            return Err(TlsError::Usage("--insecure-loopback needs --listen".into()).into());
        }
        return Ok(Vec::new());
    };
    let files = tls_files(flags, settings);
    let tls = if flags.insecure_loopback {
        None
    } else {
        Some(crate::tls::server_config(&files)?)
    };
    let tcp = listen::tcp::TcpSettings {
        tls,
        handshake_timeout: settings
            .tls_handshake_timeout
            .unwrap_or(Duration::from_secs(5)),
        max_connections: settings.listen_connections_max.unwrap_or(256),
        open: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
    };
    let mut out = Vec::new();
    for a in addrs {
        let (host, port) = crate::tls::parse_listen(a).map_err(TlsError::Usage)?;
        let resolved: Vec<std::net::SocketAddr> = (host.as_str(), port)
            .to_socket_addrs()
            .map_err(io_err("cannot resolve listen address", Path::new(a)))?
            .collect();
        for sa in resolved {
            if flags.insecure_loopback && !sa.ip().is_loopback() {
                return Err(TlsError::Usage(format!(
                    "--insecure-loopback serves plain TCP on loopback only, and listen {a} is {}",
                    sa.ip()
                ))
                .into());
            }
            let t = listen::tcp::TcpTransport::bind(sa, tcp.clone())
                .map_err(io_err("cannot listen on", Path::new(&sa.to_string())))?;
            if tcp.tls.is_some() {
                tracing::info!(
                    "remote administration on {} (mutual TLS; clients' certificates chain to {})",
                    t.local_addr(),
                    files.ca.display()
                );
            } else {
                tracing::warn!(
                    "WARNING: remote administration on {} WITHOUT TLS (--insecure-loopback): every local process that connects is {}",
                    t.local_addr(),
                    listen::tcp::INSECURE_IDENTITY
                );
            }
            out.push(t);
        }
    }
    Ok(out)
}

/// The daemon's TLS files: settings, else flags, else the defaults.
fn tls_files(flags: &RemoteFlags, settings: &crate::cltab::Settings) -> crate::tls::Files {
    let d = crate::tls::Files::system();
    let pick = |set: &Option<std::path::PathBuf>, flag: &Option<std::path::PathBuf>, def| {
        set.clone().or_else(|| flag.clone()).unwrap_or(def)
    };
    crate::tls::Files {
        ca: pick(&settings.tls_ca, &flags.tls_ca, d.ca),
        cert: pick(&settings.tls_cert, &flags.tls_cert, d.cert),
        key: pick(&settings.tls_key, &flags.tls_key, d.key),
    }
}

/// The HTTP listener of `/metrics` and the status page (`http_listen`),
/// bound, or none. Call within the runtime.
fn bind_http(
    flags: &RemoteFlags,
    settings: &crate::cltab::Settings,
) -> Result<Option<http::HttpListener>, StartError> {
    use std::net::ToSocketAddrs;
    let Some(a) = &settings.http_listen else {
        return Ok(None);
    };
    let (host, port) = crate::tls::parse_http_listen(a).map_err(crate::tls::TlsError::Usage)?;
    let sa = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(io_err("cannot resolve http_listen address", Path::new(a)))?
        .next()
        .ok_or_else(|| {
            io_err("cannot resolve http_listen address", Path::new(a))(std::io::Error::other(
                "no address",
            ))
        })?;
    let files = tls_files(flags, settings);
    if !sa.ip().is_loopback() {
        // The files are checked here, where a mistake is a clear start-up
        // error naming the file.
        crate::tls::server_config(&files)?;
    }
    let l = http::HttpListener::bind(sa, &files)
        .map_err(|e| io_err("cannot listen on", Path::new(a))(std::io::Error::other(e)))?;
    tracing::info!(
        "HTTP listener on {}://{} (/metrics, the status page at /)",
        if l.is_tls() { "https" } else { "http" },
        l.local_addr().map_or_else(|| a.clone(), |x| x.to_string())
    );
    Ok(Some(l))
}

/// The daemon's cgroup directory as the setting `cgroup` asks: none for
/// `off` and for the lock daemon (it runs no entries); for `auto`, none
/// (said in the log) when no cgroup v2 directory can be made; for a path,
/// an error if none can be made there.
fn open_cgroups(
    opts: &Options,
    settings: &crate::cltab::Settings,
    socket: &Path,
) -> Result<Option<crate::supervisor::cgroup::Cgroups>, StartError> {
    use crate::supervisor::cgroup::{CgroupMode, Cgroups};
    if opts.lockd_idle.is_some() {
        return Ok(None);
    }
    let mode = settings.cgroup.clone().unwrap_or_default();
    match Cgroups::open(&mode, socket) {
        Ok(Some(c)) => {
            tracing::info!(
                "each entry's processes are kept in a cgroup under {}",
                c.root().display()
            );
            Ok(Some(c))
        }
        Ok(None) => {
            tracing::info!("cgroup off: leftover processes are found by scanning /proc");
            Ok(None)
        }
        Err(e) if mode == CgroupMode::Auto => {
            tracing::info!(
                "no cgroup for entries ({e}): leftover processes are found by scanning /proc"
            );
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// The lock daemon keeps its state, log and status file next to its
/// socket unless told otherwise (`--state-dir`, the cltab's `state`, `log`,
/// `clstat`): a lockd started on demand by `clinit lock -s /tmp/x/l.s`
/// writes nothing under /var.
fn lockd_paths(paths: &mut Paths, cli: &crate::config::CliPaths, s: &crate::cltab::Settings) {
    let Some(dir) = paths
        .socket
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .map(Path::to_path_buf)
    else {
        return;
    };
    if cli.state.is_none() && s.state.is_none() {
        paths.state = dir.clone();
    }
    if s.log.is_none() {
        paths.log = dir.join("lockd.log");
    }
    if s.clstat.is_none() {
        paths.clstat = dir.join("lockd.clstat");
    }
}

/// Each running entry holds one descriptor of the daemon's (the pipe its
/// output comes through, `log_prefix`): raise the soft limit of open files
/// towards the hard one, to 65,536 at most (children inherit it; a larger
/// one slows programs that close every descriptor up to it).
fn raise_open_files() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let want = hard.min(65_536).max(soft);
        if want > soft {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, want, hard);
        }
    }
}

/// Run the daemon in the foreground until it is shut down.
///
/// Start-up order: cltab, log, the socket lock, the state store; then
/// leftover children of a previous run that was killed are stopped; the
/// socket is bound; goals are restored; only then are requests handled.
pub fn run(opts: &Options) -> Result<(), StartError> {
    let r = run_daemon(opts);
    if let Err(e) = &r
        && crate::logging::path().is_some()
    {
        tracing::error!("{e}");
        crate::logging::dump_last_words(&format!("fatal: {e}"));
    }
    r
}

fn run_daemon(opts: &Options) -> Result<(), StartError> {
    let started = Instant::now();
    // systemd: its notification socket and a socket it may have passed
    // (read, and taken out of the environment, before any thread starts).
    let sd_notify = notify::Notify::from_env();
    let activated = notify::activated_socket();
    one_malloc_arena();
    raise_open_files();
    // Read the spin budget now (the docs say the daemon reads
    // CLINIT_SPIN_US when it starts), so that a bad value is reported at
    // start-up and not at the first connection.
    let _ = crate::spin::budget();
    let cli = &opts.paths;
    let mut params = crate::params::Params::with_cli(opts.set.iter().cloned());
    let load = |over: &crate::cltab::Settings| -> Result<Cltab, StartError> {
        Ok(match opts.lockd_idle {
            // The lock daemon runs no entries; it reads only the settings
            // that place its socket, state and log.
            Some(_) => {
                let text = std::fs::read_to_string(cli.cltab()).unwrap_or_default();
                Cltab::empty(
                    &cli.cltab(),
                    crate::cltab::scan_settings(&text).overridden_by(over),
                )
            }
            None => Cltab::load_over(&cli.cltab(), over)?,
        })
    };
    let mut cltab = load(&params.overrides())?;
    // Cluster mode: the local cltab holds this node's settings only.
    let cluster = match opts.lockd_idle {
        Some(_) => None,
        None => crate::cluster::ClusterConfig::resolve(&cltab.settings, &opts.cluster)?,
    };
    if cluster.is_some() {
        crate::cluster::agent::load_local(&cli.cltab())?;
    }
    let mut paths = Paths::resolve(cli, &cltab.settings);
    if opts.lockd_idle.is_some() {
        lockd_paths(&mut paths, cli, &cltab.settings);
    }
    // Values kept with `clinit setpar --persist` are live values again.
    let skipped = params.load_persisted(&paths.state)?;
    if params != crate::params::Params::with_cli(opts.set.iter().cloned()) {
        cltab = load(&params.overrides())?;
    }
    // The named flags in effect are command-line values for `clinit params`.
    for (name, flag, used) in [
        ("state", &cli.state, &paths.state),
        ("socket", &cli.socket, &paths.socket),
    ] {
        if let Some(v) = flag
            && v == used
        {
            params.note_flag(name, v.display().to_string());
        }
    }
    for p in [&paths.socket, &paths.clstat, &paths.log] {
        ensure_parent(p)?;
    }
    if let Some(dir) = &paths.logdir {
        crate::config::files::dirs(dir).map_err(io_err("cannot create log directory", dir))?;
    }
    let log =
        crate::config::files::append(&paths.log).map_err(io_err("cannot open log", &paths.log))?;
    init_logging(&log, &paths.log, &cltab.settings);
    if std::env::var_os("CLINIT_TEST_PANIC").is_some() {
        // The tests' way to see a panic's report (its place and the last
        // words) in the log.
        tracing::debug!("CLINIT_TEST_PANIC is set: panicking on purpose");
        panic!("CLINIT_TEST_PANIC is set: a panic on purpose");
    }
    for s in skipped {
        tracing::warn!("a persisted parameter is not used: {s}");
    }
    let params = Arc::new(Mutex::new(params));

    // One daemon per socket: hold an exclusive lock on <socket>.lock for life.
    let lock_path = paths.socket_lock();
    let lock_file =
        crate::config::files::lock(&lock_path).map_err(io_err("cannot create", &lock_path))?;
    let lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|_| StartError::AlreadyRunning(paths.socket.display().to_string()))?;
    // We hold the lock, so a socket file left behind is stale; anything
    // else at that path is not ours to remove. (A socket passed by the
    // service manager is at that path, and is not stale.)
    if activated.is_none()
        && let Ok(meta) = std::fs::symlink_metadata(&paths.socket)
    {
        use std::os::unix::fs::FileTypeExt;
        if !meta.file_type().is_socket() {
            return Err(io_err("cannot listen on", &paths.socket)(
                std::io::Error::other(
                    "a file that is not a socket is there; clinit removes only a socket it left",
                ),
            ));
        }
        let _ = std::fs::remove_file(&paths.socket);
    }

    if opts.noauth {
        let msg = "WARNING: started with --noauth: EVERY user who can open the socket may change groups, entries and the cltab";
        // Not eprintln!: it panics when standard error fails.
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            format!("clinit: {msg}\n").as_bytes(),
        );
        tracing::warn!("{msg}");
    }
    // The one place that picks the state backend.
    let mut db = StateDb::open(&paths.state)?;
    let persisted = StateStore::load(&mut db)?;
    let notes = StateStore::disabled_notes(&mut db)?;
    let timing = Timing::resolve(&cltab.settings);
    if !persisted.children.is_empty() {
        tracing::warn!(
            "{} children of a previous run are recorded in {}: stopping those still alive before anything starts",
            persisted.children.len(),
            db.location()
        );
    }
    let cgroups = open_cgroups(opts, &cltab.settings, &paths.socket)?;
    // What no record names: descendants of a killed previous run that left
    // their entry's process group. With cgroups, everything in the
    // previous run's directories; without, what carries CLINIT_SOCKET.
    let recorded: Vec<i32> = persisted.children.iter().map(|c| c.pid).collect();
    let previous = cgroups.as_ref().map(|c| c.previous()).unwrap_or_default();
    let marked = match &cgroups {
        Some(_) => crate::supervisor::leftovers::records_of(
            previous.iter().flat_map(|p| p.pids.iter().copied()),
            &recorded,
        ),
        None => crate::supervisor::leftovers::marked(&paths.socket, &recorded),
    };
    for m in &marked {
        tracing::warn!(
            "process {} ({}:{}) was started by a previous run and has no record; stopping it",
            m.pid,
            crate::logsafe::Safe(&m.group),
            crate::logsafe::Safe(&m.tag)
        );
    }
    if !persisted.children.is_empty() || !marked.is_empty() {
        let all: Vec<_> = persisted.children.iter().cloned().chain(marked).collect();
        let outcomes = stop_leftovers(&all, timing.term_after, timing.kill_after);
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
        if !ops.is_empty() {
            db.apply(&ops)?;
        }
    }
    for p in &previous {
        if !crate::supervisor::cgroup::Cgroups::clear_previous(p) {
            tracing::warn!(
                "cannot remove {} (a previous run's cgroup, still populated); left for the next start",
                p.dir.display()
            );
        }
    }
    let token_floor = StateStore::token_floor(&mut db)?;
    let db = Arc::new(Mutex::new(db));
    // Writes go through the store worker (group commit, off the runtime's
    // thread); without a thread for it, the database answers in place.
    let quota = crate::records::Quota::from_settings(&cltab.settings);
    let worker = match StoreWorker::spawn(db.clone(), LocalRecords::with_quota(db.clone(), quota)) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!("cannot start the state store's thread: {e}; writing in place");
            None
        }
    };
    let state: Arc<Mutex<dyn StateStore>> = match &worker {
        Some(w) => Arc::new(Mutex::new(w.clone())),
        None => db.clone(),
    };

    // The blocking pool (cltab reads and parses, sweeps, DNS) is small and
    // its threads never expire: each thread costs address space (a stack
    // and, at first use, a malloc arena of 64 MiB reserved), and tokio
    // panics when it must start a thread, has none left and the system
    // refuses one (a fork bomb among the entries) — with one thread always
    // there it queues the work instead. The first is started now, where a
    // failure is a start-up error.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(BLOCKING_THREADS)
        .thread_keep_alive(Duration::from_secs(u64::from(u32::MAX)))
        .build()
        .map_err(io_err("cannot start runtime for", &paths.socket))?;
    rt.block_on(rt.spawn_blocking(|| ())).map_err(|e| {
        io_err("cannot start a thread for", &paths.socket)(std::io::Error::other(e))
    })?;
    let socket_activated = activated.is_some();
    let listener = {
        let _g = rt.enter();
        match activated {
            Some(l) => {
                tracing::info!(
                    "socket-activated: serving the socket the service manager passed (fd 3) as {}",
                    paths.socket.display()
                );
                UnixTransport::adopt(l, &paths.socket)
                    .map_err(|e| ("cannot use the passed socket", e))
            }
            None => UnixTransport::bind(
                &paths.socket,
                paths.socket_mode,
                paths.socket_group.as_deref(),
            ),
        }
    }
    .map_err(|(what, e)| io_err(what, &paths.socket)(e))?;
    let remote = {
        let _g = rt.enter();
        bind_remote(&opts.remote, &cltab.settings)?
    };
    let http_listener = {
        let _g = rt.enter();
        bind_http(&opts.remote, &cltab.settings)?
    };

    // A starter (`clinit lock` starting `clinit lockd`) waits on this pipe.
    if let Ok(v) = std::env::var("CLINIT_READY_FD") {
        match v.parse::<i32>().ok().filter(|fd| *fd > 2 && is_fifo(*fd)) {
            Some(fd) => {
                // SAFETY: the starter passed this descriptor, a pipe (checked
                // above, so not one the daemon opened), for us to own.
                let f = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
                let _ = std::io::Write::write_all(&mut &f, b"ready\n");
                drop(f);
            }
            None => {
                tracing::warn!("CLINIT_READY_FD={v:?} is not the descriptor of a pipe; ignored")
            }
        }
        // SAFETY: single-threaded here; nothing else reads the environment.
        unsafe { std::env::remove_var("CLINIT_READY_FD") };
    }

    #[cfg(target_os = "linux")]
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        tracing::warn!("cannot become child subreaper: {e}");
    }

    // Exclusive groups (cluster mode): the owner agent's permits and the
    // fencing watchdog, which the executor consults and tells.
    let exclusive = Arc::new(crate::cluster::owners::Exclusive::new(
        crate::cluster::watchdog::Feeder::new(
            cltab.settings.hw_watchdog.clone(),
            log.try_clone().ok(),
        ),
    ));
    let mut executor = Executor::with_cgroups(log, paths.logdir.clone(), &paths.socket, cgroups);
    executor.set_log_prefix(cltab.settings.log_prefix.unwrap_or(true));
    if cluster.is_some() {
        executor.set_exclusive(exclusive.clone());
    }
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
    // Cluster mode: the shared cltab as last cached, under the local
    // settings; the agent brings it up to date once etcd answers.
    let (cltab, cluster) = match cluster {
        None => (cltab, None),
        Some(cfg) => {
            let handle = Arc::new(crate::cluster::agent::ClusterHandle {
                view: Mutex::new(crate::cluster::agent::ClusterView {
                    cluster: cfg.cluster.clone(),
                    node: cfg.node.clone(),
                    endpoints: cfg.endpoints_text(),
                    ..Default::default()
                }),
                cfg,
                local_cltab: cli.cltab(),
                state_dir: paths.state.clone(),
                socket: paths.socket.clone(),
                started: chrono::Utc::now().timestamp(),
                applied: tokio::sync::watch::Sender::new(0),
                running: Default::default(),
                refetch: Default::default(),
                exclusive: exclusive.clone(),
                params: params.clone(),
            });
            let cached = crate::cluster::CachedCltab::load(&paths.state);
            let tab = match &cached {
                Some(c) => match handle.compose(c.rev, &c.text) {
                    Ok(tab) => {
                        handle
                            .view
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .cltab_rev = c.rev;
                        handle.applied.send_replace(c.rev);
                        *handle
                            .running
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner) =
                            (c.rev, c.text.clone());
                        tab
                    }
                    Err(e) => {
                        tracing::error!(
                            "the cached shared cltab (revision {}) does not parse; starting without entries until etcd answers:\n{e}",
                            c.rev
                        );
                        Cltab::empty(&handle.cfg.cltab_name(0), cltab.settings.clone())
                    }
                },
                None => Cltab::empty(&handle.cfg.cltab_name(0), cltab.settings.clone()),
            };
            tracing::info!(
                "cluster mode: node {} of cluster {}, etcd at {}; running shared cltab revision {} until etcd answers",
                handle.cfg.node,
                handle.cfg.cluster,
                handle.cfg.endpoints_text(),
                cached.as_ref().map_or(0, |c| c.rev)
            );
            (tab, Some(handle))
        }
    };
    // An exclusive group's goal is the cluster's, applied by its owner
    // only: a saved local goal must not start it before this node owns it.
    let goals: Vec<(String, String)> = match &cluster {
        Some(_) => goals
            .into_iter()
            .filter(|(g, _)| {
                let keep = !cltab.is_exclusive(g);
                if !keep {
                    tracing::info!(
                        "exclusive group {g}: not restoring its local goal; it runs once this node owns it"
                    );
                }
                keep
            })
            .collect(),
        None => goals,
    };
    // A group with a startup level and no stored goal goes to it.
    let mut goals = goals;
    for (g, o) in &cltab.groups {
        if let Some(level) = &o.startup
            && !goals.iter().any(|(h, _)| h == g)
            && !(cluster.is_some() && o.exclusive())
        {
            tracing::info!("group {g} has no stored goal: going to its startup level {level}");
            goals.push((g.clone(), level.clone()));
        }
    }
    let mut sup = Supervisor::new(cltab, disabled);
    sup.restore_notes(notes.into_iter().map(|n| {
        (
            n.tag,
            OperatorNote {
                action: crate::supervisor::machine::Control::Stop { temporary: false },
                by: n.by,
                at: n.at,
            },
        )
    }));
    let settings = &sup.cltab.settings;
    let policy = Policy {
        noauth: opts.noauth,
        daemon_uid: nix::unistd::geteuid().as_raw(),
        userlist: paths.userlist.clone(),
        lock_access: settings.lock_access.unwrap_or_default(),
        record_access: settings.record_access.unwrap_or_default(),
    };
    let events = Events::new(settings.events_keep.unwrap_or(crate::events::DEFAULT_KEEP));
    let deadline_changed = Arc::new(Notify::new());
    let (tx, rx) = mpsc::channel(256);
    let quota = crate::records::Quota::from_settings(settings);
    // The record store: the local state database, or etcd in cluster mode
    // (records shared by every node).
    let records: Arc<Mutex<dyn crate::store::RecordBackend>> = match &cluster {
        Some(h) => Arc::new(Mutex::new(crate::cluster::records::EtcdRecords::new(
            h.cfg.clone(),
            quota.container_records,
        ))),
        None => match &worker {
            Some(w) => Arc::new(Mutex::new(w.clone())),
            None => Arc::new(Mutex::new(LocalRecords::with_quota(db.clone(), quota))),
        },
    };
    // Cluster mode: the lock service asks the lock agent for claims.
    let (locks, lock_agent) = match &cluster {
        Some(h) => {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            let grace_ms = crate::cluster::locks::grace(&h.cfg).as_millis() as u64;
            let l = LocalLocks::clustered(state.clone(), deadline_changed.clone(), tx, grace_ms);
            (l.clone(), Some((h.cfg.clone(), l, rx)))
        }
        None => (
            LocalLocks::shared(token_floor, state.clone(), deadline_changed.clone()),
            None,
        ),
    };
    let shared = Arc::new(Shared {
        tx,
        conns: Default::default(),
        next_conn: 1.into(),
        locks,
        records,
        events,
        policy,
        // In cluster mode a holder's host is its node.
        host: match &cluster {
            Some(h) => h.cfg.node.as_str().into(),
            None => crate::config::hostname().into(),
        },
        restored: watch::Sender::new(false),
        closing: watch::Sender::new(false),
        deadline_changed,
        in_request: Default::default(),
        spinning: Default::default(),
        refusals: Default::default(),
        cltab: Mutex::new(sup.cltab.clone()),
        cluster: cluster.clone(),
        peer_leases: Default::default(),
        peer_connections: Default::default(),
        frame_bytes: Default::default(),
        kicked: Default::default(),
        kick_bell: Default::default(),
        limits: conn::Limits::from_settings(settings),
        params,
        metrics: Default::default(),
    });
    let maintenance = settings.maintenance.unwrap_or(false);
    let mut daemon = event_loop::Daemon::new(
        sup,
        executor,
        state,
        shared.clone(),
        paths.clone(),
        opts.lockd_idle,
    );
    daemon.sd_notify = sd_notify;
    if maintenance {
        daemon.set_maintenance(true, "the maintenance parameter at start-up");
    }
    let result = rt.block_on(async {
        let owners = cluster
            .clone()
            .map(|h| tokio::spawn(crate::cluster::owners::run(h, shared.clone())));
        let agent = cluster.map(|h| tokio::spawn(crate::cluster::agent::run(h, shared.clone())));
        let lock_agent = lock_agent.map(|(cfg, l, rx)| {
            tokio::spawn(crate::cluster::locks::guarded(cfg, l, shared.clone(), rx))
        });
        tokio::spawn(listen::accept_loop(listener, shared.clone()));
        for r in remote {
            tokio::spawn(listen::accept_loop(r, shared.clone()));
        }
        if let Some(h) = http_listener {
            tokio::spawn(http::serve(h, shared.clone()));
        }
        let result = daemon.run(rx, goals, started).await;
        // The agent revokes the node's lease when the daemon closes: give
        // it a moment, so the others see the node gone at once.
        if let Some(agent) = agent {
            shared.closing.send_replace(true);
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
                let _ = agent.await;
                if let Some(l) = lock_agent {
                    let _ = l.await;
                }
                if let Some(o) = owners {
                    let _ = o.await;
                }
            })
            .await;
        }
        result
    });
    if !socket_activated {
        let _ = std::fs::remove_file(&paths.socket);
    }
    let _ = write_atomic(&paths.clstat, b"");
    drop(lock);
    let _ = std::fs::remove_file(&lock_path);
    result
}

/// glibc gives each thread that allocates its own arena (64 MiB of address
/// space reserved each, up to 8 per core), whose freed memory it keeps:
/// rereads of a growing cltab, parsed on the blocking pool's threads, took
/// the daemon to 349 MB of address space and 87 MB RSS in 5,000 rereads
/// (`bench/reread_soak.sh`); with one arena, 59 MB and 44 MB, and faster.
/// The daemon's threads seldom allocate at once, so one arena costs no
/// contention worth having. Set before any thread starts.
fn one_malloc_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt has no preconditions; called before other threads.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Is `fd` an open descriptor of a pipe?
fn is_fifo(fd: i32) -> bool {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat only writes the stat buffer given; an fd that is not
    // open is an error (EBADF), not undefined behaviour.
    let r = unsafe { libc::fstat(fd, st.as_mut_ptr()) };
    // SAFETY: fstat filled the buffer when it returned 0.
    r == 0 && (unsafe { st.assume_init() }.st_mode & libc::S_IFMT) == libc::S_IFIFO
}

/// Threads of the daemon's blocking pool.
const BLOCKING_THREADS: usize = 4;

/// The log at `path` (a second descriptor of `log`), at the level and
/// with the last words the settings say. Without a second descriptor (none
/// left), standard error only, said there: the daemon still starts.
fn init_logging(log: &File, path: &Path, settings: &crate::cltab::Settings) {
    let level = settings.loglevel.unwrap_or_default();
    let keep = settings
        .lwords_keep
        .unwrap_or(crate::logging::DEFAULT_LWORDS);
    match log.try_clone() {
        Ok(file) => crate::logging::init(Some((path, file)), level, keep),
        Err(e) => {
            crate::logging::init(None, level, keep);
            tracing::error!("cannot write the log file ({e}); logging to standard error only");
        }
    }
}
