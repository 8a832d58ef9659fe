//! # loadgen — load generator for roomhost's chat
//!
//! Real WebSocket chat clients (tokio-tungstenite) against a roomhost on
//! 127.0.0.1, each connecting from its own loopback source address
//! ([`addr`]), in six scenarios ([`scenarios`]): `fanout`, `join`, `idle`,
//! `wake`, `durable` and `swap`. Everything is in one process, so message latency is
//! measured one way: the send time rides in the message text ([`proto`]).
//!
//! Each client is one task that keeps its own statistics ([`client`]); the
//! coordinator ([`run`]) merges them at the end, so nothing is shared per
//! frame. The `loadgen` binary wraps the scenarios in a CLI; tests call them
//! directly (see `tests/smoke.rs`).

use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::time::Duration;

pub mod addr;
pub mod client;
pub mod hist;
pub mod metrics;
pub mod proto;
pub mod run;
pub mod scenarios;
pub mod sys;

pub use scenarios::durable::{DurableOpts, DurableReport, durable};
pub use scenarios::fanout::{FanoutOpts, FanoutReport, fanout};
pub use scenarios::idle::{IdleOpts, IdleReport, idle};
pub use scenarios::join::{JoinOpts, JoinReport, join};
pub use scenarios::runaway::{RunawayOpts, RunawayReport, runaway};
pub use scenarios::swap::{SwapOpts, SwapReport, swap};
pub use scenarios::wake::{WakeOpts, WakeReport, wake};

/// Options every scenario takes.
#[derive(Clone, Debug, clap::Args)]
pub struct Common {
    /// The host (a 127.x.x.x address: loopback only).
    #[arg(long, global = true, default_value = "127.0.0.1:8080")]
    pub host: SocketAddr,
    /// The host's pid: report its RSS and CPU time (from /proc).
    #[arg(long, global = true)]
    pub host_pid: Option<u32>,
    /// Room names are `<prefix>-<n>` [default: a fresh random prefix per run].
    #[arg(long, global = true)]
    pub room_prefix: Option<String>,
    /// Fail if the scenario has not finished after this many seconds.
    #[arg(long, global = true, default_value_t = 120)]
    pub timeout_secs: u64,
    /// At most this many clients connecting and joining at once.
    #[arg(long, global = true, default_value_t = 500)]
    pub connect_concurrency: usize,
    /// First source-address slot (client i connects from slot offset+i, see
    /// `addr`) [default: random, so runs do not share rate-limiter state].
    #[arg(long, global = true)]
    pub source_offset: Option<u64>,
}

impl Common {
    /// Defaults for a host at `host` (what tests use).
    pub fn new(host: SocketAddr) -> Common {
        Common {
            host,
            host_pid: None,
            room_prefix: None,
            timeout_secs: 120,
            connect_concurrency: 500,
            source_offset: None,
        }
    }

    /// Checks the options and fixes the random choices for one run of
    /// `clients` clients over `rooms` rooms.
    pub fn resolve(&self, clients: u64, rooms: u64) -> anyhow::Result<Resolved> {
        addr::check_loopback(self.host)?;
        anyhow::ensure!(rooms > 0, "--rooms must be at least 1");
        anyhow::ensure!(
            clients <= addr::CAPACITY,
            "at most {} clients",
            addr::CAPACITY
        );
        let prefix = match &self.room_prefix {
            Some(p) => p.clone(),
            None => format!("lg{:08x}", random_u64() as u32),
        };
        let digits = (rooms - 1).to_string().len();
        anyhow::ensure!(
            !prefix.is_empty()
                && prefix.len() + 1 + digits <= 32
                && prefix
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "--room-prefix must be letters, digits, '-' or '_', short enough that `<prefix>-{}` fits in 32 characters",
            rooms - 1
        );
        let source_offset = self
            .source_offset
            .unwrap_or_else(|| addr::random_offset(clients));
        // Fail early if the addresses would run out.
        if clients > 0 {
            addr::client_source(source_offset, clients - 1)?;
        }
        if let Some(pid) = self.host_pid {
            sys::proc_cpu(pid)?;
        }
        Ok(Resolved {
            host: self.host,
            host_pid: self.host_pid,
            room_prefix: prefix,
            timeout: Duration::from_secs(self.timeout_secs),
            connect_concurrency: self.connect_concurrency,
            source_offset,
        })
    }
}

/// [`Common`] with the random choices made.
#[derive(Clone, Debug)]
pub struct Resolved {
    /// The host.
    pub host: SocketAddr,
    /// Its pid.
    pub host_pid: Option<u32>,
    /// The room prefix.
    pub room_prefix: String,
    /// The overall timeout.
    pub timeout: Duration,
    /// The connect concurrency cap.
    pub connect_concurrency: usize,
    /// The first source-address slot.
    pub source_offset: u64,
}

impl Resolved {
    /// The name of room `r`.
    pub fn room(&self, r: u64) -> String {
        format!("{}-{r}", self.room_prefix)
    }

    /// Client `i`'s source address.
    pub fn source(&self, i: u64) -> anyhow::Result<std::net::Ipv4Addr> {
        addr::client_source(self.source_offset, i)
    }
}

/// A random `u64` (from the standard library's randomly keyed hasher).
pub fn random_u64() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(proto::epoch().elapsed().as_nanos());
    h.finish()
}

/// A scenario that ran but did not meet its expectations (missing
/// deliveries, refused messages): carries the report as text and JSON.
#[derive(Debug)]
pub struct ScenarioFailed {
    /// Why it failed.
    pub reason: String,
    /// The report, as printed.
    pub text: String,
    /// The report as JSON.
    pub json: serde_json::Value,
}

impl std::fmt::Display for ScenarioFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}\nFAILED: {}", self.text, self.reason)
    }
}

impl std::error::Error for ScenarioFailed {}

impl ScenarioFailed {
    /// Wraps a report and a reason into an error.
    pub fn of<R: std::fmt::Display + serde::Serialize>(
        report: &R,
        reason: String,
    ) -> anyhow::Error {
        anyhow::Error::new(ScenarioFailed {
            reason,
            text: report.to_string(),
            json: serde_json::to_value(report).unwrap_or(serde_json::Value::Null),
        })
    }
}

/// The advice printed when the host refused messages with its rate limiter.
pub const RATE_LIMIT_ADVICE: &str = "the host's rate limiter refused messages; \
    run the host with the limiter off (see bench/loadgen/README.md), \
    or send at most ~5 messages per client";
