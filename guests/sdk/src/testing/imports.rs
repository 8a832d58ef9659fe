//! The world's imports, served by the test host ([`super::world`]), with the
//! signatures wit-bindgen gives the real ones.
//! Each function is documented in `wit/` (and in the modules of this crate
//! that wrap it).
#![allow(missing_docs)]

use super::world::{self, Undo};

/// The test host's clock.
pub fn now_ms() -> u64 {
    world::with(|w| w.now_ms)
}

/// A class var of the running object's class.
pub fn var(name: &str) -> Option<String> {
    world::with(|w| {
        let class = &w.stack.last()?.key.0;
        w.vars.get(class)?.get(name).cloned()
    })
}

/// `roomhost:object/storage`.
pub mod storage {
    use super::world::{self, check_count, check_key, check_value, read, view};
    pub use crate::bindings::roomhost::object::storage::{ListOptions, StorageError};

    type Entries = Vec<(String, Vec<u8>)>;

    pub fn get(key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        check_key(key)?;
        Ok(world::with_event(|e, o| read(e, o, key)))
    }

    pub fn get_many(keys: &[String]) -> Result<Entries, StorageError> {
        check_count(keys.len())?;
        keys.iter().try_for_each(|k| check_key(k))?;
        let mut keys = keys.to_vec();
        keys.sort();
        keys.dedup();
        Ok(world::with_event(|e, o| {
            keys.into_iter()
                .filter_map(|k| read(e, o, &k).map(|v| (k, v)))
                .collect()
        }))
    }

    pub fn put(key: &str, value: &[u8]) -> Result<(), StorageError> {
        put_many(&[(key.to_string(), value.to_vec())])
    }

    pub fn put_many(entries: &[(String, Vec<u8>)]) -> Result<(), StorageError> {
        check_count(entries.len())?;
        for (k, v) in entries {
            check_key(k)?;
            check_value(v)?;
        }
        let quota = world::with(|w| w.quota);
        world::with_event(|e, o| {
            if quota > 0 {
                let all = view(e, o);
                let usage: u64 = all.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum();
                let mut after = all.clone();
                for (k, v) in entries {
                    after.insert(k.clone(), v.clone());
                }
                let next: u64 = after.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum();
                if next > usage && next > quota {
                    return Err(StorageError::QuotaExceeded(quota));
                }
            }
            for (k, v) in entries {
                e.writes.insert(k.clone(), Some(v.clone()));
            }
            Ok(())
        })
    }

    pub fn delete(key: &str) -> Result<bool, StorageError> {
        check_key(key)?;
        Ok(world::with_event(|e, o| {
            let existed = read(e, o, key).is_some();
            e.writes.insert(key.to_string(), None);
            existed
        }))
    }

    pub fn delete_many(keys: &[String]) -> Result<u32, StorageError> {
        check_count(keys.len())?;
        keys.iter().try_for_each(|k| check_key(k))?;
        let mut existed = 0;
        for key in keys {
            if delete(key)? {
                existed += 1;
            }
        }
        Ok(existed)
    }

    pub fn list(options: &ListOptions) -> Result<Entries, StorageError> {
        for bound in [
            &options.prefix,
            &options.start,
            &options.start_after,
            &options.end,
        ]
        .into_iter()
        .flatten()
        {
            check_key(bound)?;
        }
        let all = world::with_event(|e, o| view(e, o));
        let selected = all.into_iter().filter(|(k, _)| {
            let lower = match (&options.start_after, &options.start) {
                (Some(after), _) => k > after,
                (None, Some(start)) => k >= start,
                (None, None) => true,
            };
            lower
                && options.end.as_ref().is_none_or(|end| k < end)
                && options
                    .prefix
                    .as_ref()
                    .is_none_or(|p| k.starts_with(p.as_str()))
        });
        let limit = options.limit.map_or(usize::MAX, |l| l as usize);
        Ok(if options.reverse {
            selected.rev().take(limit).collect()
        } else {
            selected.take(limit).collect()
        })
    }

    pub fn delete_all() -> Result<(), StorageError> {
        world::with_event(|e, _| {
            e.writes.clear();
            e.cleared = true;
        });
        Ok(())
    }
}

/// `roomhost:object/sockets`.
pub mod sockets {
    use super::Undo;
    use super::world::{self, Output, validate_attachment, validate_tags};
    pub use crate::bindings::roomhost::object::sockets::SocketError;
    use crate::{Frame, SocketId};

    /// The socket, if it is the object's (not closing).
    fn live<R>(
        id: SocketId,
        f: impl FnOnce(&mut world::SocketData, &mut Vec<Undo>) -> R,
    ) -> Result<R, SocketError> {
        world::with_event(|e, o| match o.sockets.get_mut(&id) {
            Some(s) if !s.closing => Ok(f(s, &mut e.undo)),
            _ => Err(SocketError::NotFound),
        })
    }

    pub fn send(id: SocketId, frame: &Frame) -> Result<(), SocketError> {
        let pending = world::with_event(|e, _| e.pending == Some(id));
        if !pending {
            live(id, |_, _| ())?;
        }
        world::with_event(|e, _| e.outbox.push(Output::Frame(vec![id], frame.clone())));
        Ok(())
    }

    pub fn broadcast(frame: &Frame, tag: Option<&str>, except: &[SocketId]) -> u32 {
        let to: Vec<SocketId> = list(tag)
            .into_iter()
            .filter(|id| !except.contains(id))
            .collect();
        let n = to.len() as u32;
        if n > 0 {
            world::with_event(|e, _| e.outbox.push(Output::Frame(to, frame.clone())));
        }
        n
    }

    pub fn close(id: SocketId, code: u16, reason: &str) -> Result<(), SocketError> {
        if !(code == 1000
            || (3000..=4999).contains(&code)
            || matches!(code, 1001 | 1008 | 1009 | 1011))
        {
            return Err(SocketError::InvalidCloseCode(code));
        }
        live(id, |s, undo| {
            s.closing = true;
            undo.push(Undo::Closing(id));
        })?;
        world::with_event(|e, _| e.outbox.push(Output::Close(id, code, reason.to_string())));
        Ok(())
    }

    pub fn list(tag: Option<&str>) -> Vec<SocketId> {
        world::with_event(|_, o| {
            o.sockets
                .iter()
                .filter(|(_, s)| !s.closing && tag.is_none_or(|t| s.tags.iter().any(|x| x == t)))
                .map(|(id, _)| *id)
                .collect()
        })
    }

    pub fn tags(id: SocketId) -> Result<Vec<String>, SocketError> {
        live(id, |s, _| s.tags.clone())
    }

    pub fn set_tags(id: SocketId, tags: &[String]) -> Result<(), SocketError> {
        validate_tags(tags)?;
        live(id, |s, undo| {
            let old = std::mem::replace(&mut s.tags, tags.to_vec());
            undo.push(Undo::Tags(id, old));
        })
    }

    pub fn attachment(id: SocketId) -> Result<Option<Vec<u8>>, SocketError> {
        live(id, |s, _| s.attachment.clone())
    }

    pub fn set_attachment(id: SocketId, value: Option<&[u8]>) -> Result<(), SocketError> {
        validate_attachment(value)?;
        live(id, |s, undo| {
            let old = std::mem::replace(&mut s.attachment, value.map(<[u8]>::to_vec));
            undo.push(Undo::Attachment(id, old));
        })
    }

    pub fn set_auto_response(pair: Option<(&str, &str)>) -> Result<(), SocketError> {
        if let Some((request, response)) = pair
            && (request.len() > world::MAX_ATTACHMENT_BYTES
                || response.len() > world::MAX_ATTACHMENT_BYTES)
        {
            return Err(SocketError::AutoResponseTooLarge(
                world::MAX_ATTACHMENT_BYTES as u32,
            ));
        }
        world::with_event(|_, o| {
            o.auto_response = pair.map(|(a, b)| (a.to_string(), b.to_string()))
        });
        Ok(())
    }

    pub fn get_auto_response() -> Option<(String, String)> {
        world::with_event(|_, o| o.auto_response.clone())
    }

    pub fn auto_response_timestamp(id: SocketId) -> Result<Option<u64>, SocketError> {
        live(id, |s, _| s.auto_ts)
    }
}

/// `roomhost:object/objects`.
pub mod objects {
    use super::world;
    use crate::ObjectId;
    pub use crate::bindings::roomhost::object::objects::CallError;

    pub fn call(
        class: &str,
        name: &str,
        method: &str,
        payload: &[u8],
    ) -> Result<Vec<u8>, CallError> {
        world::call(class, name, method, payload)
    }

    pub fn unique_id() -> String {
        world::with(|w| {
            let n = w.next_unique;
            w.next_unique += 1;
            // 64 hex digits, distinct per call (not random: tests repeat).
            format!("{:016x}{:048x}", 0x7465_7374_686f_7374_u64, n)
        })
    }

    pub fn self_id() -> ObjectId {
        world::with_event(|e, _| ObjectId {
            class: e.key.0.clone(),
            name: e.key.1.clone(),
        })
    }
}

/// `roomhost:object/alarms`.
pub mod alarms {
    use super::world;

    pub fn set(at_ms: u64) {
        world::with_event(|e, _| e.alarm = Some(Some(at_ms)))
    }

    pub fn get() -> Option<u64> {
        world::with_event(|e, o| e.alarm.unwrap_or(o.alarm))
    }

    pub fn delete() {
        world::with_event(|e, _| e.alarm = Some(None))
    }
}

/// `roomhost:object/versions`.
pub mod versions {
    use super::world;

    pub fn current() -> String {
        world::with_event(|e, _| e.version.clone())
    }

    pub fn upgraded_from() -> Option<String> {
        world::with_event(|e, o| {
            if e.cleared || !e.writes.is_empty() {
                // This event wrote: its data is the current version's.
                return None;
            }
            let from = o.data_version.clone().filter(|v| *v != e.version);
            if from.is_some() {
                e.told_upgrade = true;
            }
            from
        })
    }
}

/// `roomhost:object/log`.
pub mod log {
    use super::world;
    pub use crate::bindings::roomhost::object::log::Level;

    pub fn log(level: Level, message: &str) {
        let level = match level {
            Level::Trace => "TRACE",
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Warn => "WARN",
            Level::Error => "ERROR",
        };
        let line = format!("{level} {message}");
        world::with(|w| match w.stack.last() {
            Some(e) => {
                let key = e.key.clone();
                w.objects.entry(key).or_default().logs.push(line);
            }
            None => eprintln!("{line}"),
        })
    }
}
