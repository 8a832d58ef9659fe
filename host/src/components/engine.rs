//! The wasmtime engine: the pooling allocator sized from the config, the
//! compiled-component cache (beside the database unless configured), and the
//! epoch ticker that counts guest time.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use wasmtime::{Config as EngineConfig, Engine};

use crate::config::Config;
use crate::error::ComponentError;

pub use crate::budget::EPOCH_TICK;

/// How often the epoch advances once no guest code has run for [`QUIET_AFTER`]:
/// an idle host should not wake a hundred times a second. The first guest call
/// after a quiet spell wakes the ticker at once, so its first slice is no
/// longer than any other.
pub const QUIET_TICK: Duration = Duration::from_millis(100);

/// How long without guest code before the epoch slows to [`QUIET_TICK`].
pub const QUIET_AFTER: Duration = Duration::from_secs(1);

/// The engine for `config`'s classes and limits, and its compiled-component
/// cache (if the data directory can hold one).
pub(crate) fn engine(config: &Config) -> Result<(Engine, Option<wasmtime::Cache>), ComponentError> {
    let mut ec = EngineConfig::new();
    ec.wasm_component_model(true);
    ec.epoch_interruption(true);
    // The pooling allocator: instance memory comes from pre-reserved slots, so
    // creating (waking) and dropping (evicting) an instance is cheap and its
    // memory returns to the pool. The host never has more live instances than
    // `max_live_instances` (see `objects::live`).
    let warm = config
        .prewarm_instances
        .saturating_mul(u32::try_from(config.classes.len()).unwrap_or(u32::MAX));
    let slots = config
        .max_live_instances
        .saturating_add(config.limits.spare_instance_slots)
        .saturating_add(warm);
    // Per component, `limits.max_core_instances`, `max_memories` and
    // `max_tables` (the store's limits say the same, see `objects::ctx`); in
    // total, 8 core instances and 4 tables per slot on average (or each
    // component's cap, when more) and one memory per slot.
    let limits = &config.limits;
    let mut pool = wasmtime::PoolingAllocationConfig::new();
    pool.total_component_instances(slots)
        .total_core_instances(slots.saturating_mul(limits.max_core_instances.max(8)))
        .total_memories(slots)
        .total_tables(slots.saturating_mul(limits.max_tables.div_ceil(2).max(4)))
        .total_stacks(slots)
        .max_core_instances_per_component(limits.max_core_instances.max(16))
        .max_memories_per_component(limits.max_memories)
        .max_tables_per_component(limits.max_tables)
        .max_memory_size(config.limits.max_instance_memory_bytes)
        .async_stack_keep_resident(0);
    ec.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
    // An evicted instance's fiber stack goes back to the kernel like its
    // linear memory: without this, every stack page a live instance ever
    // touched stays resident after eviction.
    ec.async_stack_zeroing(true);
    // Compiled components are cached next to the database (or in the
    // config's `cache_dir`), keyed by content, wasmtime version and engine
    // settings: later starts, and rollbacks, skip
    // Cranelift entirely (faster, and its code never has to be paged in).
    let mut cache = None;
    if let Some(dir) = cache_dir(config) {
        let mut cc = wasmtime::CacheConfig::new();
        cc.with_directory(dir);
        match wasmtime::Cache::new(cc) {
            Ok(c) => {
                ec.cache(Some(c.clone()));
                cache = Some(c);
            }
            Err(e) => tracing::warn!("compiled-component cache disabled: {e:#}"),
        }
    }
    let engine = Engine::new(&ec).map_err(|source| ComponentError::Engine {
        context: "engine settings",
        source,
    })?;
    Ok((engine, cache))
}

/// `cache_dir` from the config, else `<data dir>/cache`, beside the database
/// file.
fn cache_dir(config: &Config) -> Option<PathBuf> {
    if let Some(dir) = &config.cache_dir {
        // The cache wants an absolute path.
        std::fs::create_dir_all(dir).ok()?;
        return std::fs::canonicalize(dir).ok();
    }
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

/// Names the settings behind a limit that refused an instantiation:
/// wasmtime's message gives only the number ("instance count too high at 4").
pub(crate) fn explain_limits(e: wasmtime::Error) -> wasmtime::Error {
    let text = format!("{e:#}");
    if text.contains("limit") {
        e.context(
            "over a per-instance limit (see [limits] max_core_instances, max_memories, \
             max_tables and max_instance_memory_bytes in the config)",
        )
    } else {
        e
    }
}

/// Guest activity, for the epoch ticker: calls running now, and a count of
/// calls started (so a burst of short calls also keeps the ticker fast).
#[derive(Default)]
pub(crate) struct Activity {
    running: AtomicUsize,
    started: AtomicU64,
    /// Set while the ticker ticks slowly (parked between ticks).
    quiet: AtomicBool,
    ticker: std::sync::OnceLock<std::thread::Thread>,
}

impl Activity {
    /// Marks guest code as running until the guard drops.
    pub(crate) fn running(self: &Arc<Self>) -> RunningGuard {
        self.started.fetch_add(1, Ordering::Relaxed);
        self.running.fetch_add(1, Ordering::Relaxed);
        if self.quiet.load(Ordering::Relaxed)
            && let Some(ticker) = self.ticker.get()
        {
            ticker.unpark();
        }
        RunningGuard(self.clone())
    }
}

/// Marks guest code as running while it lives (see [`super::Components::guest_running`]).
pub(crate) struct RunningGuard(Arc<Activity>);

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The epoch ticker: a thread that advances `engine`'s epoch every
/// [`EPOCH_TICK`] while guests run, and every [`QUIET_TICK`] once `activity`
/// has been quiet for [`QUIET_AFTER`]. It stops when `stop` is set or the
/// engine is dropped.
pub(crate) fn start_ticker(
    engine: &Engine,
    activity: Arc<Activity>,
    stop: Arc<AtomicBool>,
) -> Result<(), ComponentError> {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("roomhost-epoch".into())
        .spawn(move || {
            let _ = activity.ticker.set(std::thread::current());
            let quiet_after = (QUIET_AFTER.as_millis() / EPOCH_TICK.as_millis()) as u32;
            let mut last_started = 0;
            let mut quiet_ticks = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let quiet = quiet_ticks >= quiet_after;
                activity.quiet.store(quiet, Ordering::Relaxed);
                if quiet {
                    // Until the next guest call unparks it (see `running`).
                    std::thread::park_timeout(QUIET_TICK);
                } else {
                    std::thread::sleep(EPOCH_TICK);
                }
                match weak.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => break,
                }
                let started = activity.started.load(Ordering::Relaxed);
                if started != last_started || activity.running.load(Ordering::Relaxed) > 0 {
                    last_started = started;
                    quiet_ticks = 0;
                } else {
                    quiet_ticks = quiet_ticks.saturating_add(1);
                }
            }
        })
        .map(|_| ())
        .map_err(|e| ComponentError::Engine {
            context: "the epoch thread",
            source: wasmtime::Error::from(e),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limit_that_refuses_an_instance_names_its_settings() {
        let e = explain_limits(wasmtime::Error::msg(
            "resource limit exceeded: instance count too high at 4",
        ));
        let text = format!("{e:#}");
        assert!(text.contains("max_core_instances"), "{text}");
        assert!(text.ends_with("instance count too high at 4"), "{text}");
        let other = explain_limits(wasmtime::Error::msg("unknown import"));
        assert_eq!(format!("{other:#}"), "unknown import");
    }
}
