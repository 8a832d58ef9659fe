//! The host side of one WebSocket: a [`SocketConn`] is a bounded outbound
//! queue that actors push encoded frames into, and that the connection's task
//! (`http::websocket`) drains — all that is queued, joined into as few writes
//! as the socket takes. An idle connection's queue keeps no capacity.
//!
//! Also here: the object's auto-response pair ([`AutoResponse`]), which the
//! connection answers without waking the object.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Waker;

use atomic_waker::AtomicWaker;
use bytes::{Bytes, BytesMut};

use super::frames::{OpCode, encode_close, encode_frame};

/// A socket id, unique within the host process.
pub type SocketId = u64;

/// Queue capacity an idle connection may keep; more is released once drained.
const IDLE_QUEUE_SLOTS: usize = 4;

/// The most bytes joined into one write.
const MAX_WRITE_BYTES: usize = 64 * 1024;

/// Why and how a connection is closing: boxed, since most connections never
/// carry it until their last moment.
struct Closing {
    /// The close frame, until the connection task takes it.
    frame: Option<Bytes>,
    code: u16,
    reason: String,
}

#[derive(Default)]
struct Outbound {
    frames: VecDeque<Bytes>,
    bytes: usize,
    /// Set once the socket is closing; nothing is queued after it.
    closing: Option<Box<Closing>>,
}

/// The host side of one WebSocket: its queue and its lifetime.
pub struct SocketConn {
    id: SocketId,
    max_queue_bytes: usize,
    out: Mutex<Outbound>,
    /// The connection task, to wake when there is something to write or to end.
    task: AtomicWaker,
    /// Set when the connection must end now (overflow, shutdown).
    ended: AtomicBool,
    /// The close frame has been handed to the connection task.
    close_taken: AtomicBool,
    /// When the host last answered the auto-response (ms since the epoch; 0: never).
    last_auto_response: AtomicU64,
    /// The owning object's auto-response pair, set when the object accepts.
    auto: std::sync::OnceLock<Arc<AutoResponse>>,
    /// The client's address (for the admin API's `inspect`).
    peer: std::sync::OnceLock<std::net::SocketAddr>,
    /// When the connection was made (ms since the epoch).
    opened_ms: u64,
}

impl SocketConn {
    /// A connection that will queue at most `max_queue_bytes` unread bytes.
    pub fn new(id: SocketId, max_queue_bytes: usize) -> Arc<SocketConn> {
        Arc::new(SocketConn {
            id,
            max_queue_bytes,
            out: Mutex::new(Outbound::default()),
            task: AtomicWaker::new(),
            ended: AtomicBool::new(false),
            close_taken: AtomicBool::new(false),
            last_auto_response: AtomicU64::new(0),
            auto: std::sync::OnceLock::new(),
            peer: std::sync::OnceLock::new(),
            opened_ms: crate::clock::now_ms(),
        })
    }

    /// Records the client's address.
    pub fn set_peer(&self, peer: std::net::SocketAddr) {
        let _ = self.peer.set(peer);
    }

    /// The client's address, when known.
    pub fn peer(&self) -> Option<std::net::SocketAddr> {
        self.peer.get().copied()
    }

    /// When the connection was made (ms since the epoch).
    pub fn opened_ms(&self) -> u64 {
        self.opened_ms
    }

    /// The socket's id.
    pub fn id(&self) -> SocketId {
        self.id
    }

    /// Queues an encoded frame. Returns false when the client is too slow: the
    /// queue is then dropped and the socket closed with 1008.
    pub fn push(&self, frame: Bytes) -> bool {
        let Ok(mut out) = self.out.lock() else {
            return false;
        };
        if out.closing.is_some() {
            return true; // closing: frames after the close are dropped
        }
        if out.bytes + frame.len() > self.max_queue_bytes {
            const WHY: &str = "send queue full: client too slow";
            out.frames = VecDeque::new();
            out.bytes = 0;
            out.closing = Some(Box::new(Closing {
                frame: Some(encode_close(1008, WHY)),
                code: 1008,
                reason: WHY.into(),
            }));
            drop(out);
            tracing::warn!(
                socket = self.id,
                "closing a client that does not read (1008)"
            );
            self.end();
            return false;
        }
        let was_empty = out.frames.is_empty();
        out.bytes += frame.len();
        out.frames.push_back(frame);
        drop(out);
        if was_empty {
            self.task.wake();
        }
        true
    }

    /// Drops the queue's capacity if nothing is queued (an idle socket).
    pub fn release_idle_capacity(&self) {
        if let Ok(mut out) = self.out.lock()
            && out.frames.is_empty()
        {
            out.frames = VecDeque::new();
        }
    }

    /// Queues a close frame after the frames already queued; the connection ends
    /// once it is written (and the client answered, or briefly after).
    pub fn close(&self, code: u16, reason: &str) {
        if let Ok(mut out) = self.out.lock()
            && out.closing.is_none()
        {
            out.closing = Some(Box::new(Closing {
                frame: Some(encode_close(code, reason)),
                code,
                reason: reason.to_string(),
            }));
        }
        self.task.wake();
    }

    /// True once the connection must end now.
    pub fn is_ended(&self) -> bool {
        self.ended.load(Ordering::Acquire)
    }

    /// Ends the connection now.
    pub fn end(&self) {
        self.ended.store(true, Ordering::Release);
        self.task.wake();
    }

    /// Wakes the connection's task (`waker`) when there is something to
    /// write or the connection must end.
    pub(crate) fn register(&self, waker: &Waker) {
        self.task.register(waker);
    }

    /// True once the close frame has been handed to the connection task.
    pub(crate) fn close_taken(&self) -> bool {
        self.close_taken.load(Ordering::Relaxed)
    }

    /// Answers frames from now on with the object's auto-response pair (set
    /// once, when the object accepts the socket).
    pub(crate) fn use_auto_response(&self, auto: Arc<AutoResponse>) {
        let _ = self.auto.set(auto);
    }

    /// The encoded auto-response if `text` is the object's request text; the
    /// answer is recorded as given now.
    pub(crate) fn auto_answer(&self, text: &str) -> Option<Bytes> {
        let resp = self.auto.get()?.answer(text)?;
        self.last_auto_response
            .store(crate::clock::now_ms(), Ordering::Relaxed);
        Some(resp)
    }

    /// When the host last answered the auto-response (ms since the epoch).
    pub fn last_auto_response(&self) -> Option<u64> {
        let at = self.last_auto_response.load(Ordering::Relaxed);
        (at != 0).then_some(at)
    }

    /// The code and reason the connection ends with.
    pub(crate) fn end_reason(&self) -> (u16, String) {
        self.out
            .lock()
            .ok()
            .and_then(|o| o.closing.as_ref().map(|c| (c.code, c.reason.clone())))
            .unwrap_or((1006, "connection ended by the host".into()))
    }

    /// Moves queued frames (and a pending close frame) into `buf`, up to about
    /// [`MAX_WRITE_BYTES`]. Returns (took anything, the close frame included).
    pub(crate) fn take(&self, buf: &mut BytesMut) -> (bool, bool) {
        let Ok(mut out) = self.out.lock() else {
            return (false, false);
        };
        let mut took = false;
        while let Some(front) = out.frames.front() {
            if took && buf.len() + front.len() > MAX_WRITE_BYTES {
                return (true, false);
            }
            let Some(frame) = out.frames.pop_front() else {
                break;
            };
            out.bytes -= frame.len();
            buf.extend_from_slice(&frame);
            took = true;
        }
        // A burst (a join into a big room) can grow the queue to hundreds of
        // slots; an idle connection must not keep that capacity.
        if out.frames.is_empty() && out.frames.capacity() > IDLE_QUEUE_SLOTS {
            out.frames = VecDeque::new();
        }
        if let Some(close) = out.closing.as_mut().and_then(|c| c.frame.take()) {
            buf.extend_from_slice(&close);
            self.close_taken.store(true, Ordering::Relaxed);
            return (true, true);
        }
        (took, false)
    }
}

/// The request/response text pair a host answers without waking the object.
#[derive(Default)]
pub struct AutoResponse {
    pair: std::sync::RwLock<Option<(String, Bytes)>>,
}

impl AutoResponse {
    /// Sets or clears the pair.
    pub fn set(&self, pair: Option<(String, String)>) {
        if let Ok(mut p) = self.pair.write() {
            *p = pair.map(|(req, resp)| (req, encode_frame(OpCode::Text, resp.as_bytes())));
        }
    }

    /// The pair's request and response texts.
    pub fn get(&self) -> Option<(String, String)> {
        let p = self.pair.read().ok()?;
        let (req, frame) = p.as_ref()?;
        // The response is kept encoded; its payload follows a 2- or 4-byte header.
        let header = if frame.len() - 2 < 126 { 2 } else { 4 };
        Some((
            req.clone(),
            String::from_utf8_lossy(&frame[header..]).into_owned(),
        ))
    }

    /// The encoded response if `text` is the request.
    fn answer(&self, text: &str) -> Option<Bytes> {
        let p = self.pair.read().ok()?;
        match p.as_ref() {
            Some((req, resp)) if req == text => Some(resp.clone()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drained_queue_gives_its_capacity_back() {
        let conn = SocketConn::new(1, 1 << 20);
        for _ in 0..200 {
            assert!(conn.push(Bytes::from_static(b"frame")));
        }
        let mut buf = BytesMut::new();
        conn.take(&mut buf);
        let out = conn.out.lock().expect("lock");
        assert!(out.frames.is_empty());
        assert!(
            out.frames.capacity() <= IDLE_QUEUE_SLOTS,
            "{}",
            out.frames.capacity()
        );
    }

    #[test]
    fn a_hibernating_socket_keeps_no_queue_capacity_but_keeps_queued_frames() {
        let conn = SocketConn::new(1, 1 << 20);
        assert!(conn.push(Bytes::from_static(b"one")));
        conn.release_idle_capacity();
        assert_eq!(
            conn.out.lock().expect("lock").frames.len(),
            1,
            "queued frames stay"
        );
        let mut buf = BytesMut::new();
        conn.take(&mut buf);
        assert_eq!(&buf[..], b"one");
        assert!(conn.out.lock().expect("lock").frames.capacity() > 0);
        conn.release_idle_capacity();
        assert_eq!(conn.out.lock().expect("lock").frames.capacity(), 0);
    }

    #[test]
    fn a_slow_reader_is_cut_off_instead_of_growing_memory() {
        let conn = SocketConn::new(1, 1000);
        for _ in 0..9 {
            assert!(conn.push(Bytes::from(vec![0u8; 100])));
        }
        assert!(!conn.push(Bytes::from(vec![0u8; 200])));
        assert!(conn.is_ended());
        let mut buf = BytesMut::new();
        let (took, closing) = conn.take(&mut buf);
        assert!(took && closing);
        assert_eq!(
            &buf[2..4],
            &1008u16.to_be_bytes(),
            "only the 1008 close is left"
        );
    }
}
