//! One host-owned WebSocket connection.
//!
//! A [`SocketConn`] is the shared half: a bounded outbound queue that actors
//! push encoded frames into. [`run`] is the connection's single task: it reads
//! client frames ([`super::frames`]) into events for the owning object, and
//! writes queued frames — all that are queued, joined into as few writes as the
//! socket takes. While a connection is idle it holds no read or write buffer.
//!
//! Server frames are encoded by the host (unmasked, RFC 6455 §5.2), once per
//! broadcast: the encoded bytes are shared by every socket they go to.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::sync::Notify;

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

#[derive(Default)]
struct Outbound {
    frames: VecDeque<Bytes>,
    bytes: usize,
    /// The close frame to send after the queued frames; nothing is queued after it.
    close: Option<Bytes>,
    /// Why the connection is closing or ended.
    reason: Option<(u16, String)>,
}

/// The host side of one WebSocket: its queue and its lifetime.
pub struct SocketConn {
    id: SocketId,
    max_queue_bytes: usize,
    out: Mutex<Outbound>,
    wake: Notify,
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
            wake: Notify::new(),
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
        if out.close.is_some() || out.reason.is_some() {
            return true; // closing: frames after the close are dropped
        }
        if out.bytes + frame.len() > self.max_queue_bytes {
            out.frames.clear();
            out.bytes = 0;
            out.close = Some(encode_close(1008, "send queue full: client too slow"));
            out.reason = Some((1008, "send queue full: client too slow".into()));
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
            self.wake.notify_one();
        }
        true
    }

    /// Queues a close frame after the frames already queued; the connection ends
    /// once it is written (and the client answered, or briefly after).
    pub fn close(&self, code: u16, reason: &str) {
        if let Ok(mut out) = self.out.lock()
            && out.close.is_none()
            && out.reason.is_none()
        {
            out.close = Some(encode_close(code, reason));
            out.reason = Some((code, reason.to_string()));
        }
        self.wake.notify_one();
    }

    /// True once the connection must end now.
    pub fn is_ended(&self) -> bool {
        self.ended.load(Ordering::Acquire)
    }

    /// Ends the connection now.
    pub fn end(&self) {
        self.ended.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    fn end_reason(&self) -> (u16, String) {
        self.out
            .lock()
            .ok()
            .and_then(|o| o.reason.clone())
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
        if let Some(close) = out.close.take() {
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

/// Runs a socket after its upgrade completed, in one task: reads client frames
/// and turns them into events, answers pings and auto-responses, writes queued
/// frames. While idle it holds no buffers — only the stream and this state —
/// so a hibernating connection costs little memory. Tells the object once,
/// when the connection ends.
pub async fn run(conn: Arc<SocketConn>, stream: TcpStream, read_buf: Bytes, params: ConnParams) {
    let (code, reason) = serve(&conn, &stream, read_buf, &params).await;
    conn.end();
    // Best effort: flush a pending close frame without waiting on the client.
    let mut last = BytesMut::new();
    conn.take(&mut last);
    if !last.is_empty() {
        let _ = stream.try_write(&last);
    }
    let mut stream = stream;
    let _ = tokio::time::timeout(Duration::from_millis(100), stream.shutdown()).await;
    drop(stream);
    params
        .object
        .send(Event::SocketClosed {
            id: conn.id,
            code,
            reason,
        })
        .await
        .ok();
}

async fn serve(
    conn: &Arc<SocketConn>,
    stream: &TcpStream,
    read_buf: Bytes,
    params: &ConnParams,
) -> (u16, String) {
    let mut decoder = Decoder::new(params.max_frame_bytes);
    // Buffers exist only while there is something in them.
    let mut inbuf: Option<BytesMut> = (!read_buf.is_empty()).then(|| BytesMut::from(&read_buf[..]));
    // `read_buf` may share hyper's whole read buffer: do not keep it alive.
    drop(read_buf);
    let mut outbuf: Option<BytesMut> = None;
    let mut read_closed = false;
    // Set once the close handshake is under way: (code, reason) to report.
    let mut closing: Option<(u16, String)> = None;
    let mut close_deadline: Option<tokio::time::Instant> = None;
    let lost = || (1006, "connection lost".to_string());
    loop {
        // 1. Decode and dispatch every whole message already buffered.
        if let Some(buf) = inbuf.as_mut() {
            loop {
                let frame = match decoder.decode(buf) {
                    Ok(None) => break,
                    Ok(Some(Incoming::Text(text))) => {
                        if let Some(resp) = conn.auto.get().and_then(|a| a.answer(&text)) {
                            conn.last_auto_response.store(now_ms(), Ordering::Relaxed);
                            params.metrics.auto_responded();
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
                        read_closed = true;
                        closing.get_or_insert((code, reason));
                        break;
                    }
                    Err(e) => {
                        let (code, why) = e.close();
                        conn.close(code, why);
                        read_closed = true;
                        closing.get_or_insert((code, why.to_string()));
                        break;
                    }
                };
                if !dispatch(conn, params, frame).await {
                    return (1001, "object unavailable".into());
                }
            }
            if buf.is_empty() && decoder.is_idle() {
                inbuf = None;
            }
        }

        // 2. Write what is queued, as far as the socket takes it.
        let mut wrote_close = false;
        loop {
            let out = outbuf.get_or_insert_with(BytesMut::new);
            if out.is_empty() {
                let (_, close) = conn.take(out);
                wrote_close |= close;
                if out.is_empty() {
                    break;
                }
            }
            match stream.try_write(out) {
                Ok(n) => out.advance(n),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => return closing.unwrap_or_else(lost),
            }
        }
        let out_empty = outbuf.as_ref().is_none_or(|b| b.is_empty());
        if out_empty {
            outbuf = None;
        }
        if wrote_close || conn.close_taken.load(Ordering::Relaxed) {
            if closing.is_none() {
                // The host or the guest closed it: wait briefly for the echo.
                closing = Some(conn.end_reason());
            }
            let now = tokio::time::Instant::now();
            if out_empty && (read_closed || close_deadline.is_some_and(|d| d <= now)) {
                return closing.unwrap_or((1000, String::new()));
            }
            close_deadline.get_or_insert(now + CLOSE_WAIT);
        }
        if conn.is_ended() {
            // Ending now: what the socket did not take is dropped.
            return closing.unwrap_or_else(|| conn.end_reason());
        }

        // 3. Wait for the next thing to do: one readiness future and one
        //    notification (small: this state is what an idle connection costs).
        let mut interest: Option<Interest> = None;
        if !read_closed {
            interest = Some(Interest::READABLE);
        }
        if !out_empty {
            interest = Some(interest.map_or(Interest::WRITABLE, |i| i | Interest::WRITABLE));
        }
        let wait = async {
            match interest {
                Some(i) => tokio::select! {
                    r = stream.ready(i) => r.map(Some),
                    _ = conn.wake.notified() => Ok(None),
                },
                None => {
                    conn.wake.notified().await;
                    Ok(None)
                }
            }
        };
        let ready = match close_deadline {
            // Only a closing connection pays for a timer.
            Some(deadline) => Box::pin(tokio::time::timeout_at(deadline, wait))
                .await
                .unwrap_or(Ok(None)),
            None => wait.await,
        };
        let ready = match ready {
            Ok(r) => r,
            Err(_) => return closing.unwrap_or_else(lost),
        };
        if ready.is_some_and(|r| r.is_readable() || r.is_read_closed()) {
            // `decode` has already refused a header that declares too much.
            let want = match &inbuf {
                Some(buf) => decoder
                    .wanted(buf)
                    .max(READ_CHUNK)
                    .min(params.max_frame_bytes.max(READ_CHUNK) + 14),
                None => READ_CHUNK,
            };
            match read_some(stream, &mut inbuf, want) {
                Ok(0) => {
                    read_closed = true;
                    if closing.is_none() {
                        return lost();
                    }
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return closing.unwrap_or_else(lost),
            }
        }
    }
}

/// Reads what the socket holds into `inbuf`: `Ok(0)` at end of stream.
///
/// Without a partial frame buffered (the usual case: one small message at a
/// time), it reads into the stack and keeps only the bytes read, instead of
/// allocating a [`READ_CHUNK`] buffer per message. A read that does not fill
/// the space offered has drained the socket, so the readiness is cleared
/// right away (tokio keeps it if data arrived meanwhile): the next wait does
/// not first need a read that fails with EAGAIN.
fn read_some(
    stream: &TcpStream,
    inbuf: &mut Option<BytesMut>,
    want: usize,
) -> std::io::Result<usize> {
    use std::io::Read as _;
    let mut got = 0;
    let r = stream.try_io(Interest::READABLE, || {
        let sock = socket2::SockRef::from(stream);
        let (n, room) = match inbuf.as_mut() {
            None => {
                let mut chunk = [0u8; READ_CHUNK];
                let n = (&*sock).read(&mut chunk)?;
                if n > 0 {
                    *inbuf = Some(BytesMut::from(&chunk[..n]));
                }
                (n, READ_CHUNK)
            }
            Some(buf) => {
                let start = buf.len();
                buf.resize(start + want, 0);
                let r = (&*sock).read(&mut buf[start..]);
                buf.truncate(start + *r.as_ref().unwrap_or(&0));
                (r?, want)
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

async fn dispatch(conn: &SocketConn, params: &ConnParams, frame: Frame) -> bool {
    let event = Event::SocketMessage {
        id: conn.id,
        frame,
        at: tokio::time::Instant::now(),
    };
    match params.object.try_send(event) {
        Ok(()) => true,
        // A full mailbox: wait (backpressure). Boxed, so that the rare slow path
        // does not make every idle connection's state larger.
        Err(Some(event)) => Box::pin(params.object.send(event)).await.is_ok(),
        Err(None) => false,
    }
}

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
