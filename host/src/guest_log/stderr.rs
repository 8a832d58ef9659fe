//! A guest's stderr, forwarded line by line to the host's log (`tracing`,
//! target `roomhost::guest`) with the object it came from.
//!
//! While an event runs, the lines are held back ([`GuestStderr::capture`]):
//! when the event returns they are logged as they were written
//! ([`GuestStderr::release`]); when it traps they become part of the one
//! line that reports the trap ([`GuestStderr::take`], see
//! [`super::failure`]) — a panic is one log entry, not its message scattered
//! over several.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

/// The longest line kept; the rest of a longer line is dropped (a guest cannot
/// make the host buffer more than this for it).
pub const MAX_LINE: usize = 4096;

/// The most lines held back during one event by default; later ones are
/// counted, not kept (`limits.max_trap_stderr_lines`).
const MAX_HELD_LINES: usize = 32;

/// The stderr of one instance. Its label names the object, and changes when a
/// pre-warmed instance is bound to one.
#[derive(Clone)]
pub struct GuestStderr {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    label: String,
    /// Lines are held back (an event runs).
    capturing: bool,
    held: Vec<String>,
    /// Lines dropped past `limits.held`.
    dropped: usize,
    budget: Budget,
}

/// How many lines (`log` calls and stderr lines) an instance may log, per
/// event and per second (`limits.max_log_lines_per_event` and
/// `_per_second`); the rest are dropped, counted, and said once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogLimits {
    /// Lines per event.
    pub per_event: usize,
    /// Lines per second.
    pub per_second: usize,
    /// Stderr lines held back during one event (reported with a trap, or
    /// logged when it returns); later ones are counted, not kept.
    pub held: usize,
}

impl Default for LogLimits {
    fn default() -> LogLimits {
        LogLimits {
            per_event: 1_000,
            per_second: 1_000,
            held: MAX_HELD_LINES,
        }
    }
}

struct Budget {
    limits: LogLimits,
    metrics: Option<Arc<crate::metrics::Metrics>>,
    event_lines: usize,
    window: Instant,
    window_lines: usize,
    /// Dropped since last said.
    dropped: u64,
}

impl Budget {
    fn admit(&mut self) -> bool {
        let now = Instant::now();
        if now.duration_since(self.window) >= Duration::from_secs(1) {
            self.window = now;
            self.window_lines = 0;
        }
        if self.event_lines >= self.limits.per_event || self.window_lines >= self.limits.per_second
        {
            self.dropped += 1;
            if let Some(m) = &self.metrics {
                m.guest_log_line_dropped();
            }
            return false;
        }
        self.event_lines += 1;
        self.window_lines += 1;
        true
    }

    /// What was dropped since last said, and forget it.
    fn said(&mut self) -> Option<String> {
        let n = std::mem::take(&mut self.dropped);
        (n > 0).then(|| {
            format!(
                "[{n} log lines dropped: over limits.max_log_lines_per_event ({}) or limits.max_log_lines_per_second ({})]",
                self.limits.per_event, self.limits.per_second
            )
        })
    }
}

impl GuestStderr {
    /// A stderr whose lines are logged under `label` (the object's id).
    pub fn new(label: String) -> GuestStderr {
        GuestStderr::limited(label, LogLimits::default(), None)
    }

    /// A stderr whose instance may log `limits` lines (its `log` calls
    /// too, see [`GuestStderr::admit`]), counting drops in `metrics`.
    pub fn limited(
        label: String,
        limits: LogLimits,
        metrics: Option<Arc<crate::metrics::Metrics>>,
    ) -> GuestStderr {
        GuestStderr {
            inner: Arc::new(Mutex::new(Inner {
                label,
                capturing: false,
                held: Vec::new(),
                dropped: 0,
                budget: Budget {
                    limits,
                    metrics,
                    event_lines: 0,
                    window: Instant::now(),
                    window_lines: 0,
                    dropped: 0,
                },
            })),
        }
    }

    /// Whether one more line (a `log` call) is within the instance's
    /// budget; a refused one is counted.
    pub fn admit(&self) -> bool {
        match self.inner.lock() {
            Ok(mut i) => i.budget.admit(),
            Err(_) => false,
        }
    }

    /// Names the object the instance now belongs to.
    pub fn set_label(&self, label: String) {
        if let Ok(mut l) = self.inner.lock() {
            l.label = label;
        }
    }

    /// Holds lines back from now on (an event starts), until [`release`] or
    /// [`take`].
    ///
    /// [`release`]: GuestStderr::release
    /// [`take`]: GuestStderr::take
    pub fn capture(&self) {
        if let Ok(mut i) = self.inner.lock() {
            i.capturing = true;
            i.budget.event_lines = 0;
        }
    }

    /// Logs the lines held back, and stops holding them (the event returned).
    pub fn release(&self) {
        let (label, lines) = match self.inner.lock() {
            Ok(mut i) => {
                i.capturing = false;
                let mut lines = std::mem::take(&mut i.held);
                if i.dropped > 0 {
                    lines.push(format!("[{} more lines not logged]", i.dropped));
                    i.dropped = 0;
                }
                lines.extend(i.budget.said());
                (i.label.clone(), lines)
            }
            Err(_) => return,
        };
        for line in lines {
            log_line(&label, &line);
        }
    }

    /// The lines held back, no longer held (the event trapped: whoever
    /// reports the trap logs them).
    pub fn take(&self) -> Vec<String> {
        match self.inner.lock() {
            Ok(mut i) => {
                i.capturing = false;
                let mut lines = std::mem::take(&mut i.held);
                if i.dropped > 0 {
                    lines.push(format!("[{} more lines not kept]", i.dropped));
                    i.dropped = 0;
                }
                lines
            }
            Err(_) => Vec::new(),
        }
    }

    /// One complete line from the guest.
    fn line(&self, text: String) {
        let label = {
            let Ok(mut i) = self.inner.lock() else {
                return;
            };
            // Over the budget: counted, and said when an event returns.
            if !i.budget.admit() {
                return;
            }
            if i.capturing {
                if i.held.len() < i.budget.limits.held {
                    i.held.push(text);
                } else {
                    i.dropped += 1;
                }
                return;
            }
            i.label.clone()
        };
        log_line(&label, &text);
    }
}

fn log_line(label: &str, text: &str) {
    tracing::warn!(target: "roomhost::guest", object = %label, "{text}");
}

impl IsTerminal for GuestStderr {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestStderr {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(LineWriter {
            sink: self.clone(),
            line: Vec::new(),
            cut: false,
        })
    }
}

struct LineWriter {
    sink: GuestStderr,
    line: Vec<u8>,
    /// The current line was longer than [`MAX_LINE`].
    cut: bool,
}

impl LineWriter {
    fn emit(&mut self) {
        if self.line.is_empty() && !self.cut {
            return;
        }
        let text = String::from_utf8_lossy(&self.line);
        let more = if self.cut { " [line cut]" } else { "" };
        self.sink.line(format!("{text}{more}"));
        self.line = Vec::new();
        self.cut = false;
    }
}

impl AsyncWrite for LineWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        for &b in buf {
            if b == b'\n' {
                this.emit();
            } else if this.line.len() < MAX_LINE {
                this.line.push(b);
            } else {
                this.cut = true;
            }
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.get_mut().emit();
        Poll::Ready(Ok(()))
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        self.emit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_over_the_budget_are_dropped_counted_and_said_once() {
        let metrics = Arc::new(crate::metrics::Metrics::default());
        let err = GuestStderr::limited(
            "c/n".into(),
            LogLimits {
                per_event: 3,
                per_second: 100,
                ..LogLimits::default()
            },
            Some(metrics.clone()),
        );
        err.capture();
        assert!(err.admit());
        for n in 0..5 {
            err.line(format!("{n}"));
        }
        assert!(!err.admit());
        let lines = err.take();
        assert_eq!(lines, ["0", "1"]);
        assert_eq!(metrics.snapshot().guest_log_lines_dropped, 4);
        // A new event, a new budget; the drops are said when it returns.
        err.capture();
        assert!(err.admit());
        let said = err.inner.lock().expect("lock").budget.said();
        assert!(said.expect("said").starts_with("[4 log lines dropped"));
        let per_second = GuestStderr::limited(
            "c/n".into(),
            LogLimits {
                per_event: 100,
                per_second: 2,
                ..LogLimits::default()
            },
            None,
        );
        per_second.capture();
        assert!(per_second.admit() && per_second.admit());
        per_second.capture();
        assert!(!per_second.admit(), "the second's budget is spent");
    }

    #[test]
    fn lines_are_held_during_an_event_and_taken_on_a_trap() {
        let err = GuestStderr::new("c/n".into());
        err.capture();
        err.line("thread panicked at src/lib.rs:1:1:".into());
        err.line("boom".into());
        assert_eq!(err.take(), ["thread panicked at src/lib.rs:1:1:", "boom"]);
        assert!(err.take().is_empty());
        err.capture();
        for n in 0..MAX_HELD_LINES + 3 {
            err.line(format!("{n}"));
        }
        let lines = err.take();
        assert_eq!(lines.len(), MAX_HELD_LINES + 1);
        assert_eq!(lines[MAX_HELD_LINES], "[3 more lines not kept]");
        // The config's `max_trap_stderr_lines`.
        let two = GuestStderr::limited(
            "c/n".into(),
            LogLimits {
                held: 2,
                ..LogLimits::default()
            },
            None,
        );
        two.capture();
        for n in 0..5 {
            two.line(format!("{n}"));
        }
        assert_eq!(two.take(), ["0", "1", "[3 more lines not kept]"]);
    }
}
