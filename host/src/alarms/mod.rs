//! Alarms: one per object, stored in redb with the object's data (so they
//! survive restarts), set and deleted as part of an event's transaction.
//!
//! The [`Scheduler`] keeps every pending alarm in memory, ordered by time
//! (loaded from the database at start-up: late ones fire at once). When one is
//! due it sends the object an `Alarm` event, waking it if it was evicted.
//! Delivery is at least once: when `on-alarm` traps, the actor asks for a retry
//! after an exponential backoff (2 s, 4 s, ...), up to [`MAX_RETRIES`], then
//! gives up, logs, and deletes the alarm.
//!
//! The scheduler reaches objects only through the [`AlarmTarget`] the server
//! hands it. [`host`] is the `alarms` interface for guests ([`AlarmsView`]).

pub mod host;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::clock::now_ms;
use crate::error::StorageError;
use crate::ids::ObjectId;
use crate::storage::Db;
pub use host::{AlarmsView, add_to_linker};

/// Retries after the first failed delivery before the host gives up.
pub const MAX_RETRIES: u32 = 6;

enum Command {
    /// (Re)schedule `id` at `at_ms`; `retry` is the retry count to deliver.
    Set(ObjectId, u64, u32),
    /// Forget `id`'s alarm.
    Delete(ObjectId),
}

/// A cheap handle to the scheduler task.
#[derive(Clone)]
pub struct Scheduler {
    tx: mpsc::UnboundedSender<Command>,
}

impl Scheduler {
    /// Starts the scheduler; it stops when the runtime shuts down.
    pub(crate) fn start() -> (Scheduler, SchedulerTask) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Scheduler { tx }, SchedulerTask { rx })
    }

    /// An alarm was committed at `at_ms`.
    pub fn set(&self, id: ObjectId, at_ms: u64) {
        let _ = self.tx.send(Command::Set(id, at_ms, 0));
    }

    /// An alarm was committed as deleted (or delivered).
    pub fn delete(&self, id: ObjectId) {
        let _ = self.tx.send(Command::Delete(id));
    }

    /// Redelivers `id`'s alarm after `delay`, with retry count `retry`.
    pub fn retry(&self, id: ObjectId, retry: u32, delay: Duration) {
        let at = now_ms().saturating_add(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX));
        let _ = self.tx.send(Command::Set(id, at, retry));
    }
}

/// The backoff before retry number `retry` (1-based): base, 2×base, 4×base...
pub fn backoff(base: Duration, retry: u32) -> Duration {
    base.saturating_mul(1u32 << retry.saturating_sub(1).min(16))
}

/// Where due alarms go: the objects, handed to the scheduler by the server.
pub trait AlarmTarget: Send + Sync + 'static {
    /// `id`'s alarm is due: deliver it as retry number `retry`, without
    /// holding up the scheduler.
    fn alarm_due(&self, id: ObjectId, retry: u32);
}

/// The scheduler's task state, run by [`SchedulerTask::run`].
pub(crate) struct SchedulerTask {
    rx: mpsc::UnboundedReceiver<Command>,
}

impl SchedulerTask {
    pub(crate) async fn run(
        mut self,
        target: Arc<dyn AlarmTarget>,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        let mut queue: BTreeSet<(u64, ObjectId)> = BTreeSet::new();
        let mut pending: HashMap<ObjectId, (u64, u32)> = HashMap::new();
        loop {
            let next = queue.first().map(|(at, _)| *at);
            let sleep = match next {
                Some(at) => Duration::from_millis(at.saturating_sub(now_ms())),
                None => Duration::from_secs(3600),
            };
            tokio::select! {
                cmd = self.rx.recv() => match cmd {
                    Some(Command::Set(id, at, retry)) => {
                        if let Some((old, _)) = pending.insert(id.clone(), (at, retry)) {
                            queue.remove(&(old, id.clone()));
                        }
                        queue.insert((at, id));
                    }
                    Some(Command::Delete(id)) => {
                        if let Some((old, _)) = pending.remove(&id) {
                            queue.remove(&(old, id));
                        }
                    }
                    None => return,
                },
                _ = tokio::time::sleep(sleep), if next.is_some() => {
                    let now = now_ms();
                    while let Some((at, _)) = queue.first() {
                        if *at > now {
                            break;
                        }
                        let Some((_, id)) = queue.pop_first() else { break };
                        let retry = pending.remove(&id).map_or(0, |(_, r)| r);
                        target.alarm_due(id, retry);
                    }
                }
                _ = shutdown.cancelled() => return,
            }
        }
    }
}

/// Loads every stored alarm into the scheduler (late ones fire at once).
pub(crate) fn schedule_stored(db: &Db, scheduler: &Scheduler) -> Result<usize, StorageError> {
    let all = db.all_alarms()?;
    let n = all.len();
    for (id, at) in all {
        scheduler.set(id, at);
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_base() {
        let b = Duration::from_secs(2);
        let got: Vec<u64> = (1..=6).map(|r| backoff(b, r).as_secs()).collect();
        assert_eq!(got, vec![2, 4, 8, 16, 32, 64]);
    }
}
