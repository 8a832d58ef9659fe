//! The scenarios. Each takes [`crate::Common`] plus its own options, runs to
//! the end by itself (bounded counts, the overall timeout), and returns a
//! report that prints as text and serializes as JSON — or an error, a
//! [`crate::ScenarioFailed`] when the run finished but expectations failed.

pub mod durable;
pub mod fanout;
pub mod idle;
pub mod join;
pub mod runaway;
pub mod swap;
pub mod wake;

use std::fmt::Write as _;

use serde::Serialize;

use crate::hist::LatencySummary;
use crate::run::{Totals, host_rss};
use crate::sys::CpuUsage;

/// What the clients of a message scenario received, and what it cost: the
/// part of `fanout`'s and `swap`'s reports they share (flattened into their
/// JSON).
#[derive(Clone, Debug, Serialize)]
pub struct Deliveries {
    /// Deliveries received (every member, senders included).
    pub deliveries: u64,
    /// Σ over rooms of senders × messages × members.
    pub expected: u64,
    /// Expected messages some client never received.
    pub missing: u64,
    /// Seconds from the start signal to the last delivery.
    pub window_s: f64,
    /// deliveries / window.
    pub deliveries_per_s: f64,
    /// Send → receive at members other than the sender.
    pub latency: LatencySummary,
    /// Send → the sender's own echo.
    pub echo_latency: LatencySummary,
    /// Rate-limit errors the senders got.
    pub rate_limited: u64,
    /// Other error frames.
    pub other_errors: u64,
    /// The first error text.
    pub first_error: Option<String>,
    /// CPU over the send phase (start signal → everything received).
    pub cpu: CpuUsage,
    /// Host CPU µs per delivery.
    pub host_us_per_delivery: Option<f64>,
    /// Load generator CPU µs per delivery.
    pub loadgen_us_per_delivery: f64,
    /// Host RSS at the end, if its pid is known.
    pub host_rss_bytes: Option<u64>,
}

impl Deliveries {
    /// The totals of a run that started sending at `start_ns`; `distinct` is
    /// how many deliveries were not extra copies (what counts against
    /// `expected`).
    pub(crate) fn of(
        t: &Totals,
        start_ns: u64,
        expected: u64,
        distinct: u64,
        cpu: CpuUsage,
        host_pid: Option<u32>,
    ) -> Deliveries {
        let window_s = t
            .counts
            .last_delivery_ns
            .map_or(0.0, |l| l.saturating_sub(start_ns) as f64 / 1e9);
        let deliveries = t.counts.deliveries;
        Deliveries {
            deliveries,
            expected,
            missing: expected.saturating_sub(distinct),
            window_s,
            deliveries_per_s: per_s(deliveries, window_s),
            latency: t.counts.latency.summary_us(),
            echo_latency: t.counts.ack_latency.summary_us(),
            rate_limited: t.counts.rate_limited,
            other_errors: t.counts.other_errors,
            first_error: t.counts.first_error.clone(),
            host_us_per_delivery: cpu.host_us_per(deliveries),
            loadgen_us_per_delivery: if deliveries > 0 {
                cpu.loadgen_cpu_s * 1e6 / deliveries as f64
            } else {
                0.0
            },
            cpu,
            host_rss_bytes: host_rss(host_pid),
        }
    }

    /// The report's closing lines: errors, CPU per delivery, RSS.
    pub(crate) fn write_tail(&self, out: &mut String) {
        Tail {
            rate_limited: self.rate_limited,
            other_errors: self.other_errors,
            first_error: self.first_error.as_deref(),
            cpu: &self.cpu,
            units: self.deliveries,
            unit: "delivery",
            host_rss_bytes: self.host_rss_bytes,
        }
        .write(out);
    }
}

/// Checks a chat scenario's shape: `n` clients over `r` rooms, `senders`
/// of them in each room.
pub(crate) fn check_rooms(n: u32, r: u32, senders: u32) -> anyhow::Result<()> {
    anyhow::ensure!(n >= 1, "--clients must be at least 1");
    anyhow::ensure!(r >= 1 && r <= n, "--rooms must be between 1 and --clients");
    let smallest_room = n / r;
    anyhow::ensure!(
        senders >= 1 && senders <= smallest_room,
        "--senders must be between 1 and the clients per room ({smallest_room})"
    );
    Ok(())
}

/// The clients of a chat scenario: client `i` joins room `i % r` of
/// `res`'s rooms; the first `senders` clients of each room send, as `plan`
/// says for sender number `k` of `senders × r` (to spread paced senders
/// over the interval), the others only listen; each expects `per_room`
/// messages. Returns the plans and the deliveries expected in all.
pub(crate) fn room_clients(
    res: &crate::Resolved,
    n: u32,
    r: u32,
    senders: u32,
    per_room: u64,
    check_order: bool,
    mut plan: impl FnMut(u64, u64) -> crate::client::SendPlan,
) -> anyhow::Result<(Vec<crate::client::ClientPlan>, u64)> {
    let rooms: Vec<std::sync::Arc<str>> = (0..u64::from(r)).map(|i| res.room(i).into()).collect();
    let total_senders = u64::from(senders) * u64::from(r);
    let mut plans = Vec::with_capacity(n as usize);
    let mut sender_index = 0u64;
    for i in 0..n {
        let send = if i / r < senders {
            sender_index += 1;
            plan(sender_index - 1, total_senders)
        } else {
            crate::client::SendPlan::Idle
        };
        plans.push(crate::client::ClientPlan {
            id: i,
            room: rooms[(i % r) as usize].clone(),
            source: res.source(u64::from(i))?,
            send,
            expect: per_room,
            report_each: false,
            check_order,
        });
    }
    Ok((plans, per_room * u64::from(n)))
}

/// `x` per second over `window_s` (0 for an empty window).
pub(crate) fn per_s(x: u64, window_s: f64) -> f64 {
    if window_s > 0.0 {
        x as f64 / window_s
    } else {
        0.0
    }
}

/// The lines a message scenario's report ends with: the errors seen, CPU per
/// unit of work, and the host's RSS.
pub(crate) struct Tail<'a> {
    pub rate_limited: u64,
    pub other_errors: u64,
    pub first_error: Option<&'a str>,
    pub cpu: &'a CpuUsage,
    pub units: u64,
    pub unit: &'a str,
    pub host_rss_bytes: Option<u64>,
}

impl Tail<'_> {
    pub(crate) fn write(&self, out: &mut String) {
        let _ = write!(
            out,
            "  errors:       {} rate-limited, {} other",
            self.rate_limited, self.other_errors
        );
        if let Some(e) = self.first_error {
            let _ = write!(out, " (first: {e})");
        }
        out.push('\n');
        cpu_line(out, self.cpu, self.units, self.unit);
        if let Some(rss) = self.host_rss_bytes {
            let _ = writeln!(out, "  host RSS:     {}", crate::sys::fmt_bytes(rss as f64));
        }
    }
}

/// One line about CPU use with µs per unit when the host pid is known.
pub(crate) fn cpu_line(out: &mut String, cpu: &CpuUsage, units: u64, unit: &str) {
    let _ = write!(out, "  cpu:          {cpu}");
    if let Some(us) = cpu.host_us_per(units) {
        let _ = write!(out, "; host {us:.1} µs/{unit}");
    }
    if units > 0 {
        let _ = write!(
            out,
            "; loadgen {:.1} µs/{unit}",
            cpu.loadgen_cpu_s * 1e6 / units as f64
        );
    }
    out.push('\n');
}

/// A warning line when connects overflowed a listen queue.
pub(crate) fn overflow_line(out: &mut String, overflows: Option<u64>) {
    if let Some(n) = overflows.filter(|&n| n > 0) {
        let _ = writeln!(
            out,
            "  WARNING:      {n} listen-queue overflows while connecting (system-wide \
             TcpExt ListenOverflows): the host's accept backlog is too small for \
             --connect-concurrency; those SYNs were retried after 1 s"
        );
    }
}

/// "1 room", "2 rooms".
pub(crate) fn count(n: impl Into<u64>, word: &str) -> String {
    let n = n.into();
    if n == 1 {
        format!("{n} {word}")
    } else {
        format!("{n} {word}s")
    }
}
