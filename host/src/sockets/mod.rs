//! Host-owned WebSockets.
//!
//! The host owns every connection; a guest only holds socket ids.
//!
//! - [`SocketTable`] (here): one object's sockets, with their tags and
//!   attachments, kept by the object's actor outside the wasm instance, so
//!   they survive guest traps (and eviction). Tag and attachment changes take
//!   effect at once and are undone if the event traps.
//! - [`Outbox`] (here): frames and closes a guest asks for during an event,
//!   released only after the event's writes are durable (output gate).
//! - [`SocketEvent`] and [`SocketInbox`] (here): what a connection tells its
//!   object, and the narrow way it reaches it (the object's mailbox).
//! - [`outbound`]: a connection's bounded send queue ([`SocketConn`]) and the
//!   auto-response pair.
//! - [`frames`]: RFC 6455 framing, both ways.
//! - [`host`]: the `sockets` interface for guests ([`SocketsView`]).
//!
//! The connection's task itself, which reads and writes the TCP stream, is
//! `http::websocket`.

pub mod frames;
pub mod host;
pub mod outbound;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;

pub use host::{SocketsView, add_to_linker};
pub use outbound::{AutoResponse, SocketConn, SocketId};

use crate::bindings::Frame;
use crate::bindings::roomhost::object::sockets::SocketError;

/// The default largest attachment, in bytes (a guest could otherwise park
/// unbounded memory in the host, outside its own memory limit).
pub const MAX_ATTACHMENT_BYTES: usize = 2048;
/// The default most tags on one socket.
pub const MAX_TAGS: usize = 10;
/// The default longest tag, in bytes.
pub const MAX_TAG_BYTES: usize = 256;
/// The default longest auto-response request or response, in bytes.
pub const MAX_AUTO_RESPONSE_BYTES: usize = 2048;

/// What a guest may keep with its sockets, host-side (`[limits]`; the
/// defaults are the constants above, which the SDK's test host mirrors).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SocketLimits {
    /// Tags on one socket.
    pub max_tags: usize,
    /// Bytes in one tag.
    pub max_tag_bytes: usize,
    /// Bytes in one attachment.
    pub max_attachment_bytes: usize,
    /// Bytes in the auto-response's request, and in its response.
    pub max_auto_response_bytes: usize,
}

impl Default for SocketLimits {
    fn default() -> SocketLimits {
        SocketLimits {
            max_tags: MAX_TAGS,
            max_tag_bytes: MAX_TAG_BYTES,
            max_attachment_bytes: MAX_ATTACHMENT_BYTES,
            max_auto_response_bytes: MAX_AUTO_RESPONSE_BYTES,
        }
    }
}

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

/// What a connection tells its object.
#[derive(Debug)]
pub enum SocketEvent {
    /// A message from the client.
    Message {
        /// The socket.
        id: SocketId,
        /// The message.
        frame: Frame,
        /// When the host read it (for the wake-latency histogram).
        at: tokio::time::Instant,
    },
    /// The connection closed.
    Closed {
        /// The socket.
        id: SocketId,
        /// The close code (1006 when the connection was lost).
        code: u16,
        /// The close reason.
        reason: String,
    },
}

impl SocketEvent {
    /// The socket it is about.
    pub fn socket(&self) -> SocketId {
        match self {
            SocketEvent::Message { id, .. } | SocketEvent::Closed { id, .. } => *id,
        }
    }
}

/// Where a connection's events go: the owning object's mailbox, handed to the
/// connection by the server. Cheap to clone.
pub trait SocketInbox: Clone + Send + Sync + Unpin + 'static {
    /// Delivers without waiting: `Err(Some(event))` gives the event back when
    /// the mailbox is full, `Err(None)` means the object is gone.
    fn try_deliver(&self, event: SocketEvent) -> Result<(), Option<SocketEvent>>;

    /// Delivers, waiting for room; false when the object is gone.
    fn deliver(&self, event: SocketEvent) -> impl Future<Output = bool> + Send + 'static;
}

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

    /// Every open (not closing) socket, in accept order.
    pub fn open(&self) -> impl Iterator<Item = &SocketEntry> {
        self.live(None).map(|(_, e)| e)
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
pub fn validate_tags(tags: &[String], limits: &SocketLimits) -> Result<(), SocketError> {
    if tags.len() > limits.max_tags {
        return Err(SocketError::InvalidTags(format!(
            "at most {} tags",
            limits.max_tags
        )));
    }
    if let Some(t) = tags
        .iter()
        .find(|t| t.is_empty() || t.len() > limits.max_tag_bytes)
    {
        return Err(SocketError::InvalidTags(format!(
            "tag {:?}: tags are 1..={} bytes",
            t.chars().take(32).collect::<String>(),
            limits.max_tag_bytes
        )));
    }
    Ok(())
}

/// Checks an attachment against the limit.
pub fn validate_attachment(a: &Option<Vec<u8>>, limits: &SocketLimits) -> Result<(), SocketError> {
    match a {
        Some(v) if v.len() > limits.max_attachment_bytes => Err(SocketError::AttachmentTooLarge(
            u32::try_from(limits.max_attachment_bytes).unwrap_or(u32::MAX),
        )),
        _ => Ok(()),
    }
}
