//! Returning freed memory to the operating system.
//!
//! Each WebSocket connection is set up with short-lived buffers (hyper's
//! request parsing, the handshake, the join frames) and keeps only a few small
//! objects afterwards. With glibc's allocator the freed buffers stay resident as
//! holes between the long-lived objects, so a host holding 10,000 idle
//! connections would look several KiB per connection bigger than it is. A
//! background task asks glibc to give free pages back (`malloc_trim`) every few
//! seconds, but only when connections or instances came or went since the last
//! time.
//!
//! The `roomhost` binary uses jemalloc instead (see `main.rs`), which keeps
//! each size class in pages of its own and purges freed pages by itself; it
//! turns the trim task off with [`use_glibc_trim`]. The task stays for programs
//! that embed the library with glibc's allocator.
//!
//! An allocator with per-thread caches (jemalloc's tcache) would keep what an
//! evicted instance freed in the cache of the worker that evicted it, for as
//! long as that worker stays idle — on a hibernating host, forever. A program
//! registers its allocator's "flush this thread's cache" call with
//! [`set_thread_cache_flush`], and an actor calls it right after it drops an
//! idle instance.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::metrics::Metrics;

/// How often the trim task looks for work.
pub const TRIM_INTERVAL: Duration = Duration::from_secs(3);

static GLIBC_TRIM: AtomicBool = AtomicBool::new(true);

static THREAD_CACHE_FLUSH: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

/// Registers the allocator's call that returns the calling thread's cached
/// free memory to the shared heap (once per process; later calls are ignored).
pub fn set_thread_cache_flush(flush: fn()) {
    let _ = THREAD_CACHE_FLUSH.set(flush);
}

/// Returns this thread's cached free memory to the shared heap, if the program
/// registered how (after an instance was dropped: what it freed is garbage
/// that an idle worker would otherwise hold on to).
pub(crate) fn flush_thread_cache() {
    if let Some(flush) = THREAD_CACHE_FLUSH.get() {
        flush();
    }
}

/// Whether hosts started from now on run the trim task (on by default; a
/// program whose global allocator is not glibc's turns it off).
pub fn use_glibc_trim(enabled: bool) {
    GLIBC_TRIM.store(enabled, Ordering::Relaxed);
}

/// True when hosts run the trim task.
pub(crate) fn glibc_trim_enabled() -> bool {
    GLIBC_TRIM.load(Ordering::Relaxed)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn trim() {
    unsafe extern "C" {
        fn malloc_trim(pad: usize) -> i32;
    }
    // SAFETY: `malloc_trim` is glibc's documented, thread-safe call to release
    // free memory at the top of the heap and free pages within all arenas; it
    // takes no pointers and only touches the allocator's own state.
    unsafe {
        malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}

/// Trims the heap every [`TRIM_INTERVAL`] while the host's population changes.
pub(crate) async fn trim_task(metrics: Arc<Metrics>, stop: tokio_util::sync::CancellationToken) {
    let mut last = None;
    // Trim while things change and for a few ticks after (memory is freed
    // lazily: evictions, closing connections, drained queues).
    let mut settling = 0u32;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TRIM_INTERVAL) => {}
            _ = stop.cancelled() => return,
        }
        let s = metrics.snapshot();
        let now = (
            s.sockets_accepted,
            s.sockets_open,
            s.instances_created,
            s.evictions,
            s.events,
        );
        if last != Some(now) {
            last = Some(now);
            settling = 3;
        }
        if settling > 0 {
            settling -= 1;
            let _ = tokio::task::spawn_blocking(trim).await;
        }
    }
}
