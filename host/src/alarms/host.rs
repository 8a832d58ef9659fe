//! The `alarms` interface for guests: an [`AlarmsView`] over one object's
//! storage, where the alarm is part of the running event's transaction (the
//! scheduler learns of it once the event is durable).

use crate::bindings::roomhost::object::alarms::{self as wit, Host};
use crate::error::Report;
use crate::ids::ObjectId;
use crate::storage::ObjectStorage;

/// What a guest's `alarms` calls work on.
pub struct AlarmsView<'a> {
    /// The object's storage during the running event.
    pub storage: &'a mut ObjectStorage,
    /// The object (for the log, when its alarm cannot be read).
    pub object: &'a ObjectId,
}

crate::bindings::link_view!(AlarmsView, wit, "alarms");

impl Host for AlarmsView<'_> {
    fn set(&mut self, at_ms: u64) {
        self.storage.set_alarm(Some(at_ms));
    }

    fn get(&mut self) -> Option<u64> {
        match self.storage.alarm() {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(object = %self.object, error = %Report(&e), "cannot read the alarm");
                None
            }
        }
    }

    fn delete(&mut self) {
        self.storage.set_alarm(None);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::storage::Db;

    #[test]
    fn set_get_and_delete_go_through_the_event() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("db.redb")).unwrap();
        let object = ObjectId::new("c", "n");
        let mut storage = ObjectStorage::new(db, object.clone());
        let mut v = AlarmsView {
            storage: &mut storage,
            object: &object,
        };
        assert_eq!(v.get(), None);
        v.set(5_000);
        assert_eq!(v.get(), Some(5_000), "the event sees its own alarm");
        v.set(7_000);
        assert_eq!(
            v.get(),
            Some(7_000),
            "one alarm per object: the last set wins"
        );
        storage.end_event(true);

        let mut v = AlarmsView {
            storage: &mut storage,
            object: &object,
        };
        assert_eq!(v.get(), Some(7_000), "a later event of the batch sees it");
        v.delete();
        assert_eq!(v.get(), None);
        // The event traps: its delete is undone.
        storage.end_event(false);
        assert_eq!(storage.alarm().unwrap(), Some(7_000));
        assert_eq!(storage.take_batch().writes.alarm, Some(Some(7_000)));
    }
}
