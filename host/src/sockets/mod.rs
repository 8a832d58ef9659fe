//! Host-owned WebSockets.
//!
//! The host owns every connection ([`conn`]); a guest only holds socket ids.
//! Each object's sockets — with their tags and attachments — live in its
//! [`SocketTable`], kept by the object's actor outside the wasm instance, so they
//! survive guest traps (and eviction).
//!
//! Frames and closes a guest asks for during an event go into the event's
//! [`Outbox`] and are released only after the event's writes are durable (output
//! gate). Tag and attachment changes take effect at once and are undone if the
//! event traps.

pub mod conn;
pub mod frames;

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;

pub use conn::{SocketConn, SocketId};

use crate::bindings::Frame;
use crate::bindings::roomhost::object::sockets::{Host, SocketError};
use crate::objects::ObjectCtx;

/// The largest attachment, in bytes (a guest could otherwise park unbounded
/// memory in the host, outside its own memory limit).
pub const MAX_ATTACHMENT_BYTES: usize = 2048;
/// The most tags on one socket.
pub const MAX_TAGS: usize = 10;
/// The longest tag, in bytes.
pub const MAX_TAG_BYTES: usize = 256;

/// One socket as its object sees it.
pub struct SocketEntry {
    /// The connection.
    pub conn: Arc<SocketConn>,
    /// Tags for `list` and `broadcast`.
    pub tags: Vec<String>,
    /// Guest data kept with the socket (≤ 2 KiB).
    pub attachment: Option<Vec<u8>>,
    /// The guest closed it during the current batch: no longer listed.
    pub closing: bool,
}

enum Undo {
    Tags(SocketId, Vec<String>),
    Attachment(SocketId, Option<Vec<u8>>),
    Closing(SocketId),
    Accepted(SocketId),
}

/// An object's sockets, in accept order.
#[derive(Default)]
pub struct SocketTable {
    entries: BTreeMap<SocketId, SocketEntry>,
    undo: Vec<Undo>,
}

/// Output an event produced, released after its writes are durable.
pub enum Output {
    /// One encoded frame for one connection.
    One(Arc<SocketConn>, Bytes),
    /// One encoded frame for these connections (a broadcast: encoded once).
    Frame(Vec<Arc<SocketConn>>, Bytes),
    /// Close a socket.
    Close(Arc<SocketConn>, u16, String),
}

/// The gated output of one event.
pub type Outbox = Vec<Output>;

impl SocketTable {
    /// The number of open sockets.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when the object has no sockets.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// A socket, unless it is closing.
    pub fn get(&self, id: SocketId) -> Option<&SocketEntry> {
        self.entries.get(&id).filter(|e| !e.closing)
    }

    /// Adds an accepted socket (undone if the event traps).
    pub fn accept(
        &mut self,
        conn: Arc<SocketConn>,
        tags: Vec<String>,
        attachment: Option<Vec<u8>>,
    ) {
        let id = conn.id();
        self.undo.push(Undo::Accepted(id));
        self.entries.insert(
            id,
            SocketEntry {
                conn,
                tags,
                attachment,
                closing: false,
            },
        );
    }

    /// Lets every socket with nothing queued drop its queue's capacity (the
    /// object is hibernating: its sockets may stay idle for hours).
    pub fn release_idle_capacity(&self) {
        for e in self.entries.values() {
            e.conn.release_idle_capacity();
        }
    }

    /// Removes a socket for good; returns it.
    pub fn remove(&mut self, id: SocketId) -> Option<SocketEntry> {
        self.entries.remove(&id)
    }

    /// Every socket, closing or not (for shutdown).
    pub fn drain(&mut self) -> impl Iterator<Item = SocketEntry> + '_ {
        std::mem::take(&mut self.entries).into_values()
    }

    /// The event succeeded: keep its changes.
    pub fn keep_changes(&mut self) {
        self.undo.clear();
    }

    /// The event trapped: undo its tag, attachment, close and accept changes.
    pub fn undo_changes(&mut self) {
        while let Some(u) = self.undo.pop() {
            match u {
                Undo::Tags(id, tags) => {
                    if let Some(e) = self.entries.get_mut(&id) {
                        e.tags = tags;
                    }
                }
                Undo::Attachment(id, a) => {
                    if let Some(e) = self.entries.get_mut(&id) {
                        e.attachment = a;
                    }
                }
                Undo::Closing(id) => {
                    if let Some(e) = self.entries.get_mut(&id) {
                        e.closing = false;
                    }
                }
                Undo::Accepted(id) => {
                    self.entries.remove(&id);
                }
            }
        }
    }

    fn live(&self, tag: Option<&str>) -> impl Iterator<Item = (&SocketId, &SocketEntry)> {
        self.entries
            .iter()
            .filter(move |(_, e)| !e.closing && tag.is_none_or(|t| e.tags.iter().any(|x| x == t)))
    }

    fn entry_mut(&mut self, id: SocketId) -> Result<&mut SocketEntry, SocketError> {
        self.entries
            .get_mut(&id)
            .filter(|e| !e.closing)
            .ok_or(SocketError::NotFound)
    }
}

/// Checks tags against the limits.
pub fn validate_tags(tags: &[String]) -> Result<(), SocketError> {
    if tags.len() > MAX_TAGS {
        return Err(SocketError::InvalidTags(format!("at most {MAX_TAGS} tags")));
    }
    if let Some(t) = tags
        .iter()
        .find(|t| t.is_empty() || t.len() > MAX_TAG_BYTES)
    {
        return Err(SocketError::InvalidTags(format!(
            "tag {:?}: tags are 1..={MAX_TAG_BYTES} bytes",
            t.chars().take(32).collect::<String>()
        )));
    }
    Ok(())
}

/// Checks an attachment against the limit.
pub fn validate_attachment(a: &Option<Vec<u8>>) -> Result<(), SocketError> {
    match a {
        Some(v) if v.len() > MAX_ATTACHMENT_BYTES => {
            Err(SocketError::AttachmentTooLarge(MAX_ATTACHMENT_BYTES as u32))
        }
        _ => Ok(()),
    }
}

impl Host for ObjectCtx {
    fn send(&mut self, id: SocketId, frame: Frame) -> Result<(), SocketError> {
        let conn = match self.core.sockets.get(id) {
            Some(entry) => entry.conn.clone(),
            // The socket this very request is about to accept.
            None => self
                .pending_socket
                .as_ref()
                .filter(|c| c.id() == id)
                .ok_or(SocketError::NotFound)?
                .clone(),
        };
        self.outbox
            .push(Output::One(conn, conn::encode_guest_frame(&frame)));
        Ok(())
    }

    fn broadcast(&mut self, frame: Frame, tag: Option<String>, except: Vec<SocketId>) -> u32 {
        let to: Vec<Arc<SocketConn>> = self
            .core
            .sockets
            .live(tag.as_deref())
            .filter(|(id, _)| !except.contains(id))
            .map(|(_, e)| e.conn.clone())
            .collect();
        let n = to.len() as u32;
        if n > 0 {
            self.outbox
                .push(Output::Frame(to, conn::encode_guest_frame(&frame)));
        }
        n
    }

    fn close(&mut self, id: SocketId, code: u16, reason: String) -> Result<(), SocketError> {
        if !(code == 1000
            || (3000..=4999).contains(&code)
            || matches!(code, 1001 | 1008 | 1009 | 1011))
        {
            return Err(SocketError::InvalidCloseCode(code));
        }
        let table = &mut self.core.sockets;
        let entry = table.entry_mut(id)?;
        entry.closing = true;
        let conn = entry.conn.clone();
        table.undo.push(Undo::Closing(id));
        self.outbox.push(Output::Close(conn, code, reason));
        Ok(())
    }

    fn list(&mut self, tag: Option<String>) -> Vec<SocketId> {
        self.core
            .sockets
            .live(tag.as_deref())
            .map(|(id, _)| *id)
            .collect()
    }

    fn tags(&mut self, id: SocketId) -> Result<Vec<String>, SocketError> {
        Ok(self
            .core
            .sockets
            .get(id)
            .ok_or(SocketError::NotFound)?
            .tags
            .clone())
    }

    fn set_tags(&mut self, id: SocketId, tags: Vec<String>) -> Result<(), SocketError> {
        validate_tags(&tags)?;
        let table = &mut self.core.sockets;
        let old = std::mem::replace(&mut table.entry_mut(id)?.tags, tags);
        table.undo.push(Undo::Tags(id, old));
        Ok(())
    }

    fn attachment(&mut self, id: SocketId) -> Result<Option<Vec<u8>>, SocketError> {
        Ok(self
            .core
            .sockets
            .get(id)
            .ok_or(SocketError::NotFound)?
            .attachment
            .clone())
    }

    fn set_auto_response(&mut self, pair: Option<(String, String)>) -> Result<(), SocketError> {
        if let Some((req, resp)) = &pair
            && (req.len() > MAX_ATTACHMENT_BYTES || resp.len() > MAX_ATTACHMENT_BYTES)
        {
            return Err(SocketError::AutoResponseTooLarge(
                MAX_ATTACHMENT_BYTES as u32,
            ));
        }
        self.core.auto.set(pair);
        Ok(())
    }

    fn get_auto_response(&mut self) -> Option<(String, String)> {
        self.core.auto.get()
    }

    fn auto_response_timestamp(&mut self, id: SocketId) -> Result<Option<u64>, SocketError> {
        let entry = self.core.sockets.get(id).ok_or(SocketError::NotFound)?;
        let at = entry
            .conn
            .last_auto_response
            .load(std::sync::atomic::Ordering::Relaxed);
        Ok((at != 0).then_some(at))
    }

    fn set_attachment(&mut self, id: SocketId, value: Option<Vec<u8>>) -> Result<(), SocketError> {
        validate_attachment(&value)?;
        let table = &mut self.core.sockets;
        let old = std::mem::replace(&mut table.entry_mut(id)?.attachment, value);
        table.undo.push(Undo::Attachment(id, old));
        Ok(())
    }
}
