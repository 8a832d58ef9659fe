//! The coordinator side of a scenario: spawns the client tasks, follows their
//! events under the overall deadline, starts and stops them, and collects
//! their statistics.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::bail;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::client::{ClientPlan, ClientStats, Counts, Event, Shared, run_client};
use crate::{Resolved, sys};

/// A scenario's running clients.
pub struct Run {
    /// What the clients share.
    pub shared: Arc<Shared>,
    events: mpsc::UnboundedReceiver<Event>,
    handles: Vec<JoinHandle<ClientStats>>,
    deadline: tokio::time::Instant,
    timeout: Duration,
    /// Clients.
    pub n: usize,
    /// When the clients were spawned.
    pub spawned_at: Instant,
    /// Clients that reached ready.
    pub ready: usize,
    /// Senders that wrote everything.
    pub sent_all: usize,
    /// Senders that got an echo or error for everything.
    pub settled: usize,
    /// Error frames those senders got.
    pub sender_errors: u64,
    /// Clients that received everything expected.
    pub done: usize,
    /// Clients that failed (counted only with `tolerate_failures`).
    pub failed: usize,
    /// Count a client's failure instead of failing the run with it.
    pub tolerate_failures: bool,
    overflows_at_spawn: Option<u64>,
}

impl Run {
    /// Spawns one task per plan; they connect (at most
    /// `opts.connect_concurrency` at a time) and join right away.
    pub fn spawn(opts: &Resolved, plans: Vec<ClientPlan>) -> Run {
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            host: opts.host,
            permits: Semaphore::new(opts.connect_concurrency.max(1)),
            start: CancellationToken::new(),
            start_at: OnceLock::new(),
            stop: CancellationToken::new(),
            events: tx,
            split: OnceLock::new(),
        });
        let n = plans.len();
        let overflows_at_spawn = sys::listen_overflows();
        let handles = plans
            .into_iter()
            .map(|p| tokio::spawn(run_client(shared.clone(), p)))
            .collect();
        Run {
            shared,
            events: rx,
            handles,
            deadline: tokio::time::Instant::now() + opts.timeout,
            timeout: opts.timeout,
            n,
            spawned_at: Instant::now(),
            ready: 0,
            sent_all: 0,
            settled: 0,
            sender_errors: 0,
            done: 0,
            failed: 0,
            tolerate_failures: false,
            overflows_at_spawn,
        }
    }

    /// Listen-queue overflows (system-wide) since the clients were spawned.
    pub fn listen_overflows(&self) -> Option<u64> {
        Some(sys::listen_overflows()?.saturating_sub(self.overflows_at_spawn?))
    }

    fn progress(&self) -> String {
        format!(
            "{}/{} clients ready, {} senders done sending, {} settled, {}/{} clients received everything",
            self.ready, self.n, self.sent_all, self.settled, self.done, self.n
        )
    }

    /// The next event, with the bookkeeping done; an error when a client
    /// failed or the overall deadline passed (`phase` says what we were
    /// waiting for).
    pub async fn next_event(&mut self, phase: &str) -> anyhow::Result<Event> {
        let ev = match tokio::time::timeout_at(self.deadline, self.events.recv()).await {
            Err(_) => bail!(
                "overall timeout ({} s, --timeout-secs) expired while {phase}: {}",
                self.timeout.as_secs(),
                self.progress()
            ),
            Ok(None) => bail!("all clients are gone while {phase}"),
            Ok(Some(ev)) => ev,
        };
        match &ev {
            Event::Ready { .. } => self.ready += 1,
            Event::SentAll { .. } => self.sent_all += 1,
            Event::Settled { errors, .. } => {
                self.settled += 1;
                self.sender_errors += errors;
            }
            Event::Done { .. } => self.done += 1,
            Event::Failed { .. } if self.tolerate_failures => self.failed += 1,
            Event::Failed { error, .. } => bail!("{error} (while {phase}; {})", self.progress()),
            Event::Delivered { .. } | Event::ErrorFrame { .. } => {}
        }
        Ok(ev)
    }

    /// Waits until every client has joined; returns their join times (ns).
    pub async fn wait_ready(&mut self) -> anyhow::Result<Vec<u64>> {
        let mut joins = Vec::with_capacity(self.n);
        while self.ready < self.n {
            if let Event::Ready { join_ns, .. } =
                self.next_event("waiting for clients to join").await?
            {
                joins.push(join_ns);
            }
        }
        Ok(joins)
    }

    /// Starts the active phase.
    pub fn start(&self) {
        let _ = self.shared.start_at.set(Instant::now());
        self.shared.start.cancel();
    }

    /// Waits until every client has received everything it expects, or — once
    /// all `senders` have written everything — until `drain` has passed (1 s
    /// when senders already know some messages were refused). Returns whether
    /// everyone finished.
    pub async fn wait_complete(&mut self, senders: usize, drain: Duration) -> anyhow::Result<bool> {
        let mut drain_until: Option<tokio::time::Instant> = None;
        let mut shortened = false;
        while self.done < self.n {
            if drain_until.is_none() && self.sent_all >= senders {
                drain_until = Some(tokio::time::Instant::now() + drain);
            }
            if !shortened && self.settled >= senders && self.sender_errors > 0 {
                shortened = true;
                let soon = tokio::time::Instant::now() + Duration::from_secs(1);
                drain_until = Some(drain_until.map_or(soon, |d| d.min(soon)));
            }
            match drain_until {
                Some(until) => tokio::select! {
                    ev = self.next_event("waiting for deliveries") => { ev?; }
                    _ = tokio::time::sleep_until(until) => return Ok(false),
                },
                None => {
                    self.next_event("waiting for senders to send").await?;
                }
            }
        }
        Ok(true)
    }

    /// Waits until every client has received everything it expects or has
    /// failed (with `tolerate_failures`), or until `until`. Returns whether
    /// every client finished.
    pub async fn wait_done_by(&mut self, until: tokio::time::Instant) -> anyhow::Result<bool> {
        while self.done + self.failed < self.n {
            tokio::select! {
                ev = self.next_event("waiting for deliveries") => { ev?; }
                _ = tokio::time::sleep_until(until) => return Ok(false),
            }
        }
        Ok(true)
    }

    /// The overall deadline.
    pub fn deadline(&self) -> tokio::time::Instant {
        self.deadline
    }

    /// Whether the overall deadline has passed.
    pub fn expired(&self) -> bool {
        tokio::time::Instant::now() >= self.deadline
    }

    /// Sleeps `d`, failing if the overall deadline comes first.
    pub async fn sleep(&self, d: Duration, phase: &str) -> anyhow::Result<()> {
        let until = tokio::time::Instant::now() + d;
        if until > self.deadline {
            tokio::time::sleep_until(self.deadline).await;
            bail!(
                "overall timeout ({} s, --timeout-secs) expired while {phase}",
                self.timeout.as_secs()
            );
        }
        tokio::time::sleep_until(until).await;
        Ok(())
    }

    /// Tells every client to close, waits for them, and returns their
    /// statistics (in client order).
    pub async fn finish(self) -> Vec<ClientStats> {
        self.shared.stop.cancel();
        let mut out = Vec::with_capacity(self.handles.len());
        for h in self.handles {
            if let Ok(st) = h.await {
                out.push(st);
            }
        }
        out
    }
}

/// Everything the clients measured, merged.
#[derive(Debug, Default)]
pub struct Totals {
    /// Messages sent.
    pub sent: u64,
    /// What the clients counted after ready, summed.
    pub counts: Counts,
}

impl Totals {
    /// Merges the statistics of every client.
    pub fn of(stats: &[ClientStats]) -> Totals {
        let mut t = Totals::default();
        for s in stats {
            t.sent += u64::from(s.sent);
            t.counts.merge(&s.counts);
        }
        t
    }
}

/// The host's RSS now, if its pid is known (errors become `None`).
pub fn host_rss(pid: Option<u32>) -> Option<u64> {
    pid.and_then(|p| sys::proc_rss(p).ok())
}
