//! clinit: a cluster init daemon and client, compatible with Cluster::Init.
//!
//! # Layout
//!
//! A level switch follows this path through the modules:
//!
//! - [`cltab`]: the configuration file, parsed into entries and settings
//!   (pure; every error names file and line).
//! - [`config`]: defaults < command-line flags < cltab settings.
//! - [`supervisor::machine`]: pure state machines for one entry's process and
//!   for one group's level switch: `step(state, event, now) -> (state, actions)`.

pub mod cltab;
pub mod config;
pub mod supervisor;
