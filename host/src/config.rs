//! Configuration: defaults that serve the chat with no file at all, and a TOML
//! file (`roomhost serve --config FILE`) to add classes, routes and limits.
//!
//! ```toml
//! listen = "127.0.0.1:8080"
//! data = "./data/roomhost.redb"
//! durability = "immediate"          # or "none" (benchmarks/tests that say so)
//! trust_forwarded_for = false       # use X-Forwarded-For as the client IP
//! idle_timeout_ms = 10000           # evict an instance idle this long
//! max_live_instances = 1000         # LRU-evict beyond this
//! prewarm_instances = 1             # per class in use; 0 turns it off
//!
//! [classes.counter]
//! component = "examples/counter.wasm"   # or "builtin:chat-room"
//!
//! [[routes]]                        # when present, replaces the default routes
//! path = "/counter/{name}/*"        # {name} is the object name, * the rest
//! object = "counter"
//!
//! [limits]
//! max_frame_bytes = 1048576
//! max_connections_per_ip = 256      # open connections from one client IP
//! max_connections = 50000           # open connections in all
//! request_head_timeout_ms = 10000   # slowloris deadline and keep-alive idle timeout
//! websocket_handshake_timeout_ms = 10000
//! max_sockets_per_object = 32768    # as Durable Objects
//! max_tags_per_socket = 10          # and max_tag_bytes = 256
//! max_attachment_bytes = 2048       # and max_auto_response_bytes = 2048
//! max_log_lines_per_event = 1000    # log calls + stderr lines, each ≤ 4 KiB
//! max_log_lines_per_second = 1000
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::ConfigError;
pub use crate::storage::Durability;

/// The whole configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where to listen. Default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// The redb database file. Default `./data/roomhost.redb`.
    pub data: PathBuf,
    /// Commit durability. Default `immediate`.
    pub durability: Durability,
    /// Commit the batches of all objects that finished together, in one redb
    /// transaction and one fsync (default). `false` commits each object's batch
    /// on its own — only to measure what group commit buys.
    pub group_commit: bool,
    /// Trust the last `X-Forwarded-For` entry as the client IP (only behind a
    /// proxy you run). Default false: the TCP peer address is the client IP.
    pub trust_forwarded_for: bool,
    /// An object with no event for this long is evicted: its instance is
    /// dropped, its sockets stay open (ms). Default 10 s.
    pub idle_timeout_ms: u64,
    /// The most live instances; when reached, the least recently used idle
    /// instance is evicted first. Each live instance costs memory and kernel
    /// mappings; live instances should track active rooms, not connections.
    pub max_live_instances: u32,
    /// Instances kept instantiated ahead of time for each class in use, so that
    /// waking an evicted object (or starting a new one) skips instantiation.
    /// Each costs a pool slot and a few pages. Default 1; 0 turns it off.
    pub prewarm_instances: u32,
    /// Limits a hostile guest or client could otherwise exhaust.
    pub limits: Limits,
    /// Classes: name → component. The built-in `chat-room` and `rate-limiter`
    /// are always present unless overridden.
    pub classes: BTreeMap<String, ClassConfig>,
    /// HTTP routes, matched in order. Default: the chat (see [`default_routes`]).
    pub routes: Vec<RouteConfig>,
    /// After a deploy, watch the new version this long (ms) and roll back by
    /// itself if its events trap more often than the old version's (see
    /// `auto_rollback_trap_rate`). 0: never. Default 60 s.
    pub auto_rollback_ms: u64,
    /// Roll back when the new version's share of trapping events exceeds the
    /// old version's by more than this (0.0–1.0). Default 0.2.
    pub auto_rollback_trap_rate: f64,
    /// ... once the new version has run at least this many events. Default 20.
    pub auto_rollback_min_events: u64,
    /// The admin API's bearer token. Unset: `ROOMHOST_ADMIN_TOKEN`, else a
    /// token generated into `admin.token` beside the database (mode 0600).
    pub admin_token: Option<String>,
    /// Serve the admin API on this address only (default: under `/admin/` on
    /// `listen`).
    pub admin_listen: Option<SocketAddr>,
    /// Where compiled components are cached (default: `cache/` beside the
    /// database). Several hosts may share one directory: entries are keyed by
    /// the component's content, wasmtime's version and the engine settings.
    pub cache_dir: Option<PathBuf>,
}

/// Limits. Each says what a hostile guest or client could exhaust without it.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest WebSocket message a client may send (bytes); larger closes the
    /// socket with 1009. Without it a client could make the host buffer anything.
    pub max_frame_bytes: usize,
    /// Largest HTTP request body (bytes); larger gets 413.
    pub max_request_body_bytes: usize,
    /// Bytes queued for one socket that the client has not read yet; past it the
    /// socket is closed with 1008 so a slow reader cannot grow host memory.
    pub socket_send_queue_bytes: usize,
    /// Linear memory one instance may grow to (bytes).
    pub max_instance_memory_bytes: usize,
    /// Time one event may spend running guest code (ms); past it the guest
    /// traps (a 500 for a request). Stops runaway loops. It is CPU time as
    /// the host schedules it: the time the guest's code, and the host calls
    /// it makes, ran on a thread, counted in 10 ms slices; time spent
    /// waiting for its turn, or for another object's answer, does not count.
    /// Default 5 s.
    pub max_event_cpu_ms: u64,
    /// Threads of the long-event lane, which runs *long* events (events that
    /// have run for one 10 ms slice) at a lower OS priority, so that the
    /// tokio workers keep serving short events and a runaway guest cannot
    /// stall its neighbours. Long events take turns there, one slice at a
    /// time. 0: half the CPUs, at least 1 (the default).
    pub long_event_workers: usize,
    /// How long `objects.call` waits for the callee (ms).
    pub call_timeout_ms: u64,
    /// Events queued for one object before senders wait (backpressure).
    pub mailbox_capacity: usize,
    /// Events one object runs before committing them together.
    pub max_batch_events: usize,
    /// Bytes (keys + values) one object may store; past it writes fail with
    /// `quota-exceeded` (0: no quota). Without it one object could fill the disk.
    pub storage_quota_bytes: u64,
    /// The first retry delay of a trapping `on-alarm` (ms); it doubles with each
    /// retry, up to 6 retries.
    pub alarm_retry_base_ms: u64,
    /// The largest component a deploy may upload, in bytes (its compilation
    /// costs CPU and memory proportional to its size).
    pub max_component_bytes: usize,
    /// Core wasm instances one object's component may create. A Rust guest
    /// needs 1–2, a componentize-js (StarlingMonkey) guest 4, a
    /// componentize-qjs guest 9. Each instance reserves a little pool
    /// metadata; without a cap a guest could create them without end.
    pub max_core_instances: u32,
    /// Linear memories one component may define. Each pool slot reserves
    /// address space for one memory; a component with more takes them from
    /// the slots of instances that are not live.
    pub max_memories: u32,
    /// Tables one component may define.
    pub max_tables: u32,
    /// Open TCP connections (HTTP and WebSocket) from one client IP; past it
    /// a new connection gets a 503 and is closed at once, before any of it is
    /// read. The IP is the TCP peer's; with `trust_forwarded_for` the peer is
    /// a proxy, so the cap counts WebSocket upgrades per forwarded IP instead
    /// (an HTTP request is short-lived and is not capped per forwarded IP).
    /// Without it one client could take every descriptor. Default 256.
    pub max_connections_per_ip: usize,
    /// Open TCP connections in all; past it a new connection gets a 503 and
    /// is closed at once. Keep it below the process's descriptor limit
    /// (`ulimit -n`). Default 50,000.
    pub max_connections: usize,
    /// A connection must deliver a complete HTTP request head this long after
    /// it opens, and after each response on a keep-alive connection (ms);
    /// otherwise it is closed. This is both the slowloris deadline and the
    /// idle timeout of connections that never upgrade. Default 10 s.
    pub request_head_timeout_ms: u64,
    /// From a WebSocket upgrade request's head to the upgraded connection in
    /// the host's hands (the object's accept included), at most this long
    /// (ms); past it the client gets 503 and the socket is forgotten.
    /// Default 10 s.
    pub websocket_handshake_timeout_ms: u64,
    /// A request's body must have arrived this long after its head (ms);
    /// otherwise the client gets 408 and the connection is closed, so a
    /// client that announces a body and stalls cannot hold a connection.
    /// Default 10 s. (The admin API's uploads are not held to it.)
    pub request_body_timeout_ms: u64,
    /// WebSockets one object may hold (as Durable Objects: 32,768); an
    /// upgrade past it gets 503 without waking the object.
    pub max_sockets_per_object: usize,
    /// Tags a guest may put on one socket (default 10). Tags, attachments and
    /// the auto-response are kept by the host, outside the guest's memory
    /// limit. The SDK's test host uses the defaults.
    pub max_tags_per_socket: usize,
    /// Bytes in one tag (default 256).
    pub max_tag_bytes: usize,
    /// Bytes in one socket's attachment (default 2 KiB).
    pub max_attachment_bytes: usize,
    /// Bytes in the auto-response's request, and in its response (default
    /// 2 KiB).
    pub max_auto_response_bytes: usize,
    /// Lines one instance may log in one event: `log` calls and stderr
    /// lines together, each cut at 4 KiB (so at most 4 MiB of log per event
    /// by default). The rest are dropped, counted in
    /// `roomhost_guest_log_lines_dropped_total`, and said in one line when
    /// the event returns. Default 1,000.
    pub max_log_lines_per_event: usize,
    /// ... and in one second, across events. Default 1,000.
    pub max_log_lines_per_second: usize,
    /// Stderr lines held back during one event, to go with a trap's report
    /// (a panic message and what the guest printed before it); later ones
    /// are counted, not kept. Default 32.
    pub max_trap_stderr_lines: usize,
    /// Instance pool slots beyond `max_live_instances` and the pre-warmed
    /// instances: room for instances being dropped while their successors
    /// are created, and for deploy trials. Each slot reserves address space
    /// for one `max_instance_memory_bytes` memory (not RAM). Default 16.
    pub spare_instance_slots: u32,
    /// redb's page cache for the database (bytes). Reads go through it; a
    /// backup reads every page, so a host's resident memory grows to about
    /// this much after one. Default 256 MiB (redb's own default is 1 GiB).
    pub storage_cache_bytes: usize,
}

impl Limits {
    /// The socket limits a guest's `sockets` calls are held to.
    pub fn sockets(&self) -> crate::sockets::SocketLimits {
        crate::sockets::SocketLimits {
            max_tags: self.max_tags_per_socket,
            max_tag_bytes: self.max_tag_bytes,
            max_attachment_bytes: self.max_attachment_bytes,
            max_auto_response_bytes: self.max_auto_response_bytes,
        }
    }
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_frame_bytes: 1 << 20,
            max_request_body_bytes: 1 << 20,
            socket_send_queue_bytes: 4 << 20,
            max_instance_memory_bytes: 64 << 20,
            max_event_cpu_ms: 5_000,
            long_event_workers: 0,
            call_timeout_ms: 10_000,
            mailbox_capacity: 1024,
            max_batch_events: 256,
            alarm_retry_base_ms: 2_000,
            storage_quota_bytes: 1 << 30,
            max_component_bytes: 64 << 20,
            max_core_instances: 4,
            max_memories: 2,
            max_tables: 8,
            max_connections_per_ip: 256,
            max_connections: 50_000,
            request_head_timeout_ms: 10_000,
            websocket_handshake_timeout_ms: 10_000,
            request_body_timeout_ms: 10_000,
            max_sockets_per_object: 32_768,
            max_tags_per_socket: crate::sockets::MAX_TAGS,
            max_tag_bytes: crate::sockets::MAX_TAG_BYTES,
            max_attachment_bytes: crate::sockets::MAX_ATTACHMENT_BYTES,
            max_auto_response_bytes: crate::sockets::MAX_AUTO_RESPONSE_BYTES,
            max_log_lines_per_event: 1_000,
            max_log_lines_per_second: 1_000,
            max_trap_stderr_lines: 32,
            spare_instance_slots: 16,
            storage_cache_bytes: 256 << 20,
        }
    }
}

/// One class: which component implements it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassConfig {
    /// `builtin:NAME` for a component embedded in the binary, else a path to a
    /// `.wasm` component file (relative to the working directory).
    pub component: String,
    /// Settings for the class's objects, like a Worker's vars: the guest reads
    /// them as environment variables (`std::env::var`). Nothing else of the
    /// host's environment is visible to guests.
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
}

/// One HTTP route. Exactly one of `object`, `unique_id`, `page` is set.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// A path pattern: literal segments, `{name}` (the object name, one
    /// segment, percent-decoded) and a final `*` that matches any rest.
    pub path: String,
    /// Only this method (e.g. `POST`); any method when absent.
    #[serde(default)]
    pub method: Option<String>,
    /// Route to an object of this class, named by `{name}`.
    #[serde(default)]
    pub object: Option<String>,
    /// Mint a fresh unique object name for this class and return it as text.
    #[serde(default)]
    pub unique_id: Option<String>,
    /// Serve a built-in page (`chat`, or `metrics`: Prometheus text).
    #[serde(default)]
    pub page: Option<String>,
    /// Names longer than this many characters are refused with 404, unless they
    /// are a minted 64-hex unique id (the edge-chat-demo rule, 32 for rooms).
    #[serde(default)]
    pub max_name_chars: Option<usize>,
}

impl ClassConfig {
    /// A class run by `component` (`builtin:NAME` or a `.wasm` path), no vars.
    pub fn new(component: impl Into<String>) -> ClassConfig {
        ClassConfig {
            component: component.into(),
            vars: BTreeMap::new(),
        }
    }
}

impl RouteConfig {
    /// A route from `path` (with `{name}`) to objects of `class`.
    pub fn object(path: impl Into<String>, class: impl Into<String>) -> RouteConfig {
        RouteConfig {
            path: path.into(),
            method: None,
            object: Some(class.into()),
            unique_id: None,
            page: None,
            max_name_chars: None,
        }
    }
}

impl Default for Config {
    fn default() -> Config {
        let mut classes = BTreeMap::new();
        for name in crate::guests::builtin_names() {
            classes.insert(
                name.to_string(),
                ClassConfig::new(format!("builtin:{name}")),
            );
        }
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data: PathBuf::from("data/roomhost.redb"),
            durability: Durability::Immediate,
            group_commit: true,
            trust_forwarded_for: false,
            idle_timeout_ms: 10_000,
            max_live_instances: 1_000,
            prewarm_instances: 1,
            limits: Limits::default(),
            classes,
            routes: default_routes(),
            admin_token: None,
            admin_listen: None,
            cache_dir: None,
            auto_rollback_ms: 60_000,
            auto_rollback_trap_rate: 0.2,
            auto_rollback_min_events: 20,
        }
    }
}

/// The chat: `GET /` the page, `POST /api/room` a private room id, and
/// `/api/room/{name}/...` into object `(chat-room, name)`; and `GET /metrics`
/// (Prometheus text; the default listen address is loopback).
pub fn default_routes() -> Vec<RouteConfig> {
    let route = |path: &str| RouteConfig {
        path: path.into(),
        method: None,
        object: None,
        unique_id: None,
        page: None,
        max_name_chars: None,
    };
    vec![
        RouteConfig {
            method: Some("GET".into()),
            page: Some("chat".into()),
            ..route("/")
        },
        RouteConfig {
            method: Some("GET".into()),
            page: Some("metrics".into()),
            ..route("/metrics")
        },
        RouteConfig {
            method: Some("POST".into()),
            unique_id: Some("chat-room".into()),
            ..route("/api/room")
        },
        RouteConfig {
            object: Some("chat-room".into()),
            max_name_chars: Some(32),
            ..route("/api/room/{name}/*")
        },
    ]
}

impl Config {
    /// Reads a TOML file over the defaults: classes are added to the built-in
    /// ones, `routes` (when given) replace the default routes. A relative
    /// `component` path is relative to the file's folder.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config = Config::from_toml(&text).map_err(|e| match e {
            ConfigError::Parse { source, .. } => ConfigError::Parse {
                path: Some(path.to_owned()),
                source,
            },
            other => other,
        })?;
        // A relative component path means: next to the config file.
        let dir = path.parent().unwrap_or(Path::new(""));
        for class in config.classes.values_mut() {
            if !class.component.starts_with("builtin:") && Path::new(&class.component).is_relative()
            {
                class.component = dir.join(&class.component).display().to_string();
            }
        }
        Ok(config)
    }

    /// Parses TOML text over the defaults (see [`Config::from_file`]).
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let parsed: Config =
            toml::from_str(text).map_err(|source| ConfigError::Parse { path: None, source })?;
        let mut config = parsed;
        let defaults = Config::default();
        for (name, class) in defaults.classes {
            config.classes.entry(name).or_insert(class);
        }
        if config.routes.is_empty() {
            config.routes = defaults.routes;
        }
        config.validate()?;
        Ok(config)
    }

    /// The routes whose class is neither configured here nor (`deployed`)
    /// deployed into the database: they answer 404 until a deploy creates the
    /// class (the server warns about each at start).
    pub fn routes_without_class(&self, deployed: impl Fn(&str) -> bool) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for route in &self.routes {
            for class in [&route.object, &route.unique_id].into_iter().flatten() {
                if !self.classes.contains_key(class) && !deployed(class) {
                    out.push((route.path.clone(), class.clone()));
                }
            }
        }
        out
    }

    /// Checks names and ranges (route classes: [`Config::routes_without_class`]).
    pub fn validate(&self) -> Result<(), ConfigError> {
        for name in self.classes.keys() {
            if !crate::ids::valid_class_name(name) {
                return Err(ConfigError::Invalid(format!(
                    "class name {name:?}: use letters, digits, '-' and '_'"
                )));
            }
        }
        for route in &self.routes {
            let targets = [&route.object, &route.unique_id, &route.page]
                .iter()
                .filter(|t| t.is_some())
                .count();
            if targets != 1 {
                return Err(ConfigError::Invalid(format!(
                    "route {:?}: set exactly one of object, unique_id, page",
                    route.path
                )));
            }
            // As `http::router` compiles them: from the root, `*` only last.
            if !route.path.starts_with('/') {
                return Err(ConfigError::Invalid(format!(
                    "route {:?}: must start with '/'",
                    route.path
                )));
            }
            let segments: Vec<&str> = route.path.trim_start_matches('/').split('/').collect();
            if segments[..segments.len() - 1].contains(&"*") {
                return Err(ConfigError::Invalid(format!(
                    "route {:?}: '*' must be last",
                    route.path
                )));
            }
            if route.object.is_some() && !route.path.contains("{name}") {
                return Err(ConfigError::Invalid(format!(
                    "route {:?}: an object route needs a {{name}} segment",
                    route.path
                )));
            }
            if let Some(page) = &route.page
                && page != "chat"
                && page != "metrics"
            {
                return Err(ConfigError::Invalid(format!(
                    "route {:?}: no built-in page {page:?} (have: chat, metrics)",
                    route.path
                )));
            }
        }
        // Each pool slot reserves ~4 GiB of address space (no bounds checks).
        if self.max_live_instances == 0 || self.max_live_instances > 10_000 {
            return Err(ConfigError::Invalid(
                "max_live_instances must be between 1 and 10000".into(),
            ));
        }
        if self.prewarm_instances > 16 {
            return Err(ConfigError::Invalid(
                "prewarm_instances must be between 0 and 16".into(),
            ));
        }
        let l = &self.limits;
        if l.mailbox_capacity == 0 || l.max_batch_events == 0 {
            return Err(ConfigError::Invalid(
                "limits.mailbox_capacity and limits.max_batch_events must be > 0".into(),
            ));
        }
        if l.max_core_instances == 0 || l.max_memories == 0 || l.max_tables == 0 {
            return Err(ConfigError::Invalid(
                "limits.max_core_instances, limits.max_memories and limits.max_tables must be > 0"
                    .into(),
            ));
        }
        if l.max_frame_bytes < 125 || l.socket_send_queue_bytes < l.max_frame_bytes.min(1 << 16) {
            return Err(ConfigError::Invalid(
                "limits.max_frame_bytes must be ≥ 125 and limits.socket_send_queue_bytes ≥ 64 KiB"
                    .into(),
            ));
        }
        if l.max_connections_per_ip == 0
            || l.max_connections == 0
            || l.max_sockets_per_object == 0
            || l.request_head_timeout_ms == 0
            || l.websocket_handshake_timeout_ms == 0
        {
            return Err(ConfigError::Invalid(
                "limits.max_connections_per_ip, limits.max_connections, limits.max_sockets_per_object, limits.request_head_timeout_ms and limits.websocket_handshake_timeout_ms must be > 0".into(),
            ));
        }
        // Each is kept per socket (or per object) in host memory.
        if l.max_tag_bytes == 0
            || l.max_tag_bytes > 65_536
            || l.max_tags_per_socket > 1_024
            || l.max_attachment_bytes > 1 << 20
            || l.max_auto_response_bytes > 1 << 20
        {
            return Err(ConfigError::Invalid(
                "limits.max_tag_bytes must be 1..=65536, limits.max_tags_per_socket ≤ 1024, limits.max_attachment_bytes and limits.max_auto_response_bytes ≤ 1 MiB".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_serve_the_chat() {
        let c = Config::default();
        c.validate().expect("default config is valid");
        assert!(c.classes.contains_key("chat-room"));
        assert!(c.classes.contains_key("rate-limiter"));
        assert_eq!(c.routes.len(), 4);
    }

    #[test]
    fn file_adds_classes_and_replaces_routes() {
        let c = Config::from_toml(
            r#"
            durability = "none"
            [classes.probe]
            component = "probe.wasm"
            [[routes]]
            path = "/probe/{name}/*"
            object = "probe"
            "#,
        )
        .expect("valid");
        assert_eq!(c.durability, Durability::None);
        assert!(c.classes.contains_key("chat-room"));
        assert_eq!(c.routes.len(), 1);
    }

    #[test]
    fn instance_caps_and_the_cache_directory_are_settings() {
        let d = Config::default();
        // The caps every guest so far has lived with.
        let l = &d.limits;
        assert_eq!(
            (l.max_core_instances, l.max_memories, l.max_tables),
            (4, 2, 8)
        );
        assert_eq!(d.cache_dir, None, "beside the database");
        let c = Config::from_toml(
            "cache_dir = \"/var/cache/roomhost\"\n[limits]\nmax_core_instances = 8\n",
        )
        .expect("valid");
        assert_eq!(c.limits.max_core_instances, 8);
        assert_eq!(
            c.cache_dir.as_deref(),
            Some(Path::new("/var/cache/roomhost"))
        );
        let e = Config::from_toml("[limits]\nmax_tables = 0\n").expect_err("zero tables");
        assert!(crate::error::Report(&e).to_string().contains("max_tables"));
    }

    #[test]
    fn socket_limit_defaults_are_the_sdk_test_hosts() {
        // The SDK's in-memory test host mirrors these as constants.
        let world = include_str!("../../guests/sdk/src/testing/world.rs");
        let l = Limits::default();
        for (name, value) in [
            ("MAX_ATTACHMENT_BYTES", l.max_attachment_bytes),
            ("MAX_TAGS", l.max_tags_per_socket),
            ("MAX_TAG_BYTES", l.max_tag_bytes),
            // The test host holds the auto-response pair to the attachment's size.
            ("MAX_ATTACHMENT_BYTES", l.max_auto_response_bytes),
        ] {
            let line = format!("pub(crate) const {name}: usize = {value};");
            assert!(world.contains(&line), "the SDK's test host has no `{line}`");
        }
        let c = Config::from_toml("[limits]\nmax_tags_per_socket = 3\nmax_attachment_bytes = 64\n")
            .expect("valid");
        assert_eq!(c.limits.sockets().max_tags, 3);
        assert_eq!(c.limits.sockets().max_attachment_bytes, 64);
        assert!(Config::from_toml("[limits]\nmax_tag_bytes = 0\n").is_err());
    }

    #[test]
    fn a_relative_component_path_is_next_to_the_config_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("roomhost.toml");
        std::fs::write(
            &file,
            "[classes.a]\ncomponent = \"guests/a.wasm\"\n[classes.b]\ncomponent = \"/abs/b.wasm\"\n",
        )
        .expect("write");
        let c = Config::from_file(&file).expect("valid");
        let a = &c.classes["a"].component;
        assert_eq!(Path::new(a), dir.path().join("guests/a.wasm"));
        assert_eq!(c.classes["b"].component, "/abs/b.wasm");
        assert_eq!(c.classes["chat-room"].component, "builtin:chat-room");
    }

    #[test]
    fn bad_files_get_clear_errors() {
        let report = |e: ConfigError| crate::error::Report(&e).to_string();
        let e = report(Config::from_toml("listen = 5").expect_err("type error"));
        assert!(e.starts_with("invalid config: "), "{e}");
        assert!(e.contains("listen"), "{e}");
        let c = Config::from_toml("[[routes]]\npath = \"/x/{name}\"\nobject = \"nope\"")
            .expect("a route may name a class deployed later");
        assert_eq!(
            c.routes_without_class(|_| false),
            [("/x/{name}".to_string(), "nope".to_string())]
        );
        assert!(c.routes_without_class(|class| class == "nope").is_empty());
        for (path, why) in [
            ("x/{name}", "must start with '/'"),
            ("/x/*/{name}", "'*' must be last"),
        ] {
            let toml = format!("[[routes]]\npath = \"{path}\"\nobject = \"x\"");
            let e = report(Config::from_toml(&toml).expect_err("a route that cannot compile"));
            assert!(e.contains(why), "{e}");
        }
        let e = report(Config::from_toml("bogus = 1").expect_err("unknown field"));
        assert!(e.contains("bogus"), "{e}");
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("roomhost.toml");
        std::fs::write(&file, "bogus = 1").expect("write");
        let e = report(Config::from_file(&file).expect_err("unknown field"));
        assert!(
            e.starts_with(&format!("invalid config file {}: ", file.display())),
            "{e}"
        );
    }
}
