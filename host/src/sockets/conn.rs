//! One host-owned WebSocket connection.
//!
//! A [`SocketConn`] is the shared half: a bounded outbound queue that actors
//! push encoded frames into. [`run`] is the connection's single task: it reads
//! client frames ([`super::frames`]) into events for the owning object, and
//! writes queued frames — all that are queued, joined into as few writes as the
//! socket takes. While a connection is idle it holds no read or write buffer,
//! and its task is a small hand-written state machine ([`Connection`]).
//!
//! Server frames are encoded by the host (unmasked, RFC 6455 §5.2), once per
//! broadcast: the encoded bytes are shared by every socket they go to.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use atomic_waker::AtomicWaker;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::frames::{Decoder, Incoming, OpCode};
use crate::bindings::Frame;
use crate::objects::{Event, ObjectHandle};

/// A socket id, unique within the host process.
pub type SocketId = u64;

/// Queue capacity an idle connection may keep; more is released once drained.
const IDLE_QUEUE_SLOTS: usize = 4;

/// The most bytes joined into one write.
const MAX_WRITE_BYTES: usize = 64 * 1024;

/// Encodes a server-to-client frame.
pub fn encode_frame(opcode: OpCode, payload: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(payload.len() + 10);
    buf.put_u8(0x80 | opcode as u8);
    let len = payload.len();
    if len < 126 {
        buf.put_u8(len as u8);
    } else if len <= u16::MAX as usize {
        buf.put_u8(126);
        buf.put_u16(len as u16);
    } else {
        buf.put_u8(127);
        buf.put_u64(len as u64);
    }
    buf.put_slice(payload);
    buf.freeze()
}

/// Encodes a guest frame.
pub fn encode_guest_frame(frame: &Frame) -> Bytes {
    match frame {
        Frame::Text(t) => encode_frame(OpCode::Text, t.as_bytes()),
        Frame::Binary(b) => encode_frame(OpCode::Binary, b),
    }
}

/// Encodes a close frame; the reason is cut to 123 bytes on a char boundary.
pub fn encode_close(code: u16, reason: &str) -> Bytes {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = Vec::with_capacity(2 + end);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    encode_frame(OpCode::Close, &payload)
}

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
    pub(crate) last_auto_response: AtomicU64,
    /// The owning object's auto-response pair, set when the object accepts.
    pub(crate) auto: std::sync::OnceLock<Arc<AutoResponse>>,
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
        })
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

    fn end_reason(&self) -> (u16, String) {
        self.out
            .lock()
            .ok()
            .and_then(|o| o.closing.as_ref().map(|c| (c.code, c.reason.clone())))
            .unwrap_or((1006, "connection ended by the host".into()))
    }

    /// Moves queued frames (and a pending close frame) into `buf`, up to about
    /// [`MAX_WRITE_BYTES`]. Returns (took anything, the close frame included).
    fn take(&self, buf: &mut BytesMut) -> (bool, bool) {
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

/// Everything a connection needs from the host.
pub struct ConnParams {
    /// The object's mailbox.
    pub object: ObjectHandle,
    /// Largest client message.
    pub max_frame_bytes: usize,
    /// The host's counters.
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// Runs a socket after its upgrade completed: reads client frames and turns
/// them into events, answers pings and auto-responses, writes queued frames.
/// Tells the object once, when the connection ends.
///
/// The connection is one task whose state is [`Connection`]: a hand-written
/// poll loop rather than an `async` block, so that an idle connection's task
/// holds only the stream, the mailbox handle and empty slots (144 bytes; a
/// 256-byte task with tokio's header) — no readiness or notification futures,
/// no buffers. The returned future is a plain enum too: an `async fn` would
/// keep its arguments beside the state they were moved into.
pub fn run(
    conn: Arc<SocketConn>,
    stream: TcpStream,
    read_buf: Bytes,
    params: ConnParams,
) -> ConnTask {
    ConnTask::Serving(Connection {
        conn,
        stream,
        decoder: Decoder::new(params.max_frame_bytes),
        // `read_buf` may share hyper's whole read buffer: copy what is in it.
        inbuf: (!read_buf.is_empty()).then(|| Box::new(BytesMut::from(&read_buf[..]))),
        outbuf: None,
        object: params.object,
        metrics: params.metrics,
        read_closed: false,
        closing: None,
        blocked: None,
    })
}

/// A connection's task (see [`run`]).
pub enum ConnTask {
    /// Reading and writing frames.
    Serving(Connection),
    /// Flushing, hanging up and telling the object. Boxed: the ending's
    /// futures are not part of every idle connection's state.
    Finishing(Pin<Box<dyn Future<Output = ()> + Send>>),
    /// Over.
    Done,
}

impl Future for ConnTask {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            match this {
                ConnTask::Serving(c) => {
                    let Poll::Ready((code, reason)) = c.poll_serve(cx) else {
                        return Poll::Pending;
                    };
                    if let ConnTask::Serving(c) = std::mem::replace(this, ConnTask::Done) {
                        *this = ConnTask::Finishing(Box::pin(c.finish(code, reason)));
                    }
                }
                ConnTask::Finishing(f) => {
                    if f.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    *this = ConnTask::Done;
                }
                ConnTask::Done => return Poll::Ready(()),
            }
        }
    }
}

/// A message waiting for room in the object's mailbox (backpressure).
type Blocked = Pin<Box<dyn Future<Output = bool> + Send>>;

/// One connection's state between polls.
pub struct Connection {
    conn: Arc<SocketConn>,
    stream: TcpStream,
    /// The object's mailbox.
    object: ObjectHandle,
    metrics: Arc<crate::metrics::Metrics>,
    decoder: Decoder,
    /// Bytes read and not yet decoded (boxed: only a message that arrives in
    /// pieces stays here between polls); `None` while there are none.
    inbuf: Option<Box<BytesMut>>,
    /// Bytes taken from the queue and not yet written; `None` while there are none.
    outbuf: Option<BytesMut>,
    read_closed: bool,
    /// Set once the close handshake is under way: the code and reason to
    /// report, and (only a closing connection pays for a timer) the deadline.
    closing: Option<Box<Ending>>,
    /// A decoded message the object's full mailbox has not taken yet.
    /// (Boxed again: a thin pointer keeps every idle connection's task in a
    /// smaller allocation class.)
    blocked: Option<Box<Blocked>>,
}

/// A connection's close handshake under way.
struct Ending {
    /// The code and reason to report.
    why: (u16, String),
    /// When to stop waiting for the client's close echo.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Ending {
    fn new(why: (u16, String)) -> Box<Ending> {
        Box::new(Ending {
            why,
            deadline: None,
        })
    }
}

/// How often one poll goes round its loop before letting other tasks run.
const ROUNDS_PER_POLL: usize = 32;

fn lost() -> (u16, String) {
    (1006, "connection lost".into())
}

fn unavailable() -> (u16, String) {
    (1001, "object unavailable".into())
}

impl Connection {
    /// The connection's loop. Returns the code and reason to report once it ends.
    fn poll_serve(&mut self, cx: &mut Context<'_>) -> Poll<(u16, String)> {
        // Registered before any state is read: a push after this wakes us.
        self.conn.task.register(cx.waker());
        for _ in 0..ROUNDS_PER_POLL {
            let mut progress = false;

            // 1. A message waiting for room in the mailbox goes first.
            if let Some(send) = self.blocked.as_mut() {
                match Pin::as_mut(&mut **send).poll(cx) {
                    Poll::Ready(true) => {
                        self.blocked = None;
                        progress = true;
                    }
                    Poll::Ready(false) => return Poll::Ready(unavailable()),
                    Poll::Pending => {}
                }
            }

            // 2. Decode and dispatch every whole message already buffered.
            if self.blocked.is_none()
                && let Some(end) = self.dispatch_buffered(cx)
            {
                return Poll::Ready(end);
            }

            // 3. Write what is queued, as far as the socket takes it.
            if let Err(end) = self.write_queued() {
                return Poll::Ready(end);
            }
            let out_empty = self.outbuf.is_none();
            if self.conn.close_taken.load(Ordering::Relaxed) {
                if self.closing.is_none() {
                    // The host or the guest closed it: wait briefly for the echo.
                    self.closing = Some(Ending::new(self.conn.end_reason()));
                }
                if out_empty && self.read_closed {
                    return Poll::Ready(self.take_closing(|| (1000, String::new())));
                }
                let timed_out = self.closing.as_mut().is_some_and(|ending| {
                    let deadline = ending
                        .deadline
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep(CLOSE_WAIT)));
                    deadline.as_mut().poll(cx).is_ready()
                });
                if timed_out {
                    // The client did not answer (or read) in time.
                    return Poll::Ready(self.take_closing(lost));
                }
            }
            if self.conn.is_ended() {
                // Ending now: what the socket did not take is dropped.
                let reason = self.conn.end_reason();
                return Poll::Ready(self.take_closing(|| reason));
            }
            if !out_empty {
                match self.stream.poll_write_ready(cx) {
                    Poll::Ready(Ok(())) => progress = true,
                    Poll::Ready(Err(_)) => return Poll::Ready(self.take_closing(lost)),
                    Poll::Pending => {}
                }
            }

            // 4. Read what the client sent, unless the mailbox is full.
            if !self.read_closed && self.blocked.is_none() {
                match self.stream.poll_read_ready(cx) {
                    Poll::Ready(Ok(())) => match self.read() {
                        Ok(()) => progress = true,
                        Err(end) => return Poll::Ready(end),
                    },
                    Poll::Ready(Err(_)) => return Poll::Ready(self.take_closing(lost)),
                    Poll::Pending => {}
                }
            }

            if !progress {
                // Every source of work has our waker: the queue, the socket's
                // readiness, the mailbox, the close timer.
                return Poll::Pending;
            }
        }
        // Still busy: yield to other tasks and come back.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    fn take_closing(&mut self, otherwise: impl FnOnce() -> (u16, String)) -> (u16, String) {
        self.closing.take().map_or_else(otherwise, |c| c.why)
    }

    /// Reads once into the input buffer.
    fn read(&mut self) -> Result<(), (u16, String)> {
        // `decode` has already refused a header that declares too much.
        let want = match &self.inbuf {
            Some(buf) => self
                .decoder
                .wanted(buf)
                .max(READ_CHUNK)
                .min(self.decoder.max_message().max(READ_CHUNK) + 14),
            None => READ_CHUNK,
        };
        match read_some(&self.stream, &mut self.inbuf, want) {
            Ok(0) => {
                self.read_closed = true;
                if self.inbuf.as_ref().is_some_and(|b| b.is_empty()) {
                    self.inbuf = None;
                }
                if self.closing.is_none() {
                    return Err(lost());
                }
                Ok(())
            }
            Ok(_) => Ok(()),
            // Readiness was stale; it is cleared and re-armed on the next poll.
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(()),
            Err(_) => Err(self.take_closing(lost)),
        }
    }

    /// Writes queued frames until the queue is empty or the socket is full.
    fn write_queued(&mut self) -> Result<(), (u16, String)> {
        loop {
            let out = self.outbuf.get_or_insert_with(BytesMut::new);
            if out.is_empty() {
                self.conn.take(out);
                if out.is_empty() {
                    self.outbuf = None;
                    return Ok(());
                }
            }
            match self.stream.try_write(out) {
                Ok(n) => out.advance(n),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                Err(_) => return Err(self.take_closing(lost)),
            }
        }
    }

    /// Decodes and dispatches the buffered messages. `Some` ends the connection.
    fn dispatch_buffered(&mut self, cx: &mut Context<'_>) -> Option<(u16, String)> {
        let buf = self.inbuf.as_mut()?;
        let conn = &self.conn;
        loop {
            let frame = match self.decoder.decode(buf) {
                Ok(None) => break,
                Ok(Some(Incoming::Text(text))) => {
                    if let Some(resp) = conn.auto.get().and_then(|a| a.answer(&text)) {
                        conn.last_auto_response.store(now_ms(), Ordering::Relaxed);
                        self.metrics.auto_responded();
                        conn.push(resp);
                        continue;
                    }
                    Frame::Text(text)
                }
                Ok(Some(Incoming::Binary(data))) => Frame::Binary(data),
                Ok(Some(Incoming::Ping(payload))) => {
                    conn.push(encode_frame(OpCode::Pong, &payload));
                    continue;
                }
                Ok(Some(Incoming::Pong)) => continue,
                Ok(Some(Incoming::Close(code, reason))) => {
                    // Echo the close, then hang up once it is written.
                    conn.close(if code == 1005 { 1000 } else { code }, "");
                    self.read_closed = true;
                    self.closing
                        .get_or_insert_with(|| Ending::new((code, reason)));
                    break;
                }
                Err(e) => {
                    let (code, why) = e.close();
                    conn.close(code, why);
                    self.read_closed = true;
                    self.closing
                        .get_or_insert_with(|| Ending::new((code, why.to_string())));
                    break;
                }
            };
            let event = Event::SocketMessage {
                id: conn.id,
                frame,
                at: tokio::time::Instant::now(),
            };
            match self.object.try_send(event) {
                Ok(()) => {}
                Err(Some(event)) => {
                    // A full mailbox: stop reading until it takes this one.
                    let object = self.object.clone();
                    let mut send: Blocked =
                        Box::pin(async move { object.send(event).await.is_ok() });
                    match send.as_mut().poll(cx) {
                        Poll::Ready(true) => {}
                        Poll::Ready(false) => return Some(unavailable()),
                        Poll::Pending => {
                            self.blocked = Some(Box::new(send));
                            break;
                        }
                    }
                }
                Err(None) => return Some(unavailable()),
            }
        }
        if buf.is_empty() && self.decoder.is_idle() {
            self.inbuf = None;
        }
        None
    }

    /// The connection ended: flush a pending close frame without waiting on
    /// the client, hang up, and tell the object.
    async fn finish(self, code: u16, reason: String) {
        let Connection {
            conn,
            mut stream,
            object,
            ..
        } = self;
        conn.end();
        let mut last = BytesMut::new();
        conn.take(&mut last);
        if !last.is_empty() {
            let _ = stream.try_write(&last);
        }
        let _ = tokio::time::timeout(Duration::from_millis(100), stream.shutdown()).await;
        drop(stream);
        object
            .send(Event::SocketClosed {
                id: conn.id,
                code,
                reason,
            })
            .await
            .ok();
    }
}

/// Reads what the socket holds into `inbuf`; `Ok(0)` at the end of the stream.
///
/// With nothing buffered (the usual case: one small message at a time) it reads
/// into the stack and keeps only the bytes read, instead of allocating a
/// [`READ_CHUNK`] buffer per message. A read that does not fill the space
/// offered has drained the socket, so the readiness is cleared at once (tokio
/// keeps it if more data arrived meanwhile): the connection goes back to
/// waiting without first making a read that fails with EAGAIN.
fn read_some(
    stream: &TcpStream,
    inbuf: &mut Option<Box<BytesMut>>,
    want: usize,
) -> std::io::Result<usize> {
    use std::io::Read as _;
    let mut got = 0;
    let r = stream.try_io(tokio::io::Interest::READABLE, || {
        let sock = socket2::SockRef::from(stream);
        let (n, room) = match inbuf.as_mut() {
            None => {
                let mut chunk = [0u8; READ_CHUNK];
                let n = (&*sock).read(&mut chunk)?;
                if n > 0 {
                    *inbuf = Some(Box::new(BytesMut::from(&chunk[..n])));
                }
                (n, READ_CHUNK)
            }
            Some(buf) => {
                // The space is zeroed before the read: at most MAX_READ at a
                // time, so a large frame costs linear, not quadratic, zeroing.
                let room = want.min(MAX_READ);
                buf.reserve(want);
                let start = buf.len();
                buf.resize(start + room, 0);
                let r = (&*sock).read(&mut buf[start..]);
                buf.truncate(start + r.as_ref().map_or(0, |n| *n));
                (r?, room)
            }
        };
        got = n;
        if n > 0 && n < room {
            Err(std::io::ErrorKind::WouldBlock.into())
        } else {
            Ok(n)
        }
    });
    match r {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && got > 0 => Ok(got),
        r => r,
    }
}

/// How long a closing connection waits for the client's close echo.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// The read size for small frames.
const READ_CHUNK: usize = 4096;
/// The most bytes one read asks for while a large frame comes in.
const MAX_READ: usize = 64 * 1024;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_encoded_per_rfc6455() {
        let f = encode_frame(OpCode::Text, b"hi");
        assert_eq!(&f[..], &[0x81, 2, b'h', b'i']);
        let long = vec![0u8; 300];
        let f = encode_frame(OpCode::Binary, &long);
        assert_eq!(&f[..4], &[0x82, 126, 1, 44]);
        let huge = vec![0u8; 70_000];
        let f = encode_frame(OpCode::Binary, &huge);
        assert_eq!(f[1], 127);
        assert_eq!(f.len(), 70_000 + 10);
        let c = encode_close(1009, &"é".repeat(100));
        assert_eq!(&c[2..4], &1009u16.to_be_bytes());
        assert!(c.len() <= 2 + 125);
        assert!(std::str::from_utf8(&c[4..]).is_ok());
    }

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
    fn an_idle_connections_task_stays_in_the_256_byte_class() {
        // tokio puts a task in a 128-byte-aligned cell: 104 bytes of header,
        // scheduler, stage tag and trailer, 8 of `TaskTracker`, then this state.
        // 144 bytes keeps every idle connection's task at 256 bytes, not 384.
        let size = std::mem::size_of::<ConnTask>();
        assert!(size <= 144, "ConnTask is {size} bytes");
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
