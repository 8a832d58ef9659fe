//! # roomhost-sdk — write room objects in Rust
//!
//! A room object is a WebAssembly component that targets the `roomhost:object`
//! world (the `wit/` folder beside this crate). One instance runs per object id,
//! one event at a time. This crate wraps the world in a trait with `&mut self`
//! state, typed storage, socket handles and request helpers — and, in a native
//! `cargo test`, serves every import from an in-memory host
//! ([`testing`]), so a room can be unit-tested without a running host.
//!
//! ```
//! use roomhost_sdk::{Object, Reply, Request, Response, Result, storage};
//!
//! /// One counter per object name.
//! struct Counter {
//!     value: i64,
//! }
//!
//! impl Object for Counter {
//!     // Runs for every new instance: the first event, and after an eviction,
//!     // a trap or a deploy. Memory is a cache of storage.
//!     fn init() -> Result<Self> {
//!         Ok(Counter { value: storage::get("value")?.unwrap_or(0) })
//!     }
//!
//!     fn on_request(&mut self, request: Request) -> Result<Reply> {
//!         if request.method == "POST" {
//!             self.value += request.query_as::<i64>("by")?.unwrap_or(1);
//!             storage::put("value", &self.value)?;
//!         }
//!         Ok(Response::json(200, &self.value).into())
//!     }
//! }
//!
//! roomhost_sdk::export_object!(Counter);
//! # fn main() {
//! # let mut counter = roomhost_sdk::testing::TestObject::<Counter>::new("counter", "c");
//! # assert_eq!(counter.post("/counter/c?by=2", b"").body_text(), "2");
//! # assert_eq!(counter.get("/counter/c").body_text(), "2");
//! # }
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2` (the crate must
//! be a `cdylib`): the `.wasm` file is a component the host loads.
//!
//! ## The event model
//!
//! Every handler runs as one transaction: storage writes (and alarm changes)
//! are committed when it returns, frames it sends are released only once
//! those writes are durable (the output gate), and a panic — a trap — throws
//! all of it away and drops the instance. An `Err` returned by a handler is
//! an answer, not a rollback: the writes made before it are kept (see
//! [`Error`] for what each handler does with it). To undo an event, panic.
//!
//! ## Where things live
//!
//! | what | where | survives eviction |
//! |---|---|---|
//! | `&mut self` | the instance's memory | no: rebuilt by [`Object::init`] |
//! | [`storage`] | the host's database | yes (and restarts) |
//! | sockets, their tags and attachments | the host | yes (not restarts) |
//! | the [`alarms`] alarm | the host's database | yes (and restarts) |

#[allow(missing_docs, unsafe_code, clippy::all)]
pub mod bindings {
    //! The raw bindings generated from `wit/` by wit-bindgen. Prefer the
    //! modules of this crate (or [`crate::sys`]): in a native test the raw
    //! imports are unreachable, while those are served by the test host.
    wit_bindgen::generate!({
        world: "object",
        path: "wit",
        pub_export_macro: true,
        default_bindings_module: "roomhost_sdk::bindings",
    });
}

mod error;
mod http;
pub mod sockets;
pub mod storage;
pub mod sys;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;

pub use bindings::roomhost::object::objects::CallError;
pub use bindings::roomhost::object::sockets::SocketError;
pub use bindings::roomhost::object::storage::StorageError;
pub use bindings::roomhost::object::types::{
    Accept, Frame, ObjectId, Reply, Request, Response, SocketId,
};
pub use error::{Error, Result};
pub use http::{accept, accept_json, accept_with, percent_decode, query_param};
pub use sockets::Socket;

/// What a room object implements: its state (`Self`, built by [`init`]) and
/// the events it handles. Every event handler has a default.
///
/// [`init`]: Object::init
pub trait Object: Sized + 'static {
    /// Builds a new instance's state: for the object's first event, and
    /// after an eviction (hibernation), a trap, or a deploy of a new version —
    /// always before that event, in its transaction. Restore caches from
    /// [`storage`] and from the sockets' tags and attachments here, and
    /// migrate data an older version wrote ([`versions::upgraded_from`]).
    ///
    /// An `Err` is logged and traps: the event fails, and the next one tries
    /// a new instance.
    fn init() -> Result<Self>;

    /// An HTTP request, possibly asking for a WebSocket
    /// ([`Request::is_websocket`]; answer with [`accept`] to take it).
    /// The default answers 404. An `Err` becomes its response
    /// ([`Error::status`]; for 5xx the message is logged, not sent).
    fn on_request(&mut self, request: Request) -> Result<Reply> {
        let _ = request;
        Ok(Response::text(404, "not found").into())
    }

    /// A frame from one of this object's sockets. An `Err` is logged.
    fn on_socket_message(&mut self, socket: Socket, frame: Frame) -> Result<()> {
        let _ = (socket, frame);
        Ok(())
    }

    /// A socket closed (by the client, the network, or the host; not one this
    /// object closed itself). Its tags and attachment are still readable
    /// here. An `Err` is logged.
    fn on_socket_close(&mut self, socket: Socket, code: u16, reason: String) -> Result<()> {
        let _ = (socket, code, reason);
        Ok(())
    }

    /// The object's alarm fired ([`alarms`]); `retry_count` counts
    /// redeliveries. An `Err` is logged and fails the delivery like a trap:
    /// the event's writes are undone and the host retries with backoff.
    fn on_alarm(&mut self, retry_count: u32) -> Result<()> {
        let _ = retry_count;
        Ok(())
    }

    /// A call from another object ([`objects::call`]). An `Err` reaches the
    /// caller as [`CallError::Rejected`] with its message; the default
    /// rejects every method.
    fn on_call(&mut self, method: &str, payload: Vec<u8>) -> Result<Vec<u8>> {
        let _ = payload;
        Err(Error::not_found(format!("no such method: {method}")))
    }
}

/// Exports a type that implements [`Object`] as the component's handler.
#[macro_export]
macro_rules! export_object {
    ($ty:ident) => {
        impl $crate::bindings::exports::roomhost::object::handler::Guest for $ty {
            fn init() {
                $crate::__rt::init::<$ty>()
            }
            fn on_request(request: $crate::Request) -> $crate::Reply {
                $crate::__rt::with::<$ty, _>(|o| $crate::__rt::on_request(o, request))
            }
            fn on_socket_message(id: $crate::SocketId, frame: $crate::Frame) {
                $crate::__rt::with::<$ty, _>(|o| $crate::__rt::on_socket_message(o, id, frame))
            }
            fn on_socket_close(id: $crate::SocketId, code: u16, reason: ::std::string::String) {
                $crate::__rt::with::<$ty, _>(|o| $crate::__rt::on_socket_close(o, id, code, reason))
            }
            fn on_alarm(retry_count: u32) {
                $crate::__rt::with::<$ty, _>(|o| $crate::__rt::on_alarm(o, retry_count))
            }
            fn on_call(
                method: ::std::string::String,
                payload: ::std::vec::Vec<u8>,
            ) -> ::std::result::Result<::std::vec::Vec<u8>, ::std::string::String> {
                $crate::__rt::with::<$ty, _>(|o| $crate::__rt::on_call(o, &method, payload))
            }
        }
        // Native builds (tests) export nothing: the test host calls the
        // object directly, and many objects may share one test binary.
        #[cfg(target_arch = "wasm32")]
        $crate::bindings::export!($ty);
        #[cfg(not(target_arch = "wasm32"))]
        const _: () = {
            // Natively the object is used by the test host only: keep the
            // compiler from calling it dead in a non-test build.
            #[allow(dead_code)]
            fn used() -> fn() -> $crate::Result<$ty> {
                <$ty as $crate::Object>::init
            }
        };
    };
}

#[doc(hidden)]
pub mod __rt {
    //! What [`export_object!`] expands to, and what the test host calls: one
    //! place that turns handler results into the world's answers, so that a
    //! component and a native test behave alike.

    use std::any::Any;
    use std::cell::RefCell;

    use crate::{Error, Frame, Object, Reply, Request, Socket, SocketId, log};

    thread_local! {
        /// The instance's state (one object type per component).
        static STATE: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
    }

    /// `init`: builds the state, or traps.
    pub fn init<T: Object>() {
        let state = build::<T>();
        STATE.with_borrow_mut(|s| *s = Some(Box::new(state)));
    }

    /// Builds a new instance's state; an error is logged and traps.
    pub fn build<T: Object>() -> T {
        match T::init() {
            Ok(state) => state,
            Err(e) => {
                log::error(format!("init failed: {e}"));
                panic!("init failed: {e}");
            }
        }
    }

    /// Runs `f` on the state, building it first if `init` has not run.
    pub fn with<T: Object, R>(f: impl FnOnce(&mut T) -> R) -> R {
        let taken = STATE.with_borrow_mut(Option::take);
        let mut state = match taken.map(|s| s.downcast::<T>()) {
            Some(Ok(state)) => state,
            _ => Box::new(build::<T>()),
        };
        let out = f(&mut state);
        STATE.with_borrow_mut(|s| *s = Some(state));
        out
    }

    /// `on-request`: an error becomes its response.
    pub fn on_request<T: Object>(o: &mut T, request: Request) -> Reply {
        match o.on_request(request) {
            Ok(reply) => reply,
            Err(e) => e.into_response().into(),
        }
    }

    /// `on-socket-message`: an error is logged.
    pub fn on_socket_message<T: Object>(o: &mut T, id: SocketId, frame: Frame) {
        if let Err(e) = o.on_socket_message(Socket::from_id(id), frame) {
            log::warn(format!("socket {id}: message: {e}"));
        }
    }

    /// `on-socket-close`: an error is logged.
    pub fn on_socket_close<T: Object>(o: &mut T, id: SocketId, code: u16, reason: String) {
        if let Err(e) = o.on_socket_close(Socket::from_id(id), code, reason) {
            log::warn(format!("socket {id}: close: {e}"));
        }
    }

    /// `on-alarm`: an error is logged and traps, so that the host retries.
    pub fn on_alarm<T: Object>(o: &mut T, retry_count: u32) {
        if let Err(e) = o.on_alarm(retry_count) {
            log::error(format!("alarm (retry {retry_count}) failed: {e}"));
            panic!("alarm failed: {e}");
        }
    }

    /// `on-call`: an error's message is the rejection.
    pub fn on_call<T: Object>(
        o: &mut T,
        method: &str,
        payload: Vec<u8>,
    ) -> std::result::Result<Vec<u8>, String> {
        o.on_call(method, payload).map_err(|e: Error| e.to_string())
    }
}

/// Logging into the host's log, under the guest's target and tagged with this
/// object's id. Lines are cut at 8 KiB.
pub mod log {
    use crate::sys;
    pub use crate::sys::log::Level;

    /// Logs at debug level.
    pub fn debug(message: impl AsRef<str>) {
        sys::log::log(Level::Debug, message.as_ref())
    }
    /// Logs at info level.
    pub fn info(message: impl AsRef<str>) {
        sys::log::log(Level::Info, message.as_ref())
    }
    /// Logs at warn level.
    pub fn warn(message: impl AsRef<str>) {
        sys::log::log(Level::Warn, message.as_ref())
    }
    /// Logs at error level.
    pub fn error(message: impl AsRef<str>) {
        sys::log::log(Level::Error, message.as_ref())
    }
}

/// The object's one alarm: a time at which the host calls
/// [`Object::on_alarm`], waking the object if it was evicted. Setting and
/// deleting it are part of the event's transaction.
pub mod alarms {
    use crate::sys;
    use std::time::Duration;

    /// Sets the alarm to `at_ms` (ms since the Unix epoch), replacing any
    /// earlier one. A time in the past fires at once.
    pub fn set(at_ms: u64) {
        sys::alarms::set(at_ms)
    }
    /// Sets the alarm to `after` from now.
    pub fn set_in(after: Duration) {
        let ms = u64::try_from(after.as_millis()).unwrap_or(u64::MAX);
        set(crate::now_ms().saturating_add(ms))
    }
    /// The pending alarm (ms since the Unix epoch), if any.
    pub fn get() -> Option<u64> {
        sys::alarms::get()
    }
    /// Cancels the pending alarm.
    pub fn delete() {
        sys::alarms::delete()
    }
}

/// Other objects: calls between objects, and this object's identity.
pub mod objects {
    #[cfg(target_arch = "wasm32")]
    use std::cell::RefCell;

    use serde::Serialize;
    use serde::de::DeserializeOwned;

    use crate::{CallError, Error, ObjectId, Result, sys};

    #[cfg(target_arch = "wasm32")]
    thread_local! {
        static SELF_ID: RefCell<Option<ObjectId>> = const { RefCell::new(None) };
    }

    /// Calls `method` of object `(class, name)` with raw bytes, creating or
    /// waking it. This event waits for the answer; this object's other events
    /// queue meanwhile.
    pub fn call(
        class: &str,
        name: &str,
        method: &str,
        payload: &[u8],
    ) -> std::result::Result<Vec<u8>, CallError> {
        sys::objects::call(class, name, method, payload)
    }

    /// [`call`] with a JSON payload and a JSON answer.
    pub fn call_json<A: Serialize + ?Sized, R: DeserializeOwned>(
        class: &str,
        name: &str,
        method: &str,
        payload: &A,
    ) -> Result<R> {
        let payload = serde_json::to_vec(payload)?;
        let answer = call(class, name, method, &payload)?;
        serde_json::from_slice(&answer).map_err(|e| {
            Error::internal(format!(
                "{class}/{name} answered {method} with bad JSON: {e}"
            ))
        })
    }

    /// A fresh 64-hex-digit object name that no other object has.
    pub fn unique_id() -> String {
        sys::objects::unique_id()
    }

    /// This object's id (asked once per instance).
    pub fn self_id() -> ObjectId {
        #[cfg(target_arch = "wasm32")]
        return SELF_ID.with_borrow_mut(|id| id.get_or_insert_with(sys::objects::self_id).clone());
        // The test host runs many objects on one thread: ask every time.
        #[cfg(not(target_arch = "wasm32"))]
        return sys::objects::self_id();
    }

    /// This object's name.
    pub fn self_name() -> String {
        self_id().name
    }
}

/// Which version of its class's component this instance runs, and which
/// version wrote the object's stored data (for migrations in `init`).
pub mod versions {
    use crate::sys;

    /// This instance's version id (12 hex digits of the component's SHA-256).
    pub fn current() -> String {
        sys::versions::current()
    }
    /// The version that wrote this object's stored data, when that is not
    /// [`current`]: migrate it (typically in `init`). `None` once this
    /// version has written, and for an object without stored data.
    pub fn upgraded_from() -> Option<String> {
        sys::versions::upgraded_from()
    }
}

/// The wall clock in milliseconds since the Unix epoch (in a native test:
/// the test host's clock, which [`testing::TestObject::advance`] moves).
pub fn now_ms() -> u64 {
    sys::clock::now_ms()
}

/// A class var (`[classes.NAME] vars` in the host config), if set.
pub fn var(name: &str) -> Option<String> {
    sys::vars::get(name)
}
