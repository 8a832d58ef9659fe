//! Components: the wasmtime engine, the linker with every host capability, and
//! each class's component compiled once and pre-linked (`InstancePre`), so that
//! an instance is created in microseconds.
//!
//! A class names its component as `builtin:NAME` (embedded in the binary by the
//! build script) or as a path to a `.wasm` file. A component must target the
//! `roomhost:object` world: it is validated by linking it, and rejected with a
//! clear error otherwise.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config as EngineConfig, Engine};

use crate::bindings::{Object, ObjectPre};
use crate::config::Config;
use crate::error::ComponentError;
use crate::objects::ObjectCtx;

/// The components built into the binary (see `host/build.rs`).
pub mod builtin {
    include!(concat!(env!("OUT_DIR"), "/guests.rs"));
}

/// The names of the built-in classes.
pub const BUILTIN_NAMES: [&str; 2] = ["chat-room", "rate-limiter"];

/// Pool slots beyond `max_live_instances` and the pre-warmed instances (an
/// instance being dropped while its successor is created).
const SPARE_SLOTS: u32 = 16;

/// How often the epoch advances while guest code runs; a guest's time budget
/// is counted in these.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// How often the epoch advances once no guest code has run for [`QUIET_AFTER`]:
/// an idle host should not wake a hundred times a second. An event that starts
/// then gets its first tick up to this much later (its time budget is that much
/// longer, once); from then on ticks come every [`EPOCH_TICK`].
pub const QUIET_TICK: Duration = Duration::from_millis(100);

/// How long without guest code before the epoch slows to [`QUIET_TICK`].
pub const QUIET_AFTER: Duration = Duration::from_secs(1);

/// The bytes of a built-in component.
pub fn builtin_bytes(name: &str) -> Option<&'static [u8]> {
    match name {
        "chat-room" => Some(builtin::CHAT_ROOM),
        "rate-limiter" => Some(builtin::RATE_LIMITER),
        _ => None,
    }
}

/// Every configured class, ready to instantiate.
pub struct Components {
    pub(crate) engine: Engine,
    classes: HashMap<String, ObjectPre<ObjectCtx>>,
    ticker_stop: Arc<AtomicBool>,
    /// Guest activity, for the epoch ticker: calls running now, and a count of
    /// calls started (so a burst of short calls also keeps the ticker fast).
    activity: Arc<Activity>,
}

/// What the epoch ticker watches.
#[derive(Default)]
struct Activity {
    running: AtomicUsize,
    started: AtomicU64,
}

/// Marks guest code as running while it lives (see [`Components::guest_running`]).
pub(crate) struct RunningGuard(Arc<Activity>);

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Components {
    /// Builds the engine and compiles and links every class in the config.
    pub fn load(config: &Config) -> Result<Components, ComponentError> {
        let mut ec = EngineConfig::new();
        ec.wasm_component_model(true);
        ec.epoch_interruption(true);
        // The pooling allocator: instance memory comes from pre-reserved slots, so
        // creating (waking) and dropping (evicting) an instance is cheap and its
        // memory returns to the pool. The host never has more live instances than
        // `max_live_instances` (see `objects::LiveInstances`).
        let warm = config
            .prewarm_instances
            .saturating_mul(u32::try_from(config.classes.len()).unwrap_or(u32::MAX));
        let slots = config
            .max_live_instances
            .saturating_add(SPARE_SLOTS)
            .saturating_add(warm);
        let mut pool = wasmtime::PoolingAllocationConfig::new();
        pool.total_component_instances(slots)
            .total_core_instances(slots.saturating_mul(8))
            .total_memories(slots)
            .total_tables(slots.saturating_mul(4))
            .total_stacks(slots)
            .max_core_instances_per_component(16)
            .max_memories_per_component(2)
            .max_tables_per_component(8)
            .max_memory_size(config.limits.max_instance_memory_bytes)
            .async_stack_keep_resident(0);
        ec.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
        // An evicted instance's fiber stack goes back to the kernel like its
        // linear memory: without this, every stack page a live instance ever
        // touched stays resident after eviction.
        ec.async_stack_zeroing(true);
        // Compiled components are cached next to the database, keyed by content
        // and engine settings: later starts skip Cranelift entirely (faster, and
        // its code never has to be paged in).
        if let Some(dir) = cache_dir(config) {
            let mut cc = wasmtime::CacheConfig::new();
            cc.with_directory(dir);
            match wasmtime::Cache::new(cc) {
                Ok(cache) => {
                    ec.cache(Some(cache));
                }
                Err(e) => tracing::warn!("compiled-component cache disabled: {e:#}"),
            }
        }
        let engine = Engine::new(&ec).map_err(|e| ComponentError::Engine(e.to_string()))?;
        let mut linker: Linker<ObjectCtx> = Linker::new(&engine);
        // std's WASI imports, with an empty context: no files, network or env.
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| ComponentError::Engine(e.to_string()))?;
        Object::add_to_linker::<ObjectCtx, HasSelf<ObjectCtx>>(&mut linker, |ctx| ctx)
            .map_err(|e| ComponentError::Engine(e.to_string()))?;

        let mut classes = HashMap::new();
        for (class, cc) in &config.classes {
            let component = if let Some(name) = cc.component.strip_prefix("builtin:") {
                let bytes = builtin_bytes(name).ok_or_else(|| ComponentError::UnknownBuiltin {
                    class: class.clone(),
                    name: name.to_string(),
                })?;
                compile(&engine, class, bytes)?
            } else {
                let path = PathBuf::from(&cc.component);
                let bytes = std::fs::read(&path).map_err(|source| ComponentError::Read {
                    class: class.clone(),
                    path: path.clone(),
                    source,
                })?;
                compile(&engine, class, &bytes)?
            };
            let pre = link(&linker, class, &component)?;
            classes.insert(class.clone(), pre);
        }

        let ticker_stop = Arc::new(AtomicBool::new(false));
        let activity = Arc::new(Activity::default());
        let (weak, stop, seen) = (engine.weak(), ticker_stop.clone(), activity.clone());
        std::thread::Builder::new()
            .name("roomhost-epoch".into())
            .spawn(move || {
                let quiet_after = (QUIET_AFTER.as_millis() / EPOCH_TICK.as_millis()) as u32;
                let mut last_started = 0;
                let mut quiet_ticks = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    let quiet = quiet_ticks >= quiet_after;
                    std::thread::sleep(if quiet { QUIET_TICK } else { EPOCH_TICK });
                    match weak.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                    let started = seen.started.load(Ordering::Relaxed);
                    if started != last_started || seen.running.load(Ordering::Relaxed) > 0 {
                        last_started = started;
                        quiet_ticks = 0;
                    } else {
                        quiet_ticks = quiet_ticks.saturating_add(1);
                    }
                }
            })
            .map_err(|e| ComponentError::Engine(format!("cannot start epoch thread: {e}")))?;

        Ok(Components {
            engine,
            classes,
            ticker_stop,
            activity,
        })
    }

    /// The pre-linked component of a class.
    pub(crate) fn class(&self, class: &str) -> Option<&ObjectPre<ObjectCtx>> {
        self.classes.get(class)
    }

    /// Marks guest code as running until the guard drops: keeps the epoch
    /// ticking every [`EPOCH_TICK`].
    pub(crate) fn guest_running(&self) -> RunningGuard {
        self.activity.started.fetch_add(1, Ordering::Relaxed);
        self.activity.running.fetch_add(1, Ordering::Relaxed);
        RunningGuard(self.activity.clone())
    }

    /// True when a class of this name is configured.
    pub fn has_class(&self, class: &str) -> bool {
        self.classes.contains_key(class)
    }
}

impl Drop for Components {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

/// `<data dir>/cache`, beside the database file.
fn cache_dir(config: &Config) -> Option<PathBuf> {
    let parent = config.data.parent()?;
    let parent = if parent.as_os_str().is_empty() {
        std::path::Path::new(".")
    } else {
        parent
    };
    // The cache wants an absolute path; the data directory may not exist yet.
    std::fs::create_dir_all(parent).ok()?;
    Some(std::fs::canonicalize(parent).ok()?.join("cache"))
}

fn compile(engine: &Engine, class: &str, bytes: &[u8]) -> Result<Component, ComponentError> {
    Component::new(engine, bytes).map_err(|e| ComponentError::Invalid {
        class: class.to_string(),
        message: format!("{e:#}"),
    })
}

fn link(
    linker: &Linker<ObjectCtx>,
    class: &str,
    component: &Component,
) -> Result<ObjectPre<ObjectCtx>, ComponentError> {
    let invalid = |e: wasmtime::Error| ComponentError::Invalid {
        class: class.to_string(),
        message: format!("{e:#}"),
    };
    let pre = linker.instantiate_pre(component).map_err(invalid)?;
    ObjectPre::new(pre).map_err(invalid)
}
