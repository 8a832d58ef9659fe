//! One WebSocket connection's task, after the upgrade: it reads client
//! frames ([`crate::sockets::frames`]) into events for the owning object,
//! answers pings and auto-responses itself, and writes what the object queued
//! on the connection's [`SocketConn`] — all that is queued, joined into as
//! few writes as the socket takes.
//!
//! While a connection is idle it holds no read or write buffer, and its task
//! is a small hand-written state machine ([`Connection`]). The object is
//! reached only through a [`SocketInbox`] the server hands in.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::bindings::Frame;
use crate::metrics::Metrics;
use crate::sockets::frames::{Decoder, Incoming, OpCode, encode_frame};
use crate::sockets::{SocketConn, SocketEvent, SocketInbox};

/// Everything a connection needs from the host.
pub struct ConnParams<I> {
    /// Where the connection's frames and its close go: the object's mailbox.
    pub object: I,
    /// Largest client message.
    pub max_frame_bytes: usize,
    /// The host's counters.
    pub metrics: Arc<Metrics>,
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
pub fn run<I: SocketInbox>(
    conn: Arc<SocketConn>,
    stream: TcpStream,
    read_buf: Bytes,
    params: ConnParams<I>,
) -> ConnTask<I> {
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
pub enum ConnTask<I> {
    /// Reading and writing frames.
    Serving(Connection<I>),
    /// Flushing, hanging up and telling the object. Boxed: the ending's
    /// futures are not part of every idle connection's state.
    Finishing(Pin<Box<dyn Future<Output = ()> + Send>>),
    /// Over.
    Done,
}

impl<I: SocketInbox> Future for ConnTask<I> {
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
pub struct Connection<I> {
    conn: Arc<SocketConn>,
    stream: TcpStream,
    /// The object's mailbox.
    object: I,
    metrics: Arc<Metrics>,
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

impl<I: SocketInbox> Connection<I> {
    /// The connection's loop. Returns the code and reason to report once it ends.
    fn poll_serve(&mut self, cx: &mut Context<'_>) -> Poll<(u16, String)> {
        // Registered before any state is read: a push after this wakes us.
        self.conn.register(cx.waker());
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
            if self.conn.close_taken() {
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
            Some(buf) => self.decoder.wanted(buf).max(READ_CHUNK).min(
                self.decoder
                    .max_message()
                    .max(READ_CHUNK)
                    .saturating_add(14),
            ),
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
                    if let Some(resp) = conn.auto_answer(&text) {
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
            let event = SocketEvent::Message {
                id: conn.id(),
                frame,
                at: tokio::time::Instant::now(),
            };
            match self.object.try_deliver(event) {
                Ok(()) => {}
                Err(Some(event)) => {
                    // A full mailbox: stop reading until it takes this one.
                    let mut send: Blocked = Box::pin(self.object.deliver(event));
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
            .deliver(SocketEvent::Closed {
                id: conn.id(),
                code,
                reason,
            })
            .await;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_connections_task_stays_in_the_256_byte_class() {
        // tokio puts a task in a 128-byte-aligned cell: 104 bytes of header,
        // scheduler, stage tag and trailer, 8 of `TaskTracker`, then this state.
        // 144 bytes keeps every idle connection's task at 256 bytes, not 384.
        let size = std::mem::size_of::<ConnTask<crate::objects::ObjectHandle>>();
        assert!(size <= 144, "ConnTask is {size} bytes");
    }
}
