//! The long-event lane: threads of its own on which long events run.
//!
//! An object's actor is a tokio task, and its guest code runs inside that
//! task's poll. A guest that runs a whole epoch slice (see [`crate::budget`])
//! would hold its tokio worker for every slice after that, and the tasks
//! queued on that worker (a chat's socket, its actor, a commit's answer)
//! would wait behind it. So a task that runs guest code is wrapped by
//! [`LongLane::run`], and once its event has run a whole slice, the task
//! *moves*: its future leaves the tokio worker and is polled on one of the
//! lane's threads until the event ends, then comes back. The workers never
//! run a long event's slices; the lane's threads run nothing else.
//!
//! The lane has `long_event_workers` threads (default: half the CPUs, at
//! least one), which run at a lower OS priority (nice
//! [`LANE_NICE`]): where a CPU is wanted both by a long event and by the
//! host's short work, the short work goes first. Long events take turns on
//! the lane's threads one slice at a time, first come first served; a long
//! event that waits (for another object's answer) holds no thread. The
//! threads start when the first long event needs one and end after
//! [`KEEP_ALIVE`] without work.
//!
//! A future that moves between threads stays a tokio citizen: the lane's
//! threads enter the runtime, so timers, channels and `tokio::spawn` work
//! there as on a worker. One waker serves the task wherever it is, so no
//! wakeup is lost in a move. A panic on the lane reaches the task's
//! `JoinHandle` as it would have on a worker.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

/// The OS priority (nice value) of the lane's threads.
pub const LANE_NICE: i32 = 10;

/// How long a lane thread waits for work before it ends.
pub const KEEP_ALIVE: Duration = Duration::from_secs(10);

type Job = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The lane long events run on. Cheap to clone.
#[derive(Clone)]
pub struct LongLane(Arc<Lane>);

struct Lane {
    workers: usize,
    queue: Mutex<Queue>,
    ready: Condvar,
}

struct Queue {
    tasks: VecDeque<Arc<Task>>,
    /// Threads running now, and how many of them wait for work.
    threads: usize,
    idle: usize,
    /// The tokio runtime the lane's threads enter (the first one seen).
    runtime: Option<tokio::runtime::Handle>,
}

impl LongLane {
    /// A lane of `workers` threads (0: half the CPUs, at least 1).
    pub fn new(workers: usize) -> LongLane {
        let workers = if workers == 0 {
            default_long_workers()
        } else {
            workers
        };
        LongLane(Arc::new(Lane {
            workers,
            queue: Mutex::new(Queue {
                tasks: VecDeque::new(),
                threads: 0,
                idle: 0,
                runtime: None,
            }),
            ready: Condvar::new(),
        }))
    }

    /// Wraps `fut`, a task that runs guest code, so that it moves to the lane
    /// while its event is long (spawn the result as the task).
    pub fn run<F>(&self, fut: F) -> Moving
    where
        F: Future<Output = ()> + Send + 'static,
    {
        Moving {
            task: Arc::new(Task {
                lane: self.0.clone(),
                long: AtomicBool::new(false),
                state: Mutex::new(TaskState {
                    fut: Some(Box::pin(fut)),
                    at_lane: false,
                    polling: false,
                    queued: false,
                    notified: false,
                    home: None,
                    outcome: None,
                    cancelled: false,
                }),
            }),
        }
    }
}

/// Half the CPUs the process may use, at least one.
pub fn default_long_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

/// The event running on this thread has run a whole slice (`true`) or has
/// ended (`false`). Outside a task made by [`LongLane::run`], nothing.
pub fn set_long(long: bool) {
    CURRENT.with(|c| {
        if let Some(t) = c.borrow().as_ref() {
            t.long.store(long, Ordering::Relaxed);
        }
    });
}

/// Returns the calling task to the tokio workers if it runs on the lane but
/// its event is no longer long: await it before a new event starts, so that
/// a short event never runs on the lane.
pub async fn home() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded || !ON_LANE.with(Cell::get) {
            return Poll::Ready(());
        }
        if CURRENT.with(|c| {
            c.borrow()
                .as_ref()
                .is_some_and(|t| t.long.load(Ordering::Relaxed))
        }) {
            return Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await;
}

/// Gives the thread to the next task in line: on the lane, the next long
/// event; on a tokio worker, what is queued there.
pub async fn yield_slice() {
    if ON_LANE.with(Cell::get) {
        let mut yielded = false;
        std::future::poll_fn(|cx| {
            if yielded {
                return Poll::Ready(());
            }
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        })
        .await;
    } else {
        tokio::task::yield_now().await;
    }
}

thread_local! {
    /// The task this thread polls now.
    static CURRENT: RefCell<Option<Arc<Task>>> = const { RefCell::new(None) };
    /// Whether this thread is one of a lane's.
    static ON_LANE: Cell<bool> = const { Cell::new(false) };
}

/// Polls `fut` as `task`'s, with `task` current on this thread.
fn poll_as(task: &Arc<Task>, fut: &mut Job) -> Poll<()> {
    /// Puts back the task that was current, also when the poll panics.
    struct Restore(Option<Arc<Task>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            CURRENT.with(|c| *c.borrow_mut() = previous);
        }
    }
    let _restore = Restore(CURRENT.with(|c| c.replace(Some(task.clone()))));
    let waker = Waker::from(task.clone());
    fut.as_mut().poll(&mut Context::from_waker(&waker))
}

struct Task {
    lane: Arc<Lane>,
    /// Set while the task's event is long: then it belongs on the lane.
    long: AtomicBool,
    state: Mutex<TaskState>,
}

struct TaskState {
    /// The future, when no thread polls it.
    fut: Option<Job>,
    /// Whether the task lives on the lane now (else on the tokio workers).
    at_lane: bool,
    /// A lane thread polls it now.
    polling: bool,
    /// It waits in the lane's queue.
    queued: bool,
    /// It was woken while a lane thread polled it.
    notified: bool,
    /// The waker of the tokio task.
    home: Option<Waker>,
    /// How it ended on the lane.
    outcome: Option<Ended>,
    /// The tokio task is gone: drop the future.
    cancelled: bool,
}

enum Ended {
    Done,
    Panicked(Box<dyn Any + Send>),
}

impl Task {
    fn state(&self) -> MutexGuard<'_, TaskState> {
        // Each step under the lock is a few assignments: a panic cannot
        // leave the state torn.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs one poll on a lane thread.
    fn run_on_lane(self: Arc<Self>) {
        let mut fut = {
            let mut s = self.state();
            s.queued = false;
            if !s.at_lane || s.cancelled {
                return;
            }
            let Some(fut) = s.fut.take() else { return };
            s.polling = true;
            fut
        };
        let r = std::panic::catch_unwind(AssertUnwindSafe(|| poll_as(&self, &mut fut)));
        let mut s = self.state();
        s.polling = false;
        if matches!(r, Ok(Poll::Pending)) && !s.cancelled {
            s.fut = Some(fut);
            if self.long.load(Ordering::Relaxed) {
                // Its next slice: behind the other long events.
                if std::mem::take(&mut s.notified) {
                    s.queued = true;
                    drop(s);
                    if !self.lane.push(self.clone()) {
                        self.bring_home();
                    }
                }
                return;
            }
            // The event is over: back to the workers.
            s.at_lane = false;
            s.notified = false;
            let home = s.home.clone();
            drop(s);
            if let Some(w) = home {
                w.wake();
            }
            return;
        }
        // Finished, panicked or cancelled.
        s.at_lane = false;
        match r {
            Ok(Poll::Ready(())) => s.outcome = Some(Ended::Done),
            Err(panic) => s.outcome = Some(Ended::Panicked(panic)),
            Ok(Poll::Pending) => {}
        }
        let home = if s.cancelled { None } else { s.home.clone() };
        drop(s);
        // The future is dropped before its task hears that it ended.
        drop(fut);
        if let Some(w) = home {
            w.wake();
        }
    }
}

impl Task {
    /// The lane cannot take the task: it goes on on the tokio workers.
    fn bring_home(&self) {
        let mut s = self.state();
        s.at_lane = false;
        s.queued = false;
        let home = s.home.clone();
        drop(s);
        if let Some(w) = home {
            w.wake();
        }
    }
}

impl Wake for Task {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let mut s = self.state();
        if s.at_lane {
            if s.polling {
                s.notified = true;
            } else if !s.queued && s.fut.is_some() {
                s.queued = true;
                drop(s);
                if !self.lane.push(self.clone()) {
                    self.bring_home();
                }
            }
        } else {
            let home = s.home.clone();
            drop(s);
            if let Some(w) = home {
                w.wake();
            }
        }
    }
}

/// A task made by [`LongLane::run`]: spawn it on the tokio runtime.
pub struct Moving {
    task: Arc<Task>,
}

impl Future for Moving {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let task = &self.task;
        let mut fut = {
            let mut s = task.state();
            match s.outcome.take() {
                Some(Ended::Done) => return Poll::Ready(()),
                Some(Ended::Panicked(p)) => std::panic::resume_unwind(p),
                None => {}
            }
            if !s.home.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                s.home = Some(cx.waker().clone());
            }
            if s.at_lane {
                return Poll::Pending;
            }
            match s.fut.take() {
                Some(fut) => fut,
                None => return Poll::Pending,
            }
        };
        if poll_as(task, &mut fut).is_ready() {
            return Poll::Ready(());
        }
        let mut s = task.state();
        s.fut = Some(fut);
        if task.long.load(Ordering::Relaxed) {
            // A long event: its next slice runs on the lane.
            s.at_lane = true;
            s.queued = true;
            drop(s);
            if !task.lane.push(task.clone()) {
                // No lane thread could start: the event goes on here.
                task.bring_home();
            }
        }
        Poll::Pending
    }
}

impl Drop for Moving {
    fn drop(&mut self) {
        let fut = {
            let mut s = self.task.state();
            s.cancelled = true;
            s.fut.take()
        };
        // Dropped here, outside the lock (an actor's drop closes channels).
        drop(fut);
    }
}

impl Lane {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `task` for a lane thread, starting one if none is free and
    /// there are fewer than `workers`. False if the task cannot run here (no
    /// thread runs and none could start, or no tokio runtime to enter).
    fn push(self: &Arc<Self>, task: Arc<Task>) -> bool {
        let mut q = self.lock();
        q.tasks.push_back(task.clone());
        if q.idle > 0 {
            drop(q);
            self.ready.notify_one();
            return true;
        }
        if q.threads >= self.workers {
            return true;
        }
        if q.runtime.is_none() {
            q.runtime = tokio::runtime::Handle::try_current().ok();
        }
        let Some(runtime) = q.runtime.clone() else {
            q.tasks.pop_back();
            return false;
        };
        q.threads += 1;
        drop(q);
        let ours = Arc::as_ptr(&task);
        let lane = self.clone();
        let started = std::thread::Builder::new()
            .name("roomhost-long".into())
            .spawn(move || {
                let _runtime = runtime.enter();
                ON_LANE.with(|l| l.set(true));
                set_thread_nice(LANE_NICE);
                lane.serve();
            });
        if let Err(e) = started {
            tracing::warn!(error = %e, "cannot start a long-event lane thread");
            let mut q = self.lock();
            q.threads -= 1;
            if q.threads == 0 {
                q.tasks.retain(|t| !std::ptr::eq(Arc::as_ptr(t), ours));
                return false;
            }
        }
        true
    }

    /// A lane thread's life: poll queued tasks until none comes for
    /// [`KEEP_ALIVE`].
    fn serve(&self) {
        loop {
            let task = {
                let mut q = self.lock();
                loop {
                    if let Some(t) = q.tasks.pop_front() {
                        break t;
                    }
                    q.idle += 1;
                    let (g, wait) = self
                        .ready
                        .wait_timeout(q, KEEP_ALIVE)
                        .unwrap_or_else(|p| p.into_inner());
                    q = g;
                    q.idle -= 1;
                    if wait.timed_out() && q.tasks.is_empty() {
                        q.threads -= 1;
                        return;
                    }
                }
            };
            task.run_on_lane();
        }
    }
}

/// Sets the calling thread's nice value (on Linux, nice is per thread).
/// Best effort: where it cannot, the thread runs as it is.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub(crate) fn set_thread_nice(nice: i32) {
    unsafe extern "C" {
        fn setpriority(which: i32, who: u32, prio: i32) -> i32;
    }
    const PRIO_PROCESS: i32 = 0;
    // SAFETY: `setpriority` takes no pointers; with PRIO_PROCESS and who = 0
    // Linux changes the calling thread only.
    let r = unsafe { setpriority(PRIO_PROCESS, 0, nice) };
    if r != 0 {
        tracing::debug!(nice, "cannot set a thread's priority");
    }
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn set_thread_nice(_nice: i32) {}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn thread_name() -> String {
        std::thread::current().name().unwrap_or("").to_string()
    }

    fn on_lane() -> bool {
        thread_name() == "roomhost-long"
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_long_task_moves_to_the_lane_keeps_its_wakeups_and_comes_back() {
        let lane = LongLane::new(1);
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(lane.run(async move {
            let mut seen = vec![on_lane()];
            set_long(true);
            yield_slice().await;
            seen.push(on_lane());
            // Woken from a thread outside the runtime while on the lane.
            let (wake_tx, wake_rx) = tokio::sync::oneshot::channel();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                let _ = wake_tx.send(());
            });
            wake_rx.await.unwrap();
            seen.push(on_lane());
            // The runtime is there: a timer, and a spawned task.
            tokio::time::sleep(Duration::from_millis(5)).await;
            let spawned = tokio::spawn(async { 7 }).await.unwrap();
            seen.push(on_lane());
            set_long(false);
            home().await;
            seen.push(on_lane());
            let _ = tx.send((seen, spawned));
        }));
        let (seen, spawned) = rx.await.unwrap();
        assert_eq!(seen, [false, true, true, true, false]);
        assert_eq!(spawned, 7);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn long_tasks_take_turns_one_slice_at_a_time() {
        let lane = LongLane::new(1);
        let order = Arc::new(Mutex::new(Vec::new()));
        let both_long = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for id in 0..2 {
            let (order, both_long) = (order.clone(), both_long.clone());
            tasks.push(tokio::spawn(lane.run(async move {
                set_long(true);
                both_long.fetch_add(1, Ordering::SeqCst);
                loop {
                    yield_slice().await;
                    if both_long.load(Ordering::SeqCst) == 2 {
                        break;
                    }
                }
                for _ in 0..6 {
                    assert!(on_lane());
                    order.lock().unwrap().push(id);
                    let t = std::time::Instant::now();
                    while t.elapsed() < Duration::from_millis(1) {}
                    yield_slice().await;
                }
            })));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let order = order.lock().unwrap();
        let switches = order.windows(2).filter(|w| w[0] != w[1]).count();
        assert!(
            switches >= 9,
            "one thread, two long tasks, in turns: {order:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panic_on_the_lane_reaches_the_join_handle() {
        let lane = LongLane::new(1);
        let h = tokio::spawn(lane.run(async {
            set_long(true);
            yield_slice().await;
            assert!(on_lane());
            panic!("a guest's host code panicked");
        }));
        let e = h.await.unwrap_err();
        assert!(e.is_panic());
        // The lane's thread is still there for the next one.
        let h = tokio::spawn(lane.run(async {
            set_long(true);
            yield_slice().await;
            assert!(on_lane());
        }));
        h.await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_aborted_task_on_the_lane_is_dropped() {
        struct Dropped(Arc<AtomicBool>);
        impl Drop for Dropped {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let lane = LongLane::new(1);
        let dropped = Arc::new(AtomicBool::new(false));
        let (at_lane_tx, at_lane_rx) = tokio::sync::oneshot::channel();
        let guard = Dropped(dropped.clone());
        let h = tokio::spawn(lane.run(async move {
            let _guard = guard;
            set_long(true);
            yield_slice().await;
            let _ = at_lane_tx.send(on_lane());
            std::future::pending::<()>().await;
        }));
        assert!(at_lane_rx.await.unwrap());
        h.abort();
        assert!(h.await.unwrap_err().is_cancelled());
        // At once, or when the lane's poll that sent the message ends.
        let t = std::time::Instant::now();
        while !dropped.load(Ordering::SeqCst) && t.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert!(dropped.load(Ordering::SeqCst));
    }
}
