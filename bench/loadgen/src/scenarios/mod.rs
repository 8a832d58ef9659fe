//! The scenarios. Each takes [`crate::Common`] plus its own options, runs to
//! the end by itself (bounded counts, the overall timeout), and returns a
//! report that prints as text and serializes as JSON — or an error, a
//! [`crate::ScenarioFailed`] when the run finished but expectations failed.

pub mod durable;
pub mod fanout;
pub mod idle;
pub mod join;
pub mod wake;

use std::fmt::Write as _;

use crate::sys::CpuUsage;

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
