//! Supervision: groups, processes, runlevel switching.
//!
//! [`machine`] holds the pure state machines; the executor (in the daemon)
//! performs the actions they return.

pub mod machine;
