//! `swap`: a hot swap of the chat under load. N clients over R rooms join;
//! S senders per room send one message every I ms. After `--warmup-secs`
//! of sending, the load generator deploys a new version of the chat's class
//! through the admin API (`PUT /admin/classes/{class}`) and keeps sending
//! for `--after-secs`. The new version is the component of `--component`
//! with a custom section appended (a fresh nonce in it): a different content
//! hash, the same behaviour.
//!
//! It reports the connections dropped (target 0), messages lost, doubled or
//! out of order at any client (each client checks every sender's sequence),
//! how long the deploy request took, the time from sending it until every
//! room has served an event on the new version (`GET /admin/classes`, polled
//! every `--poll-ms`, until the new version has ≥ R live objects and the old
//! one none), and the delivery latency of messages sent in the second before
//! the deploy against the second from the deploy on.
//!
//! The host's rate limiter must be off (see the README): every sender sends
//! far more than ~5 messages.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::client::SendPlan;
use crate::hist::{LatencySummary, fmt_us};
use crate::metrics::http_request;
use crate::proto::now_ns;
use crate::run::{Run, Totals};
use crate::scenarios::{Deliveries, room_clients};
use crate::sys::{CpuMeter, proc_cpu};
use crate::{Common, RATE_LIMIT_ADVICE, ScenarioFailed};

/// The environment variable the admin token is read from without
/// `--admin-token` (the host reads the same one).
pub const ADMIN_TOKEN_ENV: &str = "ROOMHOST_ADMIN_TOKEN";
/// The name of the custom section that makes the new version's bytes differ.
pub const SECTION_NAME: &str = "roomhost-loadgen-swap";
/// The latency windows: this long before the deploy, and from it on.
const WINDOW: Duration = Duration::from_secs(1);
/// How long the deploy request may take.
const DEPLOY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one `GET /admin/classes` may take.
const POLL_TIMEOUT: Duration = Duration::from_secs(5);
/// After the last planned send, how much longer to wait for the rooms to move.
const MOVE_GRACE: Duration = Duration::from_secs(2);

/// `swap` options.
#[derive(Clone, Debug, clap::Args)]
pub struct SwapOpts {
    /// Clients in all (client i joins room i mod R).
    #[arg(long, default_value_t = 1000)]
    pub clients: u32,
    /// Rooms.
    #[arg(long, default_value_t = 10)]
    pub rooms: u32,
    /// Senders per room.
    #[arg(long, default_value_t = 2)]
    pub senders: u32,
    /// Each sender sends one message every this many ms.
    #[arg(long, default_value_t = 50)]
    pub interval_ms: u64,
    /// Seconds of sending before the deploy.
    #[arg(long, default_value_t = 3.0)]
    pub warmup_secs: f64,
    /// Seconds of sending from the deploy on.
    #[arg(long, default_value_t = 3.0)]
    pub after_secs: f64,
    /// The component to deploy (with a custom section appended), e.g.
    /// target/guests/wasm32-wasip2/guest/chat_room.wasm.
    #[arg(long)]
    pub component: PathBuf,
    /// The admin API's token [default: $ROOMHOST_ADMIN_TOKEN].
    #[arg(long)]
    pub admin_token: Option<String>,
    /// The class the rooms belong to.
    #[arg(long, default_value = "chat-room")]
    pub class: String,
    /// Where the admin API listens (a 127.x.x.x address) [default: --host].
    #[arg(long)]
    pub admin_host: Option<SocketAddr>,
    /// Poll `GET /admin/classes` this often (ms) after the deploy.
    #[arg(long, default_value_t = 10)]
    pub poll_ms: u64,
    /// After the last message is sent, wait at most this long for deliveries.
    #[arg(long, default_value_t = 10)]
    pub drain_secs: u64,
}

/// The objects on one version, as `GET /admin/classes` last showed them.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct ObjectsOn {
    /// With a live instance of it.
    pub live: u64,
    /// Hibernating, their last instance of it.
    pub hibernated: u64,
}

/// What `swap` measured.
#[derive(Clone, Debug, Serialize)]
pub struct SwapReport {
    /// Clients.
    pub clients: u32,
    /// Rooms.
    pub rooms: u32,
    /// Senders per room.
    pub senders_per_room: u32,
    /// Messages per sender.
    pub messages_per_sender: u32,
    /// Pacing.
    pub interval_ms: u64,
    /// Sending before the deploy.
    pub warmup_s: f64,
    /// Sending from the deploy on.
    pub after_s: f64,
    /// Room names are `<prefix>-<n>`.
    pub room_prefix: String,
    /// The class swapped.
    pub class: String,
    /// Seconds from the first connect to the last `ready`.
    pub join_wall_s: f64,
    /// Connect-to-ready time per client.
    pub join: LatencySummary,
    /// Listen-queue overflows (system-wide) while joining.
    pub listen_overflows: Option<u64>,
    /// Bytes deployed.
    pub component_bytes: u64,
    /// The version that served before.
    pub old_version: Option<String>,
    /// The version deployed.
    pub new_version: Option<String>,
    /// The deploy's HTTP status (0: no answer).
    pub deploy_status: u16,
    /// Why the deploy failed, if it did.
    pub deploy_error: Option<String>,
    /// The deploy request was sent this long after the planned instant (the
    /// latency windows' boundary).
    pub deploy_lag_ms: f64,
    /// Seconds from sending the deploy request to its answer.
    pub deploy_request_s: f64,
    /// Host CPU seconds while the deploy request ran (the compile, the
    /// trial instance, and the chat's load meanwhile).
    pub deploy_host_cpu_s: Option<f64>,
    /// Every room served an event on the new version.
    pub all_moved: bool,
    /// Seconds from sending the deploy request until the poll that saw every
    /// room on the new version.
    pub moved_after_s: Option<f64>,
    /// `GET /admin/classes` requests made after the deploy.
    pub polls: u64,
    /// Of them, how many failed.
    pub poll_errors: u64,
    /// Objects on the new version at the last poll.
    pub on_new: ObjectsOn,
    /// Objects on the old version at the last poll.
    pub on_old: ObjectsOn,
    /// Connections that the host closed or that failed once ready.
    pub dropped: u64,
    /// The first such failure.
    pub first_drop: Option<String>,
    /// Messages sent.
    pub sent: u64,
    /// Messages a client received more than once (extra copies).
    pub duplicates: u64,
    /// Messages a client received after a later one of the same sender.
    pub out_of_order: u64,
    /// Delivery latency for messages sent in the second before the deploy.
    pub latency_before: LatencySummary,
    /// The same, for messages sent in the second from the deploy on.
    pub latency_after: LatencySummary,
    /// What the clients received (`missing` counts messages never received:
    /// expected − (deliveries − duplicates)), and the cost.
    #[serde(flatten)]
    pub delivered: Deliveries,
}

impl std::fmt::Display for SwapReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "swap: {} clients in {} (prefix {}), {} senders/room, one message every {} ms; \
             deploy of {} after {:.1} s, {:.1} s more sending",
            self.clients,
            super::count(self.rooms, "room"),
            self.room_prefix,
            self.senders_per_room,
            self.interval_ms,
            self.class,
            self.warmup_s,
            self.after_s,
        );
        let _ = writeln!(
            s,
            "  join:         all ready in {:.2} s; per client {}",
            self.join_wall_s, self.join
        );
        crate::scenarios::overflow_line(&mut s, self.listen_overflows);
        let _ = write!(
            s,
            "  deploy:       HTTP {} in {:.3} s ({} → {}, {} bytes",
            self.deploy_status,
            self.deploy_request_s,
            self.old_version.as_deref().unwrap_or("?"),
            self.new_version.as_deref().unwrap_or("?"),
            self.component_bytes,
        );
        if let Some(c) = self.deploy_host_cpu_s {
            let _ = write!(s, "; host CPU {c:.2} s meanwhile");
        }
        let _ = writeln!(
            s,
            "; sent {:.1} ms after the planned instant)",
            self.deploy_lag_ms
        );
        if let Some(e) = &self.deploy_error {
            let _ = writeln!(s, "  deploy error: {e}");
        }
        let _ = writeln!(
            s,
            "  moved:        {}; new version {} live / {} hibernated, old {} live / {} hibernated ({} polls, {} failed)",
            match self.moved_after_s {
                Some(t) if self.all_moved => format!(
                    "every room on the new version {} after the deploy request was sent",
                    fmt_us(t * 1e6)
                ),
                _ => "NOT every room moved".to_string(),
            },
            self.on_new.live,
            self.on_new.hibernated,
            self.on_old.live,
            self.on_old.hibernated,
            self.polls,
            self.poll_errors,
        );
        let _ = write!(s, "  dropped:      {} connections", self.dropped);
        if let Some(d) = &self.first_drop {
            let _ = write!(s, " (first: {d})");
        }
        s.push('\n');
        let d = &self.delivered;
        let _ = writeln!(
            s,
            "  deliveries:   {} of {} expected: {} missing, {} doubled, {} out of order; {} messages sent",
            d.deliveries, d.expected, d.missing, self.duplicates, self.out_of_order, self.sent
        );
        let _ = writeln!(
            s,
            "  throughput:   {:.0} deliveries/s over {:.3} s (first send → last delivery)",
            d.deliveries_per_s, d.window_s
        );
        let _ = writeln!(s, "  latency:      {}", d.latency);
        let _ = writeln!(s, "  1 s before:   {}", self.latency_before);
        let _ = writeln!(s, "  1 s from:     {}", self.latency_after);
        let _ = writeln!(s, "  echo latency: {}", d.echo_latency);
        d.write_tail(&mut s);
        f.write_str(s.trim_end())
    }
}

/// Appends a custom section (id 0) named `name` holding `payload` to a
/// WebAssembly module or component: the bytes hash differently and mean the
/// same.
pub fn with_custom_section(wasm: &[u8], name: &str, payload: &[u8]) -> anyhow::Result<Vec<u8>> {
    anyhow::ensure!(
        wasm.len() >= 8 && wasm.starts_with(b"\0asm"),
        "not a WebAssembly binary (no \\0asm header)"
    );
    let mut content = leb128(name.len() as u64);
    content.extend_from_slice(name.as_bytes());
    content.extend_from_slice(payload);
    let mut out = Vec::with_capacity(wasm.len() + content.len() + 6);
    out.extend_from_slice(wasm);
    out.push(0);
    out.extend(leb128(content.len() as u64));
    out.extend(content);
    Ok(out)
}

/// Unsigned LEB128.
fn leb128(mut v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

#[derive(Debug, Deserialize)]
struct Classes {
    classes: Vec<ClassView>,
}

#[derive(Debug, Deserialize)]
struct ClassView {
    class: String,
    active: String,
    versions: Vec<VersionView>,
}

#[derive(Debug, Deserialize)]
struct VersionView {
    id: String,
    #[serde(default)]
    live_objects: u64,
    #[serde(default)]
    hibernated_objects: u64,
}

#[derive(Debug, Deserialize)]
struct ChangeView {
    version: ChangeVersion,
    previous: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ChangeVersion {
    id: String,
}

/// The admin API of one host.
struct Admin {
    host: SocketAddr,
    auth: String,
}

impl Admin {
    /// `GET /admin/classes`: the class's active version and the objects on each version.
    async fn class(&self, class: &str) -> anyhow::Result<(String, Vec<(String, ObjectsOn)>)> {
        let (status, body) = http_request(
            self.host,
            "GET",
            "/admin/classes",
            &[("authorization", &self.auth)],
            &[],
            POLL_TIMEOUT,
        )
        .await?;
        anyhow::ensure!(
            status == 200,
            "GET /admin/classes: HTTP {status}: {}",
            body.trim()
        );
        let all: Classes =
            serde_json::from_str(&body).context("GET /admin/classes: unexpected JSON")?;
        let c = all
            .classes
            .into_iter()
            .find(|c| c.class == class)
            .with_context(|| format!("the host has no class {class:?}"))?;
        let versions = c
            .versions
            .into_iter()
            .map(|v| {
                (
                    v.id,
                    ObjectsOn {
                        live: v.live_objects,
                        hibernated: v.hibernated_objects,
                    },
                )
            })
            .collect();
        Ok((c.active, versions))
    }

    /// `PUT /admin/classes/{class}`: (status, body).
    async fn deploy(&self, class: &str, bytes: &[u8]) -> anyhow::Result<(u16, String)> {
        http_request(
            self.host,
            "PUT",
            &format!("/admin/classes/{class}"),
            &[
                ("authorization", &self.auth),
                ("content-type", "application/wasm"),
                ("x-roomhost-deployed-by", "loadgen swap"),
            ],
            bytes,
            DEPLOY_TIMEOUT,
        )
        .await
    }
}

/// The objects on `id` among `versions`.
fn on(versions: &[(String, ObjectsOn)], id: &str) -> ObjectsOn {
    versions
        .iter()
        .find(|(v, _)| v == id)
        .map(|(_, o)| *o)
        .unwrap_or_default()
}

/// What happened to the deploy.
#[derive(Default)]
struct Deploy {
    status: u16,
    error: Option<String>,
    new_version: Option<String>,
    lag_ms: f64,
    request_s: f64,
    host_cpu_s: Option<f64>,
    sent_ns: u64,
    moved_after_s: Option<f64>,
    polls: u64,
    poll_errors: u64,
    on_new: ObjectsOn,
    on_old: ObjectsOn,
}

/// Runs `swap`.
pub async fn swap(common: &Common, opts: &SwapOpts) -> anyhow::Result<SwapReport> {
    let n = opts.clients;
    let r = opts.rooms;
    super::check_rooms(n, r, opts.senders)?;
    anyhow::ensure!(opts.interval_ms >= 1, "--interval-ms must be at least 1");
    anyhow::ensure!(opts.poll_ms >= 1, "--poll-ms must be at least 1");
    anyhow::ensure!(
        opts.warmup_secs.is_finite()
            && opts.after_secs.is_finite()
            && opts.warmup_secs >= 0.0
            && opts.after_secs > 0.0
            && opts.warmup_secs + opts.after_secs <= 3600.0,
        "--warmup-secs must be ≥ 0 and --after-secs > 0 (at most an hour together)"
    );
    anyhow::ensure!(
        !opts.class.is_empty()
            && opts
                .class
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "--class must be letters, digits, '-' or '_'"
    );
    let token = match &opts.admin_token {
        Some(t) => t.clone(),
        None => std::env::var(ADMIN_TOKEN_ENV).with_context(|| {
            format!("no admin token: pass --admin-token or set {ADMIN_TOKEN_ENV}")
        })?,
    };
    anyhow::ensure!(
        !token.is_empty() && token.bytes().all(|b| b.is_ascii_graphic()),
        "the admin token must be printable ASCII without spaces"
    );
    let admin_host = opts.admin_host.unwrap_or(common.host);
    crate::addr::check_loopback(admin_host)?;
    let original = std::fs::read(&opts.component)
        .with_context(|| format!("reading {}", opts.component.display()))?;
    let nonce = format!("{:016x}", crate::random_u64());
    let bytes = with_custom_section(&original, SECTION_NAME, nonce.as_bytes())
        .with_context(|| format!("{}", opts.component.display()))?;
    let res = common.resolve(u64::from(n), u64::from(r))?;
    crate::proto::epoch();
    let admin = Admin {
        host: admin_host,
        auth: format!("Bearer {token}"),
    };
    // Fail before connecting anyone if the admin API will not answer.
    let (old_version, _) = admin
        .class(&opts.class)
        .await
        .context("asking the admin API before the run")?;

    let interval = Duration::from_millis(opts.interval_ms);
    let warmup = Duration::from_secs_f64(opts.warmup_secs);
    let sending = Duration::from_secs_f64(opts.warmup_secs + opts.after_secs);
    let messages = u32::try_from(sending.as_nanos().div_ceil(interval.as_nanos()))
        .context("too many messages per sender")?
        .max(1);

    let per_room_msgs = u64::from(opts.senders) * u64::from(messages);
    let (plans, expected) =
        room_clients(&res, n, r, opts.senders, per_room_msgs, true, |k, all| {
            SendPlan::Paced {
                count: messages,
                interval,
                offset: Duration::from_nanos(
                    (interval.as_nanos() * u128::from(k) / u128::from(all)) as u64,
                ),
            }
        })?;

    let mut run = Run::spawn(&res, plans);
    let phase = async {
        let mut joins = run.wait_ready().await?;
        let join_wall_s = run.spawned_at.elapsed().as_secs_f64();
        let overflows = run.listen_overflows();
        // From here on a lost connection is a measured outcome, not an error.
        run.tolerate_failures = true;
        let meter = CpuMeter::start(res.host_pid)?;
        let t0 = Instant::now();
        let start_ns = now_ns();
        let deploy_at_ns = start_ns + warmup.as_nanos() as u64;
        let _ = run
            .shared
            .split
            .set((deploy_at_ns, WINDOW.as_nanos() as u64));
        run.start();
        let send_end = t0 + interval * messages;

        run.sleep(
            (t0 + warmup).saturating_duration_since(Instant::now()),
            "sending before the deploy",
        )
        .await?;
        let mut d = Deploy::default();
        let cpu0 = res.host_pid.and_then(|p| proc_cpu(p).ok());
        d.sent_ns = now_ns();
        d.lag_ms = d.sent_ns.saturating_sub(deploy_at_ns) as f64 / 1e6;
        let answer = admin.deploy(&opts.class, &bytes).await;
        d.request_s = now_ns().saturating_sub(d.sent_ns) as f64 / 1e9;
        d.host_cpu_s = match (res.host_pid, cpu0) {
            (Some(p), Some(c0)) => proc_cpu(p)
                .ok()
                .map(|c| c.saturating_sub(c0).as_secs_f64()),
            _ => None,
        };
        match answer {
            Err(e) => d.error = Some(format!("{e:#}")),
            Ok((status, body)) => {
                d.status = status;
                match serde_json::from_str::<ChangeView>(&body) {
                    Ok(c) if status == 200 => {
                        if c.previous.as_deref() != Some(old_version.as_str()) {
                            d.error = Some(format!(
                                "the host replaced version {:?}, not {old_version} (another deploy meanwhile?)",
                                c.previous
                            ));
                        }
                        d.new_version = Some(c.version.id);
                    }
                    _ => d.error = Some(format!("HTTP {status}: {}", body.trim())),
                }
            }
        }
        if let Some(new) = d.new_version.clone() {
            let give_up = tokio::time::Instant::from_std(send_end + MOVE_GRACE).min(run.deadline());
            let poll = Duration::from_millis(opts.poll_ms);
            loop {
                let asked = tokio::time::Instant::now();
                d.polls += 1;
                match admin.class(&opts.class).await {
                    Ok((_, versions)) => {
                        d.on_new = on(&versions, &new);
                        d.on_old = on(&versions, &old_version);
                        if d.on_new.live >= u64::from(r) && d.on_old.live == 0 {
                            d.moved_after_s =
                                Some(now_ns().saturating_sub(d.sent_ns) as f64 / 1e9);
                            break;
                        }
                    }
                    Err(e) => {
                        d.poll_errors += 1;
                        if d.error.is_none() {
                            d.error = Some(format!("polling: {e:#}"));
                        }
                    }
                }
                if tokio::time::Instant::now() >= give_up {
                    break;
                }
                tokio::time::sleep_until((asked + poll).min(give_up)).await;
            }
        }
        let until = tokio::time::Instant::from_std(send_end + Duration::from_secs(opts.drain_secs));
        let complete = run.wait_done_by(until).await?;
        let cpu = meter.stop()?;
        anyhow::Ok((
            LatencySummary::from_samples_ns(&mut joins),
            join_wall_s,
            overflows,
            start_ns,
            d,
            cpu,
            complete,
        ))
    }
    .await;
    let stats = run.finish().await;
    let (join, join_wall_s, listen_overflows, start_ns, d, cpu, _complete) = phase?;

    let t = Totals::of(&stats);
    let dropped: Vec<&str> = stats.iter().filter_map(|s| s.failed.as_deref()).collect();
    let distinct = t.counts.deliveries.saturating_sub(t.counts.duplicates);
    let report = SwapReport {
        clients: n,
        rooms: r,
        senders_per_room: opts.senders,
        messages_per_sender: messages,
        interval_ms: opts.interval_ms,
        warmup_s: opts.warmup_secs,
        after_s: opts.after_secs,
        room_prefix: res.room_prefix.clone(),
        class: opts.class.clone(),
        join_wall_s,
        join,
        listen_overflows,
        component_bytes: bytes.len() as u64,
        old_version: Some(old_version),
        new_version: d.new_version,
        deploy_status: d.status,
        deploy_error: d.error,
        deploy_lag_ms: d.lag_ms,
        deploy_request_s: d.request_s,
        deploy_host_cpu_s: d.host_cpu_s,
        all_moved: d.moved_after_s.is_some(),
        moved_after_s: d.moved_after_s,
        polls: d.polls,
        poll_errors: d.poll_errors,
        on_new: d.on_new,
        on_old: d.on_old,
        dropped: dropped.len() as u64,
        first_drop: dropped.first().map(|s| s.to_string()),
        sent: t.sent,
        duplicates: t.counts.duplicates,
        out_of_order: t.counts.out_of_order,
        latency_before: t.counts.before_split.summary_us(),
        latency_after: t.counts.after_split.summary_us(),
        delivered: Deliveries::of(&t, start_ns, expected, distinct, cpu, res.host_pid),
    };
    let mut problems = Vec::new();
    if let Some(e) = &report.deploy_error {
        problems.push(format!("the deploy failed: {e}"));
    }
    if !report.all_moved && report.new_version.is_some() {
        problems.push(format!(
            "not every room moved to the new version (new: {} live, old: {} live, {} rooms)",
            report.on_new.live, report.on_old.live, r
        ));
    }
    if report.dropped > 0 {
        problems.push(format!("{} connections dropped", report.dropped));
    }
    if report.delivered.missing > 0 || report.duplicates > 0 || report.out_of_order > 0 {
        let mut p = format!(
            "{} messages missing, {} doubled, {} out of order (of {} expected deliveries)",
            report.delivered.missing, report.duplicates, report.out_of_order, expected
        );
        if report.delivered.rate_limited > 0 {
            p.push_str(&format!(
                " ({} rate-limited: {RATE_LIMIT_ADVICE})",
                report.delivered.rate_limited
            ));
        }
        problems.push(p);
    }
    if !problems.is_empty() {
        return Err(ScenarioFailed::of(&report, problems.join("; ")));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leb128_encodes() {
        assert_eq!(leb128(0), [0]);
        assert_eq!(leb128(127), [0x7f]);
        assert_eq!(leb128(128), [0x80, 0x01]);
        assert_eq!(leb128(624_485), [0xe5, 0x8e, 0x26]);
    }

    #[test]
    fn appends_a_custom_section() {
        let header = b"\0asm\x0d\x00\x01\x00";
        let out = with_custom_section(header, "abc", b"xyz").expect("appended");
        assert_eq!(&out[..8], header);
        // id 0, size 7 (name length 1 + "abc" 3 + payload 3), then the content.
        assert_eq!(&out[8..], b"\x00\x07\x03abcxyz");
        let long = with_custom_section(header, SECTION_NAME, &[7; 200]).expect("appended");
        let size = 1 + SECTION_NAME.len() + 200;
        assert_eq!(
            &long[8..11],
            &[0, 0x80 | (size & 0x7f) as u8, (size >> 7) as u8]
        );
        assert_eq!(long.len(), 8 + 3 + size);
        assert!(with_custom_section(b"nope", "x", b"").is_err());
    }
}
