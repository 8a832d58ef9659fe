//! `idle`: the memory cost of an idle connection. Reads the host's RSS and
//! open descriptors, connects and joins N clients over R rooms, waits for the
//! RSS to settle, reads them again, reports the difference per connection,
//! then closes every client cleanly.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;

use crate::Common;
use crate::hist::LatencySummary;
use crate::run::Run;
use crate::scenarios::join::idle_plans;
use crate::sys::{CpuMeter, CpuUsage, fmt_bytes, proc_fds, proc_rss};

/// `idle` options.
#[derive(Clone, Debug, clap::Args)]
pub struct IdleOpts {
    /// Clients (client i joins room i mod R).
    #[arg(long, default_value_t = 1000)]
    pub clients: u32,
    /// Rooms.
    #[arg(long, default_value_t = 100)]
    pub rooms: u32,
    /// Seconds to wait after everyone joined before reading the RSS again.
    #[arg(long, default_value_t = 2.0)]
    pub hold_secs: f64,
}

/// What `idle` measured.
#[derive(Clone, Debug, Serialize)]
pub struct IdleReport {
    /// Clients.
    pub clients: u32,
    /// Rooms.
    pub rooms: u32,
    /// Room names are `<prefix>-<n>`.
    pub room_prefix: String,
    /// Seconds from the first connect to the last `ready`.
    pub join_s: f64,
    /// Connect-to-ready time per client.
    pub join: LatencySummary,
    /// Listen-queue overflows (system-wide, `/proc/net/netstat`) while joining.
    pub listen_overflows: Option<u64>,
    /// Seconds waited before the second reading.
    pub hold_s: f64,
    /// Host RSS before connecting.
    pub rss_before_bytes: u64,
    /// Host RSS with everyone joined, after the hold.
    pub rss_after_bytes: u64,
    /// (after − before) / clients.
    pub bytes_per_connection: f64,
    /// Host descriptors before.
    pub fds_before: usize,
    /// Host descriptors after.
    pub fds_after: usize,
    /// CPU over connect + join + hold.
    pub cpu: CpuUsage,
    /// Seconds to close every client cleanly.
    pub close_s: f64,
}

impl std::fmt::Display for IdleReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "idle: {} in {} (prefix {})",
            super::count(self.clients, "client"),
            super::count(self.rooms, "room"),
            self.room_prefix
        );
        let _ = writeln!(
            s,
            "  joined:     all ready in {:.2} s; per client {}",
            self.join_s, self.join
        );
        crate::scenarios::overflow_line(&mut s, self.listen_overflows);
        let _ = writeln!(
            s,
            "  host RSS:   {} before, {} after {:.1} s hold → {} per connection",
            fmt_bytes(self.rss_before_bytes as f64),
            fmt_bytes(self.rss_after_bytes as f64),
            self.hold_s,
            fmt_bytes(self.bytes_per_connection)
        );
        let _ = writeln!(
            s,
            "  host fds:   {} before, {} after",
            self.fds_before, self.fds_after
        );
        crate::scenarios::cpu_line(&mut s, &self.cpu, u64::from(self.clients), "client");
        let _ = writeln!(s, "  closed all in {:.2} s", self.close_s);
        f.write_str(s.trim_end())
    }
}

/// Runs `idle` (needs `--host-pid`).
pub async fn idle(common: &Common, opts: &IdleOpts) -> anyhow::Result<IdleReport> {
    let pid = common
        .host_pid
        .context("idle needs --host-pid (the host's RSS is what it measures)")?;
    anyhow::ensure!(
        opts.hold_secs.is_finite() && opts.hold_secs >= 0.0,
        "--hold-secs must be ≥ 0"
    );
    let res = common.resolve(u64::from(opts.clients), u64::from(opts.rooms))?;
    crate::proto::epoch();
    let plans = idle_plans(&res, opts.clients, opts.rooms)?;
    let rss_before = proc_rss(pid)?;
    let fds_before = proc_fds(pid)?;
    let meter = CpuMeter::start(Some(pid))?;
    let mut run = Run::spawn(&res, plans);
    let hold = Duration::from_secs_f64(opts.hold_secs);
    let phase = async {
        let mut joins = run.wait_ready().await?;
        let join_s = run.spawned_at.elapsed().as_secs_f64();
        let overflows = run.listen_overflows();
        run.sleep(hold, "waiting for the host's RSS to settle")
            .await?;
        let rss_after = proc_rss(pid)?;
        let fds_after = proc_fds(pid)?;
        let cpu = meter.stop()?;
        anyhow::Ok((
            LatencySummary::from_samples_ns(&mut joins),
            join_s,
            overflows,
            rss_after,
            fds_after,
            cpu,
        ))
    }
    .await;
    let closing = Instant::now();
    let _stats = run.finish().await;
    let close_s = closing.elapsed().as_secs_f64();
    let (join, join_s, listen_overflows, rss_after, fds_after, cpu) = phase?;
    Ok(IdleReport {
        clients: opts.clients,
        rooms: opts.rooms,
        room_prefix: res.room_prefix.clone(),
        join_s,
        join,
        listen_overflows,
        hold_s: hold.as_secs_f64(),
        rss_before_bytes: rss_before,
        rss_after_bytes: rss_after,
        bytes_per_connection: (rss_after as f64 - rss_before as f64) / f64::from(opts.clients),
        fds_before,
        fds_after,
        cpu,
        close_s,
    })
}
