//! Errors: one narrow type per capability, all converting into the crate's
//! [`Error`]. Each carries enough context to act on (which file, which class,
//! which object); HTTP handlers map them to generic responses so that internals
//! never leak to clients.

use std::path::PathBuf;
use std::sync::Arc;

use crate::ids::ObjectId;

/// The umbrella error of the roomhost crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration could not be read or is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The database could not be opened or written.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A component could not be loaded, compiled or linked.
    #[error(transparent)]
    Component(#[from] ComponentError),
    /// An event could not be delivered to, or handled by, an object.
    #[error(transparent)]
    Event(#[from] EventError),
    /// The guest author's tools (`roomhost dev`, `test`, `check`) failed.
    #[error(transparent)]
    Dev(#[from] DevError),
    /// A network operation failed (binding the listener, accepting).
    #[error("{context}")]
    Io {
        /// What the host was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// Reading or validating the configuration failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML for the config schema.
    #[error("invalid config{}", path.as_ref().map(|p| format!(" file {}", p.display())).unwrap_or_default())]
    Parse {
        /// The file (none when the text did not come from a file).
        path: Option<PathBuf>,
        /// What the parser said.
        #[source]
        source: toml::de::Error,
    },
    /// A value is out of range or refers to something that does not exist.
    #[error("invalid config: {0}")]
    Invalid(String),
}

/// The embedded database failed.
///
/// Clone, so that the first failure can be handed to every waiting event; the
/// redb error is shared.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The database file could not be opened or created.
    #[error("cannot open database {path}")]
    Open {
        /// The file.
        path: PathBuf,
        /// What redb (or the file system) said.
        #[source]
        source: Arc<redb::Error>,
    },
    /// A read failed.
    #[error("database read failed")]
    Read(#[source] Arc<redb::Error>),
    /// A commit failed; the writes of every event in the batch were discarded.
    #[error("database commit failed")]
    Commit(#[source] Arc<redb::Error>),
    /// A backup could not be written.
    #[error("cannot write the backup {path}")]
    Backup {
        /// The snapshot file.
        path: PathBuf,
        /// What redb (or the file system) said.
        #[source]
        source: Arc<redb::Error>,
    },
    /// The committer has stopped (the host is shutting down).
    #[error("the committer has stopped")]
    CommitterStopped,
    /// An earlier commit failed; redb refuses every write after an I/O error
    /// until the database is reopened, so nothing is committed any more.
    #[error("storage failed earlier; no commits until the host restarts")]
    Failed(#[source] Box<StorageError>),
}

/// A component could not be prepared.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ComponentError {
    /// The engine could not be configured.
    #[error("cannot configure the wasm engine: {context}")]
    Engine {
        /// What the host was setting up.
        context: &'static str,
        /// What wasmtime (or the OS) said.
        #[source]
        source: wasmtime::Error,
    },
    /// The component file could not be read.
    #[error("class {class}: cannot read component {path}")]
    Read {
        /// The class.
        class: String,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not a valid component, or do not target the roomhost:object
    /// world (missing exports, imports the host does not offer).
    #[error("class {class}: invalid component")]
    Invalid {
        /// The class.
        class: String,
        /// What wasmtime said.
        #[source]
        source: wasmtime::Error,
    },
    /// No built-in component has this name.
    #[error("class {class}: no built-in component named {name:?}")]
    UnknownBuiltin {
        /// The class.
        class: String,
        /// The name after `builtin:`.
        name: String,
    },
    /// The bytes are not a component at all (not wasm, or a core module).
    #[error("class {class}: {why}")]
    NotAComponent {
        /// The class.
        class: String,
        /// What the bytes are instead.
        why: &'static str,
    },
    /// The component compiled and linked, but trapped when instantiated (its
    /// start function) or in `init`, in a throwaway store with no object.
    #[error("class {class}: the component traps when it starts (start function or init)")]
    Trial {
        /// The class.
        class: String,
        /// The trap: the panic message, or the trap's cause.
        #[source]
        source: crate::guest_log::GuestFailure,
    },
    /// No class of this name is configured or deployed.
    #[error("no class named {0:?}")]
    NoSuchClass(String),
    /// The class has no version of this id.
    #[error("class {class}: no version {version:?}")]
    NoSuchVersion {
        /// The class.
        class: String,
        /// The version id asked for.
        version: String,
    },
    /// A rollback without a target, on the class's first version.
    #[error("class {0}: no earlier version to roll back to")]
    NoPreviousVersion(String),
    /// `promote` without a canary under way.
    #[error("class {0}: no canary rollout to promote")]
    NoCanary(String),
    /// A version's bytes are not in the database (it was damaged or edited).
    #[error("class {class}: the bytes of version {version} are not in the database")]
    MissingBytes {
        /// The class.
        class: String,
        /// The version id.
        version: String,
    },
    /// A stored class record could not be read.
    #[error("class {class}: the stored versions cannot be read")]
    Stored {
        /// The class.
        class: String,
        /// What serde said.
        #[source]
        source: serde_json::Error,
    },
    /// Versions could not be read or saved.
    #[error("the component versions could not be stored")]
    Storage(#[from] StorageError),
    /// A lock was poisoned by a panic elsewhere.
    #[error("the component registry is unavailable (a panic poisoned its lock)")]
    Poisoned,
    /// The host has stopped (an in-process deploy after shutdown).
    #[error("the host has stopped")]
    HostStopped,
}

/// An operator's request about one object (the admin API's `inspect`,
/// `export`, `import`, `evict`, `delete`) could not be done.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// No class of this name is configured.
    #[error("no such class: {0}")]
    NoSuchClass(String),
    /// The object has no actor, no stored keys and no alarm.
    #[error("no such object: {0} (no live instance, no sockets, nothing stored)")]
    NoSuchObject(ObjectId),
    /// The object name is not valid.
    #[error("invalid object name: {0}")]
    InvalidName(String),
    /// An import would replace keys, and overwriting was not asked for.
    #[error(
        "{count} of the imported keys exist already (the first: {first:?}); nothing was written (pass --overwrite to replace them)"
    )]
    KeysExist {
        /// How many.
        count: usize,
        /// The first, for the message.
        first: String,
    },
    /// A line of an import is not an entry.
    #[error("import line {line}: {why}")]
    BadImport {
        /// The line (from 1).
        line: usize,
        /// What is wrong with it.
        why: String,
    },
    /// The import would exceed the object's storage quota.
    #[error("the import would exceed the object's storage quota of {0} bytes")]
    QuotaExceeded(u64),
    /// The database could not be read.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The object's actor could not run the operation, or its commit failed.
    #[error(transparent)]
    Event(#[from] EventError),
}

/// Delivering or running one event failed.
///
/// Clone, because one failed commit fails every event of its batch; the
/// causes are shared.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum EventError {
    /// No class of this name is configured.
    #[error("no such class: {0}")]
    NoSuchClass(String),
    /// The object name is not valid.
    #[error("invalid object name: {0}")]
    InvalidName(String),
    /// The instance could not be created (instantiation failed).
    #[error("object {object}: cannot start instance")]
    Instantiate {
        /// The object.
        object: ObjectId,
        /// What wasmtime said.
        #[source]
        source: Arc<wasmtime::Error>,
    },
    /// Every live-instance slot stayed busy (`max_live_instances` reached and
    /// no instance idle enough to evict).
    #[error("object {0}: no live-instance slot became free")]
    NoInstanceSlot(ObjectId),
    /// The guest trapped (panicked, ran out of time or memory, broke the
    /// host's rules); its writes were rolled back and its instance dropped.
    #[error("object {object}: guest trapped")]
    Trap {
        /// The object.
        object: ObjectId,
        /// The trap.
        #[source]
        source: Arc<wasmtime::Error>,
    },
    /// The event's writes could not be committed; its output was dropped.
    #[error("object {object}: commit failed")]
    Commit {
        /// The object.
        object: ObjectId,
        /// The storage failure.
        #[source]
        source: StorageError,
    },
    /// The object's mailbox is gone (the host is shutting down).
    #[error("object {0}: unavailable (host shutting down)")]
    Unavailable(ObjectId),
    /// The call would wait on an object already waiting in this call chain.
    #[error("call cycle through object {0}")]
    Cycle(ObjectId),
    /// The callee did not answer in time.
    #[error("object {0}: call timed out")]
    Timeout(ObjectId),
    /// A WebSocket upgrade over `limits.max_sockets_per_object`.
    #[error("object {object}: too many WebSockets (at most {max})")]
    TooManySockets {
        /// The object.
        object: ObjectId,
        /// The cap.
        max: usize,
    },
    /// The host refused to deliver the event.
    #[error("object {object}: {why}")]
    Refused {
        /// The object.
        object: ObjectId,
        /// Why.
        why: &'static str,
    },
}

impl EventError {
    /// A trap of `object`'s guest.
    pub(crate) fn trap(object: &ObjectId, source: wasmtime::Error) -> EventError {
        EventError::Trap {
            object: object.clone(),
            source: Arc::new(source),
        }
    }
}

/// The guest author's tools failed: building the crate, watching it, running
/// its tests, or a config they cannot use.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DevError {
    /// A program (cargo) could not be run.
    #[error("cannot run {program} in {dir}")]
    Spawn {
        /// The program.
        program: String,
        /// Where.
        dir: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// `cargo build` failed; cargo printed why.
    #[error("the build of {dir} failed (cargo's messages are above)")]
    BuildFailed {
        /// The crate.
        dir: PathBuf,
    },
    /// The build succeeded but wrote no `.wasm` file.
    #[error(
        "the build of {dir} wrote no .wasm file: the crate needs `[lib] crate-type = [\"cdylib\"]`"
    )]
    NoArtifact {
        /// The crate.
        dir: PathBuf,
    },
    /// The crate folder has no `roomhost.toml`.
    #[error(
        "{path} is missing: it says which class runs the crate and how requests reach it, e.g.\n\n[classes.counter]\ncomponent = \"target/wasm32-wasip2/release/{artifact}\"\n\n[[routes]]\npath = \"/counter/{{name}}/*\"\nobject = \"counter\""
    )]
    NoConfig {
        /// The file looked for.
        path: PathBuf,
        /// The artifact's file name.
        artifact: String,
    },
    /// No class of the config runs the crate's component.
    #[error(
        "no class in {config} runs {artifact}: give one `component = \"target/wasm32-wasip2/release/{artifact}\"`"
    )]
    NoClass {
        /// The config file.
        config: PathBuf,
        /// The artifact's file name.
        artifact: String,
    },
    /// The crate's files cannot be watched.
    #[error("cannot watch {path} for changes")]
    Watch {
        /// What was to be watched.
        path: PathBuf,
        /// What notify said.
        #[source]
        source: notify::Error,
    },
    /// A file or folder of the crate could not be read or written.
    #[error("{context}")]
    Io {
        /// What the tool was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// Shows an error with all its causes, `outer: inner: innermost` — for logs
/// and the binary's last word, where one line must say everything.
pub struct Report<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(e) = source {
            write!(f, ": {e}")?;
            source = e.source();
        }
        Ok(())
    }
}

/// A shorthand for results with the crate error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
