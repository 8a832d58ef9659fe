//! The object's transactional key-value storage, typed.
//!
//! Every event is one transaction: writes are buffered (reads see them),
//! committed when the handler returns, and thrown away if it traps. Each
//! object sees only its own keys, ordered by their UTF-8 bytes.
//!
//! [`get`] and [`put`] store values as JSON; the `_bytes` functions store
//! raw bytes. Limits (the host's, and the test host's): keys ≤ 2 KiB, values
//! ≤ 128 KiB, ≤ 128 keys per call, and the host's per-object quota.

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use crate::sys::storage::ListOptions;
use crate::{Error, Result, StorageError, sys};

/// The value at `key`, decoded from JSON (`None` when absent). A value
/// that does not decode is an error naming the key.
pub fn get<T: DeserializeOwned>(key: &str) -> Result<Option<T>> {
    match sys::storage::get(key)? {
        None => Ok(None),
        Some(bytes) => decode(key, &bytes).map(Some),
    }
}

/// Stores `value` at `key`, encoded as JSON.
pub fn put<T: Serialize + ?Sized>(key: &str, value: &T) -> Result<()> {
    let bytes = serde_json::to_vec(value)?;
    Ok(sys::storage::put(key, &bytes)?)
}

/// The raw bytes at `key`.
pub fn get_bytes(key: &str) -> std::result::Result<Option<Vec<u8>>, StorageError> {
    sys::storage::get(key)
}

/// Stores raw bytes at `key`.
pub fn put_bytes(key: &str, value: &[u8]) -> std::result::Result<(), StorageError> {
    sys::storage::put(key, value)
}

/// Deletes `key`; true when it existed.
pub fn delete(key: &str) -> std::result::Result<bool, StorageError> {
    sys::storage::delete(key)
}

/// The entries that exist among `keys` (≤ 128), in key order, as raw bytes.
pub fn get_many<K: AsRef<str>>(
    keys: &[K],
) -> std::result::Result<Vec<(String, Vec<u8>)>, StorageError> {
    sys::storage::get_many(&owned(keys))
}

/// Writes up to 128 raw entries at once, all or none.
pub fn put_many(entries: &[(String, Vec<u8>)]) -> std::result::Result<(), StorageError> {
    sys::storage::put_many(entries)
}

/// Deletes up to 128 keys; how many existed.
pub fn delete_many<K: AsRef<str>>(keys: &[K]) -> std::result::Result<u32, StorageError> {
    sys::storage::delete_many(&owned(keys))
}

fn owned<K: AsRef<str>>(keys: &[K]) -> Vec<String> {
    keys.iter().map(|k| k.as_ref().to_string()).collect()
}

/// Deletes every key of this object.
pub fn delete_all() -> std::result::Result<(), StorageError> {
    sys::storage::delete_all()
}

/// The entries `list` selects, as raw bytes, in its order.
pub fn list_bytes(list: &List) -> std::result::Result<Vec<(String, Vec<u8>)>, StorageError> {
    sys::storage::list(&list.options)
}

/// The entries `list` selects, decoded from JSON, in its order. A value that
/// does not decode is an error naming its key.
pub fn list<T: DeserializeOwned>(list: &List) -> Result<Vec<(String, T)>> {
    list_bytes(list)?
        .into_iter()
        .map(|(key, bytes)| decode(&key, &bytes).map(|value| (key, value)))
        .collect()
}

fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes)
        .map_err(|e| Error::internal(format!("stored value {key:?} does not decode: {e}")))
}

/// Which entries a `list` returns: all keys in ascending order until you
/// narrow it.
///
/// ```
/// use roomhost_sdk::storage::List;
/// // The last 100 messages, newest first.
/// let newest = List::prefix("msg:").reverse().limit(100);
/// # let _ = newest;
/// ```
#[derive(Clone, Debug)]
pub struct List {
    options: ListOptions,
}

impl From<ListOptions> for List {
    fn from(options: ListOptions) -> List {
        List { options }
    }
}

impl Default for List {
    fn default() -> List {
        List::all()
    }
}

impl List {
    /// Every key.
    pub fn all() -> List {
        List {
            options: ListOptions {
                prefix: None,
                start: None,
                start_after: None,
                end: None,
                limit: None,
                reverse: false,
            },
        }
    }

    /// Keys that begin with `prefix`.
    pub fn prefix(prefix: &str) -> List {
        List::all().with_prefix(prefix)
    }

    /// Only keys that begin with `prefix`.
    pub fn with_prefix(mut self, prefix: &str) -> List {
        self.options.prefix = Some(prefix.into());
        self
    }

    /// Only keys ≥ `key`.
    pub fn start(mut self, key: &str) -> List {
        self.options.start = Some(key.into());
        self
    }

    /// Only keys > `key` (wins over [`List::start`]): the next page after
    /// the last key of this one.
    pub fn start_after(mut self, key: &str) -> List {
        self.options.start_after = Some(key.into());
        self
    }

    /// Only keys < `key`.
    pub fn end(mut self, key: &str) -> List {
        self.options.end = Some(key.into());
        self
    }

    /// At most `n` entries.
    pub fn limit(mut self, n: u32) -> List {
        self.options.limit = Some(n);
        self
    }

    /// Descending order (with a limit: the last entries).
    pub fn reverse(mut self) -> List {
        self.options.reverse = true;
        self
    }

    /// The options as the world's record.
    pub fn options(&self) -> &ListOptions {
        &self.options
    }
}
