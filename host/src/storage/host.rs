//! The `storage` interface for guests: a [`StorageView`] over one object's
//! [`ObjectStorage`]. Limits are checked here; reads and writes go through
//! the view, so they are part of the running event's transaction.

use super::{
    ListQuery, MAX_KEY_BYTES, MAX_KEYS_PER_CALL, MAX_VALUE_BYTES, ObjectStorage, WriteError,
};
use crate::bindings::roomhost::object::storage::{
    self as wit, Host, ListOptions, StorageError as WitError,
};
use crate::error::{Report, StorageError};

/// What a guest's `storage` calls work on: one object's storage.
pub struct StorageView<'a> {
    /// The object's storage during the running event.
    pub storage: &'a mut ObjectStorage,
}

crate::bindings::link_view!(StorageView, wit, "storage");

type KeyValues = Vec<(String, Vec<u8>)>;

fn check_key(key: &str) -> Result<(), WitError> {
    if key.len() > MAX_KEY_BYTES {
        return Err(WitError::KeyTooLarge(MAX_KEY_BYTES as u32));
    }
    Ok(())
}

fn check_value(value: &[u8]) -> Result<(), WitError> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(WitError::ValueTooLarge(MAX_VALUE_BYTES as u32));
    }
    Ok(())
}

fn check_count(n: usize) -> Result<(), WitError> {
    if n > MAX_KEYS_PER_CALL {
        return Err(WitError::TooManyKeys(MAX_KEYS_PER_CALL as u32));
    }
    Ok(())
}

/// The one place host storage errors become guest-visible errors.
fn to_wit(e: StorageError) -> WitError {
    let report = Report(&e).to_string();
    tracing::error!(error = %report, "storage failure reported to a guest");
    WitError::Internal(report)
}

fn write_to_wit(e: WriteError) -> WitError {
    match e {
        WriteError::QuotaExceeded(q) => WitError::QuotaExceeded(q),
        WriteError::Storage(e) => to_wit(e),
    }
}

fn into_strings(entries: Vec<(Vec<u8>, Vec<u8>)>) -> KeyValues {
    entries
        .into_iter()
        .map(|(k, v)| (String::from_utf8_lossy(&k).into_owned(), v))
        .collect()
}

impl Host for StorageView<'_> {
    fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, WitError> {
        check_key(&key)?;
        self.storage.get(key.as_bytes()).map_err(to_wit)
    }

    fn get_many(&mut self, mut keys: Vec<String>) -> Result<KeyValues, WitError> {
        check_count(keys.len())?;
        keys.iter().try_for_each(|k| check_key(k))?;
        keys.sort();
        keys.dedup();
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some(v) = self.storage.get(key.as_bytes()).map_err(to_wit)? {
                out.push((key, v));
            }
        }
        Ok(out)
    }

    fn put(&mut self, key: String, value: Vec<u8>) -> Result<(), WitError> {
        check_key(&key)?;
        check_value(&value)?;
        self.storage
            .put(key.into_bytes(), value)
            .map_err(write_to_wit)
    }

    fn put_many(&mut self, entries: KeyValues) -> Result<(), WitError> {
        check_count(entries.len())?;
        for (k, v) in &entries {
            check_key(k)?;
            check_value(v)?;
        }
        let entries = entries
            .into_iter()
            .map(|(k, v)| (k.into_bytes(), v))
            .collect();
        self.storage.put_many(entries).map_err(write_to_wit)
    }

    fn delete(&mut self, key: String) -> Result<bool, WitError> {
        check_key(&key)?;
        self.storage.delete(key.into_bytes()).map_err(to_wit)
    }

    fn delete_many(&mut self, keys: Vec<String>) -> Result<u32, WitError> {
        check_count(keys.len())?;
        keys.iter().try_for_each(|k| check_key(k))?;
        let mut existed = 0;
        for key in keys {
            if self.storage.delete(key.into_bytes()).map_err(to_wit)? {
                existed += 1;
            }
        }
        Ok(existed)
    }

    fn list(&mut self, o: ListOptions) -> Result<KeyValues, WitError> {
        for k in [&o.prefix, &o.start, &o.start_after, &o.end]
            .into_iter()
            .flatten()
        {
            check_key(k)?;
        }
        let q = ListQuery {
            prefix: o.prefix.map(String::into_bytes),
            start: o.start.map(String::into_bytes),
            start_after: o.start_after.map(String::into_bytes),
            end: o.end.map(String::into_bytes),
            limit: o.limit.map(|l| l as usize),
            reverse: o.reverse,
        };
        self.storage.list(&q).map(into_strings).map_err(to_wit)
    }

    fn delete_all(&mut self) -> Result<(), WitError> {
        self.storage.delete_all();
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::ids::ObjectId;
    use crate::storage::Db;

    fn storage(quota: u64) -> (tempfile::TempDir, ObjectStorage) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("db.redb")).unwrap();
        (
            dir,
            ObjectStorage::with_quota(db, ObjectId::new("c", "n"), quota),
        )
    }

    fn list(prefix: Option<&str>) -> ListOptions {
        ListOptions {
            prefix: prefix.map(str::to_string),
            start: None,
            start_after: None,
            end: None,
            limit: None,
            reverse: false,
        }
    }

    #[test]
    fn keys_values_and_batches_over_the_limits_are_refused() {
        let (_dir, mut s) = storage(0);
        let mut v = StorageView { storage: &mut s };
        let long_key = "k".repeat(MAX_KEY_BYTES + 1);
        let too_large = WitError::KeyTooLarge(2048);
        assert_eq!(v.get(long_key.clone()), Err(too_large.clone()));
        assert_eq!(v.put(long_key.clone(), vec![]), Err(too_large.clone()));
        assert_eq!(v.delete(long_key.clone()), Err(too_large.clone()));
        assert_eq!(v.list(list(Some(&long_key))), Err(too_large.clone()));
        assert_eq!(
            v.put("k".into(), vec![0; MAX_VALUE_BYTES + 1]),
            Err(WitError::ValueTooLarge(128 * 1024))
        );
        let many: Vec<(String, Vec<u8>)> = (0..=MAX_KEYS_PER_CALL)
            .map(|i| (format!("k{i}"), vec![]))
            .collect();
        let keys: Vec<String> = many.iter().map(|(k, _)| k.clone()).collect();
        assert_eq!(v.put_many(many), Err(WitError::TooManyKeys(128)));
        assert_eq!(v.get_many(keys.clone()), Err(WitError::TooManyKeys(128)));
        assert_eq!(v.delete_many(keys), Err(WitError::TooManyKeys(128)));
        // Nothing refused was written; the largest key and value fit.
        assert_eq!(v.list(list(None)), Ok(vec![]));
        let key = "k".repeat(MAX_KEY_BYTES);
        v.put(key.clone(), vec![1; MAX_VALUE_BYTES]).unwrap();
        assert_eq!(v.get(key), Ok(Some(vec![1; MAX_VALUE_BYTES])));
    }

    #[test]
    fn the_quota_refuses_a_write_and_keeps_the_rest() {
        let (_dir, mut s) = storage(100);
        let mut v = StorageView { storage: &mut s };
        v.put("a".into(), vec![0; 59]).unwrap(); // 60 bytes
        assert_eq!(
            v.put("b".into(), vec![0; 59]),
            Err(WitError::QuotaExceeded(100))
        );
        assert_eq!(
            v.put_many(vec![("c".into(), vec![0; 9]), ("d".into(), vec![0; 59])]),
            Err(WitError::QuotaExceeded(100)),
            "all or nothing"
        );
        assert_eq!(v.get("c".into()), Ok(None));
        // Overwriting counts the new size only.
        v.put("a".into(), vec![0; 99]).unwrap();
        assert_eq!(v.delete("a".into()), Ok(true));
        v.put("b".into(), vec![0; 59]).unwrap();
        v.delete_all().unwrap();
        v.put("d".into(), vec![0; 99]).unwrap();
        assert_eq!(
            v.list(list(None)).unwrap(),
            [("d".to_string(), vec![0; 99])]
        );
    }

    #[test]
    fn batch_calls_answer_for_the_keys_that_exist() {
        let (_dir, mut s) = storage(0);
        let mut v = StorageView { storage: &mut s };
        v.put_many(vec![
            ("b".into(), b"2".to_vec()),
            ("a".into(), b"1".to_vec()),
        ])
        .unwrap();
        assert_eq!(
            v.get_many(vec!["b".into(), "x".into(), "a".into(), "b".into()]),
            Ok(vec![
                ("a".to_string(), b"1".to_vec()),
                ("b".to_string(), b"2".to_vec())
            ])
        );
        assert_eq!(v.delete_many(vec!["a".into(), "x".into()]), Ok(1));
        assert_eq!(v.list(list(None)).unwrap().len(), 1);
    }
}
