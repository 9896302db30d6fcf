//! `clinit`: command-line parsing and dispatch only.

use clap::{Parser, Subcommand};
use clinit::client::{Client, ClientError, Target};
use clinit::cltab;
use clinit::config::{CliPaths, Paths};
use clinit::proto::{ControlAction, EntryStatus, GroupStatus, Reply, Request};
use clinit::schedule::ctime;
use clinit::supervisor::machine::GroupState;
use std::path::PathBuf;
use std::process::ExitCode;

/// Cluster init: supervise the programs of resource groups and switch groups
/// between runlevels.
///
/// Cluster::Init form: clinit [-d] [-k] [-v] [-c cltab] [-s socket] [[group] level]
#[derive(Parser, Debug)]
#[command(
    name = "clinit",
    version,
    allow_external_subcommands = true,
    args_override_self = true
)]
struct Cli {
    /// Run the daemon in the foreground.
    #[arg(short = 'd')]
    daemon: bool,
    /// Shut the daemon down.
    #[arg(short = 'k')]
    kill: bool,
    /// Print the status afterwards.
    #[arg(short = 'v')]
    verbose: bool,
    /// The cltab file [default: /etc/cltab].
    #[arg(short = 'c', long = "cltab", global = true)]
    cltab: Option<PathBuf>,
    /// The daemon's socket [default: /var/run/clinit/clinit.s]; a `:::socket:` setting wins.
    #[arg(short = 's', long = "socket", global = true)]
    socket: Option<PathBuf>,
    /// Cluster mode: etcd endpoints, comma-separated [a `:::etcd:` setting wins].
    #[arg(long, global = true, value_name = "URLS")]
    etcd: Option<String>,
    /// For the daemon, this node's name [default: the host name; a `:::node:`
    /// setting wins]; for a tell (`clinit --node NODE GROUP LEVEL`), the node
    /// whose group is told, through etcd.
    #[arg(long, global = true, value_name = "NAME")]
    node: Option<String>,
    /// Cluster mode: the cluster's name, the prefix of its keys in etcd
    /// [default: clinit; a `:::cluster:` setting wins].
    #[arg(long, global = true, value_name = "NAME")]
    cluster: Option<String>,
    /// Send the command to the daemon on HOST (over TCP with mutual TLS;
    /// port 4072 unless given) instead of the local socket.
    #[arg(
        short = 'H',
        long,
        global = true,
        env = "CLINIT_HOST",
        value_name = "HOST[:PORT]"
    )]
    host: Option<String>,
    /// The CA certificate (PEM) the other side's certificate must chain to
    /// [client default: ~/.config/clinit/tls/ca.pem, then
    /// /etc/clinit/tls/ca.pem; daemon default: /etc/clinit/tls/ca.pem].
    #[arg(long, global = true, value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// Your certificate (PEM) [client default: cert.pem beside the CA
    /// defaults; daemon: /etc/clinit/tls/cert.pem].
    #[arg(long, global = true, value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// The key (PEM) of --tls-cert [default: key.pem beside it].
    #[arg(long, global = true, value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// Plain TCP without TLS, on loopback only (for tests and tunnels):
    /// the daemon serves `--listen` so, a client talks to `--host` so.
    #[arg(long, global = true)]
    insecure_loopback: bool,
    #[command(flatten)]
    daemon_args: DaemonArgs,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand, Debug)]
enum CaCmd {
    /// Create a CA in DIR: its key (ca.key, mode 0600) and certificate
    /// (ca.pem). An existing CA is never overwritten.
    Init {
        /// The directory to create the CA in.
        dir: PathBuf,
        /// The CA's name (CN) [default: "clinit CA HOSTNAME"].
        #[arg(long)]
        name: Option<String>,
        /// How long the CA is valid, in days.
        #[arg(long, default_value_t = 3650)]
        days: u32,
    },
}

#[derive(Subcommand, Debug)]
enum CertCmd {
    /// Issue a certificate signed by the CA in --ca: a user's (identity
    /// NAME), or with --server a node's, which serves under those names
    /// and can administer the others. Writes cert.pem, key.pem (0600) and
    /// ca.pem into --out.
    Issue {
        /// The CA's directory (made by `clinit ca init`).
        #[arg(long, value_name = "DIR")]
        ca: PathBuf,
        /// The identity (CN), as a UserList names it after `cert:`.
        name: String,
        /// Host names and addresses the server is reached by, comma-separated.
        #[arg(long, value_name = "HOST,...", value_delimiter = ',')]
        server: Vec<String>,
        /// How long it is valid, in days.
        #[arg(long, default_value_t = 825)]
        days: u32,
        /// Valid from this date (YYYY-MM-DD, UTC) [default: now].
        #[arg(long, value_name = "DATE", value_parser = clinit::tls::parse_date)]
        not_before: Option<time::OffsetDateTime>,
        /// Valid until this date (YYYY-MM-DD, UTC) [default: --days after the start].
        #[arg(long, value_name = "DATE", value_parser = clinit::tls::parse_date)]
        not_after: Option<time::OffsetDateTime>,
        /// The directory to write into.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Replace a cert.pem and key.pem already there.
        #[arg(long)]
        force: bool,
    },
    /// Print a certificate's subject, identity, names, validity and issuer.
    Show {
        /// The certificate file (PEM).
        file: PathBuf,
    },
}

/// Options of the daemon (`clinit daemon` or `clinit -d`).
#[derive(clap::Args, Debug, Clone, Default)]
struct DaemonArgs {
    /// Directory of the persistent state (goals, stopped entries, children)
    /// [default: /var/lib/clinit]; a `:::state:` setting wins.
    #[arg(long = "state-dir", value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Do not restore each group to its goal (the level it was last told).
    #[arg(long)]
    no_restore: bool,
    /// Let every user who can open the socket change anything (warns loudly).
    #[arg(long)]
    noauth: bool,
    /// Serve remote administration on these TCP addresses, comma-separated
    /// (HOST, HOST:PORT, [IPV6]:PORT; port 4072 when none is given), with
    /// mutual TLS [a `:::listen:` setting wins].
    #[arg(long, value_name = "ADDRS", value_delimiter = ',')]
    listen: Option<Vec<String>>,
    /// Set a parameter (any `:::NAME:VALUE` setting) for this run; it wins
    /// over the cltab. Repeat for several (`clinit params` lists them).
    #[arg(long = "set", value_name = "NAME=VALUE", value_parser = parse_set)]
    set: Vec<(String, String)>,
}

fn parse_set(s: &str) -> Result<(String, String), String> {
    clinit::params::parse_assignment(s).map_err(|e| e.to_string())
}

/// Per-entry options of `clinit create`: one flag for every entry option
/// of the settings table (`--stop-signal SIG` becomes the option line
/// `:TAG::stop_signal:SIG`), in the table's order.
#[derive(Debug, Clone, Default)]
struct EntryOptionArgs(Vec<(String, String)>);

impl EntryOptionArgs {
    fn to_options(&self) -> Vec<(String, String)> {
        self.0.clone()
    }

    fn rows() -> impl Iterator<Item = &'static cltab::SettingInfo> {
        cltab::SETTINGS.iter().filter(|s| s.scope.is_option())
    }
}

impl clap::FromArgMatches for EntryOptionArgs {
    fn from_arg_matches(m: &clap::ArgMatches) -> Result<Self, clap::Error> {
        Ok(EntryOptionArgs(
            Self::rows()
                .filter_map(|s| {
                    m.get_one::<String>(s.name)
                        .map(|v| (s.name.to_string(), v.clone()))
                })
                .collect(),
        ))
    }

    fn update_from_arg_matches(&mut self, m: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl clap::Args for EntryOptionArgs {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        Self::rows().fold(cmd, |cmd, s| {
            let mut help = s.help.to_string();
            if let Some(first) = help.get_mut(..1) {
                first.make_ascii_uppercase();
            }
            cmd.arg(
                clap::Arg::new(s.name)
                    .long(s.name.replace('_', "-"))
                    .value_name(s.value_name)
                    .help(help),
            )
        })
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the daemon in the foreground.
    Daemon(DaemonArgs),
    /// Tell a group to go to a level (on another node with --node NODE).
    Tell {
        /// The group, as the cltab names it.
        group: String,
        /// The level to go to (a word of letters, digits, `_` and `-`).
        level: String,
    },
    /// Print the level and state of each group.
    Status {
        /// Only this group (and, with --long or --json, its entries).
        group: Option<String>,
        /// Print every entry as JSON, with exact numbers.
        #[arg(long, conflicts_with = "long")]
        json: bool,
        /// Print every entry as `bos status -long` does.
        #[arg(long)]
        long: bool,
    },
    /// Stop an entry and keep it stopped, across level switches and daemon
    /// restarts, until `clinit start TAG`.
    Stop {
        /// The entry's tag.
        tag: String,
        /// Only until the daemon restarts.
        #[arg(long)]
        temporary: bool,
    },
    /// Enable an entry again and start it if its group is at one of its
    /// levels.
    Start {
        /// The entry's tag.
        tag: String,
        /// Only until the daemon restarts.
        #[arg(long)]
        temporary: bool,
    },
    /// Stop and start again: one entry, a group's entries (--group), or
    /// every group (--all).
    Restart {
        /// The entry's tag.
        #[arg(required_unless_present_any = ["group", "all"], conflicts_with_all = ["group", "all"])]
        tag: Option<String>,
        /// Every entry of this group that runs.
        #[arg(long, conflicts_with = "all")]
        group: Option<String>,
        /// Every entry of every group that runs.
        #[arg(long)]
        all: bool,
    },
    /// Add an entry to the cltab and start it if its group is at a level of it.
    ///
    /// clinit create GROUP TAG LEVELS MODE [options] -- COMMAND...
    Create {
        /// The entry's group (a new group if no entry has it yet).
        group: String,
        /// The entry's tag, unique in the cltab.
        tag: String,
        /// The levels it runs at: `1`, `1,2`, `2-4` or `-` for none.
        levels: String,
        /// wait, once, respawn, off, test or cron.
        mode: String,
        #[command(flatten)]
        opts: Box<EntryOptionArgs>,
        /// The command; its words are joined with single spaces.
        #[arg(last = true, required = true, value_name = "COMMAND")]
        command: Vec<String>,
    },
    /// Stop an entry gracefully and remove it from the cltab.
    Delete {
        /// The entry's tag.
        tag: String,
    },
    /// Run a command while holding a lock.
    ///
    /// clinit lock [--shared] [--nowait | --timeout SECS] [--ttl SECS] [--no-start] NAME -- COMMAND...
    ///
    /// Exits with the command's status; 75 when the lock cannot
    /// be had, 76 when it was lost while the command ran (the command is
    /// stopped), 69 when no lock service can be reached or started. In
    /// cluster mode the lock is the cluster's: it excludes holders on every
    /// node, and the command is stopped before another node can be granted
    /// it if this node loses etcd or its daemon stops answering.
    Lock {
        /// Take a shared lock (default: exclusive).
        #[arg(long)]
        shared: bool,
        /// Do not wait: exit 75 at once when the lock is held.
        #[arg(long, conflicts_with = "timeout")]
        nowait: bool,
        /// Give up waiting after SECS seconds (exit 75).
        #[arg(long, value_name = "SECS", value_parser = non_negative)]
        timeout: Option<f64>,
        /// Hold the lock through a lease renewed every TTL/3 (TTL seconds).
        #[arg(long, value_name = "SECS", value_parser = non_negative)]
        ttl: Option<f64>,
        /// Do not start `clinit lockd` when no lock service answers (never
        /// started in cluster mode).
        #[arg(long)]
        no_start: bool,
        /// The lock's container name.
        name: String,
        /// The command and its arguments (run directly, not by a shell).
        #[arg(last = true, required = true, value_name = "COMMAND")]
        command: Vec<String>,
    },
    /// List lock holders and waiters.
    Locks {
        /// Only this lock.
        name: Option<String>,
        /// A list of objects {name, mode, holders, waiters, token, ...}.
        #[arg(long)]
        json: bool,
    },
    /// Records with update signatures.
    #[command(subcommand)]
    Record(RecordCmd),
    /// The fencing watchdog of exclusive groups (started by the daemon).
    #[command(hide = true)]
    Watchdog {
        /// A watchdog device to feed (setting hw_watchdog).
        #[arg(long)]
        device: Option<PathBuf>,
    },
    /// Run the standalone lock daemon (locks and records only).
    Lockd {
        /// Exit after MINUTES with no lock held and no client connected
        /// [default: IDLE in /etc/default/clinit-lockd, else 15].
        #[arg(long, value_name = "MINUTES", value_parser = non_negative)]
        idle: Option<f64>,
        /// Where lockd keeps its records and lock tokens [default: the
        /// directory of its socket].
        #[arg(long = "state-dir", value_name = "DIR")]
        state_dir: Option<PathBuf>,
    },
    /// Reread the cltab.
    Reread,
    /// Wait until a group is at LEVEL (if given) and in a state: by default
    /// any settled state (DONE, PASSED, FAILED).
    Wait {
        /// The group to wait for.
        group: String,
        /// The level it must be at [default: whatever level it is at].
        level: Option<String>,
        /// STARTING, STOPPING, DONE, PASSED or FAILED.
        #[arg(long, value_parser = parse_state)]
        state: Option<GroupState>,
        /// Give up after this many seconds (exit 6).
        #[arg(long, default_value_t = 60.0, value_parser = non_negative)]
        timeout: f64,
    },
    /// Stop every group and make the daemon exit.
    #[command(visible_alias = "byebye")]
    Shutdown,
    /// A table of groups, entries or locks: the columns, filters and sort
    /// order you choose.
    ///
    /// clinit survey entries --columns group,tag,state,pid --filter
    /// group=web --filter state=running --sort -restarts
    ///
    /// cdadm's compact form: clinit survey -e +gtsp group=web s:t (-g, -e,
    /// -l: the table; +LETTERS: the columns; NAME=VALUE: a filter; KEYS
    /// joined by ':' sort, a '-' after a letter descending). Letters of
    /// groups: g=group l=level s=state o=goal e=entries r=running; of
    /// entries: g=group t=tag v=levels m=mode s=state p=pid b=start_time
    /// u=uptime n=starts r=restarts q=rapid x=last_exit c=cpu k=rss o=goal
    /// S=stopped G=gave_up; of locks: n=name m=mode h=holders w=waiters
    /// t=token s=since. Filters: NAME=VALUE, NAME!=VALUE (text, any case; a
    /// trailing * matches a prefix), NAME<N, NAME>N.
    Survey(SurveyArgs),
    /// Is the daemon alive: the round trip, its version, pid and uptime.
    #[command(visible_alias = "ping")]
    Null,
    /// List every parameter: its value, where the value came from
    /// (default, cltab, command line, live, persisted), whether it can
    /// change while the daemon runs, and what it does.
    Params {
        /// A list of objects {name, value, source, live, kind, help}.
        #[arg(long)]
        json: bool,
    },
    /// Print one parameter's value.
    Getpar {
        /// The parameter's name (`clinit params` lists them).
        name: String,
        /// {name, value, source, live, kind, help}.
        #[arg(long)]
        json: bool,
    },
    /// Set a parameter while the daemon runs and print its previous value.
    ///
    /// Lasts until the daemon stops, or with --persist across restarts
    /// (kept in the state directory). Booleans take on/off, 1/0,
    /// true/false. Parameters that can change live: loglevel, lwords_keep,
    /// maintenance, events_keep, notifier_timeout, stop_signal,
    /// stop_term_after, stop_kill_after and the respawn_* settings.
    Setpar {
        /// The parameter's name.
        name: String,
        /// The new value (omit with --unset).
        #[arg(
            required_unless_present = "unset",
            conflicts_with = "unset",
            allow_hyphen_values = true
        )]
        value: Option<String>,
        /// Keep the value across daemon restarts (with --unset: forget
        /// the kept value too).
        #[arg(long)]
        persist: bool,
        /// Remove the live value: back to the command line's, the cltab's
        /// or the default.
        #[arg(long)]
        unset: bool,
        /// {"previous": {...}, "now": {...}}.
        #[arg(long)]
        json: bool,
    },
    /// Write the daemon's last words (its most recent log records of every
    /// level) to its log, and print them.
    Lastwords,
    /// Reopen the daemon's log file (after logrotate moved it; SIGHUP
    /// does the same).
    Reopen,
    /// Print a shell completion script: clinit completions bash >
    /// /etc/bash_completion.d/clinit (zsh: into a directory of $fpath as
    /// _clinit; fish: ~/.config/fish/completions/clinit.fish).
    Completions {
        /// bash, zsh or fish.
        #[arg(value_parser = ["bash", "zsh", "fish"])]
        shell: String,
    },
    /// Print the manual page (roff): clinit man > /usr/local/share/man/man1/clinit.1
    Man,
    /// A certificate authority for remote administration.
    #[command(subcommand)]
    Ca(CaCmd),
    /// Certificates for remote administration: issue, show.
    #[command(subcommand)]
    Cert(CertCmd),
    /// Print what happened: level switches, starts and exits, operator
    /// actions, rereads, locks and records, one event per line.
    ///
    /// Without --follow, prints the events the daemon still keeps (the last
    /// events_keep, 10,000 by default) and exits; with --follow, goes on
    /// until interrupted. Every event has a sequence number; --since SEQ
    /// resumes right after it, so a client that lost its connection misses
    /// nothing the daemon still keeps (older ones are reported as a gap).
    Events {
        /// Go on printing new events until interrupted.
        #[arg(short = 'f', long)]
        follow: bool,
        /// Print only events after sequence number SEQ.
        #[arg(long, value_name = "SEQ", conflicts_with = "last")]
        since: Option<u64>,
        /// Print only the last N events kept (then follow, with --follow).
        #[arg(long, value_name = "N")]
        last: Option<u64>,
        /// Only events about group G (level switches, its entries, tells).
        #[arg(long, value_name = "G")]
        group: Option<String>,
        /// One JSON object per line: {"seq":..,"time":..,"kind":..,...}.
        #[arg(long)]
        json: bool,
    },
    /// Say why an entry or a group runs, or does not.
    Explain {
        /// An entry's tag or a group's name.
        name: String,
        /// The same facts as JSON fields.
        #[arg(long)]
        json: bool,
    },
    /// The cluster, through etcd: the shared cltab and every node.
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// Cluster::Init form: `[GROUP] LEVEL` tells GROUP (default: the host name).
    #[command(external_subcommand)]
    Compat(Vec<String>),
}

/// `clinit survey`.
#[derive(clap::Args, Debug)]
struct SurveyArgs {
    /// The groups table (compact form).
    #[arg(short = 'g')]
    groups: bool,
    /// The entries table (compact form).
    #[arg(short = 'e')]
    entries: bool,
    /// The locks table (compact form).
    #[arg(short = 'l')]
    locks: bool,
    /// The table (groups, entries or locks; default entries), then in the
    /// compact form +LETTERS, NAME=VALUE filters and sort KEYS.
    #[arg(value_name = "TABLE|WORD")]
    words: Vec<String>,
    /// The columns, comma-separated, in order.
    #[arg(long, value_name = "COL,...")]
    columns: Vec<String>,
    /// Keep rows where NAME=VALUE (also !=, <, >); repeat to combine.
    #[arg(long, value_name = "NAME=VALUE")]
    filter: Vec<String>,
    /// Sort by these columns, comma-separated; -COL sorts descending.
    #[arg(long, value_name = "[-]COL,...", allow_hyphen_values = true)]
    sort: Vec<String>,
    /// Leave out the header line.
    #[arg(long)]
    no_header: bool,
    /// tsv: tab-separated values (for scripts).
    #[arg(short = 'o', long = "output", value_name = "FORMAT", value_parser = ["table", "tsv"])]
    output: Option<String>,
    /// A list of objects, one per row, with the chosen columns as keys.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum ClusterCmd {
    /// Validate FILE as a reread would, store it as the shared cltab and
    /// print its new revision; every node applies it.
    Push {
        /// The cltab file to store.
        file: PathBuf,
        /// Store it only if the stored cltab is still at revision REV (0:
        /// none stored yet); else exit 16 (COLLISION).
        #[arg(long, value_name = "REV")]
        expect: Option<i64>,
    },
    /// Print the shared cltab.
    Pull {
        /// {"rev":..,"cltab":..}
        #[arg(long)]
        json: bool,
    },
    /// Every node (alive or gone, since when) and its groups, and every
    /// exclusive group (goal, owner, fencing token), from etcd.
    Status {
        /// {"nodes": [...], "exclusive": [...]}.
        #[arg(long)]
        json: bool,
    },
    /// Move an exclusive group: its owner stops it gracefully and
    /// releases it, then NODE (default: the next eligible node) starts it.
    /// Waits until another node owns it.
    Move {
        /// The exclusive group.
        group: String,
        /// The node to move it to [default: the next eligible node].
        node: Option<String>,
        /// Give up waiting after SECS seconds (exit 6).
        #[arg(long, value_name = "SECS", default_value_t = 120.0, value_parser = non_negative)]
        timeout: f64,
    },
}

#[derive(Subcommand, Debug)]
enum RecordCmd {
    /// Add a record (fails with EXISTS if the key is there); prints its signature.
    Add {
        /// The container: a namespace of records.
        container: String,
        /// The record's key in its container.
        key: String,
        /// The value, or - to read it from standard input.
        value: String,
        /// Write only while holding lock LOCK with fencing token TOKEN
        /// (`--fence vol:$CLINIT_LOCK_TOKEN` in a `clinit lock vol` command,
        /// `--fence group:web:$CLINIT_FENCE_TOKEN` in an exclusive group):
        /// refused (exit 21, STALE_TOKEN) if the store has seen a newer
        /// token for LOCK.
        #[arg(long, value_name = "LOCK:TOKEN", value_parser = parse_fence)]
        fence: Option<clinit::proto::Fence>,
        /// Print JSON: {container, key, value, sig} (a list for list).
        #[arg(long)]
        json: bool,
    },
    /// Print a record's value (and signature with --json).
    ///
    /// The value is followed by a newline unless it ends with one; --raw
    /// prints exactly its bytes.
    Get {
        /// The container: a namespace of records.
        container: String,
        /// The record's key in its container.
        key: String,
        /// Print the value's bytes exactly, with no newline added.
        #[arg(long, conflicts_with = "json")]
        raw: bool,
        /// Print JSON: {container, key, value, sig} (a list for list).
        #[arg(long)]
        json: bool,
    },
    /// Replace a record's value if its signature is still SIG; prints the new one.
    Modify {
        /// The container: a namespace of records.
        container: String,
        /// The record's key in its container.
        key: String,
        /// The new value, or - to read it from standard input.
        value: String,
        /// The signature the record must still have (as `record get
        /// --json` or the last add/modify printed it; decimal or 0x hex).
        #[arg(long, value_parser = parse_sig)]
        sig: u64,
        /// Write only while holding lock LOCK with fencing token TOKEN
        /// (`--fence vol:$CLINIT_LOCK_TOKEN` in a `clinit lock vol` command,
        /// `--fence group:web:$CLINIT_FENCE_TOKEN` in an exclusive group):
        /// refused (exit 21, STALE_TOKEN) if the store has seen a newer
        /// token for LOCK.
        #[arg(long, value_name = "LOCK:TOKEN", value_parser = parse_fence)]
        fence: Option<clinit::proto::Fence>,
        /// Print JSON: {container, key, value, sig} (a list for list).
        #[arg(long)]
        json: bool,
    },
    /// Delete a record if its signature is still SIG (0 or absent: whatever it is).
    Delete {
        /// The container: a namespace of records.
        container: String,
        /// The record's key in its container.
        key: String,
        /// The signature the record must still have (decimal or 0x hex;
        /// 0: whatever it is).
        #[arg(long, default_value_t = 0, value_parser = parse_sig)]
        sig: u64,
        /// Write only while holding lock LOCK with fencing token TOKEN
        /// (`--fence vol:$CLINIT_LOCK_TOKEN` in a `clinit lock vol` command,
        /// `--fence group:web:$CLINIT_FENCE_TOKEN` in an exclusive group):
        /// refused (exit 21, STALE_TOKEN) if the store has seen a newer
        /// token for LOCK.
        #[arg(long, value_name = "LOCK:TOKEN", value_parser = parse_fence)]
        fence: Option<clinit::proto::Fence>,
        /// Print JSON: {container, key, value, sig} (a list for list).
        #[arg(long)]
        json: bool,
    },
    /// List a container's records: KEY SIG VALUE per line.
    List {
        /// The container: a namespace of records.
        container: String,
        /// Print JSON: {container, key, value, sig} (a list for list).
        #[arg(long)]
        json: bool,
    },
}

fn parse_fence(s: &str) -> Result<clinit::proto::Fence, String> {
    let (lock, token) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("expected LOCK:TOKEN, not '{s}'"))?;
    let token = token
        .parse::<u64>()
        .map_err(|_| format!("the token of '{s}' is not a whole number"))?;
    Ok(clinit::proto::Fence {
        lock: lock.to_string(),
        token,
    })
}

fn parse_state(s: &str) -> Result<GroupState, String> {
    GroupState::parse(s).ok_or_else(|| format!("unknown state '{s}'"))
}

fn fail(msg: impl std::fmt::Display, code: i32) -> ExitCode {
    eprintln!("clinit: {msg}");
    ExitCode::from(code as u8)
}

/// The daemon flags of `clinit [FLAGS] daemon [FLAGS]`, `clinit -d FLAGS`
/// and `clinit [FLAGS] lockd [--state-dir DIR]`: flags given before the
/// subcommand count as well as those after it (a state dir after it wins).
fn daemon_args(cli: &Cli) -> DaemonArgs {
    let top = cli.daemon_args.clone();
    match &cli.cmd {
        Some(Cmd::Daemon(d)) => DaemonArgs {
            state_dir: d.state_dir.clone().or(top.state_dir),
            no_restore: d.no_restore || top.no_restore,
            noauth: d.noauth || top.noauth,
            listen: d.listen.clone().or(top.listen),
            set: top.set.iter().chain(&d.set).cloned().collect(),
        },
        Some(Cmd::Lockd { state_dir, .. }) => DaemonArgs {
            state_dir: state_dir.clone().or(top.state_dir),
            ..top
        },
        _ => top,
    }
}

/// The paths, and whether the local cltab (or `--etcd`) puts this node in
/// cluster mode: one read of the cltab's settings for both.
fn paths(cli: &Cli) -> (CliPaths, Paths, bool) {
    let state = daemon_args(cli).state_dir;
    let cp = CliPaths {
        cltab: cli.cltab.clone(),
        socket: cli.socket.clone(),
        state,
    };
    let settings = cltab::file_settings(&cp.cltab());
    let p = Paths::resolve(&cp, &settings);
    let cluster = cli.etcd.is_some() || settings.etcd.is_some();
    (cp, p, cluster)
}

fn print_status(groups: &[GroupStatus]) {
    for g in groups {
        println!(
            "{} {} {}{}{}",
            g.group,
            g.level.as_deref().filter(|l| !l.is_empty()).unwrap_or("-"),
            g.state.as_str(),
            match g.gave_up {
                0 => String::new(),
                n => format!(" ({n} gave up)"),
            },
            match (&g.owner, g.token) {
                (Some(o), Some(t)) => format!(" owner {o} token {t}"),
                _ => String::new(),
            }
        );
    }
}

/// Send one request and print the daemon's reply text, if any.
fn call(t: &Target, req: Request) -> Result<(), ClientError> {
    if let Reply::Message { text } = Client::open(t)?.request(req)? {
        println!("{text}");
    }
    Ok(())
}

fn status(
    t: &Target,
    group: Option<String>,
    json: bool,
    long: bool,
    cluster: bool,
) -> Result<(), ClientError> {
    let mut c = Client::open(t)?;
    let whole = group.is_none();
    let groups = c.status_all(group, !(json || long))?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&groups).expect("serializable")
        );
    } else if long {
        print_long(&groups);
    } else {
        print_status(&groups);
    }
    // In cluster mode, the whole status ends with how the node stands.
    if cluster
        && whole
        && !json
        && let Reply::Node { cluster: Some(v) } = c.request(Request::Node)?
    {
        let since = clinit::schedule::ctime(v.since);
        let etcd = if v.connected {
            format!("etcd {} connected since {since}", v.endpoints)
        } else if v.since == 0 {
            format!("etcd {} NOT REACHED yet", v.endpoints)
        } else {
            format!("etcd {} UNREACHABLE since {since}", v.endpoints)
        };
        let mut line = format!(
            "# cluster {}, node {}: {etcd}; shared cltab revision {}",
            v.cluster, v.node, v.cltab_rev
        );
        if let Some((rev, _)) = &v.rejected {
            line.push_str(&format!(" (revision {rev} refused: see the log)"));
        }
        println!("{line}");
    }
    Ok(())
}

/// `bos status -long`, one block per entry, after the group lines.
fn print_long(groups: &[GroupStatus]) {
    print_status(groups);
    for g in groups {
        for e in &g.entries {
            println!();
            print!("{}", long_entry(&g.group, e));
        }
    }
}

fn long_entry(group: &str, e: &EntryStatus) -> String {
    let mut words: Vec<String> = Vec::new();
    if let Some(goal) = &e.goal {
        words.push(goal.clone());
    }
    if e.gave_up {
        words.push("stopped for too many errors".into());
    }
    words.push(
        match e.state.as_str() {
            "running" | "scheduled" => "currently running normally",
            "starting" => "currently starting up",
            "stopping" => "currently shutting down",
            "throttled" => "currently waiting to restart (throttled)",
            _ => "currently shutdown",
        }
        .into(),
    );
    let mut out = format!(
        "Instance {}, (group {group}, mode {}) {}.\n",
        e.tag,
        e.mode,
        words.join(", ")
    );
    if let Some(next) = e.next_run {
        out += &format!("    Auxiliary status is: run next at {}.\n", ctime(next));
    }
    if let Some(until) = e.throttled_until {
        out += &format!("    Auxiliary status is: next start at {}.\n", ctime(until));
    }
    if let Some(t) = e.last_start {
        out += &format!(
            "    Process last started at {} ({} proc starts)\n",
            ctime(t),
            e.starts
        );
    }
    if let Some(t) = e.last_exit_at {
        out += &format!("    Last exit at {}\n", ctime(t));
    }
    if let (Some(t), Some(st)) = (e.last_error_at, e.last_error) {
        let how = match st {
            clinit::supervisor::machine::ExitStatus::Code(c) => format!("by exiting with code {c}"),
            clinit::supervisor::machine::ExitStatus::Signal(s) => format!("due to signal {s}"),
        };
        out += &format!("    Last error exit at {}, {how}\n", ctime(t));
    }
    out += &format!("    Command 1 is '{}'\n", e.command);
    if let Some(s) = &e.schedule {
        out += &format!("    Command 2 is '{s}'\n");
    }
    if let Some(n) = &e.notifier {
        out += &format!("    Notifier  is '{n}'\n");
    }
    out
}

fn wait(
    t: &Target,
    group: &str,
    level: &Option<String>,
    state: Option<GroupState>,
    timeout: f64,
) -> Result<(), ClientError> {
    let timeout = std::time::Duration::from_secs_f64(timeout.clamp(0.0, 86_400.0));
    let mut c = Client::open(t)?;
    c.set_timeout(timeout + std::time::Duration::from_secs(5));
    let reply = c.request(Request::Wait {
        group: group.to_string(),
        level: level.clone(),
        state,
        timeout_ms: timeout.as_millis() as u64,
    })?;
    if let Reply::Status { groups, .. } = reply {
        print_status(&groups);
        // Settled, but failed: not what a script waiting for it wants.
        if state != Some(GroupState::Failed)
            && let Some(g) = groups.iter().find(|g| g.state == GroupState::Failed)
        {
            return Err(ClientError::Daemon(clinit::proto::ErrorReply {
                code: clinit::proto::ErrorCode::GroupFailed,
                message: format!(
                    "group {} settled in FAILED at level {}; `clinit explain {}` says why",
                    g.group,
                    g.level.as_deref().unwrap_or("-"),
                    g.group
                ),
            }));
        }
    }
    Ok(())
}

/// `clinit lock NAME cmd args` without `--`: the fix, spelled out.
fn lock_tip(e: &clap::Error, argv: Vec<String>) -> Option<String> {
    use clap::error::ErrorKind;
    if !matches!(
        e.kind(),
        ErrorKind::UnknownArgument | ErrorKind::MissingRequiredArgument
    ) || argv.iter().any(|a| a == "--")
    {
        return None;
    }
    let at = argv.iter().position(|a| a == "lock")?;
    // NAME is the first word after the options; the command is the rest.
    let mut i = at + 1;
    while i < argv.len() && argv[i].starts_with('-') {
        let takes_value = matches!(
            argv[i].as_str(),
            "--timeout" | "--ttl" | "-c" | "--cltab" | "-s" | "--socket" | "-H" | "--host"
        );
        i += if takes_value { 2 } else { 1 };
    }
    if i + 1 >= argv.len() {
        return None;
    }
    let mut fixed = vec!["clinit"];
    fixed.extend(argv[1..=i].iter().map(String::as_str));
    fixed.push("--");
    fixed.extend(argv[i + 1..].iter().map(String::as_str));
    Some(format!(
        "tip: put `--` between the lock's name and the command: {}",
        fixed.join(" ")
    ))
}

/// A record signature: decimal, or hexadecimal after `0x`.
fn parse_sig(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let r = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(&hex.replace('_', ""), 16),
        None => t.parse::<u64>(),
    };
    r.map_err(|_| format!("{s:?} is not a signature (a decimal number, or hex after 0x)"))
}

/// A number of seconds or minutes: finite and not negative (NaN and
/// infinity would make no duration).
fn non_negative(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x.is_finite() && x >= 0.0 => Ok(x),
        Ok(_) => Err(format!("{s} is not a finite number of 0 or more")),
        Err(e) => Err(format!("{s:?} is not a number: {e}")),
    }
}

/// IDLE (minutes) from /etc/default/clinit-lockd, as dsvclockd reads its
/// defaults file; 15 when absent.
fn default_idle() -> f64 {
    std::fs::read_to_string("/etc/default/clinit-lockd")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                let v = l.trim().strip_prefix("IDLE=")?;
                v.trim_matches(|c| c == '"' || c == '\'')
                    .parse::<f64>()
                    .ok()
            })
        })
        .filter(|m| m.is_finite() && *m >= 0.0)
        .unwrap_or(15.0)
}

fn record_json(r: &clinit::proto::RecordWire) -> serde_json::Value {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(&r.value_b64)
        .unwrap_or_default();
    match String::from_utf8(bytes) {
        Ok(v) => serde_json::json!({"key": r.key, "value": v, "sig": r.sig}),
        Err(_) => {
            serde_json::json!({"key": r.key, "value": null, "value_base64": r.value_b64, "sig": r.sig})
        }
    }
}

/// A key or value on one line of `record list`: `\\`, `\n`, `\r`, `\t`,
/// and `\xNN` for other control bytes and bytes that are not UTF-8 (and,
/// in a key, for a space, so that the line splits on its first two).
fn escape_bytes(bytes: &[u8], key: bool) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                ' ' if key => out.push_str("\\x20"),
                c if c.is_control() && (c as u32) < 0x100 => {
                    out.push_str(&format!("\\x{:02x}", c as u32))
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

fn record(t: &Target, cmd: &RecordCmd) -> Result<(), ClientError> {
    use base64::Engine;
    use clinit::proto::RecordOp;
    use std::io::{Read, Write};
    let b64 = |v: &str| -> String {
        let bytes = if v == "-" {
            let mut buf = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut buf);
            buf
        } else {
            v.as_bytes().to_vec()
        };
        base64::engine::general_purpose::STANDARD.encode(bytes)
    };
    let (op, json) = match cmd {
        RecordCmd::Add {
            container,
            key,
            value,
            json,
            fence,
        } => (
            RecordOp::Add {
                container: container.clone(),
                key: key.clone(),
                value_b64: b64(value),
                fence: fence.clone(),
            },
            *json,
        ),
        RecordCmd::Get {
            container,
            key,
            json,
            ..
        } => (
            RecordOp::Get {
                container: container.clone(),
                key: key.clone(),
            },
            *json,
        ),
        RecordCmd::Modify {
            container,
            key,
            value,
            sig,
            json,
            fence,
        } => (
            RecordOp::Modify {
                container: container.clone(),
                key: key.clone(),
                value_b64: b64(value),
                sig: *sig,
                fence: fence.clone(),
            },
            *json,
        ),
        RecordCmd::Delete {
            container,
            key,
            sig,
            json,
            fence,
        } => (
            RecordOp::Delete {
                container: container.clone(),
                key: key.clone(),
                sig: *sig,
                fence: fence.clone(),
            },
            *json,
        ),
        RecordCmd::List { container, json } => (
            RecordOp::List {
                container: container.clone(),
            },
            *json,
        ),
    };
    let key = match &op {
        RecordOp::Add { key, .. }
        | RecordOp::Get { key, .. }
        | RecordOp::Modify { key, .. }
        | RecordOp::Delete { key, .. } => key.clone(),
        RecordOp::List { .. } => String::new(),
    };
    let reply = Client::open(t)?.request(Request::Record(op))?;
    match reply {
        Reply::Signature { sig } if json => {
            println!("{}", serde_json::json!({"key": key, "sig": sig}))
        }
        Reply::Signature { sig } => println!("{sig}"),
        Reply::Record { record } if json => println!("{}", record_json(&record)),
        Reply::Record { record } => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(&record.value_b64)
                .unwrap_or_default();
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(&bytes);
            let raw = matches!(cmd, RecordCmd::Get { raw: true, .. });
            if !raw && !bytes.ends_with(b"\n") {
                let _ = out.write_all(b"\n");
            }
        }
        Reply::Records { records } if json => {
            let v: Vec<_> = records.iter().map(record_json).collect();
            println!("{}", serde_json::Value::Array(v));
        }
        Reply::Records { records } => {
            use std::io::IsTerminal;
            for r in &records {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(&r.value_b64)
                    .unwrap_or_default();
                println!(
                    "{} {} {}",
                    escape_bytes(r.key.as_bytes(), true),
                    r.sig,
                    escape_bytes(&bytes, false)
                );
            }
            if records.is_empty() && std::io::stdout().is_terminal() {
                let container = match cmd {
                    RecordCmd::List { container, .. } => container.as_str(),
                    _ => "",
                };
                eprintln!("clinit: no records in container {container:?}");
            }
        }
        Reply::Ok if json => println!("{}", serde_json::json!({"key": key, "deleted": true})),
        _ => {}
    }
    Ok(())
}

fn locks(t: &Target, name: Option<String>, json: bool) -> Result<(), ClientError> {
    let containers = all_locks(&mut Client::open(t)?, name)?;
    print_locks(&containers, json);
    Ok(())
}

/// Every page of the locks view.
fn all_locks(
    c: &mut Client,
    name: Option<String>,
) -> Result<Vec<clinit::lock::ContainerStatus>, ClientError> {
    let mut containers = Vec::new();
    let mut after = None;
    loop {
        match c.request(Request::Locks {
            name: name.clone(),
            after: after.take(),
        })? {
            Reply::Locks {
                containers: page,
                more,
            } => {
                containers.extend(page);
                match more {
                    Some(m) => after = Some(m),
                    None => break,
                }
            }
            Reply::Error(e) => return Err(ClientError::Daemon(e)),
            _ => break,
        }
    }
    Ok(containers)
}

fn print_locks(containers: &[clinit::lock::ContainerStatus], json: bool) {
    {
        if json {
            println!(
                "{}",
                serde_json::to_string_pretty(&containers).expect("serializable")
            );
            return;
        }
        // "on host pid 12 uid 0 what", with "-" for what the daemon does
        // not know (the host is the node in cluster mode).
        let who = |i: &clinit::lock::HolderInfo| {
            let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
            format!(
                "on {} pid {} uid {} {}",
                i.host,
                or_dash(i.pid.map(|p| p.to_string())),
                or_dash(i.uid.map(|u| u.to_string())),
                i.what
            )
        };
        for c in containers {
            println!("{}", c.name);
            for h in &c.holders {
                println!(
                    "    held {} token {} since {} {}",
                    h.mode.as_str(),
                    h.token,
                    ctime(h.since),
                    who(&h.info)
                );
            }
            for w in &c.waiters {
                println!(
                    "    waits {} since {} {}",
                    w.mode.as_str(),
                    ctime(w.since),
                    who(&w.info)
                );
            }
        }
    }
}

/// `clinit survey`: rows from the status or the locks view, filtered,
/// sorted, with the chosen columns.
fn survey(t: &Target, a: &SurveyArgs) -> Result<(), ClientError> {
    use clinit::survey::{Query, Table};
    let usage = |e: clinit::survey::SurveyError| ClientError::Usage(e.to_string());
    let flag = match (a.groups, a.entries, a.locks) {
        (true, false, false) => Some(Table::Groups),
        (false, true, false) => Some(Table::Entries),
        (false, false, true) => Some(Table::Locks),
        (false, false, false) => None,
        _ => {
            return Err(ClientError::Usage(
                "survey: give one of -g, -e and -l".into(),
            ));
        }
    };
    let mut words = a.words.clone();
    let named = match words.first().map(|w| Table::parse(w)) {
        Some(Some(t)) => {
            words.remove(0);
            Some(t)
        }
        _ => None,
    };
    let table = match (flag, named) {
        (Some(f), Some(n)) if f != n => {
            return Err(usage(clinit::survey::SurveyError::TwoTables(
                f.name(),
                n.name(),
            )));
        }
        (Some(t), _) | (None, Some(t)) => t,
        (None, None) => match words.first() {
            Some(w) if !w.starts_with('+') && !w.contains(['=', '<', '>', ':']) => {
                return Err(usage(clinit::survey::SurveyError::NoTable(w.clone())));
            }
            _ => Table::Entries,
        },
    };
    let compact = !words.is_empty();
    let q = if compact {
        if !(a.columns.is_empty() && a.filter.is_empty() && a.sort.is_empty()) {
            return Err(ClientError::Usage(
                "survey: use either the compact words (+COLUMNS NAME=VALUE KEYS) or --columns/--filter/--sort".into(),
            ));
        }
        Query::compact(table, &words)
    } else {
        Query::named(table, &a.columns, &a.filter, &a.sort)
    }
    .map_err(usage)?;
    // The daemon makes the rows, page by page.
    let rows = Client::open(t)?.survey(&q)?;
    let empty = rows.is_empty();
    let out = if a.json {
        let mut text = serde_json::to_string_pretty(&q.as_objects(rows)).expect("serializable");
        text.push('\n');
        text
    } else if a.output.as_deref() == Some("tsv") {
        clinit::survey::render_tsv(&q.columns, &rows, a.no_header)
    } else {
        clinit::survey::render_table(&q.columns, &rows, a.no_header)
    };
    print!("{out}");
    if empty && std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        eprintln!("clinit: survey {}: no rows", table.name());
    }
    Ok(())
}

/// Where `clinit events` writes: stdout, flushed before the client waits;
/// a closed pipe (`clinit events -f | head`) ends it quietly.
struct Out(std::io::BufWriter<std::io::Stdout>);

impl Out {
    fn line(&mut self, text: &str) -> Result<(), ExitCode> {
        use std::io::Write;
        writeln!(self.0, "{text}").map_err(|_| ExitCode::SUCCESS)
    }

    /// One line of bytes as they came.
    fn bytes(&mut self, line: &[u8]) -> std::io::Result<()> {
        use std::io::Write;
        self.0.write_all(line)?;
        self.0.write_all(b"\n")
    }

    fn flush(&mut self) -> Result<(), ExitCode> {
        use std::io::Write;
        self.0.flush().map_err(|_| ExitCode::SUCCESS)
    }
}

/// An event's time for people: local, to the millisecond.
fn event_time(t: f64) -> String {
    let secs = t.floor();
    match chrono::DateTime::from_timestamp(secs as i64, ((t - secs) * 1e9) as u32) {
        Some(dt) => dt
            .with_timezone(&chrono::Local)
            .format("%Y-%m-%d %H:%M:%S%.3f")
            .to_string(),
        None => t.to_string(),
    }
}

/// The event object of an event frame written as the daemon writes them,
/// `{"id":N,"kind":"event","event":{...}}`, without decoding it.
fn event_json(body: &[u8]) -> Option<&[u8]> {
    let rest = body.strip_prefix(b"{\"id\":")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    rest[digits..]
        .strip_prefix(b",\"kind\":\"event\",\"event\":")?
        .strip_suffix(b"}")
}

/// The `seq` of an event object that starts `{"seq":N,` (as the daemon
/// writes them).
fn seq_of(event: &[u8]) -> Option<u64> {
    let rest = event.strip_prefix(b"{\"seq\":")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
}

/// `clinit events`: print the stream until its end (or forever).
fn events(
    t: &Target,
    since: Option<u64>,
    last: Option<u64>,
    group: Option<String>,
    follow: bool,
    json: bool,
) -> Result<(), ExitCode> {
    use clinit::proto::ResponseFrame;
    let fail_client = |e: ClientError| fail(&e, e.exit_code());
    let mut c = Client::open(t).map_err(fail_client)?;
    if follow {
        // No reply timeout while following: events come when they come.
        c.set_timeout(std::time::Duration::from_secs(100 * 365 * 86_400));
    }
    // Events are not replies to wait for: never busy-wait for them.
    c.set_spin(std::time::Duration::ZERO);
    c.send(Request::Events {
        since,
        last,
        group,
        follow,
    })
    .map_err(fail_client)?;
    let mut out = Out(std::io::BufWriter::with_capacity(
        1 << 16,
        std::io::stdout(),
    ));
    let mut seen: Option<u64> = since;
    loop {
        if !c.has_frame() {
            out.flush()?;
        }
        // The common frame (an event, as JSON) passes through undecoded.
        enum Frame {
            Passed(Option<u64>),
            Reply(Reply),
            Bad(String),
        }
        let frame = c.recv_raw(|body| match (json, event_json(body)) {
            (true, Some(ev)) => match out.bytes(ev) {
                Ok(()) => Frame::Passed(seq_of(ev)),
                Err(_) => Frame::Bad(String::new()),
            },
            _ => match serde_json::from_slice::<ResponseFrame>(body) {
                Ok(f) => Frame::Reply(f.reply),
                Err(e) => Frame::Bad(e.to_string()),
            },
        });
        let reply = match frame {
            Ok(Frame::Passed(seq)) => {
                seen = seq.or(seen);
                continue;
            }
            Ok(Frame::Reply(r)) => r,
            // Stdout closed (`| head`).
            Ok(Frame::Bad(e)) if e.is_empty() => return Err(ExitCode::SUCCESS),
            Ok(Frame::Bad(e)) => return Err(fail(format!("bad frame from the daemon: {e}"), 7)),
            Err(e) => {
                out.flush()?;
                let resume = seen
                    .map(|s| format!("; resume with --since {s}"))
                    .unwrap_or_default();
                return Err(fail(
                    format!("{e}: the event stream ended before its end{resume}"),
                    e.exit_code(),
                ));
            }
        };
        match reply {
            Reply::Subscribed { .. } => {}
            Reply::Event { event } => {
                seen = Some(event.seq);
                if json {
                    out.line(event.json())?;
                } else {
                    let line = format!(
                        "{} {} {}",
                        event.seq,
                        event_time(event.time),
                        event.kind.describe()
                    );
                    out.line(&line)?;
                }
            }
            Reply::Gap { since, first } => {
                let line = if json {
                    serde_json::json!({"kind": "gap", "since": since, "first": first}).to_string()
                } else if since >= first {
                    format!(
                        "--- gap: there is no event {} in this run of the daemon (numbers start at 1 in each run; --since {since} comes from an earlier run); continuing at {first}",
                        since + 1
                    )
                } else {
                    format!(
                        "--- gap: events {}..{} are no longer kept by the daemon (see events_keep); continuing at {first}",
                        since + 1,
                        first.saturating_sub(1)
                    )
                };
                out.line(&line)?;
            }
            Reply::EventsEnd { .. } => {
                out.flush()?;
                return Ok(());
            }
            Reply::Error(e) => {
                out.flush()?;
                let code = e.code.exit_code();
                return Err(fail(e.message, code));
            }
            other => return Err(fail(format!("unexpected reply {other:?}"), 7)),
        }
    }
}

/// `clinit explain NAME`.
fn explain(t: &Target, name: &str, json: bool) -> Result<(), ClientError> {
    let reply = Client::open(t)?.request(Request::Explain {
        name: name.to_string(),
    })?;
    if let Reply::Explain { explanations } = reply {
        if json {
            println!(
                "{}",
                serde_json::to_string_pretty(&explanations).expect("serializable")
            );
            return Ok(());
        }
        let now = clinit::supervisor::unix_now();
        for (i, x) in explanations.iter().enumerate() {
            if i > 0 {
                println!();
            }
            match x.subject.as_str() {
                "entry" => println!("entry {} (group {}):", x.name, x.group),
                _ => println!("group {}:", x.name),
            }
            for s in x.sentences(now) {
                println!("  {s}");
            }
        }
    }
    Ok(())
}

fn null(t: &Target) -> Result<(), ClientError> {
    let start = std::time::Instant::now();
    let mut c = Client::open(t)?;
    let reply = c.request(Request::Null)?;
    let rtt = start.elapsed();
    if let Reply::Alive {
        version,
        pid,
        uptime,
        maintenance,
    } = reply
    {
        println!(
            "alive: clinit {version}, pid {pid}, up {}, round trip {:.3} ms{}",
            clinit::survey::duration_text(uptime),
            rtt.as_secs_f64() * 1000.0,
            if maintenance {
                ", MAINTENANCE MODE"
            } else {
                ""
            }
        );
    }
    Ok(())
}

fn params(t: &Target, name: Option<&String>, json: bool) -> Result<(), ClientError> {
    let reply = Client::open(t)?.request(Request::Params {
        name: name.cloned(),
    })?;
    let Reply::Params { params } = reply else {
        return Ok(());
    };
    match (name, json) {
        (Some(_), true) => println!(
            "{}",
            serde_json::to_string_pretty(&params[0]).expect("serializable")
        ),
        (Some(_), false) => println!("{}", params[0].value),
        (None, true) => println!(
            "{}",
            serde_json::to_string_pretty(&params).expect("serializable")
        ),
        (None, false) => {
            let w = params.iter().map(|p| p.name.len()).max().unwrap_or(4);
            let v = params
                .iter()
                .map(|p| shown(&p.value).len())
                .max()
                .unwrap_or(5)
                .min(40);
            println!(
                "{:w$}  {:v$}  {:12}  {:4}  WHAT IT DOES",
                "NAME", "VALUE", "SOURCE", "LIVE"
            );
            for p in &params {
                println!(
                    "{:w$}  {:v$}  {:12}  {:4}  {}",
                    p.name,
                    shown(&p.value),
                    p.source.as_str(),
                    if p.live { "yes" } else { "no" },
                    p.help
                );
            }
        }
    }
    Ok(())
}

fn shown(v: &str) -> &str {
    if v.is_empty() { "-" } else { v }
}

fn setpar(
    t: &Target,
    name: &str,
    value: Option<String>,
    persist: bool,
    json: bool,
) -> Result<(), ClientError> {
    let reply = Client::open(t)?.request(Request::SetPar {
        name: name.to_string(),
        value,
        persist,
    })?;
    if let Reply::SetPar { previous, now } = reply {
        if json {
            println!(
                "{}",
                serde_json::json!({ "previous": previous, "now": now })
            );
        } else {
            // cdadm's habit: the previous value on standard output.
            println!("{}", shown(&previous.value));
            eprintln!(
                "clinit: {name} is now {} ({}), was {} ({})",
                shown(&now.value),
                now.source.as_str(),
                shown(&previous.value),
                previous.source.as_str()
            );
        }
    }
    Ok(())
}

fn lastwords(t: &Target) -> Result<(), ClientError> {
    if let Reply::LastWords { lines } = Client::open(t)?.request(Request::LastWords)? {
        for l in lines {
            println!("{l}");
        }
    }
    Ok(())
}

fn hostname() -> String {
    let h = clinit::config::hostname();
    match h.split('.').next() {
        Some(short) if !short.is_empty() => short.to_string(),
        _ => "localhost".into(),
    }
}

fn cluster_flags(cli: &Cli) -> clinit::cluster::ClusterFlags {
    clinit::cluster::ClusterFlags {
        etcd: cli.etcd.clone(),
        node: cli.node.clone(),
        cluster: cli.cluster.clone(),
    }
}

/// The cluster as the local cltab (and the flags) configure it.
fn cluster_config(
    cli: &Cli,
) -> Result<clinit::cluster::ClusterConfig, clinit::cluster::ClusterError> {
    let cltab = CliPaths {
        cltab: cli.cltab.clone(),
        ..Default::default()
    }
    .cltab();
    let settings = cltab::file_settings(&cltab);
    // `--node` names the node told, not this one, for a client.
    let flags = clinit::cluster::ClusterFlags {
        node: None,
        ..cluster_flags(cli)
    };
    clinit::cluster::ClusterConfig::require(&settings, &flags, &cltab)
}

/// Run a cluster client call on a runtime of its own, within `limit`
/// in all (past it: etcd is unreachable, naming its endpoints).
fn block_on<T>(
    cfg: &clinit::cluster::ClusterConfig,
    limit: std::time::Duration,
    f: impl std::future::Future<Output = Result<T, clinit::cluster::ClusterError>>,
) -> Result<T, clinit::cluster::ClusterError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(async {
            match tokio::time::timeout(limit, f).await {
                Ok(r) => r,
                Err(_) => Err(clinit::cluster::ClusterError::Unreachable {
                    endpoints: cfg.endpoints_text(),
                    err: format!("no answer within {} s", limit.as_secs()),
                }),
            }
        })
}

/// Who tells, for the goal's record: user@host.
fn teller() -> String {
    let uid = nix::unistd::getuid();
    let user = nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map_or_else(|| format!("uid {uid}"), |u| u.name);
    format!("{user}@{}", clinit::config::hostname())
}

#[derive(Debug)]
struct CmdError(String, i32);

impl std::fmt::Display for CmdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl CmdError {
    fn exit_code(&self) -> i32 {
        self.1
    }
}

impl From<clinit::cluster::ClusterError> for CmdError {
    fn from(e: clinit::cluster::ClusterError) -> CmdError {
        CmdError(e.to_string(), e.exit_code())
    }
}

fn remote_tell(cli: &Cli, node: &str, group: &str, level: &str) -> Result<(), CmdError> {
    let cfg = cluster_config(cli)?;
    let wait = std::time::Duration::from_secs(30);
    let text = block_on(
        &cfg,
        wait + clinit::cluster::CLIENT_DEADLINE,
        clinit::cluster::tell(&cfg, node, group, level, &teller(), wait),
    )?;
    println!("{text}");
    Ok(())
}

fn cluster_cmd(cli: &Cli, cmd: &ClusterCmd) -> ExitCode {
    let run = || -> Result<(), CmdError> {
        let cfg = cluster_config(cli)?;
        match cmd {
            ClusterCmd::Push { file, expect } => {
                let rev = block_on(
                    &cfg,
                    clinit::cluster::CLIENT_DEADLINE,
                    clinit::cluster::push(&cfg, file, *expect),
                )?;
                println!("{rev}");
            }
            ClusterCmd::Pull { json } => {
                let (text, rev) = block_on(
                    &cfg,
                    clinit::cluster::CLIENT_DEADLINE,
                    clinit::cluster::pull(&cfg),
                )?;
                if *json {
                    println!("{}", serde_json::json!({"rev": rev, "cltab": text}));
                } else {
                    print!("{text}");
                }
            }
            ClusterCmd::Status { json } => {
                let nodes = block_on(
                    &cfg,
                    clinit::cluster::CLIENT_DEADLINE,
                    clinit::cluster::status(&cfg),
                )?;
                let groups = block_on(
                    &cfg,
                    clinit::cluster::CLIENT_DEADLINE,
                    clinit::cluster::owners::groups_status(&cfg),
                )?;
                if *json {
                    println!("{}", serde_json::json!({"nodes": nodes, "groups": groups}));
                } else {
                    for n in &nodes {
                        let since = n.since.map(clinit::schedule::ctime).unwrap_or_default();
                        println!(
                            "node {} {} since {since}, cltab revision {}",
                            n.node,
                            if n.alive { "alive" } else { "GONE" },
                            n.cltab_rev
                        );
                        for g in &n.groups {
                            println!(
                                "  {} {} {}",
                                g.group,
                                g.level.as_deref().unwrap_or("-"),
                                g.state
                            );
                        }
                    }
                    for g in &groups {
                        println!(
                            "exclusive group {} goal {} owner {}{}{}",
                            g.group,
                            match g.goal.as_deref() {
                                None => "-",
                                Some("") => "none",
                                Some(l) => l,
                            },
                            g.owner.as_deref().unwrap_or("NONE"),
                            g.token.map(|t| format!(" token {t}")).unwrap_or_default(),
                            g.moving
                                .as_ref()
                                .map(|m| format!(
                                    ", moving to {}",
                                    m.to.as_deref().unwrap_or("the next eligible node")
                                ))
                                .unwrap_or_default()
                        );
                    }
                }
            }
            ClusterCmd::Move {
                group,
                node,
                timeout,
            } => {
                let wait = std::time::Duration::from_secs_f64(timeout.clamp(0.0, 86_400.0));
                let text = block_on(
                    &cfg,
                    wait + clinit::cluster::CLIENT_DEADLINE,
                    clinit::cluster::owners::move_group(
                        &cfg,
                        group,
                        node.as_deref(),
                        &teller(),
                        wait,
                    ),
                )?;
                println!("{text}");
            }
        }
        Ok(())
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e, e.exit_code()),
    }
}

/// The remote-administration flags of the daemon.
fn remote_flags(cli: &Cli, args: &DaemonArgs) -> clinit::daemon::RemoteFlags {
    clinit::daemon::RemoteFlags {
        listen: args.listen.clone(),
        tls_ca: cli.tls_ca.clone(),
        tls_cert: cli.tls_cert.clone(),
        tls_key: cli.tls_key.clone(),
        insecure_loopback: cli.insecure_loopback,
    }
}

/// Where client commands go: `--host` (TLS with the client's files, or
/// plain TCP with `--insecure-loopback`), else the local socket.
fn target(cli: &Cli, p: &Paths) -> Result<Target, ClientError> {
    use clinit::tls::{Files, TlsError};
    let Some(host) = cli.host.as_deref().filter(|h| !h.is_empty()) else {
        return Ok(Target::Unix(p.socket.clone()));
    };
    let (host, port) = clinit::tls::parse_host(host).map_err(ClientError::Usage)?;
    let dirs: Vec<Files> = Files::user().into_iter().chain([Files::system()]).collect();
    let ca = match &cli.tls_ca {
        Some(ca) => ca.clone(),
        None => dirs
            .iter()
            .map(|f| f.ca.clone())
            .find(|ca| ca.exists())
            .unwrap_or_else(|| dirs[0].ca.clone()),
    };
    if cli.insecure_loopback {
        return Ok(Target::Remote(clinit::client::Remote {
            host,
            port,
            tls: None,
            ca,
            no_cert: None,
        }));
    }
    if !ca.exists() && cli.tls_ca.is_none() {
        return Err(TlsError::Read {
            what: "CA certificate",
            path: ca,
            err: "no such file: give --tls-ca FILE, or put the CA's certificate at ~/.config/clinit/tls/ca.pem or /etc/clinit/tls/ca.pem".into(),
        }
        .into());
    }
    let (pair, no_cert) = match (&cli.tls_cert, &cli.tls_key) {
        (Some(c), Some(k)) => (Some((c.clone(), k.clone())), None),
        (Some(c), None) => {
            let k = c.with_file_name(clinit::tls::KEY_FILE);
            (Some((c.clone(), k)), None)
        }
        (None, Some(_)) => {
            return Err(ClientError::Usage("--tls-key needs --tls-cert".into()));
        }
        (None, None) => match dirs.iter().find(|f| f.cert.exists()) {
            Some(f) => (Some((f.cert.clone(), f.key.clone())), None),
            None => (
                None,
                Some(format!(
                    "no certificate of yours was found at {}: give --tls-cert FILE",
                    dirs.iter()
                        .map(|f| f.cert.display().to_string())
                        .collect::<Vec<_>>()
                        .join(" or ")
                )),
            ),
        },
    };
    let tls =
        clinit::tls::client_config(&ca, pair.as_ref().map(|(c, k)| (c.as_path(), k.as_path())))?;
    Ok(Target::Remote(clinit::client::Remote {
        host,
        port,
        tls: Some(tls),
        ca,
        no_cert,
    }))
}

fn ca_cmd(c: &CaCmd) -> ExitCode {
    match c {
        CaCmd::Init { dir, name, days } => {
            match clinit::tls::ca_init(dir, name.as_deref(), *days) {
                Ok(m) => {
                    println!(
                        "created CA {:?}: certificate {} (give it to every node and client), key {} (mode 0600: keep it secret, best off the nodes)",
                        m.name,
                        m.cert.display(),
                        m.key.display()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e, e.exit_code()),
            }
        }
    }
}

fn cert_cmd(c: &CertCmd) -> ExitCode {
    match c {
        CertCmd::Issue {
            ca,
            name,
            server,
            days,
            not_before,
            not_after,
            out,
            force,
        } => {
            let servers: Vec<String> = server
                .iter()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
            let issue = clinit::tls::Issue {
                ca_dir: ca,
                name,
                servers: &servers,
                days: *days,
                not_before: *not_before,
                not_after: *not_after,
                out,
                force: *force,
            };
            match clinit::tls::cert_issue(&issue) {
                Ok(files) => {
                    let kind = if servers.is_empty() {
                        format!("a user's certificate, identity {name}")
                    } else {
                        format!(
                            "a server's certificate for {}, identity {name}",
                            servers.join(", ")
                        )
                    };
                    println!(
                        "issued {kind}: {}",
                        files
                            .iter()
                            .map(|f| f.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e, e.exit_code()),
            }
        }
        CertCmd::Show { file } => match clinit::tls::cert_show(file) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e, e.exit_code()),
        },
    }
}

/// `clinit completions SHELL`.
fn completions(shell: &str) -> ExitCode {
    use clap::CommandFactory;
    use clap_complete::Shell;
    let sh = match shell {
        "zsh" => Shell::Zsh,
        "fish" => Shell::Fish,
        _ => Shell::Bash,
    };
    clap_complete::generate(sh, &mut Cli::command(), "clinit", &mut std::io::stdout());
    ExitCode::SUCCESS
}

/// `clinit man`: the manual page of every command, from the same
/// definitions as `--help`.
fn man() -> ExitCode {
    use clap::CommandFactory;
    let cmd = Cli::command();
    let mut out = Vec::new();
    let page = clap_mangen::Man::new(cmd.clone());
    if page.render(&mut out).is_err() {
        return fail("cannot render the manual page", 1);
    }
    // Each command's synopsis, description and options, after the main
    // page.
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("clinit {}", sub.get_name());
        out.extend_from_slice(format!(".SH \"{}\"\n", name.to_uppercase()).as_bytes());
        let page = clap_mangen::Man::new(sub.clone().name(name.clone()).bin_name(name));
        let _ = page.render_synopsis_section(&mut out);
        let _ = page.render_description_section(&mut out);
        let _ = page.render_options_section(&mut out);
        let _ = page.render_subcommands_section(&mut out);
    }
    use std::io::Write;
    let _ = std::io::stdout().write_all(&out);
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // A mistake on the command line ends with its code too;
            // --help and --version print as they are.
            if e.use_stderr() {
                let text = e.render().to_string();
                let (first, rest) = text.split_once('\n').unwrap_or((&text, ""));
                eprint!("{first} [USAGE]\n{rest}");
            } else {
                let _ = e.print();
            }
            if let Some(tip) = lock_tip(&e, std::env::args().collect()) {
                eprintln!("{tip}");
            }
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    if !matches!(
        (&cli.cmd, cli.daemon),
        (
            Some(Cmd::Daemon(_) | Cmd::Lockd { .. } | Cmd::Watchdog { .. }),
            _
        ) | (None, true)
    ) {
        // A client writing into a closed pipe (`clinit params | head`)
        // ends quietly, as other commands do, instead of panicking.
        // SAFETY: setting a signal's disposition before any thread starts.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    match &cli.cmd {
        Some(Cmd::Completions { shell }) => return completions(shell),
        Some(Cmd::Man) => return man(),
        _ => {}
    }
    let (cp, p, cluster) = paths(&cli);
    match &cli.cmd {
        Some(Cmd::Ca(c)) => return ca_cmd(c),
        Some(Cmd::Cert(c)) => return cert_cmd(c),
        _ => {}
    }
    // Where client commands go: the local socket, or --host.
    let t = match target(&cli, &p) {
        Ok(t) => t,
        Err(e) => return fail(&e, e.exit_code()),
    };
    let remote = matches!(t, Target::Remote(_));
    // A remote daemon's status ends with its node line when it has one.
    let cluster = cluster || remote;
    let run_daemon = |opts: clinit::daemon::Options| match clinit::daemon::run(&opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e.to_string(), e.exit_code()),
    };
    let result = match (&cli.cmd, cli.daemon, cli.kill) {
        // `paths` already took the state dir from `daemon_args`.
        (Some(Cmd::Daemon(_)), _, _) | (None, true, _) => {
            let args = daemon_args(&cli);
            return run_daemon(clinit::daemon::Options {
                paths: cp,
                no_restore: args.no_restore,
                noauth: args.noauth,
                lockd_idle: None,
                cluster: cluster_flags(&cli),
                remote: remote_flags(&cli, &args),
                set: args.set.clone(),
            });
        }
        (Some(Cmd::Lockd { idle, .. }), _, _) => {
            let minutes = idle.unwrap_or_else(default_idle).clamp(0.0, 1e6);
            return run_daemon(clinit::daemon::Options {
                paths: cp,
                no_restore: true,
                noauth: false,
                lockd_idle: Some(std::time::Duration::from_secs_f64(minutes * 60.0)),
                cluster: cluster_flags(&cli),
                remote: remote_flags(&cli, &daemon_args(&cli)),
                set: daemon_args(&cli).set,
            });
        }
        (Some(Cmd::Watchdog { device }), _, _) => {
            return ExitCode::from(clinit::cluster::watchdog::run(device.as_deref()) as u8);
        }
        (Some(Cmd::Shutdown), _, _) | (None, false, true) => call(&t, Request::Shutdown),
        (Some(Cmd::Ca(_) | Cmd::Cert(_) | Cmd::Completions { .. } | Cmd::Man), _, _) => {
            unreachable!("handled above")
        }
        (Some(Cmd::Tell { group, level }), _, _) if cli.node.is_some() => {
            return match remote_tell(&cli, cli.node.as_deref().unwrap_or_default(), group, level) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&e, e.exit_code()),
            };
        }
        (Some(Cmd::Cluster(cmd)), _, _) => return cluster_cmd(&cli, cmd),
        (Some(Cmd::Tell { group, level }), _, _) => call(
            &t,
            Request::Tell {
                group: group.clone(),
                level: level.clone(),
            },
        ),
        (Some(Cmd::Status { group, json, long }), _, _) => {
            status(&t, group.clone(), *json, *long, cluster)
        }
        (Some(Cmd::Stop { tag, temporary }), _, _) => call(
            &t,
            Request::Control {
                tag: tag.clone(),
                action: ControlAction::Stop,
                temporary: *temporary,
            },
        ),
        (Some(Cmd::Start { tag, temporary }), _, _) => call(
            &t,
            Request::Control {
                tag: tag.clone(),
                action: ControlAction::Start,
                temporary: *temporary,
            },
        ),
        (Some(Cmd::Restart { tag, group, all }), _, _) => {
            let req = match (tag, group, all) {
                (Some(tag), _, _) => Request::Control {
                    tag: tag.clone(),
                    action: ControlAction::Restart,
                    temporary: false,
                },
                (None, Some(g), _) => Request::RestartGroup {
                    group: Some(g.clone()),
                },
                _ => Request::RestartGroup { group: None },
            };
            call(&t, req)
        }
        (
            Some(Cmd::Create {
                group,
                tag,
                levels,
                mode,
                opts,
                command,
            }),
            _,
            _,
        ) => call(
            &t,
            Request::Create {
                group: group.clone(),
                tag: tag.clone(),
                levels: levels.clone(),
                mode: mode.clone(),
                options: opts.to_options(),
                command: command.join(" "),
            },
        ),
        (Some(Cmd::Delete { tag }), _, _) => call(&t, Request::Delete { tag: tag.clone() }),
        (
            Some(Cmd::Lock {
                shared,
                nowait,
                timeout,
                ttl,
                no_start,
                name,
                command,
            }),
            _,
            _,
        ) => {
            let secs = |s: f64| std::time::Duration::from_secs_f64(s.clamp(0.0, 1e9));
            let args = clinit::lockcmd::LockArgs {
                name,
                mode: if *shared {
                    clinit::lock::LockMode::Shared
                } else {
                    clinit::lock::LockMode::Exclusive
                },
                wait: !*nowait,
                timeout: timeout.map(secs),
                ttl: ttl.map(secs),
                // In cluster mode a lock is the cluster's: a standalone
                // `clinit lockd` would grant it on this machine alone.
                no_start: *no_start || cluster,
                command,
            };
            let code = clinit::lockcmd::run(&cp, &p, &t, &args);
            return ExitCode::from(code.clamp(0, 255) as u8);
        }
        (Some(Cmd::Locks { name, json }), _, _) => locks(&t, name.clone(), *json),
        (
            Some(Cmd::Events {
                follow,
                since,
                last,
                group,
                json,
            }),
            _,
            _,
        ) => {
            return match events(&t, *since, *last, group.clone(), *follow, *json) {
                Ok(()) => ExitCode::SUCCESS,
                Err(code) => code,
            };
        }
        (Some(Cmd::Explain { name, json }), _, _) => explain(&t, name, *json),
        (Some(Cmd::Null), _, _) => null(&t),
        (Some(Cmd::Survey(a)), _, _) => survey(&t, a),
        (Some(Cmd::Params { json }), _, _) => params(&t, None, *json),
        (Some(Cmd::Getpar { name, json }), _, _) => params(&t, Some(name), *json),
        (
            Some(Cmd::Setpar {
                name,
                value,
                persist,
                unset: _,
                json,
            }),
            _,
            _,
        ) => setpar(&t, name, value.clone(), *persist, *json),
        (Some(Cmd::Lastwords), _, _) => lastwords(&t),
        (Some(Cmd::Reopen), _, _) => call(&t, Request::Reopen),
        (Some(Cmd::Record(cmd)), _, _) => record(&t, cmd),
        (
            Some(Cmd::Wait {
                group,
                level,
                state,
                timeout,
            }),
            _,
            _,
        ) => wait(&t, group, level, *state, *timeout),
        (Some(Cmd::Reread), _, _) | (None, false, false) if cli.verbose => {
            return reread_then_status(&cli, &t, cluster);
        }
        (Some(Cmd::Reread), _, _) | (None, false, false) => call(&t, Request::Reread),
        (Some(Cmd::Compat(args)), _, _) => {
            let req = match args.as_slice() {
                [] => Request::Reread,
                [_] if remote => {
                    return fail(
                        "clinit --host HOST LEVEL: name the group (clinit --host HOST GROUP LEVEL); the group named after this host is not the remote one's",
                        2,
                    );
                }
                [level] => {
                    if let Some(cmd) = did_you_mean(level) {
                        return fail(
                            format!(
                                "'{level}' is no command: did you mean `{cmd}`? (to tell the group named after this host, `clinit tell {} {level}`) [USAGE]",
                                hostname()
                            ),
                            2,
                        );
                    }
                    eprintln!(
                        "clinit: telling group {} (this host) to go to level {level}",
                        hostname()
                    );
                    Request::Tell {
                        group: hostname(),
                        level: level.clone(),
                    }
                }
                [group, level] if cli.node.is_some() => {
                    let node = cli.node.clone().unwrap_or_default();
                    return match remote_tell(&cli, &node, group, level) {
                        Ok(()) => ExitCode::SUCCESS,
                        Err(e) => fail(&e, e.exit_code()),
                    };
                }
                [group, level] => {
                    let r = call(
                        &t,
                        Request::Tell {
                            group: group.clone(),
                            level: level.clone(),
                        },
                    );
                    // Not a group: perhaps a mistyped command.
                    if let Err(ClientError::Daemon(e)) = &r
                        && e.code == clinit::proto::ErrorCode::NoSuchGroup
                        && let Some(cmd) = did_you_mean(group)
                    {
                        return fail(
                            format!(
                                "'{group}' is neither a command nor a group of the cltab: did you mean `{cmd}`? [USAGE]"
                            ),
                            2,
                        );
                    }
                    return match r.and_then(|()| {
                        if cli.verbose {
                            status(&t, None, false, false, cluster)
                        } else {
                            Ok(())
                        }
                    }) {
                        Ok(()) => ExitCode::SUCCESS,
                        Err(e) => client_fail(&cli, &e),
                    };
                }
                _ => {
                    return fail(
                        "usage: clinit [-d] [-k] [-v] [-c cltab] [-s socket] [[group] level]",
                        2,
                    );
                }
            };
            call(&t, req)
        }
    };
    let result = result.and_then(|()| {
        if cli.verbose && !cli.kill {
            status(&t, None, false, false, cluster)
        } else {
            Ok(())
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => client_fail(&cli, &e),
    }
}

/// `clinit -v`, Cluster::Init's reread-then-status: the status is printed
/// even when the reread is refused to the caller (a note on standard
/// error, exit 0) or fails on a bad cltab (its errors first, then the
/// status, and the reread's exit status).
fn reread_then_status(cli: &Cli, t: &Target, cluster: bool) -> ExitCode {
    use clinit::proto::ErrorCode;
    let reread = call(t, Request::Reread);
    let failed = match &reread {
        Ok(()) => None,
        Err(ClientError::Daemon(e))
            if matches!(e.code, ErrorCode::Access | ErrorCode::Maintenance) =>
        {
            eprintln!(
                "clinit: the reread was not done ({} [{}]); the status as it is:",
                e.message,
                e.code.name()
            );
            None
        }
        Err(e @ ClientError::Daemon(d)) if d.code == ErrorCode::CltabInvalid => {
            Some(client_fail(cli, e))
        }
        Err(e) => return client_fail(cli, e),
    };
    match status(t, None, false, false, cluster) {
        Err(e) => client_fail(cli, &e),
        Ok(()) => failed.unwrap_or(ExitCode::SUCCESS),
    }
}

/// A client error: its message, a hint where one helps, and its stable
/// code in brackets; with `--json`, `{"error":{"code","message"}}` on
/// standard output instead. The exit status is the code's either way.
fn client_fail(cli: &Cli, e: &ClientError) -> ExitCode {
    let mut msg = e.to_string();
    if let ClientError::NoDaemon { .. } = e {
        match &cli.cltab {
            Some(f) if !f.exists() => msg.push_str(&format!(
                " (the cltab {} does not exist{})",
                f.display(),
                if cli.socket.is_some() {
                    ""
                } else {
                    ", so the default socket was tried"
                }
            )),
            _ => msg.push_str(&format!(
                "; start one with `clinit -c {} daemon`",
                cli.cltab
                    .as_deref()
                    .unwrap_or(std::path::Path::new(clinit::config::DEFAULT_CLTAB))
                    .display()
            )),
        }
    }
    if wants_json(cli) {
        println!(
            "{}",
            serde_json::json!({"error": {"code": e.code(), "message": msg}})
        );
        return ExitCode::from(e.exit_code() as u8);
    }
    fail(format!("{msg} [{}]", e.code()), e.exit_code())
}

/// Whether the command was asked for JSON output.
fn wants_json(cli: &Cli) -> bool {
    match &cli.cmd {
        Some(
            Cmd::Status { json, .. }
            | Cmd::Locks { json, .. }
            | Cmd::Events { json, .. }
            | Cmd::Explain { json, .. }
            | Cmd::Params { json }
            | Cmd::Getpar { json, .. }
            | Cmd::Setpar { json, .. },
        ) => *json,
        Some(Cmd::Survey(a)) => a.json,
        Some(Cmd::Record(
            RecordCmd::Add { json, .. }
            | RecordCmd::Get { json, .. }
            | RecordCmd::Modify { json, .. }
            | RecordCmd::Delete { json, .. }
            | RecordCmd::List { json, .. },
        )) => *json,
        _ => false,
    }
}

/// The subcommand a mistyped word was probably meant as (edit distance
/// at most 2, and less than half the word).
fn did_you_mean(word: &str) -> Option<String> {
    use clap::CommandFactory;
    // Edits (insert, delete, replace, swap two neighbours) from a to b.
    fn distance(a: &str, b: &str) -> usize {
        let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
        let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
        for (i, row) in d.iter_mut().enumerate() {
            row[0] = i;
        }
        for (j, cell) in d[0].iter_mut().enumerate() {
            *cell = j;
        }
        for i in 1..=a.len() {
            for j in 1..=b.len() {
                let cost = usize::from(a[i - 1] != b[j - 1]);
                d[i][j] = (d[i - 1][j] + 1)
                    .min(d[i][j - 1] + 1)
                    .min(d[i - 1][j - 1] + cost);
                if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                    d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
                }
            }
        }
        d[a.len()][b.len()]
    }
    Cli::command()
        .get_subcommands()
        .filter(|c| !c.is_hide_set())
        .flat_map(|c| {
            std::iter::once(c.get_name().to_string()).chain(c.get_all_aliases().map(str::to_string))
        })
        .map(|n| (distance(word, &n), n))
        .filter(|(d, n)| *d > 0 && *d <= 2 && *d * 2 < n.len().max(word.len()))
        .min()
        .map(|(_, n)| n)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Flags before the subcommand count as well as those after it.
    #[test]
    fn daemon_flags_before_and_after_the_subcommand() {
        let rows: &[(&[&str], Option<&str>, bool, bool)] = &[
            (
                &["clinit", "-d", "--state-dir", "/a", "--noauth"],
                Some("/a"),
                false,
                true,
            ),
            (
                &["clinit", "--state-dir", "/a", "daemon"],
                Some("/a"),
                false,
                false,
            ),
            (
                &["clinit", "--no-restore", "daemon", "--noauth"],
                None,
                true,
                true,
            ),
            (
                &["clinit", "--state-dir", "/a", "daemon", "--state-dir", "/b"],
                Some("/b"),
                false,
                false,
            ),
            (
                &["clinit", "--state-dir", "/a", "lockd"],
                Some("/a"),
                false,
                false,
            ),
            (
                &["clinit", "lockd", "--state-dir", "/b"],
                Some("/b"),
                false,
                false,
            ),
        ];
        for (argv, dir, no_restore, noauth) in rows {
            let cli = Cli::try_parse_from(*argv).unwrap();
            let a = daemon_args(&cli);
            assert_eq!(
                (a.state_dir.as_deref(), a.no_restore, a.noauth),
                (dir.map(std::path::Path::new), *no_restore, *noauth),
                "{argv:?}"
            );
        }
    }

    #[test]
    fn record_list_escapes_what_would_break_a_line() {
        let rows: &[(&[u8], bool, &str)] = &[
            (b"10.0.0.5", false, "10.0.0.5"),
            (b"a b", false, "a b"),
            (b"a b", true, "a\\x20b"),
            (b"line1\nline2\n", false, "line1\\nline2\\n"),
            (b"tab\there\r", false, "tab\\there\\r"),
            (b"back\\slash", false, "back\\\\slash"),
            (b"\x00\x1b[0m", false, "\\x00\\x1b[0m"),
            (b"\xff\xfe ok", false, "\\xff\\xfe ok"),
            ("caf\u{e9}".as_bytes(), false, "caf\u{e9}"),
            (b"", false, ""),
        ];
        for (bytes, key, want) in rows {
            assert_eq!(escape_bytes(bytes, *key), *want, "{bytes:?}");
        }
    }

    #[test]
    fn signatures_in_decimal_or_hex() {
        let rows: &[(&str, Option<u64>)] = &[
            ("0", Some(0)),
            ("281474976710657", Some(281474976710657)),
            ("0x1000000000001", Some(0x1000000000001)),
            ("0X00ff", Some(255)),
            ("0x0001_0000_0000_0001", Some(0x0001_0000_0000_0001)),
            ("ff", None),
            ("-1", None),
            ("0x", None),
            ("18446744073709551616", None),
        ];
        for (text, want) in rows {
            assert_eq!(parse_sig(text).ok(), *want, "{text}");
        }
    }

    /// Every argument and option of every command says what it is.
    #[test]
    fn every_argument_has_a_description() {
        use clap::CommandFactory;
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for a in cmd.get_arguments() {
                let id = a.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                if a.get_help().is_none() && a.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                if sub.get_about().is_none() && sub.get_long_about().is_none() {
                    missing.push(format!("{path} {} (the command)", sub.get_name()));
                }
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "clinit", &mut missing);
        assert!(missing.is_empty(), "no description: {missing:#?}");
    }
}
