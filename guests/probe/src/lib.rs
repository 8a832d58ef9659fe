//! # probe — a test object that pokes at the host
//!
//! The host's integration tests load this component (class `probe` in their
//! configuration) and drive it over HTTP, WebSockets and object calls to check
//! what the host guarantees: transactions, trap rollback, the output gate,
//! socket tags and attachments, limits, and calls between objects. Every command
//! is listed below; there is nothing else.
//!
//! The only in-memory state is the `inits` field `init` sets: how many times
//! `init` ran in the current instance (the SDK builds the state anew each time
//! `init` runs, so a live instance answers 1, and a new one — after a trap, an
//! eviction or a deploy — starts again at 1); everything else is in storage or
//! with the host.
//!
//! ## HTTP
//!
//! Any path works; the operation is the **last path segment**
//! (`/anything/<name>/put` → `put`). Query parameters are
//! `application/x-www-form-urlencoded` (`Request::query`): `%XX` escapes are
//! decoded and `+` is a space (a value whose escapes are not UTF-8 is kept as
//! sent); the first occurrence of a parameter wins. A missing required parameter answers `400 missing <param>`; a storage
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
//! | `capabilities` | optional `port` | `200` with one line per thing a guest must not be able to do, each `<what>: denied (<error>)` or `<what>: ALLOWED (<what it got>)`: read `/etc/hostname`, list `/`, create a file, connect to 127.0.0.1:`port` over TCP, send a UDP datagram, resolve `localhost`, read stdin, and the environment's variable names (`env: [...]`) |
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
//! | `id` | | this socket's id |
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

use std::fmt::Debug;
use std::str::FromStr;
use std::time::Duration;

use roomhost_sdk::storage::{self, List};
use roomhost_sdk::{
    Error, Frame, Object, Reply, Request, Response, Result, Socket, SocketId, StorageError, accept,
    alarms, log, now_ms, objects, sockets,
};

/// The probe object.
struct Probe {
    /// How many times `init` ran in this instance.
    inits: u64,
}

/// Why an HTTP operation did not answer `Ok`.
enum Failure {
    /// The request is wrong (`400 missing key`): answered as the SDK answers
    /// an [`Error`].
    Request(Error),
    /// A storage call failed: `500` with the `Debug` of the error (an `Error`
    /// with a 5xx status would answer `500 internal error`).
    Storage(StorageError),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        Failure::Request(e)
    }
}

impl From<StorageError> for Failure {
    fn from(e: StorageError) -> Failure {
        Failure::Storage(e)
    }
}

impl Object for Probe {
    fn init() -> Result<Self> {
        Ok(Probe { inits: 1 })
    }

    fn on_request(&mut self, request: Request) -> Result<Reply> {
        if request.is_websocket() {
            let tags = request.query("tags").unwrap_or_default();
            return Ok(accept(&split_list(&tags)));
        }
        let op = request
            .path
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or("");
        match self.http(op, &request) {
            Ok(response) => Ok(response.into()),
            Err(Failure::Storage(e)) => Ok(Response::text(500, format!("{e:?}")).into()),
            Err(Failure::Request(e)) => Err(e),
        }
    }

    fn on_socket_message(&mut self, socket: Socket, frame: Frame) -> Result<()> {
        match &frame {
            // Binary frames are echoed.
            Frame::Binary(_) => socket.send(&frame)?,
            Frame::Text(text) => {
                if let Some(reply) = self.command(socket, text) {
                    socket.send_text(reply)?;
                }
            }
        }
        Ok(())
    }

    fn on_socket_close(&mut self, socket: Socket, code: u16, reason: String) -> Result<()> {
        let key = format!("closed:{}", socket.id());
        storage::put_bytes(&key, format!("{code}:{reason}").as_bytes())?;
        Ok(())
    }

    fn on_alarm(&mut self, retry_count: u32) -> Result<()> {
        if u64::from(retry_count) < read_number("alarm-fail-until") {
            panic!("probe: alarm trap requested (retry {retry_count})");
        }
        // Storage failures are logged, not returned: an `Err` would fail the
        // delivery, and only `alarm-fail-until` may do that.
        let mut log_line = storage::get_bytes("alarm-log")
            .ok()
            .flatten()
            .map(|v| lossy(&v))
            .unwrap_or_default();
        log_line.push_str(&format!("{retry_count}@{};", now_ms()));
        if let Err(e) = storage::put_bytes("alarm-log", log_line.as_bytes()) {
            log::error(format!("recording the alarm: {e:?}"));
        }
        let rearm = read_number("alarm-rearm-ms");
        if rearm > 0 {
            alarms::set_in(Duration::from_millis(rearm));
        }
        Ok(())
    }

    fn on_call(&mut self, method: &str, payload: Vec<u8>) -> Result<Vec<u8>> {
        // The caller sees an `Err`'s message as `CallError::Rejected(message)`.
        let text = lossy(&payload);
        match method {
            "echo" => Ok(payload),
            "trap" => panic!("probe: trap requested"),
            "put" => {
                let (k, v) = text
                    .split_once('=')
                    .ok_or_else(|| Error::bad_request("probe: put expects k=v"))?;
                storage::put_bytes(k, v.as_bytes()).map_err(debug)?;
                Ok(b"ok".to_vec())
            }
            "get" => Ok(storage::get_bytes(&text)
                .map_err(debug)?
                .unwrap_or_default()),
            "call" => match split_call(&text) {
                Some((class, name, method, payload)) => {
                    objects::call(class, name, method, payload.as_bytes()).map_err(debug)
                }
                None => Err(Error::bad_request(
                    "probe: call expects class:name:method:payload",
                )),
            },
            "fail" => Err(Error::internal("probe: asked to fail")),
            _ => Err(Error::not_found(format!("no such method: {method}"))),
        }
    }
}

roomhost_sdk::export_object!(Probe);

#[cfg(test)]
mod conformance;

impl Probe {
    /// Runs one HTTP operation.
    fn http(&self, op: &str, request: &Request) -> Result<Response, Failure> {
        Ok(match op {
            "client-ip" => Response::text(200, request.client_ip.as_str()),
            "get" => match storage::get_bytes(&required(request, "key")?)? {
                Some(value) => bytes_response(value),
                None => Response::text(404, "not found"),
            },
            "put" => {
                put_from(request)?;
                Response::text(200, "ok")
            }
            "put-then-trap" => {
                put_from(request)?;
                panic!("probe: trap requested");
            }
            "delete" => {
                let existed = storage::delete(&required(request, "key")?)?;
                Response::text(200, existed.to_string())
            }
            "list" => {
                let mut list = List::all();
                if let Some(prefix) = request.query("prefix") {
                    list = list.with_prefix(&prefix);
                }
                if let Some(start) = request.query("start") {
                    list = list.start(&start);
                }
                if let Some(after) = request.query("start-after") {
                    list = list.start_after(&after);
                }
                if let Some(end) = request.query("end") {
                    list = list.end(&end);
                }
                if let Some(limit) = request.query("limit") {
                    list = list.limit(parse(&limit, "limit must be a u32")?);
                }
                if request.query("reverse").as_deref() == Some("true") {
                    list = list.reverse();
                }
                pairs_json(storage::list_bytes(&list)?)
            }
            "get-many" => pairs_json(storage::get_many(&list_param(request, "keys")?)?),
            "put-many" => {
                // keys=a,b&values=1,2
                let keys = list_param(request, "keys")?;
                let values = list_param(request, "values")?;
                let entries: Vec<(String, Vec<u8>)> = keys
                    .into_iter()
                    .zip(values.into_iter().map(String::into_bytes))
                    .collect();
                storage::put_many(&entries)?;
                Response::text(200, "ok")
            }
            "delete-many" => {
                let existed = storage::delete_many(&list_param(request, "keys")?)?;
                Response::text(200, existed.to_string())
            }
            "delete-all" => {
                storage::delete_all()?;
                Response::text(200, "ok")
            }
            "inits" => Response::text(200, self.inits.to_string()),
            "alarm-set" | "alarm-set-then-trap" => {
                let in_ms: u64 = parse(&required(request, "in")?, "in must be a number of ms")?;
                alarms::set_in(Duration::from_millis(in_ms));
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
                let mb: usize = parse(&required(request, "mb")?, "mb must be a number")?;
                let bytes = mb
                    .checked_mul(1 << 20)
                    .ok_or_else(|| Error::bad_request("mb is too large"))?;
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
            "capabilities" => Response::text(200, capabilities(request.query("port").as_deref())),
            "call" => {
                let class = required(request, "class")?;
                let name = required(request, "name")?;
                let method = required(request, "method")?;
                match objects::call(&class, &name, &method, &request.body) {
                    Ok(result) => bytes_response(result),
                    Err(e) => Response::text(502, format!("{e:?}")),
                }
            }
            "storage-error" => {
                let result = match required(request, "what")?.as_str() {
                    "key" => storage::put_bytes(&"k".repeat(3000), b"x"),
                    "value" => storage::put_bytes("probe:big", &vec![b'v'; 200 * 1024]),
                    "many" => {
                        let entries: Vec<(String, Vec<u8>)> = (0..200)
                            .map(|i| (format!("probe:many:{i:03}"), b"x".to_vec()))
                            .collect();
                        storage::put_many(&entries)
                    }
                    other => {
                        return Err(Error::bad_request(format!(
                            "what must be key, value or many, not {other}"
                        ))
                        .into());
                    }
                };
                match result {
                    Ok(()) => Response::text(200, "ok"),
                    Err(e) => Response::text(200, format!("{e:?}")),
                }
            }
            other => return Err(Error::not_found(format!("unknown op: {other}")).into()),
        })
    }

    /// Runs one WebSocket text command; the reply to send, if any.
    fn command(&self, socket: Socket, text: &str) -> Option<String> {
        let (cmd, arg) = text.split_once(':').unwrap_or((text, ""));
        let reply = match cmd {
            "id" => socket.id().to_string(),
            "echo" => arg.to_string(),
            "broadcast" => {
                sockets::broadcast_text(arg, None, &[]);
                return None;
            }
            "broadcast-tag" => {
                let (tag, x) = arg.split_once(':').unwrap_or((arg, ""));
                sockets::broadcast_text(x, Some(tag), &[]);
                return None;
            }
            "send" => {
                let (to, x) = arg.split_once(':').unwrap_or((arg, ""));
                match to.parse::<SocketId>() {
                    Ok(to) => ok_or_err(Socket::from_id(to).send_text(x)),
                    Err(_) => format!("err:bad socket id {to}"),
                }
            }
            "put" => match arg.split_once('=') {
                Some((k, v)) => ok_or_err(storage::put_bytes(k, v.as_bytes())),
                None => "err:put expects <k>=<v>".to_string(),
            },
            "get" => match storage::get_bytes(arg) {
                Ok(Some(v)) => lossy(&v),
                Ok(None) => "none".to_string(),
                Err(e) => format!("err:{e:?}"),
            },
            "trap" => {
                if let Err(e) = storage::put_bytes("trapped", b"yes") {
                    log::error(format!("trap: put failed: {e:?}"));
                }
                if let Err(e) = socket.send_text("before-trap") {
                    log::error(format!("trap: send failed: {e:?}"));
                }
                panic!("probe: trap requested");
            }
            "count" => count(),
            "list" => sockets::list((!arg.is_empty()).then_some(arg))
                .iter()
                .map(|s| s.id().to_string())
                .collect::<Vec<_>>()
                .join(","),
            "tags" => match arg.parse::<SocketId>() {
                Ok(other) => match Socket::from_id(other).tags() {
                    Ok(tags) => tags.join(","),
                    Err(e) => format!("err:{e:?}"),
                },
                Err(_) => format!("err:bad socket id {arg}"),
            },
            "set-tags" => ok_or_err(socket.set_tags(&split_list(arg))),
            "attach" => ok_or_err(socket.set_attachment_bytes(Some(arg.as_bytes()))),
            "attachment" => match socket.attachment_bytes() {
                Ok(Some(a)) => lossy(&a),
                Ok(None) => "none".to_string(),
                Err(e) => format!("err:{e:?}"),
            },
            "close" => {
                let (code, reason) = arg.split_once(':').unwrap_or((arg, ""));
                match code.parse::<u16>() {
                    Ok(code) => match socket.close(code, reason) {
                        Ok(()) => return None,
                        Err(e) => format!("err:{e:?}"),
                    },
                    Err(_) => format!("err:bad close code {code}"),
                }
            }
            "inits" => self.inits.to_string(),
            "auto" => {
                let (request, response) = arg.split_once(':').unwrap_or((arg, ""));
                ok_or_err(sockets::set_auto_response(Some((request, response))))
            }
            "auto-ts" => match socket.auto_response_timestamp() {
                Ok(Some(at)) => at.to_string(),
                Ok(None) => "none".to_string(),
                Err(e) => format!("err:{e:?}"),
            },
            "call" => match split_call(arg) {
                Some((class, name, method, payload)) => {
                    match objects::call(class, name, method, payload.as_bytes()) {
                        Ok(result) => format!("ok:{}", lossy(&result)),
                        Err(e) => format!("err:{e:?}"),
                    }
                }
                None => "err:call expects <class>:<name>:<method>:<payload>".to_string(),
            },
            other => format!("unknown:{other}"),
        };
        Some(reply)
    }
}

/// A required query parameter; `400 missing <name>` if absent.
fn required(request: &Request, name: &str) -> Result<String> {
    request
        .query(name)
        .ok_or_else(|| Error::bad_request(format!("missing {name}")))
}

/// `text` parsed as a `T`; `400 <complaint>` if it does not parse.
fn parse<T: FromStr>(text: &str, complaint: &str) -> Result<T> {
    text.parse().map_err(|_| Error::bad_request(complaint))
}

/// A required comma-separated list parameter (empty parts dropped).
fn list_param(request: &Request, name: &str) -> Result<Vec<String>> {
    let list = required(request, name)?;
    Ok(split_list(&list).into_iter().map(str::to_string).collect())
}

/// Stores `key` = `value` (from the query, else the body).
fn put_from(request: &Request) -> Result<(), Failure> {
    let key = required(request, "key")?;
    let value = match request.query("value") {
        Some(value) => value.into_bytes(),
        None => request.body.clone(),
    };
    Ok(storage::put_bytes(&key, &value)?)
}

/// A decimal number stored under `key` (0 when absent or unreadable).
fn read_number(key: &str) -> u64 {
    storage::get_bytes(key)
        .ok()
        .flatten()
        .and_then(|v| String::from_utf8(v).ok()?.trim().parse().ok())
        .unwrap_or(0)
}

/// Loops forever, without being optimised away.
fn spin() -> ! {
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

/// `count`: increments the storage counter and returns the new value (or an
/// `err:` reply).
fn count() -> String {
    let current = match storage::get_bytes("count") {
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
    match storage::put_bytes("count", next.to_string().as_bytes()) {
        Ok(()) => next.to_string(),
        Err(e) => format!("err:{e:?}"),
    }
}

/// `class:name:method:payload` (the payload may contain `:`, and may be
/// missing).
fn split_call(text: &str) -> Option<(&str, &str, &str, &str)> {
    let mut parts = text.splitn(4, ':');
    Some((
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next().unwrap_or(""),
    ))
}

/// `ok`, or `err:<Debug of the error>`.
fn ok_or_err<E: Debug>(result: Result<(), E>) -> String {
    match result {
        Ok(()) => "ok".to_string(),
        Err(e) => format!("err:{e:?}"),
    }
}

/// An error whose message is the `Debug` of a host error
/// (`StorageError::KeyTooLarge(2048)`, `CallError::Cycle`).
fn debug(e: impl Debug) -> Error {
    Error::internal(format!("{e:?}"))
}

/// Splits `a,b,c`, dropping empty parts.
fn split_list(list: &str) -> Vec<&str> {
    list.split(',').filter(|t| !t.is_empty()).collect()
}

/// Bytes as (lossy UTF-8) text.
fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `200` with key/value pairs as a JSON array of `[key, value]` (values as
/// lossy UTF-8), as `list` and `get-many` answer.
fn pairs_json(entries: Vec<(String, Vec<u8>)>) -> Response {
    let pairs: Vec<(String, String)> = entries.into_iter().map(|(k, v)| (k, lossy(&v))).collect();
    Response::json(200, &pairs)
}

/// `200` with arbitrary bytes.
fn bytes_response(body: Vec<u8>) -> Response {
    Response {
        status: 200,
        headers: vec![("content-type".into(), "application/octet-stream".into())],
        body,
    }
}

/// Tries what a guest must not be able to do (files, network, stdin) and
/// lists the environment it sees; one line each.
fn capabilities(port: Option<&str>) -> String {
    fn line<T: std::fmt::Debug, E: std::fmt::Display>(what: &str, r: Result<T, E>) -> String {
        match r {
            Ok(got) => format!("{what}: ALLOWED ({got:?})"),
            Err(e) => format!("{what}: denied ({e})"),
        }
    }
    let port = port.unwrap_or("80");
    let mut stdin = String::new();
    let mut env: Vec<String> = std::env::vars().map(|(k, _)| k).collect();
    env.sort();
    [
        line(
            "read /etc/hostname",
            std::fs::read_to_string("/etc/hostname"),
        ),
        line(
            "list /",
            std::fs::read_dir("/").map(|d| d.filter_map(|e| e.ok()).count()),
        ),
        line("create a file", std::fs::write("probe-was-here", b"x")),
        line(
            "tcp connect",
            std::net::TcpStream::connect(format!("127.0.0.1:{port}")).map(|_| "connected"),
        ),
        line(
            "udp send",
            std::net::UdpSocket::bind("127.0.0.1:0")
                .and_then(|s| s.send_to(b"x", format!("127.0.0.1:{port}"))),
        ),
        line(
            "resolve localhost",
            std::net::ToSocketAddrs::to_socket_addrs("localhost:80").map(|a| a.count()),
        ),
        line(
            "read stdin",
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut stdin)
                .map(|n| (n, stdin.clone()))
                .and_then(|(n, text)| {
                    if n == 0 {
                        Err(std::io::Error::other("end of input at once"))
                    } else {
                        Ok(text)
                    }
                }),
        ),
        format!("env: {env:?}"),
    ]
    .join("\n")
}
