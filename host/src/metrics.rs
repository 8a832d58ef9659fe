//! Counters and gauges the host keeps about itself: live instances, evictions,
//! wakes, events, traps, sockets, commits, and a wake-latency histogram. Cheap
//! atomics, readable by tests through [`Metrics::snapshot`] and by operators at
//! `GET /metrics` (Prometheus text, [`Metrics::render`]).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Buckets of the latency histogram: bucket i counts values < 2^i µs.
const BUCKETS: usize = 28;

/// A log2-bucketed histogram of microseconds.
#[derive(Debug)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    /// Records one duration.
    pub fn record(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let i = (64 - us.leading_zeros() as usize).min(BUCKETS - 1);
        self.buckets[i].fetch_add(1, Relaxed);
        self.count.fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
    }

    /// How many values were recorded.
    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    /// The q-quantile in µs, interpolated within its power-of-two bucket.
    pub fn quantile_us(&self, q: f64) -> u64 {
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return 0;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            if seen + c >= rank {
                let lo = if i == 0 { 0 } else { 1u64 << (i - 1) };
                let hi = 1u64 << i;
                let within = (rank - seen) as f64 / *c as f64;
                return lo + ((hi - lo) as f64 * within) as u64;
            }
            seen += c;
        }
        0
    }
}

/// The host's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    instances_live: AtomicU64,
    instances_created: AtomicU64,
    instances_warm: AtomicU64,
    evictions: AtomicU64,
    wakes: AtomicU64,
    actors_live: AtomicU64,
    events: AtomicU64,
    traps: AtomicU64,
    sockets_open: AtomicU64,
    sockets_accepted: AtomicU64,
    sockets_closed_slow: AtomicU64,
    auto_responses: AtomicU64,
    commits: AtomicU64,
    committed_batches: AtomicU64,
    commit_nanos: AtomicU64,
    compilations: AtomicU64,
    deploys: AtomicU64,
    deploys_refused: AtomicU64,
    rollbacks: AtomicU64,
    auto_rollbacks: AtomicU64,
    swaps: AtomicU64,
    connections_open: AtomicU64,
    connections_refused_per_ip: AtomicU64,
    connections_refused_total_cap: AtomicU64,
    sockets_refused_per_object: AtomicU64,
    slow_heads_cut: AtomicU64,
    idle_connections_closed: AtomicU64,
    handshakes_timed_out: AtomicU64,
    bodies_timed_out: AtomicU64,
    guest_log_lines_dropped: AtomicU64,
    long_events: AtomicU64,
    events_over_budget: AtomicU64,
    /// From a woken object's event arriving to its handler starting.
    pub wake_latency: Histogram,
}

/// A point-in-time copy of [`Metrics`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// Component instances alive now.
    pub instances_live: u64,
    /// Component instances ever given to an object (first event, wake, after
    /// a trap), pre-warmed or not.
    pub instances_created: u64,
    /// Instances created ahead of time, waiting for an object (pre-warmed).
    pub instances_warm: u64,
    /// Instances evicted (idle, or to make room under the cap).
    pub evictions: u64,
    /// Instances created for an object that had been evicted.
    pub wakes: u64,
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
    /// Frames the host answered itself (auto-response).
    pub auto_responses: u64,
    /// redb write transactions committed.
    pub commits: u64,
    /// Object batches those commits carried (batches / commits = group size).
    pub committed_batches: u64,
    /// Total time spent committing, in nanoseconds.
    pub commit_nanos: u64,
    /// Components compiled with Cranelift (not loaded from the cache).
    pub compilations: u64,
    /// Versions deployed (the admin API, or a changed config file).
    pub deploys: u64,
    /// Deploys refused (invalid component, or a trap in its start or `init`).
    pub deploys_refused: u64,
    /// Rollbacks to an earlier version asked for (admin API, CLI).
    pub rollbacks: u64,
    /// Rollbacks the host made by itself: a new version trapped too often.
    pub auto_rollbacks: u64,
    /// Live instances replaced by another version at an event boundary.
    pub swaps: u64,
    /// TCP connections open now (HTTP and WebSocket, on the main listener).
    pub connections_open: u64,
    /// Connections refused because their IP had `max_connections_per_ip`
    /// open (or WebSocket upgrades, per forwarded IP behind a proxy).
    pub connections_refused_per_ip: u64,
    /// Connections refused because `max_connections` were open.
    pub connections_refused_total_cap: u64,
    /// WebSocket upgrades refused because the object held
    /// `max_sockets_per_object` sockets.
    pub sockets_refused_per_object: u64,
    /// Connections closed because a request head that had begun did not
    /// complete within `request_head_timeout_ms` (slowloris).
    pub slow_heads_cut: u64,
    /// Connections closed because they sent nothing within
    /// `request_head_timeout_ms` of opening or of their last response.
    pub idle_connections_closed: u64,
    /// WebSocket handshakes that did not complete within
    /// `websocket_handshake_timeout_ms`.
    pub handshakes_timed_out: u64,
    /// Requests whose body did not arrive within `request_body_timeout_ms`.
    pub bodies_timed_out: u64,
    /// Guest log lines (`log` calls and stderr lines) dropped over
    /// `max_log_lines_per_event` or `max_log_lines_per_second`.
    pub guest_log_lines_dropped: u64,
    /// Events that ran longer than one slice and took turns in the long lane
    /// (`long_event_workers`).
    pub long_events: u64,
    /// Events stopped at `max_event_cpu_ms`.
    pub events_over_budget: u64,
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

macro_rules! counter {
    ($name:ident, $field:ident) => {
        pub(crate) fn $name(&self) {
            self.$field.fetch_add(1, Relaxed);
        }
    };
}

impl Metrics {
    gauge!(instance_started, instance_dropped, instances_live);
    gauge!(warm_added, warm_taken, instances_warm);
    gauge!(actor_started, actor_stopped, actors_live);
    gauge!(socket_opened, socket_closed, sockets_open);
    counter!(instance_created, instances_created);
    counter!(evicted, evictions);
    counter!(woke, wakes);
    counter!(socket_accepted, sockets_accepted);
    counter!(slow_socket_closed, sockets_closed_slow);
    counter!(auto_responded, auto_responses);
    counter!(deployed, deploys);
    counter!(deploy_refused, deploys_refused);
    counter!(rolled_back, rollbacks);
    counter!(auto_rolled_back, auto_rollbacks);
    counter!(swapped, swaps);
    gauge!(connection_opened, connection_closed, connections_open);
    counter!(refused_per_ip, connections_refused_per_ip);
    counter!(refused_total_cap, connections_refused_total_cap);
    counter!(refused_socket_per_object, sockets_refused_per_object);
    counter!(slow_head_cut, slow_heads_cut);
    counter!(idle_connection_closed, idle_connections_closed);
    counter!(handshake_timed_out, handshakes_timed_out);
    counter!(body_timed_out, bodies_timed_out);
    counter!(guest_log_line_dropped, guest_log_lines_dropped);
    counter!(long_event, long_events);
    counter!(event_over_budget, events_over_budget);

    /// Components compiled so far (set by the components, which read it off
    /// wasmtime's cache).
    pub(crate) fn set_compilations(&self, n: u64) {
        self.compilations.store(n, Relaxed);
    }

    pub(crate) fn event_ran(&self, trapped: bool) {
        self.events.fetch_add(1, Relaxed);
        if trapped {
            self.traps.fetch_add(1, Relaxed);
        }
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
            instances_warm: self.instances_warm.load(Relaxed),
            evictions: self.evictions.load(Relaxed),
            wakes: self.wakes.load(Relaxed),
            actors_live: self.actors_live.load(Relaxed),
            events: self.events.load(Relaxed),
            traps: self.traps.load(Relaxed),
            sockets_open: self.sockets_open.load(Relaxed),
            sockets_accepted: self.sockets_accepted.load(Relaxed),
            sockets_closed_slow: self.sockets_closed_slow.load(Relaxed),
            auto_responses: self.auto_responses.load(Relaxed),
            commits: self.commits.load(Relaxed),
            committed_batches: self.committed_batches.load(Relaxed),
            commit_nanos: self.commit_nanos.load(Relaxed),
            compilations: self.compilations.load(Relaxed),
            deploys: self.deploys.load(Relaxed),
            deploys_refused: self.deploys_refused.load(Relaxed),
            rollbacks: self.rollbacks.load(Relaxed),
            auto_rollbacks: self.auto_rollbacks.load(Relaxed),
            swaps: self.swaps.load(Relaxed),
            connections_open: self.connections_open.load(Relaxed),
            connections_refused_per_ip: self.connections_refused_per_ip.load(Relaxed),
            connections_refused_total_cap: self.connections_refused_total_cap.load(Relaxed),
            sockets_refused_per_object: self.sockets_refused_per_object.load(Relaxed),
            slow_heads_cut: self.slow_heads_cut.load(Relaxed),
            idle_connections_closed: self.idle_connections_closed.load(Relaxed),
            handshakes_timed_out: self.handshakes_timed_out.load(Relaxed),
            bodies_timed_out: self.bodies_timed_out.load(Relaxed),
            guest_log_lines_dropped: self.guest_log_lines_dropped.load(Relaxed),
            long_events: self.long_events.load(Relaxed),
            events_over_budget: self.events_over_budget.load(Relaxed),
        }
    }

    /// The counters in the Prometheus text format.
    pub fn render(&self) -> String {
        let s = self.snapshot();
        let mut out = String::with_capacity(2048);
        let mut line = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP roomhost_{name} {help}\n# TYPE roomhost_{name} {kind}\nroomhost_{name} {value}"
            );
        };
        line(
            "instances_live",
            "gauge",
            "Component instances alive now.",
            s.instances_live,
        );
        line(
            "instances_created_total",
            "counter",
            "Component instances given to objects (first event, wake, after a trap).",
            s.instances_created,
        );
        line(
            "instances_warm",
            "gauge",
            "Instances created ahead of time, waiting for an object.",
            s.instances_warm,
        );
        line(
            "evictions_total",
            "counter",
            "Instances evicted (idle or LRU).",
            s.evictions,
        );
        line(
            "wakes_total",
            "counter",
            "Instances created for evicted objects.",
            s.wakes,
        );
        line(
            "actors_live",
            "gauge",
            "Objects with an actor (sockets or recent events).",
            s.actors_live,
        );
        line("events_total", "counter", "Events run.", s.events);
        line(
            "traps_total",
            "counter",
            "Events whose guest trapped.",
            s.traps,
        );
        line(
            "sockets_open",
            "gauge",
            "WebSockets open now.",
            s.sockets_open,
        );
        line(
            "sockets_accepted_total",
            "counter",
            "WebSockets accepted.",
            s.sockets_accepted,
        );
        line(
            "sockets_closed_slow_total",
            "counter",
            "Sockets closed for not reading.",
            s.sockets_closed_slow,
        );
        line(
            "auto_responses_total",
            "counter",
            "Frames answered by the host itself.",
            s.auto_responses,
        );
        line(
            "commits_total",
            "counter",
            "redb write transactions committed.",
            s.commits,
        );
        line(
            "committed_batches_total",
            "counter",
            "Object batches carried by commits.",
            s.committed_batches,
        );
        line(
            "commit_seconds_total",
            "counter",
            "Time spent committing, in whole seconds.",
            s.commit_nanos / 1_000_000_000,
        );
        line(
            "component_compilations_total",
            "counter",
            "Components compiled with Cranelift (not loaded from the compiled-component cache).",
            s.compilations,
        );
        line(
            "deploys_total",
            "counter",
            "Component versions deployed (admin API or a changed config file).",
            s.deploys,
        );
        line(
            "deploys_refused_total",
            "counter",
            "Deploys refused: not a roomhost:object component, or its start or init trapped.",
            s.deploys_refused,
        );
        line(
            "rollbacks_total",
            "counter",
            "Rollbacks to an earlier component version.",
            s.rollbacks,
        );
        line(
            "auto_rollbacks_total",
            "counter",
            "Rollbacks the host made by itself: a new version trapped more often than the old one.",
            s.auto_rollbacks,
        );
        line(
            "swaps_total",
            "counter",
            "Live instances moved to another component version at an event boundary.",
            s.swaps,
        );
        line(
            "connections_open",
            "gauge",
            "TCP connections open now (HTTP and WebSocket).",
            s.connections_open,
        );
        line(
            "slow_request_heads_cut_total",
            "counter",
            "Connections closed because a started request head did not complete in time (slowloris).",
            s.slow_heads_cut,
        );
        line(
            "idle_connections_closed_total",
            "counter",
            "Connections closed for sending no request in time (after opening or after a response).",
            s.idle_connections_closed,
        );
        line(
            "guest_log_lines_dropped_total",
            "counter",
            "Guest log and stderr lines dropped over the per-event or per-second limit.",
            s.guest_log_lines_dropped,
        );
        line(
            "long_events_total",
            "counter",
            "Events that ran longer than one 10 ms slice and took turns in the long-event lane.",
            s.long_events,
        );
        line(
            "events_over_budget_total",
            "counter",
            "Events stopped at max_event_cpu_ms.",
            s.events_over_budget,
        );
        line(
            "request_bodies_timed_out_total",
            "counter",
            "Requests whose body did not arrive within request_body_timeout_ms (408).",
            s.bodies_timed_out,
        );
        line(
            "websocket_handshakes_timed_out_total",
            "counter",
            "WebSocket handshakes that did not complete in time.",
            s.handshakes_timed_out,
        );
        let _ = writeln!(
            out,
            "# HELP roomhost_connections_refused_total Connections or WebSocket upgrades refused, by the cap that refused them.\n# TYPE roomhost_connections_refused_total counter"
        );
        for (cap, n) in [
            ("per_ip", s.connections_refused_per_ip),
            ("total", s.connections_refused_total_cap),
            ("per_object_sockets", s.sockets_refused_per_object),
        ] {
            let _ = writeln!(
                out,
                "roomhost_connections_refused_total{{cap=\"{cap}\"}} {n}"
            );
        }
        let w = &self.wake_latency;
        let _ = writeln!(
            out,
            "# HELP roomhost_wake_latency_microseconds From a woken object's event arriving to its handler starting.\n# TYPE roomhost_wake_latency_microseconds summary"
        );
        for q in [0.5, 0.9, 0.99] {
            let _ = writeln!(
                out,
                "roomhost_wake_latency_microseconds{{quantile=\"{q}\"}} {}",
                w.quantile_us(q)
            );
        }
        let _ = writeln!(
            out,
            "roomhost_wake_latency_microseconds_sum {}",
            w.sum_us.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "roomhost_wake_latency_microseconds_count {}",
            w.count()
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles_land_in_the_right_bucket() {
        let h = Histogram::default();
        for _ in 0..90 {
            h.record(Duration::from_micros(20));
        }
        for _ in 0..10 {
            h.record(Duration::from_micros(5000));
        }
        let p50 = h.quantile_us(0.5);
        assert!((16..=32).contains(&p50), "{p50}");
        let p99 = h.quantile_us(0.99);
        assert!((4096..=8192).contains(&p99), "{p99}");
        assert_eq!(h.count(), 100);
    }

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.instance_created();
        let text = m.render();
        assert!(text.contains("roomhost_instances_created_total 1"));
        assert!(text.contains("roomhost_wake_latency_microseconds{quantile=\"0.99\"} 0"));
    }
}
