//! Test a room object in a native `cargo test`, without a host.
//!
//! In a native build the SDK's imports are served by an in-memory host with
//! the real host's semantics: per-event transactions (a panic undoes the
//! event's writes, alarm changes, tag and attachment changes and frames),
//! the output gate, sockets with tags, attachments and the auto-response,
//! one alarm per object with retries, calls between objects, class vars, and
//! a clock that only moves when the test moves it. Every test thread has a
//! host of its own.
//!
//! ```
//! use roomhost_sdk::testing::TestObject;
//! use roomhost_sdk::{Frame, Object, Result, Socket, accept};
//!
//! struct Echo;
//! impl Object for Echo {
//!     fn init() -> Result<Self> { Ok(Echo) }
//!     fn on_request(&mut self, _: roomhost_sdk::Request) -> Result<roomhost_sdk::Reply> {
//!         Ok(accept(&["echo"]))
//!     }
//!     fn on_socket_message(&mut self, socket: Socket, frame: Frame) -> Result<()> {
//!         Ok(socket.send(&frame)?)
//!     }
//! }
//!
//! let mut echo = TestObject::<Echo>::new("echo", "e1");
//! let ws = echo.connect("/echo/e1");
//! echo.send_text(ws, "hi");
//! assert_eq!(echo.received_text(ws), ["hi"]);
//! echo.evict(); // the socket stays; the next frame makes a new instance
//! echo.send_text(ws, "again");
//! assert_eq!(echo.received_text(ws), ["again"]);
//! assert_eq!(echo.instances(), 2);
//! ```

#[cfg(feature = "e2e")]
pub mod e2e;
pub(crate) mod imports;
mod world;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::rc::Rc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use self::world::{Class, Failed, Key, Kind, SocketData};
use crate::{CallError, Frame, Object, Reply, Request, Response, Socket};

/// One object (`class`, `name`) of type `T` in this thread's test host, and
/// the client side of its sockets.
pub struct TestObject<T: Object> {
    key: Key,
    _type: PhantomData<fn() -> T>,
}

/// Registers `T` as class `class` in this thread's test host, so that other
/// objects can call objects of it.
pub fn add_class<T: Object>(class: &str) {
    world::with(|w| {
        w.classes
            .insert(class.to_string(), Class::Object(world::factory::<T>))
    });
}

/// Stands in for a class this crate does not have: calls to any object of
/// `class` run `answer(name, method, payload)`.
pub fn stub_class(
    class: &str,
    answer: impl FnMut(&str, &str, &[u8]) -> Result<Vec<u8>, CallError> + 'static,
) {
    world::with(|w| {
        w.classes.insert(
            class.to_string(),
            Class::Stub(Rc::new(RefCell::new(answer))),
        )
    });
}

/// Sets the per-object storage quota in bytes of keys and values (the
/// host's default: 1 GiB; 0: none).
pub fn set_storage_quota(bytes: u64) {
    world::with(|w| w.quota = bytes);
}

/// The test host's clock, in ms since the Unix epoch (it starts at
/// 2026-01-01T00:00:00Z).
pub fn now_ms() -> u64 {
    world::with(|w| w.now_ms)
}

/// Moves the clock forward by `by`, delivering every alarm (of every object)
/// that falls due on the way, in time order, each at its own time.
pub fn advance(by: Duration) {
    let by = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
    let until = now_ms().saturating_add(by);
    loop {
        let due = world::with(|w| {
            w.objects
                .iter()
                .filter_map(|(key, o)| Some((o.alarm?, key.clone())))
                .filter(|(at, _)| *at <= until)
                .min()
        });
        let Some((at, key)) = due else { break };
        world::with(|w| w.now_ms = w.now_ms.max(at));
        let retry = world::with(|w| w.objects.get(&key).map_or(0, |o| o.alarm_retry));
        let _ = world::run(&key, Kind::Alarm, None, |i| i.alarm(retry));
    }
    world::with(|w| w.now_ms = w.now_ms.max(until));
}

/// A request as the host builds it: `path` may carry a `?query`; the client
/// IP is 127.0.0.1.
pub fn request(method: &str, path: &str) -> Request {
    let (path, query) = match path.split_once('?') {
        Some((path, query)) => (path, Some(query.to_string())),
        None => (path, None),
    };
    Request {
        method: method.to_string(),
        path: path.to_string(),
        query,
        headers: Vec::new(),
        body: Vec::new(),
        client_ip: "127.0.0.1".to_string(),
        websocket: None,
    }
}

impl<T: Object> TestObject<T> {
    /// Object `name` of class `class` (registering `T` as that class). Its
    /// instance is made by its first event, as in the host.
    pub fn new(class: &str, name: &str) -> TestObject<T> {
        add_class::<T>(class);
        TestObject {
            key: (class.to_string(), name.to_string()),
            _type: PhantomData,
        }
    }

    /// Delivers an HTTP request. A trap answers `500`, as the host does.
    pub fn request(&mut self, request: Request) -> Response {
        match world::run(&self.key, Kind::Other, None, |i| i.request(request)) {
            Ok(Reply::Response(response)) => response,
            Ok(Reply::AcceptWebsocket(_)) => Response::text(
                500,
                "the object accepted a WebSocket on a request that did not ask for one",
            ),
            Err(failed) => failure_response(failed),
        }
    }

    /// `GET path`.
    pub fn get(&mut self, path: &str) -> Response {
        self.request(request("GET", path))
    }

    /// `POST path` with a body.
    pub fn post(&mut self, path: &str, body: &[u8]) -> Response {
        let mut request = request("POST", path);
        request.body = body.to_vec();
        self.request(request)
    }

    /// Opens a WebSocket with a `GET path` upgrade request, or gives back
    /// the response that refused it.
    pub fn try_connect_with(&mut self, mut request: Request) -> Result<Socket, Response> {
        let id = world::with(|w| {
            let id = w.next_socket;
            w.next_socket += 1;
            w.pending_frames.clear();
            id
        });
        request.websocket = Some(id);
        let reply = world::run(&self.key, Kind::Other, Some(id), |i| i.request(request));
        let frames = world::with(|w| std::mem::take(&mut w.pending_frames));
        match reply {
            Ok(Reply::AcceptWebsocket(accept)) => {
                if let Err(e) = world::validate_tags(&accept.tags) {
                    return Err(Response::text(500, format!("accept: {e:?}")));
                }
                if let Err(e) = world::validate_attachment(accept.attachment.as_deref()) {
                    return Err(Response::text(500, format!("accept: {e:?}")));
                }
                world::with(|w| {
                    let object = w.objects.entry(self.key.clone()).or_default();
                    object.sockets.insert(
                        id,
                        SocketData {
                            tags: accept.tags,
                            attachment: accept.attachment,
                            received: frames.into(),
                            ..SocketData::default()
                        },
                    );
                });
                Ok(Socket::from_id(id))
            }
            Ok(Reply::Response(response)) => Err(response),
            Err(failed) => Err(failure_response(failed)),
        }
    }

    /// Opens a WebSocket at `path`; panics (failing the test) with the
    /// response if the object refuses it.
    pub fn connect(&mut self, path: &str) -> Socket {
        match self.try_connect_with(request("GET", path)) {
            Ok(socket) => socket,
            Err(response) => panic!(
                "the object refused the WebSocket at {path}: {} {}",
                response.status,
                response.body_text()
            ),
        }
    }

    /// Sends a frame from the client. A text frame equal to the
    /// auto-response's request is answered without running the object.
    pub fn send(&mut self, socket: Socket, frame: Frame) {
        let id = socket.id();
        let auto = world::with(|w| {
            let object = w.objects.entry(self.key.clone()).or_default();
            let answer = match (&frame, &object.auto_response) {
                (Frame::Text(text), Some((request, response))) if text == request => {
                    Some(response.clone())
                }
                _ => None,
            };
            let now = w.now_ms;
            let socket = self.client_socket(object, id);
            if let Some(answer) = &answer {
                socket.received.push_back(Frame::Text(answer.clone()));
                socket.auto_ts = Some(now);
            }
            answer.is_some()
        });
        if !auto {
            let _ = world::run(&self.key, Kind::Other, None, |i| i.message(id, frame));
        }
    }

    /// Sends a text frame from the client.
    pub fn send_text(&mut self, socket: Socket, text: &str) {
        self.send(socket, Frame::Text(text.to_string()))
    }

    /// Sends `value` as a JSON text frame from the client.
    pub fn send_json<V: Serialize + ?Sized>(&mut self, socket: Socket, value: &V) {
        let text = serde_json::to_string(value).expect("the test's value encodes as JSON");
        self.send_text(socket, &text)
    }

    /// Closes a socket from the client side: the object gets
    /// `on_socket_close`, then the socket is gone.
    pub fn close(&mut self, socket: Socket, code: u16, reason: &str) {
        let id = socket.id();
        world::with(|w| {
            let object = w.objects.entry(self.key.clone()).or_default();
            self.client_socket(object, id);
        });
        let reason = reason.to_string();
        let _ = world::run(&self.key, Kind::Other, None, |i| i.close(id, code, reason));
        world::with(|w| {
            if let Some(s) = w
                .objects
                .get_mut(&self.key)
                .and_then(|o| o.sockets.get_mut(&id))
            {
                s.closing = true;
                s.client_closed = true;
            }
        });
    }

    /// The socket as its client holds it; panics if it is closed.
    fn client_socket<'o>(&self, object: &'o mut world::ObjectData, id: u64) -> &'o mut SocketData {
        match object.sockets.get_mut(&id) {
            Some(s) if s.closed_with.is_none() && !s.client_closed => s,
            Some(s) => panic!(
                "socket {id} is closed ({}): its client cannot send",
                match &s.closed_with {
                    Some((code, reason)) => format!("by the object, {code} {reason:?}"),
                    None => "by its client".to_string(),
                }
            ),
            None => panic!(
                "socket {id} is not a socket of {}/{}",
                self.key.0, self.key.1
            ),
        }
    }

    /// Takes the frames the client of `socket` received since the last call.
    pub fn received(&mut self, socket: Socket) -> Vec<Frame> {
        world::with(|w| {
            w.objects
                .get_mut(&self.key)
                .and_then(|o| o.sockets.get_mut(&socket.id()))
                .map(|s| s.received.drain(..).collect())
                .unwrap_or_default()
        })
    }

    /// Takes the frames received, as text (a binary frame panics).
    pub fn received_text(&mut self, socket: Socket) -> Vec<String> {
        self.received(socket)
            .into_iter()
            .map(|frame| match frame {
                Frame::Text(text) => text,
                Frame::Binary(bytes) => panic!("socket {socket}: a binary frame {bytes:?}"),
            })
            .collect()
    }

    /// Takes the frames received, decoded from JSON (a frame that is not
    /// JSON panics).
    pub fn received_json(&mut self, socket: Socket) -> Vec<serde_json::Value> {
        self.received_text(socket)
            .into_iter()
            .map(|text| {
                serde_json::from_str(&text)
                    .unwrap_or_else(|e| panic!("{socket}: received {text:?}, not JSON: {e}"))
            })
            .collect()
    }

    /// The close code and reason the object closed `socket` with, if it did.
    pub fn closed(&self, socket: Socket) -> Option<(u16, String)> {
        world::with(|w| {
            w.objects
                .get(&self.key)?
                .sockets
                .get(&socket.id())?
                .closed_with
                .clone()
        })
    }

    /// The object's open sockets, in accept order.
    pub fn sockets(&self) -> Vec<Socket> {
        world::with(|w| {
            w.objects.get(&self.key).map_or_else(Vec::new, |o| {
                o.sockets
                    .iter()
                    .filter(|(_, s)| !s.closing)
                    .map(|(id, _)| Socket::from_id(*id))
                    .collect()
            })
        })
    }

    /// A socket's tags, as the host keeps them.
    pub fn tags(&self, socket: Socket) -> Vec<String> {
        world::with(|w| {
            w.objects
                .get(&self.key)
                .and_then(|o| o.sockets.get(&socket.id()))
                .map(|s| s.tags.clone())
                .unwrap_or_default()
        })
    }

    /// A socket's attachment decoded from JSON, as the host keeps it.
    pub fn attachment<V: DeserializeOwned>(&self, socket: Socket) -> Option<V> {
        let bytes = world::with(|w| {
            w.objects
                .get(&self.key)?
                .sockets
                .get(&socket.id())?
                .attachment
                .clone()
        })?;
        Some(serde_json::from_slice(&bytes).expect("the attachment is JSON"))
    }

    /// Delivers a call from another object.
    pub fn call(&mut self, method: &str, payload: &[u8]) -> Result<Vec<u8>, CallError> {
        world::call(&self.key.0, &self.key.1, method, payload)
    }

    /// Drops the instance, as the host does to an idle object: storage,
    /// sockets (with tags and attachments), the auto-response and the alarm
    /// stay; the next event makes a new instance with `init`.
    pub fn evict(&mut self) {
        world::with(|w| {
            if let Some(o) = w.objects.get_mut(&self.key) {
                o.instance = None;
            }
        });
    }

    /// Deploys a new version of the class: the instance is dropped, and the
    /// next one sees `versions::current() == version` (and the old version in
    /// `versions::upgraded_from()` if the object has data).
    pub fn deploy(&mut self, version: &str) {
        world::with(|w| {
            w.versions.insert(self.key.0.clone(), version.to_string());
        });
        self.evict();
    }

    /// How many instances the object has had (times `init` ran).
    pub fn instances(&self) -> u32 {
        world::with(|w| w.objects.get(&self.key).map_or(0, |o| o.instances))
    }

    /// Sets a class var for the object's class.
    pub fn set_var(&mut self, name: &str, value: &str) {
        world::with(|w| {
            w.vars
                .entry(self.key.0.clone())
                .or_default()
                .insert(name.to_string(), value.to_string());
        });
    }

    /// The committed storage, as raw bytes.
    pub fn storage(&self) -> BTreeMap<String, Vec<u8>> {
        world::with(|w| {
            w.objects
                .get(&self.key)
                .map(|o| o.storage.clone())
                .unwrap_or_default()
        })
    }

    /// A committed value decoded from JSON.
    pub fn stored<V: DeserializeOwned>(&self, key: &str) -> Option<V> {
        let bytes = self.storage().remove(key)?;
        Some(serde_json::from_slice(&bytes).expect("the stored value is JSON"))
    }

    /// Writes a value (as JSON) straight into committed storage, as data an
    /// earlier version left.
    pub fn seed<V: Serialize + ?Sized>(&mut self, key: &str, value: &V) {
        let bytes = serde_json::to_vec(value).expect("the test's value encodes as JSON");
        world::with(|w| {
            let version = w.version(&self.key.0);
            let o = w.objects.entry(self.key.clone()).or_default();
            o.storage.insert(key.to_string(), bytes);
            o.data_version.get_or_insert(version);
        });
    }

    /// The pending alarm (ms since the Unix epoch).
    pub fn alarm(&self) -> Option<u64> {
        world::with(|w| w.objects.get(&self.key)?.alarm)
    }

    /// Moves the clock forward, delivering the alarms that fall due (see
    /// [`advance`]).
    pub fn advance(&mut self, by: Duration) {
        advance(by)
    }

    /// Moves the clock to this object's alarm and delivers it (and any
    /// earlier alarms of other objects); false if it has none.
    pub fn fire_alarm(&mut self) -> bool {
        match self.alarm() {
            None => false,
            Some(at) => {
                advance(Duration::from_millis(at.saturating_sub(now_ms())));
                true
            }
        }
    }

    /// Takes the object's log lines (`LEVEL message`).
    pub fn logs(&mut self) -> Vec<String> {
        world::with(|w| {
            w.objects
                .get_mut(&self.key)
                .map(|o| std::mem::take(&mut o.logs))
                .unwrap_or_default()
        })
    }

    /// Takes the messages of the object's traps (panics).
    pub fn traps(&mut self) -> Vec<String> {
        world::with(|w| {
            w.objects
                .get_mut(&self.key)
                .map(|o| std::mem::take(&mut o.traps))
                .unwrap_or_default()
        })
    }
}

fn failure_response(failed: Failed) -> Response {
    match failed {
        Failed::Trap(message) => Response::text(500, format!("object error: {message}")),
        Failed::Busy => Response::text(500, "object error: a call cycle"),
    }
}
