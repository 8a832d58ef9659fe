//! Entry points for the fuzz targets in `fuzz/` (cargo-fuzz) and for the
//! replay of their corpora by `cargo test` (`host/tests/fuzz_corpora.rs`).
//!
//! Each takes arbitrary bytes, drives one piece of the host that untrusted
//! input reaches, and checks what must hold whatever the bytes: it panics
//! when an invariant is broken (that is the finding), and only then — bad
//! input itself must be refused, not crash.
//!
//! - [`frame_decoder`]: client WebSocket bytes through the host's decoder
//!   ([`crate::sockets::frames::Decoder`]), split into reads of every size,
//!   against a plain model of RFC 6455 as the host applies it.
//! - [`router`]: a request's method, target and headers through what the
//!   host does before an object sees it ([`crate::http::route`], the client
//!   IP, the guest's headers, the WebSocket handshake), against a model
//!   matcher, with the default and with fuzzed routes.
//! - [`config`]: TOML text through [`Config::from_toml`]: a config it accepts
//!   can be served (its routes compile, its durations fit in a deadline).
//! - [`storage_ranges`]: `list` options through the key-range arithmetic and
//!   an object's storage view over a real redb file, against a `BTreeMap`.
//!
//! Not part of the API: hidden from the docs and free to change.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;
use std::time::Duration;

use bytes::BytesMut;

use crate::Config;
use crate::config::{RouteConfig, default_routes};
use crate::http::router::Router;
use crate::http::{REST_HEADER, Routed, Serves, client_ip, guest_headers, route};
use crate::ids::ObjectId;
use crate::sockets::frames::{Decoder, Incoming};
use crate::storage::range::{Lower, prefix_successor};
use crate::storage::{Db, ListQuery, ObjectStorage};

/// Reads the fuzzer's bytes as a sequence of small choices.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }

    fn take(&mut self, n: usize) -> &'a [u8] {
        let (a, b) = self.0.split_at(n.min(self.0.len()));
        self.0 = b;
        a
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

// ---------------------------------------------------------------------------
// The frame decoder

/// What decoding a whole stream gives: the messages, then the close code of
/// the error that ended it (none: the stream ran out, perhaps mid-frame).
type Decoded = (Vec<Incoming>, Option<u16>);

pub use crate::sockets::frames::client_frame;

/// Client WebSocket bytes through the host's frame decoder.
///
/// The first byte picks the message limit, the second how the stream is cut
/// into reads; the rest is the stream. The decoder must give the same
/// messages and the same error however the stream is cut (one buffer, or
/// reads of 1 to 17 bytes), agree with [`model_decode`], keep every message
/// within the limit, and never ask (`wanted`) for more than the frame at the
/// head of its buffer needs.
pub fn frame_decoder(data: &[u8]) {
    let mut input = Input(data);
    let max = [125, 126, 1000, 65_536][usize::from(input.byte() & 3)];
    let cut = input.byte();
    let stream = input.0;

    let whole = decode_in_reads(stream, max, &mut |_| stream.len().max(1));
    let mut state = u32::from(cut) | 1;
    let pieces = decode_in_reads(stream, max, &mut |_| {
        // xorshift: a reproducible series of read sizes from one byte.
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        (state % 17) as usize + 1
    });
    let bytewise = decode_in_reads(stream, max, &mut |_| 1);
    assert_eq!(
        whole, pieces,
        "a different cut into reads, a different result"
    );
    assert_eq!(whole, bytewise, "byte by byte, a different result");
    let model = model_decode(stream, max);
    assert_eq!(whole, model, "the decoder and the model disagree");
    for m in &whole.0 {
        match m {
            Incoming::Text(t) => assert!(t.len() <= max),
            Incoming::Binary(b) => assert!(b.len() <= max),
            Incoming::Ping(p) => assert!(p.len() <= 125),
            Incoming::Pong => {}
            Incoming::Close(code, reason) => {
                assert!(*code == 1005 || valid_close_code(*code), "{code}");
                assert!(reason.len() <= 123);
            }
        }
    }
    if let Some(code) = whole.1 {
        assert!(matches!(code, 1002 | 1007 | 1009), "{code}");
    }
}

/// Feeds `stream` to a decoder in reads of `next_read(i)` bytes, decoding all
/// it can after each, as the connection's task does; stops at an error or a
/// close (after which the host reads no more).
fn decode_in_reads(
    stream: &[u8],
    max: usize,
    next_read: &mut dyn FnMut(usize) -> usize,
) -> Decoded {
    let mut d = Decoder::new(max);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut fed = 0;
    let mut reads = 0;
    while fed < stream.len() {
        let n = next_read(reads).min(stream.len() - fed);
        reads += 1;
        buf.extend_from_slice(&stream[fed..fed + n]);
        fed += n;
        loop {
            let wanted = d.wanted(&buf);
            let before = buf.len();
            match d.decode(&mut buf) {
                Ok(Some(m)) => {
                    let closed = matches!(m, Incoming::Close(..));
                    out.push(m);
                    if closed {
                        return (out, None);
                    }
                }
                Ok(None) => {
                    // Everything that was there was either consumed (whole
                    // data frames of a fragmented message) or is still there.
                    assert!(buf.len() <= before);
                    if buf.len() == before && wanted > 0 {
                        // The head frame is incomplete: `wanted` is what it
                        // lacks, at most.
                        assert!(wanted <= max + 14, "wanted {wanted} for a limit of {max}");
                    }
                    break;
                }
                Err(e) => return (out, Some(e.close().0)),
            }
        }
    }
    (out, None)
}

fn valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// RFC 6455 as the host applies it, over the whole stream at once: frames
/// are checked in the order of their bytes (reserved bits, opcode, mask,
/// length, control-frame rules), a frame too big for the limit is refused as
/// soon as its header says so, and the stream may end anywhere.
pub fn model_decode(stream: &[u8], max: usize) -> Decoded {
    let protocol = Some(1002);
    let mut out = Vec::new();
    let mut partial: Option<(bool, Vec<u8>)> = None;
    let mut at = 0usize;
    loop {
        let rest = &stream[at..];
        let [b0, b1, ..] = *rest else {
            return (out, None);
        };
        let fin = b0 & 0x80 != 0;
        let opcode = b0 & 0x0F;
        if b0 & 0x70 != 0 || ![0, 1, 2, 8, 9, 10].contains(&opcode) || b1 & 0x80 == 0 {
            return (out, protocol);
        }
        let (len, ext) = match b1 & 0x7F {
            126 if rest.len() < 4 => return (out, None),
            126 => (u64::from(u16::from_be_bytes([rest[2], rest[3]])), 2),
            127 if rest.len() < 10 => return (out, None),
            127 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&rest[2..10]);
                (u64::from_be_bytes(b), 8)
            }
            n => (u64::from(n), 0),
        };
        if opcode >= 8 && (!fin || len > 125) {
            return (out, protocol);
        }
        let head = 2 + ext + 4;
        if rest.len() < head {
            return (out, None);
        }
        let so_far = partial.as_ref().map_or(0, |p| p.1.len()) as u64;
        if len > max as u64 || so_far + len > max as u64 {
            return (out, Some(1009));
        }
        let len = len as usize;
        if rest.len() < head + len {
            return (out, None);
        }
        let mask = &rest[head - 4..head];
        let payload: Vec<u8> = rest[head..head + len]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ mask[i % 4])
            .collect();
        at += head + len;
        let whole = |text: bool, data: Vec<u8>| -> Result<Incoming, u16> {
            if text {
                String::from_utf8(data)
                    .map(Incoming::Text)
                    .map_err(|_| 1007)
            } else {
                Ok(Incoming::Binary(data))
            }
        };
        let message = match opcode {
            9 => Incoming::Ping(payload),
            10 => Incoming::Pong,
            8 => {
                let message = match payload.len() {
                    0 => Incoming::Close(1005, String::new()),
                    1 => return (out, protocol),
                    _ => {
                        let code = u16::from_be_bytes([payload[0], payload[1]]);
                        if !valid_close_code(code) {
                            return (out, protocol);
                        }
                        match String::from_utf8(payload[2..].to_vec()) {
                            Ok(reason) => Incoming::Close(code, reason),
                            Err(_) => return (out, Some(1007)),
                        }
                    }
                };
                out.push(message);
                return (out, None);
            }
            1 | 2 if partial.is_some() => return (out, protocol),
            1 | 2 if !fin => {
                partial = Some((opcode == 1, payload));
                continue;
            }
            1 | 2 => match whole(opcode == 1, payload) {
                Ok(m) => m,
                Err(code) => return (out, Some(code)),
            },
            _ => {
                let Some((text, mut data)) = partial.take() else {
                    return (out, protocol);
                };
                data.extend_from_slice(&payload);
                if !fin {
                    partial = Some((text, data));
                    continue;
                }
                match whole(text, data) {
                    Ok(m) => m,
                    Err(code) => return (out, Some(code)),
                }
            }
        };
        out.push(message);
    }
}

// ---------------------------------------------------------------------------
// The router

/// Routes the fuzzer may add to the default ones: every shape a pattern can
/// take (literal, `{name}` first, last or between, a final `*`, methods).
fn fuzz_routes() -> Vec<RouteConfig> {
    let object = |path: &str, class: &str, method: Option<&str>, max: Option<usize>| RouteConfig {
        method: method.map(str::to_string),
        max_name_chars: max,
        ..RouteConfig::object(path, class)
    };
    let mut routes = vec![
        object("/{name}", "first", None, Some(8)),
        object("/a/{name}/b/*", "between", Some("post"), None),
        object("/a/{name}/*", "rest", Some("GET"), None),
        object("/x/y/{name}", "last", None, None),
        RouteConfig {
            page: Some("metrics".into()),
            method: Some("DELETE".into()),
            ..RouteConfig::object("/a/m", "m")
        },
    ];
    for r in &mut routes[4..] {
        r.object = None;
    }
    routes
}

/// A request's method, target and headers through what the host does with
/// them before an object sees the request.
///
/// The input is lines: the first byte picks the routes (the default chat
/// routes or `fuzz_routes`, behind which listener), the first line is the
/// method, the second the request target, the rest headers (`name: value`);
/// a line `route PATTERN` adds an object route with that pattern. A request
/// hyper would refuse (a bad method, target or header) ends there. The route
/// must be the one [`model_route`] finds; the client IP must be an IP (the
/// peer's when the proxy is not trusted); the guest must see every header
/// once and the host's own rest header exactly once; and a WebSocket
/// handshake is either refused or answered with 101 and an accept key.
pub fn router(data: &[u8]) {
    let mut input = Input(data);
    let choice = input.byte();
    let mut lines = input.0.split(|b| *b == b'\n');
    let method = lines.next().unwrap_or_default();
    let target = lines.next().unwrap_or_default();
    let mut routes = if choice & 1 == 0 {
        default_routes()
    } else {
        fuzz_routes()
    };
    let mut request = hyper::Request::builder().method(method).uri(target);
    for line in lines {
        if let Some(pattern) = line.strip_prefix(b"route ") {
            let pattern = String::from_utf8_lossy(pattern).into_owned();
            routes.push(RouteConfig::object(pattern, "added"));
            continue;
        }
        let (name, value) = match line.iter().position(|b| *b == b':') {
            Some(i) => (&line[..i], line[i + 1..].trim_ascii_start()),
            None => (line, &b""[..]),
        };
        request = request.header(name, value);
    }
    let router = match Router::new(&routes) {
        Ok(r) => r,
        Err(e) => {
            // Only a pattern that does not start with '/', or has a '*'
            // before its end, is refused.
            assert!(
                routes.iter().any(|r| !r.path.starts_with('/')
                    || r.path.split('/').rev().skip(1).any(|s| s == "*")),
                "{e}"
            );
            return;
        }
    };
    let Ok(mut request) = request.body(()) else {
        return;
    };
    let serves = [Serves::Everything, Serves::Routes, Serves::Admin][usize::from(choice >> 1) % 3];
    let method = request.method().as_str().to_string();
    let path = request.uri().path().to_string();
    let routed = route(&router, serves, &method, &path);
    assert_eq!(
        routed,
        model_route(&routes, serves, &method, &path),
        "{method} {path}"
    );

    let peer = SocketAddr::from(([127, 0, 0, 1], 4000));
    for trust in [false, true] {
        let ip = client_ip(trust, peer, request.headers());
        assert!(ip.parse::<IpAddr>().is_ok(), "client ip {ip:?}");
        if !trust {
            assert_eq!(ip, "127.0.0.1");
        }
    }
    let rest = match &routed {
        Routed::Object { rest, .. } => rest.clone(),
        _ => String::new(),
    };
    let headers = guest_headers(request.headers(), rest.clone());
    let own: Vec<_> = headers.iter().filter(|(n, _)| n == REST_HEADER).collect();
    assert_eq!(own.len(), 1);
    assert_eq!(own[0].1, rest);
    let clients = request
        .headers()
        .iter()
        .filter(|(n, _)| n.as_str() != REST_HEADER)
        .count();
    assert_eq!(headers.len(), clients + 1);

    if fastwebsockets::upgrade::is_upgrade_request(&request)
        && let Ok((response, _upgraded)) = fastwebsockets::upgrade::upgrade(&mut request)
    {
        assert_eq!(response.status(), hyper::StatusCode::SWITCHING_PROTOCOLS);
        assert!(response.headers().contains_key("sec-websocket-accept"));
    }
    // What the host checks before it lets fastwebsockets answer.
    if let Some(key) = request.headers().get(hyper::header::SEC_WEBSOCKET_KEY) {
        let key = key.as_bytes();
        assert_eq!(
            crate::http::valid_websocket_key(key),
            base64_16(key),
            "key {key:?}"
        );
    }
}

/// Whether `text` is the canonical base64 of 16 bytes, decoded bit by bit.
fn base64_16(text: &[u8]) -> bool {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let Some(data) = text.strip_suffix(b"==") else {
        return false;
    };
    let mut bits = Vec::new();
    for c in data {
        let Some(v) = value(*c) else {
            return false;
        };
        bits.extend((0..6).rev().map(|i| (v >> i) & 1));
    }
    // 16 bytes are 128 bits; the rest of the last character must be zero.
    bits.len() == 132 && bits[128..].iter().all(|b| *b == 0)
}

/// The routes as a plain reading of the README: the admin API under
/// `/admin` where the listener serves it; otherwise the first route whose
/// pattern matches segment by segment (`{name}` one non-empty segment,
/// percent-decoded to UTF-8; a final `*` anything left) and whose method, if
/// any, is the request's; a name over the route's character limit that is
/// not a unique id, empty, over 256 bytes or with control characters is not
/// found.
pub fn model_route(routes: &[RouteConfig], serves: Serves, method: &str, path: &str) -> Routed {
    let not_found = || Routed::NotFound("not found".into());
    if (path == "/admin" || path.starts_with("/admin/")) && serves != Serves::Routes {
        return Routed::Admin;
    }
    if serves == Serves::Admin {
        return not_found();
    }
    let mut path_matched = false;
    for r in routes {
        let Some((name, rest)) = model_match(&r.path, path) else {
            continue;
        };
        // Methods are case-sensitive (RFC 9110); the config's is upper-cased.
        if let Some(m) = &r.method
            && m.to_ascii_uppercase() != method
        {
            path_matched = true;
            continue;
        }
        match (&r.page, &r.unique_id, &r.object, name) {
            (Some(p), _, _, _) if p == "metrics" => return Routed::Metrics,
            (Some(_), _, _, _) => return Routed::Page,
            (_, Some(_), _, _) => return Routed::UniqueId,
            (_, _, Some(class), Some(name)) => {
                let hex = name.len() == 64
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
                if r.max_name_chars.is_some_and(|m| name.chars().count() > m) && !hex {
                    return Routed::NotFound("Name too long".into());
                }
                if name.is_empty() || name.len() > 256 || name.chars().any(char::is_control) {
                    return match crate::ids::validate_name(&name) {
                        Err(e) => Routed::NotFound(e),
                        Ok(()) => panic!("{name:?} is a bad name"),
                    };
                }
                return Routed::Object {
                    id: ObjectId::new(class.clone(), name),
                    rest,
                };
            }
            _ => return not_found(),
        }
    }
    if path_matched {
        Routed::WrongMethod
    } else {
        not_found()
    }
}

/// Matches one pattern against a path by walking both strings: the name (if
/// the pattern has one) and what a final `*` matched.
fn model_match(pattern: &str, path: &str) -> Option<(Option<String>, String)> {
    let mut left = Some(path.trim_start_matches('/'));
    let mut name = None;
    let pattern = pattern.trim_start_matches('/');
    let count = pattern.split('/').count();
    for (i, want) in pattern.split('/').enumerate() {
        if want == "*" && i + 1 == count {
            return Some((name, left.unwrap_or("").to_string()));
        }
        let here = left?;
        let (segment, after) = match here.split_once('/') {
            Some((s, a)) => (s, Some(a)),
            None => (here, None),
        };
        left = after;
        if want == "{name}" {
            if segment.is_empty() {
                return None;
            }
            let decoded = percent_encoding::percent_decode_str(segment)
                .decode_utf8()
                .ok()?;
            name = Some(decoded.into_owned());
        } else if want != segment {
            return None;
        }
    }
    left.is_none().then_some((name, String::new()))
}

// ---------------------------------------------------------------------------
// The config parser

/// TOML text (bytes that are not UTF-8 replaced, as a file the host reads
/// would be refused) through [`Config::from_toml`].
///
/// A config it accepts must pass [`Config::validate`], keep the built-in
/// classes, have routes that compile into a [`Router`], and durations the
/// host can turn into deadlines; a config it refuses must say why, under
/// "invalid config".
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match Config::from_toml(&text) {
        Ok(c) => {
            assert!(c.validate().is_ok());
            for builtin in crate::guests::builtin_names() {
                assert!(c.classes.contains_key(builtin), "{builtin}");
            }
            assert!(!c.routes.is_empty());
            if let Err(e) = Router::new(&c.routes) {
                panic!("a config that validates has routes that do not compile: {e}");
            }
            // The host adds each to the current time to make a deadline
            // (the alarm retry base doubled up to six times).
            let l = &c.limits;
            let ms = [
                ("idle_timeout_ms", c.idle_timeout_ms),
                ("auto_rollback_ms", c.auto_rollback_ms),
                ("limits.max_event_cpu_ms", l.max_event_cpu_ms),
                ("limits.call_timeout_ms", l.call_timeout_ms),
                (
                    "limits.alarm_retry_base_ms",
                    crate::alarms::backoff(
                        Duration::from_millis(l.alarm_retry_base_ms),
                        crate::alarms::MAX_RETRIES,
                    )
                    .as_millis()
                    .try_into()
                    .unwrap_or(u64::MAX),
                ),
                ("limits.request_head_timeout_ms", l.request_head_timeout_ms),
                (
                    "limits.websocket_handshake_timeout_ms",
                    l.websocket_handshake_timeout_ms,
                ),
            ];
            for (name, v) in ms {
                assert!(
                    std::time::Instant::now()
                        .checked_add(Duration::from_millis(v))
                        .is_some(),
                    "{name} = {v} validates but overflows a deadline"
                );
            }
        }
        Err(e) => {
            let said = crate::error::Report(&e).to_string();
            assert!(said.starts_with("invalid config"), "{said}");
        }
    }
}

// ---------------------------------------------------------------------------
// Storage key ranges

/// The bytes keys are made of: few, so that the fuzzer meets equal keys,
/// prefixes of each other, and the 0x00 and 0xFF edges.
const ALPHABET: [u8; 6] = [0x00, 0x01, b'a', b'b', 0xFE, 0xFF];

fn key(input: &mut Input<'_>) -> Vec<u8> {
    let len = usize::from(input.byte() % 5);
    input
        .take(len)
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()])
        .collect()
}

/// Whether `list` with `q` selects `k`, read off the options one by one.
fn selects(q: &ListQuery, k: &[u8]) -> bool {
    q.prefix.as_ref().is_none_or(|p| k.starts_with(p))
        && match (&q.start_after, &q.start) {
            (Some(s), _) => k > s.as_slice(),
            (None, Some(s)) => k >= s.as_slice(),
            (None, None) => true,
        }
        && q.end.as_ref().is_none_or(|e| k < e.as_slice())
}

/// The object whose storage is listed, and its committed keys: every key of
/// up to two bytes of `ALPHABET`. Neighbours (a name that extends it, one
/// it extends, another class) hold the same keys, which must never show.
struct Committed {
    _dir: tempfile::TempDir,
    db: Db,
    keys: BTreeMap<Vec<u8>, Vec<u8>>,
}

const OBJECT: (&str, &str) = ("fuzz", "ranges");

fn committed() -> Option<&'static Committed> {
    static DB: OnceLock<Option<Committed>> = OnceLock::new();
    DB.get_or_init(|| {
        let dir = tempfile::tempdir().ok()?;
        let db = Db::open(&dir.path().join("ranges.redb")).ok()?;
        let mut keys = BTreeMap::new();
        keys.insert(Vec::new(), b"empty".to_vec());
        for a in ALPHABET {
            keys.insert(vec![a], vec![a]);
            for b in ALPHABET {
                keys.insert(vec![a, b], vec![a, b]);
            }
        }
        let rt = tokio::runtime::Builder::new_current_thread().build().ok()?;
        let (committer, thread) = crate::storage::committer::Committer::start(
            db.clone(),
            crate::storage::Durability::None,
            Default::default(),
        )
        .ok()?;
        let ids = [
            OBJECT,
            ("fuzz", "range"),
            ("fuzz", "ranges-"),
            ("fuzz", "rangesx"),
            ("fuzz-", "ranges"),
            ("fuzy", "ranges"),
        ];
        for (class, name) in ids {
            let id = ObjectId::new(class, name);
            let mut s = ObjectStorage::new(db.clone(), id.clone());
            for (k, v) in &keys {
                let mut v = v.clone();
                if (class, name) != OBJECT {
                    v.extend_from_slice(b" of a neighbour");
                }
                s.put(k.clone(), v).ok()?;
            }
            s.end_event(true);
            rt.block_on(committer.commit(id, s.take_batch())).ok()?;
        }
        drop(committer);
        thread.join();
        Some(Committed {
            _dir: dir,
            db,
            keys,
        })
    })
    .as_ref()
}

/// `list` options through the key-range arithmetic and through an object's
/// storage view.
///
/// The input is a query (which options, each a key of up to four bytes of
/// `ALPHABET`, a limit, the direction) and then writes — puts, deletes,
/// delete-all — of an earlier event of the batch and of the running one,
/// over committed keys. The range `[lower, upper)` must select exactly the
/// keys the options select, lie inside the prefix, and be empty only when no
/// key is selected; `list` must return what a `BTreeMap` of the same writes
/// returns, in order, within the limit, and nothing of a neighbour.
pub fn storage_ranges(data: &[u8]) {
    let mut input = Input(data);
    let flags = input.byte();
    let opt = |bit: u8, input: &mut Input<'_>| (flags & bit != 0).then(|| key(input));
    let q = ListQuery {
        prefix: opt(1, &mut input),
        start: opt(2, &mut input),
        start_after: opt(4, &mut input),
        end: opt(8, &mut input),
        limit: (flags & 16 != 0).then(|| usize::from(input.byte() % 8)),
        reverse: flags & 32 != 0,
    };

    // The arithmetic alone, on every key near the options' edges.
    let (lo, hi) = q.bounds();
    let mut near: Vec<Vec<u8>> = vec![Vec::new(), vec![0xFF; 5]];
    for k in [&q.prefix, &q.start, &q.start_after, &q.end]
        .into_iter()
        .flatten()
    {
        near.push(k.clone());
        near.extend(prefix_successor(k));
        let mut longer = k.clone();
        longer.push(0);
        near.push(longer.clone());
        longer.pop();
        longer.push(0xFF);
        near.push(longer);
        if let Some((_, shorter)) = k.split_last() {
            near.push(shorter.to_vec());
        }
    }
    let in_range =
        |k: &[u8]| lo.admits_from_below(k) && hi.as_ref().is_none_or(|h| k < h.as_slice());
    for k in &near {
        assert_eq!(
            in_range(k),
            selects(&q, k),
            "{q:?}: key {k:?}, range {lo:?}..{hi:?}"
        );
    }
    if lo.is_empty_with(&hi) {
        assert!(!near.iter().any(|k| selects(&q, k)), "{q:?}: empty range");
    }
    if let Some(p) = &q.prefix {
        if let Some(succ) = prefix_successor(p) {
            assert!(hi.as_ref().is_some_and(|h| h <= &succ), "{q:?}: {hi:?}");
        }
        match &lo {
            Lower::Included(l) | Lower::Excluded(l) => assert!(l >= p, "{q:?}: {lo:?}"),
            Lower::Unbounded => panic!("{q:?}: a prefix leaves the range unbounded below"),
        }
    }

    // The view: committed keys under a batch's writes under an event's.
    let Some(base) = committed() else {
        panic!("the fuzz database could not be set up");
    };
    let mut storage = ObjectStorage::new(base.db.clone(), ObjectId::new(OBJECT.0, OBJECT.1));
    let mut model = base.keys.clone();
    let mut layer = 0;
    while !input.is_empty() && layer < 2 {
        let op = input.byte();
        match op % 8 {
            0..=3 => {
                let (k, v) = (key(&mut input), vec![op]);
                if storage.put(k.clone(), v.clone()).is_err() {
                    panic!("a put within every limit was refused");
                }
                model.insert(k, v);
            }
            4 | 5 => {
                let k = key(&mut input);
                let existed = storage.delete(k.clone());
                assert_eq!(existed.ok(), Some(model.remove(&k).is_some()));
            }
            6 => {
                storage.delete_all();
                model.clear();
            }
            _ => {
                // The event ends well: its writes join the batch.
                storage.end_event(true);
                layer += 1;
            }
        }
    }
    let listed = storage
        .list(&q)
        .unwrap_or_else(|e| panic!("list failed: {e}"));
    let mut expected: Vec<(Vec<u8>, Vec<u8>)> =
        model.into_iter().filter(|(k, _)| selects(&q, k)).collect();
    if q.reverse {
        expected.reverse();
    }
    expected.truncate(q.limit.unwrap_or(usize::MAX));
    assert_eq!(listed, expected, "{q:?}");
}
