//! One host-owned WebSocket connection: a bounded outbound queue drained by a
//! writer task that joins queued frames into as few writes as possible, and a
//! reader task that turns client frames into events for the owning object.
//!
//! Server frames are encoded by the host (unmasked, RFC 6455 §5.2), once per
//! broadcast: the encoded bytes are shared by every socket they go to.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use fastwebsockets::{OpCode, Role, WebSocketError};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::bindings::Frame;
use crate::objects::{Event, ObjectHandle};

/// A socket id, unique within the host process.
pub type SocketId = u64;

/// The most bytes joined into one write.
const MAX_WRITE_BYTES: usize = 64 * 1024;
/// How long a writer waits for a client to take one write before giving up on it.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

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
}

/// The host side of one WebSocket: its queue and its lifetime.
pub struct SocketConn {
    id: SocketId,
    max_queue_bytes: usize,
    out: Mutex<Outbound>,
    wake_writer: Notify,
    /// Cancelled when the connection must end (closed, overflowed, shutdown).
    ended: CancellationToken,
}

impl SocketConn {
    /// A connection that will queue at most `max_queue_bytes` unread bytes.
    pub fn new(id: SocketId, max_queue_bytes: usize) -> Arc<SocketConn> {
        Arc::new(SocketConn {
            id,
            max_queue_bytes,
            out: Mutex::new(Outbound::default()),
            wake_writer: Notify::new(),
            ended: CancellationToken::new(),
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
        if out.close.is_some() {
            return true; // closing: frames after the close are dropped
        }
        if out.bytes + frame.len() > self.max_queue_bytes {
            out.frames.clear();
            out.bytes = 0;
            out.close = Some(encode_close(1008, "send queue full: client too slow"));
            drop(out);
            tracing::warn!(
                socket = self.id,
                "closing a client that does not read (1008)"
            );
            self.wake_writer.notify_one();
            self.ended.cancel();
            return false;
        }
        out.bytes += frame.len();
        out.frames.push_back(frame);
        drop(out);
        self.wake_writer.notify_one();
        true
    }

    /// Queues a close frame after the frames already queued, then ends.
    pub fn close(&self, code: u16, reason: &str) {
        self.close_with(encode_close(code, reason));
    }

    /// Queues an encoded close frame (the first one wins).
    fn close_with(&self, frame: Bytes) {
        if let Ok(mut out) = self.out.lock()
            && out.close.is_none()
        {
            out.close = Some(frame);
        }
        self.wake_writer.notify_one();
    }

    /// True once the connection is ending.
    pub fn is_ended(&self) -> bool {
        self.ended.is_cancelled()
    }

    /// Ends the connection now (reader and writer stop).
    pub fn end(&self) {
        self.ended.cancel();
        self.wake_writer.notify_one();
    }

    fn take(&self, buf: &mut BytesMut) -> (bool, bool) {
        // Returns (took anything, close frame included).
        let Ok(mut out) = self.out.lock() else {
            return (false, true);
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
        if let Some(close) = out.close.take() {
            buf.extend_from_slice(&close);
            return (true, true);
        }
        (took, false)
    }
}

/// Runs a socket after its upgrade completed: the reader in this task, the
/// writer in another. Ends when either side ends; tells the object once.
pub async fn run(
    conn: Arc<SocketConn>,
    upgraded: Upgraded,
    object: ObjectHandle,
    max_frame_bytes: usize,
) {
    let io = TokioIo::new(upgraded);
    let (read, write) = tokio::io::split(io);
    let writer = tokio::spawn(write_loop(conn.clone(), write));
    let (code, reason) = read_loop(&conn, read, &object, max_frame_bytes).await;
    conn.end();
    let _ = writer.await;
    object
        .send(Event::SocketClosed {
            id: conn.id,
            code,
            reason,
        })
        .await;
}

async fn write_loop<W: tokio::io::AsyncWrite + Unpin>(conn: Arc<SocketConn>, mut write: W) {
    let mut buf = BytesMut::with_capacity(1024);
    loop {
        buf.clear();
        let (took, closing) = conn.take(&mut buf);
        if took {
            match tokio::time::timeout(WRITE_TIMEOUT, write.write_all(&buf)).await {
                Ok(Ok(())) => {}
                _ => {
                    conn.end();
                    return;
                }
            }
            if closing {
                let _ = tokio::time::timeout(WRITE_TIMEOUT, write.flush()).await;
                // Give the client a moment to answer the close, then hang up.
                tokio::select! {
                    _ = conn.ended.cancelled() => {}
                    _ = tokio::time::sleep(Duration::from_secs(2)) => conn.end(),
                }
                let _ = write.shutdown().await;
                return;
            }
            continue;
        }
        if conn.is_ended() {
            return;
        }
        tokio::select! {
            _ = conn.wake_writer.notified() => {}
            _ = conn.ended.cancelled() => {
                // Flush a pending close frame (e.g. 1008 for a slow client).
                buf.clear();
                let (took, _) = conn.take(&mut buf);
                if took {
                    let _ = tokio::time::timeout(Duration::from_millis(200), write.write_all(&buf)).await;
                }
                let _ = write.shutdown().await;
                return;
            }
        }
    }
}

/// Queues a frame the protocol obliges us to send (pong, close echo).
fn obligated_send(conn: &SocketConn, frame: &fastwebsockets::Frame<'_>) -> bool {
    let bytes = encode_frame(frame.opcode, &frame.payload);
    if frame.opcode == OpCode::Close {
        conn.close_with(bytes);
        true
    } else {
        conn.push(bytes)
    }
}

/// Reads client frames until the connection ends; returns the close code and
/// reason to report to the object.
async fn read_loop<R: tokio::io::AsyncRead + Unpin>(
    conn: &Arc<SocketConn>,
    read: R,
    object: &ObjectHandle,
    max_frame_bytes: usize,
) -> (u16, String) {
    let (mut ws, _) = fastwebsockets::after_handshake_split(read, tokio::io::sink(), Role::Server);
    ws.set_max_message_size(max_frame_bytes);
    ws.set_auto_close(true);
    ws.set_auto_pong(true);
    // A message being reassembled from fragments.
    let mut partial: Option<(OpCode, Vec<u8>)> = None;
    loop {
        let mut obligated = |frame: fastwebsockets::Frame<'_>| {
            // Pongs and close echoes go through the queue, after data frames.
            let pushed = obligated_send(conn, &frame);
            async move {
                if pushed {
                    Ok::<(), std::io::Error>(())
                } else {
                    Err(std::io::Error::other("send queue full"))
                }
            }
        };
        let frame = tokio::select! {
            f = ws.read_frame(&mut obligated) => f,
            _ = conn.ended.cancelled() => return (1006, "connection ended by the host".into()),
        };
        let frame = match frame {
            Ok(f) => f,
            Err(WebSocketError::FrameTooLarge) => {
                conn.close(1009, "message too big");
                return (1009, "message too big".into());
            }
            Err(WebSocketError::InvalidUTF8) => {
                conn.close(1007, "invalid UTF-8");
                return (1007, "invalid UTF-8".into());
            }
            Err(WebSocketError::UnexpectedEOF) | Err(WebSocketError::ConnectionClosed) => {
                return (1006, "connection lost".into());
            }
            Err(e) => {
                conn.close(1002, "protocol error");
                return (1002, format!("protocol error: {e}"));
            }
        };
        let (opcode, data) = match frame.opcode {
            OpCode::Close => {
                let p = &frame.payload;
                let code = if p.len() >= 2 {
                    u16::from_be_bytes([p[0], p[1]])
                } else {
                    1005
                };
                let reason = String::from_utf8_lossy(p.get(2..).unwrap_or_default()).into_owned();
                return (code, reason);
            }
            OpCode::Ping | OpCode::Pong => continue,
            OpCode::Text | OpCode::Binary if frame.fin => {
                if partial.is_some() {
                    conn.close(1002, "unfinished fragmented message");
                    return (1002, "protocol error: unfinished fragmented message".into());
                }
                (frame.opcode, frame.payload.to_vec())
            }
            OpCode::Text | OpCode::Binary => {
                if partial.is_some() {
                    conn.close(1002, "unfinished fragmented message");
                    return (1002, "protocol error: unfinished fragmented message".into());
                }
                partial = Some((frame.opcode, frame.payload.to_vec()));
                continue;
            }
            OpCode::Continuation => {
                let Some((op, mut buf)) = partial.take() else {
                    conn.close(1002, "unexpected continuation frame");
                    return (1002, "protocol error: unexpected continuation".into());
                };
                if buf.len() + frame.payload.len() > max_frame_bytes {
                    conn.close(1009, "message too big");
                    return (1009, "message too big".into());
                }
                buf.extend_from_slice(&frame.payload);
                if !frame.fin {
                    partial = Some((op, buf));
                    continue;
                }
                (op, buf)
            }
        };
        let frame = if opcode == OpCode::Text {
            match String::from_utf8(data) {
                Ok(text) => Frame::Text(text),
                Err(_) => {
                    conn.close(1007, "invalid UTF-8");
                    return (1007, "invalid UTF-8".into());
                }
            }
        } else {
            Frame::Binary(data)
        };
        if !object
            .send(Event::SocketMessage { id: conn.id, frame })
            .await
        {
            conn.close(1001, "object unavailable");
            return (1001, "object unavailable".into());
        }
    }
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
