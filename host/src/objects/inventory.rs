//! What the admin API shows about objects: `roomhost objects` (a page of
//! objects, live, hibernated or only stored) and `roomhost evict`.

use std::collections::BTreeSet;
use std::ops::Bound;
use std::sync::atomic::Ordering;

use redb::{ReadableDatabase, TableDefinition};
use serde::Serialize;

use super::Runtime;
use crate::error::{AdminError, StorageError};
use crate::ids::ObjectId;
use crate::storage::Db;
use crate::storage::schema::{ALARMS, USAGE};

/// Which objects `roomhost objects` lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filter {
    /// Every object: live, hibernated, or only stored.
    All,
    /// With a live instance.
    Live,
    /// With sockets open but no instance.
    Hibernated,
    /// Neither: only in the database (stored keys or an alarm).
    Stored,
}

impl Filter {
    /// `live`, `hibernated`, `stored` or `all`.
    pub fn parse(s: &str) -> Option<Filter> {
        match s {
            "all" => Some(Filter::All),
            "live" => Some(Filter::Live),
            "hibernated" => Some(Filter::Hibernated),
            "stored" => Some(Filter::Stored),
            _ => None,
        }
    }
}

/// One object, as listed.
#[derive(Debug, Serialize)]
pub struct ObjectInfo {
    /// Its class.
    pub class: String,
    /// Its name.
    pub name: String,
    /// The version its instance runs (live), ran last (hibernated), or that
    /// last wrote its keys (stored).
    pub version: Option<String>,
    /// `live`, `hibernated` or `stored`.
    pub state: &'static str,
    /// Its open WebSockets.
    pub sockets: u64,
    /// Bytes (keys + values) it stores.
    pub stored_bytes: u64,
    /// Its alarm, in ms since the epoch.
    pub alarm_ms: Option<u64>,
}

/// A page of objects and where the next one starts.
#[derive(Debug, Serialize)]
pub struct ObjectPage {
    /// The objects, ordered by class then name.
    pub objects: Vec<ObjectInfo>,
    /// Pass as `after` for the next page; absent on the last one.
    pub next: Option<String>,
}

/// A cursor: `class/name` (class names have no '/').
pub fn cursor(id: &ObjectId) -> String {
    format!("{}/{}", id.class, id.name)
}

/// Reads a cursor back.
pub fn parse_cursor(s: &str) -> Option<ObjectId> {
    let (class, name) = s.split_once('/')?;
    Some(ObjectId::new(class, name))
}

impl Db {
    /// Up to `limit` objects with a row in `table` (keyed by class and name)
    /// after `after`, of `class` if given.
    fn ids_in(
        &self,
        table: TableDefinition<(&str, &str), u64>,
        class: Option<&str>,
        after: Option<&ObjectId>,
        limit: usize,
    ) -> Result<Vec<ObjectId>, StorageError> {
        let read = || -> Result<Vec<ObjectId>, redb::Error> {
            let txn = self.database().begin_read()?;
            let t = txn.open_table(table)?;
            let lo = match (after, class) {
                (Some(a), Some(c)) if a.class.as_str() >= c => {
                    Bound::Excluded((a.class.as_str(), a.name.as_str()))
                }
                (Some(a), None) => Bound::Excluded((a.class.as_str(), a.name.as_str())),
                (_, Some(c)) => Bound::Included((c, "")),
                (None, None) => Bound::Unbounded,
            };
            let mut out = Vec::new();
            for row in t.range::<(&str, &str)>((lo, Bound::Unbounded))? {
                let (k, _) = row?;
                let (c, n) = k.value();
                if class.is_some_and(|want| want != c) {
                    break;
                }
                out.push(ObjectId::new(c, n));
                if out.len() >= limit {
                    break;
                }
            }
            Ok(out)
        };
        read().map_err(|e| StorageError::Read(std::sync::Arc::new(e)))
    }
}

impl Runtime {
    /// A page of at most `limit` objects after `after`, ordered by class then
    /// name. Objects with an actor come from the directory, the others from
    /// the database (stored bytes or an alarm).
    pub fn list_objects(
        &self,
        class: Option<&str>,
        filter: Filter,
        after: Option<&ObjectId>,
        limit: usize,
    ) -> Result<ObjectPage, StorageError> {
        let limit = limit.max(1);
        // (id, version, live, sockets) of every actor after the cursor.
        let mut actors = std::collections::BTreeMap::new();
        if let Ok(dir) = self.directory.lock() {
            for (id, e) in dir.iter() {
                if class.is_some_and(|c| c != id.class)
                    || after.is_some_and(|a| id <= a)
                    || e.handle.is_closed()
                {
                    continue;
                }
                let version = e.status.version.lock().ok().and_then(|v| v.clone());
                let live = e.status.live.load(Ordering::Relaxed);
                let sockets = e.status.sockets.load(Ordering::Relaxed) as u64;
                if !live && sockets == 0 {
                    continue; // neither live nor hibernating: what it stores says
                }
                actors.insert(id.clone(), (version, live, sockets));
            }
        }
        let mut ids: BTreeSet<ObjectId> = actors.keys().cloned().collect();
        if matches!(filter, Filter::All | Filter::Stored) {
            // One more than a page from each source tells whether more follow.
            ids.extend(self.db.ids_in(USAGE, class, after, limit + 1)?);
            ids.extend(self.db.ids_in(ALARMS, class, after, limit + 1)?);
        }
        let more = ids.len() > limit;
        let page: Vec<ObjectId> = ids.into_iter().take(limit).collect();
        let next = if more { page.last().map(cursor) } else { None };
        let mut objects = Vec::new();
        for id in page {
            let (version, state, sockets) = match actors.remove(&id) {
                Some((v, true, s)) => (v, "live", s),
                Some((v, false, s)) => (v, "hibernated", s),
                None => (None, "stored", 0),
            };
            let keep = match filter {
                Filter::All => true,
                Filter::Live => state == "live",
                Filter::Hibernated => state == "hibernated",
                Filter::Stored => state == "stored",
            };
            if !keep {
                continue;
            }
            let version = match version {
                Some(v) => Some(v),
                None => self.db.object_version(&id)?,
            };
            objects.push(ObjectInfo {
                stored_bytes: self.db.usage(&id)?,
                alarm_ms: self.db.alarm(&id)?,
                class: id.class,
                name: id.name,
                version,
                state,
                sockets,
            });
        }
        Ok(ObjectPage { objects, next })
    }

    /// Drops `id`'s instance between two of its events; its sockets stay.
    /// False when it has no live instance.
    pub fn evict(&self, id: &ObjectId) -> Result<bool, AdminError> {
        if !self.object_exists(id)? {
            return Err(AdminError::NoSuchObject(id.clone()));
        }
        let Ok(dir) = self.directory.lock() else {
            return Ok(false);
        };
        match dir.get(id) {
            Some(e) if !e.handle.is_closed() && e.status.live.load(Ordering::Relaxed) => {
                e.status.evict.notify_one();
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}
