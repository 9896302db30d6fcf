//! Cluster mode: the shared state of every node in etcd.
//!
//! # Key layout
//!
//! Every key is under `/<cluster>/` (setting `cluster`, default `clinit`),
//! so several clusters can share one etcd:
//!
//! | key | value | written by |
//! | --- | --- | --- |
//! | `cltab` | the shared cltab's text; its mod revision is the *cltab revision* | `clinit cluster push`, `create`, `delete` (compare-and-swap on that revision) |
//! | `nodes/<node>` | [`NodeInfo`] JSON, under the node's lease: present while the node is alive | the node |
//! | `state/<node>` | [`NodeState`] JSON: its groups' levels and states, the cltab revision it runs | the node, on every change |
//! | `goals/<node>/<group>` | [`Goal`] JSON: a level told from anywhere | `clinit --node NODE GROUP LEVEL` |
//! | `applied/<node>/<group>` | [`Applied`] JSON: the goal's revision and the node's reply | the node, once it took the goal |
//!
//! Locks, records and exclusive groups have their own prefixes (`locks/`,
//! `records/` and `fence/`, `groups/`): see [`locks`], [`records`] and
//! [`owners`].

pub mod agent;
pub mod locks;
pub mod owners;
pub mod records;
pub mod watchdog;

use crate::cltab::Settings;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const DEFAULT_CLUSTER: &str = "clinit";
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(10);
/// How long a client command waits for etcd to answer one request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a connection attempt may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long any one client operation may take in all (connection, tries
/// on other members): a command that needs etcd fails within it.
pub const CLIENT_DEADLINE: Duration = Duration::from_secs(10);

/// Which endpoint a connection tries first: the next one each time.
static NEXT_ENDPOINT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Cluster mode's flags (`--etcd`, `--node`, `--cluster`); a setting of the
/// local cltab wins over a flag, as for every other setting.
#[derive(Clone, Debug, Default)]
pub struct ClusterFlags {
    pub etcd: Option<String>,
    pub node: Option<String>,
    pub cluster: Option<String>,
}

/// Everything a node or a client needs to reach the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterConfig {
    pub endpoints: Vec<String>,
    pub node: String,
    pub cluster: String,
    pub lease_ttl: Duration,
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub user: Option<String>,
    pub password_file: Option<PathBuf>,
}

/// Why talking to the cluster failed; [`ClusterError::exit_code`] is the
/// client's exit status.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "not in cluster mode: {} sets no etcd endpoints (:::etcd:URLS) and no --etcd was given",
        .0.display()
    )]
    NotCluster(PathBuf),
    #[error("bad cluster setting: {0}")]
    Setting(String),
    #[error("cannot reach etcd at {endpoints}: {err}")]
    Unreachable { endpoints: String, err: String },
    #[error("{0}")]
    Cltab(crate::cltab::CltabErrors),
    #[error(
        "the shared cltab is at revision {current}, not {expected}: pull it again, merge, and push with --expect {current}"
    )]
    Collision { expected: i64, current: i64 },
    #[error("no shared cltab is stored in etcd under {0}")]
    NoCltab(String),
    #[error("{0}")]
    Refused(String),
    /// A node refused a request with this error (as its daemon would).
    #[error("{}", .0.message)]
    Node(crate::proto::ErrorReply),
    #[error("{0}")]
    Timeout(String),
}

impl ClusterError {
    pub fn exit_code(&self) -> i32 {
        use crate::proto::ErrorCode;
        match self {
            ClusterError::NotCluster(_) => 20,
            ClusterError::Setting(_) => ErrorCode::CltabInvalid.exit_code(),
            ClusterError::Unreachable { .. } => 19,
            ClusterError::Cltab(_) => ErrorCode::CltabInvalid.exit_code(),
            ClusterError::Collision { .. } => ErrorCode::Collision.exit_code(),
            ClusterError::NoCltab(_) => ErrorCode::Noent.exit_code(),
            ClusterError::Refused(_) => 1,
            ClusterError::Node(e) => e.code.exit_code(),
            ClusterError::Timeout(_) => ErrorCode::Timeout.exit_code(),
        }
    }

    /// The stable code, as `clinit --json` and the docs name it.
    pub fn code(&self) -> &'static str {
        match self {
            ClusterError::NotCluster(_) => "NOT_CLUSTER",
            ClusterError::Setting(_) => "CLTAB_INVALID",
            ClusterError::Unreachable { .. } => "ETCD_UNREACHABLE",
            ClusterError::Cltab(_) => "CLTAB_INVALID",
            ClusterError::Collision { .. } => "COLLISION",
            ClusterError::NoCltab(_) => "NOENT",
            ClusterError::Refused(_) => "REFUSED",
            ClusterError::Node(_) => "NODE",
            ClusterError::Timeout(_) => "TIMEOUT",
        }
    }
}

impl ClusterConfig {
    /// The cluster configuration of `settings` (a local cltab's) and
    /// `flags`; `None` when neither names etcd endpoints (single-node mode).
    pub fn resolve(
        settings: &Settings,
        flags: &ClusterFlags,
    ) -> Result<Option<Self>, ClusterError> {
        let endpoints = match (&settings.etcd, &flags.etcd) {
            (Some(e), _) => e.clone(),
            (None, Some(f)) => {
                let mut s = Settings::default();
                s.set("etcd", f)
                    .map_err(|e| ClusterError::Setting(format!("--etcd: {e}")))?;
                s.etcd.unwrap_or_default()
            }
            (None, None) => return Ok(None),
        };
        let name = |set: &Option<String>, flag: &Option<String>, what: &str| match (set, flag) {
            (Some(v), _) => Ok(Some(v.clone())),
            (None, Some(f)) => {
                let mut s = Settings::default();
                s.set(what, f)
                    .map_err(|e| ClusterError::Setting(format!("--{what}: {e}")))?;
                Ok(Some(f.clone()))
            }
            (None, None) => Ok(None),
        };
        let node = match name(&settings.node, &flags.node, "node")? {
            Some(n) => n,
            // The host name, checked as a node name would be (a '/' in it
            // would put this node's keys under another node's).
            None => {
                let host = crate::config::hostname();
                Settings::default().set("node", &host).map_err(|e| {
                    ClusterError::Setting(format!(
                        "the host name {host:?} cannot be the node name ({e}); set :::node:NAME or --node"
                    ))
                })?;
                host
            }
        };
        let cluster = name(&settings.cluster, &flags.cluster, "cluster")?
            .unwrap_or_else(|| DEFAULT_CLUSTER.to_string());
        Ok(Some(ClusterConfig {
            endpoints,
            node,
            cluster,
            lease_ttl: settings.lease_ttl.unwrap_or(DEFAULT_LEASE_TTL),
            ca: settings.etcd_ca.clone(),
            cert: settings.etcd_cert.clone(),
            key: settings.etcd_key.clone(),
            user: settings.etcd_user.clone(),
            password_file: settings.etcd_password_file.clone(),
        }))
    }

    /// As [`ClusterConfig::resolve`], an error naming `cltab` when the
    /// cluster is not configured.
    pub fn require(
        settings: &Settings,
        flags: &ClusterFlags,
        cltab: &Path,
    ) -> Result<Self, ClusterError> {
        Self::resolve(settings, flags)?.ok_or_else(|| ClusterError::NotCluster(cltab.to_path_buf()))
    }

    pub fn endpoints_text(&self) -> String {
        self.endpoints.join(",")
    }

    fn prefix(&self) -> String {
        format!("/{}/", self.cluster)
    }

    pub fn cltab_key(&self) -> String {
        format!("{}cltab", self.prefix())
    }

    pub fn nodes_prefix(&self) -> String {
        format!("{}nodes/", self.prefix())
    }

    pub fn node_key(&self, node: &str) -> String {
        format!("{}{node}", self.nodes_prefix())
    }

    pub fn states_prefix(&self) -> String {
        format!("{}state/", self.prefix())
    }

    pub fn state_key(&self, node: &str) -> String {
        format!("{}{node}", self.states_prefix())
    }

    pub fn goals_prefix(&self, node: &str) -> String {
        format!("{}goals/{node}/", self.prefix())
    }

    pub fn goal_key(&self, node: &str, group: &str) -> String {
        format!("{}{group}", self.goals_prefix(node))
    }

    pub fn applied_key(&self, node: &str, group: &str) -> String {
        format!("{}applied/{node}/{group}", self.prefix())
    }

    /// The path a stored cltab revision is named by in error messages.
    pub fn cltab_name(&self, rev: i64) -> PathBuf {
        PathBuf::from(format!("etcd:{}@{rev}", self.cltab_key()))
    }

    fn unreachable(&self, err: impl std::fmt::Display) -> ClusterError {
        ClusterError::Unreachable {
            endpoints: self.endpoints_text(),
            err: err.to_string(),
        }
    }

    /// Connect, with TLS and user if the settings ask; every request of
    /// the client made fails after [`REQUEST_TIMEOUT`] rather than hang.
    pub async fn connect(&self) -> Result<etcd_client::Client, ClusterError> {
        let mut opts = etcd_client::ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_timeout(REQUEST_TIMEOUT)
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
            .with_keep_alive_while_idle(true)
            // A member without a leader answers nothing rather than wait.
            .with_require_leader(true);
        if let Some(user) = &self.user {
            let file = self.password_file.as_ref().ok_or_else(|| {
                ClusterError::Setting("etcd_user needs etcd_password_file".into())
            })?;
            let text = std::fs::read_to_string(file).map_err(|e| {
                ClusterError::Setting(format!("etcd_password_file {}: {e}", file.display()))
            })?;
            let password = text.lines().next().unwrap_or("").to_string();
            opts = opts.with_user(user.clone(), password);
        }
        if self.ca.is_some() || self.cert.is_some() {
            let read = |p: &PathBuf| {
                std::fs::read(p).map_err(|e| ClusterError::Setting(format!("{}: {e}", p.display())))
            };
            let mut tls = etcd_client::TlsOptions::new();
            if let Some(ca) = &self.ca {
                tls = tls.ca_certificate(etcd_client::Certificate::from_pem(read(ca)?));
            }
            match (&self.cert, &self.key) {
                (Some(c), Some(k)) => {
                    tls = tls.identity(etcd_client::Identity::from_pem(read(c)?, read(k)?));
                }
                (None, None) => {}
                _ => {
                    return Err(ClusterError::Setting(
                        "etcd_cert and etcd_key go together".into(),
                    ));
                }
            }
            opts = opts.with_tls(tls);
        }
        // One endpoint at a time, each asked for its status: a channel
        // balanced over all of them kept choosing a dead member (measured
        // with one member of three killed), so the node uses one member
        // that answers, and the next one after a failure.
        let start = NEXT_ENDPOINT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut why = Vec::new();
        for i in 0..self.endpoints.len() {
            let ep = &self.endpoints[(start + i) % self.endpoints.len()];
            let try_one = async {
                let mut c = etcd_client::Client::connect([ep], Some(opts.clone())).await?;
                c.status().await?;
                Ok::<_, etcd_client::Error>(c)
            };
            match tokio::time::timeout(CONNECT_TIMEOUT, try_one).await {
                Ok(Ok(c)) => return Ok(c),
                Ok(Err(e)) => why.push(format!("{ep}: {e}")),
                Err(_) => why.push(format!("{ep}: no answer")),
            }
        }
        Err(self.unreachable(why.join("; ")))
    }
}

/// A node's registration (`nodes/<node>`, under its lease).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeInfo {
    pub node: String,
    /// The daemon's socket on that node.
    pub socket: String,
    pub version: String,
    pub pid: u32,
    /// Unix seconds.
    pub started: i64,
}

/// A group's level and state as a node publishes them.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GroupSummary {
    pub group: String,
    pub level: Option<String>,
    pub state: String,
}

/// What a node publishes (`state/<node>`) on every change.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeState {
    pub node: String,
    /// The shared cltab revision the node runs (0: none yet).
    pub cltab_rev: i64,
    /// Unix seconds of this publication.
    pub updated: i64,
    pub groups: Vec<GroupSummary>,
}

/// A level told to a node's group through etcd (`goals/<node>/<group>`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Goal {
    pub level: String,
    /// Who told it (user and host of the client).
    pub by: String,
}

/// The node's answer to a goal (`applied/<node>/<group>`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Applied {
    /// The mod revision of the goal key answered.
    pub goal_rev: i64,
    /// `None` when the tell was taken; else the error code.
    pub code: Option<String>,
    pub message: String,
}

/// One node as `clinit cluster status` shows it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeView {
    pub node: String,
    pub alive: bool,
    /// Alive: when it started; gone: its last publication (Unix seconds).
    pub since: Option<i64>,
    pub cltab_rev: i64,
    pub groups: Vec<GroupSummary>,
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// `clinit cluster push FILE [--expect REV]`: validate FILE as a reread
/// would, then store it; the new revision.
pub async fn push(
    cfg: &ClusterConfig,
    file: &Path,
    expect: Option<i64>,
) -> Result<i64, ClusterError> {
    let text = crate::cltab::read_text(file).map_err(ClusterError::Cltab)?;
    crate::cltab::parse(file, &text).map_err(ClusterError::Cltab)?;
    store_cltab(cfg, &text, expect).await
}

/// Store `text` as the shared cltab, if its revision is still `expect`
/// (0: no cltab stored yet) when one is given; the new revision.
pub async fn store_cltab(
    cfg: &ClusterConfig,
    text: &str,
    expect: Option<i64>,
) -> Result<i64, ClusterError> {
    // A member that stops answering (killed, partitioned, not yet joined
    // to the leader) is followed by the next one (`retried`). A try that
    // failed that way may still have been committed: a compare that then
    // fails on our own text is our success.
    let ambiguous = std::sync::atomic::AtomicBool::new(false);
    let stored = retried(cfg, |c| async {
        let r = store_once(cfg, c, text, expect).await;
        if matches!(r, Err(ClusterError::Unreachable { .. })) {
            ambiguous.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        r
    })
    .await;
    match stored {
        Err(ClusterError::Collision { current, .. })
            if ambiguous.load(std::sync::atomic::Ordering::Relaxed) =>
        {
            match pull(cfg).await {
                Ok((now, rev)) if now == text && rev == current => Ok(rev),
                _ => stored,
            }
        }
        other => other,
    }
}

/// How many tries a client request gets: each endpoint once, and at least
/// two, while they took less than two request timeouts.
fn attempts(cfg: &ClusterConfig) -> usize {
    cfg.endpoints.len().max(2)
}

/// `f` with a new connection each try, until it gives something else than
/// "unreachable" or every endpoint had its try.
async fn retried<T, F, Fut>(cfg: &ClusterConfig, mut f: F) -> Result<T, ClusterError>
where
    F: FnMut(etcd_client::Client) -> Fut,
    Fut: std::future::Future<Output = Result<T, ClusterError>>,
{
    let mut last = None;
    let started = std::time::Instant::now();
    for _ in 0..attempts(cfg) {
        // Another try on the next member, while the tries so far took
        // less than two request timeouts: a client gives up within about
        // 10 s, whatever the number of endpoints.
        if started.elapsed() >= 2 * REQUEST_TIMEOUT {
            break;
        }
        // A connection tries every endpoint already: not again.
        let c = cfg.connect().await?;
        match f(c).await {
            Err(e @ ClusterError::Unreachable { .. }) => last = Some(e),
            other => return other,
        }
    }
    Err(last.unwrap_or_else(|| cfg.unreachable("no endpoint")))
}

async fn store_once(
    cfg: &ClusterConfig,
    mut c: etcd_client::Client,
    text: &str,
    expect: Option<i64>,
) -> Result<i64, ClusterError> {
    use etcd_client::{Compare, CompareOp, Txn, TxnOp};
    let key = cfg.cltab_key();
    let when = match expect {
        Some(rev) => vec![Compare::mod_revision(key.clone(), CompareOp::Equal, rev)],
        None => vec![],
    };
    let txn = Txn::new()
        .when(when)
        .and_then([TxnOp::put(key.clone(), text, None)])
        .or_else([TxnOp::get(key.clone(), None)]);
    let resp = c.txn(txn).await.map_err(|e| cfg.unreachable(e))?;
    if resp.succeeded() {
        return Ok(resp.header().map_or(0, |h| h.revision()));
    }
    let current = resp
        .op_responses()
        .into_iter()
        .find_map(|r| match r {
            etcd_client::TxnOpResponse::Get(g) => {
                Some(g.kvs().first().map_or(0, |kv| kv.mod_revision()))
            }
            _ => None,
        })
        .unwrap_or(0);
    Err(ClusterError::Collision {
        expected: expect.unwrap_or(0),
        current,
    })
}

/// The stored cltab and its revision.
pub async fn pull(cfg: &ClusterConfig) -> Result<(String, i64), ClusterError> {
    retried(cfg, |c| pull_once(cfg, c)).await
}

async fn pull_once(
    cfg: &ClusterConfig,
    mut c: etcd_client::Client,
) -> Result<(String, i64), ClusterError> {
    let resp = c
        .get(cfg.cltab_key(), None)
        .await
        .map_err(|e| cfg.unreachable(e))?;
    match resp.kvs().first() {
        Some(kv) => Ok((
            String::from_utf8_lossy(kv.value()).into_owned(),
            kv.mod_revision(),
        )),
        None => Err(ClusterError::NoCltab(cfg.cltab_key())),
    }
}

/// Every node that registered or published, from etcd alone.
pub async fn status(cfg: &ClusterConfig) -> Result<Vec<NodeView>, ClusterError> {
    retried(cfg, |c| status_once(cfg, c)).await
}

async fn status_once(
    cfg: &ClusterConfig,
    mut c: etcd_client::Client,
) -> Result<Vec<NodeView>, ClusterError> {
    let prefix = |p: String| (p, Some(etcd_client::GetOptions::new().with_prefix()));
    let (k, o) = prefix(cfg.nodes_prefix());
    let nodes = c.get(k, o).await.map_err(|e| cfg.unreachable(e))?;
    let (k, o) = prefix(cfg.states_prefix());
    let states = c.get(k, o).await.map_err(|e| cfg.unreachable(e))?;
    let mut alive: std::collections::BTreeMap<String, NodeInfo> = Default::default();
    for kv in nodes.kvs() {
        if let Ok(info) = serde_json::from_slice::<NodeInfo>(kv.value()) {
            alive.insert(info.node.clone(), info);
        }
    }
    let mut out: std::collections::BTreeMap<String, NodeView> = Default::default();
    for kv in states.kvs() {
        if let Ok(st) = serde_json::from_slice::<NodeState>(kv.value()) {
            let info = alive.get(&st.node);
            out.insert(
                st.node.clone(),
                NodeView {
                    node: st.node.clone(),
                    alive: info.is_some(),
                    since: Some(info.map_or(st.updated, |i| i.started)),
                    cltab_rev: st.cltab_rev,
                    groups: st.groups,
                },
            );
        }
    }
    for (name, info) in alive {
        out.entry(name.clone()).or_insert(NodeView {
            node: name,
            alive: true,
            since: Some(info.started),
            cltab_rev: 0,
            groups: Vec::new(),
        });
    }
    Ok(out.into_values().collect())
}

/// `clinit --node NODE GROUP LEVEL`: write the goal, then wait until the
/// node has answered it (or `timeout`); the node's reply.
pub async fn tell(
    cfg: &ClusterConfig,
    node: &str,
    group: &str,
    level: &str,
    by: &str,
    timeout: Duration,
) -> Result<String, ClusterError> {
    if let Err(why) = crate::cltab::check_name(group) {
        return Err(ClusterError::Refused(format!(
            "bad group name {group:?}: {why}"
        )));
    }
    if let Err(e) = Settings::default().set("node", node) {
        return Err(ClusterError::Setting(format!("--node: {e}")));
    }
    let mut c = cfg.connect().await?;
    let goal = Goal {
        level: level.to_string(),
        by: by.to_string(),
    };
    let put = c
        .put(
            cfg.goal_key(node, group),
            serde_json::to_vec(&goal).unwrap_or_default(),
            None,
        )
        .await
        .map_err(|e| cfg.unreachable(e))?;
    let rev = put.header().map_or(0, |h| h.revision());
    let key = cfg.applied_key(node, group);
    let answered = |v: &[u8]| -> Option<Applied> {
        serde_json::from_slice::<Applied>(v)
            .ok()
            .filter(|a| a.goal_rev >= rev)
    };
    let wait = async {
        let mut stream = c
            .watch(
                key.clone(),
                Some(etcd_client::WatchOptions::new().with_start_revision(rev)),
            )
            .await
            .map_err(|e| cfg.unreachable(e))?;
        while let Some(resp) = stream.message().await.map_err(|e| cfg.unreachable(e))? {
            for ev in resp.events() {
                if let Some(a) = ev.kv().and_then(|kv| answered(kv.value())) {
                    return Ok(a);
                }
            }
        }
        Err(cfg.unreachable("the watch ended"))
    };
    let applied = match tokio::time::timeout(timeout, wait).await {
        Ok(r) => r?,
        Err(_) => {
            return Err(ClusterError::Timeout(format!(
                "node {node} did not take the goal {group} {level} within {} s (is it running and connected to etcd?); the goal stays stored and the node applies it when it comes",
                timeout.as_secs()
            )));
        }
    };
    match applied.code {
        None => Ok(applied.message),
        Some(code) => {
            let message = format!("node {node}: {}", applied.message);
            match serde_json::from_value(serde_json::Value::String(code.clone())) {
                Ok(code) => Err(ClusterError::Node(crate::proto::ErrorReply {
                    code,
                    message,
                })),
                Err(_) => Err(ClusterError::Refused(format!("{message} [{code}]"))),
            }
        }
    }
}

/// The cache of the shared cltab in a node's state directory, so that a
/// node started while etcd is unreachable supervises what it last knew.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CachedCltab {
    pub rev: i64,
    pub text: String,
}

impl CachedCltab {
    pub fn path(state: &Path) -> PathBuf {
        state.join("cluster-cltab.json")
    }

    pub fn load(state: &Path) -> Option<CachedCltab> {
        let text = std::fs::read(Self::path(state)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Written atomically (temp file, fsync, rename).
    pub fn save(&self, state: &Path) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        crate::store::write_atomic(&Self::path(state), &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cluster_is_configured_by_settings_before_flags() {
        let mut s = Settings::default();
        let flags = ClusterFlags {
            etcd: Some("http://10.0.0.1:2379".into()),
            node: Some("flagnode".into()),
            cluster: None,
        };
        assert!(
            ClusterConfig::resolve(&s, &ClusterFlags::default())
                .unwrap()
                .is_none()
        );
        let c = ClusterConfig::resolve(&s, &flags).unwrap().unwrap();
        assert_eq!(c.endpoints, ["http://10.0.0.1:2379"]);
        assert_eq!(
            (c.node.as_str(), c.cluster.as_str()),
            ("flagnode", "clinit")
        );
        s.set("etcd", "http://a:1, https://b:2").unwrap();
        s.set("node", "n1").unwrap();
        s.set("cluster", "prod").unwrap();
        let c = ClusterConfig::resolve(&s, &flags).unwrap().unwrap();
        assert_eq!(c.endpoints, ["http://a:1", "https://b:2"]);
        assert_eq!((c.node.as_str(), c.cluster.as_str()), ("n1", "prod"));
        assert_eq!(c.cltab_key(), "/prod/cltab");
        assert_eq!(c.goal_key("n2", "web"), "/prod/goals/n2/web");
        assert_eq!(c.applied_key("n2", "web"), "/prod/applied/n2/web");
        assert_eq!(c.state_key("n1"), "/prod/state/n1");
        assert_eq!(c.node_key("n1"), "/prod/nodes/n1");
        let bad = ClusterFlags {
            etcd: Some("10.0.0.1:2379".into()),
            ..Default::default()
        };
        let e = ClusterConfig::resolve(&Settings::default(), &bad).unwrap_err();
        assert!(
            e.to_string().contains("not an http:// or https:// URL"),
            "{e}"
        );
        let bad = ClusterFlags {
            etcd: Some("http://x:1".into()),
            node: Some("a/b".into()),
            ..Default::default()
        };
        assert!(ClusterConfig::resolve(&Settings::default(), &bad).is_err());
    }
}
