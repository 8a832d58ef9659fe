//! Requests, responses and WebSocket upgrades.

use std::str::FromStr;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Accept, Error, Frame, Reply, Request, Response, Result};

impl Request {
    /// Whether the request asks for a WebSocket (answer with [`accept`]).
    pub fn is_websocket(&self) -> bool {
        self.websocket.is_some()
    }

    /// The socket an upgrade request creates if it is accepted: frames sent
    /// to it during this event are delivered once the upgrade completes.
    pub fn socket(&self) -> Option<crate::Socket> {
        self.websocket.map(crate::Socket::from_id)
    }

    /// What the route's final `*` matched, without slashes at either end:
    /// `rest() == "history"` for `/api/room/lobby/history` routed by
    /// `/api/room/{name}/*` (the host says, in header `x-roomhost-rest`).
    /// Without that header (a request built by hand), the path after the
    /// first segment that names this object, or else the last segment.
    pub fn rest(&self) -> &str {
        match self.header("x-roomhost-rest") {
            Some(rest) => rest.trim_matches('/'),
            None => rest_after(&self.path, &crate::objects::self_name()),
        }
    }

    /// The first value of query parameter `name`, decoded as a form
    /// (`%XX` escapes, and `+` as a space).
    pub fn query(&self, name: &str) -> Option<String> {
        query_param(self.query.as_deref(), name)
    }

    /// Query parameter `name`, or a `400 missing NAME` error.
    pub fn require(&self, name: &str) -> Result<String> {
        self.query(name)
            .ok_or_else(|| Error::bad_request(format!("missing {name}")))
    }

    /// Query parameter `name` parsed as a `T`: `Ok(None)` when absent, a
    /// `400` error naming the parameter when it does not parse.
    pub fn query_as<T: FromStr>(&self, name: &str) -> Result<Option<T>>
    where
        T::Err: std::fmt::Display,
    {
        match self.query(name) {
            None => Ok(None),
            Some(text) => text
                .parse::<T>()
                .map(Some)
                .map_err(|e| Error::bad_request(format!("query parameter {name}={text:?}: {e}"))),
        }
    }

    /// The value of a header (names are lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as UTF-8 text (`400` if it is not).
    pub fn text(&self) -> Result<&str> {
        std::str::from_utf8(&self.body)
            .map_err(|_| Error::bad_request("the request body is not UTF-8 text"))
    }

    /// The body decoded from JSON (`400` with serde's message if it does not
    /// decode).
    pub fn json<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.body).map_err(|e| {
            Error::bad_request(format!("the request body is not the JSON expected: {e}"))
        })
    }
}

/// The part of `path` after the segment equal to `name` (or, percent-decoded,
/// equal to it); the last segment when none is.
fn rest_after<'p>(path: &'p str, name: &str) -> &'p str {
    let path = path.trim_matches('/');
    let mut offset = 0;
    for segment in path.split('/') {
        offset += segment.len() + 1;
        if segment == name || percent_decode(segment).as_deref() == Some(name) {
            return path.get(offset..).unwrap_or("").trim_end_matches('/');
        }
    }
    path.rsplit('/').next().unwrap_or("")
}

impl Response {
    /// A `text/plain` response.
    pub fn text(status: u16, body: impl Into<String>) -> Response {
        Response {
            status,
            headers: vec![("content-type".into(), "text/plain; charset=utf-8".into())],
            body: body.into().into_bytes(),
        }
    }

    /// An `application/json` response with `value` encoded.
    pub fn json<T: Serialize + ?Sized>(status: u16, value: &T) -> Response {
        match serde_json::to_vec(value) {
            Ok(body) => Response::json_raw(status, body),
            Err(e) => Error::internal(format!("encoding a response: {e}")).into_response(),
        }
    }

    /// An `application/json` response from an already-encoded JSON body.
    pub fn json_raw(status: u16, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.into(),
        }
    }

    /// A response without a body (`204`, ...).
    pub fn empty(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// A response with raw bytes and a content type.
    pub fn bytes(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            headers: vec![("content-type".into(), content_type.into())],
            body: body.into(),
        }
    }

    /// This response with one more header.
    pub fn with_header(mut self, name: &str, value: &str) -> Response {
        self.headers.push((name.to_ascii_lowercase(), value.into()));
        self
    }

    /// The body as (lossy UTF-8) text.
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl From<Response> for Reply {
    fn from(response: Response) -> Reply {
        Reply::Response(response)
    }
}

impl From<Accept> for Reply {
    fn from(accept: Accept) -> Reply {
        Reply::AcceptWebsocket(accept)
    }
}

impl Frame {
    /// The text of a text frame.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Frame::Text(t) => Some(t),
            Frame::Binary(_) => None,
        }
    }

    /// The frame's payload as bytes (a text frame's UTF-8).
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Frame::Text(t) => t.as_bytes(),
            Frame::Binary(b) => b,
        }
    }
}

/// Accepts a WebSocket upgrade with tags and no attachment.
pub fn accept(tags: &[&str]) -> Reply {
    accept_with(tags, None)
}

/// Accepts a WebSocket upgrade with tags and an attachment (≤ 2 KiB, kept by
/// the host with the socket: [`crate::Socket::attachment_bytes`] reads it).
pub fn accept_with(tags: &[&str], attachment: Option<&[u8]>) -> Reply {
    Reply::AcceptWebsocket(Accept {
        tags: tags.iter().map(|t| t.to_string()).collect(),
        attachment: attachment.map(<[u8]>::to_vec),
    })
}

/// Accepts a WebSocket upgrade with tags and `value` as its JSON attachment
/// ([`crate::Socket::attachment`] reads it back).
pub fn accept_json<T: Serialize + ?Sized>(tags: &[&str], value: &T) -> Result<Reply> {
    let attachment = serde_json::to_vec(value)?;
    Ok(accept_with(tags, Some(&attachment)))
}

/// The first value of parameter `name` in a query string, decoded as a form
/// (`%XX` escapes, `+` as a space; the raw text when the escapes are not
/// UTF-8). A parameter without `=` has the value `""`.
pub fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?
        .split('&')
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
        .find(|(key, _)| form_decode(key).as_deref() == Some(name) || *key == name)
        .map(|(_, value)| form_decode(value).unwrap_or_else(|| value.to_string()))
}

/// Decodes a form value: `+` is a space, then `%XX` escapes.
fn form_decode(text: &str) -> Option<String> {
    percent_decode(&text.replace('+', " "))
}

/// Decodes `%XX` escapes (a path segment: `+` stays); `None` if the result
/// is not UTF-8.
pub fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rest_is_the_path_after_the_object_name() {
        assert_eq!(rest_after("/api/room/lobby/history", "lobby"), "history");
        assert_eq!(rest_after("/api/room/lobby/a/b/", "lobby"), "a/b");
        assert_eq!(rest_after("/api/room/lobby", "lobby"), "");
        assert_eq!(rest_after("/c/my%20room/value", "my room"), "value");
        // No segment names the object: the last one.
        assert_eq!(rest_after("/x/y/z", "lobby"), "z");
    }

    #[test]
    fn query_parameters_decode_as_a_form() {
        let q = Some("a=1&name=J%C3%BCrgen+M&flag&a=2&sp%20ace=x");
        assert_eq!(query_param(q, "a").as_deref(), Some("1"));
        assert_eq!(query_param(q, "name").as_deref(), Some("Jürgen M"));
        assert_eq!(query_param(q, "flag").as_deref(), Some(""));
        assert_eq!(query_param(q, "sp ace").as_deref(), Some("x"));
        assert_eq!(query_param(q, "missing"), None);
        assert_eq!(query_param(None, "a"), None);
        // Escapes that are not UTF-8: the raw text.
        assert_eq!(query_param(Some("b=%FF"), "b").as_deref(), Some("%FF"));
    }
}
