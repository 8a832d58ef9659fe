//! Components: the wasmtime engine ([`engine`]), the linker with every host
//! capability ([`link`]), and each class's component compiled once and
//! pre-linked (`InstancePre`), so that an instance is created in
//! microseconds.
//!
//! A class names its component as `builtin:NAME` (embedded in the binary by the
//! build script, see [`crate::guests`]) or as a path to a `.wasm` file. A
//! component must target the `roomhost:object` world: it is validated by
//! linking it, and rejected with a clear error otherwise.
//!
//! Components are generic over the store's data `T`, which builds each
//! capability's view ([`Capabilities`]); the object context is one.

pub mod engine;
pub mod link;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use wasmtime::Engine;
use wasmtime::component::{Component, Linker};

use crate::bindings::ObjectPre;
use crate::config::Config;
use crate::error::ComponentError;
use engine::{Activity, RunningGuard};
pub use engine::{EPOCH_TICK, QUIET_AFTER, QUIET_TICK};
pub use link::Capabilities;

/// Every configured class, ready to instantiate.
pub struct Components<T: 'static> {
    pub(crate) engine: Engine,
    classes: HashMap<String, ObjectPre<T>>,
    ticker_stop: Arc<AtomicBool>,
    /// Guest activity, for the epoch ticker.
    activity: Arc<Activity>,
}

impl<T: Capabilities> Components<T> {
    /// Builds the engine and compiles and links every class in the config.
    pub fn load(config: &Config) -> Result<Components<T>, ComponentError> {
        let engine = engine::engine(config)?;
        let linker = link::linker::<T>(&engine).map_err(|source| ComponentError::Engine {
            context: "the linker",
            source,
        })?;
        let mut classes = HashMap::new();
        for (class, cc) in &config.classes {
            let component = if let Some(name) = cc.component.strip_prefix("builtin:") {
                let bytes =
                    crate::guests::builtin(name).ok_or_else(|| ComponentError::UnknownBuiltin {
                        class: class.clone(),
                        name: name.to_string(),
                    })?;
                compile(&engine, class, bytes)?
            } else {
                let path = PathBuf::from(&cc.component);
                let bytes = std::fs::read(&path).map_err(|source| ComponentError::Read {
                    class: class.clone(),
                    path: path.clone(),
                    source,
                })?;
                compile(&engine, class, &bytes)?
            };
            let pre = link(&linker, class, &component)?;
            classes.insert(class.clone(), pre);
        }
        let ticker_stop = Arc::new(AtomicBool::new(false));
        let activity = Arc::new(Activity::default());
        engine::start_ticker(&engine, activity.clone(), ticker_stop.clone())?;
        Ok(Components {
            engine,
            classes,
            ticker_stop,
            activity,
        })
    }
}

impl<T: 'static> Components<T> {
    /// The pre-linked component of a class.
    pub(crate) fn class(&self, class: &str) -> Option<&ObjectPre<T>> {
        self.classes.get(class)
    }

    /// Marks guest code as running until the guard drops: keeps the epoch
    /// ticking every [`EPOCH_TICK`].
    pub(crate) fn guest_running(&self) -> RunningGuard {
        self.activity.running()
    }

    /// True when a class of this name is configured.
    pub fn has_class(&self, class: &str) -> bool {
        self.classes.contains_key(class)
    }
}

impl<T: 'static> Drop for Components<T> {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

fn compile(engine: &Engine, class: &str, bytes: &[u8]) -> Result<Component, ComponentError> {
    Component::new(engine, bytes).map_err(|source| ComponentError::Invalid {
        class: class.to_string(),
        source,
    })
}

fn link<T: 'static>(
    linker: &Linker<T>,
    class: &str,
    component: &Component,
) -> Result<ObjectPre<T>, ComponentError> {
    let invalid = |source: wasmtime::Error| ComponentError::Invalid {
        class: class.to_string(),
        source,
    };
    let pre = linker.instantiate_pre(component).map_err(invalid)?;
    ObjectPre::new(pre).map_err(invalid)
}
