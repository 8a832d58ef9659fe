//! Guest time: each event's time budget, and the long-event lane that keeps
//! long-running events from stalling short ones.
//!
//! The epoch ticker advances every [`EPOCH_TICK`] while guests run, and a
//! running guest is interrupted at the next tick: that is a *slice*. At each
//! interruption [`GuestClock::tick`] adds the time since the guest last
//! started or resumed to the event's total. That total is the time the
//! guest's code (and the host calls it makes, but not the time it waits for
//! another object in `objects.call`) spent on a worker thread: CPU time as
//! the host schedules it, not wall time. Past `max_event_cpu_ms` the event
//! traps.
//!
//! An event that has run a whole slice is a *long* event. It goes on only
//! with a permit of the long-event lane, a fair (first come, first served)
//! semaphore with `long_event_workers` permits (default: half the CPUs, at
//! least one), one slice at a time. Long events waiting for the lane hold no
//! worker thread, so however many runaway guests there are, they share those
//! permits among themselves while the other workers keep serving short
//! events: a chat message waits behind at most one slice, not behind every
//! runaway's. The price is paid by long events: N of them share one lane at
//! 1/N speed each (their budget still counts only their own slices).

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::UpdateDeadline;

/// How often the epoch advances while guest code runs: a slice. A guest's
/// time is counted in these.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// The lane long events take turns on.
#[derive(Clone)]
pub struct LongLane(Arc<Semaphore>);

impl LongLane {
    /// A lane for `workers` long events at once (0: half the CPUs, at least 1).
    pub fn new(workers: usize) -> LongLane {
        let workers = if workers == 0 {
            default_long_workers()
        } else {
            workers
        };
        LongLane(Arc::new(Semaphore::new(workers)))
    }

    /// Places free in the lane now (a long event in a slice holds one).
    pub fn free(&self) -> usize {
        self.0.available_permits()
    }
}

/// Half the CPUs the process may use, at least one.
pub fn default_long_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

/// The trap of an event past its budget.
#[derive(Debug)]
pub struct OverBudget {
    /// The time the event ran.
    pub used: Duration,
    /// Its budget.
    pub budget: Duration,
}

impl fmt::Display for OverBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "event exceeded its CPU time limit ({} ms used of max_event_cpu_ms = {})",
            self.used.as_millis(),
            self.budget.as_millis()
        )
    }
}

impl std::error::Error for OverBudget {}

/// One store's clock: the running event's guest time, and its lane permit
/// while it is a long event. Cloned into the future a long event waits in.
#[derive(Clone)]
pub struct GuestClock(Arc<Mutex<ClockState>>);

struct ClockState {
    budget: Duration,
    lane: LongLane,
    /// Guest time of the running event, up to `since`.
    used: Duration,
    /// When the guest last started or resumed; `None` while it waits.
    since: Option<Instant>,
    /// Whole slices the event has run.
    slices: u32,
    /// The lane permit of a long event's current slice.
    permit: Option<OwnedSemaphorePermit>,
}

impl GuestClock {
    /// A clock with `budget` per event, whose long events take `lane`.
    pub fn new(budget: Duration, lane: LongLane) -> GuestClock {
        GuestClock(Arc::new(Mutex::new(ClockState {
            budget,
            lane,
            used: Duration::ZERO,
            since: None,
            slices: 0,
            permit: None,
        })))
    }

    fn state(&self) -> MutexGuard<'_, ClockState> {
        // The state is plain numbers: a panic elsewhere cannot leave it torn.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An event starts: its time counts from now.
    pub fn start(&self) {
        let mut s = self.state();
        s.used = Duration::ZERO;
        s.slices = 0;
        s.permit = None;
        s.since = Some(Instant::now());
    }

    /// The event is over (returned or trapped): its guest time, and whether
    /// it was a long event. Releases its lane permit.
    pub fn finish(&self) -> (Duration, bool) {
        let mut s = self.state();
        s.stop(Instant::now());
        s.permit = None;
        (s.used, s.slices > 0)
    }

    /// The guest waits for something that is not its own work (another
    /// object's answer): the clock stops and the lane is free for others.
    pub fn pause(&self) {
        let mut s = self.state();
        s.stop(Instant::now());
        s.permit = None;
    }

    /// ... and goes on.
    pub fn resume(&self) {
        let mut s = self.state();
        if s.since.is_none() {
            s.since = Some(Instant::now());
        }
    }

    /// The epoch deadline passed while the guest runs: counts its time, traps
    /// it past its budget, and otherwise lets it go on — at once if it has
    /// not yet run half a slice since it (re)started, else after its turn in
    /// the long lane.
    pub fn tick(&self) -> Result<UpdateDeadline, OverBudget> {
        let now = Instant::now();
        let mut s = self.state();
        if s.since.is_none() {
            // Guest code outside an event (an instance's start functions):
            // its time counts from here.
            s.since = Some(now);
            return Ok(UpdateDeadline::Continue(1));
        }
        let ran = s.stop(now);
        if s.used > s.budget {
            return Err(OverBudget {
                used: s.used,
                budget: s.budget,
            });
        }
        if ran < EPOCH_TICK / 2 {
            // The first tick came early in the event: a slice is not over.
            s.since = Some(now);
            return Ok(UpdateDeadline::Continue(1));
        }
        s.slices = s.slices.saturating_add(1);
        // The lane stays held through the yield: the worker first runs what
        // queued behind this slice (a lone runaway, whose permit would come
        // back at once, would otherwise never let its worker go); then the
        // permit goes to the next long event in line, and this one queues.
        let held = s.permit.take();
        let lane = s.lane.0.clone();
        drop(s);
        // And the OS thread gives way too: a thread of the host (a worker,
        // the committer) or of anyone else that waits for this CPU runs now
        // rather than at the end of the kernel's time slice.
        std::thread::yield_now();
        let clock = self.clone();
        Ok(UpdateDeadline::YieldCustom(
            1,
            Box::pin(async move {
                tokio::task::yield_now().await;
                drop(held);
                // The semaphore is never closed; `ok()` only to be total.
                let permit = lane.acquire_owned().await.ok();
                let mut s = clock.state();
                s.permit = permit;
                s.since = Some(Instant::now());
            }),
        ))
    }
}

impl ClockState {
    /// Adds the time since `since` to `used` and stops the clock; returns it.
    fn stop(&mut self, now: Instant) -> Duration {
        let ran = self
            .since
            .take()
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        self.used += ran;
        ran
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn busy(d: Duration) {
        let t = Instant::now();
        while t.elapsed() < d {
            std::hint::spin_loop();
        }
    }

    #[test]
    fn an_early_tick_continues_and_a_whole_slice_yields_into_the_lane() {
        let clock = GuestClock::new(Duration::from_secs(1), LongLane::new(1));
        clock.start();
        assert!(matches!(clock.tick(), Ok(UpdateDeadline::Continue(1))));
        busy(EPOCH_TICK);
        assert!(matches!(
            clock.tick(),
            Ok(UpdateDeadline::YieldCustom(1, _))
        ));
        let (used, long) = clock.finish();
        assert!(used >= EPOCH_TICK, "{used:?}");
        assert!(long);
    }

    #[test]
    fn past_the_budget_the_event_traps_and_says_how_long_it_ran() {
        let clock = GuestClock::new(Duration::from_millis(15), LongLane::new(1));
        clock.start();
        busy(Duration::from_millis(20));
        let e = clock.tick().err().unwrap();
        assert!(e.used >= Duration::from_millis(20));
        assert!(e.to_string().contains("max_event_cpu_ms = 15"), "{e}");
    }

    #[test]
    fn time_spent_paused_does_not_count() {
        let clock = GuestClock::new(Duration::from_millis(30), LongLane::new(1));
        clock.start();
        clock.pause();
        std::thread::sleep(Duration::from_millis(60));
        clock.resume();
        assert!(matches!(clock.tick(), Ok(UpdateDeadline::Continue(1))));
        let (used, long) = clock.finish();
        assert!(used < Duration::from_millis(30), "{used:?}");
        assert!(!long);
    }

    #[tokio::test]
    async fn long_events_take_turns_on_the_lane_and_release_it_when_done() {
        let lane = LongLane::new(1);
        let a = GuestClock::new(Duration::from_secs(1), lane.clone());
        let b = GuestClock::new(Duration::from_secs(1), lane.clone());
        a.start();
        b.start();
        busy(EPOCH_TICK);
        let Ok(UpdateDeadline::YieldCustom(_, wait_a)) = a.tick() else {
            panic!("a whole slice must yield");
        };
        wait_a.await;
        assert_eq!(lane.free(), 0, "a holds the lane");
        busy(EPOCH_TICK);
        let Ok(UpdateDeadline::YieldCustom(_, mut wait_b)) = b.tick() else {
            panic!("a whole slice must yield");
        };
        let waker = futures_noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        assert!(wait_b.as_mut().poll(&mut cx).is_pending(), "b waits for a");
        a.finish();
        wait_b.await;
        b.finish();
        assert_eq!(lane.free(), 1, "the lane is free again");
    }

    fn futures_noop_waker() -> std::task::Waker {
        std::task::Waker::noop().clone()
    }
}
