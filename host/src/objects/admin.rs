//! What operators do to one object through its own actor: read its sockets,
//! import keys, delete it. Each is an [`Event::Admin`] in the object's
//! mailbox, so it runs between the object's other events, as one
//! transaction, and its answer waits for its commit (like any event's
//! output). The instance (if any) is dropped after an import or a delete:
//! its next event starts afresh from what storage holds.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::oneshot;

use super::{Event, Runtime};
use crate::error::{AdminError, EventError};
use crate::ids::ObjectId;
use crate::storage::Entries;

/// An operator's request, run by the object's actor.
pub enum AdminOp {
    /// List the object's open sockets.
    Sockets(oneshot::Sender<Vec<SocketInfo>>),
    /// Write these entries (all or none), refusing to replace existing keys
    /// unless `overwrite`.
    Import {
        /// The entries.
        entries: Vec<(Vec<u8>, Vec<u8>)>,
        /// Replace existing keys.
        overwrite: bool,
        /// How many keys were written, once durable.
        reply: oneshot::Sender<Result<usize, AdminError>>,
    },
    /// Close the sockets with 1012, delete every key and the alarm.
    Delete {
        /// Who asked (`user@host`), for the log.
        by: String,
        /// What was deleted, once durable.
        reply: oneshot::Sender<Result<Deleted, AdminError>>,
    },
}

/// One open socket, as `roomhost inspect` shows it.
#[derive(Debug, Serialize)]
pub struct SocketInfo {
    /// Its id.
    pub id: u64,
    /// Its tags.
    pub tags: Vec<String>,
    /// Its attachment.
    pub attachment: Option<Shown>,
    /// The client's address.
    pub peer: Option<String>,
    /// How long it has been open, in ms.
    pub age_ms: u64,
}

/// What `roomhost delete` removed.
#[derive(Debug, Default, Serialize)]
pub struct Deleted {
    /// Sockets closed with 1012.
    pub sockets_closed: usize,
    /// Bytes (keys + values) deleted.
    pub bytes_deleted: u64,
    /// The alarm it had.
    pub alarm_ms: Option<u64>,
}

/// Bytes shown to an operator: as text when they are UTF-8, else as hex;
/// cut to a length when asked.
#[derive(Debug, Serialize)]
pub struct Shown {
    /// The text, when the bytes are UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Lower-case hex, otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hex: Option<String>,
    /// The whole length, in bytes.
    pub bytes: usize,
    /// True when only the first part is shown.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub cut: bool,
}

impl Shown {
    /// `bytes`, at most `max` of them (0: all).
    pub fn new(bytes: &[u8], max: usize) -> Shown {
        let cut = max > 0 && bytes.len() > max;
        let part = if cut { &bytes[..max] } else { bytes };
        // A cut may split a character: show what is valid up to it.
        let text = match std::str::from_utf8(part) {
            Ok(t) => Some(t.to_string()),
            Err(e) if cut && std::str::from_utf8(bytes).is_ok() => {
                Some(String::from_utf8_lossy(&part[..e.valid_up_to()]).into_owned())
            }
            Err(_) => None,
        };
        Shown {
            hex: text.is_none().then(|| hex(part)),
            text,
            bytes: bytes.len(),
            cut,
        }
    }
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Bytes from hex.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// One trap, as `roomhost inspect` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct TrapRecord {
    /// When (ms since the epoch).
    pub at_ms: u64,
    /// The export that trapped (`on-request`, `init`, ...).
    pub event: String,
    /// The panic message or cause (cut to 1 KiB).
    pub message: String,
}

/// The host's most recent traps, keyed by object: at most [`TrapLog::CAP`]
/// in all (older ones drop off), so a guest that traps forever costs a
/// bounded amount of memory.
#[derive(Default)]
pub struct TrapLog {
    recent: Mutex<VecDeque<(ObjectId, TrapRecord)>>,
}

impl TrapLog {
    /// Traps kept, over all objects.
    pub const CAP: usize = 1024;
    /// The longest message kept, in bytes.
    const MAX_MESSAGE: usize = 1024;

    /// Records a trap of `id`.
    pub(crate) fn record(&self, id: &ObjectId, event: &str, message: &str) {
        let mut message = message.to_string();
        if message.len() > Self::MAX_MESSAGE {
            let mut end = Self::MAX_MESSAGE;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
            message.push('…');
        }
        let Ok(mut recent) = self.recent.lock() else {
            return;
        };
        if recent.len() >= Self::CAP {
            recent.pop_front();
        }
        recent.push_back((
            id.clone(),
            TrapRecord {
                at_ms: crate::clock::now_ms(),
                event: event.to_string(),
                message,
            },
        ));
    }

    /// `id`'s recent traps, oldest first.
    pub fn of(&self, id: &ObjectId) -> Vec<TrapRecord> {
        let Ok(recent) = self.recent.lock() else {
            return Vec::new();
        };
        recent
            .iter()
            .filter(|(o, _)| o == id)
            .map(|(_, t)| t.clone())
            .collect()
    }

    /// True when `id` trapped recently.
    fn has(&self, id: &ObjectId) -> bool {
        self.recent
            .lock()
            .is_ok_and(|r| r.iter().any(|(o, _)| o == id))
    }
}

/// One key and its value, as `roomhost inspect` shows them.
#[derive(Debug, Serialize)]
pub struct KeyInfo {
    /// The key.
    pub key: Shown,
    /// Its value (cut unless asked for in full).
    pub value: Shown,
}

/// What `roomhost inspect` shows about one object.
#[derive(Debug, Serialize)]
pub struct Inspection {
    /// Its class.
    pub class: String,
    /// Its name.
    pub name: String,
    /// `live`, `hibernated` or `stored`.
    pub state: &'static str,
    /// The version it runs or last wrote with.
    pub version: Option<String>,
    /// Bytes (keys + values) it stores.
    pub stored_bytes: u64,
    /// Its alarm (ms since the epoch).
    pub alarm_ms: Option<u64>,
    /// Its keys (the first `limit`), or the one asked for.
    pub keys: Vec<KeyInfo>,
    /// True when it has more keys than shown.
    pub more_keys: bool,
    /// Its open sockets.
    pub sockets: Vec<SocketInfo>,
    /// Its recent traps, oldest first.
    pub traps: Vec<TrapRecord>,
}

impl Runtime {
    /// How long an operator's request waits for the object's actor.
    fn admin_wait(&self) -> Duration {
        Duration::from_millis(self.config.limits.call_timeout_ms.max(1000))
    }

    /// Checks the class and the name.
    pub fn admin_id(&self, class: &str, name: &str) -> Result<ObjectId, AdminError> {
        if !self.components.has_class(class) {
            return Err(AdminError::NoSuchClass(class.to_string()));
        }
        crate::ids::validate_name(name).map_err(AdminError::InvalidName)?;
        Ok(ObjectId::new(class, name))
    }

    /// The object exists: it has a live instance or sockets, stored keys, an
    /// alarm or recent traps.
    pub fn object_exists(&self, id: &ObjectId) -> Result<bool, AdminError> {
        Ok(self.object_state(id).0 != "stored"
            || self.db.usage(id)? > 0
            || self.db.alarm(id)?.is_some()
            || self.traps.has(id))
    }

    /// Sends an operator's request to `id`'s actor (starting one if needed)
    /// and waits for the answer.
    async fn admin_op<T>(
        self: &Arc<Self>,
        id: &ObjectId,
        op: impl FnOnce(oneshot::Sender<Result<T, AdminError>>) -> AdminOp,
    ) -> Result<T, AdminError> {
        let (tx, rx) = oneshot::channel();
        // A full mailbox or a busy object waits at most this long in all.
        let run = async {
            self.send(id, Event::Admin(Box::new(op(tx)))).await?;
            rx.await
                .map_err(|_| AdminError::from(EventError::Unavailable(id.clone())))?
        };
        tokio::time::timeout(self.admin_wait(), run)
            .await
            .map_err(|_| EventError::Timeout(id.clone()))?
    }

    /// `id`'s open sockets (none when it has no actor: no actor, no sockets).
    pub async fn object_sockets(&self, id: &ObjectId) -> Result<Vec<SocketInfo>, AdminError> {
        let Some(handle) = self.existing_handle(id) else {
            return Ok(Vec::new());
        };
        let (tx, rx) = oneshot::channel();
        let ask = async {
            if handle
                .send(Event::Admin(Box::new(AdminOp::Sockets(tx))))
                .await
                .is_err()
            {
                return Vec::new(); // the actor has just ended: no sockets
            }
            rx.await.unwrap_or_default()
        };
        tokio::time::timeout(self.admin_wait(), ask)
            .await
            .map_err(|_| EventError::Timeout(id.clone()).into())
    }

    /// Everything `roomhost inspect` shows. `key`: only that key, in full;
    /// otherwise the first `limit` keys with values cut to `max_value` bytes.
    pub async fn inspect(
        &self,
        id: &ObjectId,
        key: Option<&[u8]>,
        limit: usize,
        max_value: usize,
    ) -> Result<Inspection, AdminError> {
        if !self.object_exists(id)? {
            return Err(AdminError::NoSuchObject(id.clone()));
        }
        let mut keys = Vec::new();
        let mut more_keys = false;
        match key {
            Some(k) => {
                if let Some(v) = self.db.get(id, k)? {
                    keys.push(KeyInfo {
                        key: Shown::new(k, 0),
                        value: Shown::new(&v, 0),
                    });
                }
            }
            None => {
                use std::ops::Bound::Unbounded;
                self.db.scan(id, Unbounded, Unbounded, false, |k, v| {
                    if keys.len() >= limit {
                        more_keys = true;
                        return false;
                    }
                    keys.push(KeyInfo {
                        key: Shown::new(k, 0),
                        value: Shown::new(v, max_value),
                    });
                    true
                })?;
            }
        }
        let (state, version) = self.object_state(id);
        let version = match version {
            Some(v) => Some(v),
            None => self.db.object_version(id)?,
        };
        Ok(Inspection {
            class: id.class.clone(),
            name: id.name.clone(),
            state,
            version,
            stored_bytes: self.db.usage(id)?,
            alarm_ms: self.db.alarm(id)?,
            keys,
            more_keys,
            sockets: self.object_sockets(id).await?,
            traps: self.traps.of(id),
        })
    }

    /// Imports `entries` into `id` through its actor, in one transaction.
    pub async fn import(
        self: &Arc<Self>,
        id: &ObjectId,
        entries: Vec<(Vec<u8>, Vec<u8>)>,
        overwrite: bool,
    ) -> Result<usize, AdminError> {
        self.admin_op(id, |reply| AdminOp::Import {
            entries,
            overwrite,
            reply,
        })
        .await
    }

    /// Deletes `id` through its actor: sockets closed with 1012, every key
    /// and the alarm deleted; `by` is logged.
    pub async fn delete_object(
        self: &Arc<Self>,
        id: &ObjectId,
        by: &str,
    ) -> Result<Deleted, AdminError> {
        if !self.object_exists(id)? {
            return Err(AdminError::NoSuchObject(id.clone()));
        }
        let by = by.to_string();
        self.admin_op(id, |reply| AdminOp::Delete { by, reply })
            .await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn bytes_show_as_text_or_hex_and_cut() {
        let s = Shown::new(b"hello", 3);
        assert_eq!((s.text.as_deref(), s.cut, s.bytes), (Some("hel"), true, 5));
        let s = Shown::new(&[0xff, 0, 1], 0);
        assert_eq!((s.hex.as_deref(), s.text), (Some("ff0001"), None));
        let s = Shown::new("héllo".as_bytes(), 2);
        assert_eq!(s.text.as_deref(), Some("h"));
        assert_eq!(unhex("ff0001").unwrap(), vec![0xff, 0, 1]);
        assert!(unhex("f").is_none() && unhex("zz").is_none());
    }

    #[test]
    fn the_trap_log_is_bounded() {
        let log = TrapLog::default();
        let a = ObjectId::new("c", "a");
        for _ in 0..TrapLog::CAP + 10 {
            log.record(&a, "on-request", &"x".repeat(5000));
        }
        let b = ObjectId::new("c", "b");
        log.record(&b, "init", "boom");
        assert_eq!(log.of(&a).len(), TrapLog::CAP - 1);
        assert_eq!(log.of(&b)[0].message, "boom");
        assert!(log.of(&a)[0].message.len() <= 1100);
    }
}

/// One entry as a line of `roomhost export` (JSON, with a newline): the key
/// as a string (or `{"hex": ...}` when it is not UTF-8), the value as
/// `{"text": ...}` when it is UTF-8, else `{"hex": ...}`.
pub fn export_line(key: &[u8], value: &[u8]) -> Vec<u8> {
    let key = match std::str::from_utf8(key) {
        Ok(k) => serde_json::Value::String(k.to_string()),
        Err(_) => serde_json::json!({ "hex": hex(key) }),
    };
    let value = match std::str::from_utf8(value) {
        Ok(v) => serde_json::json!({ "text": v }),
        Err(_) => serde_json::json!({ "hex": hex(value) }),
    };
    let mut line =
        serde_json::to_vec(&serde_json::json!({ "key": key, "value": value })).unwrap_or_default();
    line.push(b'\n');
    line
}

/// Reads a line of `roomhost export` back.
pub fn parse_line(line: &str) -> Result<(Vec<u8>, Vec<u8>), String> {
    let v: serde_json::Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
    let bytes = |v: &serde_json::Value, what: &str| -> Result<Vec<u8>, String> {
        if let Some(t) = v.get("text").and_then(|t| t.as_str()) {
            Ok(t.as_bytes().to_vec())
        } else if let Some(h) = v.get("hex").and_then(|h| h.as_str()) {
            unhex(h).ok_or_else(|| format!("{what}: \"hex\" is not hex"))
        } else {
            Err(format!(
                "{what}: expected {{\"text\": ...}} or {{\"hex\": ...}}"
            ))
        }
    };
    let key = match v.get("key") {
        Some(serde_json::Value::String(k)) => k.as_bytes().to_vec(),
        Some(k @ serde_json::Value::Object(_)) => bytes(k, "key")?,
        _ => return Err("expected \"key\": a string or {\"hex\": ...}".into()),
    };
    let value = match v.get("value") {
        Some(val) => bytes(val, "value")?,
        None => return Err("expected \"value\"".into()),
    };
    if key.len() > crate::storage::MAX_KEY_BYTES {
        return Err(format!(
            "the key is longer than {} bytes",
            crate::storage::MAX_KEY_BYTES
        ));
    }
    if value.len() > crate::storage::MAX_VALUE_BYTES {
        return Err(format!(
            "the value is longer than {} bytes",
            crate::storage::MAX_VALUE_BYTES
        ));
    }
    Ok((key, value))
}

/// Parses a whole import (blank lines skipped).
pub fn parse_import(text: &str) -> Result<Entries, AdminError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        out.push(parse_line(line).map_err(|why| AdminError::BadImport { line: i + 1, why })?);
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod line_tests {
    use super::*;

    #[test]
    fn export_lines_read_back() {
        for (k, v) in [
            (&b"plain"[..], &b"text value"[..]),
            (&b"\xff\x00key"[..], &b"\x00\x01\xfe"[..]),
            (&b"quote\"and\nnewline"[..], &b""[..]),
        ] {
            let line = export_line(k, v);
            assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1);
            let text = std::str::from_utf8(&line).unwrap();
            assert_eq!(
                parse_line(text.trim_end()).unwrap(),
                (k.to_vec(), v.to_vec())
            );
        }
        assert!(parse_line("{\"key\": 3, \"value\": {\"text\": \"\"}}").is_err());
        assert!(parse_line("not json").is_err());
        assert!(matches!(
            parse_import("{\"key\":\"a\",\"value\":{\"text\":\"b\"}}\n\nnope"),
            Err(AdminError::BadImport { line: 3, .. })
        ));
    }
}
