//! Objects: identity → one actor → one wasm instance.
//!
//! - [`Runtime`] is the shared state: config, components, database, committer,
//!   metrics and the directory of live actors.
//! - The directory guarantees at most one actor per [`ObjectId`]: the map is
//!   only changed under its lock, and an actor is the only place an object's
//!   instance is ever created. A placement trait can later put a cluster-wide
//!   owner lookup (leases) in front of it without touching actors.
//! - An [`ObjectHandle`] is a cheap mailbox sender; the actor ([`actor`]) owns
//!   the wasmtime `Store` and runs events one at a time in arrival order.

pub mod actor;
mod guest_log;
mod host;
pub(crate) mod warm;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wasmtime::StoreLimits;
use wasmtime_wasi::{ResourceTable, WasiCtx, WasiCtxView, WasiView};

use crate::alarms::Scheduler;
use crate::bindings::{Frame, Reply, Request};
use crate::components::Components;
use crate::config::Config;
use crate::error::EventError;
use crate::ids::ObjectId;
use crate::metrics::Metrics;
use crate::sockets::conn::AutoResponse;
use crate::sockets::{Outbox, SocketConn, SocketId, SocketTable};
use crate::storage::committer::Committer;
use crate::storage::{Db, ObjectStorage};

/// Something that happens to an object. Events run one at a time, in order.
pub enum Event {
    /// An HTTP request; `socket` is set when it asks for a WebSocket.
    Request {
        /// The request as the guest sees it (boxed: events stay small).
        request: Box<Request>,
        /// The connection to register if the guest accepts the upgrade.
        socket: Option<Arc<SocketConn>>,
        /// Where the reply goes, after the event's writes are durable.
        reply: oneshot::Sender<Result<Reply, EventError>>,
    },
    /// A frame from one of the object's sockets.
    SocketMessage {
        /// The socket.
        id: SocketId,
        /// The frame.
        frame: Frame,
        /// When the host read it (for the wake-latency histogram).
        at: tokio::time::Instant,
    },
    /// One of the object's sockets closed.
    SocketClosed {
        /// The socket.
        id: SocketId,
        /// The close code (1006 when the connection was lost).
        code: u16,
        /// The close reason.
        reason: String,
    },
    /// The object's alarm is due; `retry` counts redeliveries after traps.
    Alarm {
        /// The retry count.
        retry: u32,
    },
    /// A call from another object.
    Call {
        /// The method and the payload (boxed: events stay small).
        call: Box<(String, Vec<u8>)>,
        /// The objects waiting on this call, outermost first.
        chain: Arc<Vec<ObjectId>>,
        /// Where the result goes.
        reply: oneshot::Sender<Result<Result<Vec<u8>, String>, EventError>>,
    },
}

/// A cheap, cloneable handle to an object's mailbox.
///
/// The mailbox holds boxed events: tokio's channel keeps a block of 32 slots
/// for as long as it lives — a hibernating room's whole life — so a slot is a
/// pointer (~0.3 KiB per room) rather than an event (~2 KiB per room).
#[derive(Clone)]
pub struct ObjectHandle {
    tx: mpsc::Sender<Box<Event>>,
    /// Which actor (an object may get a new actor after its old one exited).
    generation: u64,
}

impl ObjectHandle {
    /// Queues an event; gives it back when the actor is gone.
    pub async fn send(&self, event: Event) -> Result<(), Event> {
        self.tx.send(Box::new(event)).await.map_err(|e| *e.0)
    }

    /// Queues an event without waiting: `Err(Some(event))` when the mailbox is
    /// full, `Err(None)` when the actor is gone.
    pub fn try_send(&self, event: Event) -> Result<(), Option<Event>> {
        self.tx.try_send(Box::new(event)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(ev) => Some(*ev),
            mpsc::error::TrySendError::Closed(_) => None,
        })
    }
}

/// Bounds the number of live instances and chooses whom to evict when the
/// bound is reached: the least recently used instance that is not running.
pub(crate) struct LiveInstances {
    permits: Arc<Semaphore>,
    slots: Mutex<HashMap<u64, Arc<LiveSlot>>>,
    clock: AtomicU64,
}

/// One actor's entry in [`LiveInstances`].
#[derive(Default)]
pub(crate) struct LiveSlot {
    /// A logical time of last use (larger is more recent).
    pub(crate) last_used: AtomicU64,
    /// Running a batch: not a candidate for eviction.
    pub(crate) busy: AtomicBool,
    /// Asks the actor to evict its instance.
    pub(crate) evict: Notify,
}

/// How long an instantiation waits for a live-instance slot to free up.
const LIVE_SLOT_WAIT: Duration = Duration::from_secs(5);

impl LiveInstances {
    fn new(max: u32) -> LiveInstances {
        LiveInstances {
            permits: Arc::new(Semaphore::new(max as usize)),
            slots: Mutex::new(HashMap::new()),
            clock: AtomicU64::new(1),
        }
    }

    /// A logical timestamp.
    pub(crate) fn now(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::Relaxed)
    }

    /// Takes a live-instance slot for actor `me`, evicting the least recently
    /// used idle instance if none is free.
    pub(crate) async fn acquire(
        &self,
        me: u64,
        slot: &Arc<LiveSlot>,
    ) -> Option<OwnedSemaphorePermit> {
        let deadline = tokio::time::Instant::now() + LIVE_SLOT_WAIT;
        let permit = loop {
            if let Ok(p) = self.permits.clone().try_acquire_owned() {
                break p;
            }
            self.evict_one(me);
            let wait = tokio::time::timeout(
                Duration::from_millis(50),
                self.permits.clone().acquire_owned(),
            );
            match wait.await {
                Ok(Ok(p)) => break p,
                Ok(Err(_)) => return None,
                Err(_) if tokio::time::Instant::now() >= deadline => return None,
                Err(_) => continue,
            }
        };
        if let Ok(mut slots) = self.slots.lock() {
            slots.insert(me, slot.clone());
        }
        Some(permit)
    }

    /// Forgets actor `me` (its instance was dropped).
    pub(crate) fn release(&self, me: u64) {
        if let Ok(mut slots) = self.slots.lock() {
            slots.remove(&me);
        }
    }

    fn evict_one(&self, me: u64) {
        let Ok(slots) = self.slots.lock() else { return };
        let victim = slots
            .iter()
            .filter(|(g, s)| **g != me && !s.busy.load(Ordering::Relaxed))
            .min_by_key(|(_, s)| s.last_used.load(Ordering::Relaxed));
        if let Some((_, s)) = victim {
            s.evict.notify_one();
        }
    }
}

/// State shared by every object of the host.
pub struct Runtime {
    pub(crate) config: Config,
    pub(crate) components: Components,
    pub(crate) db: Db,
    pub(crate) committer: Committer,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) alarms: Scheduler,
    directory: Mutex<HashMap<ObjectId, ObjectHandle>>,
    next_generation: AtomicU64,
    pub(crate) live: LiveInstances,
    pub(crate) warm: warm::WarmPool,
    next_socket_id: AtomicU64,
    pub(crate) shutdown: CancellationToken,
    pub(crate) tasks: TaskTracker,
}

impl Runtime {
    pub(crate) fn new(
        config: Config,
        components: Components,
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
        if let Some(h) = dir.get(id)
            && !h.tx.is_closed()
        {
            return Ok(h.clone());
        }
        let (tx, rx) = mpsc::channel(self.config.limits.mailbox_capacity);
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        let handle = ObjectHandle { tx, generation };
        dir.insert(id.clone(), handle.clone());
        self.tasks
            .spawn(actor::run(self.clone(), id.clone(), generation, rx));
        Ok(handle)
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
        if dir.get(id).is_some_and(|h| h.generation == generation) {
            dir.remove(id);
        }
        // Senders holding an old handle now fail and come back for a new one.
        rx.close();
        true
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

/// What an object keeps across instances: its storage view and its sockets.
pub struct ObjectCore {
    pub(crate) id: ObjectId,
    pub(crate) rt: Arc<Runtime>,
    pub(crate) storage: ObjectStorage,
    pub(crate) sockets: SocketTable,
    /// The auto-response pair, shared with the object's connections.
    pub(crate) auto: Arc<AutoResponse>,
}

impl ObjectCore {
    /// A core with no sockets yet, its storage view limited to `quota` bytes
    /// (0: none).
    pub(crate) fn new(rt: &Arc<Runtime>, id: ObjectId, quota: u64) -> ObjectCore {
        ObjectCore {
            storage: ObjectStorage::with_quota(rt.db.clone(), id.clone(), quota),
            id,
            rt: rt.clone(),
            sockets: Default::default(),
            auto: Default::default(),
        }
    }
}

/// The data of one wasmtime `Store`: the object's core plus per-instance state.
pub struct ObjectCtx {
    pub(crate) core: ObjectCore,
    /// Gated output of the running event.
    pub(crate) outbox: Outbox,
    /// The call chain of the running event (this object last).
    pub(crate) chain: Arc<Vec<ObjectId>>,
    /// Epoch ticks the running event has used.
    pub(crate) ticks: u64,
    /// The socket an upgrade request would create, during that request: the
    /// guest may already send to it (delivered once the upgrade completes).
    pub(crate) pending_socket: Option<Arc<SocketConn>>,
    pub(crate) limits: StoreLimits,
    /// The guest's stderr, forwarded to the host's log under the object's id.
    pub(crate) stderr: guest_log::GuestStderr,
    wasi: WasiCtx,
    table: ResourceTable,
}

impl ObjectCtx {
    pub(crate) fn new(core: ObjectCore) -> ObjectCtx {
        let limits = wasmtime::StoreLimitsBuilder::new()
            .memory_size(core.rt.config.limits.max_instance_memory_bytes)
            .instances(4)
            .tables(20)
            .memories(4)
            .build();
        // std's WASI imports need a context; it grants nothing but stderr (so
        // guest panic messages reach the host's log, with the object's id),
        // the clocks, and the class's configured vars as environment variables.
        let stderr = guest_log::GuestStderr::new(core.id.to_string());
        let mut wasi = wasmtime_wasi::WasiCtxBuilder::new();
        wasi.stderr(stderr.clone());
        if let Some(class) = core.rt.config.classes.get(&core.id.class) {
            for (k, v) in &class.vars {
                wasi.env(k, v);
            }
        }
        ObjectCtx {
            chain: Arc::new(vec![core.id.clone()]),
            core,
            outbox: Vec::new(),
            ticks: 0,
            pending_socket: None,
            limits,
            stderr,
            wasi: wasi.build(),
            table: ResourceTable::new(),
        }
    }
}

impl WasiView for ObjectCtx {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_stay_small() {
        // Every queued event and every idle connection's state holds one.
        assert!(
            std::mem::size_of::<Event>() <= 80,
            "{}",
            std::mem::size_of::<Event>()
        );
    }
}
