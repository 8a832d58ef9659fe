//! `wake`: C clients in each of R rooms; then K rounds of: wait W ms (longer
//! than the host's idle timeout, so idle instances get evicted), then one
//! client per room sends one message, and the send → receive latency is
//! measured at the room's other clients — the cost of waking a room up. The
//! sender rotates within the room each round (round k: client k mod C), so
//! each client sends at most ⌈K/C⌉ messages. `GET /metrics` is read before
//! and after.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::client::{ClientPlan, Event, SendPlan};
use crate::hist::{Histogram, LatencySummary};
use crate::metrics::{MetricsFetch, fetch_metrics};
use crate::run::{Run, host_rss};
use crate::sys::{CpuMeter, CpuUsage, fmt_bytes};
use crate::{Common, RATE_LIMIT_ADVICE, proto::RATE_LIMITED};

/// `wake` options.
#[derive(Clone, Debug, clap::Args)]
pub struct WakeOpts {
    /// Rooms.
    #[arg(long, default_value_t = 10)]
    pub rooms: u32,
    /// Clients per room (at least 2: a sender and a receiver).
    #[arg(long, default_value_t = 2)]
    pub clients_per_room: u32,
    /// Rounds.
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// Idle time before each round, in ms (make it longer than the host's idle
    /// timeout, `idle_timeout_ms`, 10 s by default).
    #[arg(long, default_value_t = 11_000)]
    pub idle_ms: u64,
}

/// One round's result.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Round {
    /// Round number.
    pub round: u32,
    /// Send → receive at the other clients.
    pub latency: LatencySummary,
}

/// What `wake` measured.
#[derive(Clone, Debug, Serialize)]
pub struct WakeReport {
    /// Rooms.
    pub rooms: u32,
    /// Clients per room.
    pub clients_per_room: u32,
    /// Rounds.
    pub rounds: u32,
    /// Idle time before each round.
    pub idle_ms: u64,
    /// Room names are `<prefix>-<n>`.
    pub room_prefix: String,
    /// Send → receive at clients other than the sender, all rounds.
    pub latency: LatencySummary,
    /// Send → the sender's own echo, all rounds.
    pub echo_latency: LatencySummary,
    /// Per round.
    pub per_round: Vec<Round>,
    /// `/metrics` before the first round.
    pub metrics_before: MetricsFetch,
    /// `/metrics` after the last round.
    pub metrics_after: MetricsFetch,
    /// CPU over the rounds (idle time included).
    pub cpu: CpuUsage,
    /// Host RSS at the end, if its pid is known.
    pub host_rss_bytes: Option<u64>,
}

impl std::fmt::Display for WakeReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "wake: {} × {} clients (prefix {}), {} after {} ms idle",
            super::count(self.rooms, "room"),
            self.clients_per_room,
            self.room_prefix,
            super::count(self.rounds, "round"),
            self.idle_ms
        );
        let _ = writeln!(s, "  latency (other clients): {}", self.latency);
        let _ = writeln!(s, "  echo latency (sender):   {}", self.echo_latency);
        for r in &self.per_round {
            let _ = writeln!(s, "    round {}: {}", r.round, r.latency);
        }
        let _ = writeln!(s, "  /metrics before:\n{}", indent(&self.metrics_before));
        let _ = writeln!(s, "  /metrics after:\n{}", indent(&self.metrics_after));
        let deliveries =
            u64::from(self.rooms) * u64::from(self.clients_per_room) * u64::from(self.rounds);
        crate::scenarios::cpu_line(&mut s, &self.cpu, deliveries, "delivery");
        if let Some(rss) = self.host_rss_bytes {
            let _ = writeln!(s, "  host RSS: {}", fmt_bytes(rss as f64));
        }
        f.write_str(s.trim_end())
    }
}

fn indent(m: &MetricsFetch) -> String {
    match m {
        MetricsFetch::Found { lines } if !lines.is_empty() => m.to_string(),
        other => format!("    {other}"),
    }
}

/// Runs `wake`.
pub async fn wake(common: &Common, opts: &WakeOpts) -> anyhow::Result<WakeReport> {
    let (r, c) = (opts.rooms, opts.clients_per_room);
    anyhow::ensure!(r >= 1, "--rooms must be at least 1");
    anyhow::ensure!(c >= 2, "--clients-per-room must be at least 2");
    anyhow::ensure!(opts.rounds >= 1, "--rounds must be at least 1");
    let n = r
        .checked_mul(c)
        .ok_or_else(|| anyhow::anyhow!("too many clients"))?;
    let res = common.resolve(u64::from(n), u64::from(r))?;
    crate::proto::epoch();

    let mut senders = Vec::with_capacity(n as usize);
    let mut plans = Vec::with_capacity(n as usize);
    for room in 0..r {
        let name: Arc<str> = res.room(u64::from(room)).into();
        for j in 0..c {
            let id = room * c + j;
            let (tx, rx) = mpsc::unbounded_channel();
            senders.push(tx);
            plans.push(ClientPlan {
                id,
                room: name.clone(),
                source: res.source(u64::from(id))?,
                send: SendPlan::Commanded(rx),
                expect: 0,
                report_each: true,
                check_order: false,
            });
        }
    }

    let mut run = Run::spawn(&res, plans);
    let phase = async {
        run.wait_ready().await?;
        run.start();
        let metrics_before = fetch_metrics(res.host).await;
        let meter = CpuMeter::start(res.host_pid)?;
        let mut all = Histogram::new();
        let mut echo = Histogram::new();
        let mut per_round = Vec::new();
        for k in 0..opts.rounds {
            run.sleep(Duration::from_millis(opts.idle_ms), "idling between rounds")
                .await?;
            for room in 0..r {
                let id = room * c + k % c;
                if senders[id as usize].send(k).is_err() {
                    bail!("client {id} is gone");
                }
            }
            let mut round = Histogram::new();
            let mut got = 0u64;
            while got < u64::from(n) {
                match run.next_event(&format!("waiting for round {k}'s messages")).await? {
                    Event::Delivered {
                        id,
                        stamp,
                        latency_ns,
                    } if stamp.seq == k => {
                        got += 1;
                        if stamp.sender == id {
                            echo.record(latency_ns);
                        } else {
                            round.record(latency_ns);
                        }
                    }
                    Event::ErrorFrame { id, text } => {
                        let advice = if text.contains(RATE_LIMITED) {
                            format!(" ({RATE_LIMIT_ADVICE}, or use more --clients-per-room or a longer --idle-ms)")
                        } else {
                            String::new()
                        };
                        bail!("client {id} got an error in round {k}: {text}{advice}");
                    }
                    _ => {}
                }
            }
            all.merge(&round);
            per_round.push(Round {
                round: k,
                latency: round.summary_us(),
            });
        }
        let cpu = meter.stop()?;
        let metrics_after = fetch_metrics(res.host).await;
        anyhow::Ok((all, echo, per_round, metrics_before, metrics_after, cpu))
    }
    .await;
    let _stats = run.finish().await;
    let (all, echo, per_round, metrics_before, metrics_after, cpu) = phase?;
    Ok(WakeReport {
        rooms: r,
        clients_per_room: c,
        rounds: opts.rounds,
        idle_ms: opts.idle_ms,
        room_prefix: res.room_prefix.clone(),
        latency: all.summary_us(),
        echo_latency: echo.summary_us(),
        per_round,
        metrics_before,
        metrics_after,
        cpu,
        host_rss_bytes: host_rss(res.host_pid),
    })
}
