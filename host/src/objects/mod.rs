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
mod host;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wasmtime::StoreLimits;
use wasmtime_wasi::{ResourceTable, WasiCtx, WasiCtxView, WasiView};

use crate::bindings::{Frame, Reply, Request};
use crate::components::Components;
use crate::config::Config;
use crate::error::EventError;
use crate::ids::ObjectId;
use crate::metrics::Metrics;
use crate::sockets::{Outbox, SocketConn, SocketId, SocketTable};
use crate::storage::committer::Committer;
use crate::storage::{Db, ObjectStorage};

/// Something that happens to an object. Events run one at a time, in order.
pub enum Event {
    /// An HTTP request; `socket` is set when it asks for a WebSocket.
    Request {
        /// The request as the guest sees it.
        request: Request,
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
    /// A call from another object.
    Call {
        /// The method.
        method: String,
        /// The payload.
        payload: Vec<u8>,
        /// The objects waiting on this call, outermost first.
        chain: Arc<Vec<ObjectId>>,
        /// Where the result goes.
        reply: oneshot::Sender<Result<Result<Vec<u8>, String>, EventError>>,
    },
}

/// A cheap, cloneable handle to an object's mailbox.
#[derive(Clone)]
pub struct ObjectHandle {
    tx: mpsc::Sender<Event>,
}

impl ObjectHandle {
    /// Queues an event; false when the actor is gone.
    pub async fn send(&self, event: Event) -> bool {
        self.tx.send(event).await.is_ok()
    }
}

/// State shared by every object of the host.
pub struct Runtime {
    pub(crate) config: Config,
    pub(crate) components: Components,
    pub(crate) db: Db,
    pub(crate) committer: Committer,
    pub(crate) metrics: Arc<Metrics>,
    directory: Mutex<HashMap<ObjectId, ObjectHandle>>,
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
    ) -> Arc<Runtime> {
        Arc::new(Runtime {
            config,
            components,
            db,
            committer,
            metrics,
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
        let handle = ObjectHandle { tx };
        dir.insert(id.clone(), handle.clone());
        let rt = self.clone();
        let object = id.clone();
        let my_handle = handle.clone();
        self.tasks.spawn(actor::run(rt, object, my_handle, rx));
        Ok(handle)
    }

    /// Delivers an event to `id`, starting its actor if needed.
    pub(crate) async fn send(
        self: &Arc<Self>,
        id: &ObjectId,
        event: Event,
    ) -> Result<(), EventError> {
        let handle = self.handle(id)?;
        if handle.send(event).await {
            Ok(())
        } else {
            Err(EventError::Unavailable(id.clone()))
        }
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
                    method,
                    payload,
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
    pub(crate) limits: StoreLimits,
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
        ObjectCtx {
            chain: Arc::new(vec![core.id.clone()]),
            core,
            outbox: Vec::new(),
            ticks: 0,
            limits,
            // std's WASI imports need a context; it grants nothing but stderr
            // (so guest panic messages reach the host's log) and the clocks.
            wasi: wasmtime_wasi::WasiCtxBuilder::new()
                .inherit_stderr()
                .build(),
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
