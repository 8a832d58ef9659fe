//! The object's WebSockets, owned by the host.
//!
//! Frames sent during an event are released only once the event's writes are
//! durable (the output gate). Sockets, their tags and attachments survive
//! traps and evictions: the host keeps them, so they are where per-connection
//! state that must outlive an instance belongs. Tag and attachment changes are
//! undone by a trap, like storage writes.
//!
//! Limits: ≤ 10 tags of 1–256 bytes, attachments ≤ 2 KiB, auto-response texts
//! ≤ 2 KiB each, close codes 1000, 1001, 1008, 1009, 1011 or 3000–4999.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Error, Frame, Result, SocketError, SocketId, sys};

/// One of this object's WebSockets (a host-wide unique id; the connection
/// itself stays with the host).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Socket(SocketId);

type SocketResult<T> = std::result::Result<T, SocketError>;

impl Socket {
    /// The socket with this id.
    pub fn from_id(id: SocketId) -> Socket {
        Socket(id)
    }

    /// Its id.
    pub fn id(self) -> SocketId {
        self.0
    }

    /// Queues a frame.
    pub fn send(self, frame: &Frame) -> SocketResult<()> {
        sys::sockets::send(self.0, frame)
    }

    /// Queues a text frame.
    pub fn send_text(self, text: impl Into<String>) -> SocketResult<()> {
        self.send(&Frame::Text(text.into()))
    }

    /// Queues `value` as a JSON text frame.
    pub fn send_json<T: Serialize + ?Sized>(self, value: &T) -> Result<()> {
        Ok(self.send_text(serde_json::to_string(value)?)?)
    }

    /// Closes it with a code and a reason (≤ 123 bytes). It leaves this
    /// object's sockets at once; no `on_socket_close` follows.
    pub fn close(self, code: u16, reason: &str) -> SocketResult<()> {
        sys::sockets::close(self.0, code, reason)
    }

    /// Its tags.
    pub fn tags(self) -> SocketResult<Vec<String>> {
        sys::sockets::tags(self.0)
    }

    /// Replaces its tags.
    pub fn set_tags<T: AsRef<str>>(self, tags: &[T]) -> SocketResult<()> {
        let tags: Vec<String> = tags.iter().map(|t| t.as_ref().to_string()).collect();
        sys::sockets::set_tags(self.0, &tags)
    }

    /// Its attachment decoded from JSON (`None` when it has none). An
    /// attachment that does not decode is an error.
    pub fn attachment<T: DeserializeOwned>(self) -> Result<Option<T>> {
        match self.attachment_bytes()? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                Error::internal(format!(
                    "socket {}: attachment does not decode: {e}",
                    self.0
                ))
            }),
        }
    }

    /// Sets its attachment to `value`, as JSON (≤ 2 KiB encoded).
    pub fn set_attachment<T: Serialize + ?Sized>(self, value: &T) -> Result<()> {
        let bytes = serde_json::to_vec(value)?;
        Ok(self.set_attachment_bytes(Some(&bytes))?)
    }

    /// Its attachment as raw bytes.
    pub fn attachment_bytes(self) -> SocketResult<Option<Vec<u8>>> {
        sys::sockets::attachment(self.0)
    }

    /// Sets (or with `None` clears) its attachment as raw bytes (≤ 2 KiB).
    pub fn set_attachment_bytes(self, value: Option<&[u8]>) -> SocketResult<()> {
        sys::sockets::set_attachment(self.0, value)
    }

    /// When the host last answered the auto-response on it (ms since the
    /// Unix epoch).
    pub fn auto_response_timestamp(self) -> SocketResult<Option<u64>> {
        sys::sockets::auto_response_timestamp(self.0)
    }
}

impl std::fmt::Display for Socket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "socket {}", self.0)
    }
}

/// This object's open sockets (with a tag: those carrying it), in the order
/// they were accepted.
pub fn list(tag: Option<&str>) -> Vec<Socket> {
    sys::sockets::list(tag).into_iter().map(Socket).collect()
}

/// Queues one frame for every socket (with a tag: those carrying it) except
/// those in `except`; returns how many it was queued for.
pub fn broadcast(frame: &Frame, tag: Option<&str>, except: &[Socket]) -> u32 {
    let except: Vec<SocketId> = except.iter().map(|s| s.0).collect();
    sys::sockets::broadcast(frame, tag, &except)
}

/// [`broadcast`] of a text frame.
pub fn broadcast_text(text: impl Into<String>, tag: Option<&str>, except: &[Socket]) -> u32 {
    broadcast(&Frame::Text(text.into()), tag, except)
}

/// [`broadcast`] of `value` as a JSON text frame.
pub fn broadcast_json<T: Serialize + ?Sized>(
    value: &T,
    tag: Option<&str>,
    except: &[Socket],
) -> Result<u32> {
    Ok(broadcast_text(serde_json::to_string(value)?, tag, except))
}

/// Sets (or with `None` clears) the auto-response: a text frame equal to
/// `request` is answered with `response` by the host itself, without
/// running or waking the object. It holds for all of the object's sockets,
/// takes effect at once (a trap does not undo it), and is kept for as long
/// as the object has sockets — so set it again in `init`.
pub fn set_auto_response(pair: Option<(&str, &str)>) -> SocketResult<()> {
    sys::sockets::set_auto_response(pair)
}

/// The current auto-response pair.
pub fn auto_response() -> Option<(String, String)> {
    sys::sockets::get_auto_response()
}
