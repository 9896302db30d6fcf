//! `clinit`: command-line parsing and dispatch only.

use clap::{Parser, Subcommand};
use clinit::client::{Client, ClientError};
use clinit::cltab;
use clinit::config::{CliPaths, Paths};
use clinit::proto::{GroupStatus, Reply, Request};
use clinit::supervisor::machine::GroupState;
use std::path::PathBuf;
use std::process::ExitCode;

/// Cluster init: supervise the programs of resource groups and switch groups
/// between runlevels.
///
/// Cluster::Init form: clinit [-d] [-k] [-v] [-c cltab] [-s socket] [[group] level]
#[derive(Parser, Debug)]
#[command(name = "clinit", version, allow_external_subcommands = true)]
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
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the daemon in the foreground.
    Daemon,
    /// Tell a group to go to a level.
    Tell { group: String, level: String },
    /// Print the level and state of each group.
    Status {
        group: Option<String>,
        /// Print every process as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Reread the cltab.
    Reread,
    /// Wait until a group is at LEVEL (if given) and in a state: by default
    /// any settled state (DONE, PASSED, FAILED).
    Wait {
        group: String,
        level: Option<String>,
        /// STARTING, STOPPING, DONE, PASSED or FAILED.
        #[arg(long, value_parser = parse_state)]
        state: Option<GroupState>,
        /// Give up after this many seconds (exit 6).
        #[arg(long, default_value_t = 60.0)]
        timeout: f64,
    },
    /// Stop every group and make the daemon exit.
    Shutdown,
    /// Cluster::Init form: `[GROUP] LEVEL` tells GROUP (default: the host name).
    #[command(external_subcommand)]
    Compat(Vec<String>),
}

fn parse_state(s: &str) -> Result<GroupState, String> {
    GroupState::parse(s).ok_or_else(|| format!("unknown state '{s}'"))
}

fn fail(msg: impl std::fmt::Display, code: i32) -> ExitCode {
    eprintln!("clinit: {msg}");
    ExitCode::from(code as u8)
}

fn paths(cli: &Cli) -> (CliPaths, Paths) {
    let cp = CliPaths {
        cltab: cli.cltab.clone(),
        socket: cli.socket.clone(),
    };
    let settings = std::fs::read_to_string(cp.cltab())
        .map(|t| cltab::scan_settings(&t))
        .unwrap_or_default();
    let p = Paths::resolve(&cp, &settings);
    (cp, p)
}

fn print_status(groups: &[GroupStatus]) {
    for g in groups {
        println!(
            "{} {} {}",
            g.group,
            g.level.as_deref().unwrap_or("-"),
            g.state.as_str()
        );
    }
}

/// Send one request and print the daemon's reply text, if any.
fn call(p: &Paths, req: Request) -> Result<(), ClientError> {
    if let Reply::Message { text } = Client::connect(&p.socket)?.request(req)? {
        println!("{text}");
    }
    Ok(())
}

fn status(p: &Paths, group: Option<String>, json: bool) -> Result<(), ClientError> {
    let reply = Client::connect(&p.socket)?.request(Request::Status {
        group,
        brief: !json,
    })?;
    if let Reply::Status { groups } = reply {
        if json {
            println!(
                "{}",
                serde_json::to_string_pretty(&groups).expect("serializable")
            );
        } else {
            print_status(&groups);
        }
    }
    Ok(())
}

fn wait(
    p: &Paths,
    group: &str,
    level: &Option<String>,
    state: Option<GroupState>,
    timeout: f64,
) -> Result<(), ClientError> {
    let timeout = std::time::Duration::from_secs_f64(timeout.clamp(0.0, 86_400.0));
    let mut c = Client::connect(&p.socket)?;
    c.set_timeout(timeout + std::time::Duration::from_secs(5));
    let reply = c.request(Request::Wait {
        group: group.to_string(),
        level: level.clone(),
        state,
        timeout_ms: timeout.as_millis() as u64,
    })?;
    if let Reply::Status { groups } = reply {
        print_status(&groups);
    }
    Ok(())
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .map(|h| h.split('.').next().unwrap_or_default().to_string())
        .unwrap_or_else(|| "localhost".into())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (cp, p) = paths(&cli);
    let result = match (&cli.cmd, cli.daemon, cli.kill) {
        (Some(Cmd::Daemon), _, _) | (None, true, _) => {
            return match clinit::daemon::run(&cp) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(e.to_string(), e.exit_code()),
            };
        }
        (Some(Cmd::Shutdown), _, _) | (None, false, true) => call(&p, Request::Shutdown),
        (Some(Cmd::Tell { group, level }), _, _) => call(
            &p,
            Request::Tell {
                group: group.clone(),
                level: level.clone(),
            },
        ),
        (Some(Cmd::Status { group, json }), _, _) => status(&p, group.clone(), *json),
        (
            Some(Cmd::Wait {
                group,
                level,
                state,
                timeout,
            }),
            _,
            _,
        ) => wait(&p, group, level, *state, *timeout),
        (Some(Cmd::Reread), _, _) | (None, false, false) => call(&p, Request::Reread),
        (Some(Cmd::Compat(args)), _, _) => {
            let req = match args.as_slice() {
                [] => Request::Reread,
                [level] => Request::Tell {
                    group: hostname(),
                    level: level.clone(),
                },
                [group, level] => Request::Tell {
                    group: group.clone(),
                    level: level.clone(),
                },
                _ => {
                    return fail(
                        "usage: clinit [-d] [-k] [-v] [-c cltab] [-s socket] [[group] level]",
                        2,
                    );
                }
            };
            call(&p, req)
        }
    };
    let result = result.and_then(|()| {
        if cli.verbose && !cli.kill {
            status(&p, None, false)
        } else {
            Ok(())
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e, e.exit_code()),
    }
}
