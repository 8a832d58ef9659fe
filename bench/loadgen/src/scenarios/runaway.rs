//! `runaway`: runaway guests beside a chat. N objects of a class whose
//! request loops forever (the test guest `probe`'s `spin`) are asked again
//! as soon as the host stops them, for `--secs`; meanwhile one chat client
//! in a room of its own sends a message every `--interval-ms` and times the
//! echo of each. With `--runaways 0` it measures the quiet chat.
//!
//! It reports the chat's round trip (p50, p99, max), and for the runaways:
//! how many were stopped, the wall time of each request, and (with the admin
//! token) how far past its budget each one's guest time went before the host
//! stopped it, read off the trap messages `GET /admin/objects/...` shows
//! (`... (1004 ms used of max_event_cpu_ms = 1000)`). CPU steal over the
//! run comes from `/proc/stat`.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{close, connect, join};
use crate::hist::LatencySummary;
use crate::metrics::http_request;
use crate::proto::{Incoming, RATE_LIMITED, Stamp, classify, now_ns};
use crate::scenarios::swap::ADMIN_TOKEN_ENV;
use crate::sys::{CpuMeter, CpuUsage, Steal};
use crate::{Common, RATE_LIMIT_ADVICE, ScenarioFailed};

/// How long one runaway request may take before the run fails: the host
/// must stop it long before.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);
/// How long the chat waits for one echo.
const ECHO_TIMEOUT: Duration = Duration::from_secs(10);

/// `runaway` options.
#[derive(Clone, Debug, clap::Args)]
pub struct RunawayOpts {
    /// Runaway objects, each asked again as soon as it is stopped (0: the
    /// quiet chat alone).
    #[arg(long, default_value_t = 4)]
    pub runaways: u32,
    /// Runaway i is `<path-prefix><i>/spin`.
    #[arg(long, default_value = "/probe/runaway-")]
    pub path_prefix: String,
    /// The class of the runaways (to read their traps through the admin API).
    #[arg(long, default_value = "probe")]
    pub class: String,
    /// Seconds of chat (the runaways start 1 s before it).
    #[arg(long, default_value_t = 10.0)]
    pub secs: f64,
    /// The chat client sends one message every this many ms.
    #[arg(long, default_value_t = 30)]
    pub interval_ms: u64,
    /// The admin API's token [default: $ROOMHOST_ADMIN_TOKEN]; without one
    /// the budget overshoot is not reported.
    #[arg(long)]
    pub admin_token: Option<String>,
}

/// What one runaway object's traps say.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Overshoot {
    /// Traps read.
    pub traps: usize,
    /// Guest time past the budget at the interruption (ms): the median...
    pub p50_ms: u64,
    /// ... and the largest.
    pub max_ms: u64,
    /// The budget the traps name (ms).
    pub budget_ms: u64,
}

/// What `runaway` measured.
#[derive(Clone, Debug, Serialize)]
pub struct RunawayReport {
    /// Runaway objects.
    pub runaways: u32,
    /// The chat's round trips (send to own echo).
    pub chat: LatencySummary,
    /// Runaway requests the host stopped (500s).
    pub stopped: u64,
    /// Other answers to runaway requests (should be 0).
    pub other_answers: u64,
    /// Wall time of the stopped requests.
    pub runaway_wall: LatencySummary,
    /// Guest time past the budget, over all runaway objects' recent traps.
    pub overshoot: Option<Overshoot>,
    /// CPU time of the host (with `--host-pid`) and the load generator.
    pub cpu: CpuUsage,
    /// CPU steal over the run, as a share of all CPU time (`/proc/stat`).
    pub steal: Option<f64>,
}

impl std::fmt::Display for RunawayReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "runaway: {} runaway objects beside one chat",
            self.runaways
        );
        let _ = writeln!(s, "  chat round trip: {}", self.chat);
        let _ = writeln!(
            s,
            "  runaways stopped: {} (other answers {}); wall time per request: {}",
            self.stopped, self.other_answers, self.runaway_wall
        );
        if let Some(o) = &self.overshoot {
            let _ = writeln!(
                s,
                "  guest time past the {} ms budget at the interruption: p50 {} ms, max {} ms ({} traps)",
                o.budget_ms, o.p50_ms, o.max_ms, o.traps
            );
        }
        let _ = write!(s, "  {}", self.cpu);
        if let Some(st) = self.steal {
            let _ = write!(s, "; steal {:.2} %", st * 100.0);
        }
        f.write_str(&s)
    }
}

/// Runs the scenario (failing after `--timeout-secs`).
pub async fn runaway(c: &Common, o: &RunawayOpts) -> anyhow::Result<RunawayReport> {
    let limit = Duration::from_secs(c.timeout_secs);
    match tokio::time::timeout(limit, run(c, o)).await {
        Ok(r) => r,
        Err(_) => anyhow::bail!("runaway: not finished after {} s", c.timeout_secs),
    }
}

async fn run(c: &Common, o: &RunawayOpts) -> anyhow::Result<RunawayReport> {
    crate::addr::check_loopback(c.host)?;
    anyhow::ensure!(o.secs > 0.0, "--secs must be positive");
    let token = o
        .admin_token
        .clone()
        .or_else(|| std::env::var(ADMIN_TOKEN_ENV).ok());
    let resolved = c.resolve(1, 1)?;
    let room = resolved.room(0);
    let mut ws = connect(c.host, resolved.source(0)?, &room).await?;
    join(&mut ws, "chat").await?;

    let steal = Steal::start();
    let meter = CpuMeter::start(c.host_pid)?;
    let stop_at = Instant::now() + Duration::from_secs_f64(o.secs + 1.0);
    let runs: Vec<_> = (0..o.runaways)
        .map(|i| {
            let host = c.host;
            let path = format!("{}{i}/spin", o.path_prefix);
            tokio::spawn(async move {
                let mut walls = Vec::new();
                let mut other = 0u64;
                while Instant::now() < stop_at {
                    let t = Instant::now();
                    let (status, _) =
                        http_request(host, "GET", &path, &[], &[], REQUEST_TIMEOUT).await?;
                    if status == 500 {
                        walls.push(t.elapsed().as_nanos() as u64);
                    } else {
                        other += 1;
                    }
                }
                anyhow::Ok((walls, other))
            })
        })
        .collect();
    if o.runaways > 0 {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    // The chat: one message every interval, each timed to its own echo.
    let mut rtts = Vec::new();
    let end = Instant::now() + Duration::from_secs_f64(o.secs);
    let mut tick = tokio::time::interval(Duration::from_millis(o.interval_ms.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seq = 0u32;
    while Instant::now() < end {
        tick.tick().await;
        let stamp = Stamp {
            t_ns: now_ns(),
            sender: 0,
            seq,
        };
        ws.send(Message::text(stamp.message_frame()))
            .await
            .context("sending a chat message")?;
        let echoed = tokio::time::timeout(ECHO_TIMEOUT, async {
            while let Some(frame) = ws.next().await {
                if let Ok(Message::Text(t)) = frame {
                    match classify(&t) {
                        Incoming::Chat(m) if Stamp::decode(&m).is_some_and(|s| s.seq == seq) => {
                            return Ok(());
                        }
                        Incoming::Error(e) if e.contains(RATE_LIMITED) => {
                            anyhow::bail!("{RATE_LIMIT_ADVICE}")
                        }
                        Incoming::Error(e) => anyhow::bail!("the room answered: {e}"),
                        _ => {}
                    }
                }
            }
            anyhow::bail!("the connection ended")
        })
        .await;
        match echoed {
            Ok(r) => r?,
            Err(_) => anyhow::bail!("message {seq} was not echoed within {ECHO_TIMEOUT:?}"),
        }
        rtts.push(now_ns() - stamp.t_ns);
        seq += 1;
    }
    close(&mut ws).await;

    let mut walls = Vec::new();
    let mut other_answers = 0;
    for r in runs {
        let (w, other) = r.await.context("a runaway task panicked")??;
        walls.extend(w);
        other_answers += other;
    }
    let cpu = meter.stop()?;
    let steal = steal.and_then(|s| s.share());

    let overshoot = match &token {
        Some(token) if o.runaways > 0 => Some(overshoot(c, o, token).await?),
        _ => None,
    };
    let report = RunawayReport {
        runaways: o.runaways,
        chat: LatencySummary::from_samples_ns(&mut rtts),
        stopped: walls.len() as u64,
        other_answers,
        runaway_wall: LatencySummary::from_samples_ns(&mut walls),
        overshoot,
        cpu,
        steal,
    };
    if report.other_answers > 0 {
        return Err(ScenarioFailed::of(
            &report,
            "some runaway requests were answered with something other than 500".into(),
        ));
    }
    Ok(report)
}

/// Reads every runaway object's recent traps and how far past its budget
/// each one ran.
async fn overshoot(c: &Common, o: &RunawayOpts, token: &str) -> anyhow::Result<Overshoot> {
    let auth = format!("Bearer {token}");
    let mut past = Vec::new();
    let mut budget_ms = 0;
    for i in 0..o.runaways {
        let name = format!(
            "{}{i}",
            o.path_prefix
                .trim_end_matches('/')
                .rsplit('/')
                .next()
                .unwrap_or("")
        );
        let path = format!("/admin/objects/{}/{name}", o.class);
        let (status, body) = http_request(
            c.host,
            "GET",
            &path,
            &[("authorization", &auth)],
            &[],
            Duration::from_secs(10),
        )
        .await?;
        anyhow::ensure!(status == 200, "GET {path}: {status} {body}");
        let shown: serde_json::Value =
            serde_json::from_str(&body).with_context(|| format!("GET {path}"))?;
        for t in shown["traps"].as_array().into_iter().flatten() {
            if let Some((used, budget)) = t["message"].as_str().and_then(parse_trap) {
                past.push(used.saturating_sub(budget));
                budget_ms = budget;
            }
        }
    }
    past.sort_unstable();
    Ok(Overshoot {
        traps: past.len(),
        p50_ms: past.get(past.len() / 2).copied().unwrap_or(0),
        max_ms: past.last().copied().unwrap_or(0),
        budget_ms,
    })
}

/// `(used, budget)` from `... (1004 ms used of max_event_cpu_ms = 1000)`.
fn parse_trap(message: &str) -> Option<(u64, u64)> {
    let (before, after) = message.split_once(" ms used of max_event_cpu_ms = ")?;
    let used = before.rsplit('(').next()?.parse().ok()?;
    let budget = after.trim_end_matches(')').parse().ok()?;
    Some((used, budget))
}

#[cfg(test)]
mod tests {
    use super::parse_trap;

    #[test]
    fn reads_the_hosts_trap_message() {
        assert_eq!(
            parse_trap(
                "event exceeded its CPU time limit (1004 ms used of max_event_cpu_ms = 1000)"
            ),
            Some((1004, 1000))
        );
        assert_eq!(parse_trap("wasm trap: unreachable"), None);
    }
}
