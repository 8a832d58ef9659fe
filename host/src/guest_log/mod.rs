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
pub use stderr::GuestStderr;

/// What a guest's `log` calls work on: the object they are logged under.
pub struct LogView<'a> {
    /// The object.
    pub object: &'a ObjectId,
}

crate::bindings::link_view!(LogView, wit, "log");

impl Host for LogView<'_> {
    fn log(&mut self, level: Level, message: String) {
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
