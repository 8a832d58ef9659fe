//! A counter per object name, strongly consistent without locks: the host
//! runs one event at a time per object.
//!
//! - `GET /<class>/<name>/value` answers `{"value":N}`.
//! - `POST /<class>/<name>/increment[?by=K]` adds `K` (default 1) and
//!   answers the new value; every WebSocket watcher hears `{"value":N}`.
//! - A WebSocket at `/<class>/<name>/watch` gets the value at once, and
//!   every change after it (the host keeps watchers connected while the
//!   instance sleeps).

use roomhost_sdk::{
    Error, Object, Reply, Request, Response, Result, accept, sockets, storage,
};
use serde_json::json;

/// The tag of watcher sockets.
const WATCHER: &str = "watcher";

/// The counter's state: a cache of storage key `value`, rebuilt by `init`.
pub struct Counter {
    value: i64,
}

impl Object for Counter {
    fn init() -> Result<Self> {
        Ok(Counter {
            value: storage::get("value")?.unwrap_or(0),
        })
    }

    fn on_request(&mut self, request: Request) -> Result<Reply> {
        if let Some(watcher) = request.socket() {
            // Delivered once the upgrade completes.
            watcher.send_json(&json!({ "value": self.value }))?;
            return Ok(accept(&[WATCHER]));
        }
        match (request.method.as_str(), request.rest()) {
            ("GET", "value") => {}
            ("POST", "increment") => {
                let by: i64 = request.query_as("by")?.unwrap_or(1);
                let next = self
                    .value
                    .checked_add(by)
                    .ok_or_else(|| Error::bad_request("that would overflow"))?;
                // The write and the broadcast are one transaction: watchers
                // hear the value only once it is durable.
                storage::put("value", &next)?;
                self.value = next;
                sockets::broadcast_json(&json!({ "value": next }), Some(WATCHER), &[])?;
            }
            _ => return Err(Error::not_found("try GET .../value or POST .../increment")),
        }
        Ok(Response::json(200, &json!({ "value": self.value })).into())
    }
}

roomhost_sdk::export_object!(Counter);

#[cfg(test)]
mod tests;
