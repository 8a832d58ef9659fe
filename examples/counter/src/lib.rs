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
    Frame, Object, Reply, Request, Response, SocketId, accept, log, objects, percent_decode,
    query_param, sockets, storage,
};
use serde_json::json;

/// The storage key of the counter.
const KEY: &str = "value";
/// The tag of watcher sockets.
const WATCHER: &str = "watcher";

/// The counter object.
struct Counter;

impl Object for Counter {
    fn on_request(request: Request) -> Reply {
        if let Some(id) = request.websocket {
            // A new watcher starts from the current value (the frame is
            // delivered once the upgrade completes).
            if let Ok(current) = load() {
                send(id, current);
            }
            return accept(&[WATCHER]);
        }
        let Some(op) = operation(&request.path) else {
            return not_found().into();
        };
        let allowed = match op.as_str() {
            "value" => "GET",
            "increment" | "decrement" | "reset" => "POST",
            _ => return not_found().into(),
        };
        if request.method != allowed {
            let mut response = error(405, &format!("use {allowed} for {op}"));
            response.headers.push(("allow".into(), allowed.into()));
            return response.into();
        }
        match op.as_str() {
            "value" => match load() {
                Ok(value) => value_response(value),
                Err(e) => error(500, &e),
            },
            "increment" => step(request.query.as_deref(), 1),
            "decrement" => step(request.query.as_deref(), -1),
            _ => reset(),
        }
        .into()
    }

    fn on_socket_message(id: SocketId, _frame: Frame) {
        // Whatever a watcher sends, it gets the current value.
        match load() {
            Ok(value) => send(id, value),
            Err(e) => send_error(id, &e),
        }
    }
}

roomhost_sdk::export_object!(Counter);

/// `increment` (`sign` 1) or `decrement` (`sign` -1) by the query's `by`.
fn step(query: Option<&str>, sign: i64) -> Response {
    let by = match query_param(query, "by") {
        None => 1,
        Some(text) => match text.parse::<i64>() {
            Ok(by) => by,
            Err(_) => {
                return error(
                    400,
                    &format!(
                        "by must be an integer between {} and {}",
                        i64::MIN,
                        i64::MAX
                    ),
                );
            }
        },
    };
    let current = match load() {
        Ok(value) => value,
        Err(e) => return error(500, &e),
    };
    let next = if sign < 0 {
        current.checked_sub(by)
    } else {
        current.checked_add(by)
    };
    match next {
        Some(next) => set_from(current, next),
        None => error(
            400,
            &format!(
                "{current} {} {by} would overflow an i64",
                if sign < 0 { '-' } else { '+' }
            ),
        ),
    }
}

/// `reset`: sets the value to 0 whatever is stored now (repairing a bad value).
fn reset() -> Response {
    match load() {
        Ok(current) => set_from(current, 0),
        // The stored value is unreadable: overwrite it, and tell the watchers.
        Err(_) => store_and_broadcast(0),
    }
}

/// Stores `next` and tells the watchers, if it differs from `current`.
fn set_from(current: i64, next: i64) -> Response {
    if next == current {
        return value_response(next);
    }
    store_and_broadcast(next)
}

/// Stores `next` and broadcasts it to the watchers.
fn store_and_broadcast(next: i64) -> Response {
    let written = if next == 0 {
        // An absent key reads as 0; keep the storage empty.
        storage::delete(KEY).map(|_| ())
    } else {
        storage::put(KEY, next.to_string().as_bytes())
    };
    if let Err(e) = written {
        log::error(&format!("writing {KEY}: {e:?}"));
        return error(500, "could not store the value");
    }
    // Released by the host only once the write above is durable.
    let frame = Frame::Text(value_json(next));
    sockets::broadcast(&frame, Some(WATCHER), &[]);
    value_response(next)
}

/// The stored value: 0 when absent, an error message when unreadable.
fn load() -> Result<i64, String> {
    match storage::get(KEY) {
        Ok(None) => Ok(0),
        Ok(Some(bytes)) => std::str::from_utf8(&bytes)
            .ok()
            .and_then(|text| text.trim().parse::<i64>().ok())
            .ok_or_else(|| {
                format!(
                    "the stored value is not a decimal integer ({:?}); POST reset to repair it",
                    String::from_utf8_lossy(&bytes)
                )
            }),
        Err(e) => {
            log::error(&format!("reading {KEY}: {e:?}"));
            Err("could not read the value".into())
        }
    }
}

/// The operation: the path segment after this object's name.
fn operation(path: &str) -> Option<String> {
    let name = objects::self_id().name;
    let mut segments = path.trim_end_matches('/').rsplit('/');
    let op = segments.next()?;
    let before = segments.next()?;
    (percent_decode(before).as_deref() == Some(name.as_str())).then(|| op.to_string())
}

fn value_json(value: i64) -> String {
    json!({ "value": value }).to_string()
}

fn value_response(value: i64) -> Response {
    Response::json(200, value_json(value))
}

/// Sends `{"value":N}` to one watcher.
fn send(id: SocketId, value: i64) {
    send_text(id, value_json(value));
}

/// Sends `{"error":...}` to one watcher.
fn send_error(id: SocketId, message: &str) {
    send_text(id, json!({ "error": message }).to_string());
}

fn send_text(id: SocketId, text: String) {
    // A watcher that has gone away is no concern.
    if let Err(e) = sockets::send(id, &Frame::Text(text)) {
        log::debug(&format!("sending to watcher {id}: {e:?}"));
    }
}

fn error(status: u16, message: &str) -> Response {
    Response::json(status, json!({ "error": message }).to_string())
}

fn not_found() -> Response {
    error(
        404,
        "not found: use GET .../value or POST .../increment, .../decrement, .../reset",
    )
}
