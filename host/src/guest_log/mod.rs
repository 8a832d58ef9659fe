//! What a guest logs, in the host's log with the object it came from:
//!
//! - the `log` interface for guests ([`LogView`]);
//! - [`stderr`]: the guest's stderr (a Rust panic message, `eprintln!`),
//!   forwarded line by line, or held back during an event;
//! - [`failure`]: a trap said once — the panic message, the other stderr
//!   lines of the event, the wasm backtrace.

pub mod failure;
pub mod stderr;

use crate::bindings::roomhost::object::log::{self as wit, Host, Level};
use crate::ids::ObjectId;

pub use failure::GuestFailure;
pub use stderr::{GuestStderr, LogLimits};

/// What a guest's `log` calls work on: the object they are logged under,
/// and its instance's budget of lines (shared with its stderr).
pub struct LogView<'a> {
    /// The object.
    pub object: &'a ObjectId,
    /// The instance's stderr, which keeps the budget.
    pub budget: &'a GuestStderr,
}

crate::bindings::link_view!(LogView, wit, "log");

impl Host for LogView<'_> {
    fn log(&mut self, level: Level, mut message: String) {
        if !self.budget.admit() {
            return;
        }
        if message.len() > stderr::MAX_LINE {
            let mut end = stderr::MAX_LINE;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
            message.push_str(" [line cut]");
        }
        // Under the same target as the guest's stderr: `roomhost::guest`.
        let object = self.object;
        match level {
            Level::Trace => tracing::trace!(target: "roomhost::guest", %object, "{message}"),
            Level::Debug => tracing::debug!(target: "roomhost::guest", %object, "{message}"),
            Level::Info => tracing::info!(target: "roomhost::guest", %object, "{message}"),
            Level::Warn => tracing::warn!(target: "roomhost::guest", %object, "{message}"),
            Level::Error => tracing::error!(target: "roomhost::guest", %object, "{message}"),
        }
    }
}
