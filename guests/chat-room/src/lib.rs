//! # chat-room — the room object of the edge-chat demo
//!
//! One object per chat room (class `chat-room`, name = the room name), speaking
//! the WebSocket protocol of Cloudflare's `edge-chat-demo`, so the demo's page
//! works against it unchanged:
//!
//! * `GET /api/room/<name>/websocket` (an upgrade) is accepted with no tags and the
//!   attachment `{"ip":"<client ip>"}`. Any other request with an upgrade is
//!   accepted the same way.
//! * `GET /api/room/<name>/history?limit=N` answers a JSON array of the last `N`
//!   messages (default 100, at most 1000), oldest first. Every other plain HTTP
//!   request answers `400 expected websocket`.
//! * A socket's session lives in its host-kept attachment as JSON
//!   `{"ip": "...", "name": "..."}` (`name` absent until the client joins), and
//!   named sockets carry the tag `member`, so nothing about sessions is lost when
//!   the instance is dropped and recreated. Unnamed sockets get no broadcasts.
//! * The first JSON frame of an unnamed socket joins: its `name` (string; a number
//!   or bool in its string form; missing or `null` → `anonymous`; at most 32
//!   characters, else `{"error":"Name too long."}` and close 1009). The newcomer
//!   then gets `{"joined":X}` for every current member, the last 100 messages,
//!   everyone (newcomer included) gets `{"joined":"<name>"}`, and the newcomer
//!   gets `{"ready":true}`.
//! * Later frames must be `{"message": ...}` (at most 256 characters). Each is
//!   checked with the `rate-limiter` object named after the client IP (if that
//!   call fails, the message is allowed), stored under `msg:<timestamp>` as
//!   `{"name":..,"message":..,"timestamp":..}` with a strictly increasing
//!   millisecond timestamp, and broadcast to every member, sender included.
//! * When a named socket closes, the others get `{"quit":"<name>"}`.
//! * The class var `RATE_LIMIT = "off"` (`[classes.chat-room] vars = ...` in the
//!   host config) skips the rate limiter.
//! * The text frame `ping` is answered with `pong` (keep-alive) by the host
//!   itself, through the auto-response set in `init`, so pings never wake an
//!   evicted room; binary frames and malformed JSON get `{"error": ...}`.
//!
//! Guest memory holds only caches: the timestamp of the newest message
//! (restored from storage in `init`) and the roster (rebuilt from the sockets'
//! tags and attachments on first use), so a room evicted between two events
//! behaves exactly as one that never was.

use std::cell::{Cell, RefCell};

use roomhost_sdk::storage::{self, ListOptions};
use roomhost_sdk::{
    Accept, Frame, Object, Reply, Request, Response, SocketId, log, now_ms, objects, sockets,
};
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// The keep-alive request and its answer.
const PING: &str = "ping";
const PONG: &str = "pong";
/// The tag carried by sockets that have joined (sent a name).
const MEMBER: &str = "member";
/// The storage prefix of chat messages; keys are `msg:` + a 16-digit timestamp.
const MSG_PREFIX: &str = "msg:";
/// Longest accepted user name, in characters.
const MAX_NAME_CHARS: usize = 32;
/// Longest accepted message, in characters.
const MAX_MESSAGE_CHARS: usize = 256;
/// Messages replayed to a newcomer.
const JOIN_HISTORY: u32 = 100;
/// Default and maximum `limit` of the history endpoint.
const DEFAULT_HISTORY: u32 = 100;
const MAX_HISTORY: u32 = 1000;

thread_local! {
    /// The timestamp of the newest stored message; `None` until read from storage.
    static LAST_TIMESTAMP: Cell<Option<u64>> = const { Cell::new(None) };
    /// Whether the class var turned the rate limiter off (read once per
    /// instance: each read of the environment copies all of it in).
    static LIMITER_OFF: Cell<Option<bool>> = const { Cell::new(None) };
    /// The members in join order: a cache of what the sockets' tags and
    /// attachments say, built on first use after the instance starts (so a
    /// woken room rebuilds it once instead of on every join).
    static ROSTER: RefCell<Option<Vec<(SocketId, String)>>> = const { RefCell::new(None) };
}

/// The chat room object.
struct ChatRoom;

/// A socket's session, kept as JSON in the socket's attachment.
#[derive(Serialize, Deserialize, Default)]
struct Session {
    /// The client IP the socket connected from (the rate-limit key).
    #[serde(default)]
    ip: String,
    /// The name the client joined with; absent until it joins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
}

/// A stored and broadcast chat message (field order is the wire order).
#[derive(Serialize)]
struct ChatMessage<'a> {
    name: &'a str,
    message: &'a str,
    timestamp: u64,
}

/// What the rate limiter's `check` answers.
#[derive(Deserialize)]
struct RateLimit {
    allowed: bool,
}

impl Object for ChatRoom {
    fn init() {
        // The newest message's timestamp is read on the first message, not
        // here: a room woken by a join, a leave or a close reads no storage.
        // Keep-alive pings are answered by the host, without waking the room.
        if let Err(e) = sockets::set_auto_response(Some((PING, PONG))) {
            log::warn(&format!("setting the ping auto-response: {e:?}"));
        }
    }

    fn on_request(request: Request) -> Reply {
        if request.websocket.is_some() {
            let session = Session {
                ip: request.client_ip,
                name: None,
            };
            return Reply::AcceptWebsocket(Accept {
                tags: Vec::new(),
                attachment: Some(encode_session(&session)),
            });
        }
        if request.method == "GET" && sub_path(&request.path) == "history" {
            return history(request.query.as_deref()).into();
        }
        Response::text(400, "expected websocket").into()
    }

    fn on_socket_message(id: SocketId, frame: Frame) {
        let text = match frame {
            Frame::Text(text) => text,
            Frame::Binary(_) => {
                send_error(id, "Binary frames are not supported.");
                return;
            }
        };
        if text == PING {
            // Normally answered by the host (auto-response); kept for safety.
            send(id, PONG.to_string());
            return;
        }
        let data = match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(data)) => data,
            Ok(_) => {
                send_error(id, "Malformed JSON: expected a JSON object");
                return;
            }
            Err(e) => {
                send_error(id, &format!("Malformed JSON: {e}"));
                return;
            }
        };
        let Some(session) = read_session(id) else {
            return;
        };
        match session.name {
            None => join(id, session, &data),
            Some(ref name) => chat(id, &session.ip, name, &data),
        }
    }

    fn on_socket_close(id: SocketId, _code: u16, _reason: String) {
        ROSTER.with_borrow_mut(|roster| {
            if let Some(roster) = roster {
                roster.retain(|(member, _)| *member != id);
            }
        });
        let Some(session) = read_session(id) else {
            return;
        };
        if let Some(name) = session.name {
            let frame = json!({ "quit": name }).to_string();
            sockets::broadcast(&Frame::Text(frame), Some(MEMBER), &[id]);
        }
    }
}

roomhost_sdk::export_object!(ChatRoom);

/// Handles the first JSON frame of an unnamed socket: joins it to the room.
fn join(id: SocketId, mut session: Session, data: &Map<String, Value>) {
    let name = match data.get("name") {
        None | Some(Value::Null) => "anonymous".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(_) => {
            send_error(id, "Name must be a string.");
            return;
        }
    };
    if name.chars().count() > MAX_NAME_CHARS {
        send_error(id, "Name too long.");
        if let Err(e) = sockets::close(id, 1009, "Name too long.") {
            log::warn(&format!("closing socket {id}: {e:?}"));
        }
        return;
    }

    // Who is already here, in join order.
    with_roster(|roster| {
        for (member, other) in roster.iter() {
            if *member != id {
                send(id, json!({ "joined": other }).to_string());
            }
        }
    });

    // What was said before, oldest first.
    match last_messages(JOIN_HISTORY) {
        Ok(messages) => {
            for message in messages {
                send(id, message);
            }
        }
        Err(e) => log::error(&format!("loading history: {e}")),
    }

    session.name = Some(name.clone());
    if let Err(e) = sockets::set_attachment(id, Some(&encode_session(&session))) {
        log::warn(&format!("saving session of socket {id}: {e:?}"));
        send_error(id, "Could not join.");
        return;
    }
    if let Err(e) = sockets::set_tags(id, &[MEMBER.to_string()]) {
        log::warn(&format!("tagging socket {id}: {e:?}"));
        send_error(id, "Could not join.");
        return;
    }

    let joined = json!({ "joined": name }).to_string();
    with_roster(|roster| roster.push((id, name)));
    sockets::broadcast(&Frame::Text(joined), Some(MEMBER), &[]);
    send(id, json!({ "ready": true }).to_string());
}

/// Runs `f` on the roster, building it from the host's sockets if needed.
fn with_roster<R>(f: impl FnOnce(&mut Vec<(SocketId, String)>) -> R) -> R {
    ROSTER.with_borrow_mut(|roster| {
        let roster = roster.get_or_insert_with(|| {
            sockets::list(Some(MEMBER))
                .into_iter()
                .filter_map(|member| Some((member, read_session(member)?.name?)))
                .collect()
        });
        f(roster)
    })
}

/// Handles a JSON frame from a member: a chat message.
fn chat(id: SocketId, ip: &str, name: &str, data: &Map<String, Value>) {
    let message = match data.get("message") {
        None | Some(Value::Null) => {
            send_error(id, "Expected {\"message\": ...}.");
            return;
        }
        Some(message) => message,
    };

    if !rate_limit_allows(ip) {
        send_error(id, "Your IP is being rate-limited, please try again later.");
        return;
    }

    let message = match message {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => {
            send_error(id, "Message must be a string.");
            return;
        }
    };
    if message.chars().count() > MAX_MESSAGE_CHARS {
        send_error(id, "Message too long.");
        return;
    }

    let last = match LAST_TIMESTAMP.get() {
        Some(last) => Some(last),
        // First message since the instance started: read it once.
        None => load_last_timestamp(),
    };
    let timestamp = match last {
        Some(last) => now_ms().max(last.saturating_add(1)),
        None => now_ms(),
    };
    let body = match serde_json::to_string(&ChatMessage {
        name,
        message: &message,
        timestamp,
    }) {
        Ok(body) => body,
        Err(e) => {
            log::error(&format!("encoding message: {e}"));
            send_error(id, "Could not store message.");
            return;
        }
    };
    if let Err(e) = storage::put(&message_key(timestamp), body.as_bytes()) {
        log::error(&format!("storing message: {e:?}"));
        send_error(id, "Could not store message.");
        return;
    }
    LAST_TIMESTAMP.set(Some(timestamp));
    sockets::broadcast(&Frame::Text(body), Some(MEMBER), &[]);
}

/// Asks the client IP's rate limiter whether it may send; fails open. The class
/// var `RATE_LIMIT = "off"` turns limiting off (benchmarks, trusted networks).
fn rate_limit_allows(ip: &str) -> bool {
    let off = LIMITER_OFF.get().unwrap_or_else(|| {
        let off = std::env::var("RATE_LIMIT").is_ok_and(|v| v == "off");
        LIMITER_OFF.set(Some(off));
        off
    });
    if off {
        return true;
    }
    match objects::call("rate-limiter", ip, "check", b"") {
        Ok(answer) => match serde_json::from_slice::<RateLimit>(&answer) {
            Ok(limit) => limit.allowed,
            Err(e) => {
                log::warn(&format!(
                    "rate limiter for {ip} answered nonsense ({e}); allowing"
                ));
                true
            }
        },
        Err(e) => {
            log::warn(&format!("rate limiter for {ip} failed ({e:?}); allowing"));
            true
        }
    }
}

/// `GET .../history?limit=N`: the last N messages as a JSON array, oldest first.
fn history(query: Option<&str>) -> Response {
    let mut limit = DEFAULT_HISTORY;
    for (k, v) in query
        .unwrap_or("")
        .split('&')
        .filter_map(|p| p.split_once('='))
    {
        if k == "limit" {
            match v.parse::<u32>() {
                Ok(n) => limit = n.min(MAX_HISTORY),
                Err(_) => return Response::text(400, "limit must be a non-negative integer"),
            }
        }
    }
    match last_messages(limit) {
        Ok(messages) => {
            // The stored JSON texts are sent as they are (keeping their field
            // order); anything that is not valid JSON is left out.
            let valid: Vec<String> = messages
                .into_iter()
                .filter(|m| serde_json::from_str::<IgnoredAny>(m).is_ok())
                .collect();
            Response::json(200, format!("[{}]", valid.join(",")))
        }
        Err(e) => {
            log::error(&format!("loading history: {e}"));
            Response::text(500, "could not load history")
        }
    }
}

/// The last `limit` stored messages (their JSON text), oldest first.
fn last_messages(limit: u32) -> Result<Vec<String>, String> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let entries = storage::list(&ListOptions {
        prefix: Some(MSG_PREFIX.to_string()),
        start: None,
        start_after: None,
        end: None,
        limit: Some(limit),
        reverse: true,
    })
    .map_err(|e| format!("{e:?}"))?;
    let mut messages: Vec<String> = entries
        .into_iter()
        .filter_map(|(key, value)| match String::from_utf8(value) {
            Ok(text) => Some(text),
            Err(_) => {
                log::warn(&format!("stored message {key} is not UTF-8; skipped"));
                None
            }
        })
        .collect();
    messages.reverse();
    Ok(messages)
}

/// Reads the timestamp of the newest stored message (`Some(0)` when there is
/// none, `None` when storage could not be read).
fn load_last_timestamp() -> Option<u64> {
    let newest = storage::list(&ListOptions {
        prefix: Some(MSG_PREFIX.to_string()),
        start: None,
        start_after: None,
        end: None,
        limit: Some(1),
        reverse: true,
    });
    match newest {
        Ok(entries) => Some(
            entries
                .first()
                .and_then(|(key, _)| key.strip_prefix(MSG_PREFIX)?.parse::<u64>().ok())
                .unwrap_or(0),
        ),
        Err(e) => {
            log::error(&format!("reading the newest message: {e:?}"));
            None
        }
    }
}

/// The storage key of a message: zero-padded so keys sort by time.
fn message_key(timestamp: u64) -> String {
    format!("{MSG_PREFIX}{timestamp:016}")
}

/// The part of the path after `/api/room/<name>/` (or the last segment of any
/// other path), without a trailing slash.
fn sub_path(path: &str) -> &str {
    let path = path.trim_end_matches('/');
    match path.strip_prefix("/api/room/") {
        Some(rest) => rest.split_once('/').map_or("", |(_, sub)| sub),
        None => path.rsplit('/').next().unwrap_or(""),
    }
}

/// Reads a socket's session from its attachment. `None` when the socket is gone;
/// an unreadable attachment counts as a fresh, unnamed session.
fn read_session(id: SocketId) -> Option<Session> {
    match sockets::attachment(id) {
        Ok(Some(bytes)) => match serde_json::from_slice::<Session>(&bytes) {
            Ok(session) => Some(session),
            Err(e) => {
                log::warn(&format!("socket {id} has an unreadable session ({e})"));
                Some(Session::default())
            }
        },
        Ok(None) => Some(Session::default()),
        Err(e) => {
            log::debug(&format!("socket {id}: {e:?}"));
            None
        }
    }
}

fn encode_session(session: &Session) -> Vec<u8> {
    // Serializing a struct of strings cannot fail; fall back to an empty object.
    serde_json::to_vec(session).unwrap_or_else(|_| b"{}".to_vec())
}

/// Sends a text frame to one socket (a socket that has gone away is ignored).
fn send(id: SocketId, text: String) {
    if let Err(e) = sockets::send(id, &Frame::Text(text)) {
        log::debug(&format!("sending to socket {id}: {e:?}"));
    }
}

/// Sends `{"error": message}` to one socket.
fn send_error(id: SocketId, message: &str) {
    send(id, json!({ "error": message }).to_string());
}
