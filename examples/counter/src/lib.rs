//! # counter — one strongly consistent counter per object name
//!
//! The "hello world" of room objects, after the `Counter` Durable Object that
//! opens most introductions to them. Each name (`/counter/<name>/...` in the
//! example config) is its own object, so each name is its own counter; the host
//! runs one instance per name and hands it one event at a time, so concurrent
//! increments never lose an update — no locks, no read-modify-write races.
//!
//! What it shows:
//!
//! * **Serialized events.** `POST increment` reads, adds and writes with no
//!   locking; a thousand concurrent requests still add up exactly.
//! * **Transactional storage.** The value lives in storage key `value` as decimal
//!   text, written in the same transaction as the event. Nothing is kept in guest
//!   memory, so the instance can be dropped (after a trap, on eviction, across a
//!   restart) at any time without losing anything.
//! * **Host-owned WebSockets and the output gate.** Any WebSocket upgrade is
//!   accepted with the tag `watcher`, and every change is broadcast to all
//!   watchers as `{"value":N}`. The broadcast is sent in the same event as the
//!   write, and the host releases it only once the write is durable: a watcher
//!   never sees a value that could still be lost. The sockets, and their tags,
//!   are kept by the host, so watchers stay connected while the instance is
//!   evicted and recreated.
//!
//! ## HTTP
//!
//! The operation is the path segment right after the object name
//! (`/counter/<name>/<op>`; any route of the form `.../{name}/*` works). Every
//! answer is JSON.
//!
//! | request | answer |
//! |---|---|
//! | `GET .../value` | `200 {"value":N}` |
//! | `POST .../increment[?by=K]` | adds `K` (an `i64`, default 1); `200 {"value":N}` with the new value |
//! | `POST .../decrement[?by=K]` | subtracts `K` (default 1); `200 {"value":N}` |
//! | `POST .../reset` | sets the counter to 0; `200 {"value":0}` |
//!
//! A known operation with the wrong method answers `405` (with `allow`); any
//! other path `404 {"error":...}`. A `by` that is not an `i64`, or a step that
//! would overflow, answers `400 {"error":...}` and changes nothing. If the stored
//! value is not a decimal `i64` (written by something else), reads and steps
//! answer `500 {"error":...}` naming the problem; `reset` repairs it. The guest
//! never panics on what clients send or what it finds in storage.
//!
//! ## WebSocket
//!
//! Any upgrade request (whatever the path) is accepted with the tag `watcher`.
//! Every change is pushed to all watchers as `{"value":N}`; a change means the
//! value differs from before (`increment?by=0`, or `reset` of a counter at 0,
//! push nothing). A new watcher first gets the current value; any frame a
//! watcher sends (e.g. `get`) is answered, to that watcher only, with the
//! current value again.

use roomhost_sdk::{
    Error, Frame, Object, Reply, Request, Response, Result, Socket, accept, log, sockets, storage,
};
use serde_json::json;

/// The storage key of the counter.
const KEY: &str = "value";
/// The tag of watcher sockets.
const WATCHER: &str = "watcher";

/// The counter object. It keeps nothing in memory: every event reads the
/// value from storage, so an instance can be dropped at any time.
struct Counter;

impl Object for Counter {
    fn init() -> Result<Self> {
        Ok(Counter)
    }

    fn on_request(&mut self, request: Request) -> Result<Reply> {
        if let Some(watcher) = request.socket() {
            // A new watcher starts from the current value (the frame is
            // delivered once the upgrade completes).
            if let Ok(current) = load() {
                send(watcher, current);
            }
            return Ok(accept(&[WATCHER]));
        }
        // Every error is answered as JSON, with its status.
        Ok(handle(&request)
            .unwrap_or_else(|e| error(e.status(), e.message()))
            .into())
    }

    fn on_socket_message(&mut self, socket: Socket, _frame: Frame) -> Result<()> {
        // Whatever a watcher sends, it gets the current value.
        match load() {
            Ok(value) => send(socket, value),
            Err(e) => send_error(socket, e.message()),
        }
        Ok(())
    }
}

roomhost_sdk::export_object!(Counter);

/// One HTTP operation: the path segment after the object's name.
fn handle(request: &Request) -> Result<Response> {
    let op = request.rest();
    let allowed = match op {
        "value" => "GET",
        "increment" | "decrement" | "reset" => "POST",
        _ => {
            return Err(Error::not_found(
                "not found: use GET .../value or POST .../increment, .../decrement, .../reset",
            ));
        }
    };
    if request.method != allowed {
        return Ok(error(405, &format!("use {allowed} for {op}")).with_header("allow", allowed));
    }
    match op {
        "value" => Ok(value_response(load()?)),
        "increment" => step(request, 1),
        "decrement" => step(request, -1),
        _ => reset(),
    }
}

/// `increment` (`sign` 1) or `decrement` (`sign` -1) by the query's `by`.
fn step(request: &Request, sign: i64) -> Result<Response> {
    let by = request.query_as::<i64>("by").map_err(|_| {
        Error::bad_request(format!(
            "by must be an integer between {} and {}",
            i64::MIN,
            i64::MAX
        ))
    })?;
    let by = by.unwrap_or(1);
    let current = load()?;
    let next = if sign < 0 {
        current.checked_sub(by)
    } else {
        current.checked_add(by)
    };
    let next = next.ok_or_else(|| {
        Error::bad_request(format!(
            "{current} {} {by} would overflow an i64",
            if sign < 0 { '-' } else { '+' }
        ))
    })?;
    set_from(current, next)
}

/// `reset`: sets the value to 0 whatever is stored now (repairing a bad value).
fn reset() -> Result<Response> {
    match load() {
        Ok(current) => set_from(current, 0),
        // The stored value is unreadable: overwrite it, and tell the watchers.
        Err(_) => store_and_broadcast(0),
    }
}

/// Stores `next` and tells the watchers, if it differs from `current`.
fn set_from(current: i64, next: i64) -> Result<Response> {
    if next == current {
        return Ok(value_response(next));
    }
    store_and_broadcast(next)
}

/// Stores `next` and broadcasts it to the watchers.
fn store_and_broadcast(next: i64) -> Result<Response> {
    let written = if next == 0 {
        // An absent key reads as 0; keep the storage empty.
        storage::delete(KEY).map(|_| ())
    } else {
        storage::put_bytes(KEY, next.to_string().as_bytes())
    };
    if let Err(e) = written {
        log::error(format!("writing {KEY}: {e}"));
        return Err(Error::internal("could not store the value"));
    }
    // Released by the host only once the write above is durable.
    sockets::broadcast_text(value_json(next), Some(WATCHER), &[]);
    Ok(value_response(next))
}

/// The stored value (decimal text): 0 when absent, a 500 naming the problem
/// when unreadable.
fn load() -> Result<i64> {
    let bytes = storage::get_bytes(KEY).map_err(|e| {
        log::error(format!("reading {KEY}: {e}"));
        Error::internal("could not read the value")
    })?;
    let Some(bytes) = bytes else { return Ok(0) };
    std::str::from_utf8(&bytes)
        .ok()
        .and_then(|text| text.trim().parse::<i64>().ok())
        .ok_or_else(|| {
            Error::internal(format!(
                "the stored value is not a decimal integer ({:?}); POST reset to repair it",
                String::from_utf8_lossy(&bytes)
            ))
        })
}

fn value_json(value: i64) -> String {
    json!({ "value": value }).to_string()
}

fn value_response(value: i64) -> Response {
    Response::json_raw(200, value_json(value))
}

/// Sends `{"value":N}` to one watcher.
fn send(socket: Socket, value: i64) {
    send_text(socket, value_json(value));
}

/// Sends `{"error":...}` to one watcher.
fn send_error(socket: Socket, message: &str) {
    send_text(socket, json!({ "error": message }).to_string());
}

fn send_text(socket: Socket, text: String) {
    // A watcher that has gone away is no concern.
    if let Err(e) = socket.send_text(text) {
        log::debug(format!("sending to {socket}: {e}"));
    }
}

/// `{"error": message}` with a status.
fn error(status: u16, message: &str) -> Response {
    Response::json(status, &json!({ "error": message }))
}

#[cfg(test)]
mod tests {
    use roomhost_sdk::testing::TestObject;
    use serde_json::{Value, json};

    use super::Counter;

    fn json(response: roomhost_sdk::Response) -> (u16, Value) {
        (
            response.status,
            serde_json::from_slice(&response.body).unwrap_or_default(),
        )
    }

    #[test]
    fn steps_add_up_and_watchers_hear_each_change() {
        let mut c = TestObject::<Counter>::new("counter", "c");
        let watcher = c.connect("/counter/c/watch");
        assert_eq!(c.received_text(watcher), [r#"{"value":0}"#]);
        assert_eq!(
            json(c.post("/counter/c/increment?by=5", b"")),
            (200, json!({"value": 5}))
        );
        assert_eq!(
            json(c.post("/counter/c/decrement", b"")),
            (200, json!({"value": 4}))
        );
        c.evict();
        assert_eq!(json(c.get("/counter/c/value")), (200, json!({"value": 4})));
        assert_eq!(
            c.received_text(watcher),
            [r#"{"value":5}"#, r#"{"value":4}"#]
        );
        assert_eq!(c.storage().get("value").map(Vec::as_slice), Some(&b"4"[..]));
    }

    #[test]
    fn bad_requests_and_bad_data_get_json_errors() {
        let mut c = TestObject::<Counter>::new("counter", "c");
        assert_eq!(c.post("/counter/c/increment?by=x", b"").status, 400);
        assert_eq!(c.get("/counter/c/nope").status, 404);
        let wrong = c.get("/counter/c/increment");
        assert_eq!(wrong.status, 405);
        assert!(wrong.headers.contains(&("allow".into(), "POST".into())));
        c.seed("value", "not a number");
        let (status, body) = json(c.get("/counter/c/value"));
        assert_eq!(status, 500);
        assert!(
            body["error"].as_str().unwrap_or("").contains("POST reset"),
            "{body}"
        );
        assert_eq!(
            json(c.post("/counter/c/reset", b"")),
            (200, json!({"value": 0}))
        );
    }
}
