//! What an object's wasmtime `Store` holds: the object's [`ObjectCore`] (kept
//! across instances) and per-instance state ([`ObjectCtx`]). The context
//! builds each capability's view ([`Capabilities`]); the capabilities know
//! nothing of objects.

use std::sync::Arc;

use wasmtime::StoreLimits;
use wasmtime_wasi::{ResourceTable, WasiCtx, WasiCtxView, WasiView};

use super::Runtime;
use crate::alarms::AlarmsView;
use crate::budget::GuestClock;
use crate::calls::ObjectsView;
use crate::components::Capabilities;
use crate::guest_log::{GuestStderr, LogView};
use crate::ids::ObjectId;
use crate::sockets::{AutoResponse, Outbox, SocketConn, SocketTable, SocketsView};
use crate::storage::{Db, ObjectStorage, StorageView};
use crate::upgrade::VersionsView;

/// What an object keeps across instances: its storage view and its sockets.
pub struct ObjectCore {
    pub(crate) id: ObjectId,
    pub(crate) storage: ObjectStorage,
    pub(crate) sockets: SocketTable,
    /// The auto-response pair, shared with the object's connections.
    pub(crate) auto: Arc<AutoResponse>,
}

impl ObjectCore {
    /// A core with no sockets yet, its storage view limited to `quota` bytes
    /// (0: none).
    pub(crate) fn new(db: &Db, id: ObjectId, quota: u64) -> ObjectCore {
        ObjectCore {
            storage: ObjectStorage::with_quota(db.clone(), id.clone(), quota),
            id,
            sockets: Default::default(),
            auto: Default::default(),
        }
    }
}

/// The data of one wasmtime `Store`: the object's core plus per-instance state.
pub struct ObjectCtx {
    pub(crate) core: ObjectCore,
    /// The host: other objects, for `objects.call`.
    pub(crate) rt: Arc<Runtime>,
    /// A throwaway store (a deploy's trial): `objects.call` is refused.
    no_calls: bool,
    /// Gated output of the running event.
    pub(crate) outbox: Outbox,
    /// The call chain of the running event (this object last).
    pub(crate) chain: Arc<Vec<ObjectId>>,
    /// The running event's guest time, and its turn in the long lane.
    pub(crate) clock: GuestClock,
    /// The socket an upgrade request would create, during that request: the
    /// guest may already send to it (delivered once the upgrade completes).
    pub(crate) pending_socket: Option<Arc<SocketConn>>,
    pub(crate) limits: StoreLimits,
    /// The guest's stderr, forwarded to the host's log under the object's id.
    pub(crate) stderr: GuestStderr,
    wasi: WasiCtx,
    table: ResourceTable,
}

impl ObjectCtx {
    pub(crate) fn new(core: ObjectCore, rt: &Arc<Runtime>) -> ObjectCtx {
        // The pool caps memories and tables per component too (see
        // `components::engine`); the store's caps are never the lower ones.
        let l = &rt.config.limits;
        let limits = wasmtime::StoreLimitsBuilder::new()
            .memory_size(l.max_instance_memory_bytes)
            .instances(l.max_core_instances as usize)
            .tables((l.max_tables as usize).max(20))
            .memories((l.max_memories as usize).max(4))
            .build();
        // std's WASI imports need a context; it grants nothing but stderr (so
        // guest panic messages reach the host's log, with the object's id),
        // the clocks, and the class's configured vars as environment variables.
        let stderr = GuestStderr::limited(
            core.id.to_string(),
            crate::guest_log::LogLimits {
                per_event: l.max_log_lines_per_event,
                per_second: l.max_log_lines_per_second,
                held: l.max_trap_stderr_lines,
            },
            Some(rt.metrics.clone()),
        );
        let mut wasi = wasmtime_wasi::WasiCtxBuilder::new();
        wasi.stderr(stderr.clone());
        if let Some(class) = rt.config.classes.get(&core.id.class) {
            for (k, v) in &class.vars {
                wasi.env(k, v);
            }
        }
        ObjectCtx {
            chain: Arc::new(vec![core.id.clone()]),
            core,
            rt: rt.clone(),
            no_calls: false,
            outbox: Vec::new(),
            clock: GuestClock::new(std::time::Duration::from_millis(l.max_event_cpu_ms)),
            pending_socket: None,
            limits,
            stderr,
            wasi: wasi.build(),
            table: ResourceTable::new(),
        }
    }
}

impl ObjectCtx {
    /// Makes `objects.call` fail: the store is a trial, bound to no object.
    pub(crate) fn refuse_calls(&mut self) {
        self.no_calls = true;
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

impl Capabilities for ObjectCtx {
    fn storage(&mut self) -> StorageView<'_> {
        StorageView {
            storage: &mut self.core.storage,
        }
    }

    fn sockets(&mut self) -> SocketsView<'_> {
        SocketsView {
            table: &mut self.core.sockets,
            outbox: &mut self.outbox,
            pending: self.pending_socket.as_ref(),
            auto: &self.core.auto,
            limits: self.rt.config.limits.sockets(),
        }
    }

    fn alarms(&mut self) -> AlarmsView<'_> {
        AlarmsView {
            storage: &mut self.core.storage,
            object: &self.core.id,
        }
    }

    fn objects(&mut self) -> ObjectsView<'_> {
        ObjectsView {
            object: &self.core.id,
            chain: &self.chain,
            clock: &self.clock,
            calls: if self.no_calls {
                &crate::calls::NoCalls
            } else {
                &self.rt
            },
        }
    }

    fn versions(&mut self) -> VersionsView<'_> {
        VersionsView {
            storage: &mut self.core.storage,
        }
    }

    fn log(&mut self) -> LogView<'_> {
        LogView {
            object: &self.core.id,
            budget: &self.stderr,
        }
    }
}
