//! Storage: one redb file, each object sees only its own keys, every event is a
//! transaction.
//!
//! - [`Db`] (here) owns the redb [`redb::Database`] and reads committed data.
//! - [`ObjectStorage`] ([`view`]) is one object's view: the current event's
//!   write set over the writes of earlier events of the same batch (not yet
//!   durable) over the committed data, with the object's quota. A trap
//!   discards the event's write set only.
//! - [`ListQuery`] ([`range`]) turns `list`'s prefix, start and end into one
//!   key range.
//! - [`committer`] takes the write sets of many objects and commits them in one
//!   redb write transaction with one fsync (group commit).
//! - [`host`]: the `storage` interface for guests ([`StorageView`]), limits
//!   checked there.
//! - [`schema`]: the redb tables.
//!
//! Limits are the Durable Objects ones: keys ≤ 2 KiB, values ≤ 128 KiB, ≤ 128
//! keys per batch call.

pub mod backup;
pub mod committer;
pub mod host;
pub mod range;
pub mod schema;
pub mod view;

use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadTransaction, ReadableDatabase, ReadableTable};
use serde::Deserialize;

use crate::error::StorageError;
use crate::ids::ObjectId;
pub use host::{StorageView, add_to_linker};
pub use range::ListQuery;
use schema::{ALARMS, CLASSES, COMPONENTS, KV, OBJECT_VERSIONS, USAGE};
pub use view::{Batch, ObjectStorage, WriteError, WriteSet};

/// The largest key, in bytes. A guest could otherwise store unbounded keys.
pub const MAX_KEY_BYTES: usize = 2048;
/// The largest value, in bytes.
pub const MAX_VALUE_BYTES: usize = 128 * 1024;
/// The most keys in one `get-many` / `put-many` / `delete-many`.
pub const MAX_KEYS_PER_CALL: usize = 128;

/// Key-value entries as returned by `list`.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// Whether a commit waits for the disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Durability {
    /// Every commit is fsynced before its output is released (the default).
    #[default]
    Immediate,
    /// Commits are not fsynced: a crash may lose acknowledged writes. For
    /// benchmarks and tests that say so.
    None,
}

/// The database, shared by every object.
#[derive(Clone)]
pub struct Db {
    inner: Arc<Database>,
}

impl Db {
    /// Opens (or creates) the database file, creating its parent directory,
    /// with redb's default page cache.
    pub fn open(path: &Path) -> Result<Db, StorageError> {
        Db::open_with_cache(path, None)
    }

    /// [`Db::open`] with a page cache of `cache_bytes` (`None`: redb's
    /// default).
    pub fn open_with_cache(path: &Path, cache_bytes: Option<usize>) -> Result<Db, StorageError> {
        let open = || -> Result<Database, redb::Error> {
            if let Some(dir) = path.parent()
                && !dir.as_os_str().is_empty()
            {
                std::fs::create_dir_all(dir)?;
            }
            let mut builder = Database::builder();
            if let Some(bytes) = cache_bytes {
                builder.set_cache_size(bytes);
            }
            let db = builder.create(path)?;
            // Make sure the tables exist so that readers never see "no such table".
            let txn = db.begin_write()?;
            txn.open_table(KV)?;
            txn.open_table(USAGE)?;
            txn.open_table(ALARMS)?;
            txn.open_table(CLASSES)?;
            txn.open_table(COMPONENTS)?;
            txn.open_table(OBJECT_VERSIONS)?;
            txn.commit()?;
            Ok(db)
        };
        let db = open().map_err(|e| StorageError::Open {
            path: path.to_owned(),
            source: Arc::new(e),
        })?;
        Ok(Db {
            inner: Arc::new(db),
        })
    }

    pub(crate) fn database(&self) -> &Database {
        &self.inner
    }

    /// Runs `f` in a read transaction; any redb error is a [`StorageError::Read`].
    fn read<R>(
        &self,
        f: impl FnOnce(ReadTransaction) -> Result<R, redb::Error>,
    ) -> Result<R, StorageError> {
        self.inner
            .begin_read()
            .map_err(redb::Error::from)
            .and_then(f)
            .map_err(|e| StorageError::Read(Arc::new(e)))
    }

    /// A committed value of `id`.
    pub(crate) fn get(&self, id: &ObjectId, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.read(|txn| {
            let table = txn.open_table(KV)?;
            let value = table.get((id.class.as_str(), id.name.as_str(), key))?;
            Ok(value.map(|v| v.value().to_vec()))
        })
    }

    /// Bytes (keys + values) an object has committed.
    pub fn usage(&self, id: &ObjectId) -> Result<u64, StorageError> {
        self.read(|txn| {
            let table = txn.open_table(USAGE)?;
            let value = table.get((id.class.as_str(), id.name.as_str()))?;
            Ok(value.map_or(0, |v| v.value()))
        })
    }

    /// `id`'s committed alarm.
    pub(crate) fn alarm(&self, id: &ObjectId) -> Result<Option<u64>, StorageError> {
        self.read(|txn| {
            let table = txn.open_table(ALARMS)?;
            let value = table.get((id.class.as_str(), id.name.as_str()))?;
            Ok(value.map(|v| v.value()))
        })
    }

    /// The version that last wrote `id`'s keys.
    pub(crate) fn object_version(&self, id: &ObjectId) -> Result<Option<String>, StorageError> {
        self.read(|txn| {
            let table = txn.open_table(OBJECT_VERSIONS)?;
            let value = table.get((id.class.as_str(), id.name.as_str()))?;
            Ok(value.map(|v| v.value().to_string()))
        })
    }

    /// Every stored alarm (to schedule them at start-up).
    pub fn all_alarms(&self) -> Result<Vec<(ObjectId, u64)>, StorageError> {
        self.read(|txn| {
            let table = txn.open_table(ALARMS)?;
            let mut out = Vec::new();
            for entry in table.iter()? {
                let (k, v) = entry?;
                let (class, name) = k.value();
                out.push((ObjectId::new(class, name), v.value()));
            }
            Ok(out)
        })
    }

    /// Every class record (`class → JSON`), for start-up.
    pub fn classes(&self) -> Result<Vec<(String, Vec<u8>)>, StorageError> {
        self.read(|txn| {
            let table = txn.open_table(CLASSES)?;
            let mut out = Vec::new();
            for entry in table.iter()? {
                let (k, v) = entry?;
                out.push((k.value().to_string(), v.value().to_vec()));
            }
            Ok(out)
        })
    }

    /// A component's bytes by content hash.
    pub fn component(&self, hash: &str) -> Result<Option<Vec<u8>>, StorageError> {
        self.read(|txn| {
            let table = txn.open_table(COMPONENTS)?;
            Ok(table.get(hash)?.map(|v| v.value().to_vec()))
        })
    }

    /// Writes class records and new component bytes in one durable
    /// transaction (deploys and rollbacks; rare, and apart from the
    /// committer, which they wait for at most one commit).
    pub fn save_classes(
        &self,
        records: &[(&str, Vec<u8>)],
        components: &[(&str, &[u8])],
    ) -> Result<(), StorageError> {
        let write = || -> Result<(), redb::Error> {
            let txn = self.inner.begin_write()?;
            {
                let mut classes = txn.open_table(CLASSES)?;
                for (class, record) in records {
                    classes.insert(*class, record.as_slice())?;
                }
                let mut bytes = txn.open_table(COMPONENTS)?;
                for (hash, component) in components {
                    if bytes.get(*hash)?.is_none() {
                        bytes.insert(*hash, *component)?;
                    }
                }
            }
            txn.commit()?;
            Ok(())
        };
        write().map_err(|e| StorageError::Commit(Arc::new(e)))
    }

    /// Visits committed entries of one object with keys between `lo` and
    /// `hi`, in the requested direction, until `visit` returns false.
    pub(crate) fn scan(
        &self,
        id: &ObjectId,
        lo: Bound<&[u8]>,
        hi: Bound<&[u8]>,
        reverse: bool,
        mut visit: impl FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StorageError> {
        let (c, n) = (id.class.as_str(), id.name.as_str());
        // The name just past this object's: no name sorts between `n` and `n\0`.
        let next_name = format!("{n}\0");
        let lo = match lo {
            Bound::Included(k) => Bound::Included((c, n, k)),
            Bound::Excluded(k) => Bound::Excluded((c, n, k)),
            Bound::Unbounded => Bound::Included((c, n, &b""[..])),
        };
        let hi = match hi {
            Bound::Included(k) => Bound::Included((c, n, k)),
            Bound::Excluded(k) => Bound::Excluded((c, n, k)),
            Bound::Unbounded => Bound::Excluded((c, next_name.as_str(), &b""[..])),
        };
        self.read(|txn| {
            let table = txn.open_table(KV)?;
            let range = table.range::<(&str, &str, &[u8])>((lo, hi))?;
            let rows: Box<dyn Iterator<Item = _>> = if reverse {
                Box::new(range.rev())
            } else {
                Box::new(range)
            };
            for row in rows {
                let (k, v) = row?;
                let (_, _, key) = k.value();
                if !visit(key, v.value()) {
                    break;
                }
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests;
