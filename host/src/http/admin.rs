//! The admin API, under `/admin/` on the host's listener (or on its own with
//! `admin_listen`). Every request needs `Authorization: Bearer <token>`; a
//! missing or wrong token gets 401 and nothing else — not even whether the
//! path exists.
//!
//! - `GET /admin/classes` — classes, their versions, the active one, and the
//!   live and hibernated objects on each.
//! - `PUT /admin/classes/{class}[?canary=N]` — the body is a component:
//!   deploys it as the class's new version (a new class too). Header
//!   `x-roomhost-deployed-by` names who deployed it.
//! - `POST /admin/classes/{class}/rollback[?to=VERSION]` — back to the
//!   previous version, or to a named one; ends a canary.
//! - `POST /admin/classes/{class}/promote` — a canary's version serves all.
//! - `GET /admin/objects[?class=C&state=live|hibernated|stored&after=CURSOR&limit=N]`
//!   — a page of objects (default 100, at most 1000) and the cursor of the
//!   next page (`next`, absent on the last).
//! - `GET /admin/objects/{class}/{name}[?key=K&limit=N&max_value=N]` — one
//!   object: its keys (values cut to `max_value` bytes, or `key` in full),
//!   sockets (tags, attachment, peer, age), alarm and recent traps. Names are
//!   percent-encoded in paths; an unknown class or object is a 404.
//! - `GET /admin/objects/{class}/{name}/export` — its keys as JSON lines.
//! - `POST /admin/objects/{class}/{name}/import[?overwrite=1]` — JSON lines
//!   in, one transaction run by the object's actor; 409 if a key exists.
//! - `POST /admin/objects/{class}/{name}/evict` — drop the object's live
//!   instance; its sockets stay (the next event wakes it).
//! - `DELETE /admin/objects/{class}/{name}` — close its sockets with 1012,
//!   delete its keys and alarm (header `x-roomhost-deleted-by`: who, logged).
//! - `GET /admin/backup` — a consistent snapshot of the database as a redb
//!   file (streamed; `roomhost serve --data FILE` opens it).
//!
//! Answers are JSON; errors are `{"error": "..."}` with the whole cause.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Method, Request as HttpRequest, Response as HttpResponse, StatusCode};

use super::{Body, boxed};
use crate::config::Config;
use crate::error::{AdminError, ComponentError, Error, EventError, Report};
use crate::ids::ObjectId;
use crate::objects::Runtime;
use crate::objects::admin::{export_line, parse_import};
use crate::objects::inventory::{self, Filter};

type Resp = HttpResponse<Full<Bytes>>;

/// The environment variable that can hold the admin token.
pub const TOKEN_ENV: &str = "ROOMHOST_ADMIN_TOKEN";

/// The file, beside the database, that holds a generated token.
pub fn token_file(data: &Path) -> PathBuf {
    let dir = match data.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    dir.join("admin.token")
}

/// The bearer token the admin API wants.
pub struct AdminToken(String);

impl AdminToken {
    /// A token no request matches (a host that serves no admin API).
    pub(crate) fn unusable() -> AdminToken {
        AdminToken(String::new())
    }

    /// The token from `admin_token` in the config, else from
    /// `ROOMHOST_ADMIN_TOKEN`, else from the token file beside the database
    /// (created with a fresh random token, mode 0600, the first time).
    pub fn resolve(config: &Config) -> Result<AdminToken, Error> {
        if let Some(t) = config.admin_token.as_deref().filter(|t| !t.is_empty()) {
            return Ok(AdminToken(t.to_string()));
        }
        if let Ok(t) = std::env::var(TOKEN_ENV)
            && !t.trim().is_empty()
        {
            return Ok(AdminToken(t.trim().to_string()));
        }
        let file = token_file(&config.data);
        let io = |context: String| move |source| Error::Io { context, source };
        match std::fs::read_to_string(&file) {
            Ok(t) if !t.trim().is_empty() => {
                tracing::info!("admin token: {} (generated earlier)", file.display());
                return Ok(AdminToken(t.trim().to_string()));
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(io(format!(
                    "cannot read the admin token {}",
                    file.display()
                ))(e));
            }
        }
        let mut raw = [0u8; 32];
        getrandom::fill(&mut raw).map_err(|e| Error::Io {
            context: "cannot generate the admin token".into(),
            source: std::io::Error::other(e),
        })?;
        let token: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir).map_err(io(format!("cannot create {}", dir.display())))?;
        }
        write_private(&file, &token).map_err(io(format!(
            "cannot write the admin token {}",
            file.display()
        )))?;
        tracing::info!("admin token generated: {} (mode 0600)", file.display());
        Ok(AdminToken(token))
    }

    /// True when the request carries this token (compared in constant time).
    fn admits(&self, req: &HttpRequest<Incoming>) -> bool {
        if self.0.is_empty() {
            return false;
        }
        let Some(given) = req
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        else {
            return false;
        };
        constant_time_eq(given.trim().as_bytes(), self.0.as_bytes())
    }
}

/// Compares without returning early at the first difference (a wrong token
/// takes as long as a right one of the same length).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a
        .iter()
        .zip(b)
        .fold(0u8, |acc, (x, y)| std::hint::black_box(acc | (x ^ y)));
    diff == 0
}

#[cfg(unix)]
fn write_private(file: &Path, token: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)?;
    f.write_all(token.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()
}

#[cfg(not(unix))]
fn write_private(file: &Path, token: &str) -> std::io::Result<()> {
    std::fs::write(file, format!("{token}\n"))
}

fn json(status: StatusCode, body: &impl serde::Serialize) -> Resp {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut r = HttpResponse::new(Full::new(Bytes::from(bytes)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> Resp {
    json(status, &serde_json::json!({ "error": message.to_string() }))
}

/// The status for a refused admin operation.
fn refused(e: &ComponentError) -> Resp {
    let status = match e {
        ComponentError::NoSuchClass(_) | ComponentError::NoSuchVersion { .. } => {
            StatusCode::NOT_FOUND
        }
        ComponentError::NoPreviousVersion(_) | ComponentError::NoCanary(_) => StatusCode::CONFLICT,
        ComponentError::NotAComponent { .. }
        | ComponentError::Invalid { .. }
        | ComponentError::Trial { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, Report(e))
}

/// One query parameter's value.
fn query_param(req: &HttpRequest<Incoming>, key: &str) -> Option<String> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| {
            percent_encoding::percent_decode_str(v)
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

/// Serves one admin request (the path starts with `/admin/`).
pub async fn handle(
    rt: Arc<Runtime>,
    token: &AdminToken,
    req: HttpRequest<Incoming>,
) -> HttpResponse<Body> {
    if !token.admits(&req) {
        let mut r = error(StatusCode::UNAUTHORIZED, "a valid admin token is required");
        r.headers_mut().insert(
            hyper::header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"roomhost admin\""),
        );
        return boxed(r);
    }
    if req.uri().path().trim_end_matches('/') == "/admin/backup" {
        if req.method() != Method::GET {
            return boxed(error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"));
        }
        return backup(&rt).await;
    }
    let path = req.uri().path().to_string();
    if let ["objects", class, name, "export"] = parts(&path).as_slice()
        && req.method() == Method::GET
    {
        return match object_id(&rt, class, name) {
            Ok(id) => export(&rt, id),
            Err(r) => boxed(*r),
        };
    }
    boxed(handle_whole(rt, req).await)
}

/// The path's segments after `/admin/`.
fn parts(path: &str) -> Vec<&str> {
    path.trim_start_matches("/admin/")
        .split('/')
        .filter(|p| !p.is_empty())
        .collect()
}

/// The status for a refused operation on an object.
fn admin_refused(e: &AdminError) -> Resp {
    let status = match e {
        AdminError::NoSuchClass(_) | AdminError::NoSuchObject(_) => StatusCode::NOT_FOUND,
        AdminError::InvalidName(_) | AdminError::BadImport { .. } => StatusCode::BAD_REQUEST,
        AdminError::KeysExist { .. } => StatusCode::CONFLICT,
        AdminError::QuotaExceeded(_) => StatusCode::PAYLOAD_TOO_LARGE,
        AdminError::Event(EventError::Timeout(_)) => StatusCode::GATEWAY_TIMEOUT,
        AdminError::Event(EventError::Unavailable(_)) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, Report(e))
}

/// `GET /admin/objects/{class}/{name}/export`: the object's committed keys as
/// JSON lines, read from one read transaction (a consistent copy), streamed.
fn export(rt: &Runtime, id: ObjectId) -> HttpResponse<Body> {
    match rt.object_exists(&id) {
        Ok(true) => {}
        Ok(false) => return boxed(admin_refused(&AdminError::NoSuchObject(id))),
        Err(e) => return boxed(admin_refused(&e)),
    }
    let db = rt.db.clone();
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    tokio::task::spawn_blocking(move || {
        use std::ops::Bound::Unbounded;
        let mut buf = Vec::with_capacity(64 * 1024);
        let mut gone = false;
        let scanned = db.scan(&id, Unbounded, Unbounded, false, |k, v| {
            buf.extend_from_slice(&export_line(k, v));
            if buf.len() >= 64 * 1024 {
                let chunk = Bytes::from(std::mem::take(&mut buf));
                gone = tx.blocking_send(Ok(chunk)).is_err();
            }
            !gone
        });
        match scanned {
            Ok(()) if !gone && !buf.is_empty() => {
                let _ = tx.blocking_send(Ok(Bytes::from(buf)));
            }
            Ok(()) => {}
            Err(e) => {
                tracing::error!(object = %id, error = %Report(&e), "export failed");
                let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
            }
        }
    });
    let mut r = HttpResponse::new(ChannelBody { rx, len: None }.boxed_unsync());
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    r
}

/// `GET /admin/backup`: a consistent snapshot of the database, written from
/// one read transaction into a temporary redb file beside the database, then
/// streamed (the file is removed once sent, or when the client goes away).
async fn backup(rt: &Runtime) -> HttpResponse<Body> {
    let db = rt.db.clone();
    let dir = match rt.config.data.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let started = std::time::Instant::now();
    let (done, made) = tokio::sync::oneshot::channel();
    let copy = move || -> Result<_, Error> {
        // The copy is a background job: the chat's threads go first.
        crate::lane::set_thread_nice(10);
        let io = |context: String| move |source| Error::Io { context, source };
        let tmp = tempfile::Builder::new()
            .prefix(".roomhost-backup-")
            .suffix(".redb")
            .tempfile_in(&dir)
            .map_err(io(format!(
                "cannot create a backup file in {}",
                dir.display()
            )))?;
        let stats = db.snapshot_to(tmp.path())?;
        let file = tmp
            .reopen()
            .map_err(io("cannot reopen the backup file".into()))?;
        let len = file
            .metadata()
            .map_err(io("cannot read the backup file's size".into()))?
            .len();
        Ok((tmp, file, stats, len))
    };
    // Its own thread (not the blocking pool's), since its priority is lowered
    // for good.
    let spawned = std::thread::Builder::new()
        .name("roomhost-backup".into())
        .spawn(move || {
            let _ = done.send(copy());
        });
    if let Err(e) = spawned {
        return boxed(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot start the backup thread: {e}"),
        ));
    }
    let (tmp, mut file, stats, len) = match made.await {
        Ok(Ok(made)) => made,
        Ok(Err(e)) => {
            tracing::error!(error = %Report(&e), "backup failed");
            return boxed(error(StatusCode::INTERNAL_SERVER_ERROR, Report(&e)));
        }
        Err(e) => {
            return boxed(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the backup task failed: {e}"),
            ));
        }
    };
    tracing::info!(
        bytes = len,
        rows = stats.rows,
        copy_ms = stats.copy_ms,
        commit_ms = stats.commit_ms,
        snapshot_ms = started.elapsed().as_millis() as u64,
        "backup snapshot taken; sending it"
    );
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    tokio::task::spawn_blocking(move || {
        use std::io::Read as _;
        let _keep = tmp; // removed when the sending ends
        loop {
            let mut buf = vec![0u8; 256 * 1024];
            match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    buf.truncate(n);
                    if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                        break; // the client went away
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    break;
                }
            }
        }
    });
    let body = ChannelBody { rx, len: Some(len) };
    let mut r = HttpResponse::new(body.boxed_unsync());
    let headers = r.headers_mut();
    headers.insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(hyper::header::CONTENT_LENGTH, HeaderValue::from(len));
    headers.insert("x-roomhost-backup-rows", HeaderValue::from(stats.rows));
    r
}

/// A body whose chunks come from a channel (`len` bytes in all, if known).
struct ChannelBody {
    rx: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
    len: Option<u64>,
}

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, std::io::Error>>> {
        self.rx
            .poll_recv(cx)
            .map(|chunk| chunk.map(|r| r.map(hyper::body::Frame::data)))
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self.len {
            Some(n) => hyper::body::SizeHint::with_exact(n),
            None => hyper::body::SizeHint::default(),
        }
    }
}

/// `GET /admin/objects[?class=C][&state=live|hibernated|stored][&after=CURSOR][&limit=N]`.
fn objects(rt: &Runtime, req: &HttpRequest<Incoming>) -> Resp {
    let class = query_param(req, "class").filter(|c| !c.is_empty());
    if let Some(c) = &class
        && !rt.components.has_class(c)
    {
        return error(StatusCode::NOT_FOUND, format!("no such class: {c}"));
    }
    let state = query_param(req, "state").unwrap_or_else(|| "all".into());
    let Some(filter) = Filter::parse(&state) else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("state={state}: one of live, hibernated, stored, all"),
        );
    };
    let after = match query_param(req, "after") {
        None => None,
        Some(c) => match inventory::parse_cursor(&c) {
            Some(id) => Some(id),
            None => {
                return error(StatusCode::BAD_REQUEST, format!("after={c}: not a cursor"));
            }
        },
    };
    let limit = match query_param(req, "limit").map(|l| l.parse::<usize>()) {
        None => DEFAULT_PAGE,
        Some(Ok(n)) if (1..=MAX_PAGE).contains(&n) => n,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("limit: a number from 1 to {MAX_PAGE}"),
            );
        }
    };
    match rt.list_objects(class.as_deref(), filter, after.as_ref(), limit) {
        Ok(page) => json(StatusCode::OK, &page),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, Report(&e)),
    }
}

/// A page of `GET /admin/objects` unless `limit` says otherwise.
const DEFAULT_PAGE: usize = 100;
/// The largest page.
const MAX_PAGE: usize = 1000;

/// The object named in an admin path (its name percent-encoded): its class
/// must exist (404 otherwise).
fn object_id(rt: &Runtime, class: &str, name: &str) -> Result<ObjectId, Box<Resp>> {
    let name = percent_encoding::percent_decode_str(name)
        .decode_utf8()
        .map_err(|_| {
            Box::new(error(
                StatusCode::BAD_REQUEST,
                "the object name is not UTF-8",
            ))
        })?;
    rt.admin_id(class, &name)
        .map_err(|e| Box::new(admin_refused(&e)))
}

/// The largest import body (one transaction, held in memory while it runs).
const MAX_IMPORT_BYTES: usize = 256 * 1024 * 1024;

/// Who asked, from a header the CLI sets (`user@host`).
fn who(req: &HttpRequest<Incoming>, header: &str) -> String {
    req.headers()
        .get(header)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().take(128).collect::<String>())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "admin API".to_string())
}

/// `GET /admin/objects/{class}/{name}[?key=K | key_hex=H][&limit=N][&max_value=N]`.
async fn inspect(rt: &Runtime, id: ObjectId, req: &HttpRequest<Incoming>) -> Resp {
    let key = match (query_param(req, "key"), query_param(req, "key_hex")) {
        (Some(k), _) => Some(k.into_bytes()),
        (None, Some(h)) => match crate::objects::admin::unhex(&h) {
            Some(k) => Some(k),
            None => return error(StatusCode::BAD_REQUEST, "key_hex: not hex"),
        },
        (None, None) => None,
    };
    let number = |name: &str, default: usize| -> Result<usize, String> {
        match query_param(req, name) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| format!("{name}={v}: not a number")),
        }
    };
    let limit = match number("limit", 100) {
        Ok(n) => n.clamp(1, 10_000),
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    let max_value = match number("max_value", 80) {
        Ok(n) => n.max(1),
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    match rt.inspect(&id, key.as_deref(), limit, max_value).await {
        Ok(i) => json(StatusCode::OK, &i),
        Err(e) => admin_refused(&e),
    }
}

/// A request about one object.
async fn object_request(
    rt: &Arc<Runtime>,
    id: ObjectId,
    method: Method,
    rest: &[&str],
    req: HttpRequest<Incoming>,
) -> Resp {
    match (method, rest) {
        (Method::GET, []) => inspect(rt, id, &req).await,
        (Method::DELETE, []) => {
            let by = who(&req, "x-roomhost-deleted-by");
            match rt.delete_object(&id, &by).await {
                Ok(d) => json(StatusCode::OK, &d),
                Err(e) => admin_refused(&e),
            }
        }
        (Method::POST, ["evict"]) => match rt.evict(&id) {
            Ok(evicted) => json(
                StatusCode::OK,
                &serde_json::json!({ "class": id.class, "name": id.name, "evicted": evicted }),
            ),
            Err(e) => admin_refused(&e),
        },
        (Method::POST, ["import"]) => {
            let overwrite = query_param(&req, "overwrite").is_some_and(|v| v == "1" || v == "true");
            let body = match Limited::new(req.into_body(), MAX_IMPORT_BYTES)
                .collect()
                .await
            {
                Ok(b) => b.to_bytes(),
                Err(_) => {
                    return error(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!("an import may be at most {MAX_IMPORT_BYTES} bytes"),
                    );
                }
            };
            let Ok(text) = std::str::from_utf8(&body) else {
                return error(StatusCode::BAD_REQUEST, "an import is JSON lines (UTF-8)");
            };
            let entries = match parse_import(text) {
                Ok(e) => e,
                Err(e) => return admin_refused(&e),
            };
            match rt.import(&id, entries, overwrite).await {
                Ok(n) => json(
                    StatusCode::OK,
                    &serde_json::json!({ "class": id.class, "name": id.name, "imported": n }),
                ),
                Err(e) => admin_refused(&e),
            }
        }
        (_, [] | ["evict" | "import" | "export"]) => {
            error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        }
        _ => error(StatusCode::NOT_FOUND, "no such admin endpoint"),
    }
}

/// Serves an admin request with a whole (not streamed) answer.
async fn handle_whole(rt: Arc<Runtime>, req: HttpRequest<Incoming>) -> Resp {
    let path = req.uri().path().to_string();
    let parts = parts(&path);
    match (req.method().clone(), parts.as_slice()) {
        (Method::GET, ["objects"]) => objects(&rt, &req),
        (method, ["objects", class, name, rest @ ..]) => {
            let id = match object_id(&rt, class, name) {
                Ok(id) => id,
                Err(r) => return *r,
            };
            object_request(&rt, id, method, rest, req).await
        }
        (_, ["objects"]) => error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
        (Method::GET, ["classes"]) => json(
            StatusCode::OK,
            &serde_json::json!({ "classes": rt.classes() }),
        ),
        (Method::PUT, ["classes", class]) => {
            let class = class.to_string();
            if !crate::ids::valid_class_name(&class) {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("class name {class:?}: use letters, digits, '-' and '_'"),
                );
            }
            let canary = match query_param(&req, "canary") {
                None => None,
                Some(p) => match p.parse::<u8>() {
                    Ok(n) if (1..=99).contains(&n) => Some(n),
                    _ => {
                        return error(
                            StatusCode::BAD_REQUEST,
                            format!("canary={p}: a percentage from 1 to 99"),
                        );
                    }
                },
            };
            let by = req
                .headers()
                .get("x-roomhost-deployed-by")
                .and_then(|v| v.to_str().ok())
                .map(|s| s.chars().take(128).collect::<String>())
                .unwrap_or_else(|| "admin API".to_string());
            let limit = rt.config.limits.max_component_bytes;
            let body = match Limited::new(req.into_body(), limit).collect().await {
                Ok(b) => b.to_bytes().to_vec(),
                Err(_) => {
                    return error(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!(
                            "a component may be at most {limit} bytes (limits.max_component_bytes)"
                        ),
                    );
                }
            };
            match rt.deploy(&class, body, &by, canary).await {
                Ok(change) => json(StatusCode::OK, &change),
                Err(e) => refused(&e),
            }
        }
        (Method::POST, ["classes", class, "rollback"]) => {
            let to = query_param(&req, "to");
            match rt.rollback(class, to.as_deref()).await {
                Ok(change) => json(StatusCode::OK, &change),
                Err(e) => refused(&e),
            }
        }
        (Method::POST, ["classes", class, "promote"]) => match rt.promote(class).await {
            Ok(change) => json(StatusCode::OK, &change),
            Err(e) => refused(&e),
        },
        (_, ["classes"] | ["classes", _] | ["classes", _, "rollback" | "promote"]) => {
            error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        }
        _ => error(StatusCode::NOT_FOUND, "no such admin endpoint"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
    }
}
