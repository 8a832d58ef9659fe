//! HTTP: the hyper service. Routes come from the config ([`router`]); object
//! routes become `Request` events, WebSocket upgrades are handed to the object
//! and, once it accepts, owned by the host: each accepted socket is one task
//! ([`websocket`]) over the host-owned queue ([`crate::sockets`]).
//!
//! Errors never leak internals: clients get a short status text, details go to
//! the log.

pub mod admin;
pub mod conns;
pub mod router;
pub mod websocket;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Request as HttpRequest, Response as HttpResponse, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::sync::oneshot;

use crate::bindings::{Reply, Request, Response};
use crate::error::EventError;
use crate::ids::{ObjectId, is_unique_id, unique_id};
use crate::objects::{Event, Runtime};
use crate::sockets::{SocketConn, SocketEvent, SocketInbox};
use router::{Match, Router, Target};

/// The chat page, served at `/` by default.
pub const CHAT_PAGE: &str = include_str!("chat.html");

type Resp = HttpResponse<Full<Bytes>>;

/// A response body: whole (most answers) or streamed (a backup).
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, std::io::Error>;

/// A whole response as a [`Body`] one.
pub(crate) fn boxed(r: Resp) -> HttpResponse<Body> {
    r.map(|b| b.map_err(|never| match never {}).boxed_unsync())
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Resp {
    let mut r = HttpResponse::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// What one listener serves.
pub struct Site {
    /// The configured routes.
    pub router: Arc<Router>,
    /// The admin API's token.
    pub admin: Arc<admin::AdminToken>,
    /// Which requests this listener answers.
    pub serves: Serves,
    /// Its connection caps (none: the admin listener).
    pub limits: Option<Arc<conns::ConnLimits>>,
}

/// Which requests a listener answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Serves {
    /// The routes and the admin API under `/admin/` (the default).
    Everything,
    /// The routes only (the admin API has a listener of its own).
    Routes,
    /// The admin API only (`admin_listen`).
    Admin,
}

/// Serves one request.
pub async fn handle(
    rt: Arc<Runtime>,
    site: Arc<Site>,
    peer: SocketAddr,
    slot: Arc<conns::ConnSlot>,
    req: HttpRequest<Incoming>,
) -> Result<HttpResponse<Body>, Infallible> {
    let routed = route(
        &site.router,
        site.serves,
        req.method().as_str(),
        req.uri().path(),
    );
    if let Routed::Admin = routed {
        return Ok(admin::handle(rt, &site.admin, req).await);
    }
    handle_routes(rt, site, peer, slot, req, routed)
        .await
        .map(boxed)
}

/// Where a request goes, from its method and path alone.
#[derive(Debug, PartialEq)]
pub enum Routed {
    /// The admin API.
    Admin,
    /// 404, with the text to answer.
    NotFound(String),
    /// 405: a route's path matched, not its method.
    WrongMethod,
    /// The host's counters (`page = "metrics"`).
    Metrics,
    /// The chat page.
    Page,
    /// A freshly minted unique id for a class.
    UniqueId,
    /// An event for an object; `rest` is what the route's `*` matched.
    Object {
        /// The object (its name checked by [`crate::ids::validate_name`]).
        id: ObjectId,
        /// What the route's final `*` matched (raw).
        rest: String,
    },
}

/// Routes a request by its method and path: the admin API where `serves`
/// has it, else the configured routes, with the name rules (a name over its
/// route's `max_name_chars` that is not a unique id, or one that
/// [`crate::ids::validate_name`] refuses, is not found).
pub fn route(router: &Router, serves: Serves, method: &str, path: &str) -> Routed {
    let is_admin = path == "/admin" || path.starts_with("/admin/");
    if is_admin && matches!(serves, Serves::Everything | Serves::Admin) {
        return Routed::Admin;
    }
    if let Serves::Admin = serves {
        return Routed::NotFound("not found".into());
    }
    match router.find(method, path) {
        Match::Found(Target::Page(p), _, _) if p == "metrics" => Routed::Metrics,
        Match::Found(Target::Page(_), _, _) => Routed::Page,
        Match::Found(Target::UniqueId(_), _, _) => Routed::UniqueId,
        Match::Found(
            Target::Object {
                class,
                max_name_chars,
            },
            Some(name),
            rest,
        ) => {
            if max_name_chars.is_some_and(|max| name.chars().count() > max) && !is_unique_id(&name)
            {
                return Routed::NotFound("Name too long".into());
            }
            if let Err(e) = crate::ids::validate_name(&name) {
                return Routed::NotFound(e);
            }
            Routed::Object {
                id: ObjectId::new(class.clone(), name),
                rest,
            }
        }
        Match::Found(Target::Object { .. }, None, _) | Match::NotFound => {
            Routed::NotFound("not found".into())
        }
        Match::WrongMethod => Routed::WrongMethod,
    }
}

/// Serves one request that is not for the admin API.
async fn handle_routes(
    rt: Arc<Runtime>,
    site: Arc<Site>,
    peer: SocketAddr,
    slot: Arc<conns::ConnSlot>,
    req: HttpRequest<Incoming>,
    routed: Routed,
) -> Result<Resp, Infallible> {
    Ok(match routed {
        // `handle` has served the admin API already.
        Routed::Admin => text(StatusCode::NOT_FOUND, "not found"),
        Routed::NotFound(why) => text(StatusCode::NOT_FOUND, why),
        Routed::WrongMethod => text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
        Routed::Metrics => {
            let mut r = text(StatusCode::OK, rt.metrics.render());
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            r
        }
        Routed::Page => {
            let mut r = text(StatusCode::OK, CHAT_PAGE);
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            r
        }
        Routed::UniqueId => text(StatusCode::OK, unique_id()),
        Routed::Object { id, rest } => {
            let conn = ConnInfo {
                peer,
                slot,
                limits: site.limits.clone(),
            };
            to_object(rt, id, conn, req, rest).await
        }
    })
}

/// The client's IP: the TCP peer, or the last `X-Forwarded-For` entry when the
/// config trusts the proxy in front.
pub fn client_ip(trust_forwarded_for: bool, peer: SocketAddr, headers: &HeaderMap) -> String {
    if trust_forwarded_for
        && let Some(ip) = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .rfind(|s| s.parse::<std::net::IpAddr>().is_ok())
    {
        return ip.to_string();
    }
    peer.ip().to_string()
}

/// The header that carries what a route's `*` matched (see `wit/types.wit`).
pub const REST_HEADER: &str = "x-roomhost-rest";

/// The request's headers as the guest sees them: each value as text (bytes
/// that are not UTF-8 replaced), a client's [`REST_HEADER`] dropped, and the
/// host's own one added: what the route's `*` matched, so that a guest need
/// not guess where its name ends.
pub fn guest_headers(headers: &HeaderMap, rest: String) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(n, _)| n.as_str() != REST_HEADER)
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .chain([(REST_HEADER.to_string(), rest)])
        .collect()
}

/// True when `key` is a `Sec-WebSocket-Key` as RFC 6455 §4.2.1 has it: 16
/// bytes in base64 (22 characters, the last carrying 2 bits, then `==`).
pub fn valid_websocket_key(key: &[u8]) -> bool {
    const BASE64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    key.len() == 24
        && key[..21].iter().all(|b| BASE64.contains(b))
        && b"AQgw".contains(&key[21])
        && &key[22..] == b"=="
}

/// The connection a request came on: its peer, its place under the caps
/// (held by the WebSocket it may become), and the caps.
struct ConnInfo {
    peer: SocketAddr,
    slot: Arc<conns::ConnSlot>,
    limits: Option<Arc<conns::ConnLimits>>,
}

async fn to_object(
    rt: Arc<Runtime>,
    id: ObjectId,
    conn_info: ConnInfo,
    mut req: HttpRequest<Incoming>,
    rest: String,
) -> Resp {
    let client_ip = client_ip(rt.config.trust_forwarded_for, conn_info.peer, req.headers());
    let headers = guest_headers(req.headers(), rest);
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(str::to_string);

    let upgrade = if fastwebsockets::upgrade::is_upgrade_request(&req) {
        let key = req.headers().get(hyper::header::SEC_WEBSOCKET_KEY);
        if key.is_some_and(|k| !valid_websocket_key(k.as_bytes())) {
            return text(
                StatusCode::BAD_REQUEST,
                "bad WebSocket handshake: Sec-WebSocket-Key is not 16 bytes in base64",
            );
        }
        match fastwebsockets::upgrade::upgrade(&mut req) {
            Ok(u) => Some(u),
            Err(e) => {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!("bad WebSocket handshake: {e}"),
                );
            }
        }
    } else {
        None
    };
    // Behind a trusted proxy the TCP peer is the proxy: cap WebSockets per
    // forwarded client IP instead (held as long as the socket).
    let mut ip_slot = None;
    if upgrade.is_some()
        && rt.config.trust_forwarded_for
        && let Some(limits) = &conn_info.limits
        && let Ok(ip) = client_ip.parse::<std::net::IpAddr>()
    {
        match limits.admit_ip(conns::canonical(ip)) {
            Ok(slot) => ip_slot = Some(slot),
            Err(_) => {
                return text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too many connections from this address",
                );
            }
        }
    }
    let handshake_deadline = tokio::time::Instant::now()
        + std::time::Duration::from_millis(rt.config.limits.websocket_handshake_timeout_ms);
    let body = if upgrade.is_some() {
        Vec::new()
    } else {
        let limits = &rt.config.limits;
        let within = std::time::Duration::from_millis(limits.request_body_timeout_ms);
        let collect = Limited::new(req.into_body(), limits.max_request_body_bytes).collect();
        match tokio::time::timeout(within, collect).await {
            Ok(Ok(b)) => b.to_bytes().to_vec(),
            Ok(Err(_)) => return text(StatusCode::PAYLOAD_TOO_LARGE, "request body too large"),
            Err(_) => {
                rt.metrics.body_timed_out();
                let mut r = text(
                    StatusCode::REQUEST_TIMEOUT,
                    "the request body did not arrive in time",
                );
                r.headers_mut()
                    .insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
                return r;
            }
        }
    };
    let conn = upgrade.as_ref().map(|_| {
        let conn = SocketConn::new(
            rt.next_socket_id(),
            rt.config.limits.socket_send_queue_bytes,
        );
        conn.set_peer(conn_info.peer);
        conn
    });
    let request = Request {
        method,
        path,
        query,
        headers,
        body,
        client_ip,
        websocket: conn.as_ref().map(|c| c.id()),
    };
    let (reply, wait) = oneshot::channel();
    let event = Event::Request {
        request: Box::new(request),
        socket: conn.clone(),
        reply,
    };
    if let Err(e) = rt.send(&id, event).await {
        return event_error(&id, e);
    }
    let answered = match &conn {
        // A handshake has a deadline; a plain request waits for its object
        // (whose event time is bounded by `max_event_cpu_ms`).
        Some(c) => match tokio::time::timeout_at(handshake_deadline, wait).await {
            Ok(r) => r,
            Err(_) => {
                rt.metrics.handshake_timed_out();
                // The object may still accept it: make it forget the socket.
                c.end();
                if let Ok(handle) = rt.handle(&id) {
                    let closed = SocketEvent::Closed {
                        id: c.id(),
                        code: 1006,
                        reason: "handshake timed out".into(),
                    };
                    rt.tasks.spawn(async move {
                        handle.deliver(closed).await;
                    });
                }
                return text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "WebSocket handshake timed out",
                );
            }
        },
        None => wait.await,
    };
    let reply = match answered {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return event_error(&id, e),
        Err(_) => return event_error(&id, EventError::Unavailable(id.clone())),
    };
    match (reply, upgrade, conn) {
        (Reply::Response(r), _, _) => guest_response(&id, r),
        (Reply::AcceptWebsocket(_), Some((response, fut)), Some(conn)) => {
            let handle = match rt.handle(&id) {
                Ok(h) => h,
                Err(e) => return event_error(&id, e),
            };
            let params = websocket::ConnParams {
                object: handle,
                max_frame_bytes: rt.config.limits.max_frame_bytes,
                metrics: rt.metrics.clone(),
            };
            let tracker = rt.tasks.clone();
            let metrics = rt.metrics.clone();
            let slot = conn_info.slot;
            let task = async move {
                // Keep only the TCP stream (and any bytes hyper read past the
                // handshake): no hyper or WebSocket buffers while idle.
                let stream = match tokio::time::timeout_at(handshake_deadline, fut).await {
                    Ok(Ok(ws)) => ws
                        .into_inner()
                        .into_inner()
                        .downcast::<TokioIo<conns::Watched>>()
                        .map_err(|_| "the upgraded connection is not a TCP stream".to_string()),
                    Ok(Err(e)) => Err(format!("WebSocket upgrade did not complete: {e}")),
                    Err(_) => {
                        metrics.handshake_timed_out();
                        Err("WebSocket upgrade timed out".to_string())
                    }
                };
                match stream {
                    Ok(parts) => {
                        // A task of its own, so the connection does not carry the
                        // upgrade's state for its whole life. It holds the
                        // connection's places under the caps.
                        let stream = parts.io.into_inner().into_stream();
                        let run = websocket::run(conn, stream, parts.read_buf, params);
                        tracker.spawn(async move {
                            run.await;
                            drop((slot, ip_slot));
                        });
                    }
                    Err(why) => {
                        tracing::debug!("{why}");
                        conn.end();
                        let closed = SocketEvent::Closed {
                            id: conn.id(),
                            code: 1006,
                            reason: "upgrade failed".into(),
                        };
                        params.object.deliver(closed).await;
                    }
                }
            };
            rt.tasks.spawn(task);

            let (parts, _) = response.into_parts();
            HttpResponse::from_parts(parts, Full::new(Bytes::new()))
        }
        (Reply::AcceptWebsocket(_), _, _) => {
            text(StatusCode::INTERNAL_SERVER_ERROR, "object error")
        }
    }
}

fn event_error(id: &ObjectId, e: EventError) -> Resp {
    match &e {
        EventError::NoSuchClass(_) | EventError::InvalidName(_) => {
            text(StatusCode::NOT_FOUND, "not found")
        }
        EventError::Unavailable(_) => text(StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        EventError::TooManySockets { max, .. } => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("too many WebSockets on this object (at most {max})"),
        ),
        EventError::Timeout(_) => text(StatusCode::GATEWAY_TIMEOUT, "object timed out"),
        // The actor has logged these, once, with the details (a trap: the
        // panic message and the backtrace): say only where to look.
        EventError::Trap { .. }
        | EventError::Instantiate { .. }
        | EventError::NoInstanceSlot(_)
        | EventError::Commit { .. } => {
            tracing::debug!(object = %id, error = %crate::error::Report(&e), "request failed");
            object_failed(id)
        }
        _ => {
            tracing::warn!(object = %id, error = %crate::error::Report(&e), "request failed");
            object_failed(id)
        }
    }
}

/// 500 for a request its object failed to answer: no internals, but where the
/// object's author finds why.
fn object_failed(id: &ObjectId) -> Resp {
    text(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!(
            "object failed: the object could not handle this request, and nothing it did for it was kept. The host's log says why, under object {id}.\n"
        ),
    )
}

fn guest_response(id: &ObjectId, r: Response) -> Resp {
    let mut out = HttpResponse::new(Full::new(Bytes::from(r.body)));
    *out.status_mut() = match StatusCode::from_u16(r.status) {
        Ok(s) => s,
        Err(_) => {
            tracing::warn!(object = %id, status = r.status, "guest returned an invalid status");
            return text(StatusCode::INTERNAL_SERVER_ERROR, "object error");
        }
    };
    for (name, value) in r.headers {
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            (Ok(n), Ok(v)) => {
                out.headers_mut().append(n, v);
            }
            _ => {
                tracing::warn!(object = %id, header = %name, "guest returned an invalid header; dropped")
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_keys_are_16_bytes_in_base64() {
        // RFC 6455 §1.3's example, and the keys of a few clients.
        for good in [
            "dGhlIHNhbXBsZSBub25jZQ==",
            "AAAAAAAAAAAAAAAAAAAAAA==",
            "/////////////////////w==",
        ] {
            assert!(valid_websocket_key(good.as_bytes()), "{good}");
        }
        for bad in [
            "",
            "dGhlIHNhbXBsZSBub25jZQ",
            "dGhlIHNhbXBsZSBub25jZQ==\n",
            "dGhlIHNhbXBsZSBub25jZR==",
            "dGhlIHNhbXBsZSBub25j*Q==",
            "c2hvcnQ=",
            "dGhlIHNhbXBsZSBub25jZQ=A",
        ] {
            assert!(!valid_websocket_key(bad.as_bytes()), "{bad}");
        }
    }
}
