//! What clinit borrows from OpenAFS's BOS server that needs its own code:
//! the notifier record, which an entry's notifier program reads on its
//! standard input after each exit (written by the supervisor's executor).

pub mod notifier;
