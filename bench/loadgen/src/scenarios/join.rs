//! `join`: N clients over R rooms connect concurrently (at most
//! `--connect-concurrency` at a time) and join; reports the time until all are
//! ready and the per-client connect-to-ready time. Then all close cleanly.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::Common;
use crate::client::{ClientPlan, SendPlan};
use crate::hist::LatencySummary;
use crate::run::{Run, Totals, host_rss};
use crate::sys::{CpuMeter, CpuUsage, fmt_bytes};

/// `join` options.
#[derive(Clone, Debug, clap::Args)]
pub struct JoinOpts {
    /// Clients (client i joins room i mod R).
    #[arg(long, default_value_t = 1000)]
    pub clients: u32,
    /// Rooms.
    #[arg(long, default_value_t = 1)]
    pub rooms: u32,
}

/// What `join` measured.
#[derive(Clone, Debug, Serialize)]
pub struct JoinReport {
    /// Clients.
    pub clients: u32,
    /// Rooms.
    pub rooms: u32,
    /// Room names are `<prefix>-<n>`.
    pub room_prefix: String,
    /// The connect concurrency cap.
    pub connect_concurrency: usize,
    /// Seconds from the first connect to the last `ready`.
    pub total_s: f64,
    /// Clients ready per second over that time.
    pub joins_per_s: f64,
    /// Connect-to-ready time per client (excluding time queued for the cap).
    pub join: LatencySummary,
    /// Listen-queue overflows (system-wide, `/proc/net/netstat`) while joining.
    pub listen_overflows: Option<u64>,
    /// `{"joined"}` frames received before `ready`, all clients.
    pub joined_frames_before_ready: u64,
    /// `{"joined"}` frames received after `ready` (later joiners), all clients.
    pub joined_frames_after_ready: u64,
    /// Seconds to close every client cleanly.
    pub close_s: f64,
    /// CPU over the join phase.
    pub cpu: CpuUsage,
    /// Host RSS with everyone joined, if its pid is known.
    pub host_rss_bytes: Option<u64>,
}

impl std::fmt::Display for JoinReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "join: {} in {} (prefix {}), at most {} connecting at once",
            super::count(self.clients, "client"),
            super::count(self.rooms, "room"),
            self.room_prefix,
            self.connect_concurrency
        );
        let _ = writeln!(
            s,
            "  all ready in:  {:.3} s ({:.1} joins/s)",
            self.total_s, self.joins_per_s
        );
        let _ = writeln!(s, "  per client:    {}", self.join);
        crate::scenarios::overflow_line(&mut s, self.listen_overflows);
        let _ = writeln!(
            s,
            "  joined frames: {} before ready, {} after",
            self.joined_frames_before_ready, self.joined_frames_after_ready
        );
        let _ = writeln!(s, "  closed all in: {:.3} s", self.close_s);
        crate::scenarios::cpu_line(&mut s, &self.cpu, u64::from(self.clients), "join");
        if let Some(rss) = self.host_rss_bytes {
            let _ = writeln!(s, "  host RSS:      {}", fmt_bytes(rss as f64));
        }
        f.write_str(s.trim_end())
    }
}

/// Plans for `n` idle clients over `r` rooms (client i in room i mod r).
pub(crate) fn idle_plans(res: &crate::Resolved, n: u32, r: u32) -> anyhow::Result<Vec<ClientPlan>> {
    anyhow::ensure!(n >= 1, "--clients must be at least 1");
    anyhow::ensure!(r >= 1 && r <= n, "--rooms must be between 1 and --clients");
    let rooms: Vec<Arc<str>> = (0..u64::from(r)).map(|i| res.room(i).into()).collect();
    (0..n)
        .map(|i| {
            Ok(ClientPlan {
                id: i,
                room: rooms[(i % r) as usize].clone(),
                source: res.source(u64::from(i))?,
                send: SendPlan::Idle,
                expect: 0,
                report_each: false,
                check_order: false,
            })
        })
        .collect()
}

/// Runs `join`.
pub async fn join(common: &Common, opts: &JoinOpts) -> anyhow::Result<JoinReport> {
    anyhow::ensure!(
        opts.rooms >= 1 && opts.rooms <= opts.clients,
        "--rooms must be between 1 and --clients"
    );
    let res = common.resolve(u64::from(opts.clients), u64::from(opts.rooms))?;
    crate::proto::epoch();
    let plans = idle_plans(&res, opts.clients, opts.rooms)?;
    let meter = CpuMeter::start(res.host_pid)?;
    let mut run = Run::spawn(&res, plans);
    let phase = async {
        let mut joins = run.wait_ready().await?;
        let total_s = run.spawned_at.elapsed().as_secs_f64();
        let cpu = meter.stop()?;
        let rss = host_rss(res.host_pid);
        let overflows = run.listen_overflows();
        anyhow::Ok((
            LatencySummary::from_samples_ns(&mut joins),
            total_s,
            cpu,
            rss,
            overflows,
        ))
    }
    .await;
    let closing = Instant::now();
    let stats = run.finish().await;
    let close_s = closing.elapsed().as_secs_f64();
    let (join, total_s, cpu, host_rss_bytes, listen_overflows) = phase?;
    let t = Totals::of(&stats);
    Ok(JoinReport {
        clients: opts.clients,
        rooms: opts.rooms,
        room_prefix: res.room_prefix.clone(),
        connect_concurrency: res.connect_concurrency,
        total_s,
        joins_per_s: if total_s > 0.0 {
            f64::from(opts.clients) / total_s
        } else {
            0.0
        },
        join,
        listen_overflows,
        joined_frames_before_ready: stats.iter().map(|s| u64::from(s.join.joined)).sum(),
        joined_frames_after_ready: t.counts.joined,
        close_s,
        cpu,
        host_rss_bytes,
    })
}
