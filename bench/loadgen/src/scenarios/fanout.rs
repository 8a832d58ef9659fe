//! `fanout`: N clients spread evenly over R rooms join; then in every room S
//! of them each send M messages (a burst, or one every I ms), and every
//! client counts what it receives. Latency is measured at the receivers other
//! than the sender; the sender's own echo is reported separately.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::client::SendPlan;
use crate::hist::LatencySummary;
use crate::run::{Run, Totals};
use crate::scenarios::{Deliveries, per_s, room_clients};
use crate::sys::CpuMeter;
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
    /// What the clients received, and the cost.
    #[serde(flatten)]
    pub delivered: Deliveries,
    /// Messages accepted (echoed to their sender) / window.
    pub messages_per_s: f64,
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
        let d = &self.delivered;
        let _ = writeln!(
            s,
            "  deliveries:   {} of {} expected ({} missing), {} messages sent",
            d.deliveries, d.expected, d.missing, self.sent
        );
        let _ = writeln!(
            s,
            "  throughput:   {:.0} deliveries/s, {:.0} messages/s over {:.3} s (first send → last delivery)",
            d.deliveries_per_s, self.messages_per_s, d.window_s
        );
        let _ = writeln!(s, "  latency:      {}", d.latency);
        let _ = writeln!(s, "  echo latency: {}", d.echo_latency);
        d.write_tail(&mut s);
        f.write_str(s.trim_end())
    }
}

/// Runs `fanout`.
pub async fn fanout(common: &Common, opts: &FanoutOpts) -> anyhow::Result<FanoutReport> {
    let n = opts.clients;
    let r = opts.rooms;
    super::check_rooms(n, r, opts.senders)?;
    anyhow::ensure!(opts.messages >= 1, "--messages must be at least 1");
    if let Some(i) = opts.interval_ms {
        anyhow::ensure!(i >= 1, "--interval-ms must be at least 1");
    }
    let res = common.resolve(u64::from(n), u64::from(r))?;
    crate::proto::epoch();

    let per_room_msgs = u64::from(opts.senders) * u64::from(opts.messages);
    let total_senders = u64::from(opts.senders) * u64::from(r);
    let (plans, expected) = room_clients(
        &res,
        n,
        r,
        opts.senders,
        per_room_msgs,
        false,
        |k, all| match opts.interval_ms {
            None => SendPlan::Window {
                count: opts.messages,
                window: u32::MAX,
            },
            Some(ms) => SendPlan::Paced {
                count: opts.messages,
                interval: Duration::from_millis(ms),
                offset: Duration::from_nanos(
                    (u128::from(ms) * 1_000_000 * u128::from(k) / u128::from(all)) as u64,
                ),
            },
        },
    )?;

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
    let delivered = Deliveries::of(
        &t,
        start_ns,
        expected,
        t.counts.deliveries,
        cpu,
        res.host_pid,
    );
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
        messages_per_s: per_s(t.counts.acks, delivered.window_s),
        delivered,
    };
    let d = &report.delivered;
    if d.missing > 0 || d.deliveries > expected {
        let mut reason = format!(
            "{} of {} expected deliveries missing at the end of the drain (up to {} s after the last send)",
            d.missing, expected, opts.drain_secs
        );
        if d.deliveries > expected {
            reason = format!(
                "{} deliveries, more than the {} expected",
                d.deliveries, expected
            );
        }
        if d.rate_limited > 0 {
            reason.push_str(&format!(
                " ({} rate-limited: {RATE_LIMIT_ADVICE})",
                d.rate_limited
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
