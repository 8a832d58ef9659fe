//! The `storage` interface for guests: limits checked here, reads and writes
//! through the object's [`super::ObjectStorage`].

use super::{ListQuery, MAX_KEY_BYTES, MAX_KEYS_PER_CALL, MAX_VALUE_BYTES, WriteError};
use crate::bindings::roomhost::object::storage::{Host, ListOptions, StorageError as WitError};
use crate::error::StorageError;
use crate::objects::ObjectCtx;

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
    tracing::error!(error = %e, "storage failure reported to a guest");
    WitError::Internal(e.to_string())
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

impl Host for ObjectCtx {
    fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, WitError> {
        check_key(&key)?;
        self.core.storage.get(key.as_bytes()).map_err(to_wit)
    }

    fn get_many(&mut self, mut keys: Vec<String>) -> Result<KeyValues, WitError> {
        check_count(keys.len())?;
        keys.iter().try_for_each(|k| check_key(k))?;
        keys.sort();
        keys.dedup();
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some(v) = self.core.storage.get(key.as_bytes()).map_err(to_wit)? {
                out.push((key, v));
            }
        }
        Ok(out)
    }

    fn put(&mut self, key: String, value: Vec<u8>) -> Result<(), WitError> {
        check_key(&key)?;
        check_value(&value)?;
        self.core
            .storage
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
        self.core.storage.put_many(entries).map_err(write_to_wit)
    }

    fn delete(&mut self, key: String) -> Result<bool, WitError> {
        check_key(&key)?;
        self.core.storage.delete(key.into_bytes()).map_err(to_wit)
    }

    fn delete_many(&mut self, keys: Vec<String>) -> Result<u32, WitError> {
        check_count(keys.len())?;
        keys.iter().try_for_each(|k| check_key(k))?;
        let mut existed = 0;
        for key in keys {
            if self.core.storage.delete(key.into_bytes()).map_err(to_wit)? {
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
        self.core.storage.list(&q).map(into_strings).map_err(to_wit)
    }

    fn delete_all(&mut self) -> Result<(), WitError> {
        self.core.storage.delete_all();
        Ok(())
    }
}
