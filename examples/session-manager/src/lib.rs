//! # session-manager — expiring sessions swept by an alarm
//!
//! The `SessionManager` Durable Object of the usual introductions, done with
//! exact expiry: each object (one per name, e.g. per application or tenant)
//! keeps sessions with a time to live, and its **alarm** — one per object,
//! stored with its data, surviving restarts and eviction — wakes it at the
//! earliest pending expiry to delete what has expired.
//!
//! What it shows:
//!
//! * **Alarms.** Creating a session makes sure the alarm is set no later than
//!   the new session's expiry (`alarms::get`, then `alarms::set` if there is no
//!   alarm or it is later). `on_alarm` deletes every expired session, then sets
//!   the alarm at the next earliest expiry, if any session remains. So the alarm
//!   always points at the next thing to do, and an idle object sleeps until then.
//! * **Transactions.** Storing a session and moving the alarm happen in one
//!   transaction: a session is never stored without an alarm that will sweep it.
//!   A sweep that fails part-way keeps what it deleted (each deletion is valid on
//!   its own) and tries again later.
//! * **Paged storage.** Listing and sweeping walk the `session:` prefix in pages
//!   of 128 keys (`list` with `start_after`) and delete with `delete_many`
//!   (at most 128 keys per call), so neither is bounded by what fits in one call.
//!
//! Sessions are stored under `session:<id>` as
//! `{"created":ms,"expires":ms,"data":<the JSON body>}` (milliseconds since the
//! Unix epoch); the id is a fresh 64-hex-digit `objects::unique_id()`.
//!
//! ## HTTP
//!
//! The operation is the path after the object name (routed e.g. as
//! `/sessions/{name}/*`, that is `/sessions/<name>/sessions[/<id>]`; any route of
//! the form `.../{name}/*` works). Every answer is JSON except the empty `204`.
//!
//! | request | answer |
//! |---|---|
//! | `POST .../sessions[?ttl_ms=N]` with a JSON body | stores a session living `N` ms (default 86 400 000, one day); `201 {"session_id":..,"expires":ms}` with a `location` header |
//! | `GET .../sessions` | `200` JSON array of the ids of live sessions, in id order |
//! | `GET .../sessions/<id>` | `200` with the session's data, or `404` when there is no such session or it has expired (even if not yet swept) |
//! | `DELETE .../sessions/<id>` | `204` when it existed, `404` otherwise |
//!
//! A body that is not JSON, or a `ttl_ms` that is not a positive integer (or so
//! large that the expiry overflows a `u64`), answers `400 {"error":...}`; a session
//! too large for one stored value (128 KiB) `413`; other paths `404`, other
//! methods `405` (with `allow`); WebSocket upgrades `400`. Stored sessions that
//! cannot be read are reported in the log, left out of listings, and deleted by
//! the next sweep. The guest never panics on what clients send or what it finds
//! in storage.

use roomhost_sdk::storage::{self, ListOptions, StorageError};
use roomhost_sdk::{
    Object, Reply, Request, Response, alarms, log, now_ms, objects, percent_decode, query_param,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The storage prefix of sessions: `session:<id>`.
const PREFIX: &str = "session:";
/// Keys per `list` page and per `delete_many` call (the host's per-call limit).
const PAGE: u32 = 128;
/// The time to live when `ttl_ms` is not given: one day.
const DEFAULT_TTL_MS: u64 = 86_400_000;
/// When a sweep fails (storage unreadable), try again this much later.
const SWEEP_RETRY_MS: u64 = 10_000;

/// The session manager object.
struct SessionManager;

/// A stored session (field order is the stored order).
#[derive(Serialize, Deserialize)]
struct Session {
    created: u64,
    expires: u64,
    data: Value,
}

/// The answer to a create (field order is the wire order).
#[derive(Serialize)]
struct Created<'a> {
    session_id: &'a str,
    expires: u64,
}

/// The part of a stored session that listing and sweeping need.
#[derive(Deserialize)]
struct Expiry {
    expires: u64,
}

/// What a request asks for.
enum Target<'a> {
    /// `.../sessions`
    Collection,
    /// `.../sessions/<id>`
    Item(&'a str),
}

impl Object for SessionManager {
    fn on_request(request: Request) -> Reply {
        if request.websocket.is_some() {
            return error(400, "WebSockets are not supported here").into();
        }
        let Some(target) = target(&request.path) else {
            return error(
                404,
                "not found: use POST or GET .../sessions, GET or DELETE .../sessions/<id>",
            )
            .into();
        };
        match (target, request.method.as_str()) {
            (Target::Collection, "POST") => create(&request),
            (Target::Collection, "GET") => list_live(),
            (Target::Collection, _) => method_not_allowed("GET, POST"),
            (Target::Item(id), "GET") => read(id),
            (Target::Item(id), "DELETE") => delete(id),
            (Target::Item(_), _) => method_not_allowed("GET, DELETE"),
        }
        .into()
    }

    fn on_alarm(retry_count: u32) {
        if retry_count > 0 {
            log::info(&format!("sweep retried ({retry_count})"));
        }
        match sweep(now_ms()) {
            Ok((removed, next)) => {
                if removed > 0 {
                    log::debug(&format!("swept {removed} expired sessions"));
                }
                // Without a new alarm, the fired one is cleared when this returns.
                if let Some(at) = next {
                    alarms::set(at);
                }
            }
            Err(e) => {
                log::error(&format!("sweeping sessions: {e:?}; trying again later"));
                alarms::set(now_ms().saturating_add(SWEEP_RETRY_MS));
            }
        }
    }
}

roomhost_sdk::export_object!(SessionManager);

/// `POST .../sessions`: stores a session and makes sure the alarm will sweep it.
fn create(request: &Request) -> Response {
    let ttl_ms = match query_param(request.query.as_deref(), "ttl_ms") {
        None => DEFAULT_TTL_MS,
        Some(text) => match text.parse::<u64>() {
            Ok(ttl) if ttl > 0 => ttl,
            _ => return error(400, "ttl_ms must be a positive integer (milliseconds)"),
        },
    };
    let data = match serde_json::from_slice::<Value>(&request.body) {
        Ok(data) => data,
        Err(e) => return error(400, &format!("the body must be JSON: {e}")),
    };
    let created = now_ms();
    let Some(expires) = created.checked_add(ttl_ms) else {
        return error(400, "ttl_ms is too large");
    };
    let session = Session {
        created,
        expires,
        data,
    };
    let stored = match serde_json::to_vec(&session) {
        Ok(stored) => stored,
        Err(e) => {
            log::error(&format!("encoding a session: {e}"));
            return error(500, "could not encode the session");
        }
    };
    let id = objects::unique_id();
    if let Err(e) = storage::put(&key(&id), &stored) {
        return storage_error("storing the session", e);
    }
    // The alarm must fire by the earliest pending expiry; only move it earlier.
    match alarms::get() {
        Some(at) if at <= expires => {}
        _ => alarms::set(expires),
    }
    let created = json_text(&Created {
        session_id: &id,
        expires,
    });
    let mut response = Response::json(201, created);
    let location = format!("{}/{id}", request.path.trim_end_matches('/'));
    response.headers.push(("location".into(), location));
    response
}

/// `GET .../sessions`: the ids of live sessions.
fn list_live() -> Response {
    let now = now_ms();
    let mut ids = Vec::new();
    let walked = for_each_page(|page| {
        for (key, value) in page {
            if expiry(&key, &value).is_some_and(|expires| expires > now)
                && let Some(id) = key.strip_prefix(PREFIX)
            {
                ids.push(Value::String(id.to_string()));
            }
        }
        Ok(())
    });
    match walked {
        Ok(()) => Response::json(200, Value::Array(ids).to_string()),
        Err(e) => storage_error("listing sessions", e),
    }
}

/// `GET .../sessions/<id>`: the session's data while it lives.
fn read(id: &str) -> Response {
    if !is_session_id(id) {
        return no_such_session();
    }
    let stored = match storage::get(&key(id)) {
        Ok(Some(stored)) => stored,
        Ok(None) => return no_such_session(),
        Err(e) => return storage_error("reading the session", e),
    };
    match serde_json::from_slice::<Session>(&stored) {
        Ok(session) if session.expires > now_ms() => Response::json(200, session.data.to_string()),
        // Expired: gone for clients, deleted by the next sweep.
        Ok(_) => no_such_session(),
        Err(e) => {
            log::warn(&format!("session {id} is unreadable ({e})"));
            error(500, "the stored session is unreadable")
        }
    }
}

/// `DELETE .../sessions/<id>`. The alarm is left as it is: if it was set for
/// this session, it fires, finds nothing due, and moves on to the next expiry.
fn delete(id: &str) -> Response {
    if !is_session_id(id) {
        return no_such_session();
    }
    match storage::delete(&key(id)) {
        Ok(true) => Response {
            status: 204,
            headers: Vec::new(),
            body: Vec::new(),
        },
        Ok(false) => no_such_session(),
        Err(e) => storage_error("deleting the session", e),
    }
}

/// Deletes every session expired at `now` (and every unreadable one); returns
/// how many were deleted and the earliest expiry among those that remain.
fn sweep(now: u64) -> Result<(u32, Option<u64>), StorageError> {
    let mut removed = 0;
    let mut next: Option<u64> = None;
    for_each_page(|page| {
        let mut expired = Vec::new();
        for (key, value) in page {
            match expiry(&key, &value) {
                Some(expires) if expires > now => {
                    next = Some(next.map_or(expires, |n| n.min(expires)));
                }
                // Expired or unreadable.
                _ => expired.push(key),
            }
        }
        if !expired.is_empty() {
            // A page holds at most PAGE keys, within delete_many's limit.
            removed += storage::delete_many(&expired)?;
        }
        Ok(())
    })?;
    Ok((removed, next))
}

/// Calls `visit` with each page of stored sessions, in key order. Deleting keys
/// of the current page from `visit` is fine: the next page starts after its
/// last key.
fn for_each_page(
    mut visit: impl FnMut(Vec<(String, Vec<u8>)>) -> Result<(), StorageError>,
) -> Result<(), StorageError> {
    let mut after: Option<String> = None;
    loop {
        let page = storage::list(&ListOptions {
            prefix: Some(PREFIX.to_string()),
            start: None,
            start_after: after.take(),
            end: None,
            limit: Some(PAGE),
            reverse: false,
        })?;
        let full = page.len() >= PAGE as usize;
        after = page.last().map(|(key, _)| key.clone());
        visit(page)?;
        if !full || after.is_none() {
            return Ok(());
        }
    }
}

/// The expiry of a stored session; `None` (and a log line) if unreadable.
fn expiry(key: &str, value: &[u8]) -> Option<u64> {
    match serde_json::from_slice::<Expiry>(value) {
        Ok(e) => Some(e.expires),
        Err(e) => {
            log::warn(&format!("{key} is unreadable ({e})"));
            None
        }
    }
}

/// What the path asks for: `.../<name>/sessions` or `.../<name>/sessions/<id>`,
/// where `<name>` is this object's name.
fn target(path: &str) -> Option<Target<'_>> {
    let name = objects::self_id().name;
    let is_name = |segment: &str| percent_decode(segment).as_deref() == Some(name.as_str());
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    match segments.as_slice() {
        [.., owner, "sessions"] if is_name(owner) => Some(Target::Collection),
        [.., owner, "sessions", id] if is_name(owner) => Some(Target::Item(id)),
        _ => None,
    }
}

/// Ids are minted by `objects::unique_id`: 64 hex digits.
fn is_session_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

fn key(id: &str) -> String {
    format!("{PREFIX}{id}")
}

/// Encodes a value that cannot fail to encode (plain fields, string keys).
fn json_text(value: &impl Serialize) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "{}".into())
}

fn error(status: u16, message: &str) -> Response {
    Response::json(status, json!({ "error": message }).to_string())
}

fn no_such_session() -> Response {
    error(404, "no such session")
}

fn method_not_allowed(allow: &str) -> Response {
    let mut response = error(405, &format!("method not allowed (allowed: {allow})"));
    response.headers.push(("allow".into(), allow.into()));
    response
}

/// Answers a failed storage call: too large → 413, quota → 507, else 500.
fn storage_error(doing: &str, e: StorageError) -> Response {
    match e {
        StorageError::ValueTooLarge(limit) => error(
            413,
            &format!("the session is too large: at most {limit} bytes are stored per session"),
        ),
        StorageError::QuotaExceeded(quota) => error(
            507,
            &format!("this object's storage quota ({quota} bytes) is full"),
        ),
        other => {
            log::error(&format!("{doing}: {other:?}"));
            error(500, &format!("storage failed while {doing}"))
        }
    }
}
