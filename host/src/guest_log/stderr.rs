//! A guest's stderr, forwarded line by line to the host's log (`tracing`,
//! target `roomhost::guest`) with the object it came from — so that a guest's
//! panic message sits next to the host's record of the trap, in the same log.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

/// The longest line kept; the rest of a longer line is dropped (a guest cannot
/// make the host buffer more than this for it).
const MAX_LINE: usize = 4096;

/// The stderr of one instance. Its label names the object, and changes when a
/// pre-warmed instance is bound to one.
#[derive(Clone)]
pub struct GuestStderr {
    label: Arc<Mutex<String>>,
}

impl GuestStderr {
    /// A stderr whose lines are logged under `label` (the object's id).
    pub fn new(label: String) -> GuestStderr {
        GuestStderr {
            label: Arc::new(Mutex::new(label)),
        }
    }

    /// Names the object the instance now belongs to.
    pub fn set_label(&self, label: String) {
        if let Ok(mut l) = self.label.lock() {
            *l = label;
        }
    }
}

impl IsTerminal for GuestStderr {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestStderr {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(LineWriter {
            label: self.label.clone(),
            line: Vec::new(),
            cut: false,
        })
    }
}

struct LineWriter {
    label: Arc<Mutex<String>>,
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
        let label = self.label.lock().map(|l| l.clone()).unwrap_or_default();
        let more = if self.cut { " [line cut]" } else { "" };
        tracing::warn!(target: "roomhost::guest", object = %label, "{text}{more}");
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
