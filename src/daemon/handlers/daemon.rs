//! The daemon itself: ping, shutdown.

use super::message;
use crate::daemon::event_loop::{Call, Daemon};
use crate::proto::Reply;

pub(crate) fn ping() -> Reply {
    Reply::Pong
}

/// This node in its cluster.
pub(crate) fn node(d: &Daemon) -> Reply {
    Reply::Node {
        cluster: d.shared.cluster.as_ref().map(|h| Box::new(h.view())),
    }
}

/// Stop every group, then exit (a second shutdown only answers).
pub(crate) fn shutdown(d: &mut Daemon, c: &mut Call) -> Option<Reply> {
    if !d.halting {
        d.begin_halt(&c.who);
    }
    Some(message("all groups halting"))
}
