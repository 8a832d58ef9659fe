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
//!   its own) and tries again later: `on_alarm` sets a new alarm and returns
//!   `Ok`, where an `Err` would undo the deletions and leave the retry to the
//!   host's backoff.
//! * **Paged storage.** Listing and sweeping walk the `session:` prefix in pages
//!   of 128 keys (`List::prefix(..).limit(128)`, then `.start_after(<last key>)`)
//!   and delete with `delete_many` (at most 128 keys per call), so neither is
//!   bounded by what fits in one call.
//! * **Errors.** Handlers return `roomhost_sdk::Result`: `?` and
//!   `Error::bad_request`/`Error::new` carry a status and a message, and
//!   `on_request` answers every error as JSON `{"error": message}` (the SDK's own
//!   answer would be text).
//! * **Testing without a host.** The tests at the end run the object in the
//!   SDK's in-memory host (`roomhost_sdk::testing::TestObject`): requests,
//!   eviction, and a clock that `advance` moves, firing the alarm.
//!
//! The object keeps nothing in memory: every request reads storage, so an
//! evicted object wakes with nothing to rebuild.
//!
//! Sessions are stored under `session:<id>` as
//! `{"created":ms,"expires":ms,"data":<the JSON body>}` (milliseconds since the
//! Unix epoch); the id is a fresh 64-hex-digit `objects::unique_id()`.
//!
//! ## HTTP
//!
//! The operation is the path after the object name (`Request::rest`; routed
//! e.g. as `/sessions/{name}/*`, that is `/sessions/<name>/sessions[/<id>]`; any
//! route of the form `.../{name}/*` works). Every answer is JSON except the empty
//! `204`.
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
//! too large for one stored value (128 KiB) `413`, one beyond the object's storage
//! quota `507`; other paths `404`, other
//! methods `405` (with `allow`); WebSocket upgrades `400`. Stored sessions that
//! cannot be read are reported in the log, left out of listings, and deleted by
//! the next sweep. The guest never panics on what clients send or what it finds
//! in storage.

use std::time::Duration;

use roomhost_sdk::storage::{self, List};
use roomhost_sdk::{
    Error, Object, Reply, Request, Response, Result, StorageError, alarms, log, now_ms, objects,
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
const SWEEP_RETRY: Duration = Duration::from_secs(10);

/// The session manager object. Its state is all in storage.
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

impl Object for SessionManager {
    fn init() -> Result<Self> {
        Ok(SessionManager)
    }

    fn on_request(&mut self, request: Request) -> Result<Reply> {
        // Errors become JSON answers here rather than the SDK's text ones.
        let response = route(&request).unwrap_or_else(error_response);
        Ok(response.into())
    }

    fn on_alarm(&mut self, retry_count: u32) -> Result<()> {
        if retry_count > 0 {
            log::info(format!("sweep retried ({retry_count})"));
        }
        match sweep(now_ms()) {
            Ok((removed, next)) => {
                if removed > 0 {
                    log::debug(format!("swept {removed} expired sessions"));
                }
                // Without a new alarm, the fired one is cleared when this returns.
                if let Some(at) = next {
                    alarms::set(at);
                }
            }
            // Not an `Err`: that would undo the deletions made so far. Keep
            // them, and come back later.
            Err(e) => {
                log::error(format!("sweeping sessions: {e:?}; trying again later"));
                alarms::set_in(SWEEP_RETRY);
            }
        }
        Ok(())
    }
}

roomhost_sdk::export_object!(SessionManager);

/// Dispatches a request on the path after the object's name:
/// `sessions` or `sessions/<id>`.
fn route(request: &Request) -> Result<Response> {
    if request.is_websocket() {
        return Err(Error::bad_request("WebSockets are not supported here"));
    }
    let path: Vec<&str> = request.rest().split('/').collect();
    match (path.as_slice(), request.method.as_str()) {
        (["sessions"], "POST") => create(request),
        (["sessions"], "GET") => list_live(),
        (["sessions"], _) => Ok(method_not_allowed("GET, POST")),
        (["sessions", id], "GET") => read(id),
        (["sessions", id], "DELETE") => delete(id),
        (["sessions", _], _) => Ok(method_not_allowed("GET, DELETE")),
        _ => Err(Error::not_found(
            "not found: use POST or GET .../sessions, GET or DELETE .../sessions/<id>",
        )),
    }
}

/// `POST .../sessions`: stores a session and makes sure the alarm will sweep it.
fn create(request: &Request) -> Result<Response> {
    let ttl_ms = match request.query("ttl_ms") {
        None => DEFAULT_TTL_MS,
        Some(text) => text
            .parse::<u64>()
            .ok()
            .filter(|&ttl| ttl > 0)
            .ok_or_else(|| {
                Error::bad_request("ttl_ms must be a positive integer (milliseconds)")
            })?,
    };
    let data: Value = serde_json::from_slice(&request.body)
        .map_err(|e| Error::bad_request(format!("the body must be JSON: {e}")))?;
    let created = now_ms();
    let expires = created
        .checked_add(ttl_ms)
        .ok_or_else(|| Error::bad_request("ttl_ms is too large"))?;
    // Encoded here rather than by `storage::put`, so that a failed write
    // keeps its `StorageError` (too large: 413).
    let stored = serde_json::to_vec(&Session {
        created,
        expires,
        data,
    })
    .map_err(|e| {
        log::error(format!("encoding a session: {e}"));
        Error::internal("could not encode the session")
    })?;
    let id = objects::unique_id();
    storage::put_bytes(&key(&id), &stored).map_err(|e| storage_error("storing the session", e))?;
    // The alarm must fire by the earliest pending expiry; only move it earlier.
    if alarms::get().is_none_or(|at| at > expires) {
        alarms::set(expires);
    }
    let location = format!("{}/{id}", request.path.trim_end_matches('/'));
    let created = Created {
        session_id: &id,
        expires,
    };
    Ok(Response::json(201, &created).with_header("location", &location))
}

/// `GET .../sessions`: the ids of live sessions.
fn list_live() -> Result<Response> {
    let now = now_ms();
    let mut ids = Vec::new();
    for_each_page(|page| {
        for (key, value) in page {
            if expiry(&key, &value).is_some_and(|expires| expires > now)
                && let Some(id) = key.strip_prefix(PREFIX)
            {
                ids.push(id.to_string());
            }
        }
        Ok(())
    })
    .map_err(|e| storage_error("listing sessions", e))?;
    Ok(Response::json(200, &ids))
}

/// `GET .../sessions/<id>`: the session's data while it lives.
fn read(id: &str) -> Result<Response> {
    if !is_session_id(id) {
        return Err(no_such_session());
    }
    let stored = storage::get_bytes(&key(id))
        .map_err(|e| storage_error("reading the session", e))?
        .ok_or_else(no_such_session)?;
    let session: Session = serde_json::from_slice(&stored).map_err(|e| {
        log::warn(format!("session {id} is unreadable ({e})"));
        Error::internal("the stored session is unreadable")
    })?;
    // Expired: gone for clients, deleted by the next sweep.
    if session.expires <= now_ms() {
        return Err(no_such_session());
    }
    Ok(Response::json(200, &session.data))
}

/// `DELETE .../sessions/<id>`. The alarm is left as it is: if it was set for
/// this session, it fires, finds nothing due, and moves on to the next expiry.
fn delete(id: &str) -> Result<Response> {
    if !is_session_id(id) {
        return Err(no_such_session());
    }
    let existed =
        storage::delete(&key(id)).map_err(|e| storage_error("deleting the session", e))?;
    if !existed {
        return Err(no_such_session());
    }
    Ok(Response {
        status: 204,
        headers: Vec::new(),
        body: Vec::new(),
    })
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
    let first = List::prefix(PREFIX).limit(PAGE);
    let mut list = first.clone();
    loop {
        let page = storage::list_bytes(&list)?;
        let full = page.len() >= PAGE as usize;
        let last = page.last().map(|(key, _)| key.clone());
        visit(page)?;
        match last {
            Some(last) if full => list = first.clone().start_after(&last),
            _ => return Ok(()),
        }
    }
}

/// The expiry of a stored session; `None` (and a log line) if unreadable.
fn expiry(key: &str, value: &[u8]) -> Option<u64> {
    match serde_json::from_slice::<Expiry>(value) {
        Ok(e) => Some(e.expires),
        Err(e) => {
            log::warn(format!("{key} is unreadable ({e})"));
            None
        }
    }
}

/// Ids are minted by `objects::unique_id`: 64 hex digits.
fn is_session_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

fn key(id: &str) -> String {
    format!("{PREFIX}{id}")
}

/// An error as this API answers it: `{"error": message}` with its status.
/// Every message is written for the client: failures are logged in detail
/// where they happen (`storage_error`, `read`, `create`).
fn error_response(e: Error) -> Response {
    Response::json(e.status(), &json!({ "error": e.message() }))
}

fn no_such_session() -> Error {
    Error::not_found("no such session")
}

/// `405`: a response rather than an `Error`, for its `allow` header.
fn method_not_allowed(allow: &str) -> Response {
    let message = format!("method not allowed (allowed: {allow})");
    error_response(Error::new(405, message)).with_header("allow", allow)
}

/// A failed storage call as an error: too large → 413, quota → 507, else a
/// logged 500.
fn storage_error(doing: &str, e: StorageError) -> Error {
    match e {
        StorageError::ValueTooLarge(limit) => Error::new(
            413,
            format!("the session is too large: at most {limit} bytes are stored per session"),
        ),
        StorageError::QuotaExceeded(quota) => Error::new(
            507,
            format!("this object's storage quota ({quota} bytes) is full"),
        ),
        other => {
            log::error(format!("{doing}: {other:?}"));
            Error::internal(format!("storage failed while {doing}"))
        }
    }
}

/// The object in the SDK's in-memory host: no `roomhost`, no wasm, and a
/// clock that moves only when a test moves it (`advance` delivers the alarms
/// that fall due on the way).
#[cfg(test)]
mod tests {
    use std::time::Duration;

    use roomhost_sdk::Response;
    use roomhost_sdk::testing::{self, TestObject};
    use serde_json::{Value, json};

    use super::{DEFAULT_TTL_MS, SessionManager};

    const SESSIONS: &str = "/sessions/shop/sessions";

    /// Object `shop`, routed as the README shows (`/sessions/{name}/*`).
    fn shop() -> TestObject<SessionManager> {
        TestObject::new("session-manager", "shop")
    }

    fn body(response: &Response) -> Value {
        serde_json::from_slice(&response.body).expect("a JSON answer")
    }

    /// Creates a session; returns its id and expiry.
    fn create(shop: &mut TestObject<SessionManager>, query: &str, data: Value) -> (String, u64) {
        let response = shop.post(&format!("{SESSIONS}{query}"), data.to_string().as_bytes());
        assert_eq!(response.status, 201, "{}", response.body_text());
        let created = body(&response);
        let id = created["session_id"].as_str().expect("an id").to_string();
        (id, created["expires"].as_u64().expect("an expiry"))
    }

    fn live_ids(shop: &mut TestObject<SessionManager>) -> Value {
        let response = shop.get(SESSIONS);
        assert_eq!(response.status, 200, "{}", response.body_text());
        body(&response)
    }

    fn status(shop: &mut TestObject<SessionManager>, method: &str, path: &str) -> u16 {
        shop.request(testing::request(method, path)).status
    }

    #[test]
    fn a_session_is_stored_read_back_and_listed() {
        let mut shop = shop();
        let data = json!({"user": "ann", "cart": [1, 2]});
        let response = shop.post(SESSIONS, data.to_string().as_bytes());
        assert_eq!(response.status, 201);
        let created = body(&response);
        let id = created["session_id"].as_str().expect("an id");
        assert_eq!(id.len(), 64);
        let expires = testing::now_ms() + DEFAULT_TTL_MS;
        assert_eq!(created["expires"], expires, "a day by default");
        let location = format!("{SESSIONS}/{id}");
        assert!(
            response
                .headers
                .contains(&("location".into(), location.clone()))
        );

        let read = shop.get(&location);
        assert_eq!((read.status, body(&read)), (200, data));
        assert_eq!(live_ids(&mut shop), json!([id]));
        // Stored as documented, with the alarm at its expiry.
        let stored: Value = shop.stored(&format!("session:{id}")).expect("stored");
        assert_eq!(stored["expires"], expires);
        assert_eq!(shop.alarm(), Some(expires));
    }

    #[test]
    fn the_alarm_sweeps_each_session_at_its_expiry() {
        let mut shop = shop();
        let (day, day_expires) = create(&mut shop, "", json!("a day"));
        let (second, second_expires) = create(&mut shop, "?ttl_ms=1000", json!("a second"));
        assert_eq!(shop.alarm(), Some(second_expires), "moved earlier");
        create(&mut shop, "?ttl_ms=5000", json!("five seconds"));
        assert_eq!(shop.alarm(), Some(second_expires), "not moved later");

        shop.advance(Duration::from_millis(999));
        assert_eq!(
            status(&mut shop, "GET", &format!("{SESSIONS}/{second}")),
            200
        );
        // At its expiry the session is gone for clients, and the alarm
        // deletes it (a stored session would answer DELETE with 204).
        shop.advance(Duration::from_millis(1));
        assert_eq!(
            status(&mut shop, "GET", &format!("{SESSIONS}/{second}")),
            404
        );
        assert_eq!(
            status(&mut shop, "DELETE", &format!("{SESSIONS}/{second}")),
            404
        );
        assert!(!shop.storage().contains_key(&format!("session:{second}")));
        assert_eq!(live_ids(&mut shop).as_array().map(Vec::len), Some(2));

        // The alarm moves on from expiry to expiry, and stops with the last.
        shop.advance(Duration::from_secs(5));
        assert_eq!(live_ids(&mut shop), json!([day]));
        assert_eq!(shop.alarm(), Some(day_expires));
        assert!(shop.fire_alarm());
        assert!(shop.storage().is_empty());
        assert_eq!(shop.alarm(), None, "nothing left to sweep");
    }

    #[test]
    fn sessions_and_their_alarm_survive_eviction() {
        let mut shop = shop();
        let (id, _) = create(&mut shop, "?ttl_ms=60000", json!({"k": "v"}));
        shop.evict();
        // A new instance reads the session from storage.
        assert_eq!(
            body(&shop.get(&format!("{SESSIONS}/{id}"))),
            json!({"k": "v"})
        );
        assert_eq!(shop.instances(), 2);
        // Evicted again, the object is woken by its alarm alone.
        shop.evict();
        shop.advance(Duration::from_secs(60));
        assert_eq!(shop.instances(), 3);
        assert!(shop.storage().is_empty(), "swept");
    }

    #[test]
    fn a_sweep_walks_more_than_one_page() {
        let mut shop = shop();
        for i in 0..300 {
            create(&mut shop, "?ttl_ms=1000", json!(i));
        }
        let (kept, _) = create(&mut shop, "?ttl_ms=60000", json!("kept"));
        assert_eq!(live_ids(&mut shop).as_array().map(Vec::len), Some(301));
        shop.advance(Duration::from_secs(1));
        assert_eq!(shop.storage().len(), 1, "300 swept, over three pages");
        assert_eq!(live_ids(&mut shop), json!([kept]));
    }

    #[test]
    fn bad_requests_are_json_errors() {
        let mut shop = shop();
        for (method, path, body_text, expected) in [
            ("POST", SESSIONS.to_string(), "{not json", 400),
            ("POST", format!("{SESSIONS}?ttl_ms=0"), "{}", 400),
            ("POST", format!("{SESSIONS}?ttl_ms=abc"), "{}", 400),
            ("POST", format!("{SESSIONS}?ttl_ms={}", u64::MAX), "{}", 400),
            ("GET", format!("{SESSIONS}/not-an-id"), "", 404),
            ("GET", "/sessions/shop/nope".to_string(), "", 404),
        ] {
            let mut request = testing::request(method, &path);
            request.body = body_text.as_bytes().to_vec();
            let response = shop.request(request);
            assert_eq!(response.status, expected, "{method} {path}");
            assert!(body(&response)["error"].is_string(), "{method} {path}");
        }
        let response = shop.request(testing::request("PUT", SESSIONS));
        assert_eq!(response.status, 405);
        assert!(
            response
                .headers
                .contains(&("allow".into(), "GET, POST".into()))
        );
        let refused = shop
            .try_connect_with(testing::request("GET", SESSIONS))
            .expect_err("no WebSockets");
        assert_eq!(refused.status, 400);
        assert!(shop.storage().is_empty(), "nothing stored");
    }

    #[test]
    fn an_unreadable_session_is_left_out_and_swept() {
        let mut shop = shop();
        let broken = "0".repeat(64);
        // Data an older version (or a bug) left behind.
        shop.seed(&format!("session:{broken}"), "not a session");
        assert_eq!(live_ids(&mut shop), json!([]));
        assert_eq!(
            status(&mut shop, "GET", &format!("{SESSIONS}/{broken}")),
            500
        );
        assert!(
            shop.logs()
                .iter()
                .any(|l| l.starts_with("WARN") && l.contains(&broken))
        );
        // The next sweep deletes it with the expired ones.
        create(&mut shop, "?ttl_ms=10", json!(null));
        shop.advance(Duration::from_millis(10));
        assert!(shop.storage().is_empty());
        assert!(shop.traps().is_empty(), "it never panics");
    }
}
