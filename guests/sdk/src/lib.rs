//! # roomhost-sdk — write room objects in Rust
//!
//! A room object is a WebAssembly component that targets the `roomhost:object`
//! world (`wit/` at the repository root). This crate generates the bindings once
//! and wraps them in an ergonomic trait:
//!
//! ```ignore
//! use roomhost_sdk::{Object, Reply, Request, Response};
//!
//! struct Counter;
//!
//! impl Object for Counter {
//!     fn on_request(req: Request) -> Reply {
//!         let n = roomhost_sdk::storage::get("n").ok().flatten()
//!             .and_then(|v| String::from_utf8(v).ok()?.parse::<u64>().ok())
//!             .unwrap_or(0) + 1;
//!         let _ = roomhost_sdk::storage::put("n", n.to_string().as_bytes());
//!         Response::text(200, n.to_string()).into()
//!     }
//! }
//!
//! roomhost_sdk::export_object!(Counter);
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2`: the result is
//! already a component the host can load.
//!
//! Every handler runs as one transaction: storage writes become durable when it
//! returns and are discarded if it panics (a panic is a trap). Frames sent during a
//! handler are delivered only after its writes are durable.

#[allow(missing_docs, unsafe_code, clippy::all)]
pub mod bindings {
    //! The raw bindings generated from `wit/` by wit-bindgen.
    wit_bindgen::generate!({
        world: "object",
        path: "../../wit",
        pub_export_macro: true,
        default_bindings_module: "roomhost_sdk::bindings",
    });
}

pub use bindings::roomhost::object::types::{
    Accept, Frame, ObjectId, Reply, Request, Response, SocketId,
};
pub use bindings::roomhost::object::{
    alarms, log as host_log, objects, sockets, storage, versions,
};

/// What a room object implements. Every method has a default, so an object only
/// writes the events it cares about.
pub trait Object {
    /// Runs when an instance is created: on the first event, and after a trap,
    /// an eviction, or a deploy of a new version. Restore in-memory caches from
    /// storage here — and migrate data an older version wrote:
    /// [`versions::upgraded_from`] names it (until this version writes).
    fn init() {}

    /// An HTTP request, possibly asking for a WebSocket (`request.websocket`).
    /// The default answers 404.
    fn on_request(request: Request) -> Reply {
        let _ = request;
        Response::text(404, "not found").into()
    }

    /// A frame from one of this object's sockets.
    fn on_socket_message(id: SocketId, frame: Frame) {
        let _ = (id, frame);
    }

    /// A socket closed; its tags and attachment are still readable here.
    fn on_socket_close(id: SocketId, code: u16, reason: String) {
        let _ = (id, code, reason);
    }

    /// The object's alarm fired (see [`alarms`]); `retry_count` counts
    /// redeliveries after traps. The default does nothing.
    fn on_alarm(retry_count: u32) {
        let _ = retry_count;
    }

    /// A call from another object. The default rejects every method.
    fn on_call(method: String, payload: Vec<u8>) -> Result<Vec<u8>, String> {
        let _ = payload;
        Err(format!("no such method: {method}"))
    }
}

/// Exports a type that implements [`Object`] as the component's handler.
#[macro_export]
macro_rules! export_object {
    ($ty:ident) => {
        impl $crate::bindings::exports::roomhost::object::handler::Guest for $ty {
            fn init() {
                <$ty as $crate::Object>::init()
            }
            fn on_request(request: $crate::Request) -> $crate::Reply {
                <$ty as $crate::Object>::on_request(request)
            }
            fn on_socket_message(id: $crate::SocketId, frame: $crate::Frame) {
                <$ty as $crate::Object>::on_socket_message(id, frame)
            }
            fn on_socket_close(id: $crate::SocketId, code: u16, reason: ::std::string::String) {
                <$ty as $crate::Object>::on_socket_close(id, code, reason)
            }
            fn on_alarm(retry_count: u32) {
                <$ty as $crate::Object>::on_alarm(retry_count)
            }
            fn on_call(
                method: ::std::string::String,
                payload: ::std::vec::Vec<u8>,
            ) -> ::std::result::Result<::std::vec::Vec<u8>, ::std::string::String> {
                <$ty as $crate::Object>::on_call(method, payload)
            }
        }
        $crate::bindings::export!($ty);
    };
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

    /// An `application/json` response from an already-encoded JSON body.
    pub fn json(status: u16, body: impl Into<String>) -> Response {
        Response {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.into().into_bytes(),
        }
    }
}

impl From<Response> for Reply {
    fn from(response: Response) -> Reply {
        Reply::Response(response)
    }
}

impl Request {
    /// The first value of a query parameter (`%XX` decoded).
    pub fn query_param(&self, name: &str) -> Option<String> {
        query_param(self.query.as_deref(), name)
    }

    /// The value of a header (names are lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The first value of parameter `name` in a query string (`%XX` decoded; the
/// raw text when the escapes are not UTF-8).
pub fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| percent_decode(value).unwrap_or_else(|| value.to_string()))
}

/// Decodes `%XX` escapes; `None` if the result is not UTF-8.
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

impl Frame {
    /// The text of a text frame.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Frame::Text(t) => Some(t),
            Frame::Binary(_) => None,
        }
    }
}

/// Accepts a WebSocket upgrade with tags and no attachment.
pub fn accept(tags: &[&str]) -> Reply {
    accept_with(tags, None)
}

/// Accepts a WebSocket upgrade with tags and an attachment (≤ 2 KiB, kept
/// by the host with the socket; read it back with `sockets::attachment`).
pub fn accept_with(tags: &[&str], attachment: Option<&[u8]>) -> Reply {
    Reply::AcceptWebsocket(Accept {
        tags: tags.iter().map(|t| t.to_string()).collect(),
        attachment: attachment.map(<[u8]>::to_vec),
    })
}

/// Logging into the host's log, tagged with this object's id.
pub mod log {
    use super::host_log::{Level, log};

    /// Logs at debug level.
    pub fn debug(message: &str) {
        log(Level::Debug, message)
    }
    /// Logs at info level.
    pub fn info(message: &str) {
        log(Level::Info, message)
    }
    /// Logs at warn level.
    pub fn warn(message: &str) {
        log(Level::Warn, message)
    }
    /// Logs at error level.
    pub fn error(message: &str) {
        log(Level::Error, message)
    }
}

/// The wall clock in milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
