//! A seeded storm of bad input against the real binary: malformed HTTP,
//! broken WebSocket handshakes, broken and oversized frames on real upgraded
//! sockets, invalid UTF-8, JSON of the wrong shapes, random bytes. Every
//! input gets a sane answer (a 4xx/5xx, a close frame with the right code, or
//! the connection closed) within a deadline; afterwards the host is alive,
//! logged no panic, serves the chat with its history intact, and /metrics.
//!
//! The seed is printed; `ROOMHOST_BAD_INPUT_SEED=<n>` replays a run.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// How many inputs (the 10,000).
const INPUTS: usize = 10_000;
/// Inputs in flight at once.
const CONCURRENCY: usize = 48;
/// The host's message limit in this test (smaller than the default, so that
/// oversized messages are cheap to send).
const MAX_FRAME: usize = 16 * 1024;
/// How long any one read may wait: past it, the host hangs on that input.
const READ_WAIT: Duration = Duration::from_secs(10);
/// The seed when `ROOMHOST_BAD_INPUT_SEED` is not set.
const DEFAULT_SEED: u64 = 0x5EED_BAD1_4907;
/// A handshake key and the accept value RFC 6455 §1.3 derives from it.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// xorshift64*: small, seeded, reproducible.
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
    /// `at_least` + up to `spread` - 1 random bytes.
    fn bytes(&mut self, spread: usize, at_least: usize) -> Vec<u8> {
        let n = at_least + self.below(spread);
        (0..n).map(|_| self.next() as u8).collect()
    }
    fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Category {
    BadRequestLine,
    BadHeaders,
    BadContentLength,
    BadChunked,
    TruncatedRequest,
    RandomHttpBytes,
    BadHandshake,
    BadOpcode,
    ReservedBits,
    UnmaskedFrame,
    BadControlFrame,
    BadFragments,
    BadLength,
    OversizedFrame,
    InvalidUtf8,
    BadCloseFrame,
    WrongJson,
    RandomFrameBytes,
}

const CATEGORIES: &[Category] = &[
    Category::BadRequestLine,
    Category::BadHeaders,
    Category::BadContentLength,
    Category::BadChunked,
    Category::TruncatedRequest,
    Category::RandomHttpBytes,
    Category::BadHandshake,
    Category::BadOpcode,
    Category::ReservedBits,
    Category::UnmaskedFrame,
    Category::BadControlFrame,
    Category::BadFragments,
    Category::BadLength,
    Category::OversizedFrame,
    Category::InvalidUtf8,
    Category::BadCloseFrame,
    Category::WrongJson,
    Category::RandomFrameBytes,
];

/// What is sent, and what counts as a sane answer.
enum Plan {
    /// Raw bytes on a fresh connection. `eof`: the write side is shut after
    /// them (the request may be incomplete). The answer must be a status in
    /// `statuses`, or (when `may_close`) the connection closed without one.
    Http {
        bytes: Vec<u8>,
        eof: bool,
        statuses: std::ops::RangeInclusive<u16>,
        may_close: bool,
    },
    /// A real upgrade to chat room `room`, then `bytes`. The answer: valid
    /// server frames, then a close frame with one of `codes`, or (when
    /// `eof`: the write side is shut after the bytes) the connection closed.
    Frames {
        room: String,
        bytes: Vec<u8>,
        eof: bool,
        codes: &'static [u16],
    },
    /// A real upgrade, then JSON messages one at a time: each must be
    /// answered (an error, a join, a broadcast) or the socket closed with
    /// one of the chat's codes; then a clean close.
    Json { room: String, messages: Vec<String> },
}

/// A masked client frame; `first` is the whole first byte (FIN, RSV, opcode).
fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
    roomhost::fuzzing::client_frame(first, payload)
}

/// A frame header only: a masked frame declaring `len` bytes (in the
/// 64-bit form), none of which follow.
fn header_declaring(first: u8, len: u64) -> Vec<u8> {
    let mut f = vec![first, 0x80 | 127];
    f.extend_from_slice(&len.to_be_bytes());
    f.extend_from_slice(&[1, 2, 3, 4]);
    f
}

fn random_room(rng: &mut Rng) -> String {
    // Mostly rooms of their own; one input in four on the room whose
    // history is checked (frames that break the protocol never reach it).
    if rng.chance(4) {
        "calm".into()
    } else {
        format!("bad-{}", rng.below(40))
    }
}

fn http_plan(bytes: Vec<u8>, eof: bool) -> Plan {
    Plan::Http {
        bytes,
        eof,
        statuses: 400..=599,
        may_close: true,
    }
}

const INVALID_UTF8: &[&[u8]] = &[
    b"\xC3\x28",
    b"\xA0\xA1",
    b"\xE2\x28\xA1",
    b"\xF0\x28\x8C\xBC",
    b"\xC0\xAF",
    b"\xED\xA0\x80",
    b"\xF8\xA1\xA1\xA1\xA1",
    b"\xFF",
    b"{\"name\":\"\xE9\"}",
    b"caf\xC3",
];

/// One input of `cat`.
fn generate(cat: Category, rng: &mut Rng) -> Plan {
    let path = |rng: &mut Rng| -> String {
        rng.pick(&[
            "/nope",
            "/api/room/bad-1/websocket",
            "/api/room/bad-2/history",
            "/api/room",
            "/metrics",
            "/admin/objects",
            "/api/room/x/../../etc",
        ])
        .to_string()
    };
    match cat {
        Category::BadRequestLine => {
            let p = path(rng);
            let line = match rng.below(10) {
                0 => format!("G(T {p} HTTP/1.1"),
                1 => format!("GET {p}"),
                2 => format!("GET {p} HTTP/9.9"),
                3 => format!("GET  {p}  HTTP/1.1 extra"),
                4 => format!("GET {p}\x01\x7f HTTP/1.1"),
                5 => format!("GET /{} HTTP/1.1", "a".repeat(rng.below(100_000) + 70_000)),
                6 => format!("{} {p} HTTP/1.1", "X".repeat(rng.below(5000) + 1)),
                7 => format!("\u{0} {p} HTTP/1.1"),
                8 => format!("GET {p} FTP/1.1"),
                _ => "HTTP/1.1 200 OK".to_string(),
            };
            http_plan(
                format!("{line}\r\nhost: x\r\n\r\n").into_bytes(),
                rng.chance(2),
            )
        }
        Category::BadHeaders => {
            let mut head = b"GET /nope HTTP/1.1\r\nhost: x\r\n".to_vec();
            match rng.below(7) {
                0 => {
                    // Huge.
                    let n = rng.below(200_000) + 1;
                    head.extend(format!("x-huge: {}\r\n", "v".repeat(n)).bytes());
                }
                1 => {
                    // Many.
                    for i in 0..rng.below(400) + 90 {
                        head.extend(format!("x-h{i}: {i}\r\n").bytes());
                    }
                }
                2 => head.extend(b"host: y\r\nhost: z\r\n"),
                3 => head.extend(b"no colon here\r\n"),
                4 => head.extend(b"bad name\x01: v\r\n"),
                5 => head.extend(b"x-v: a\x00b\r\n"),
                _ => {
                    let junk = rng.bytes(64, 1);
                    head.extend(junk);
                    head.extend(b"\r\n");
                }
            }
            head.extend(b"\r\n");
            http_plan(head, rng.chance(2))
        }
        Category::BadContentLength => {
            let target = if rng.chance(2) {
                "/api/room/bad-3/x"
            } else {
                "/nope"
            };
            let cl = rng
                .pick(&[
                    "-1",
                    "abc",
                    "1, 2",
                    "99999999999999999999999",
                    "0x10",
                    "",
                    "5000000",
                    "+5",
                ])
                .to_string();
            let mut req = format!("POST {target} HTTP/1.1\r\nhost: x\r\ncontent-length: {cl}\r\n");
            if rng.chance(3) {
                req.push_str("content-length: 3\r\n");
            }
            req.push_str("\r\n");
            let mut bytes = req.into_bytes();
            bytes.extend(rng.bytes(100, 0));
            // A body that may never be complete: the write side is shut.
            http_plan(bytes, true)
        }
        Category::BadChunked => {
            let target = if rng.chance(2) {
                "/api/room/bad-4/x"
            } else {
                "/nope"
            };
            let mut req =
                format!("POST {target} HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n");
            if rng.chance(3) {
                req.push_str("content-length: 10\r\n");
            }
            if rng.chance(4) {
                req.push_str("transfer-encoding: gzip\r\n");
            }
            req.push_str("\r\n");
            let body: &&str = rng.pick(&[
                "zz\r\nhello\r\n0\r\n\r\n",
                "5\r\nhelloXX0\r\n\r\n",
                "ffffffffffffffffffff\r\n",
                "-5\r\nhello\r\n",
                "5;\x01ext\r\nhello\r\n0\r\n\r\n",
                "3\r\nhello\r\n0\r\n\r\n",
                "2000000\r\nabc",
                "0\r\nbad trailer\r\n\r\n",
                "5\nhello\n0\n\n",
            ]);
            req.push_str(body);
            http_plan(req.into_bytes(), true)
        }
        Category::TruncatedRequest => {
            let full = format!(
                "GET /api/room/bad-5/websocket HTTP/1.1\r\nhost: x\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-key: {KEY}\r\nsec-websocket-version: 13\r\n\r\n"
            );
            let cut = rng.below(full.len() - 4) + 1;
            http_plan(full.as_bytes()[..cut].to_vec(), true)
        }
        Category::RandomHttpBytes => {
            let mut bytes = rng.bytes(4096, 1);
            if rng.chance(2) {
                // Random bytes after a plausible start.
                let mut start = b"GET /nope HTTP/1.1\r\n".to_vec();
                start.append(&mut bytes);
                bytes = start;
            }
            http_plan(bytes, true)
        }
        Category::BadHandshake => {
            let key = match rng.below(6) {
                0 => None,
                1 => Some("".to_string()),
                2 => Some("not base64 at all!".to_string()),
                3 => Some("c2hvcnQ=".to_string()), // 5 bytes, not 16
                4 => Some("A".repeat(rng.below(6000) + 30)),
                _ => Some(KEY.to_string()),
            };
            // A good key goes with a bad version; a bad key with any.
            let version = match (key.as_deref() == Some(KEY), rng.below(5)) {
                (true, 0) | (_, 1) => None,
                (true, 2) | (_, 3) => Some("12"),
                (true, _) => Some("13, 8"),
                (false, _) => Some("13"),
            };
            let mut req = format!(
                "GET /api/room/{}/websocket HTTP/1.1\r\nhost: x\r\nupgrade: websocket\r\nconnection: Upgrade\r\n",
                random_room(rng)
            );
            if let Some(k) = key {
                req.push_str(&format!("sec-websocket-key: {k}\r\n"));
            }
            if let Some(v) = version {
                req.push_str(&format!("sec-websocket-version: {v}\r\n"));
            }
            req.push_str("\r\n");
            Plan::Http {
                bytes: req.into_bytes(),
                eof: false,
                statuses: 400..=400,
                may_close: false,
            }
        }
        _ => frames(cat, rng),
    }
}

/// An input for a real upgraded socket.
fn frames(cat: Category, rng: &mut Rng) -> Plan {
    let room = random_room(rng);
    // Sometimes a valid ping first: the socket was working before.
    let mut bytes = if rng.chance(3) {
        frame(0x89, b"still there?")
    } else {
        Vec::new()
    };
    let mut eof = false;
    let codes: &'static [u16] = match cat {
        Category::BadOpcode => {
            let op = *rng.pick(&[3u8, 4, 5, 6, 7, 11, 12, 13, 14, 15]);
            let payload = rng.bytes(20, 0);
            bytes.extend(frame(0x80 | op, &payload));
            &[1002]
        }
        Category::ReservedBits => {
            let rsv = *rng.pick(&[0x10u8, 0x20, 0x40, 0x70]);
            let op = *rng.pick(&[0u8, 1, 2, 8, 9, 10]);
            bytes.extend(frame(0x80 | rsv | op, b"{\"name\":\"r\"}"));
            &[1002]
        }
        Category::UnmaskedFrame => {
            let payload = b"{\"name\":\"unmasked\"}";
            bytes.extend([0x81, payload.len() as u8]);
            bytes.extend_from_slice(payload);
            &[1002]
        }
        Category::BadControlFrame => {
            match rng.below(3) {
                // A fragmented ping or pong.
                0 => bytes.extend(frame(*rng.pick(&[0x09u8, 0x0A]), b"frag")),
                // A control frame over 125 bytes.
                1 => {
                    let n = rng.below(2000) + 126;
                    bytes.extend(frame(*rng.pick(&[0x89u8, 0x8A, 0x88]), &vec![b'p'; n]));
                }
                // A fragmented close.
                _ => bytes.extend(frame(0x08, &1000u16.to_be_bytes())),
            }
            &[1002]
        }
        Category::BadFragments => {
            match rng.below(3) {
                0 => bytes.extend(frame(0x80, b"continuation of nothing")),
                1 => {
                    bytes.extend(frame(0x01, b"{\"na"));
                    bytes.extend(frame(0x81, b"a new message inside"));
                }
                _ => {
                    bytes.extend(frame(0x02, b"\x01\x02"));
                    bytes.extend(frame(0x89, b"a ping between is fine"));
                    bytes.extend(frame(0x01, b"but not a text frame"));
                }
            }
            &[1002]
        }
        Category::BadLength => {
            match rng.below(3) {
                // More declared than ever comes.
                0 => {
                    let declared = rng.below(MAX_FRAME - 200) + 100;
                    let mut f = frame(0x81, &vec![b'x'; declared]);
                    f.truncate(rng.below(declared) + 4);
                    bytes.extend(f);
                    eof = true;
                }
                // A 64-bit length with its top bit set, or just vast.
                1 => bytes.extend(header_declaring(
                    0x82,
                    *rng.pick(&[u64::MAX, 1 << 63, 1 << 40, u32::MAX as u64]),
                )),
                // A header cut short.
                _ => {
                    let f = header_declaring(0x81, 10);
                    bytes.extend(&f[..rng.below(f.len() - 1) + 1]);
                    eof = true;
                }
            }
            &[1009]
        }
        Category::OversizedFrame => {
            if rng.chance(2) {
                // One frame over the limit, declared (nothing follows).
                let over = (MAX_FRAME + 1 + rng.below(1 << 20)) as u64;
                bytes.extend(header_declaring(*rng.pick(&[0x81u8, 0x82]), over));
            } else {
                // Fragments that add up to more than the limit.
                let half = MAX_FRAME / 2 + 1;
                bytes.extend(frame(0x02, &vec![7; half]));
                bytes.extend(frame(0x00, &vec![7; half]));
                bytes.extend(frame(0x80, b"never reached"));
            }
            &[1009]
        }
        Category::InvalidUtf8 => {
            let bad = *rng.pick(INVALID_UTF8);
            if rng.chance(2) {
                bytes.extend(frame(0x81, bad));
            } else {
                // Fragments: valid so far, invalid once whole.
                let (a, b) = bad.split_at(bad.len() / 2);
                bytes.extend(frame(0x01, a));
                bytes.extend(frame(0x80, b));
            }
            &[1007]
        }
        Category::BadCloseFrame => {
            match rng.below(3) {
                0 => bytes.extend(frame(0x88, b"\x03")),
                1 => {
                    let code =
                        *rng.pick(&[0u16, 999, 1004, 1005, 1006, 1015, 1100, 2999, 5000, 65535]);
                    bytes.extend(frame(0x88, &code.to_be_bytes()));
                    return Plan::Frames {
                        room,
                        bytes,
                        eof,
                        codes: &[1002],
                    };
                }
                _ => {
                    let mut p = 1000u16.to_be_bytes().to_vec();
                    let bad: &&[u8] = rng.pick(INVALID_UTF8);
                    p.extend_from_slice(bad);
                    bytes.extend(frame(0x88, &p));
                    return Plan::Frames {
                        room,
                        bytes,
                        eof,
                        codes: &[1007],
                    };
                }
            }
            &[1002]
        }
        Category::RandomFrameBytes => {
            bytes.extend(rng.bytes(3000, 1));
            eof = true;
            // A random close frame is echoed with its own code.
            &[]
        }
        Category::WrongJson => return wrong_json(room, rng),
        _ => unreachable!("{cat:?} is not a frame category"),
    };
    Plan::Frames {
        room,
        bytes,
        eof,
        codes,
    }
}

fn wrong_json(room: String, rng: &mut Rng) -> Plan {
    let room = if room == "calm" {
        // Valid chat messages would join the checked history.
        "bad-json".to_string()
    } else {
        room
    };
    let huge = "x".repeat(rng.below(MAX_FRAME - 100) + 1);
    let bad: Vec<String> = vec![
        json!({ "name": 5 }).to_string(),
        json!({ "name": [1, 2] }).to_string(),
        json!({ "name": { "first": "a" } }).to_string(),
        json!({ "name": null }).to_string(),
        json!({ "name": huge }).to_string(),
        json!({ "name": "ok", "message": [ { "deep": [[[[]]]] } ] }).to_string(),
        json!([1, 2, 3]).to_string(),
        json!("just a string").to_string(),
        json!(12.5e300).to_string(),
        "{\"name\":".to_string(),
        "{".repeat(rng.below(2000) + 1),
        format!("[{}]", "[".repeat(200)),
        "{\"name\":\"\\ud800\"}".to_string(),
        "".to_string(),
        "null".to_string(),
        json!({}).to_string(),
    ];
    let after_join: Vec<String> = vec![
        json!({ "message": 5 }).to_string(),
        json!({ "message": null }).to_string(),
        json!({ "message": [ "a" ] }).to_string(),
        json!({ "message": { "nested": { "more": [1] } } }).to_string(),
        json!({ "message": huge }).to_string(),
        json!({ "msg": "missing field" }).to_string(),
        json!({ "name": "again" }).to_string(),
        "[]".to_string(),
        "{\"message\": tru".to_string(),
    ];
    let messages = if rng.chance(2) {
        vec![rng.pick(&bad).clone()]
    } else {
        vec![
            json!({ "name": format!("j{}", rng.below(1000)) }).to_string(),
            rng.pick(&after_join).clone(),
        ]
    };
    Plan::Json { room, messages }
}

// ---------------------------------------------------------------------------
// Running one input

async fn connect_from(addr: SocketAddr, source: Ipv4Addr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(IpAddr::V4(source), 0)).unwrap();
    socket.connect(addr).await.expect("connect")
}

/// How an input was answered (tallied).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Answer {
    Status(u16),
    Closed,
    CloseFrame(u16),
    Replied,
}

/// Reads until the connection ends; `Err` if it is still open after the wait.
async fn read_to_end(s: &mut TcpStream, got: &mut Vec<u8>) -> Result<(), String> {
    let mut buf = [0u8; 8192];
    loop {
        match tokio::time::timeout(READ_WAIT, s.read(&mut buf)).await {
            Err(_) => return Err(format!("no end within {READ_WAIT:?}")),
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(()),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Reads a response head (up to the blank line); `Ok(None)` if the
/// connection ended first.
async fn read_head(s: &mut TcpStream, got: &mut Vec<u8>) -> Result<Option<String>, String> {
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).into_owned();
            got.drain(..end + 4);
            return Ok(Some(head));
        }
        match tokio::time::timeout(READ_WAIT, s.read(&mut buf)).await {
            Err(_) => return Err(format!("no response within {READ_WAIT:?}")),
            Ok(Ok(0)) | Ok(Err(_)) => {
                return if got.is_empty() {
                    Ok(None)
                } else {
                    Err(format!(
                        "a partial response: {:?}",
                        String::from_utf8_lossy(got)
                    ))
                };
            }
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

fn status_of(head: &str) -> Result<u16, String> {
    let mut parts = head.split(' ');
    match (parts.next(), parts.next().and_then(|s| s.parse().ok())) {
        (Some("HTTP/1.1"), Some(code)) => Ok(code),
        _ => Err(format!("not a status line: {head:?}")),
    }
}

async fn run_http(
    addr: SocketAddr,
    source: Ipv4Addr,
    bytes: &[u8],
    eof: bool,
    statuses: &std::ops::RangeInclusive<u16>,
    may_close: bool,
) -> Result<Answer, String> {
    let mut s = connect_from(addr, source).await;
    // The host may answer and close before it has read everything.
    let _ = s.write_all(bytes).await;
    if eof {
        let _ = s.shutdown().await;
    }
    let mut got = Vec::new();
    match read_head(&mut s, &mut got).await? {
        None if may_close => Ok(Answer::Closed),
        None => Err("closed without an answer".into()),
        Some(head) => {
            let status = status_of(&head)?;
            if !statuses.contains(&status) {
                return Err(format!("status {status}, not in {statuses:?}: {head}"));
            }
            Ok(Answer::Status(status))
        }
    }
}

/// A server frame: (FIN, opcode, payload).
type ServerFrame = (bool, u8, Vec<u8>);

/// Parses a server frame at the head of `buf`, checking it is one a server
/// may send; `Ok(None)`: more bytes needed.
fn server_frame(buf: &mut Vec<u8>) -> Result<Option<ServerFrame>, String> {
    let [b0, b1, ..] = buf[..] else {
        return Ok(None);
    };
    if b0 & 0x70 != 0 || b1 & 0x80 != 0 {
        return Err(format!(
            "a server frame with RSV or MASK set: {b0:#x} {b1:#x}"
        ));
    }
    let op = b0 & 0x0F;
    if ![0, 1, 2, 8, 9, 10].contains(&op) {
        return Err(format!("a server frame with opcode {op}"));
    }
    let (len, at) = match b1 & 0x7F {
        126 if buf.len() < 4 => return Ok(None),
        126 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
        127 if buf.len() < 10 => return Ok(None),
        127 => (
            u64::from_be_bytes(buf[2..10].try_into().unwrap()) as usize,
            10,
        ),
        n => (n as usize, 2),
    };
    if buf.len() < at + len {
        return Ok(None);
    }
    let payload = buf[at..at + len].to_vec();
    buf.drain(..at + len);
    Ok(Some((b0 & 0x80 != 0, op, payload)))
}

/// Reads server frames until a close frame (its code) or the end of the
/// connection (`None`); every text frame must be a JSON object. `until`
/// stops early at a text frame it accepts (`Some(0)`).
async fn read_frames(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
    mut until: impl FnMut(&Value) -> bool,
) -> Result<Option<u16>, String> {
    let mut chunk = [0u8; 8192];
    loop {
        while let Some((fin, op, payload)) = server_frame(buf)? {
            if !fin {
                return Err("the chat sent a fragmented frame".into());
            }
            match op {
                1 => {
                    let text = std::str::from_utf8(&payload)
                        .map_err(|_| "a text frame that is not UTF-8".to_string())?;
                    let v: Value = serde_json::from_str(text)
                        .map_err(|e| format!("a text frame that is not JSON ({e}): {text}"))?;
                    if !v.is_object() {
                        return Err(format!("a text frame that is not an object: {text}"));
                    }
                    if until(&v) {
                        return Ok(Some(0));
                    }
                }
                8 => {
                    let code = match payload.len() {
                        0 => 1005,
                        1 => return Err("a one-byte close frame".into()),
                        _ => u16::from_be_bytes([payload[0], payload[1]]),
                    };
                    if std::str::from_utf8(payload.get(2..).unwrap_or_default()).is_err() {
                        return Err("a close reason that is not UTF-8".into());
                    }
                    return Ok(Some(code));
                }
                10 => {} // the pong to our ping
                other => return Err(format!("an unexpected opcode {other}")),
            }
        }
        match tokio::time::timeout(READ_WAIT, s.read(&mut chunk)).await {
            Err(_) => return Err(format!("no frame or close within {READ_WAIT:?}")),
            Ok(Ok(0)) | Ok(Err(_)) => {
                return if buf.is_empty() {
                    Ok(None)
                } else {
                    Err("the connection ended inside a frame".into())
                };
            }
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Upgrades a fresh connection to a socket on chat room `room`.
async fn upgrade(
    addr: SocketAddr,
    source: Ipv4Addr,
    room: &str,
) -> Result<(TcpStream, Vec<u8>), String> {
    let mut s = connect_from(addr, source).await;
    let req = format!(
        "GET /api/room/{room}/websocket HTTP/1.1\r\nhost: x\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-key: {KEY}\r\nsec-websocket-version: 13\r\n\r\n"
    );
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut got = Vec::new();
    let head = read_head(&mut s, &mut got)
        .await?
        .ok_or("the upgrade got no answer")?;
    if status_of(&head)? != 101
        || !head
            .to_ascii_lowercase()
            .contains(&ACCEPT.to_ascii_lowercase())
    {
        return Err(format!("the upgrade was not accepted: {head}"));
    }
    Ok((s, got))
}

async fn run_frames(
    addr: SocketAddr,
    source: Ipv4Addr,
    room: &str,
    bytes: &[u8],
    eof: bool,
    codes: &[u16],
) -> Result<Answer, String> {
    let (mut s, mut buf) = upgrade(addr, source, room).await?;
    // The host may close before it has read everything.
    let _ = s.write_all(bytes).await;
    if eof {
        let _ = s.shutdown().await;
    }
    match read_frames(&mut s, &mut buf, |_| false).await? {
        Some(code) if codes.contains(&code) || (codes.is_empty() && valid_close_code(code)) => {
            // After its close frame the host hangs up.
            read_to_end(&mut s, &mut Vec::new()).await?;
            Ok(Answer::CloseFrame(code))
        }
        Some(code) => Err(format!("close code {code}, expected one of {codes:?}")),
        None if eof => Ok(Answer::Closed),
        None => Err(format!("closed without a close frame (expected {codes:?})")),
    }
}

async fn run_json(
    addr: SocketAddr,
    source: Ipv4Addr,
    room: &str,
    messages: &[String],
) -> Result<Answer, String> {
    let (mut s, mut buf) = upgrade(addr, source, room).await?;
    for m in messages {
        s.write_all(&frame(0x81, m.as_bytes()))
            .await
            .map_err(|e| e.to_string())?;
        // Answered: an error, our join's ready, or a broadcast of ours.
        let answered = |v: &Value| {
            v.get("error").is_some()
                || v.get("ready").is_some()
                || v.get("message")
                    .is_some_and(|_| v.get("timestamp").is_some())
        };
        match read_frames(&mut s, &mut buf, answered).await? {
            Some(0) => {}
            // "Name too long." closes with 1009.
            Some(1009) => return Ok(Answer::CloseFrame(1009)),
            Some(code) => return Err(format!("the chat closed with {code} on {m:.80}")),
            None => return Err(format!("the chat hung up on {m:.80}")),
        }
    }
    // (The chat may have closed already: "Name too long." closes with 1009.)
    let _ = s.write_all(&frame(0x88, &1000u16.to_be_bytes())).await;
    match read_frames(&mut s, &mut buf, |_| false).await? {
        Some(1000) => Ok(Answer::Replied),
        Some(1009) => Ok(Answer::CloseFrame(1009)),
        other => Err(format!("the close was answered with {other:?}")),
    }
}

async fn run(addr: SocketAddr, source: Ipv4Addr, plan: &Plan) -> Result<Answer, String> {
    match plan {
        Plan::Http {
            bytes,
            eof,
            statuses,
            may_close,
        } => run_http(addr, source, bytes, *eof, statuses, *may_close).await,
        Plan::Frames {
            room,
            bytes,
            eof,
            codes,
        } => run_frames(addr, source, room, bytes, *eof, codes).await,
        Plan::Json { room, messages } => run_json(addr, source, room, messages).await,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_bad_inputs_leave_the_chat_serving_with_its_history() {
    let seed = match std::env::var("ROOMHOST_BAD_INPUT_SEED") {
        Ok(s) => s.parse().expect("ROOMHOST_BAD_INPUT_SEED is a u64"),
        Err(_) => DEFAULT_SEED,
    };
    println!("bad-input seed {seed} (replay: ROOMHOST_BAD_INPUT_SEED={seed})");

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("roomhost.toml");
    std::fs::write(
        &config,
        format!(
            "[classes.chat-room]\ncomponent = \"builtin:chat-room\"\nvars = {{ RATE_LIMIT = \"off\" }}\n\
             [limits]\nmax_frame_bytes = {MAX_FRAME}\nrequest_head_timeout_ms = 5000\n"
        ),
    )
    .unwrap();
    let mut host = HostProcess::serve(&dir.path().join("bad-input.redb"), &config);
    let addr = host.addr;

    // The history that must survive.
    let (mut writer, _) = join_chat_at(addr, ip(1), "calm", "writer").await;
    let mut written = Vec::new();
    for i in 0..25 {
        let text = format!("before the storm {i} ✓");
        writer.send_json(json!({ "message": text })).await;
        let v = writer.recv_json().await;
        assert_eq!(v["message"], text.as_str(), "{v}");
        written.push(text);
    }
    writer.close().await;

    let mut rng = Rng(seed | 1);
    let plans: Vec<(Category, Plan)> = (0..INPUTS)
        .map(|_| {
            let cat = *rng.pick(CATEGORIES);
            (cat, generate(cat, &mut rng))
        })
        .collect();

    let started = Instant::now();
    let slots = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
    let mut tasks = Vec::with_capacity(INPUTS);
    for (i, (cat, plan)) in plans.into_iter().enumerate() {
        let permit = slots.clone().acquire_owned().await.unwrap();
        // Spread over loopback addresses, under the per-IP cap.
        let source = Ipv4Addr::new(127, 0, 7, (i % 200 + 1) as u8);
        tasks.push(tokio::spawn(async move {
            let answer = run(addr, source, &plan).await;
            drop(permit);
            (i, cat, answer)
        }));
    }
    let mut tally: BTreeMap<Category, (usize, BTreeMap<Answer, usize>)> = BTreeMap::new();
    let mut failures = Vec::new();
    for t in tasks {
        let (i, cat, answer) = t.await.unwrap();
        match answer {
            Ok(a) => {
                let entry = tally.entry(cat).or_default();
                entry.0 += 1;
                *entry.1.entry(a).or_default() += 1;
            }
            Err(why) => failures.push(format!("input {i} ({cat:?}): {why}")),
        }
    }
    let storm = started.elapsed();
    println!("{INPUTS} inputs in {storm:?}, {CONCURRENCY} at a time:");
    for (cat, (n, answers)) in &tally {
        println!("  {cat:?}: {n} — {answers:?}");
    }
    assert!(
        failures.is_empty(),
        "{} inputs got no sane answer (seed {seed}):\n{}",
        failures.len(),
        failures[..failures.len().min(20)].join("\n")
    );
    assert_eq!(tally.len(), CATEGORIES.len(), "every category ran");

    // Alive, no panic.
    assert!(
        host.child.try_wait().unwrap().is_none(),
        "the host exited: {}",
        host.output()
    );
    let log = host.output();
    assert!(
        !log.lines().any(|l| l.contains("panicked")),
        "the host panicked:\n{log}"
    );

    // The chat serves, with its history intact and in order.
    let (mut reader, got) = join_chat_at(addr, ip(2), "calm", "after").await;
    let seen: Vec<&str> = got
        .iter()
        .filter_map(|v| v.get("message").and_then(Value::as_str))
        .collect();
    assert_eq!(seen, written, "the history a newcomer sees");
    let stored = room_history(addr, "calm").await;
    let texts: Vec<&str> = stored
        .iter()
        .map(|v| v["message"].as_str().unwrap())
        .collect();
    assert_eq!(texts, written, "the stored history");
    let stamps: Vec<u64> = stored
        .iter()
        .map(|v| v["timestamp"].as_u64().unwrap())
        .collect();
    assert!(stamps.windows(2).all(|w| w[0] < w[1]), "{stamps:?}");
    reader
        .send_json(json!({ "message": "after the storm" }))
        .await;
    let v = reader.recv_json().await;
    assert_eq!(
        (v["name"].as_str(), v["message"].as_str()),
        (Some("after"), Some("after the storm"))
    );
    reader.close().await;

    let (status, metrics) = http_request(addr, "GET", "/metrics", b"").await;
    assert_eq!(status, 200);
    assert!(metrics.contains("roomhost_connections_open"), "{metrics}");
    assert!(
        host.child.try_wait().unwrap().is_none(),
        "the host exited: {}",
        host.output()
    );
    assert!(!host.output().contains("panicked"));
    println!(
        "bad-input storm: {storm:?}; the chat kept {} messages",
        written.len()
    );
}
