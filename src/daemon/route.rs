//! The one router: every request is routed here, by one exhaustive match
//! with no catch-all arm, so a new request variant does not compile until
//! it names its handler, the right it needs and where it is served.
//!
//! Where: requests that need the supervisor are served by the event loop
//! ([`Target::Loop`], a call of their handler); locks, records and event
//! subscriptions are served in the connection task (the lock round trip
//! stays short, and a streamed reply occupies only its own connection).

use super::event_loop::{Call, Daemon};
use super::handlers::{control, daemon, groups, params};
use super::policy::Right;
use crate::logsafe::Safe;
use crate::proto::{ControlAction, RecordOp, Reply, Request};
use crate::store::LockCall;

/// A handler served by the event loop: it changes the daemon (pushing
/// actions for the executor) and gives the reply, or keeps
/// [`Call::reply`] to answer later (`None`).
pub(crate) type LoopJob = Box<dyn FnOnce(&mut Daemon, &mut Call) -> Option<Reply> + Send>;

/// An events subscription, as asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct EventsQuery {
    pub since: Option<u64>,
    pub last: Option<u64>,
    pub group: Option<String>,
    pub follow: bool,
}

/// Where a request is served.
pub(crate) enum Target {
    /// By the event loop; `may_block`: the reply may take long (the
    /// connection watches for the client going away meanwhile).
    Loop {
        job: LoopJob,
        may_block: bool,
    },
    /// By the lock service; with the holder's description.
    Lock(LockCall, String),
    /// The locks view.
    Locks {
        name: Option<String>,
        after: Option<String>,
    },
    Record(RecordOp),
    /// A streamed reply.
    Events(EventsQuery),
    /// Read and parse the cltab off the event loop (a blocking task),
    /// then apply it on the loop.
    Reread,
}

/// A routed request.
pub(crate) struct Route {
    /// The handler, as `family::function` (the files of
    /// [`super::handlers`]).
    pub handler: &'static str,
    pub right: Right,
    /// The request in the words of the log, for those whose use is logged
    /// (changes and shutdown).
    pub describe: Option<String>,
    pub target: Target,
}

fn on_loop(
    handler: &'static str,
    right: Right,
    describe: Option<String>,
    job: impl FnOnce(&mut Daemon, &mut Call) -> Option<Reply> + Send + 'static,
) -> Route {
    Route {
        handler,
        right,
        describe,
        target: Target::Loop {
            job: Box::new(job),
            may_block: false,
        },
    }
}

fn lock(call: LockCall, what: String) -> Route {
    Route {
        handler: "locks::call",
        right: Right::Lock,
        describe: None,
        target: Target::Lock(call, what),
    }
}

/// Route one request.
pub(crate) fn route(req: Request) -> Route {
    match req {
        Request::Ping => on_loop("daemon::ping", Right::Read, None, |_, _| {
            Some(daemon::ping())
        }),
        Request::Node => on_loop("daemon::node", Right::Read, None, |d, _| {
            Some(daemon::node(d))
        }),
        Request::Shutdown => on_loop(
            "daemon::shutdown",
            Right::Shutdown,
            Some("shutdown".into()),
            daemon::shutdown,
        ),
        Request::Status {
            group,
            brief,
            from,
            usage,
        } => on_loop("groups::status", Right::Read, None, move |d, _| {
            Some(groups::status(d, group.as_deref(), brief, from, usage))
        }),
        Request::Tell { group, level } => on_loop(
            "groups::tell",
            Right::Change,
            Some(format!("tell {} {}", Safe(&group), Safe(&level))),
            move |d, c| groups::tell(d, c, &group, &level),
        ),
        Request::Wait {
            group,
            level,
            state,
            timeout_ms,
        } => Route {
            handler: "groups::wait",
            right: Right::Read,
            describe: None,
            target: Target::Loop {
                job: Box::new(move |d, c| groups::wait(d, c, group, level, state, timeout_ms)),
                may_block: true,
            },
        },
        Request::Survey { query, from } => {
            on_loop("groups::survey", Right::Read, None, move |d, _| {
                Some(groups::survey(d, &query, from))
            })
        }
        Request::Null => on_loop("params::null", Right::Read, None, |d, _| {
            Some(params::null(d))
        }),
        Request::Params { name } => on_loop("params::list", Right::Read, None, move |d, _| {
            Some(params::list(d, name.as_deref()))
        }),
        Request::SetPar {
            name,
            value,
            persist,
        } => on_loop(
            "params::setpar",
            Right::Change,
            Some(format!(
                "setpar {} {}{}",
                Safe(&name),
                value
                    .as_deref()
                    .map_or("--unset".to_string(), |v| Safe(v).to_string()),
                if persist { " --persist" } else { "" }
            )),
            move |d, c| Some(params::setpar(d, c, &name, value.as_deref(), persist)),
        ),
        Request::LastWords => on_loop(
            "params::lastwords",
            Right::Change,
            Some("lastwords".into()),
            |_, c| Some(params::lastwords(c)),
        ),
        Request::Reopen => on_loop(
            "params::reopen",
            Right::Change,
            Some("reopen".into()),
            |d, _| Some(params::reopen(d)),
        ),
        Request::Explain { name } => on_loop("groups::explain", Right::Read, None, move |d, _| {
            Some(groups::explain(d, &name))
        }),
        Request::Control {
            tag,
            action,
            temporary,
        } => on_loop(
            "control::entry",
            Right::Change,
            Some(format!(
                "{} {}{}",
                match action {
                    ControlAction::Stop => "stop",
                    ControlAction::Start => "start",
                    ControlAction::Restart => "restart",
                },
                Safe(&tag),
                if temporary { " --temporary" } else { "" }
            )),
            move |d, c| Some(control::entry(d, c, &tag, action, temporary)),
        ),
        Request::RestartGroup { group } => on_loop(
            "control::restart_group",
            Right::Change,
            Some(match &group {
                Some(g) => format!("restart --group {}", Safe(g)),
                None => "restart --all".into(),
            }),
            move |d, c| Some(control::restart_group(d, c, group.as_deref())),
        ),
        Request::Reread => Route {
            handler: "control::reread",
            right: Right::Change,
            describe: Some("reread".into()),
            target: Target::Reread,
        },
        Request::Create {
            group,
            tag,
            levels,
            mode,
            options,
            command,
        } => on_loop(
            "control::create",
            Right::Change,
            Some(format!(
                "create {}:{}:{}:{}:{}",
                Safe(&group),
                Safe(&tag),
                Safe(&levels),
                Safe(&mode),
                Safe(&command)
            )),
            move |d, c| control::create(d, c, &group, &tag, &levels, &mode, &options, &command),
        ),
        Request::Delete { tag } => on_loop(
            "control::delete",
            Right::Change,
            Some(format!("delete {}", Safe(&tag))),
            move |d, c| control::delete(d, c, &tag),
        ),
        Request::LockAcquire {
            name,
            mode,
            wait,
            timeout_ms,
            lease,
            what,
        } => lock(
            LockCall::Acquire {
                name,
                mode,
                wait,
                timeout_ms,
                lease,
            },
            what,
        ),
        Request::LockRelease { name, lease } => {
            lock(LockCall::Release { name, lease }, String::new())
        }
        Request::LeaseGrant { ttl_ms } => lock(LockCall::LeaseGrant { ttl_ms }, String::new()),
        Request::LeaseRenew { lease } => lock(LockCall::LeaseRenew { lease }, String::new()),
        Request::LeaseRevoke { lease } => lock(LockCall::LeaseRevoke { lease }, String::new()),
        Request::Locks { name, after } => Route {
            handler: "locks::list",
            right: Right::Read,
            describe: None,
            target: Target::Locks { name, after },
        },
        Request::Record(op) => Route {
            handler: "records::call",
            right: Right::Record,
            describe: None,
            target: Target::Record(op),
        },
        Request::Events {
            since,
            last,
            group,
            follow,
        } => Route {
            handler: "events::stream",
            right: Right::Read,
            describe: None,
            target: Target::Events(EventsQuery {
                since,
                last,
                group,
                follow,
            }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::policy::{LocalUser, Peer, Policy};
    use crate::lock::LockMode;

    /// One request of every variant. The match has no catch-all arm: a new
    /// variant does not compile until it has a row here too.
    fn one_of_each() -> Vec<Request> {
        let all = vec![
            Request::Ping,
            Request::Node,
            Request::Tell {
                group: "g".into(),
                level: "1".into(),
            },
            Request::Status {
                group: None,
                brief: true,
                from: None,
                usage: false,
            },
            Request::Reread,
            Request::Shutdown,
            Request::Wait {
                group: "g".into(),
                level: None,
                state: None,
                timeout_ms: 1,
            },
            Request::Control {
                tag: "t".into(),
                action: ControlAction::Stop,
                temporary: false,
            },
            Request::RestartGroup { group: None },
            Request::Create {
                group: "g".into(),
                tag: "t".into(),
                levels: "1".into(),
                mode: "once".into(),
                options: vec![],
                command: "true".into(),
            },
            Request::Delete { tag: "t".into() },
            Request::LockAcquire {
                name: "l".into(),
                mode: LockMode::Shared,
                wait: false,
                timeout_ms: None,
                lease: None,
                what: String::new(),
            },
            Request::LockRelease {
                name: "l".into(),
                lease: None,
            },
            Request::LeaseGrant { ttl_ms: 1 },
            Request::LeaseRenew { lease: 1 },
            Request::LeaseRevoke { lease: 1 },
            Request::Locks {
                name: None,
                after: None,
            },
            Request::Record(RecordOp::List {
                container: "c".into(),
            }),
            Request::Events {
                since: None,
                last: None,
                group: None,
                follow: false,
            },
            Request::Explain { name: "t".into() },
            Request::Null,
            Request::Params { name: None },
            Request::SetPar {
                name: "loglevel".into(),
                value: None,
                persist: false,
            },
            Request::LastWords,
            Request::Reopen,
            Request::Survey {
                query: crate::survey::Query::named(crate::survey::Table::Entries, &[], &[], &[])
                    .unwrap(),
                from: 0,
            },
        ];
        for r in &all {
            match r {
                Request::Ping
                | Request::Node
                | Request::Tell { .. }
                | Request::Status { .. }
                | Request::Reread
                | Request::Shutdown
                | Request::Wait { .. }
                | Request::Control { .. }
                | Request::RestartGroup { .. }
                | Request::Create { .. }
                | Request::Delete { .. }
                | Request::LockAcquire { .. }
                | Request::LockRelease { .. }
                | Request::LeaseGrant { .. }
                | Request::LeaseRenew { .. }
                | Request::LeaseRevoke { .. }
                | Request::Locks { .. }
                | Request::Record(_)
                | Request::Events { .. }
                | Request::Explain { .. }
                | Request::Null
                | Request::Params { .. }
                | Request::SetPar { .. }
                | Request::LastWords
                | Request::Reopen
                | Request::Survey { .. } => {}
            }
        }
        all
    }

    fn where_served(t: &Target) -> &'static str {
        match t {
            Target::Loop {
                may_block: false, ..
            } => "loop",
            Target::Loop {
                may_block: true, ..
            } => "loop, may block",
            Target::Lock(..) => "lock service",
            Target::Locks { .. } => "lock service view",
            Target::Record(_) => "record store",
            Target::Reread => "parsed off the loop, applied on it",
            Target::Events(_) => "stream",
        }
    }

    #[test]
    fn every_request_reaches_its_handler() {
        // op -> (handler, right, where served, logged)
        let want: &[(&str, &str, Right, &str, bool)] = &[
            ("ping", "daemon::ping", Right::Read, "loop", false),
            ("node", "daemon::node", Right::Read, "loop", false),
            ("tell", "groups::tell", Right::Change, "loop", true),
            ("status", "groups::status", Right::Read, "loop", false),
            (
                "reread",
                "control::reread",
                Right::Change,
                "parsed off the loop, applied on it",
                true,
            ),
            (
                "shutdown",
                "daemon::shutdown",
                Right::Shutdown,
                "loop",
                true,
            ),
            (
                "wait",
                "groups::wait",
                Right::Read,
                "loop, may block",
                false,
            ),
            ("control", "control::entry", Right::Change, "loop", true),
            (
                "restart_group",
                "control::restart_group",
                Right::Change,
                "loop",
                true,
            ),
            ("create", "control::create", Right::Change, "loop", true),
            ("delete", "control::delete", Right::Change, "loop", true),
            (
                "lock_acquire",
                "locks::call",
                Right::Lock,
                "lock service",
                false,
            ),
            (
                "lock_release",
                "locks::call",
                Right::Lock,
                "lock service",
                false,
            ),
            (
                "lease_grant",
                "locks::call",
                Right::Lock,
                "lock service",
                false,
            ),
            (
                "lease_renew",
                "locks::call",
                Right::Lock,
                "lock service",
                false,
            ),
            (
                "lease_revoke",
                "locks::call",
                Right::Lock,
                "lock service",
                false,
            ),
            (
                "locks",
                "locks::list",
                Right::Read,
                "lock service view",
                false,
            ),
            (
                "record",
                "records::call",
                Right::Record,
                "record store",
                false,
            ),
            ("events", "events::stream", Right::Read, "stream", false),
            ("explain", "groups::explain", Right::Read, "loop", false),
            ("null", "params::null", Right::Read, "loop", false),
            ("params", "params::list", Right::Read, "loop", false),
            ("set_par", "params::setpar", Right::Change, "loop", true),
            (
                "last_words",
                "params::lastwords",
                Right::Change,
                "loop",
                true,
            ),
            ("reopen", "params::reopen", Right::Change, "loop", true),
            ("survey", "groups::survey", Right::Read, "loop", false),
        ];
        let all = one_of_each();
        assert_eq!(all.len(), want.len());
        for (req, (op, handler, right, served, logged)) in all.into_iter().zip(want) {
            let json = serde_json::to_value(&req).unwrap();
            assert_eq!(json["op"], *op, "rows in the order of one_of_each");
            let r = route(req);
            assert_eq!(r.handler, *handler, "{op}");
            assert_eq!(r.right, *right, "{op}");
            assert_eq!(where_served(&r.target), *served, "{op}");
            assert_eq!(r.describe.is_some(), *logged, "{op}");
        }
    }

    #[test]
    fn policy_decides_each_right_for_each_kind_of_peer() {
        use crate::cltab::Access;
        let dir = tempfile::tempdir().unwrap();
        let list = dir.path().join("UserList");
        std::fs::write(&list, "4000001\ncert:ops-admin\n").unwrap();
        let local = |uid| {
            Peer::Local(LocalUser {
                uid,
                gid: uid,
                pid: Some(7),
            })
        };
        let cert = |s: &str| Peer::Certificate { subject: s.into() };
        let open = Policy {
            noauth: false,
            daemon_uid: 4000000,
            userlist: Some(list.clone()),
            lock_access: Access::Anyone,
            record_access: Access::Anyone,
        };
        let closed = Policy {
            lock_access: Access::Userlist,
            record_access: Access::Userlist,
            ..open.clone()
        };
        let noauth = Policy {
            noauth: true,
            ..closed.clone()
        };
        use Right::*;
        // (policy, peer, right, allowed)
        let rows: Vec<(&str, &Policy, Peer, Right, bool)> = vec![
            ("root changes", &open, local(0), Change, true),
            (
                "daemon user shuts down",
                &open,
                local(4000000),
                Shutdown,
                true,
            ),
            ("listed uid changes", &open, local(4000001), Change, true),
            ("unlisted reads", &open, local(4000002), Read, true),
            (
                "unlisted may not change",
                &open,
                local(4000002),
                Change,
                false,
            ),
            (
                "unlisted may not shut down",
                &open,
                local(4000002),
                Shutdown,
                false,
            ),
            (
                "unlisted locks by default",
                &open,
                local(4000002),
                Lock,
                true,
            ),
            (
                "unlisted records by default",
                &open,
                local(4000002),
                Record,
                true,
            ),
            ("lock_access userlist", &closed, local(4000002), Lock, false),
            (
                "record_access userlist",
                &closed,
                local(4000002),
                Record,
                false,
            ),
            (
                "listed locks under userlist",
                &closed,
                local(4000001),
                Lock,
                true,
            ),
            (
                "root records under userlist",
                &closed,
                local(0),
                Record,
                true,
            ),
            ("certificate reads", &open, cert("bob"), Read, true),
            (
                "certificate locks by default",
                &open,
                cert("bob"),
                Lock,
                true,
            ),
            (
                "unlisted certificate may not change",
                &open,
                cert("bob"),
                Change,
                false,
            ),
            (
                "listed certificate changes",
                &open,
                cert("ops-admin"),
                Change,
                true,
            ),
            (
                "a cert: line is not a user name",
                &open,
                cert("4000001"),
                Change,
                false,
            ),
            (
                "certificate under lock userlist",
                &closed,
                cert("bob"),
                Lock,
                false,
            ),
            (
                "noauth allows a certificate",
                &noauth,
                cert("bob"),
                Change,
                true,
            ),
            ("noauth allows locks", &noauth, local(4000002), Lock, true),
        ];
        for (name, policy, peer, right, allowed) in rows {
            let got = policy.check(&peer, right);
            assert_eq!(got.is_ok(), allowed, "{name}: {got:?}");
            match got {
                Ok(who) => assert_eq!(
                    who.is_some(),
                    matches!(right, Change | Shutdown),
                    "{name}: who is given for logged rights"
                ),
                Err(e) => {
                    let msg = e.to_string();
                    assert!(msg.contains(&peer.describe()), "{name}: {msg}");
                    if matches!(right, Lock | Record) {
                        let setting = if right == Lock {
                            "lock_access"
                        } else {
                            "record_access"
                        };
                        assert!(msg.contains(setting), "{name}: {msg}");
                        assert!(
                            msg.contains(if right == Lock {
                                "take locks"
                            } else {
                                "use records"
                            }),
                            "{name}: {msg}"
                        );
                    }
                }
            }
        }
    }
}
