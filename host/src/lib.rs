//! # roomhost — room objects, self-hosted
//!
//! Each object id `(class, name)` — a chat room, a rate limiter, a lobby — gets
//! exactly one isolated WebAssembly component instance, running one event at a
//! time, with transactional storage in redb and WebSockets owned by the host.
//!
//! # Layout
//!
//! - [`config`] — the TOML config and its defaults (the chat, on 127.0.0.1:8080).
//! - [`server`] — `run(listener, config, shutdown)`: accept, serve, drain.
//! - [`http`] — routes, the chat page, WebSocket upgrades.
//! - [`objects`] — the directory (one actor per id) and the actor that owns an
//!   object's wasmtime `Store` and runs its events in order, in batches.
//! - [`components`] — the engine, the linker, each class's pre-linked component.
//! - [`storage`] — redb, per-event write sets, group commit.
//! - [`alarms`] — one alarm per object, stored, scheduled, retried.
//! - [`sockets`] — host-owned WebSockets: tags, attachments, gated output,
//!   bounded send queues.
//! - [`bindings`] — the `roomhost:object` world (`wit/`), generated once.
//! - [`metrics`] — counters about the host itself.
//! - [`memory`] — gives freed memory back to the OS while the host is idle.
//! - [`error`] — narrow errors under one [`Error`].

pub mod alarms;
pub mod bindings;
pub mod components;
pub mod config;
pub mod error;
pub mod http;
pub mod ids;
pub mod memory;
pub mod metrics;
pub mod objects;
pub mod server;
pub mod sockets;
pub mod storage;

pub use config::Config;
pub use error::{Error, Result};
pub use server::{Server, run};

/// Paths of the guests the build script compiled, for tests and tools.
pub mod guest_paths {
    /// The directory holding every compiled guest `.wasm`.
    pub const DIR: &str = env!("ROOMHOST_GUEST_DIR");

    /// The path of a compiled guest by crate name (e.g. `probe`).
    pub fn wasm(name: &str) -> std::path::PathBuf {
        std::path::Path::new(DIR).join(format!("{}.wasm", name.replace('-', "_")))
    }
}
