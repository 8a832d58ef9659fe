//! RFC 6455 framing, both ways.
//!
//! Client frames are decoded incrementally from a buffer the connection owns
//! (so that an idle connection can hold no buffer at all). They must be
//! masked; control frames must be short and whole; fragmented messages are
//! reassembled up to the message size limit; text must be UTF-8. Any
//! violation is an error that names the close code to send.
//!
//! Server frames are encoded by the host (unmasked, §5.2), once per
//! broadcast: the encoded bytes are shared by every socket they go to.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::bindings::Frame;

/// Frame opcodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpCode {
    /// Continuation of a fragmented message.
    Continuation = 0,
    /// UTF-8 text.
    Text = 1,
    /// Binary data.
    Binary = 2,
    /// Close.
    Close = 8,
    /// Ping.
    Ping = 9,
    /// Pong.
    Pong = 10,
}

/// A whole message or control frame from the client.
#[derive(Debug, PartialEq)]
pub enum Incoming {
    /// A text message.
    Text(String),
    /// A binary message.
    Binary(Vec<u8>),
    /// A ping; answer with a pong carrying the same payload.
    Ping(Vec<u8>),
    /// A pong (ignored).
    Pong,
    /// The client closes: code (1005 when none) and reason.
    Close(u16, String),
}

/// Why the client's bytes cannot be accepted; each maps to a close code.
#[derive(Debug, PartialEq, Eq)]
pub enum FrameError {
    /// A message larger than the limit (1009).
    TooBig,
    /// Text that is not UTF-8 (1007).
    InvalidUtf8,
    /// Anything else the RFC forbids (1002).
    Protocol(&'static str),
}

impl FrameError {
    /// The close code and reason to send.
    pub fn close(&self) -> (u16, &'static str) {
        match self {
            FrameError::TooBig => (1009, "message too big"),
            FrameError::InvalidUtf8 => (1007, "invalid UTF-8"),
            FrameError::Protocol(why) => (1002, why),
        }
    }
}

/// Reassembles client messages.
#[derive(Debug)]
pub struct Decoder {
    max_message: usize,
    /// A fragmented message in progress: (is text, bytes so far). Boxed: every
    /// idle connection holds a decoder, few ever see a fragmented message.
    partial: Option<Box<(bool, Vec<u8>)>>,
}

impl Decoder {
    /// A decoder that refuses messages larger than `max_message` bytes.
    pub fn new(max_message: usize) -> Decoder {
        Decoder {
            max_message,
            partial: None,
        }
    }

    /// How many more bytes the frame at the head of `buf` needs, at least
    /// (so the reader can reserve once for a large frame).
    pub fn wanted(&self, buf: &[u8]) -> usize {
        match header(buf) {
            // A header may declare up to 2^64 - 1 bytes: `decode` refuses
            // it, and this must not overflow first.
            Ok(Some(h)) => h
                .header_len
                .saturating_add(h.payload_len)
                .saturating_sub(buf.len()),
            _ => 0,
        }
    }

    /// Decodes the next message from `buf`, consuming its bytes. `Ok(None)`
    /// means more bytes are needed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Incoming>, FrameError> {
        loop {
            let Some(h) = header(buf)? else {
                return Ok(None);
            };
            let in_progress = self.partial.as_ref().map_or(0, |p| p.1.len());
            if h.payload_len > self.max_message || in_progress + h.payload_len > self.max_message {
                return Err(FrameError::TooBig);
            }
            if buf.len() < h.header_len + h.payload_len {
                return Ok(None);
            }
            buf.advance(h.header_len);
            let mut payload = buf.split_to(h.payload_len);
            for (i, b) in payload.iter_mut().enumerate() {
                *b ^= h.mask[i & 3];
            }
            match h.opcode {
                OpCode::Ping => return Ok(Some(Incoming::Ping(payload.to_vec()))),
                OpCode::Pong => return Ok(Some(Incoming::Pong)),
                OpCode::Close => return close_frame(&payload).map(Some),
                OpCode::Text | OpCode::Binary => {
                    if self.partial.is_some() {
                        return Err(FrameError::Protocol("new message inside a fragmented one"));
                    }
                    let text = h.opcode == OpCode::Text;
                    if h.fin {
                        return finish(text, payload.to_vec()).map(Some);
                    }
                    self.partial = Some(Box::new((text, payload.to_vec())));
                }
                OpCode::Continuation => {
                    let Some((text, mut data)) = self.partial.take().map(|b| *b) else {
                        return Err(FrameError::Protocol("continuation without a message"));
                    };
                    data.extend_from_slice(&payload);
                    if h.fin {
                        return finish(text, data).map(Some);
                    }
                    self.partial = Some(Box::new((text, data)));
                }
            }
        }
    }

    /// The largest message this decoder accepts.
    pub fn max_message(&self) -> usize {
        self.max_message
    }

    /// True when no fragmented message is in progress.
    pub fn is_idle(&self) -> bool {
        self.partial.is_none()
    }
}

fn finish(text: bool, data: Vec<u8>) -> Result<Incoming, FrameError> {
    if text {
        String::from_utf8(data)
            .map(Incoming::Text)
            .map_err(|_| FrameError::InvalidUtf8)
    } else {
        Ok(Incoming::Binary(data))
    }
}

fn close_frame(payload: &[u8]) -> Result<Incoming, FrameError> {
    match payload.len() {
        0 => Ok(Incoming::Close(1005, String::new())),
        1 => Err(FrameError::Protocol("one-byte close frame")),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            let valid = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
            if !valid {
                return Err(FrameError::Protocol("invalid close code"));
            }
            let reason = std::str::from_utf8(&payload[2..]).map_err(|_| FrameError::InvalidUtf8)?;
            Ok(Incoming::Close(code, reason.to_string()))
        }
    }
}

struct Header {
    fin: bool,
    opcode: OpCode,
    mask: [u8; 4],
    header_len: usize,
    payload_len: usize,
}

fn header(buf: &[u8]) -> Result<Option<Header>, FrameError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    if b0 & 0x70 != 0 {
        return Err(FrameError::Protocol("reserved bits set"));
    }
    let opcode = match b0 & 0x0F {
        0 => OpCode::Continuation,
        1 => OpCode::Text,
        2 => OpCode::Binary,
        8 => OpCode::Close,
        9 => OpCode::Ping,
        10 => OpCode::Pong,
        _ => return Err(FrameError::Protocol("unknown opcode")),
    };
    let fin = b0 & 0x80 != 0;
    if b1 & 0x80 == 0 {
        return Err(FrameError::Protocol("client frames must be masked"));
    }
    let (len, ext) = match b1 & 0x7F {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            (u16::from_be_bytes([buf[2], buf[3]]) as u64, 2)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(b), 8)
        }
        n => (n as u64, 0),
    };
    let is_control = matches!(opcode, OpCode::Close | OpCode::Ping | OpCode::Pong);
    if is_control && (!fin || len > 125) {
        return Err(FrameError::Protocol(
            "control frames must be whole and short",
        ));
    }
    let header_len = 2 + ext + 4;
    if buf.len() < header_len {
        return Ok(None);
    }
    let mut mask = [0u8; 4];
    mask.copy_from_slice(&buf[2 + ext..header_len]);
    Ok(Some(Header {
        fin,
        opcode,
        mask,
        header_len,
        payload_len: usize::try_from(len).map_err(|_| FrameError::TooBig)?,
    }))
}

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

#[doc(hidden)]
/// A client's frame as RFC 6455 encodes it: `first` is the whole first byte
/// (FIN, RSV, opcode), then the length in its shortest form, a mask and the
/// masked payload. For tests that write frames by hand.
pub fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xFA, 0x21, 0x3D];
    let mut f = vec![first];
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n if n <= 0xFFFF => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
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

    fn client_frame(fin: bool, op: u8, payload: &[u8]) -> Vec<u8> {
        super::client_frame((if fin { 0x80 } else { 0 }) | op, payload)
    }

    #[test]
    fn a_header_declaring_2_to_the_64_bytes_is_refused_without_overflow() {
        // Found by the frame_decoder fuzz target (fuzz/corpus/frame_decoder/
        // regression-wanted-overflow): `wanted` added the declared length
        // to the header's.
        let mut head = vec![0x82, 0x80 | 127];
        head.extend_from_slice(&u64::MAX.to_be_bytes());
        head.extend_from_slice(&[1, 2, 3, 4]);
        let mut d = Decoder::new(1 << 20);
        assert_eq!(d.wanted(&head), usize::MAX - head.len());
        let mut buf = BytesMut::from(&head[..]);
        assert_eq!(d.decode(&mut buf), Err(FrameError::TooBig));
    }

    #[test]
    fn decodes_frames_split_anywhere() {
        let mut stream = client_frame(true, 1, b"hello");
        stream.extend(client_frame(false, 2, &[1, 2]));
        stream.extend(client_frame(true, 9, b"p"));
        stream.extend(client_frame(true, 0, &vec![3u8; 300]));
        stream.extend(client_frame(true, 8, &[0x03, 0xE8, b'o', b'k']));
        for split in 0..stream.len() {
            let mut d = Decoder::new(1 << 20);
            let mut buf = BytesMut::from(&stream[..split]);
            let mut got = Vec::new();
            while let Some(m) = d.decode(&mut buf).expect("valid") {
                got.push(m);
            }
            buf.extend_from_slice(&stream[split..]);
            while let Some(m) = d.decode(&mut buf).expect("valid") {
                got.push(m);
            }
            let mut binary = vec![1u8, 2];
            binary.extend(vec![3u8; 300]);
            assert_eq!(
                got,
                vec![
                    Incoming::Text("hello".into()),
                    Incoming::Ping(b"p".to_vec()),
                    Incoming::Binary(binary),
                    Incoming::Close(1000, "ok".into()),
                ],
                "split at {split}"
            );
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn refuses_what_the_rfc_forbids() {
        let decode =
            |bytes: Vec<u8>, max: usize| Decoder::new(max).decode(&mut BytesMut::from(&bytes[..]));
        assert_eq!(
            decode(client_frame(true, 1, &[0xFF]), 100),
            Err(FrameError::InvalidUtf8)
        );
        assert_eq!(
            decode(client_frame(true, 2, &[0; 101]), 100),
            Err(FrameError::TooBig)
        );
        let mut unmasked = client_frame(true, 1, b"x");
        unmasked[1] &= 0x7F;
        assert!(matches!(
            decode(unmasked, 100),
            Err(FrameError::Protocol(_))
        ));
        assert!(matches!(
            decode(client_frame(false, 9, b""), 100),
            Err(FrameError::Protocol(_))
        ));
        assert!(matches!(
            decode(client_frame(true, 0, b"x"), 100),
            Err(FrameError::Protocol(_))
        ));
        assert!(matches!(
            decode(client_frame(true, 8, &[0x03, 0xEC]), 100),
            Err(FrameError::Protocol(_))
        ));
        // A huge declared length is refused before its bytes arrive.
        let mut huge = vec![0x82, 0x80 | 127];
        huge.extend_from_slice(&(1u64 << 40).to_be_bytes());
        huge.extend_from_slice(&[0, 0, 0, 0]);
        assert_eq!(decode(huge, 1 << 20), Err(FrameError::TooBig));
        // Fragments add up against the limit too.
        let mut frags = client_frame(false, 2, &[0; 60]);
        frags.extend(client_frame(true, 0, &[0; 60]));
        assert_eq!(decode(frags, 100), Err(FrameError::TooBig));
    }
}
