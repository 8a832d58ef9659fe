//! # probe — a test object that pokes at the host
//!
//! The host's integration tests load this component (class `probe` in their
//! configuration) and drive it over HTTP, WebSockets and object calls to check
//! what the host guarantees: transactions, trap rollback, the output gate,
//! socket tags and attachments, limits, and calls between objects. Every command
//! is listed below; there is nothing else.
//!
//! The only in-memory state is the `init` counter (how many times `init` ran in
//! the current instance); everything else is in storage or with the host.
//!
//! ## HTTP
//!
//! Any path works; the operation is the **last path segment**
//! (`/anything/<name>/put` → `put`). Query parameters are
//! `application/x-www-form-urlencoded`: `%XX` escapes are decoded and `+` is a
//! space. A missing required parameter answers `400 missing <param>`; a storage
//! error answers `500` with the `Debug` of the error. An unknown operation answers
//! `404 unknown op: <op>`.
//!
//! | operation | parameters | answer |
//! |---|---|---|
//! | `get` | `key` | `200` with the stored bytes, or `404 not found` |
//! | `put` | `key`, `value` (or, without `value`, the request body) | stores it; `200 ok` |
//! | `put-then-trap` | `key`, `value` (or body) | stores it, then panics with `probe: trap requested` (the write must be rolled back) |
//! | `delete` | `key` | `200 true` if the key existed, else `200 false` |
//! | `list` | optional `prefix`, `start`, `start-after`, `end`, `limit`, `reverse=true` | `200` JSON array of `[key, value]` pairs, values as (lossy UTF-8) strings, in the order storage returned them |
//! | `get-many` | `keys` (comma-separated) | `200` JSON array of `[key, value]` for the keys that exist, in key order |
//! | `put-many` | `keys`, `values` (comma-separated, paired in order) | stores them all or none; `200 ok` |
//! | `delete-many` | `keys` | `200` with how many existed |
//! | `delete-all` | | `200 ok` |
//! | `inits` | | `200` with how many times `init` ran in this instance |
//! | `alarm-set` | `in` (ms from now) | sets the alarm; `200 ok` |
//! | `alarm-set-then-trap` | `in` | sets the alarm, then panics (the alarm must not be set) |
//! | `alarm-get` | | `200` with the pending alarm time (ms since the epoch) or `none` |
//! | `alarm-delete` | | deletes the alarm; `200 ok` |
//! | `spin` | | loops forever (runaway-guest test; never answers) |
//! | `alloc` | `mb` | allocates `mb` MiB and writes to every page, then `200 allocated <mb> MiB`; if memory cannot grow that far, the allocation fails and the guest traps (memory-limit test) |
//! | `self` | | `200 <class>/<name>` from `objects::self_id()` |
//! | `unique` | | `200` with `objects::unique_id()` |
//! | `client-ip` | | `200` with the request's `client-ip` (the TCP peer, or the `X-Forwarded-For` address the host trusts) |
//! | `call` | `class`, `name`, `method`; the body is the payload | `200` with the result bytes, or `502` with the `Debug` of the `CallError` (e.g. `CallError::Cycle`) |
//! | `storage-error` | `what=key\|value\|many` | tries `put` of a 3000-byte key / `put` of a 200 KiB value (key `probe:big`) / `put_many` of 200 entries (keys `probe:many:000`..`probe:many:199`); `200` with the `Debug` of the `StorageError` (e.g. `StorageError::KeyTooLarge(2048)`), or `200 ok` if the call succeeded |
//!
//! If the request asks for a WebSocket (`request.websocket` is set), whatever the
//! path, it is accepted with the tags from `tags=a,b` (comma-separated, empty
//! parts ignored; none when absent) and no attachment.
//!
//! ## WebSocket
//!
//! Text frames are commands; replies go to the sender as text frames. A command
//! is the text up to the first `:`, its argument the rest. Where a host call can
//! fail, the reply is `err:<Debug of the error>` instead of the success reply;
//! a malformed argument (a socket id or close code that is not a number, `put`
//! without `=`, `call` with fewer than three `:`) replies `err:<explanation>`.
//!
//! | frame | effect | reply |
//! |---|---|---|
//! | `echo:<x>` | | `<x>` |
//! | `broadcast:<x>` | `<x>` to every socket of the object (sender included) | none |
//! | `broadcast-tag:<tag>:<x>` | `<x>` to every socket carrying `<tag>` | none |
//! | `send:<id>:<x>` | `<x>` to socket `<id>` | `ok` |
//! | `put:<k>=<v>` | stores `<k>` = `<v>` | `ok` |
//! | `get:<k>` | | the value of `<k>`, or `none` |
//! | `trap` | stores `trapped` = `yes` and sends `before-trap` to the sender, then panics | none: neither the write nor the frame may ever be observed |
//! | `count` | increments the decimal counter in key `count` | the new value |
//! | `list` / `list:<tag>` | | ids of all open sockets (`sockets::list(None)`) / of those carrying `<tag>`, in accept order, joined by `,` (empty if none) |
//! | `tags:<id>` | | the tags of socket `<id>`, joined by `,` |
//! | `set-tags:<a,b>` | replaces this socket's tags (empty parts ignored) | `ok` |
//! | `attach:<text>` | sets this socket's attachment to `<text>` | `ok` |
//! | `attachment` | | this socket's attachment as (lossy UTF-8) text, or `none` |
//! | `close:<code>:<reason>` | closes this socket with `<code>` and `<reason>` | none (on failure `err:...`) |
//! | `inits` | | how many times `init` ran in this instance |
//! | `auto:<request>:<response>` | sets the object's auto-response pair | `ok` |
//! | `auto-ts` | | when the host last auto-responded on this socket (ms since the epoch), or `none` |
//! | `call:<class>:<name>:<method>:<payload>` | `objects::call` (the payload may contain `:`) | `ok:<result as lossy UTF-8>` or `err:<Debug of the CallError>` |
//! | anything else | | `unknown:<command>` (the text up to the first `:`) |
//!
//! Binary frames are echoed back to the sender as binary frames.
//!
//! When a socket closes, `on_socket_close` stores key `closed:<id>` =
//! `<code>:<reason>` (read it with the HTTP `get` operation).
//!
//! ## Alarms (`on_alarm`)
//!
//! If the decimal in key `alarm-fail-until` is greater than the retry count, it
//! panics (so the host retries). Otherwise it appends `<retry>@<now ms>;` to key
//! `alarm-log`, and if key `alarm-rearm-ms` holds a positive number, sets the
//! next alarm that many ms from now.
//!
//! ## Calls (`on_call`)
//!
//! | method | payload | result |
//! |---|---|---|
//! | `echo` | anything | `Ok(payload)` |
//! | `trap` | | panics with `probe: trap requested` |
//! | `put` | `k=v` | stores `k` = `v`; `Ok("ok")` |
//! | `get` | `k` | `Ok(value)`, or `Ok("")` if absent |
//! | `call` | `class:name:method:payload` (the payload may contain `:`) | calls that object; `Ok(its result)`, or `Err(<Debug of the CallError>)` (so A → B → A gives `Err("CallError::Cycle")` in B, which A sees as `Rejected(...)`) |
//! | `fail` | | `Err("probe: asked to fail")` |
//! | anything else | | `Err("no such method: <method>")` |
//!
//! Storage errors in `put`/`get` answer `Err(<Debug of the StorageError>)`; a
//! malformed payload (`put` without `=`, `call` with fewer than three `:`)
//! answers `Err(<explanation>)`.

use std::cell::Cell;

use roomhost_sdk::storage::{self, ListOptions};
use roomhost_sdk::{
    Accept, Frame, Object, Reply, Request, Response, SocketId, alarms, log, now_ms, objects,
    sockets,
};

thread_local! {
    /// How many times `init` ran in this instance.
    static INITS: Cell<u64> = const { Cell::new(0) };
}

/// The probe object.
struct Probe;

impl Object for Probe {
    fn init() {
        INITS.set(INITS.get() + 1);
    }

    fn on_request(request: Request) -> Reply {
        let query = Query::parse(request.query.as_deref());
        if request.websocket.is_some() {
            let tags = query
                .get("tags")
                .map(|t| split_list(&t))
                .unwrap_or_default();
            return Reply::AcceptWebsocket(Accept {
                tags,
                attachment: None,
            });
        }
        let op = request
            .path
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or("");
        if op == "client-ip" {
            return Response::text(200, request.client_ip).into();
        }
        match http(op, &query, request.body) {
            Ok(response) => response.into(),
            Err(response) => response.into(),
        }
    }

    fn on_socket_message(id: SocketId, frame: Frame) {
        let text = match frame {
            Frame::Text(text) => text,
            Frame::Binary(bytes) => {
                if let Err(e) = sockets::send(id, &Frame::Binary(bytes)) {
                    log::warn(&format!("echoing binary to {id}: {e:?}"));
                }
                return;
            }
        };
        if let Some(reply) = command(id, &text)
            && let Err(e) = sockets::send(id, &Frame::Text(reply))
        {
            log::warn(&format!("replying to {id}: {e:?}"));
        }
    }

    fn on_socket_close(id: SocketId, code: u16, reason: String) {
        let value = format!("{code}:{reason}");
        if let Err(e) = storage::put(&format!("closed:{id}"), value.as_bytes()) {
            log::error(&format!("recording close of {id}: {e:?}"));
        }
    }

    fn on_alarm(retry_count: u32) {
        let fail_until = read_number("alarm-fail-until");
        if u64::from(retry_count) < fail_until {
            panic!("probe: alarm trap requested (retry {retry_count})");
        }
        let mut log_line = storage::get("alarm-log")
            .ok()
            .flatten()
            .map(|v| String::from_utf8_lossy(&v).into_owned())
            .unwrap_or_default();
        log_line.push_str(&format!("{retry_count}@{};", now_ms()));
        if let Err(e) = storage::put("alarm-log", log_line.as_bytes()) {
            log::error(&format!("recording the alarm: {e:?}"));
        }
        let rearm = read_number("alarm-rearm-ms");
        if rearm > 0 {
            alarms::set(now_ms().saturating_add(rearm));
        }
    }

    fn on_call(method: String, payload: Vec<u8>) -> Result<Vec<u8>, String> {
        let text = String::from_utf8_lossy(&payload).into_owned();
        match method.as_str() {
            "echo" => Ok(payload),
            "trap" => panic!("probe: trap requested"),
            "put" => {
                let (k, v) = text
                    .split_once('=')
                    .ok_or_else(|| "probe: put expects k=v".to_string())?;
                storage::put(k, v.as_bytes()).map_err(|e| format!("{e:?}"))?;
                Ok(b"ok".to_vec())
            }
            "get" => Ok(storage::get(&text)
                .map_err(|e| format!("{e:?}"))?
                .unwrap_or_default()),
            "call" => {
                let mut parts = text.splitn(4, ':');
                match (parts.next(), parts.next(), parts.next(), parts.next()) {
                    (Some(class), Some(name), Some(method), payload) => {
                        objects::call(class, name, method, payload.unwrap_or("").as_bytes())
                            .map_err(|e| format!("{e:?}"))
                    }
                    _ => Err("probe: call expects class:name:method:payload".to_string()),
                }
            }
            "fail" => Err("probe: asked to fail".to_string()),
            _ => Err(format!("no such method: {method}")),
        }
    }
}

/// Runs one HTTP operation. `Err` carries an error response.
/// `200` with key/value pairs as a JSON array of `[key, value]` (values as
/// lossy UTF-8), as `list` and `get-many` answer.
fn pairs_json(entries: Vec<(String, Vec<u8>)>) -> Result<Response, Response> {
    let pairs: Vec<(String, String)> = entries
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
        .collect();
    let json =
        serde_json::to_string(&pairs).map_err(|e| Response::text(500, format!("encoding: {e}")))?;
    Ok(Response::json(200, json))
}

fn http(op: &str, query: &Query, body: Vec<u8>) -> Result<Response, Response> {
    Ok(match op {
        "get" => match storage::get(&query.require("key")?).map_err(storage_failure)? {
            Some(value) => bytes_response(200, value),
            None => Response::text(404, "not found"),
        },
        "put" => {
            put_from(query, body)?;
            Response::text(200, "ok")
        }
        "put-then-trap" => {
            put_from(query, body)?;
            panic!("probe: trap requested");
        }
        "delete" => {
            let existed = storage::delete(&query.require("key")?).map_err(storage_failure)?;
            Response::text(200, existed.to_string())
        }
        "list" => {
            let limit = match query.get("limit") {
                Some(l) => Some(
                    l.parse::<u32>()
                        .map_err(|_| Response::text(400, "limit must be a u32"))?,
                ),
                None => None,
            };
            let options = ListOptions {
                prefix: query.get("prefix"),
                start: query.get("start"),
                start_after: query.get("start-after"),
                end: query.get("end"),
                limit,
                reverse: query.get("reverse").as_deref() == Some("true"),
            };
            pairs_json(storage::list(&options).map_err(storage_failure)?)?
        }
        "get-many" => {
            let keys = split_list(&query.require("keys")?);
            pairs_json(storage::get_many(&keys).map_err(storage_failure)?)?
        }
        "put-many" => {
            // keys=a,b&values=1,2
            let keys = split_list(&query.require("keys")?);
            let values = split_list(&query.require("values")?);
            let entries: Vec<(String, Vec<u8>)> = keys
                .into_iter()
                .zip(values)
                .map(|(k, v)| (k, v.into_bytes()))
                .collect();
            storage::put_many(&entries).map_err(storage_failure)?;
            Response::text(200, "ok")
        }
        "delete-many" => {
            let keys = split_list(&query.require("keys")?);
            let n = storage::delete_many(&keys).map_err(storage_failure)?;
            Response::text(200, n.to_string())
        }
        "delete-all" => {
            storage::delete_all().map_err(storage_failure)?;
            Response::text(200, "ok")
        }
        "inits" => Response::text(200, INITS.get().to_string()),
        "alarm-set" | "alarm-set-then-trap" => {
            let in_ms = query
                .require("in")?
                .parse::<u64>()
                .map_err(|_| Response::text(400, "in must be a number of ms"))?;
            alarms::set(now_ms().saturating_add(in_ms));
            if op == "alarm-set-then-trap" {
                panic!("probe: trap requested");
            }
            Response::text(200, "ok")
        }
        "alarm-get" => match alarms::get() {
            Some(at) => Response::text(200, at.to_string()),
            None => Response::text(200, "none"),
        },
        "alarm-delete" => {
            alarms::delete();
            Response::text(200, "ok")
        }
        "spin" => spin(),
        "alloc" => {
            let mb = query
                .require("mb")?
                .parse::<usize>()
                .map_err(|_| Response::text(400, "mb must be a number"))?;
            let bytes = mb
                .checked_mul(1 << 20)
                .ok_or_else(|| Response::text(400, "mb is too large"))?;
            // Allocation failure aborts (a trap): that is what the test wants.
            let mut block = vec![0u8; bytes];
            for page in block.chunks_mut(4096) {
                page[0] = 1;
            }
            std::hint::black_box(&block);
            Response::text(200, format!("allocated {mb} MiB"))
        }
        "self" => {
            let id = objects::self_id();
            Response::text(200, format!("{}/{}", id.class, id.name))
        }
        "unique" => Response::text(200, objects::unique_id()),
        "call" => {
            let class = query.require("class")?;
            let name = query.require("name")?;
            let method = query.require("method")?;
            match objects::call(&class, &name, &method, &body) {
                Ok(result) => bytes_response(200, result),
                Err(e) => Response::text(502, format!("{e:?}")),
            }
        }
        "storage-error" => {
            let result = match query.require("what")?.as_str() {
                "key" => storage::put(&"k".repeat(3000), b"x"),
                "value" => storage::put("probe:big", &vec![b'v'; 200 * 1024]),
                "many" => {
                    let entries: Vec<(String, Vec<u8>)> = (0..200)
                        .map(|i| (format!("probe:many:{i:03}"), b"x".to_vec()))
                        .collect();
                    storage::put_many(&entries)
                }
                other => {
                    return Err(Response::text(
                        400,
                        format!("what must be key, value or many, not {other}"),
                    ));
                }
            };
            match result {
                Ok(()) => Response::text(200, "ok"),
                Err(e) => Response::text(200, format!("{e:?}")),
            }
        }
        other => Response::text(404, format!("unknown op: {other}")),
    })
}

/// A decimal number stored under `key` (0 when absent or unreadable).
fn read_number(key: &str) -> u64 {
    storage::get(key)
        .ok()
        .flatten()
        .and_then(|v| String::from_utf8(v).ok()?.trim().parse().ok())
        .unwrap_or(0)
}

/// Stores `key` = `value` (from the query, else the body).
fn put_from(query: &Query, body: Vec<u8>) -> Result<(), Response> {
    let key = query.require("key")?;
    let value = query.get("value").map(String::into_bytes).unwrap_or(body);
    storage::put(&key, &value).map_err(storage_failure)
}

/// Loops forever, without being optimised away.
fn spin() -> ! {
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

/// Runs one WebSocket text command; the reply to send, if any.
fn command(id: SocketId, text: &str) -> Option<String> {
    let (cmd, arg) = text.split_once(':').unwrap_or((text, ""));
    let reply = match cmd {
        "echo" => arg.to_string(),
        "broadcast" => {
            sockets::broadcast(&Frame::Text(arg.to_string()), None, &[]);
            return None;
        }
        "broadcast-tag" => {
            let (tag, x) = arg.split_once(':').unwrap_or((arg, ""));
            sockets::broadcast(&Frame::Text(x.to_string()), Some(tag), &[]);
            return None;
        }
        "send" => {
            let (to, x) = arg.split_once(':').unwrap_or((arg, ""));
            match to.parse::<SocketId>() {
                Ok(to) => ok_or_err(sockets::send(to, &Frame::Text(x.to_string()))),
                Err(_) => format!("err:bad socket id {to}"),
            }
        }
        "put" => match arg.split_once('=') {
            Some((k, v)) => ok_or_err(storage::put(k, v.as_bytes())),
            None => "err:put expects <k>=<v>".to_string(),
        },
        "get" => match storage::get(arg) {
            Ok(Some(v)) => String::from_utf8_lossy(&v).into_owned(),
            Ok(None) => "none".to_string(),
            Err(e) => format!("err:{e:?}"),
        },
        "trap" => {
            if let Err(e) = storage::put("trapped", b"yes") {
                log::error(&format!("trap: put failed: {e:?}"));
            }
            if let Err(e) = sockets::send(id, &Frame::Text("before-trap".to_string())) {
                log::error(&format!("trap: send failed: {e:?}"));
            }
            panic!("probe: trap requested");
        }
        "count" => count(),
        "list" => join_ids(&sockets::list((!arg.is_empty()).then_some(arg))),
        "tags" => match arg.parse::<SocketId>() {
            Ok(other) => match sockets::tags(other) {
                Ok(tags) => tags.join(","),
                Err(e) => format!("err:{e:?}"),
            },
            Err(_) => format!("err:bad socket id {arg}"),
        },
        "set-tags" => ok_or_err(sockets::set_tags(id, &split_list(arg))),
        "attach" => ok_or_err(sockets::set_attachment(id, Some(arg.as_bytes()))),
        "attachment" => match sockets::attachment(id) {
            Ok(Some(a)) => String::from_utf8_lossy(&a).into_owned(),
            Ok(None) => "none".to_string(),
            Err(e) => format!("err:{e:?}"),
        },
        "close" => {
            let (code, reason) = arg.split_once(':').unwrap_or((arg, ""));
            match code.parse::<u16>() {
                Ok(code) => match sockets::close(id, code, reason) {
                    Ok(()) => return None,
                    Err(e) => format!("err:{e:?}"),
                },
                Err(_) => format!("err:bad close code {code}"),
            }
        }
        "inits" => INITS.get().to_string(),
        "auto" => {
            let (request, response) = arg.split_once(':').unwrap_or((arg, ""));
            ok_or_err(sockets::set_auto_response(Some((request, response))))
        }
        "auto-ts" => match sockets::auto_response_timestamp(id) {
            Ok(Some(at)) => at.to_string(),
            Ok(None) => "none".to_string(),
            Err(e) => format!("err:{e:?}"),
        },
        "call" => {
            let mut parts = arg.splitn(4, ':');
            match (parts.next(), parts.next(), parts.next(), parts.next()) {
                (Some(class), Some(name), Some(method), payload) => {
                    match objects::call(class, name, method, payload.unwrap_or("").as_bytes()) {
                        Ok(result) => format!("ok:{}", String::from_utf8_lossy(&result)),
                        Err(e) => format!("err:{e:?}"),
                    }
                }
                _ => "err:call expects <class>:<name>:<method>:<payload>".to_string(),
            }
        }
        other => format!("unknown:{other}"),
    };
    Some(reply)
}

/// `count`: increments the storage counter and returns the new value (or an
/// `err:` reply).
fn count() -> String {
    let current = match storage::get("count") {
        Ok(Some(v)) => match std::str::from_utf8(&v)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
        {
            Some(n) => n,
            None => return "err:count is not a number".to_string(),
        },
        Ok(None) => 0,
        Err(e) => return format!("err:{e:?}"),
    };
    let next = current.saturating_add(1);
    match storage::put("count", next.to_string().as_bytes()) {
        Ok(()) => next.to_string(),
        Err(e) => format!("err:{e:?}"),
    }
}

/// `ok`, or `err:<Debug of the error>`.
fn ok_or_err<E: std::fmt::Debug>(result: Result<(), E>) -> String {
    match result {
        Ok(()) => "ok".to_string(),
        Err(e) => format!("err:{e:?}"),
    }
}

fn join_ids(ids: &[SocketId]) -> String {
    ids.iter()
        .map(|id| id.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Splits `a,b,c`, dropping empty parts.
fn split_list(list: &str) -> Vec<String> {
    list.split(',')
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

fn storage_failure(e: storage::StorageError) -> Response {
    Response::text(500, format!("{e:?}"))
}

/// Like `Response::text`, with arbitrary bytes.
fn bytes_response(status: u16, body: Vec<u8>) -> Response {
    Response {
        status,
        headers: vec![("content-type".into(), "application/octet-stream".into())],
        body,
    }
}

/// Decoded query parameters (first occurrence wins).
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(query: Option<&str>) -> Query {
        Query(
            query
                .unwrap_or("")
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (decode(k), decode(v))
                })
                .collect(),
        )
    }

    fn get(&self, name: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }

    /// A required parameter; a `400 missing <name>` response if absent.
    fn require(&self, name: &str) -> Result<String, Response> {
        self.get(name)
            .ok_or_else(|| Response::text(400, format!("missing {name}")))
    }
}

/// Form-urlencoding decode: `+` is a space, `%XX` a byte (kept literally when not
/// valid hex); invalid UTF-8 is replaced.
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                if let Some(b) = hex {
                    out.push(b);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

roomhost_sdk::export_object!(Probe);
