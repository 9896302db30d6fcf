//! clinit: a cluster init daemon and client, compatible with Cluster::Init.
//!
//! # Layout
//!
//! A request follows this path through the modules:
//!
//! - [`client`]: talking to a daemon (CLI and tests); [`proto`]: request
//!   and reply types and length-prefixed JSON framing.
//! - [`daemon`]: start-up, then: a transport ([`daemon::listen`]) accepts a
//!   connection and names the peer; the connection layer
//!   (`daemon::conn`) reads frames; the one router (`daemon::route`)
//!   names the handler, the right and where it is served; the
//!   [`daemon::policy`] checks the right; the handler
//!   (`daemon::handlers`) serves it in the connection task (locks,
//!   records, events) or in the one event loop (`daemon::event_loop`).
//! - [`supervisor`]: routes events to groups and reports changes;
//!   [`supervisor::machine`]: pure state machines for one entry's process
//!   and one group's level switch, `step(state, event, now) -> (state,
//!   actions)`; [`supervisor::executor`]: the only place that spawns,
//!   signals, reaps.
//! - [`events`]: what happened, numbered, in a ring (`clinit events`);
//!   [`explain`]: why an entry or group is (not) running, as facts (pure).
//! - [`store`]: the backend traits (state store, record storage, lock
//!   backend, `Pending` answers) and the status file; [`store::sqlite`]
//!   implements the first two on one machine.
//! - [`lock`]: named shared/exclusive locks with fencing tokens and leases,
//!   dsvclockd-style: `LockManager::step(event, now, unix) -> effects`
//!   (pure); [`lock::service`]: the in-process lock backend.
//! - [`records`]: records in named containers with update signatures
//!   (Solaris dsvc style: EXISTS / NOENT / COLLISION) over any record
//!   storage.
//! - [`cltab`]: the configuration file, parsed into entries and settings
//!   (pure; every error names file and line); [`config`]: defaults <
//!   command-line flags < cltab settings < entry options.
//! - [`schedule`]: when a `cron` entry runs (pure); [`bos`]: the BOS
//!   notifier record (and its JSON sibling); [`lockcmd`]: `clinit lock
//!   NAME -- COMMAND`, and starting `clinit lockd` on demand; [`spin`]:
//!   busy-waiting before sleeping.

pub mod bos;
pub mod client;
pub mod cltab;
pub mod cluster;
pub mod config;
pub mod daemon;
pub mod events;
pub mod explain;
pub mod lock;
pub mod lockcmd;
pub mod logging;
pub mod logsafe;
pub mod params;
pub mod proto;
pub mod records;
pub mod schedule;
pub mod spin;
pub mod store;
pub mod supervisor;
pub mod survey;
pub mod tls;
