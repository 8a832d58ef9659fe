//! `fanout`: N clients spread evenly over R rooms join; then in every room S
//! of them each send M messages (a burst, or one every I ms), and every
//! client counts what it receives. Latency is measured at the receivers other
//! than the sender; the sender's own echo is reported separately.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::client::{ClientPlan, SendPlan};
use crate::hist::LatencySummary;
use crate::run::{Run, Totals, host_rss};
use crate::sys::{CpuMeter, CpuUsage};
use crate::{Common, RATE_LIMIT_ADVICE, ScenarioFailed};

/// `fanout` options.
#[derive(Clone, Debug, clap::Args)]
pub struct FanoutOpts {
    /// Clients in all (client i joins room i mod R).
    #[arg(long, default_value_t = 100)]
    pub clients: u32,
    /// Rooms.
    #[arg(long, default_value_t = 1)]
    pub rooms: u32,
    /// Senders per room.
    #[arg(long, default_value_t = 1)]
    pub senders: u32,
    /// Messages per sender.
    #[arg(long, default_value_t = 100)]
    pub messages: u32,
    /// Each sender sends one message every this many ms [default: a burst].
    #[arg(long)]
    pub interval_ms: Option<u64>,
    /// After the last message is sent, wait at most this long for deliveries.
    #[arg(long, default_value_t = 10)]
    pub drain_secs: u64,
}

/// What `fanout` measured.
#[derive(Clone, Debug, Serialize)]
pub struct FanoutReport {
    /// Clients.
    pub clients: u32,
    /// Rooms.
    pub rooms: u32,
    /// Senders per room.
    pub senders_per_room: u32,
    /// Messages per sender.
    pub messages_per_sender: u32,
    /// Pacing, if any.
    pub interval_ms: Option<u64>,
    /// Room names are `<prefix>-<n>`.
    pub room_prefix: String,
    /// Seconds from the first connect to the last `ready`.
    pub join_wall_s: f64,
    /// Connect-to-ready time per client.
    pub join: LatencySummary,
    /// Listen-queue overflows (system-wide, `/proc/net/netstat`) while joining.
    pub listen_overflows: Option<u64>,
    /// Messages sent.
    pub sent: u64,
    /// Deliveries received (every member, senders included).
    pub deliveries: u64,
    /// Σ over rooms of senders × messages × members.
    pub expected: u64,
    /// expected − deliveries (when positive).
    pub missing: u64,
    /// Seconds from the start signal to the last delivery.
    pub window_s: f64,
    /// deliveries / window.
    pub deliveries_per_s: f64,
    /// Messages accepted (echoed to their sender) / window.
    pub messages_per_s: f64,
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

impl std::fmt::Display for FanoutReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "fanout: {} clients in {} (prefix {}), {} senders/room × {} messages{}",
            self.clients,
            super::count(self.rooms, "room"),
            self.room_prefix,
            self.senders_per_room,
            self.messages_per_sender,
            match self.interval_ms {
                Some(i) => format!(", one every {i} ms"),
                None => " (burst)".into(),
            }
        );
        let _ = writeln!(
            s,
            "  join:         all ready in {:.2} s; per client {}",
            self.join_wall_s, self.join
        );
        crate::scenarios::overflow_line(&mut s, self.listen_overflows);
        let _ = writeln!(
            s,
            "  deliveries:   {} of {} expected ({} missing), {} messages sent",
            self.deliveries, self.expected, self.missing, self.sent
        );
        let _ = writeln!(
            s,
            "  throughput:   {:.0} deliveries/s, {:.0} messages/s over {:.3} s (first send → last delivery)",
            self.deliveries_per_s, self.messages_per_s, self.window_s
        );
        let _ = writeln!(s, "  latency:      {}", self.latency);
        let _ = writeln!(s, "  echo latency: {}", self.echo_latency);
        crate::scenarios::Tail {
            rate_limited: self.rate_limited,
            other_errors: self.other_errors,
            first_error: self.first_error.as_deref(),
            cpu: &self.cpu,
            units: self.deliveries,
            unit: "delivery",
            host_rss_bytes: self.host_rss_bytes,
        }
        .write(&mut s);
        f.write_str(s.trim_end())
    }
}

/// Runs `fanout`.
pub async fn fanout(common: &Common, opts: &FanoutOpts) -> anyhow::Result<FanoutReport> {
    let n = opts.clients;
    let r = opts.rooms;
    anyhow::ensure!(n >= 1, "--clients must be at least 1");
    anyhow::ensure!(r >= 1 && r <= n, "--rooms must be between 1 and --clients");
    let smallest_room = n / r;
    anyhow::ensure!(
        opts.senders >= 1 && opts.senders <= smallest_room,
        "--senders must be between 1 and the clients per room ({smallest_room})"
    );
    anyhow::ensure!(opts.messages >= 1, "--messages must be at least 1");
    if let Some(i) = opts.interval_ms {
        anyhow::ensure!(i >= 1, "--interval-ms must be at least 1");
    }
    let res = common.resolve(u64::from(n), u64::from(r))?;
    crate::proto::epoch();

    let rooms: Vec<Arc<str>> = (0..u64::from(r)).map(|i| res.room(i).into()).collect();
    let per_room_msgs = u64::from(opts.senders) * u64::from(opts.messages);
    let total_senders = u64::from(opts.senders) * u64::from(r);
    let mut plans = Vec::with_capacity(n as usize);
    let mut sender_index = 0u64;
    for i in 0..n {
        let in_room = i / r;
        let send = if in_room < opts.senders {
            let plan = match opts.interval_ms {
                None => SendPlan::Window {
                    count: opts.messages,
                    window: u32::MAX,
                },
                Some(ms) => SendPlan::Paced {
                    count: opts.messages,
                    interval: Duration::from_millis(ms),
                    offset: Duration::from_nanos(
                        (u128::from(ms) * 1_000_000 * u128::from(sender_index)
                            / u128::from(total_senders)) as u64,
                    ),
                },
            };
            sender_index += 1;
            plan
        } else {
            SendPlan::Idle
        };
        plans.push(ClientPlan {
            id: i,
            room: rooms[(i % r) as usize].clone(),
            source: res.source(u64::from(i))?,
            send,
            expect: per_room_msgs,
            report_each: false,
        });
    }
    let expected = per_room_msgs * u64::from(n);

    let mut run = Run::spawn(&res, plans);
    let phase = async {
        let mut joins = run.wait_ready().await?;
        let join_wall_s = run.spawned_at.elapsed().as_secs_f64();
        let overflows = run.listen_overflows();
        let meter = CpuMeter::start(res.host_pid)?;
        let start_ns = crate::proto::now_ns();
        run.start();
        let complete = run
            .wait_complete(total_senders as usize, Duration::from_secs(opts.drain_secs))
            .await?;
        let cpu = meter.stop()?;
        anyhow::Ok((
            joins_summary(&mut joins),
            join_wall_s,
            overflows,
            start_ns,
            cpu,
            complete,
        ))
    }
    .await;
    let stats = run.finish().await;
    let (join, join_wall_s, listen_overflows, start_ns, cpu, _complete) = phase?;

    let t = Totals::of(&stats);
    let window_s = t
        .counts
        .last_delivery_ns
        .map_or(0.0, |l| l.saturating_sub(start_ns) as f64 / 1e9);
    let rate = |x: u64| {
        if window_s > 0.0 {
            x as f64 / window_s
        } else {
            0.0
        }
    };
    let report = FanoutReport {
        clients: n,
        rooms: r,
        senders_per_room: opts.senders,
        messages_per_sender: opts.messages,
        interval_ms: opts.interval_ms,
        room_prefix: res.room_prefix.clone(),
        join_wall_s,
        join,
        listen_overflows,
        sent: t.sent,
        deliveries: t.counts.deliveries,
        expected,
        missing: expected.saturating_sub(t.counts.deliveries),
        window_s,
        deliveries_per_s: rate(t.counts.deliveries),
        messages_per_s: rate(t.counts.acks),
        latency: t.counts.latency.summary_us(),
        echo_latency: t.counts.ack_latency.summary_us(),
        rate_limited: t.counts.rate_limited,
        other_errors: t.counts.other_errors,
        first_error: t.counts.first_error.clone(),
        host_us_per_delivery: cpu.host_us_per(t.counts.deliveries),
        loadgen_us_per_delivery: if t.counts.deliveries > 0 {
            cpu.loadgen_cpu_s * 1e6 / t.counts.deliveries as f64
        } else {
            0.0
        },
        cpu,
        host_rss_bytes: host_rss(res.host_pid),
    };
    if report.missing > 0 || report.deliveries > expected {
        let mut reason = format!(
            "{} of {} expected deliveries missing at the end of the drain (up to {} s after the last send)",
            report.missing, expected, opts.drain_secs
        );
        if report.deliveries > expected {
            reason = format!(
                "{} deliveries, more than the {} expected",
                report.deliveries, expected
            );
        }
        if report.rate_limited > 0 {
            reason.push_str(&format!(
                " ({} rate-limited: {RATE_LIMIT_ADVICE})",
                report.rate_limited
            ));
        }
        return Err(ScenarioFailed::of(&report, reason));
    }
    Ok(report)
}

/// Exact percentiles of join times (ns samples).
pub(crate) fn joins_summary(joins: &mut [u64]) -> LatencySummary {
    LatencySummary::from_samples_ns(joins)
}
