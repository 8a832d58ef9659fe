//! One object's view of its storage during events: the running event's
//! writes over the writes of earlier events of the same batch (not yet
//! durable) over the committed data, and the object's quota.

use std::collections::BTreeMap;
use std::ops::Bound;

use super::range::Lower;
use super::{Db, Entries, ListQuery};
use crate::error::StorageError;
use crate::ids::ObjectId;

/// The writes of one event (or of a batch of events): a map of key → new value
/// (`None` deletes), after an optional "delete everything".
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WriteSet {
    /// `delete-all` ran: every committed key is gone before `entries` apply.
    pub clear: bool,
    /// Key → value, or `None` for a delete.
    pub entries: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// The alarm was set (`Some(Some(at))`) or deleted (`Some(None)`).
    pub alarm: Option<Option<u64>>,
    /// A guest learnt in this event that another version wrote the data
    /// (`versions.upgraded-from`): the running version is to be recorded as
    /// the data's writer even if the event writes no key.
    pub record_writer: bool,
    /// The version whose events wrote `entries` (or cleared, or were told of
    /// the upgrade), recorded with them: set when the batch is taken for
    /// commit.
    pub writer: Option<String>,
}

impl WriteSet {
    /// True when applying it changes nothing.
    pub fn is_empty(&self) -> bool {
        !self.clear
            && self.entries.is_empty()
            && self.alarm.is_none()
            && !self.record_writer
            && self.writer.is_none()
    }

    /// Applies `later` on top of `self`.
    fn absorb(&mut self, later: WriteSet) {
        if later.clear {
            self.clear = true;
            self.entries.clear();
        }
        self.entries.extend(later.entries);
        if later.alarm.is_some() {
            self.alarm = later.alarm;
        }
        self.record_writer |= later.record_writer;
    }

    /// What this layer says about `key`: `Some(Some(v))` set, `Some(None)`
    /// deleted (or cleared), `None` look further down.
    fn lookup(&self, key: &[u8]) -> Option<Option<&[u8]>> {
        match self.entries.get(key) {
            Some(v) => Some(v.as_deref()),
            None if self.clear => Some(None),
            None => None,
        }
    }
}

/// One object's storage during events: event writes over batch writes over the
/// database.
///
/// The quota is checked against an upper bound of the usage, which costs no
/// database read: each put adds its key + value size, deletes subtract nothing,
/// and every commit resets the bound to the exact usage the committer reports.
/// Only a write that would take the bound past the quota pays for the exact
/// figure (reading the committed size of every key the batch touched).
pub struct ObjectStorage {
    db: Db,
    id: ObjectId,
    /// Writes of earlier events of the current batch, not yet durable.
    batch: WriteSet,
    /// Writes of the running event.
    event: WriteSet,
    /// The object's storage quota in bytes (keys + values); 0: none.
    quota: u64,
    /// Committed usage, exact, when known: from the last commit's result, or
    /// read once from the usage table.
    committed_usage: Option<u64>,
    /// An upper bound of the usage including the running event (None:
    /// unknown, compute it exactly).
    bound: Option<u64>,
    /// The same bound at the end of the batch's last kept event (a trap goes
    /// back to it).
    batch_bound: Option<u64>,
    /// Which version runs, and which wrote (boxed: most of an object's life
    /// is spent hibernating, where this is not needed).
    versions: Box<Writers>,
}

/// The versions an object's storage records as writers.
#[derive(Default)]
struct Writers {
    /// The version of the instance running the object's events.
    version: Option<String>,
    /// The version that last wrote the object's keys, as committed (outer
    /// `None`: not read yet).
    committed: Option<Option<String>>,
    /// The writer of the batch taken for commit, until its outcome is known.
    pending: Option<String>,
}

/// One object's writes, ready for the committer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Batch {
    /// The writes.
    pub writes: WriteSet,
    /// The object's committed usage before these writes, when its view knows
    /// it exactly (the committer then need not read it).
    pub usage_before: Option<u64>,
}

impl Batch {
    /// True when committing it changes nothing.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }
}

/// Why a write was refused.
#[derive(Debug)]
pub enum WriteError {
    /// The object's quota (bytes) would be exceeded.
    QuotaExceeded(u64),
    /// The database could not be read.
    Storage(StorageError),
}

impl From<StorageError> for WriteError {
    fn from(e: StorageError) -> WriteError {
        WriteError::Storage(e)
    }
}

fn entry_size(key: &[u8], value: &[u8]) -> i64 {
    i64::try_from(key.len() + value.len()).unwrap_or(i64::MAX)
}

impl ObjectStorage {
    /// A view of `id`'s keys.
    pub fn new(db: Db, id: ObjectId) -> ObjectStorage {
        ObjectStorage::with_quota(db, id, 0)
    }

    /// A view of `id`'s keys that refuses writes past `quota` bytes (0: none).
    pub fn with_quota(db: Db, id: ObjectId, quota: u64) -> ObjectStorage {
        ObjectStorage {
            db,
            id,
            batch: WriteSet::default(),
            event: WriteSet::default(),
            quota,
            committed_usage: None,
            bound: None,
            batch_bound: None,
            versions: Box::default(),
        }
    }

    /// The events from now on run on `version`: what they write is recorded
    /// as written by it.
    pub fn set_version(&mut self, version: &str) {
        if self.versions.version.as_deref() != Some(version) {
            self.versions.version = Some(version.to_string());
        }
    }

    /// The guest was told, in the running event, that another version wrote
    /// the data: if the event is kept, its version becomes the writer, so the
    /// next instance of this version is not told again.
    pub fn upgrade_seen(&mut self) {
        self.event.record_writer = true;
    }

    /// The version of the instance running the object's events.
    pub fn version(&self) -> Option<&str> {
        self.versions.version.as_deref()
    }

    /// The version that last wrote the object's keys, as this event sees it:
    /// the running version if this batch wrote any, else the committed one.
    pub fn data_version(&mut self) -> Result<Option<String>, StorageError> {
        // The running event's own claim (`upgrade_seen`) does not count: it
        // keeps reading the old writer until the event is over.
        let writes = |w: &WriteSet| w.clear || !w.entries.is_empty();
        if writes(&self.event) || writes(&self.batch) || self.batch.record_writer {
            return Ok(self.versions.version.clone());
        }
        if let Some(w) = &self.versions.pending {
            return Ok(Some(w.clone()));
        }
        if self.versions.committed.is_none() {
            self.versions.committed = Some(self.db.object_version(&self.id)?);
        }
        Ok(self.versions.committed.clone().flatten())
    }

    /// Ends the running event: its writes join the batch (`keep`) or are
    /// discarded (the guest trapped).
    pub fn end_event(&mut self, keep: bool) {
        let event = std::mem::take(&mut self.event);
        if keep {
            self.batch.absorb(event);
            self.batch_bound = self.bound;
        } else {
            self.bound = self.batch_bound;
        }
    }

    /// Takes the batch's writes for commit. Until [`ObjectStorage::committed`]
    /// reports the result, the committed usage is unknown.
    pub fn take_batch(&mut self) -> Batch {
        let mut writes = std::mem::take(&mut self.batch);
        // Record the writer with the keys, unless it is known to be recorded.
        let v = &mut *self.versions;
        let recorded = v.committed.as_ref().map(Option::as_deref);
        let claims = writes.clear || !writes.entries.is_empty() || writes.record_writer;
        if claims && recorded != Some(v.version.as_deref()) {
            writes.writer = v.version.clone();
            v.pending = writes.writer.clone();
        }
        // Carried by `writer` from here on (nothing to record if it is known).
        writes.record_writer = false;
        let usage_before = if writes.is_empty() {
            self.committed_usage
        } else {
            self.committed_usage.take()
        };
        Batch {
            writes,
            usage_before,
        }
    }

    /// The batch taken last is durable and the object now uses `usage` bytes.
    pub fn committed(&mut self, usage: u64) {
        if let Some(w) = self.versions.pending.take() {
            self.versions.committed = Some(Some(w));
        }
        self.committed_usage = Some(usage);
        self.bound = Some(usage);
        self.batch_bound = Some(usage);
    }

    /// The batch taken last was not committed: forget what it assumed.
    pub fn commit_failed(&mut self) {
        self.versions.pending = None;
        self.versions.committed = None;
        self.committed_usage = None;
        self.bound = None;
        self.batch_bound = None;
    }

    fn committed_usage(&mut self) -> Result<u64, StorageError> {
        match self.committed_usage {
            Some(u) => Ok(u),
            None => {
                let u = self.db.usage(&self.id)?;
                self.committed_usage = Some(u);
                Ok(u)
            }
        }
    }

    /// Bytes (keys + values) the object uses, as this event sees it, exactly:
    /// the committed usage, minus the committed size of every key the batch
    /// and the event wrote, plus what they wrote.
    pub fn usage(&mut self) -> Result<u64, StorageError> {
        let cleared = self.batch.clear || self.event.clear;
        let mut total = if cleared {
            0
        } else {
            i64::try_from(self.committed_usage()?).unwrap_or(i64::MAX)
        };
        let from_batch = self
            .batch
            .entries
            .iter()
            .filter(|(k, _)| !self.event.clear && !self.event.entries.contains_key(*k));
        for (k, v) in from_batch.chain(self.event.entries.iter()) {
            if !cleared && let Some(old) = self.db.get(&self.id, k)? {
                total -= entry_size(k, &old);
            }
            if let Some(v) = v {
                total += entry_size(k, v);
            }
        }
        Ok(u64::try_from(total).unwrap_or(0))
    }

    /// How much writing `entries` would change the usage by.
    fn delta_of(&self, entries: &[(Vec<u8>, Vec<u8>)]) -> Result<i64, StorageError> {
        let mut delta = 0;
        for (k, v) in entries {
            let old = self.get(k)?.map_or(0, |old| entry_size(k, &old));
            delta += entry_size(k, v) - old;
        }
        Ok(delta)
    }

    /// Buffers writes, all or none, within the quota.
    pub fn put_many(&mut self, entries: Vec<(Vec<u8>, Vec<u8>)>) -> Result<(), WriteError> {
        if self.quota > 0 {
            let added: u64 = entries
                .iter()
                .map(|(k, v)| (k.len() + v.len()) as u64)
                .sum();
            let bound = match self.bound {
                Some(b) => Some(b),
                // Nothing written since the last commit: the committed usage
                // is the bound (read once per actor, then kept up to date).
                None if self.batch.is_empty() && self.event.is_empty() => {
                    Some(self.committed_usage()?)
                }
                None => None,
            };
            match bound.map(|b| b.saturating_add(added)) {
                Some(after) if after <= self.quota => self.bound = Some(after),
                _ => {
                    // Close to the quota (or no bound): the exact figure.
                    let delta = self.delta_of(&entries)?;
                    let now = i64::try_from(self.usage()?).unwrap_or(i64::MAX);
                    let after = now.saturating_add(delta);
                    if delta > 0 && after > i64::try_from(self.quota).unwrap_or(i64::MAX) {
                        return Err(WriteError::QuotaExceeded(self.quota));
                    }
                    // `delta` is exact only without repeated keys; this is
                    // an upper bound either way.
                    let now = u64::try_from(now).unwrap_or(0);
                    self.bound = Some(now.saturating_add(added));
                }
            }
        }
        for (k, v) in entries {
            self.event.entries.insert(k, Some(v));
        }
        Ok(())
    }

    /// Reads a key: the event's writes, then the batch's, then the database.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        if let Some(v) = self.event.lookup(key) {
            return Ok(v.map(<[u8]>::to_vec));
        }
        if let Some(v) = self.batch.lookup(key) {
            return Ok(v.map(<[u8]>::to_vec));
        }
        self.db.get(&self.id, key)
    }

    /// Buffers a write in the event's write set, within the quota.
    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) -> Result<(), WriteError> {
        self.put_many(vec![(key, value)])
    }

    /// Buffers a delete; returns whether the key existed.
    pub fn delete(&mut self, key: Vec<u8>) -> Result<bool, StorageError> {
        // The bound stays: it is an upper bound, and shrinking never fails.
        let old = self.get(&key)?;
        self.event.entries.insert(key, None);
        Ok(old.is_some())
    }

    /// The pending alarm as this event sees it.
    pub fn alarm(&self) -> Result<Option<u64>, StorageError> {
        match (self.event.alarm, self.batch.alarm) {
            (Some(a), _) | (None, Some(a)) => Ok(a),
            (None, None) => self.db.alarm(&self.id),
        }
    }

    /// Sets (`Some`) or deletes (`None`) the alarm in the event's write set.
    pub fn set_alarm(&mut self, at_ms: Option<u64>) {
        self.event.alarm = Some(at_ms);
    }

    /// True when the running event set or deleted the alarm.
    pub fn event_touched_alarm(&self) -> bool {
        self.event.alarm.is_some()
    }

    /// Buffers the deletion of every key.
    pub fn delete_all(&mut self) {
        self.event.clear = true;
        self.event.entries.clear();
        // Everything is gone: the usage drops to zero.
        self.bound = Some(0);
    }

    /// Lists entries in key order (or reverse), merging the layers.
    pub fn list(&self, q: &ListQuery) -> Result<Entries, StorageError> {
        let (lo, hi) = q.bounds();
        let limit = q.limit.unwrap_or(usize::MAX);
        if limit == 0 || lo.is_empty_with(&hi) {
            return Ok(Vec::new());
        }
        let in_range =
            |k: &[u8]| lo.admits_from_below(k) && hi.as_ref().is_none_or(|h| k < h.as_slice());
        // The overlay: batch writes under event writes, restricted to the range.
        let mut overlay: BTreeMap<&[u8], Option<&[u8]>> = BTreeMap::new();
        for layer in [&self.batch, &self.event] {
            if layer.clear {
                overlay.clear();
            }
            for (k, v) in &layer.entries {
                if in_range(k) {
                    overlay.insert(k.as_slice(), v.as_deref());
                }
            }
        }
        // A stack whose top is the next overlay entry in iteration order.
        let mut pending: Vec<(&[u8], Option<&[u8]>)> = overlay.into_iter().collect();
        if !q.reverse {
            pending.reverse();
        }
        let comes_before = |a: &[u8], b: &[u8]| if q.reverse { a > b } else { a < b };
        let mut out: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let emit = |out: &mut Vec<(Vec<u8>, Vec<u8>)>, k: &[u8], v: Option<&[u8]>| {
            if let (Some(v), true) = (v, out.len() < limit) {
                out.push((k.to_vec(), v.to_vec()));
            }
        };
        if !(self.batch.clear || self.event.clear) {
            let lo_bound = match &lo {
                Lower::Unbounded => Bound::Unbounded,
                Lower::Included(k) => Bound::Included(k.as_slice()),
                Lower::Excluded(k) => Bound::Excluded(k.as_slice()),
            };
            let hi_bound = match &hi {
                Some(h) => Bound::Excluded(h.as_slice()),
                None => Bound::Unbounded,
            };
            self.db
                .scan(&self.id, lo_bound, hi_bound, q.reverse, |k, v| {
                    // Overlay entries that come first, then this key unless shadowed.
                    let mut shadowed = false;
                    while let Some(&(ok, ov)) = pending.last() {
                        if comes_before(ok, k) {
                            pending.pop();
                            emit(&mut out, ok, ov);
                        } else {
                            if ok == k {
                                pending.pop();
                                emit(&mut out, ok, ov);
                                shadowed = true;
                            }
                            break;
                        }
                    }
                    if !shadowed {
                        emit(&mut out, k, Some(v));
                    }
                    out.len() < limit
                })?;
        }
        while let Some((k, v)) = pending.pop() {
            if out.len() >= limit {
                break;
            }
            emit(&mut out, k, v);
        }
        Ok(out)
    }
}
