//! Request handlers, one file per family. Each handler is a function the
//! router ([`super::route`]) names; those served by the event loop take
//! the [`super::event_loop::Daemon`], the others the connection's
//! [`super::conn::Shared`].
//!
//! - [`daemon`]: ping, shutdown.
//! - [`groups`]: tell, status, wait, explain.
//! - [`control`]: stop/start/restart of entries and groups, reread, and
//!   the cltab edits of create/delete.
//! - [`locks`]: lock and lease requests, the locks view.
//! - [`records`]: record operations.
//! - [`events`]: the events subscription (a streamed reply).
//! - [`params`]: null, parameters (params, getpar, setpar), last words,
//!   reopening the log.

pub mod control;
pub mod daemon;
pub mod events;
pub mod groups;
pub mod locks;
pub mod params;
pub mod records;

use crate::proto::{ErrorCode, Reply};

pub(crate) fn message(text: &str) -> Reply {
    Reply::Message {
        text: text.to_string(),
    }
}

pub(crate) fn no_group(group: &str) -> Reply {
    super::conn::error(ErrorCode::NoSuchGroup, format!("no such group: {group}"))
}
