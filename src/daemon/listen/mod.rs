//! Transports: a [`Listener`] accepts connections, each an [`Incoming`]
//! that its own task turns into a byte [`Stream`] and the [`Peer`] at the
//! other end. The connection layer (`super::conn`) serves any stream
//! the same way; [`unix`] is the first transport. A new one (TCP with TLS)
//! is a module here implementing these three traits, plus the start-up
//! code that binds it and hands it to `accept_loop`.

pub mod tcp;
pub mod unix;

use super::conn::{self, Shared};
use super::policy::Peer;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};

/// A connected byte stream.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Read what has already arrived into `buf`, without waiting
    /// (`WouldBlock` when nothing has). `None`: this transport cannot, and
    /// its connections never busy-wait for the next request (see
    /// [`crate::spin`]; only the UNIX socket spins).
    fn try_read_buf(&mut self, _buf: &mut Vec<u8>) -> Option<std::io::Result<usize>> {
        None
    }
}

/// An accepted connection, not yet set up.
pub trait Incoming: Send + 'static {
    type Stream: Stream;
    /// Finish setting it up in the connection's own task (read the peer's
    /// credentials; a TLS transport does its handshake here), so that a
    /// slow client never holds up the accept loop.
    fn establish(self) -> impl Future<Output = std::io::Result<(Self::Stream, Peer)>> + Send;
}

/// A bound listening endpoint.
pub trait Listener: Send + 'static {
    type Incoming: Incoming;
    fn accept(&mut self) -> impl Future<Output = std::io::Result<Self::Incoming>> + Send;
    /// Where it listens, for the log.
    fn describe(&self) -> String;
}

/// The longest pause after failed accepts (out of file descriptors).
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Accept connections until the daemon exits, each served in its own task.
/// A failing `accept` (EMFILE when file descriptors run out) is logged and
/// retried after a pause that doubles up to a second, so it never spins;
/// connections already open go on being served meanwhile.
pub(crate) async fn accept_loop<L: Listener>(mut listener: L, shared: Arc<Shared>) {
    let mut backoff = Duration::ZERO;
    loop {
        match listener.accept().await {
            Ok(incoming) => {
                backoff = Duration::ZERO;
                // Connection ids count up from 1; lease ids have the top bit set.
                let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
                shared.conns.fetch_add(1, Ordering::SeqCst);
                let shared = shared.clone();
                tokio::spawn(async move {
                    let mut closing = Closing {
                        id,
                        shared: Some(shared.clone()),
                    };
                    match incoming.establish().await {
                        Ok((stream, peer)) => conn::serve(stream, peer, id, &shared).await,
                        // A flood of failing set-ups logs a few lines a minute.
                        Err(e) => {
                            if let Some(held) = shared
                                .refusals
                                .allow("connection set-up", std::time::Instant::now())
                            {
                                let held = match held {
                                    0 => String::new(),
                                    n => format!(" ({n} more failed set-ups were not logged)"),
                                };
                                tracing::warn!("cannot set up connection {id}: {e}{held}");
                            }
                        }
                    }
                    closing.shared = None;
                    conn::closed(id, &shared).await;
                });
            }
            Err(e) => {
                backoff = (backoff * 2).clamp(Duration::from_millis(10), ACCEPT_BACKOFF_MAX);
                tracing::error!(
                    "accept on {} failed: {e}; retrying in {} ms",
                    listener.describe(),
                    backoff.as_millis()
                );
                tokio::time::sleep(backoff).await;
            }
        }
    }
}

/// Runs [`conn::closed`] for a connection whose task ends without reaching
/// it (a panic in its serving; the daemon never means to panic, but a
/// connection that did must not keep its locks, waits and count for the
/// daemon's life). Disarmed (`shared` None) on the normal path, which
/// awaits `closed` in order.
struct Closing {
    id: u64,
    shared: Option<Arc<Shared>>,
}

impl Drop for Closing {
    fn drop(&mut self) {
        if let (Some(shared), Ok(rt)) = (self.shared.take(), tokio::runtime::Handle::try_current())
        {
            let id = self.id;
            rt.spawn(async move { conn::closed(id, &shared).await });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lock::{HolderInfo, LockMode};
    use crate::proto::Reply;
    use crate::store::{LockCall, Pending};

    fn acquire(shared: &Shared, conn: u64) -> bool {
        let call = LockCall::Acquire {
            name: "vol".into(),
            mode: LockMode::Exclusive,
            wait: false,
            timeout_ms: None,
            lease: None,
        };
        matches!(
            shared.locks().call(conn, call, HolderInfo::default()),
            Pending::Ready(Reply::Granted { .. })
        )
    }

    /// A connection task that panics still releases what it held.
    #[test]
    fn a_connection_task_that_panics_still_releases_its_locks() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let db = Arc::new(std::sync::Mutex::new(
                crate::store::sqlite::StateDb::open(dir.path()).unwrap(),
            ));
            let state: Arc<std::sync::Mutex<dyn crate::store::StateStore>> = db.clone();
            let records: Arc<std::sync::Mutex<dyn crate::store::RecordBackend>> =
                Arc::new(std::sync::Mutex::new(crate::records::LocalRecords::new(db)));
            let (tx, mut rx) = tokio::sync::mpsc::channel(8);
            let shared = Arc::new(Shared::for_tests(tx, state, records));
            shared.conns.fetch_add(1, Ordering::SeqCst);
            assert!(acquire(&shared, 7));
            assert!(!acquire(&shared, 8), "held by connection 7");
            let s = shared.clone();
            let task = tokio::spawn(async move {
                let _closing = Closing {
                    id: 7,
                    shared: Some(s),
                };
                panic!("a bug in serving connection 7");
            });
            assert!(task.await.unwrap_err().is_panic());
            // The guard's task runs `closed`, which tells the loop.
            let told = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await;
            assert!(
                matches!(told, Ok(Some(crate::daemon::event_loop::Msg::Closed))),
                "closed was not run"
            );
            assert!(
                acquire(&shared, 8),
                "released when connection 7's task ended"
            );
            assert_eq!(shared.conns.load(Ordering::SeqCst), 0);
        });
    }
}
