//! The state database on a thread of its own, with group commit.
//!
//! The daemon's runtime is one thread: a sync to disk there (a turn's
//! goals and child records, a record write) held up every connection for
//! its duration, and under load those syncs were most of the latency. The
//! [`StoreWorker`] takes the writes off that thread: the event loop's
//! applies, the lock service's token reservations and the record calls
//! queue on one channel, in order; the worker thread takes every job
//! queued (up to [`BATCH_MAX`]), carries them out on the database it holds
//! for the whole batch, each in its own transaction committed without a
//! sync, then syncs once and only then answers them all. The more writers
//! at once, the fewer syncs per write; nothing is answered before it is
//! durable, as before.
//!
//! Reads at start-up (`load`, `disabled_notes`, `token_floor`) go straight
//! to the database.

use super::sqlite::StateDb;
use super::{
    DisabledNote, Pending, Persisted, RecordBackend, RecordCall, RecordOutcome, StateStore,
    StoreError, StoreOp,
};
use crate::records::{LocalRecords, RecordError};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::oneshot;

/// The most jobs carried out with one sync to disk.
pub const BATCH_MAX: usize = 512;

enum Job {
    Apply(Vec<StoreOp>, oneshot::Sender<Result<(), StoreError>>),
    Reserve(u64, oneshot::Sender<Result<(), StoreError>>),
    Record(
        RecordCall,
        oneshot::Sender<Result<RecordOutcome, RecordError>>,
    ),
}

impl Job {
    fn writes(&self) -> bool {
        match self {
            Job::Apply(..) | Job::Reserve(..) => true,
            Job::Record(c, _) => c.writes(),
        }
    }
}

/// What a job's answer will be, held until the batch is synced.
enum Answer {
    Unit(
        Result<(), StoreError>,
        oneshot::Sender<Result<(), StoreError>>,
    ),
    Record(
        Result<RecordOutcome, RecordError>,
        oneshot::Sender<Result<RecordOutcome, RecordError>>,
    ),
}

/// A handle on the worker: the daemon's [`StateStore`] and, in single-node
/// mode, its [`RecordBackend`]. Clones share the worker; it ends when the
/// last handle is dropped.
#[derive(Clone)]
pub struct StoreWorker {
    tx: mpsc::Sender<Job>,
    db: Arc<Mutex<StateDb>>,
    location: String,
}

impl StoreWorker {
    /// Start the worker thread on `db`, serving records under `records`'
    /// rules (which must be over the same database).
    pub fn spawn(
        db: Arc<Mutex<StateDb>>,
        mut records: LocalRecords<StateDb>,
    ) -> std::io::Result<StoreWorker> {
        let (tx, rx) = mpsc::channel::<Job>();
        let location = db.lock().unwrap_or_else(PoisonError::into_inner).location();
        let held = db.clone();
        std::thread::Builder::new()
            .name("clinit-store".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut jobs = vec![first];
                    while jobs.len() < BATCH_MAX {
                        match rx.try_recv() {
                            Ok(j) => jobs.push(j),
                            Err(_) => break,
                        }
                    }
                    run_batch(&held, &mut records, jobs);
                }
            })?;
        Ok(StoreWorker { tx, db, location })
    }

    fn send<T>(
        &self,
        job: impl FnOnce(oneshot::Sender<T>) -> Job,
        gone: impl FnOnce() -> T,
    ) -> Pending<T> {
        let (tx, rx) = oneshot::channel();
        match self.tx.send(job(tx)) {
            Ok(()) => Pending::Later(rx),
            Err(_) => Pending::Ready(gone()),
        }
    }
}

/// Carry out one batch on the database, held throughout, with one sync.
fn run_batch(db: &Mutex<StateDb>, records: &mut LocalRecords<StateDb>, jobs: Vec<Job>) {
    let mut db = db.lock().unwrap_or_else(PoisonError::into_inner);
    let writes = jobs.iter().filter(|j| j.writes()).count();
    // One write alone is synced by its own commit, as without the worker.
    let deferred = writes > 1 && db.defer_sync().is_ok();
    let answers: Vec<Answer> = jobs
        .into_iter()
        .map(|job| match job {
            Job::Apply(ops, tx) => Answer::Unit(db.apply(&ops), tx),
            Job::Reserve(upto, tx) => Answer::Unit(db.reserve_tokens(upto), tx),
            Job::Record(call, tx) => Answer::Record(records.call_in(&mut db, call), tx),
        })
        .collect();
    let synced = if deferred {
        db.sync().map_err(|e| e.to_string())
    } else {
        Ok(())
    };
    drop(db);
    for a in answers {
        // A requester that went away no longer needs its answer.
        match a {
            Answer::Unit(r, tx) => {
                let r = match (&synced, r) {
                    (Err(e), Ok(())) => Err(StoreError::Unsynced(e.clone())),
                    (_, r) => r,
                };
                let _ = tx.send(r);
            }
            Answer::Record(r, tx) => {
                let r = match (&synced, r) {
                    (Err(e), Ok(RecordOutcome::Signature(_) | RecordOutcome::Deleted)) => {
                        Err(RecordError::Store(StoreError::Unsynced(e.clone())))
                    }
                    (_, r) => r,
                };
                let _ = tx.send(r);
            }
        }
    }
}

impl StateStore for StoreWorker {
    fn location(&self) -> String {
        self.location.clone()
    }

    fn load(&mut self) -> Result<Persisted, StoreError> {
        StateDb::load(&self.db.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn disabled_notes(&mut self) -> Result<Vec<DisabledNote>, StoreError> {
        StateDb::disabled_notes(&self.db.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn apply(&mut self, ops: Vec<StoreOp>) -> Pending<Result<(), StoreError>> {
        self.send(|tx| Job::Apply(ops, tx), || Err(StoreError::Gone))
    }

    fn token_floor(&mut self) -> Result<u64, StoreError> {
        StateDb::token_floor(&self.db.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn reserve_tokens(&mut self, upto: u64) -> Pending<Result<(), StoreError>> {
        self.send(|tx| Job::Reserve(upto, tx), || Err(StoreError::Gone))
    }
}

impl RecordBackend for StoreWorker {
    fn call(&mut self, call: RecordCall) -> Pending<Result<RecordOutcome, RecordError>> {
        self.send(
            |tx| Job::Record(call, tx),
            || Err(RecordError::Store(StoreError::Gone)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Writer, sqlite::StateDb};

    fn add(k: &str) -> RecordCall {
        RecordCall::Add {
            container: "c".into(),
            key: k.into(),
            value: k.as_bytes().to_vec(),
            by: Writer::default(),
            fence: None,
        }
    }

    /// Jobs queued together are answered in order, each with its own
    /// outcome (a failing one does not fail the others), and what was
    /// answered is in the database when it is opened again.
    #[test]
    fn a_batch_answers_each_job_and_what_it_answered_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Mutex::new(StateDb::open(dir.path()).unwrap()));
        let mut w = StoreWorker::spawn(db.clone(), LocalRecords::new(db.clone())).unwrap();
        // (call, expected: Ok or the error code)
        let rows: Vec<(RecordCall, Result<(), &str>)> = vec![
            (add("a"), Ok(())),
            (add("b"), Ok(())),
            (add("a"), Err("EXISTS")),
            (
                RecordCall::Get {
                    container: "c".into(),
                    key: "zz".into(),
                },
                Err("NOENT"),
            ),
            (add("c"), Ok(())),
        ];
        let pending: Vec<_> = rows.iter().map(|(c, _)| w.call(c.clone())).collect();
        let reserved = w.reserve_tokens(7);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        for (i, (p, (_, want))) in pending.into_iter().zip(&rows).enumerate() {
            let got = rt.block_on(p.wait()).unwrap();
            match (got, want) {
                (Ok(_), Ok(())) => {}
                (Err(e), Err(code)) => assert_eq!(e.code(), *code, "row {i}"),
                (got, want) => panic!("row {i}: {got:?}, want {want:?}"),
            }
        }
        rt.block_on(reserved.wait()).unwrap().unwrap();
        drop(w);
        drop(db);
        // The worker thread lets go of the database once it sees the last
        // handle gone.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let again = loop {
            match StateDb::open(dir.path()) {
                Ok(db) => break db,
                Err(StoreError::Busy { .. }) if std::time::Instant::now() < deadline => {
                    std::thread::yield_now()
                }
                Err(e) => panic!("{e}"),
            }
        };
        let floor = StateDb::token_floor(&again).unwrap();
        let mut records = LocalRecords::new(Arc::new(Mutex::new(again)));
        let Pending::Ready(Ok(RecordOutcome::Records(rs))) = records.call(RecordCall::List {
            container: "c".into(),
        }) else {
            panic!("list failed")
        };
        let keys: Vec<String> = rs.into_iter().map(|r| r.key).collect();
        assert_eq!(keys, ["a", "b", "c"]);
        assert_eq!(floor, 7);
    }
}
