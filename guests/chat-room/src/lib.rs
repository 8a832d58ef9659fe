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
//! The object's state (`&mut self`) holds only caches: the timestamp of the
//! newest message (read from storage on the first message) and the roster
//! (rebuilt from the sockets' tags and attachments on first use), so a room
//! evicted between two events behaves exactly as one that never was. The
//! unit tests at the end run it on the SDK's test host, evictions included.

use roomhost_sdk::storage::{self, List};
use roomhost_sdk::{
    Error, Frame, Object, Reply, Request, Response, Result, Socket, accept_json, log, now_ms,
    objects, sockets, var,
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

/// The chat room object: caches only (see the module docs).
struct ChatRoom {
    /// The timestamp of the newest stored message; `None` until read from storage.
    last_timestamp: Option<u64>,
    /// Whether the class var turned the rate limiter off (read once per
    /// instance: each read of the environment copies all of it in).
    limiter_off: Option<bool>,
    /// The members in join order: a cache of what the sockets' tags and
    /// attachments say, built on first use after the instance starts (so a
    /// woken room rebuilds it once instead of on every join).
    roster: Option<Vec<(Socket, String)>>,
}

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
    fn init() -> Result<Self> {
        // The newest message's timestamp is read on the first message, not
        // here: a room woken by a join, a leave or a close reads no storage.
        // Keep-alive pings are answered by the host, without waking the room.
        if let Err(e) = sockets::set_auto_response(Some((PING, PONG))) {
            log::warn(format!("setting the ping auto-response: {e}"));
        }
        Ok(ChatRoom {
            last_timestamp: None,
            limiter_off: None,
            roster: None,
        })
    }

    fn on_request(&mut self, request: Request) -> Result<Reply> {
        if request.is_websocket() {
            let session = Session {
                ip: request.client_ip,
                name: None,
            };
            return accept_json(&[], &session);
        }
        if request.method == "GET" && request.rest() == "history" {
            let limit = request
                .query_as::<u32>("limit")
                .map_err(|_| Error::bad_request("limit must be a non-negative integer"))?;
            return Ok(history(limit.map_or(DEFAULT_HISTORY, |n| n.min(MAX_HISTORY)))?.into());
        }
        Ok(Response::text(400, "expected websocket").into())
    }

    fn on_socket_message(&mut self, socket: Socket, frame: Frame) -> Result<()> {
        let text = match frame {
            Frame::Text(text) => text,
            Frame::Binary(_) => return send_error(socket, "Binary frames are not supported."),
        };
        if text == PING {
            // Normally answered by the host (auto-response); kept for safety.
            return send(socket, PONG);
        }
        let data = match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(data)) => data,
            Ok(_) => return send_error(socket, "Malformed JSON: expected a JSON object"),
            Err(e) => return send_error(socket, &format!("Malformed JSON: {e}")),
        };
        let Some(session) = read_session(socket) else {
            return Ok(());
        };
        match session.name {
            None => self.join(socket, session, &data),
            Some(ref name) => self.chat(socket, &session.ip, name, &data),
        }
    }

    fn on_socket_close(&mut self, socket: Socket, _code: u16, _reason: String) -> Result<()> {
        if let Some(roster) = &mut self.roster {
            roster.retain(|(member, _)| *member != socket);
        }
        if let Some(name) = read_session(socket).and_then(|s| s.name) {
            sockets::broadcast_json(&json!({ "quit": name }), Some(MEMBER), &[socket])?;
        }
        Ok(())
    }
}

roomhost_sdk::export_object!(ChatRoom);

impl ChatRoom {
    /// Handles the first JSON frame of an unnamed socket: joins it to the room.
    fn join(
        &mut self,
        socket: Socket,
        mut session: Session,
        data: &Map<String, Value>,
    ) -> Result<()> {
        let name = match data.get("name") {
            None | Some(Value::Null) => "anonymous".to_string(),
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            Some(Value::Bool(b)) => b.to_string(),
            Some(_) => return send_error(socket, "Name must be a string."),
        };
        if name.chars().count() > MAX_NAME_CHARS {
            send_error(socket, "Name too long.")?;
            if let Err(e) = socket.close(1009, "Name too long.") {
                log::warn(format!("closing {socket}: {e}"));
            }
            return Ok(());
        }

        // Who is already here, in join order.
        for (member, other) in self.roster() {
            if *member != socket {
                send(socket, &json!({ "joined": other }).to_string())?;
            }
        }

        // What was said before, oldest first.
        match last_messages(JOIN_HISTORY) {
            Ok(messages) => {
                for message in messages {
                    send(socket, &message)?;
                }
            }
            Err(e) => log::error(format!("loading history: {e}")),
        }

        session.name = Some(name.clone());
        let saved = socket
            .set_attachment(&session)
            .and_then(|()| Ok(socket.set_tags(&[MEMBER])?));
        if let Err(e) = saved {
            log::warn(format!("saving the session of {socket}: {e}"));
            return send_error(socket, "Could not join.");
        }

        let joined = json!({ "joined": name }).to_string();
        self.roster().push((socket, name));
        sockets::broadcast_text(joined, Some(MEMBER), &[]);
        send(socket, &json!({ "ready": true }).to_string())
    }

    /// The roster, built from the host's sockets if needed.
    fn roster(&mut self) -> &mut Vec<(Socket, String)> {
        self.roster.get_or_insert_with(|| {
            sockets::list(Some(MEMBER))
                .into_iter()
                .filter_map(|member| Some((member, read_session(member)?.name?)))
                .collect()
        })
    }

    /// Handles a JSON frame from a member: a chat message.
    fn chat(
        &mut self,
        socket: Socket,
        ip: &str,
        name: &str,
        data: &Map<String, Value>,
    ) -> Result<()> {
        let message = match data.get("message") {
            None | Some(Value::Null) => {
                return send_error(socket, "Expected {\"message\": ...}.");
            }
            Some(message) => message,
        };

        if !self.rate_limit_allows(ip) {
            return send_error(
                socket,
                "Your IP is being rate-limited, please try again later.",
            );
        }

        let message = match message {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => return send_error(socket, "Message must be a string."),
        };
        if message.chars().count() > MAX_MESSAGE_CHARS {
            return send_error(socket, "Message too long.");
        }

        let last = match self.last_timestamp {
            Some(last) => Some(last),
            // First message since the instance started: read it once.
            None => load_last_timestamp(),
        };
        let timestamp = match last {
            Some(last) => now_ms().max(last.saturating_add(1)),
            None => now_ms(),
        };
        let stored = serde_json::to_string(&ChatMessage {
            name,
            message: &message,
            timestamp,
        })
        .map_err(Error::from)
        .and_then(|body| {
            storage::put_bytes(&message_key(timestamp), body.as_bytes())?;
            Ok(body)
        });
        let body = match stored {
            Ok(body) => body,
            Err(e) => {
                log::error(format!("storing a message: {e}"));
                return send_error(socket, "Could not store message.");
            }
        };
        self.last_timestamp = Some(timestamp);
        sockets::broadcast_text(body, Some(MEMBER), &[]);
        Ok(())
    }

    /// Asks the client IP's rate limiter whether it may send; fails open. The
    /// class var `RATE_LIMIT = "off"` turns limiting off (benchmarks, trusted
    /// networks).
    fn rate_limit_allows(&mut self, ip: &str) -> bool {
        let off = *self
            .limiter_off
            .get_or_insert_with(|| var("RATE_LIMIT").is_some_and(|v| v == "off"));
        if off {
            return true;
        }
        match objects::call_json::<_, RateLimit>("rate-limiter", ip, "check", &()) {
            Ok(limit) => limit.allowed,
            Err(e) => {
                log::warn(format!("rate limiter for {ip} failed ({e}); allowing"));
                true
            }
        }
    }
}

/// `GET .../history?limit=N`: the last N messages as a JSON array, oldest first.
fn history(limit: u32) -> Result<Response> {
    let messages =
        last_messages(limit).map_err(|e| Error::internal(format!("loading history: {e}")))?;
    // The stored JSON texts are sent as they are (keeping their field
    // order); anything that is not valid JSON is left out.
    let valid: Vec<String> = messages
        .into_iter()
        .filter(|m| serde_json::from_str::<IgnoredAny>(m).is_ok())
        .collect();
    Ok(Response::json_raw(200, format!("[{}]", valid.join(","))))
}

/// The last `limit` stored messages (their JSON text), oldest first.
fn last_messages(limit: u32) -> Result<Vec<String>> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let entries = storage::list_bytes(&List::prefix(MSG_PREFIX).reverse().limit(limit))?;
    let mut messages: Vec<String> = entries
        .into_iter()
        .filter_map(|(key, value)| match String::from_utf8(value) {
            Ok(text) => Some(text),
            Err(_) => {
                log::warn(format!("stored message {key} is not UTF-8; skipped"));
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
    match storage::list_bytes(&List::prefix(MSG_PREFIX).reverse().limit(1)) {
        Ok(entries) => Some(
            entries
                .first()
                .and_then(|(key, _)| key.strip_prefix(MSG_PREFIX)?.parse::<u64>().ok())
                .unwrap_or(0),
        ),
        Err(e) => {
            log::error(format!("reading the newest message: {e}"));
            None
        }
    }
}

/// The storage key of a message: zero-padded so keys sort by time.
fn message_key(timestamp: u64) -> String {
    format!("{MSG_PREFIX}{timestamp:016}")
}

/// Reads a socket's session from its attachment. `None` when the socket is gone;
/// an unreadable attachment counts as a fresh, unnamed session.
fn read_session(socket: Socket) -> Option<Session> {
    match socket.attachment::<Session>() {
        Ok(session) => Some(session.unwrap_or_default()),
        Err(e) if socket.attachment_bytes().is_ok() => {
            log::warn(format!("{socket} has an unreadable session ({e})"));
            Some(Session::default())
        }
        Err(e) => {
            log::debug(format!("{socket}: {e}"));
            None
        }
    }
}

/// Sends a text frame to one socket (a socket that has gone away is ignored).
fn send(socket: Socket, text: &str) -> Result<()> {
    if let Err(e) = socket.send_text(text) {
        log::debug(format!("sending to {socket}: {e}"));
    }
    Ok(())
}

/// Sends `{"error": message}` to one socket.
fn send_error(socket: Socket, message: &str) -> Result<()> {
    send(socket, &json!({ "error": message }).to_string())
}

#[cfg(test)]
mod tests;
