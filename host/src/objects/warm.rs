//! Pre-warmed instances: for each class in use, a few instances created ahead
//! of time, so that waking an evicted object (or starting a new one) costs a
//! swap instead of an instantiation.
//!
//! A warm instance is instantiated against a placeholder object of its class
//! (empty name, no sockets, nothing in storage): the component's start
//! functions run then, before any object is bound — they see an empty object,
//! and whatever they write is discarded. The object's own `init()` runs when the
//! instance is given to it, as with any new instance. A refill task per class
//! replaces each instance taken, off the event's path.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use wasmtime::Store;

use crate::bindings::Object;
use crate::guest_log::GuestFailure;
use crate::ids::ObjectId;
use crate::objects::{ObjectCore, ObjectCtx, Runtime};

/// An instance waiting for its object.
pub(crate) struct WarmInstance {
    pub(crate) store: Store<ObjectCtx>,
    pub(crate) object: Object,
    /// The version it is an instance of.
    version: String,
}

impl WarmInstance {
    /// Binds the instance to `core`'s object. Its placeholder core (and
    /// anything its start functions wrote) is dropped.
    pub(crate) fn bind(mut self, core: ObjectCore, id: &ObjectId) -> (Store<ObjectCtx>, Object) {
        drop(std::mem::replace(&mut self.store.data_mut().core, core));
        self.store.data().stderr.set_label(id.to_string());
        // The deadline set when it was made has passed long ago.
        self.store.set_epoch_deadline(1);
        (self.store, self.object)
    }
}

/// The pre-warmed instances of every class.
#[derive(Default)]
pub(crate) struct WarmPool {
    ready: Mutex<HashMap<String, Vec<WarmInstance>>>,
    /// Classes with a refill task running.
    filling: Mutex<HashSet<String>>,
}

impl WarmPool {
    /// Takes a warm instance of `class` at `version`, if there is one. The
    /// pool holds instances of the class's active version: when `version` is
    /// it (`active`), any of another version (made just before a deploy or a
    /// rollback) is dropped on the way; an object on a canary version finds
    /// none and instantiates its own.
    pub(crate) fn take(
        &self,
        class: &str,
        version: &str,
        active: bool,
        metrics: &crate::metrics::Metrics,
    ) -> Option<WarmInstance> {
        if !active {
            return None;
        }
        let mut ready = self.ready.lock().ok()?;
        let pool = ready.get_mut(class)?;
        while let Some(warm) = pool.pop() {
            metrics.warm_taken();
            if warm.version == version {
                return Some(warm);
            }
        }
        None
    }

    /// Drops every warm instance of `class` (its version changed).
    pub(crate) fn clear_class(&self, class: &str, metrics: &crate::metrics::Metrics) {
        let drained = match self.ready.lock() {
            Ok(mut r) => r.remove(class).unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        for _ in &drained {
            metrics.warm_taken();
        }
    }

    fn count(&self, class: &str) -> usize {
        self.ready
            .lock()
            .map(|r| r.get(class).map_or(0, Vec::len))
            .unwrap_or(usize::MAX)
    }

    fn put(&self, class: &str, warm: WarmInstance) {
        if let Ok(mut r) = self.ready.lock() {
            r.entry(class.to_string()).or_default().push(warm);
        }
    }

    /// Drops every warm instance (shutdown).
    pub(crate) fn clear(&self, metrics: &crate::metrics::Metrics) {
        let drained: Vec<WarmInstance> = match self.ready.lock() {
            Ok(mut r) => r.drain().flat_map(|(_, v)| v).collect(),
            Err(_) => Vec::new(),
        };
        for _ in &drained {
            metrics.warm_taken();
        }
        drop(drained);
    }
}

/// Starts a task that brings `class`'s warm instances up to the configured
/// number, unless one is already at it.
pub(crate) fn refill(rt: &Arc<Runtime>, class: &str) {
    let want = rt.config.prewarm_instances as usize;
    if want == 0 || rt.shutdown.is_cancelled() || rt.warm.count(class) >= want {
        return;
    }
    match rt.warm.filling.lock() {
        Ok(mut f) => {
            if !f.insert(class.to_string()) {
                return;
            }
        }
        Err(_) => return,
    }
    let rt = rt.clone();
    let class = class.to_string();
    let lane = rt.components.long_lane();
    rt.tasks.clone().spawn(lane.run(async move {
        while !rt.shutdown.is_cancelled() && rt.warm.count(&class) < want {
            let Some(version) = rt.components.active(&class) else {
                break;
            };
            let mut store = new_store(&rt, placeholder(&rt, &class));
            let running = rt.components.guest_running();
            let made = version.pre.instantiate_async(&mut store).await;
            drop(running);
            // A start function that ran long leaves the long lane here.
            store.data().clock.finish();
            match made {
                Ok(object) => {
                    // Counted as created when an object takes it.
                    rt.metrics.warm_added();
                    let version = version.info.id.clone();
                    rt.warm.put(&class, WarmInstance { store, object, version });
                }
                Err(e) => {
                    // The pool may be full (every slot live): try again after
                    // the next instantiation of the class.
                    tracing::debug!(class = %class, error = %format!("{e:#}"), "could not pre-warm an instance");
                    break;
                }
            }
        }
        if let Ok(mut f) = rt.warm.filling.lock() {
            f.remove(&class);
        }
        if rt.shutdown.is_cancelled() {
            rt.warm.clear(&rt.metrics);
        }
    }));
}

/// Instantiates `version` in a throwaway store bound to no object and runs
/// its `init`: what a deploy must pass. Calls to other objects are refused
/// there, and whatever it writes is discarded. A failure carries what the
/// guest wrote to stderr (its panic message).
pub(crate) async fn trial(
    rt: &Arc<Runtime>,
    class: &str,
    version: &crate::components::Version<ObjectCtx>,
) -> Result<(), GuestFailure> {
    let mut store = new_store(rt, placeholder(rt, class));
    store.data_mut().refuse_calls();
    let stderr = store.data().stderr.clone();
    stderr.capture();
    let running = rt.components.guest_running();
    let result = match version.pre.instantiate_async(&mut store).await {
        Ok(object) => object.roomhost_object_handler().call_init(&mut store).await,
        Err(e) => Err(crate::components::engine::explain_limits(e)),
    };
    drop(running);
    match result {
        Ok(()) => {
            stderr.release();
            Ok(())
        }
        Err(e) => Err(GuestFailure::new(&e, stderr.take())),
    }
}

/// The object a warm instance is made for: its class, no name, nothing stored.
fn placeholder(rt: &Arc<Runtime>, class: &str) -> ObjectCore {
    let id = ObjectId {
        class: class.to_string(),
        name: String::new(),
    };
    ObjectCore::new(&rt.db, id, 0)
}

/// A store for `core`, with the host's memory limits and CPU-time budget.
pub(crate) fn new_store(rt: &Arc<Runtime>, core: ObjectCore) -> Store<ObjectCtx> {
    let mut store = Store::new(&rt.components.engine, ObjectCtx::new(core, rt));
    store.limiter(|ctx| &mut ctx.limits);
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(|ctx| ctx.data().clock.tick().map_err(wasmtime::Error::new));
    store
}
