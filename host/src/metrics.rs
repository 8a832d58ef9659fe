//! Counters and gauges the host keeps about itself: live instances, events,
//! traps, sockets, commits. Cheap atomics, readable by tests through
//! [`Metrics::snapshot`] (and by the `/metrics` endpoint later).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// The host's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    instances_live: AtomicU64,
    instances_created: AtomicU64,
    actors_live: AtomicU64,
    events: AtomicU64,
    traps: AtomicU64,
    sockets_open: AtomicU64,
    sockets_accepted: AtomicU64,
    sockets_closed_slow: AtomicU64,
    commits: AtomicU64,
    committed_batches: AtomicU64,
    commit_nanos: AtomicU64,
}

/// A point-in-time copy of [`Metrics`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// Component instances alive now.
    pub instances_live: u64,
    /// Component instances ever created (first event, after a trap, ...).
    pub instances_created: u64,
    /// Object actors alive now (an actor keeps an object's sockets).
    pub actors_live: u64,
    /// Events run.
    pub events: u64,
    /// Events whose guest trapped.
    pub traps: u64,
    /// WebSockets open now.
    pub sockets_open: u64,
    /// WebSockets ever accepted.
    pub sockets_accepted: u64,
    /// Sockets closed because the client did not read fast enough.
    pub sockets_closed_slow: u64,
    /// redb write transactions committed.
    pub commits: u64,
    /// Object batches those commits carried (batches / commits = group size).
    pub committed_batches: u64,
    /// Total time spent committing, in nanoseconds.
    pub commit_nanos: u64,
}

macro_rules! gauge {
    ($inc:ident, $dec:ident, $field:ident) => {
        pub(crate) fn $inc(&self) {
            self.$field.fetch_add(1, Relaxed);
        }
        pub(crate) fn $dec(&self) {
            self.$field.fetch_sub(1, Relaxed);
        }
    };
}

impl Metrics {
    gauge!(instance_started, instance_dropped, instances_live);
    gauge!(actor_started, actor_stopped, actors_live);
    gauge!(socket_opened, socket_closed, sockets_open);

    pub(crate) fn instance_created(&self) {
        self.instances_created.fetch_add(1, Relaxed);
    }
    pub(crate) fn event_ran(&self, trapped: bool) {
        self.events.fetch_add(1, Relaxed);
        if trapped {
            self.traps.fetch_add(1, Relaxed);
        }
    }
    pub(crate) fn socket_accepted(&self) {
        self.sockets_accepted.fetch_add(1, Relaxed);
    }
    pub(crate) fn slow_socket_closed(&self) {
        self.sockets_closed_slow.fetch_add(1, Relaxed);
    }
    pub(crate) fn record_commit(&self, batches: usize, took: Duration) {
        self.commits.fetch_add(1, Relaxed);
        self.committed_batches.fetch_add(batches as u64, Relaxed);
        self.commit_nanos
            .fetch_add(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX), Relaxed);
    }

    /// Reads every counter.
    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            instances_live: self.instances_live.load(Relaxed),
            instances_created: self.instances_created.load(Relaxed),
            actors_live: self.actors_live.load(Relaxed),
            events: self.events.load(Relaxed),
            traps: self.traps.load(Relaxed),
            sockets_open: self.sockets_open.load(Relaxed),
            sockets_accepted: self.sockets_accepted.load(Relaxed),
            sockets_closed_slow: self.sockets_closed_slow.load(Relaxed),
            commits: self.commits.load(Relaxed),
            committed_batches: self.committed_batches.load(Relaxed),
            commit_nanos: self.commit_nanos.load(Relaxed),
        }
    }
}
