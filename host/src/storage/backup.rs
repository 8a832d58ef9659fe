//! Backups of a serving host: every table copied, from one read transaction,
//! into a fresh redb file.
//!
//! A redb read transaction is a consistent snapshot (MVCC): it sees exactly
//! the commits that finished before it began, and it holds no lock, so the
//! committer keeps committing while the copy runs (writes wait for nothing;
//! the database file only keeps the snapshot's pages until the copy ends).
//! The copy is a database of its own that `roomhost serve --data FILE` opens.

use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable};

use super::Db;
use super::schema::{ALARMS, CLASSES, COMPONENTS, KV, OBJECT_VERSIONS, USAGE};
use crate::error::StorageError;

/// What a snapshot holds.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct SnapshotStats {
    /// Rows copied, over all tables.
    pub rows: u64,
    /// Objects' key-value pairs among them.
    pub kv_rows: u64,
    /// Time spent copying the rows (ms)...
    pub copy_ms: u64,
    /// ... and committing the copy (ms).
    pub commit_ms: u64,
}

/// Copies every row of `$def` from `$src` (a read transaction) into `$dst` (a
/// write transaction), counting rows into `$rows`.
macro_rules! copy_table {
    ($src:expr, $dst:expr, $def:expr, $rows:expr) => {{
        let from = $src.open_table($def)?;
        let mut to = $dst.open_table($def)?;
        for row in from.iter()? {
            let (k, v) = row?;
            to.insert(k.value(), v.value())?;
            $rows += 1;
        }
    }};
}

/// A redb file that is never forced to disk: the snapshot's temporary copy.
/// It is read back once, streamed to whoever asked for the backup (who makes
/// its own copy durable), and deleted, so an fsync would only write a
/// gigabyte that is about to be thrown away — and would make every commit
/// of the serving database queue behind it on the same disk. Unsynced, its
/// pages stay in the page cache until the file is deleted.
#[derive(Debug)]
struct Unsynced(redb::backends::FileBackend);

impl redb::StorageBackend for Unsynced {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.0.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        self.0.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        self.0.set_len(len)
    }

    fn sync_data(&self) -> Result<(), std::io::Error> {
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        self.0.write(offset, data)
    }

    fn close(&self) -> Result<(), std::io::Error> {
        self.0.close()
    }
}

impl Db {
    /// Writes a consistent snapshot of the whole database into `target` (an
    /// empty or missing file), not synced to disk: the caller streams it
    /// away and deletes it. Blocking: call it off the async threads.
    pub fn snapshot_to(&self, target: &Path) -> Result<SnapshotStats, StorageError> {
        let copy = || -> Result<SnapshotStats, redb::Error> {
            // The snapshot: from here on, commits do not change what it sees.
            let src = self.database().begin_read()?;
            let started = std::time::Instant::now();
            // Not O_TRUNC: on ext4 a file truncated to nothing is written
            // back in full when it is closed (auto_da_alloc), and that burst
            // of writes is what the serving database's commits would wait
            // behind. The target is new, so there is nothing to truncate.
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(target)
                .map_err(redb::Error::Io)?;
            let len = file.metadata().map_err(redb::Error::Io)?.len();
            if len != 0 {
                return Err(redb::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    format!("{} is not empty", target.display()),
                )));
            }
            let out = Database::builder()
                .set_cache_size(64 * 1024 * 1024)
                .create_with_backend(Unsynced(redb::backends::FileBackend::new(file)?))?;
            let dst = out.begin_write()?;
            let mut stats = SnapshotStats::default();
            let mut rows = 0u64;
            copy_table!(src, dst, KV, rows);
            stats.kv_rows = rows;
            copy_table!(src, dst, USAGE, rows);
            copy_table!(src, dst, ALARMS, rows);
            copy_table!(src, dst, CLASSES, rows);
            copy_table!(src, dst, COMPONENTS, rows);
            copy_table!(src, dst, OBJECT_VERSIONS, rows);
            stats.rows = rows;
            stats.copy_ms = started.elapsed().as_millis() as u64;
            let committing = std::time::Instant::now();
            dst.commit()?;
            stats.commit_ms = committing.elapsed().as_millis() as u64;
            drop(src);
            Ok(stats)
        };
        copy().map_err(|e| StorageError::Backup {
            path: target.to_owned(),
            source: Arc::new(e),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::ids::ObjectId;

    #[test]
    fn a_snapshot_opens_as_a_database_with_the_same_rows() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("a.redb")).unwrap();
        {
            let txn = db.database().begin_write().unwrap();
            {
                let mut kv = txn.open_table(KV).unwrap();
                kv.insert(("c", "n", &b"k"[..]), &b"\xffv"[..]).unwrap();
                let mut alarms = txn.open_table(ALARMS).unwrap();
                alarms.insert(("c", "n"), 42u64).unwrap();
            }
            txn.commit().unwrap();
        }
        let target = dir.path().join("b.redb");
        let stats = db.snapshot_to(&target).unwrap();
        assert_eq!((stats.rows, stats.kv_rows), (2, 1));
        drop(db);
        let copy = Db::open(&target).unwrap();
        let id = ObjectId::new("c", "n");
        assert_eq!(copy.get(&id, b"k").unwrap().as_deref(), Some(&b"\xffv"[..]));
        assert_eq!(copy.alarm(&id).unwrap(), Some(42));
    }
}
