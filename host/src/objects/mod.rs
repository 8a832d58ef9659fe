//! Objects: identity → one actor → one wasm instance.
//!
//! - [`Runtime`] (here) is the shared state: config, components, database,
//!   committer, metrics and the directory of live actors.
//! - The directory guarantees at most one actor per [`ObjectId`]: the map is
//!   only changed under its lock, and an actor is the only place an object's
//!   instance is ever created. A placement trait can later put a cluster-wide
//!   owner lookup (leases) in front of it without touching actors.
//! - [`event`]: an object's [`Event`]s and the cheap [`ObjectHandle`] to its
//!   mailbox; the actor ([`actor`]) owns the wasmtime `Store` and runs events
//!   one at a time in arrival order.
//! - [`ctx`]: what the `Store` holds, and the capability views built from it.
//! - `live`: the bound on live instances; `warm`: instances made ahead of
//!   time.
//!
//! The directory is what the capabilities reach other objects through:
//! `objects.call` ([`ObjectCalls`]), alarm delivery ([`AlarmTarget`]) and the
//! connections' events ([`crate::sockets::SocketInbox`], on [`ObjectHandle`]).

pub mod actor;
pub mod admin;
pub mod ctx;
pub mod deploy;
pub mod event;
pub mod inventory;
pub(crate) mod live;
pub(crate) mod warm;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::alarms::{AlarmTarget, Scheduler};
use crate::calls::{CallFuture, ObjectCalls};
use crate::components::Components;
use crate::config::Config;
use crate::error::{EventError, Report};
use crate::ids::ObjectId;
use crate::metrics::Metrics;
use crate::sockets::SocketId;
use crate::storage::Db;
use crate::storage::committer::Committer;
pub use ctx::{ObjectCore, ObjectCtx};
pub use event::{Event, ObjectHandle};
use live::LiveInstances;

/// One object in the directory: its actor's mailbox, and what the admin API
/// reports about it.
struct Entry {
    handle: ObjectHandle,
    status: Arc<ObjectStatus>,
}

/// What an object's actor runs now, for `GET /admin/classes`.
#[derive(Default)]
pub struct ObjectStatus {
    /// The version of its live instance, or of the last one (hibernated).
    version: Mutex<Option<String>>,
    /// It has a live instance.
    live: AtomicBool,
    /// Its open WebSockets (updated after each batch of events).
    pub(crate) sockets: std::sync::atomic::AtomicUsize,
    /// `roomhost evict`: drop the live instance, keep the sockets.
    pub(crate) evict: tokio::sync::Notify,
}

impl ObjectStatus {
    /// A live instance of `version` now runs.
    pub(crate) fn running(&self, version: &str) {
        if let Ok(mut v) = self.version.lock()
            && v.as_deref() != Some(version)
        {
            *v = Some(version.to_string());
        }
        self.live.store(true, Ordering::Relaxed);
    }

    /// The instance is gone (evicted, trapped, swapped).
    pub(crate) fn dropped(&self) {
        self.live.store(false, Ordering::Relaxed);
    }
}

/// State shared by every object of the host.
pub struct Runtime {
    pub(crate) config: Config,
    pub(crate) components: Components<ObjectCtx>,
    pub(crate) db: Db,
    pub(crate) committer: Committer,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) alarms: Scheduler,
    directory: Mutex<HashMap<ObjectId, Entry>>,
    next_generation: AtomicU64,
    pub(crate) live: LiveInstances,
    pub(crate) warm: warm::WarmPool,
    next_socket_id: AtomicU64,
    pub(crate) shutdown: CancellationToken,
    pub(crate) tasks: TaskTracker,
    /// Deploys, rollbacks and promotions run one at a time.
    admin_lock: tokio::sync::Mutex<()>,
    /// Recent traps, for `roomhost inspect`.
    pub(crate) traps: admin::TrapLog,
}

impl Runtime {
    pub(crate) fn new(
        config: Config,
        components: Components<ObjectCtx>,
        db: Db,
        committer: Committer,
        metrics: Arc<Metrics>,
        alarms: Scheduler,
    ) -> Arc<Runtime> {
        let live = LiveInstances::new(config.max_live_instances);
        Arc::new(Runtime {
            live,
            warm: Default::default(),
            next_generation: AtomicU64::new(1),
            config,
            components,
            db,
            committer,
            metrics,
            alarms,
            directory: Mutex::new(HashMap::new()),
            next_socket_id: AtomicU64::new(1),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            admin_lock: tokio::sync::Mutex::new(()),
            traps: Default::default(),
        })
    }

    /// A fresh socket id.
    pub(crate) fn next_socket_id(&self) -> SocketId {
        self.next_socket_id.fetch_add(1, Ordering::Relaxed)
    }

    /// The handle of `id`'s actor, starting the actor if there is none. This is
    /// the single-instance guarantee: only here, under the directory lock, is an
    /// actor created.
    pub(crate) fn handle(self: &Arc<Self>, id: &ObjectId) -> Result<ObjectHandle, EventError> {
        if !self.components.has_class(&id.class) {
            return Err(EventError::NoSuchClass(id.class.clone()));
        }
        crate::ids::validate_name(&id.name).map_err(EventError::InvalidName)?;
        if self.shutdown.is_cancelled() {
            return Err(EventError::Unavailable(id.clone()));
        }
        let mut dir = self
            .directory
            .lock()
            .map_err(|_| EventError::Unavailable(id.clone()))?;
        if let Some(e) = dir.get(id)
            && !e.handle.is_closed()
        {
            return Ok(e.handle.clone());
        }
        let (tx, rx) = mpsc::channel(self.config.limits.mailbox_capacity);
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        let handle = ObjectHandle { tx, generation };
        let status = Arc::new(ObjectStatus::default());
        let entry = Entry {
            handle: handle.clone(),
            status: status.clone(),
        };
        dir.insert(id.clone(), entry);
        let actor = actor::run(self.clone(), id.clone(), generation, rx, status);
        self.tasks.spawn(self.components.long_lane().run(actor));
        Ok(handle)
    }

    /// The handle of `id`'s actor if it has one (an operator's look must not
    /// start one).
    pub(crate) fn existing_handle(&self, id: &ObjectId) -> Option<ObjectHandle> {
        let dir = self.directory.lock().ok()?;
        dir.get(id)
            .filter(|e| !e.handle.is_closed())
            .map(|e| e.handle.clone())
    }

    /// `live` (an instance), `hibernated` (sockets, no instance) or `stored`
    /// (neither), and the version of its instance (or of the last one).
    pub(crate) fn object_state(&self, id: &ObjectId) -> (&'static str, Option<String>) {
        let Ok(dir) = self.directory.lock() else {
            return ("stored", None);
        };
        match dir.get(id).filter(|e| !e.handle.is_closed()) {
            Some(e) => {
                let version = e.status.version.lock().ok().and_then(|v| v.clone());
                if e.status.live.load(Ordering::Relaxed) {
                    ("live", version)
                } else if e.status.sockets.load(Ordering::Relaxed) > 0 {
                    ("hibernated", version)
                } else {
                    ("stored", version)
                }
            }
            None => ("stored", None),
        }
    }

    /// An idle actor leaves the directory (if it is still the one there) and
    /// closes its mailbox — unless an event is already waiting in it. Done under
    /// the directory lock, so no new actor for the id starts meanwhile.
    pub(crate) fn leave_directory(
        &self,
        id: &ObjectId,
        generation: u64,
        rx: &mut mpsc::Receiver<Box<Event>>,
    ) -> bool {
        let Ok(mut dir) = self.directory.lock() else {
            return false;
        };
        if !rx.is_empty() {
            return false;
        }
        if dir
            .get(id)
            .is_some_and(|e| e.handle.generation == generation)
        {
            dir.remove(id);
        }
        // Senders holding an old handle now fail and come back for a new one.
        rx.close();
        true
    }

    /// For each class and version: how many objects run it live, and how many
    /// hibernate on it (their sockets open, no instance; they wake on the
    /// version that serves then).
    pub fn objects_by_version(&self) -> HashMap<(String, String), (u64, u64)> {
        let mut out: HashMap<(String, String), (u64, u64)> = HashMap::new();
        let Ok(dir) = self.directory.lock() else {
            return out;
        };
        for (id, e) in dir.iter() {
            let version = e.status.version.lock().ok().and_then(|v| v.clone());
            let Some(version) = version else { continue };
            let counts = out.entry((id.class.clone(), version)).or_default();
            if e.status.live.load(Ordering::Relaxed) {
                counts.0 += 1;
            } else {
                counts.1 += 1;
            }
        }
        out
    }

    /// Delivers an event to `id`, starting its actor if needed.
    pub(crate) async fn send(
        self: &Arc<Self>,
        id: &ObjectId,
        mut event: Event,
    ) -> Result<(), EventError> {
        // An actor that exited between our lookup and our send gives the event
        // back; the next lookup starts a new one.
        for _ in 0..4 {
            let handle = self.handle(id)?;
            match handle.send(event).await {
                Ok(()) => return Ok(()),
                Err(back) => event = back,
            }
        }
        Err(EventError::Unavailable(id.clone()))
    }

    /// Calls `on-call` of `id` and waits (up to the call timeout) for its result.
    pub(crate) async fn call(
        self: &Arc<Self>,
        id: &ObjectId,
        method: String,
        payload: Vec<u8>,
        chain: Arc<Vec<ObjectId>>,
    ) -> Result<Result<Vec<u8>, String>, EventError> {
        if chain.contains(id) {
            return Err(EventError::Cycle(id.clone()));
        }
        let (reply, wait) = oneshot::channel();
        let timeout = Duration::from_millis(self.config.limits.call_timeout_ms);
        let call = async {
            self.send(
                id,
                Event::Call {
                    call: Box::new((method, payload)),
                    chain,
                    reply,
                },
            )
            .await?;
            wait.await
                .map_err(|_| EventError::Unavailable(id.clone()))?
        };
        tokio::time::timeout(timeout, call)
            .await
            .map_err(|_| EventError::Timeout(id.clone()))?
    }
}

/// Guests call other objects through the directory.
impl ObjectCalls for Arc<Runtime> {
    fn call(
        &self,
        target: ObjectId,
        method: String,
        payload: Vec<u8>,
        chain: Arc<Vec<ObjectId>>,
    ) -> CallFuture<'_> {
        Box::pin(async move { Runtime::call(self, &target, method, payload, chain).await })
    }
}

/// Due alarms reach their objects through the directory. Weak: the scheduler
/// must not keep the host alive.
pub(crate) struct AlarmDelivery(pub(crate) Weak<Runtime>);

impl AlarmTarget for AlarmDelivery {
    fn alarm_due(&self, id: ObjectId, retry: u32) {
        let Some(rt) = self.0.upgrade() else { return };
        let rt2 = rt.clone();
        rt.tasks.spawn(async move {
            if let Err(e) = rt2.send(&id, Event::Alarm { retry }).await {
                tracing::warn!(object = %id, error = %Report(&e), "cannot deliver an alarm");
            }
        });
    }
}
