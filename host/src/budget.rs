//! Guest time: each event's time budget, and when an event becomes *long*
//! (and moves to the long-event lane).
//!
//! The epoch ticker advances every [`EPOCH_TICK`] while guests run, and a
//! running guest is interrupted at the next tick: that is a *slice*. At each
//! interruption [`GuestClock::tick`] adds the time since the guest last
//! started or resumed to the event's total. That total is the time the
//! guest's code (and the host calls it makes, but not the time it waits for
//! another object in `objects.call`) spent on a thread: CPU time as
//! the host schedules it, not wall time. Past `max_event_cpu_ms` the event
//! traps.
//!
//! An event that has run a whole slice is a *long* event: from its next
//! slice on it runs on the long-event lane ([`crate::lane`]), threads of its
//! own at a lower OS priority, and no longer on the tokio workers that serve
//! everything else. Long events take turns on the lane one slice at a time,
//! so however many runaway guests there are, a chat message never waits
//! behind one of their slices on a worker. The price is paid by long events:
//! N of them share the lane's threads (their budget still counts only their
//! own slices).

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use wasmtime::UpdateDeadline;

use crate::lane;

/// How often the epoch advances while guest code runs: a slice. A guest's
/// time is counted in these.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

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

/// One store's clock: the running event's guest time. Cloned into the
/// future a long event yields in.
#[derive(Clone)]
pub struct GuestClock(Arc<Mutex<ClockState>>);

struct ClockState {
    budget: Duration,
    /// Guest time of the running event, up to `since`.
    used: Duration,
    /// When the guest last started or resumed; `None` while it waits.
    since: Option<Instant>,
    /// Whole slices the event has run.
    slices: u32,
}

impl GuestClock {
    /// A clock with `budget` per event.
    pub fn new(budget: Duration) -> GuestClock {
        GuestClock(Arc::new(Mutex::new(ClockState {
            budget,
            used: Duration::ZERO,
            since: None,
            slices: 0,
        })))
    }

    fn state(&self) -> MutexGuard<'_, ClockState> {
        // The state is plain numbers: a panic elsewhere cannot leave it torn.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An event starts: its time counts from now.
    pub fn start(&self) {
        // A long start function (instantiation) before it does not make the
        // event long.
        lane::set_long(false);
        let mut s = self.state();
        s.used = Duration::ZERO;
        s.slices = 0;
        s.since = Some(Instant::now());
    }

    /// The event is over (returned or trapped): its guest time, and whether
    /// it was a long event. Its task may leave the lane.
    pub fn finish(&self) -> (Duration, bool) {
        let mut s = self.state();
        s.stop(Instant::now());
        lane::set_long(false);
        (s.used, s.slices > 0)
    }

    /// The guest waits for something that is not its own work (another
    /// object's answer): the clock stops (a long event that waits holds no
    /// lane thread).
    pub fn pause(&self) {
        self.state().stop(Instant::now());
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
        drop(s);
        // A long event: its task moves to the lane (if it is not there yet)
        // and queues behind the other long events there.
        lane::set_long(true);
        // The OS thread gives way too: a thread of the host or of anyone else
        // that waits for this CPU runs now rather than at the end of the
        // kernel's time slice.
        std::thread::yield_now();
        let clock = self.clone();
        Ok(UpdateDeadline::YieldCustom(
            1,
            Box::pin(async move {
                lane::yield_slice().await;
                clock.state().since = Some(Instant::now());
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
    fn an_early_tick_continues_and_a_whole_slice_yields() {
        let clock = GuestClock::new(Duration::from_secs(1));
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
        let clock = GuestClock::new(Duration::from_millis(15));
        clock.start();
        busy(Duration::from_millis(20));
        let e = clock.tick().err().unwrap();
        assert!(e.used >= Duration::from_millis(20));
        assert!(e.to_string().contains("max_event_cpu_ms = 15"), "{e}");
    }

    #[test]
    fn time_spent_paused_does_not_count() {
        let clock = GuestClock::new(Duration::from_millis(30));
        clock.start();
        clock.pause();
        std::thread::sleep(Duration::from_millis(60));
        clock.resume();
        assert!(matches!(clock.tick(), Ok(UpdateDeadline::Continue(1))));
        let (used, long) = clock.finish();
        assert!(used < Duration::from_millis(30), "{used:?}");
        assert!(!long);
    }
}
