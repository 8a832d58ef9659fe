//! The test host's state: objects with their storage, sockets and alarm, and
//! the events running now. One per thread (each `#[test]` has its own).
//!
//! The semantics are the host's, as `wit/` documents them: every event is a
//! transaction (writes, alarm changes, tag/attachment changes and closes are
//! undone by a trap, and frames are released only when it commits); `init`
//! runs in the first event of every instance; a guest-closed socket gets no
//! close event; an alarm that returns without setting a new one is cleared,
//! and one that traps is retried after 2 s, 4 s, ... (6 retries). The probe
//! guest's conformance cases run against both hosts to keep them alike.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;

use crate::{CallError, Frame, Object, Reply, Request, SocketError, SocketId, StorageError};

/// Storage limits, as the host's.
pub(crate) const MAX_KEY_BYTES: usize = 2048;
pub(crate) const MAX_VALUE_BYTES: usize = 128 * 1024;
pub(crate) const MAX_KEYS_PER_CALL: usize = 128;
/// Socket limits, as the host's.
pub(crate) const MAX_ATTACHMENT_BYTES: usize = 2048;
pub(crate) const MAX_TAGS: usize = 10;
pub(crate) const MAX_TAG_BYTES: usize = 256;
/// Object names, as the host's.
pub(crate) const MAX_NAME_BYTES: usize = 256;
/// Alarm retries after traps, and the first backoff.
pub(crate) const ALARM_RETRIES: u32 = 6;
pub(crate) const ALARM_BACKOFF_MS: u64 = 2000;

/// `(class, name)`.
pub(crate) type Key = (String, String);

/// A live instance, whatever its type.
pub(crate) trait Instance {
    fn request(&mut self, request: Request) -> Reply;
    fn message(&mut self, id: SocketId, frame: Frame);
    fn close(&mut self, id: SocketId, code: u16, reason: String);
    fn alarm(&mut self, retry: u32);
    fn call(&mut self, method: &str, payload: Vec<u8>) -> Result<Vec<u8>, String>;
}

impl<T: Object> Instance for T {
    fn request(&mut self, request: Request) -> Reply {
        crate::__rt::on_request(self, request)
    }
    fn message(&mut self, id: SocketId, frame: Frame) {
        crate::__rt::on_socket_message(self, id, frame)
    }
    fn close(&mut self, id: SocketId, code: u16, reason: String) {
        crate::__rt::on_socket_close(self, id, code, reason)
    }
    fn alarm(&mut self, retry: u32) {
        crate::__rt::on_alarm(self, retry)
    }
    fn call(&mut self, method: &str, payload: Vec<u8>) -> Result<Vec<u8>, String> {
        crate::__rt::on_call(self, method, payload)
    }
}

/// Makes a class's new instance (runs its `init`).
pub(crate) type Factory = fn() -> Box<dyn Instance>;

pub(crate) fn factory<T: Object>() -> Box<dyn Instance> {
    Box::new(crate::__rt::build::<T>())
}

/// A stand-in for a class this crate does not have: `(name, method, payload)`.
pub(crate) type Stub = Rc<RefCell<dyn FnMut(&str, &str, &[u8]) -> Result<Vec<u8>, CallError>>>;

pub(crate) enum Class {
    Object(Factory),
    Stub(Stub),
}

/// One socket, as the host keeps it, and what its client received.
#[derive(Default)]
pub(crate) struct SocketData {
    pub tags: Vec<String>,
    pub attachment: Option<Vec<u8>>,
    /// Closed by the guest (or by the client): no longer the guest's.
    pub closing: bool,
    /// Frames released to the client, not yet read by the test.
    pub received: VecDeque<Frame>,
    /// The close the client received from the object.
    pub closed_with: Option<(u16, String)>,
    /// The client closed it.
    pub client_closed: bool,
    /// When the auto-response last answered on it.
    pub auto_ts: Option<u64>,
}

/// One object's durable state (and its instance, when live).
#[derive(Default)]
pub(crate) struct ObjectData {
    pub storage: BTreeMap<String, Vec<u8>>,
    pub alarm: Option<u64>,
    /// The retry count of the alarm's next delivery.
    pub alarm_retry: u32,
    pub sockets: BTreeMap<SocketId, SocketData>,
    pub auto_response: Option<(String, String)>,
    pub instance: Option<Box<dyn Instance>>,
    /// An event of this object is running (a call to it is a cycle).
    pub running: bool,
    /// Instances made (times `init` ran).
    pub instances: u32,
    /// The version whose events last wrote its storage.
    pub data_version: Option<String>,
    /// Traps, newest last.
    pub traps: Vec<String>,
    /// Log lines (`LEVEL message`), oldest first.
    pub logs: Vec<String>,
}

/// What a running event has done so far.
pub(crate) struct Event {
    pub key: Key,
    /// Buffered writes (`None`: deleted).
    pub writes: BTreeMap<String, Option<Vec<u8>>>,
    /// `delete-all` ran: the committed keys are gone for this event.
    pub cleared: bool,
    /// The alarm as this event set it (`Some(None)`: deleted).
    pub alarm: Option<Option<u64>>,
    /// Frames and closes, released on commit.
    pub outbox: Vec<Output>,
    pub undo: Vec<Undo>,
    /// The socket this request creates if the guest accepts it.
    pub pending: Option<SocketId>,
    /// The class's version running this event.
    pub version: String,
    /// The event was told `upgraded-from`: it records `version` if kept.
    pub told_upgrade: bool,
}

pub(crate) enum Output {
    Frame(Vec<SocketId>, Frame),
    Close(SocketId, u16, String),
}

pub(crate) enum Undo {
    Tags(SocketId, Vec<String>),
    Attachment(SocketId, Option<Vec<u8>>),
    Closing(SocketId),
}

/// Why an event did not run to the end.
#[derive(Debug)]
pub(crate) enum Failed {
    /// The guest trapped (panicked); the message.
    Trap(String),
    /// An event of the object is already running (a call cycle).
    Busy,
}

/// Everything the test host holds.
pub(crate) struct World {
    pub now_ms: u64,
    pub classes: HashMap<String, Class>,
    pub vars: HashMap<String, HashMap<String, String>>,
    pub objects: BTreeMap<Key, ObjectData>,
    /// Running events, innermost last.
    pub stack: Vec<Event>,
    pub next_socket: SocketId,
    pub next_unique: u64,
    /// Bytes of keys and values an object may store (0: no quota).
    pub quota: u64,
    /// Each class's current version id.
    pub versions: HashMap<String, String>,
    /// Frames sent to a socket that is being accepted, until it is.
    pub pending_frames: Vec<Frame>,
}

impl Default for World {
    fn default() -> World {
        World {
            // 2026-01-01T00:00:00Z: a fixed, readable start.
            now_ms: 1_767_225_600_000,
            classes: HashMap::new(),
            vars: HashMap::new(),
            objects: BTreeMap::new(),
            stack: Vec::new(),
            next_socket: 1,
            next_unique: 1,
            quota: 1 << 30,
            versions: HashMap::new(),
            pending_frames: Vec::new(),
        }
    }
}

thread_local! {
    static WORLD: RefCell<World> = RefCell::new(World::default());
}

/// Runs `f` on this thread's world. Never called while a guest runs with a
/// borrow held: guests call back into imports.
pub(crate) fn with<R>(f: impl FnOnce(&mut World) -> R) -> R {
    WORLD.with_borrow_mut(f)
}

/// The innermost running event; a host call outside any event is a bug in
/// the test (the real imports only exist during events).
pub(crate) fn with_event<R>(f: impl FnOnce(&mut Event, &mut ObjectData) -> R) -> R {
    with(|w| {
        let event = w
            .stack
            .last_mut()
            .expect("a roomhost import was called outside an event: call it from a handler (the test host runs events with TestObject)");
        let object = w.objects.entry(event.key.clone()).or_default();
        f(event, object)
    })
}

impl World {
    /// The current version id of `class`.
    pub fn version(&self, class: &str) -> String {
        self.versions
            .get(class)
            .cloned()
            .unwrap_or_else(|| "000000000001".to_string())
    }
}

/// What kind of event runs (for the alarm's end-of-event rule).
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Kind {
    Alarm,
    Other,
}

/// Runs one event of object `key` as one transaction: creates the instance
/// if there is none (running `init` inside the event), runs `f`, commits or
/// (on a panic) rolls back.
pub(crate) fn run<R>(
    key: &Key,
    kind: Kind,
    pending: Option<SocketId>,
    f: impl FnOnce(&mut dyn Instance) -> R,
) -> Result<R, Failed> {
    let (instance, factory) = with(|w| {
        let factory = match w.classes.get(&key.0) {
            Some(Class::Object(factory)) => Some(*factory),
            _ => None,
        };
        let version = w.version(&key.0);
        let object = w.objects.entry(key.clone()).or_default();
        if object.running {
            return Err(Failed::Busy);
        }
        object.running = true;
        let instance = object.instance.take();
        w.stack.push(Event {
            key: key.clone(),
            writes: BTreeMap::new(),
            cleared: false,
            alarm: None,
            outbox: Vec::new(),
            undo: Vec::new(),
            pending,
            version,
            told_upgrade: false,
        });
        Ok((instance, factory))
    })?;
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let mut instance = match instance {
            Some(instance) => instance,
            None => {
                with(|w| w.objects.entry(key.clone()).or_default().instances += 1);
                let factory = factory.unwrap_or_else(|| {
                    panic!("class {:?} has no object type in the test host", key.0)
                });
                factory()
            }
        };
        let out = f(&mut *instance);
        (instance, out)
    }));
    with(|w| {
        let event = w.stack.pop().expect("the event pushed above");
        let World {
            objects,
            pending_frames,
            ..
        } = w;
        let object = objects.entry(key.clone()).or_default();
        object.running = false;
        match outcome {
            Ok((instance, out)) => {
                object.instance = Some(instance);
                commit(object, event, kind, pending_frames);
                Ok(out)
            }
            Err(panic) => {
                let message = panic_message(&*panic);
                rollback(object, event);
                object.instance = None;
                object.traps.push(message.clone());
                if kind == Kind::Alarm {
                    retry_alarm(object, w.now_ms);
                }
                Err(Failed::Trap(message))
            }
        }
    })
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}

fn commit(object: &mut ObjectData, event: Event, kind: Kind, pending_frames: &mut Vec<Frame>) {
    let wrote = event.cleared || !event.writes.is_empty();
    if event.cleared {
        object.storage.clear();
    }
    for (key, value) in event.writes {
        match value {
            Some(value) => object.storage.insert(key, value),
            None => object.storage.remove(&key),
        };
    }
    // The event that was told `upgraded-from` records the new version even
    // if it wrote nothing.
    if wrote || event.told_upgrade {
        object.data_version = Some(event.version);
    }
    match (kind, event.alarm) {
        (_, Some(alarm)) => {
            object.alarm = alarm;
            object.alarm_retry = 0;
        }
        // Delivered: cleared unless the alarm event set a new one.
        (Kind::Alarm, None) => {
            object.alarm = None;
            object.alarm_retry = 0;
        }
        (Kind::Other, None) => {}
    }
    for output in event.outbox {
        match output {
            Output::Frame(to, frame) => {
                for id in to {
                    match object.sockets.get_mut(&id) {
                        Some(socket) if socket.closed_with.is_none() => {
                            socket.received.push_back(frame.clone())
                        }
                        Some(_) => {}
                        None if Some(id) == event.pending => pending_frames.push(frame.clone()),
                        None => {}
                    }
                }
            }
            Output::Close(id, code, reason) => {
                if let Some(socket) = object.sockets.get_mut(&id) {
                    socket.closed_with.get_or_insert((code, reason));
                }
            }
        }
    }
}

fn rollback(object: &mut ObjectData, event: Event) {
    for undo in event.undo.into_iter().rev() {
        match undo {
            Undo::Tags(id, old) => {
                if let Some(s) = object.sockets.get_mut(&id) {
                    s.tags = old;
                }
            }
            Undo::Attachment(id, old) => {
                if let Some(s) = object.sockets.get_mut(&id) {
                    s.attachment = old;
                }
            }
            Undo::Closing(id) => {
                if let Some(s) = object.sockets.get_mut(&id) {
                    s.closing = false;
                }
            }
        }
    }
}

/// A trapped alarm: retried with exponential backoff, then given up.
fn retry_alarm(object: &mut ObjectData, now_ms: u64) {
    if object.alarm_retry >= ALARM_RETRIES {
        object.alarm = None;
        object.alarm_retry = 0;
        return;
    }
    let backoff = ALARM_BACKOFF_MS << object.alarm_retry;
    object.alarm_retry += 1;
    object.alarm = Some(now_ms.saturating_add(backoff));
}

/// The value of `key` as the running event sees it.
pub(crate) fn read(event: &Event, object: &ObjectData, key: &str) -> Option<Vec<u8>> {
    match event.writes.get(key) {
        Some(value) => value.clone(),
        None if event.cleared => None,
        None => object.storage.get(key).cloned(),
    }
}

/// Every entry as the running event sees it.
pub(crate) fn view(event: &Event, object: &ObjectData) -> BTreeMap<String, Vec<u8>> {
    let mut all = if event.cleared {
        BTreeMap::new()
    } else {
        object.storage.clone()
    };
    for (key, value) in &event.writes {
        match value {
            Some(value) => all.insert(key.clone(), value.clone()),
            None => all.remove(key),
        };
    }
    all
}

pub(crate) fn check_key(key: &str) -> Result<(), StorageError> {
    if key.len() > MAX_KEY_BYTES {
        return Err(StorageError::KeyTooLarge(MAX_KEY_BYTES as u32));
    }
    Ok(())
}

pub(crate) fn check_value(value: &[u8]) -> Result<(), StorageError> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(StorageError::ValueTooLarge(MAX_VALUE_BYTES as u32));
    }
    Ok(())
}

pub(crate) fn check_count(n: usize) -> Result<(), StorageError> {
    if n > MAX_KEYS_PER_CALL {
        return Err(StorageError::TooManyKeys(MAX_KEYS_PER_CALL as u32));
    }
    Ok(())
}

pub(crate) fn validate_tags(tags: &[String]) -> Result<(), SocketError> {
    if tags.len() > MAX_TAGS {
        return Err(SocketError::InvalidTags(format!("at most {MAX_TAGS} tags")));
    }
    if let Some(t) = tags
        .iter()
        .find(|t| t.is_empty() || t.len() > MAX_TAG_BYTES)
    {
        return Err(SocketError::InvalidTags(format!(
            "tag {:?}: tags are 1..={MAX_TAG_BYTES} bytes",
            t.chars().take(32).collect::<String>()
        )));
    }
    Ok(())
}

pub(crate) fn validate_attachment(value: Option<&[u8]>) -> Result<(), SocketError> {
    match value {
        Some(v) if v.len() > MAX_ATTACHMENT_BYTES => {
            Err(SocketError::AttachmentTooLarge(MAX_ATTACHMENT_BYTES as u32))
        }
        _ => Ok(()),
    }
}

pub(crate) fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("object name is empty".into());
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(format!("object name longer than {MAX_NAME_BYTES} bytes"));
    }
    if name.chars().any(char::is_control) {
        return Err("object name contains control characters".into());
    }
    Ok(())
}

/// Calls `method` of `(class, name)` as the host does for `objects.call`.
pub(crate) fn call(
    class: &str,
    name: &str,
    method: &str,
    payload: &[u8],
) -> Result<Vec<u8>, CallError> {
    validate_name(name).map_err(CallError::InvalidName)?;
    let stub = with(|w| match w.classes.get(class) {
        None => Err(CallError::NoSuchClass(class.to_string())),
        Some(Class::Stub(stub)) => Ok(Some(stub.clone())),
        Some(Class::Object(_)) => Ok(None),
    })?;
    if let Some(stub) = stub {
        return (stub.borrow_mut())(name, method, payload);
    }
    let key = (class.to_string(), name.to_string());
    let payload = payload.to_vec();
    match run(&key, Kind::Other, None, |i| i.call(method, payload)) {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(message)) => Err(CallError::Rejected(message)),
        Err(Failed::Trap(message)) => Err(CallError::Failed(message)),
        Err(Failed::Busy) => Err(CallError::Cycle),
    }
}
