//! BOS-style instance management (issue 3, in progress).
//!
//! Only the notifier record exists so far: what an entry's notifier program
//! reads on its standard input after each exit. It is not yet wired into
//! the daemon.

pub mod notifier;
