//! clinit: a cluster init daemon and client, compatible with Cluster::Init.
//!
//! # Layout
//!
//! A level switch follows this path through the modules:
//!
//! - [`cltab`]: the configuration file, parsed into entries and settings
//!   (pure; every error names file and line).
//! - [`proto`]: request/response types and length-prefixed JSON framing.
//! - [`daemon`]: socket listener, one event loop, request handlers.
//! - [`supervisor::executor`]: the only place that spawns, signals, reaps.
//! - [`client`]: talking to a daemon (CLI and tests).
//! - [`store`]: persistence behind a trait (embedded files now, etcd later).
//! - [`records`]: records in named containers with update signatures
//!   (Solaris dsvc style: EXISTS / NOENT / COLLISION); the rules live there,
//!   the SQL in [`store::sqlite`].
//! - [`bos`]: the BOS notifier record (and its JSON sibling).
//! - [`lock`]: named shared/exclusive locks with fencing tokens and leases,
//!   dsvclockd-style: `LockManager::step(event, now, unix) -> effects` (pure).
//! - [`lockcmd`]: `clinit lock NAME -- COMMAND`, and starting `clinit lockd`
//!   on demand.
//! - [`config`]: defaults < command-line flags < cltab settings.
//! - [`schedule`]: when a `cron` entry runs: BOS time forms and five-field cron
//!   expressions, next run time, ctime() format (pure).
//! - [`supervisor::machine`]: pure state machines for one entry's process and
//!   for one group's level switch: `step(state, event, now) -> (state, actions)`.

pub mod bos;
pub mod client;
pub mod cltab;
pub mod config;
pub mod daemon;
pub mod events;
pub mod explain;
pub mod lock;
pub mod lockcmd;
pub mod proto;
pub mod records;
pub mod schedule;
pub mod spin;
pub mod store;
pub mod supervisor;
