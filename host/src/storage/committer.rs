//! Group commit: one thread takes the write sets of every batch that finished
//! since the last commit — across all objects — and commits them in one redb
//! write transaction, with one fsync. Each requester learns when its writes are
//! durable (or that the commit failed) and only then releases its output.
//!
//! A failed commit is fatal. After an I/O error redb refuses every later
//! transaction (`PreviousIo`) until the database is closed and reopened, and
//! reopening repairs it. So the first failure is kept, every later request
//! fails at once without touching the database, and [`Committer::failed`]
//! tells the server, which shuts the host down for its supervisor to restart.

use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use redb::ReadableTable;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::error::StorageError;
use crate::ids::ObjectId;
use crate::metrics::Metrics;
use crate::storage::schema::{ALARMS, KV, OBJECT_VERSIONS, USAGE};
use crate::storage::{Batch, Db, Durability};

struct Request {
    id: ObjectId,
    batch: Batch,
    /// The object's usage after the commit, or why it failed.
    done: oneshot::Sender<Result<u64, StorageError>>,
}

/// A cheap handle to the committer thread.
#[derive(Clone)]
pub struct Committer {
    tx: mpsc::Sender<Request>,
    failure: Arc<Failure>,
}

/// The first failed commit, once there is one.
#[derive(Default)]
struct Failure {
    error: OnceLock<StorageError>,
    /// Cancelled when `error` is set.
    token: CancellationToken,
}

impl Failure {
    fn set(&self, e: StorageError) {
        let _ = self.error.set(e);
        self.token.cancel();
    }

    /// What a request gets once the storage has failed.
    fn refusal(&self) -> Option<StorageError> {
        self.error
            .get()
            .map(|e| StorageError::Failed(Box::new(e.clone())))
    }
}

/// Joins the committer thread when the last [`Committer`] is dropped.
pub struct CommitterThread(Option<std::thread::JoinHandle<()>>);

impl CommitterThread {
    /// Waits for the thread to finish its last commit.
    pub fn join(mut self) {
        if let Some(t) = self.0.take() {
            let _ = t.join();
        }
    }
}

impl Committer {
    /// Starts the committer thread.
    pub fn start(
        db: Db,
        durability: Durability,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<(Committer, CommitterThread)> {
        Committer::start_with(db, durability, true, metrics)
    }

    /// Starts the committer thread; without `group`, each batch is committed
    /// in its own transaction (for measuring what group commit buys).
    pub fn start_with(
        db: Db,
        durability: Durability,
        group: bool,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<(Committer, CommitterThread)> {
        let (tx, rx) = mpsc::channel::<Request>();
        let failure = Arc::new(Failure::default());
        let f = failure.clone();
        let thread = std::thread::Builder::new()
            .name("roomhost-committer".into())
            .spawn(move || run(db, durability, group, metrics, &f, rx))?;
        Ok((Committer { tx, failure }, CommitterThread(Some(thread))))
    }

    /// Resolves once a commit has failed (the storage is unusable until the
    /// host restarts). It holds no handle: the committer still stops when
    /// the last [`Committer`] is dropped.
    pub fn failed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.failure.token.clone().cancelled_owned()
    }

    /// The first commit failure, if one happened.
    pub fn failure(&self) -> Option<StorageError> {
        self.failure.error.get().cloned()
    }

    /// An error for anything that would release output, once storage failed.
    pub fn refusal(&self) -> Option<StorageError> {
        self.failure.refusal()
    }

    /// Commits one object's writes; resolves when they are durable, with the
    /// bytes (keys + values) the object stores now.
    pub async fn commit(&self, id: ObjectId, batch: Batch) -> Result<u64, StorageError> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Request { id, batch, done })
            .map_err(|_| StorageError::CommitterStopped)?;
        wait.await.map_err(|_| StorageError::CommitterStopped)?
    }
}

fn run(
    db: Db,
    durability: Durability,
    group: bool,
    metrics: Arc<Metrics>,
    failure: &Failure,
    rx: mpsc::Receiver<Request>,
) {
    let mut usages = Vec::new();
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while group && let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        if let Some(refusal) = failure.refusal() {
            for req in batch {
                let _ = req.done.send(Err(refusal.clone()));
            }
            continue;
        }
        let started = Instant::now();
        let result = commit_batch(&db, durability, &batch, &mut usages);
        metrics.record_commit(batch.len(), started.elapsed());
        match result {
            Ok(()) => {
                for (req, used) in batch.into_iter().zip(usages.drain(..)) {
                    let _ = req.done.send(Ok(used));
                }
            }
            Err(e) => {
                tracing::error!(
                    error = %crate::error::Report(&e),
                    objects = batch.len(),
                    "group commit failed; the batches' output is dropped and no further commit \
                     is attempted: the host shuts down so that a restart reopens (and repairs) \
                     the database"
                );
                failure.set(e.clone());
                for req in batch {
                    let _ = req.done.send(Err(e.clone()));
                }
            }
        }
    }
}

/// Commits every request's writes in one transaction; `usages` gets each
/// object's usage afterwards, in order.
fn commit_batch(
    db: &Db,
    durability: Durability,
    batch: &[Request],
    usages: &mut Vec<u64>,
) -> Result<(), StorageError> {
    usages.clear();
    write_batch(db, durability, batch, usages).map_err(|e| StorageError::Commit(Arc::new(e)))
}

/// [`commit_batch`]'s transaction.
fn write_batch(
    db: &Db,
    durability: Durability,
    batch: &[Request],
    usages: &mut Vec<u64>,
) -> Result<(), redb::Error> {
    let mut txn = db.database().begin_write()?;
    txn.set_durability(match durability {
        Durability::Immediate => redb::Durability::Immediate,
        Durability::None => redb::Durability::None,
    })?;
    {
        let mut table = txn.open_table(KV)?;
        let mut alarms = txn.open_table(ALARMS)?;
        let mut usage = txn.open_table(USAGE)?;
        let mut versions = txn.open_table(OBJECT_VERSIONS)?;
        for req in batch {
            let writes = &req.batch.writes;
            match writes.alarm {
                Some(Some(at)) => {
                    alarms.insert((req.id.class.as_str(), req.id.name.as_str()), at)?;
                }
                Some(None) => {
                    alarms.remove((req.id.class.as_str(), req.id.name.as_str()))?;
                }
                None => {}
            }
            let (c, n) = (req.id.class.as_str(), req.id.name.as_str());
            if let Some(writer) = &writes.writer {
                versions.insert((c, n), writer.as_str())?;
            }
            // The object's view knows its usage after its first commit; only
            // a fresh one makes us read it.
            let before = match req.batch.usage_before {
                Some(u) => u,
                None => usage.get((c, n))?.map_or(0, |v| v.value()),
            };
            let mut used = before;
            if writes.clear {
                let next_name = format!("{n}\0");
                table.retain_in::<(&str, &str, &[u8]), _>(
                    (c, n, &b""[..])..(c, next_name.as_str(), &b""[..]),
                    |_, _| false,
                )?;
                used = 0;
            }
            for (key, value) in &writes.entries {
                let old = match value {
                    Some(v) => {
                        used += (key.len() + v.len()) as u64;
                        table
                            .insert((c, n, key.as_slice()), v.as_slice())?
                            .map(|old| old.value().len())
                    }
                    None => table
                        .remove((c, n, key.as_slice()))?
                        .map(|old| old.value().len()),
                };
                if let Some(old) = old {
                    used = used.saturating_sub((key.len() + old) as u64);
                }
            }
            if used != before {
                if used == 0 {
                    usage.remove((c, n))?;
                } else {
                    usage.insert((c, n), used)?;
                }
            }
            usages.push(used);
        }
    }
    Ok(txn.commit()?)
}
