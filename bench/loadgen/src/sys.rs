//! Process measurements: the host's RSS, CPU time and open descriptors from
//! `/proc/PID`, the load generator's own CPU time, and the descriptor limit.

use std::time::Duration;

use anyhow::Context as _;
use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
use serde::Serialize;

/// Raises this process's `RLIMIT_NOFILE` soft limit to the hard limit; returns
/// the (old soft, new soft) values.
pub fn raise_nofile_limit() -> std::io::Result<(Option<u64>, Option<u64>)> {
    let lim = getrlimit(Resource::Nofile);
    if lim.current == lim.maximum {
        return Ok((lim.current, lim.current));
    }
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: lim.maximum,
            maximum: lim.maximum,
        },
    )?;
    Ok((lim.current, lim.maximum))
}

/// The current `RLIMIT_NOFILE` soft limit (`None` = unlimited).
pub fn nofile_limit() -> Option<u64> {
    getrlimit(Resource::Nofile).current
}

/// This process's CPU time (user + system, all threads).
pub fn self_cpu() -> Duration {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Resident set size of `pid` in bytes (`VmRSS` of `/proc/PID/status`).
pub fn proc_rss(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_vm_rss(&text).with_context(|| format!("no VmRSS line in {path}"))
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut parts = line["VmRSS:".len()..].split_whitespace();
    let n: u64 = parts.next()?.parse().ok()?;
    let unit = parts.next().unwrap_or("kB");
    Some(match unit {
        "kB" => n * 1024,
        "mB" | "MB" => n * 1024 * 1024,
        _ => n,
    })
}

/// CPU time (utime + stime) of `pid` from `/proc/PID/stat`.
pub fn proc_cpu(pid: u32) -> anyhow::Result<Duration> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let ticks = parse_stat_ticks(&text).with_context(|| format!("unexpected format of {path}"))?;
    let hz = rustix::param::clock_ticks_per_second().max(1);
    Ok(Duration::from_nanos(
        (u128::from(ticks) * 1_000_000_000 / u128::from(hz)) as u64,
    ))
}

/// utime + stime (fields 14 and 15) in clock ticks. The command name (field
/// 2) may contain spaces and parentheses, so fields are counted after the
/// last `)`.
fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3 (state): field n is fields[n - 3].
    let utime: u64 = fields.get(14 - 3)?.parse().ok()?;
    let stime: u64 = fields.get(15 - 3)?.parse().ok()?;
    Some(utime + stime)
}

/// How many descriptors `pid` has open (entries of `/proc/PID/fd`).
pub fn proc_fds(pid: u32) -> anyhow::Result<usize> {
    let path = format!("/proc/{pid}/fd");
    Ok(std::fs::read_dir(&path)
        .with_context(|| format!("listing {path}"))?
        .count())
}

/// The system-wide count of connections dropped because a listen queue was
/// full (`TcpExt: ListenOverflows` in `/proc/net/netstat`). A dropped SYN is
/// retried after 1 s, which shows up as 1 s / 3 s join times.
pub fn listen_overflows() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/net/netstat").ok()?;
    netstat_value(&text, "TcpExt", "ListenOverflows")
}

/// A value from `/proc/net/netstat`-style text: a header line
/// `Group: name name ...` followed by `Group: value value ...`.
fn netstat_value(text: &str, group: &str, name: &str) -> Option<u64> {
    let prefix = format!("{group}:");
    let mut lines = text.lines().filter(|l| l.starts_with(&prefix));
    while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
        let pos = names.split_whitespace().position(|n| n == name);
        if let Some(pos) = pos {
            return values.split_whitespace().nth(pos)?.parse().ok();
        }
    }
    None
}

/// CPU use over a measured window: the host's (when its pid is known) and the
/// load generator's own.
#[derive(Clone, Copy, Debug)]
pub struct CpuMeter {
    pid: Option<u32>,
    host_start: Option<Duration>,
    self_start: Duration,
    wall_start: std::time::Instant,
}

/// What a [`CpuMeter`] measured.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct CpuUsage {
    /// Wall-clock seconds of the window.
    pub wall_s: f64,
    /// Host CPU seconds (user + system) in the window, when `--host-pid` was given.
    pub host_cpu_s: Option<f64>,
    /// The load generator's own CPU seconds in the window.
    pub loadgen_cpu_s: f64,
}

impl CpuMeter {
    /// Starts measuring (`pid`: the host's, if known).
    pub fn start(pid: Option<u32>) -> anyhow::Result<CpuMeter> {
        let host_start = pid.map(proc_cpu).transpose()?;
        Ok(CpuMeter {
            pid,
            host_start,
            self_start: self_cpu(),
            wall_start: std::time::Instant::now(),
        })
    }

    /// The usage since [`CpuMeter::start`].
    pub fn stop(&self) -> anyhow::Result<CpuUsage> {
        let host_cpu_s = match (self.pid, self.host_start) {
            (Some(pid), Some(start)) => Some(proc_cpu(pid)?.saturating_sub(start).as_secs_f64()),
            _ => None,
        };
        Ok(CpuUsage {
            wall_s: self.wall_start.elapsed().as_secs_f64(),
            host_cpu_s,
            loadgen_cpu_s: self_cpu().saturating_sub(self.self_start).as_secs_f64(),
        })
    }
}

impl CpuUsage {
    /// Host CPU µs per unit of work (e.g. per delivery).
    pub fn host_us_per(&self, units: u64) -> Option<f64> {
        match self.host_cpu_s {
            Some(s) if units > 0 => Some(s * 1e6 / units as f64),
            _ => None,
        }
    }
}

impl std::fmt::Display for CpuUsage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.host_cpu_s {
            Some(h) => write!(f, "host CPU {h:.2} s, ")?,
            None => write!(f, "host CPU n/a (no --host-pid), ")?,
        }
        write!(
            f,
            "loadgen CPU {:.2} s, over {:.2} s wall",
            self.loadgen_cpu_s, self.wall_s
        )
    }
}

/// Formats a byte count.
pub fn fmt_bytes(b: f64) -> String {
    if b.abs() >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", b / 1024.0 / 1024.0)
    } else if b.abs() >= 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{b:.0} B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_awkward_command_names() {
        let stat = "1234 (my (odd) prog) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 4 0 100 1000000 500 18446744073709551615";
        assert_eq!(parse_stat_ticks(stat), Some(325));
        assert_eq!(parse_stat_ticks("garbage"), None);
    }

    #[test]
    fn parses_netstat() {
        let text = "TcpExt: SyncookiesSent ListenOverflows ListenDrops\nTcpExt: 1 220 221\n\
                    IpExt: InNoRoutes ListenOverflows\nIpExt: 0 9\n";
        assert_eq!(netstat_value(text, "TcpExt", "ListenOverflows"), Some(220));
        assert_eq!(netstat_value(text, "IpExt", "ListenOverflows"), Some(9));
        assert_eq!(netstat_value(text, "TcpExt", "Nope"), None);
        let _ = listen_overflows();
    }

    #[test]
    fn parses_vm_rss() {
        let status = "Name:\tx\nVmPeak:\t  999 kB\nVmRSS:\t   2048 kB\nThreads: 3\n";
        assert_eq!(parse_vm_rss(status), Some(2048 * 1024));
        assert_eq!(parse_vm_rss("Name: x\n"), None);
    }

    #[test]
    fn reads_own_process() {
        let pid = std::process::id();
        assert!(proc_rss(pid).expect("rss") > 0);
        assert!(proc_fds(pid).expect("fds") > 0);
        proc_cpu(pid).expect("cpu");
        let m = CpuMeter::start(Some(pid)).expect("meter");
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let u = m.stop().expect("usage");
        assert!(u.loadgen_cpu_s > 0.0);
        assert!(u.host_cpu_s.is_some());
    }
}

/// CPU steal over a window, from the first line of `/proc/stat`: the time
/// the hypervisor gave this machine's CPUs to someone else.
#[derive(Clone, Copy, Debug)]
pub struct Steal {
    start: (u64, u64),
}

impl Steal {
    /// Starts a window (`None` where `/proc/stat` cannot be read).
    pub fn start() -> Option<Steal> {
        proc_stat_steal().map(|start| Steal { start })
    }

    /// Steal since [`Steal::start`], as a share of all CPU time.
    pub fn share(&self) -> Option<f64> {
        let (steal, total) = proc_stat_steal()?;
        let total = total.checked_sub(self.start.1)?;
        (total > 0).then(|| steal.saturating_sub(self.start.0) as f64 / total as f64)
    }
}

/// (steal, all) clock ticks of all CPUs so far.
fn proc_stat_steal() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().next()?.strip_prefix("cpu ")?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal guest guest_nice; guest
    // time is already counted in user and nice.
    let steal = *ticks.get(7)?;
    let all = ticks.iter().take(8).sum();
    Some((steal, all))
}
