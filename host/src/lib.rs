//! # roomhost — room objects, self-hosted
//!
//! Each object id `(class, name)` — a chat room, a rate limiter, a lobby — gets
//! exactly one isolated WebAssembly component instance, running one event at a
//! time, with transactional storage in redb and WebSockets owned by the host.
//!
//! # Layout
//!
//! The layers, top down; a module imports only from the layers below it.
//!
//! - [`server`] — `run(listener, config, shutdown)`: open, accept, serve, drain.
//! - [`http`] — routes ([`http::router`]), the chat page, WebSocket upgrades,
//!   each accepted socket's task ([`http::websocket`]), and the admin API
//!   ([`http::admin`]).
//! - [`objects`] — the directory (one actor per id), the actor that owns an
//!   object's wasmtime `Store` and runs its events in order, in batches
//!   ([`objects::actor`]), its events ([`objects::event`]), the store's data
//!   and the capability views built from it ([`objects::ctx`]), the bound on
//!   live instances (`objects::live`), pre-warmed instances
//!   (`objects::warm`), and deploys, rollbacks and canaries under live
//!   traffic ([`objects::deploy`]).
//! - [`components`] — the engine ([`components::engine`]), the linker that
//!   links every capability ([`components::link`]), each class's versions
//!   ([`components::versions`]), compiled and pre-linked.
//! - The capabilities, one per WIT interface, each a view type implementing
//!   its interface's `Host` trait and its own `add_to_linker`; none knows the
//!   object:
//!   - [`storage`] — redb, each object's view with its quota, group commit;
//!   - [`sockets`] — host-owned WebSockets: tags, attachments, gated output,
//!     bounded send queues, framing;
//!   - [`alarms`] — one alarm per object, stored, scheduled, retried;
//!   - [`calls`] — `objects.call` and ids;
//!   - [`upgrade`] — the `versions` interface: the running version, and the
//!     one that last wrote the object's data;
//!   - [`guest_log`] — the `log` interface and the guest's stderr.
//! - [`budget`] — guest time: each event's budget, counted in epoch slices.
//! - [`lane`] — the long-event lane: the threads that long events (runaway
//!   guests) move to, so that they never hold a tokio worker.
//! - [`dev`] — the guest author's tools: `roomhost dev` (build, serve,
//!   rebuild and hot-swap on save), `roomhost test` (the crate's tests
//!   against a host), `roomhost check` (a config and its components, without
//!   serving).
//! - [`client`] — a client of the admin API, for the CLI (`roomhost deploy`
//!   and its siblings).
//! - [`config`] — the TOML config and its defaults (the chat, on 127.0.0.1:8080).
//! - [`guests`] — the table of guests the build script compiled (the built-in
//!   classes are embedded).
//! - [`bindings`] — the `roomhost:object` world (`wit/`), generated once.
//! - [`metrics`] — counters about the host itself; [`memory`] — gives freed
//!   memory back to the OS while the host is idle; [`clock`] — the wall
//!   clock; [`ids`] — object ids and names.
//! - [`error`] — narrow errors under one [`Error`].
//! - `fuzzing` (hidden) — the fuzz targets' entry points (`fuzz/`).
//! - `testing` (feature `testing`) — a host on 127.0.0.1:0 for tests and
//!   benchmarks.

pub mod alarms;
pub mod bindings;
pub mod budget;
pub mod calls;
pub mod client;
pub mod clock;
pub mod components;
pub mod config;
pub mod dev;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod guest_log;
pub mod guests;
pub mod http;
pub mod ids;
pub mod lane;
pub mod memory;
pub mod metrics;
pub mod objects;
pub mod scaffold;
pub mod server;
pub mod sockets;
pub mod storage;
#[cfg(feature = "testing")]
pub mod testing;
pub mod upgrade;

pub use config::Config;
pub use error::{Error, Result};
pub use server::{Server, run};
