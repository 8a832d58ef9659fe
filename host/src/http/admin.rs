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

use crate::config::Config;
use crate::error::{ComponentError, Error, Report};
use crate::objects::Runtime;

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
pub async fn handle(rt: Arc<Runtime>, token: &AdminToken, req: HttpRequest<Incoming>) -> Resp {
    if !token.admits(&req) {
        let mut r = error(StatusCode::UNAUTHORIZED, "a valid admin token is required");
        r.headers_mut().insert(
            hyper::header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"roomhost admin\""),
        );
        return r;
    }
    let path = req.uri().path().to_string();
    let parts: Vec<&str> = path
        .trim_start_matches("/admin/")
        .split('/')
        .filter(|p| !p.is_empty())
        .collect();
    match (req.method().clone(), parts.as_slice()) {
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
