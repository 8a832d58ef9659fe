//! A room: people connect over WebSockets, their messages are stored and
//! broadcast, and an alarm expires old messages — even while the room sleeps.
//!
//! - `GET /<class>/<room>/ws?user=NAME` (a WebSocket) joins the room. The
//!   user's name is kept by the host with the socket (its attachment, and
//!   the tag `user`), not in the instance: the host may evict an idle
//!   instance while clients stay connected, and the next frame wakes a new
//!   one. The newcomer gets `{"welcome":NAME,"online":[names...]}`.
//! - A text frame is a message: stored under `msg:<16-digit ms>` and
//!   broadcast to everyone as `{"from":NAME,"text":TEXT,"at":MS}`.
//! - `GET /<class>/<room>/history` answers the stored messages, oldest first.
//! - Messages expire after [`KEEP_MS`]: an alarm deletes them.

use roomhost_sdk::storage::{self, List};
use roomhost_sdk::{
    Error, Frame, Object, Reply, Request, Response, Result, Socket, accept_json, alarms, log,
    now_ms, sockets,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// How long messages are kept, in ms.
pub const KEEP_MS: u64 = 60 * 60 * 1000;
/// The tag of joined sockets.
const USER: &str = "user";
/// The storage prefix of messages.
const MSG: &str = "msg:";

/// The room's state in memory: only caches of what storage holds, rebuilt by
/// `init` whenever a new instance starts.
pub struct Room {
    /// How many messages are stored (storage key `count`).
    count: u64,
}

/// What the host keeps with each socket (its attachment).
#[derive(Serialize, Deserialize)]
struct Member {
    name: String,
}

/// A stored and broadcast message.
#[derive(Serialize, Deserialize)]
struct Message {
    from: String,
    text: String,
    at: u64,
}

impl Object for Room {
    fn init() -> Result<Self> {
        Ok(Room {
            count: storage::get("count")?.unwrap_or(0),
        })
    }

    fn on_request(&mut self, request: Request) -> Result<Reply> {
        if let Some(socket) = request.socket() {
            let name = request.query("user").unwrap_or_else(|| "anonymous".into());
            if name.is_empty() || name.chars().count() > 32 {
                return Err(Error::bad_request("user must be 1 to 32 characters"));
            }
            let online: Vec<String> = sockets::list(Some(USER))
                .into_iter()
                .filter_map(|s| Some(s.attachment::<Member>().ok()??.name))
                .collect();
            // Delivered once the upgrade completes.
            socket.send_json(&json!({ "welcome": name, "online": online }))?;
            return accept_json(&[USER], &Member { name });
        }
        match (request.method.as_str(), request.rest()) {
            ("GET", "history") => {
                let messages: Vec<Message> = storage::list(&List::prefix(MSG))?
                    .into_iter()
                    .map(|(_, message)| message)
                    .collect();
                Ok(Response::json(200, &messages).into())
            }
            _ => Err(Error::not_found("try GET .../history, or a WebSocket at .../ws")),
        }
    }

    fn on_socket_message(&mut self, socket: Socket, frame: Frame) -> Result<()> {
        let Frame::Text(text) = frame else {
            return Ok(socket.send_json(&json!({ "error": "send text" }))?);
        };
        let Some(member) = socket.attachment::<Member>()? else {
            return Ok(());
        };
        let at = now_ms();
        let message = Message {
            from: member.name,
            text,
            at,
        };
        // One transaction: the message, the count and the alarm are stored
        // together, and the broadcast leaves only once they are durable.
        storage::put(&format!("{MSG}{at:016}"), &message)?;
        self.count += 1;
        storage::put("count", &self.count)?;
        if alarms::get().is_none() {
            alarms::set(at + KEEP_MS);
        }
        sockets::broadcast_json(&message, Some(USER), &[])?;
        Ok(())
    }

    fn on_socket_close(&mut self, socket: Socket, _code: u16, _reason: String) -> Result<()> {
        if let Some(member) = socket.attachment::<Member>()? {
            sockets::broadcast_json(&json!({ "left": member.name }), Some(USER), &[socket])?;
        }
        Ok(())
    }

    fn on_alarm(&mut self, _retry_count: u32) -> Result<()> {
        // Delete what is KEEP_MS old (128 keys a call: the alarm comes back
        // at once for the rest), then wake again when the oldest message left
        // expires. Unless set again here, the alarm is cleared.
        let first_kept = now_ms().saturating_sub(KEEP_MS) + 1;
        let old = List::prefix(MSG).end(&format!("{MSG}{first_kept:016}")).limit(128);
        let expired: Vec<String> = storage::list_bytes(&old)?
            .into_iter()
            .map(|(key, _)| key)
            .collect();
        let deleted = storage::delete_many(&expired)?;
        self.count = self.count.saturating_sub(u64::from(deleted));
        storage::put("count", &self.count)?;
        if let Some((_, oldest)) = storage::list::<Message>(&List::prefix(MSG).limit(1))?.pop() {
            alarms::set(oldest.at + KEEP_MS);
        }
        log::info(format!("expired {deleted} messages, {} left", self.count));
        Ok(())
    }
}

roomhost_sdk::export_object!(Room);

#[cfg(test)]
mod tests;
