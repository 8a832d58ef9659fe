//! Live-instance accounting: at most `max_live_instances` instances live at
//! once; when none is free, the least recently used idle instance is asked to
//! leave.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

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
    pub(super) fn new(max: u32) -> LiveInstances {
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
