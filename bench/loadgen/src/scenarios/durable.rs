//! `durable`: R rooms, each with one sender and one receiver (every client
//! from its own address). Each sender sends M messages, keeping at most
//! `--window` unacknowledged. The host releases a broadcast only after its
//! write is durable, so the sender's own echo is the acknowledgement: the
//! report gives durable messages/s and the send → echo latency.
//!
//! The host's rate limiter allows a client about 5 quick messages; run the
//! host with it off for this scenario (see the README).

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::client::{ClientPlan, SendPlan};
use crate::hist::LatencySummary;
use crate::run::{Run, Totals, host_rss};
use crate::sys::{CpuMeter, CpuUsage};
use crate::{Common, RATE_LIMIT_ADVICE, ScenarioFailed};

/// `durable` options.
#[derive(Clone, Debug, clap::Args)]
pub struct DurableOpts {
    /// Rooms (one sender and one receiver each).
    #[arg(long, default_value_t = 10)]
    pub rooms: u32,
    /// Messages per sender.
    #[arg(long, default_value_t = 100)]
    pub messages: u32,
    /// Most unacknowledged messages per sender (1: send, wait for the echo,
    /// send the next).
    #[arg(long, default_value_t = 1)]
    pub window: u32,
    /// After the last message is sent, wait at most this long for echoes.
    #[arg(long, default_value_t = 10)]
    pub drain_secs: u64,
}

/// What `durable` measured.
#[derive(Clone, Debug, Serialize)]
pub struct DurableReport {
    /// Rooms.
    pub rooms: u32,
    /// Messages per sender.
    pub messages_per_sender: u32,
    /// Window per sender.
    pub window: u32,
    /// Room names are `<prefix>-<n>`.
    pub room_prefix: String,
    /// Messages sent.
    pub sent: u64,
    /// Messages echoed back to their sender (durably committed).
    pub acknowledged: u64,
    /// Deliveries at the receivers.
    pub received: u64,
    /// Expected at the receivers (rooms × messages).
    pub expected: u64,
    /// Seconds from the start signal to the last echo.
    pub window_s: f64,
    /// acknowledged / window.
    pub durable_messages_per_s: f64,
    /// Send → echo at the sender.
    pub ack_latency: LatencySummary,
    /// Send → receive at the receiver.
    pub receive_latency: LatencySummary,
    /// Rate-limit errors.
    pub rate_limited: u64,
    /// Other error frames.
    pub other_errors: u64,
    /// The first error text.
    pub first_error: Option<String>,
    /// CPU over the send phase.
    pub cpu: CpuUsage,
    /// Host CPU µs per acknowledged message.
    pub host_us_per_message: Option<f64>,
    /// Host RSS at the end, if its pid is known.
    pub host_rss_bytes: Option<u64>,
}

impl std::fmt::Display for DurableReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "durable: {} × {} messages, window {} (prefix {})",
            super::count(self.rooms, "room"),
            self.messages_per_sender,
            self.window,
            self.room_prefix
        );
        let _ = writeln!(
            s,
            "  acknowledged: {} of {} sent; receivers got {} of {}",
            self.acknowledged, self.sent, self.received, self.expected
        );
        let _ = writeln!(
            s,
            "  throughput:   {:.0} durable messages/s over {:.3} s",
            self.durable_messages_per_s, self.window_s
        );
        let _ = writeln!(s, "  ack latency:  {}", self.ack_latency);
        let _ = writeln!(s, "  receive lat.: {}", self.receive_latency);
        crate::scenarios::Tail {
            rate_limited: self.rate_limited,
            other_errors: self.other_errors,
            first_error: self.first_error.as_deref(),
            cpu: &self.cpu,
            units: self.acknowledged,
            unit: "message",
            host_rss_bytes: self.host_rss_bytes,
        }
        .write(&mut s);
        f.write_str(s.trim_end())
    }
}

/// Runs `durable`.
pub async fn durable(common: &Common, opts: &DurableOpts) -> anyhow::Result<DurableReport> {
    let r = opts.rooms;
    anyhow::ensure!(r >= 1, "--rooms must be at least 1");
    anyhow::ensure!(opts.messages >= 1, "--messages must be at least 1");
    anyhow::ensure!(opts.window >= 1, "--window must be at least 1");
    let n = r
        .checked_mul(2)
        .ok_or_else(|| anyhow::anyhow!("too many rooms"))?;
    let res = common.resolve(u64::from(n), u64::from(r))?;
    crate::proto::epoch();

    let mut plans = Vec::with_capacity(n as usize);
    for room in 0..r {
        let name: Arc<str> = res.room(u64::from(room)).into();
        for j in 0..2 {
            let id = room * 2 + j;
            plans.push(ClientPlan {
                id,
                room: name.clone(),
                source: res.source(u64::from(id))?,
                send: if j == 0 {
                    SendPlan::Window {
                        count: opts.messages,
                        window: opts.window,
                    }
                } else {
                    SendPlan::Idle
                },
                expect: u64::from(opts.messages),
                report_each: false,
                check_order: false,
            });
        }
    }

    let mut run = Run::spawn(&res, plans);
    let phase = async {
        run.wait_ready().await?;
        let meter = CpuMeter::start(res.host_pid)?;
        let start_ns = crate::proto::now_ns();
        run.start();
        run.wait_complete(r as usize, Duration::from_secs(opts.drain_secs))
            .await?;
        let cpu = meter.stop()?;
        anyhow::Ok((start_ns, cpu))
    }
    .await;
    let stats = run.finish().await;
    let (start_ns, cpu) = phase?;

    let senders: Vec<_> = stats.iter().filter(|s| s.id % 2 == 0).cloned().collect();
    let receivers: Vec<_> = stats.iter().filter(|s| s.id % 2 == 1).cloned().collect();
    let ts = Totals::of(&senders);
    let tr = Totals::of(&receivers);
    let all = Totals::of(&stats);
    let window_s = ts
        .counts
        .last_ack_ns
        .map_or(0.0, |l| l.saturating_sub(start_ns) as f64 / 1e9);
    let expected = u64::from(r) * u64::from(opts.messages);
    let report = DurableReport {
        rooms: r,
        messages_per_sender: opts.messages,
        window: opts.window,
        room_prefix: res.room_prefix.clone(),
        sent: ts.sent,
        acknowledged: ts.counts.acks,
        received: tr.counts.deliveries,
        expected,
        window_s,
        durable_messages_per_s: if window_s > 0.0 {
            ts.counts.acks as f64 / window_s
        } else {
            0.0
        },
        ack_latency: ts.counts.ack_latency.summary_us(),
        receive_latency: tr.counts.latency.summary_us(),
        rate_limited: all.counts.rate_limited,
        other_errors: all.counts.other_errors,
        first_error: all.counts.first_error.clone(),
        host_us_per_message: cpu.host_us_per(ts.counts.acks),
        cpu,
        host_rss_bytes: host_rss(res.host_pid),
    };
    if report.acknowledged != expected || report.received != expected {
        let mut reason = format!(
            "{} of {expected} messages acknowledged and {} of {expected} received at the end of the drain (up to {} s after the last send)",
            report.acknowledged, report.received, opts.drain_secs
        );
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
