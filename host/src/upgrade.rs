//! The `versions` interface for guests: which version an instance runs, and
//! which version last wrote the object's data ([`VersionsView`], over the
//! object's storage view, which records the writer with every commit that
//! writes keys).

use crate::bindings::roomhost::object::versions::{self as wit, Host};
use crate::error::Report;
use crate::storage::ObjectStorage;

/// What a guest's `versions` calls work on: the object's storage, which knows
/// the running version and the one that last wrote.
pub struct VersionsView<'a> {
    /// The object's storage during the running event.
    pub storage: &'a mut ObjectStorage,
}

crate::bindings::link_view!(VersionsView, wit, "versions");

impl Host for VersionsView<'_> {
    fn current(&mut self) -> String {
        self.storage.version().unwrap_or_default().to_string()
    }

    fn upgraded_from(&mut self) -> Option<String> {
        let current = self.storage.version().map(str::to_string);
        match self.storage.data_version() {
            Ok(writer) => {
                let from = writer.filter(|w| Some(w) != current.as_ref());
                if from.is_some() {
                    // Told once: recorded with this event, if it is kept.
                    self.storage.upgrade_seen();
                }
                from
            }
            Err(e) => {
                tracing::error!(error = %Report(&e), "cannot read which version wrote the object's data");
                None
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::ids::ObjectId;
    use crate::storage::Db;

    #[test]
    fn a_new_version_learns_which_one_wrote_until_it_writes() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("db.redb")).unwrap();
        let mut s = ObjectStorage::new(db, ObjectId::new("c", "n"));
        s.set_version("v1");
        let v = |s: &mut ObjectStorage| VersionsView { storage: s }.upgraded_from();
        assert_eq!(v(&mut s), None, "no data yet");
        s.put(b"k".to_vec(), b"1".to_vec()).unwrap();
        s.end_event(true);
        let batch = s.take_batch();
        assert_eq!(batch.writes.writer.as_deref(), Some("v1"));
        s.committed(3);
        assert_eq!(v(&mut s), None, "v1 wrote it");

        s.set_version("v2");
        assert_eq!(VersionsView { storage: &mut s }.current(), "v2");
        assert_eq!(v(&mut s), Some("v1".to_string()));
        // A read-only event leaves it so; a trapping write too.
        s.put(b"k".to_vec(), b"2".to_vec()).unwrap();
        assert_eq!(v(&mut s), None, "the running event writes as v2");
        s.end_event(false);
        assert_eq!(v(&mut s), Some("v1".to_string()));
        s.put(b"k".to_vec(), b"2".to_vec()).unwrap();
        s.end_event(true);
        assert_eq!(s.take_batch().writes.writer.as_deref(), Some("v2"));
        s.committed(3);
        assert_eq!(v(&mut s), None);
        // A version that is told of the upgrade and writes nothing is told
        // only once: the event that told it records it (unless it traps).
        s.set_version("v3");
        assert_eq!(v(&mut s), Some("v2".to_string()));
        assert_eq!(
            v(&mut s),
            Some("v2".to_string()),
            "the same event asks again"
        );
        s.end_event(false);
        assert_eq!(v(&mut s), Some("v2".to_string()), "a trap: told again");
        s.end_event(true);
        assert_eq!(v(&mut s), None, "a later event of the batch");
        let batch = s.take_batch();
        assert!(!batch.is_empty());
        assert_eq!(batch.writes.writer.as_deref(), Some("v3"));
        s.committed(3);
        assert_eq!(v(&mut s), None);
        // Once recorded, later batches of the same version do not repeat it.
        s.put(b"k".to_vec(), b"3".to_vec()).unwrap();
        s.end_event(true);
        assert_eq!(s.take_batch().writes.writer, None);
    }
}
