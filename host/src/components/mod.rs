//! Components: the wasmtime engine ([`engine`]), the linker with every host
//! capability ([`link`]), and each class's versions ([`versions`]), compiled
//! and pre-linked (`InstancePre`), so that an instance is created in
//! microseconds.
//!
//! A class names its first component in the config as `builtin:NAME`
//! (embedded in the binary by the build script, see [`crate::guests`]) or as
//! a path to a `.wasm` file; later versions come from deploys and are kept in
//! the database. A component must target the `roomhost:object` world: it is
//! validated by linking it, and rejected with a clear error otherwise.
//!
//! Which version serves can change while the host runs (deploy, rollback,
//! canary). Every change bumps a generation counter; an actor compares it at
//! each event and only then asks which version its object should run.
//!
//! Components are generic over the store's data `T`, which builds each
//! capability's view ([`Capabilities`]); the object context is one.

pub mod engine;
pub mod link;
pub mod versions;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use wasmtime::Engine;
use wasmtime::component::{Component, Linker};

use crate::bindings::ObjectPre;
use crate::config::Config;
use crate::error::ComponentError;
use crate::ids::ObjectId;
use crate::lane::LongLane;
use crate::metrics::Metrics;
use crate::storage::Db;
use engine::{Activity, RunningGuard};
pub use engine::{EPOCH_TICK, QUIET_AFTER, QUIET_TICK};
pub use link::Capabilities;
use versions::{Canary, ClassRecord, VersionInfo, content_hash, not_a_component, version_id};

/// One version of a class, compiled and pre-linked.
pub struct Version<T: 'static> {
    /// What it is and where it came from.
    pub info: VersionInfo,
    pub(crate) pre: ObjectPre<T>,
    /// Events it ran, and how many trapped (since this start).
    pub stats: VersionStats,
}

/// Events a version ran and how many of them trapped: what the host
/// compares when it watches a new version.
#[derive(Debug, Default)]
pub struct VersionStats {
    events: AtomicU64,
    traps: AtomicU64,
}

impl VersionStats {
    /// One event ran.
    pub(crate) fn ran(&self, trapped: bool) {
        self.events.fetch_add(1, Ordering::Relaxed);
        if trapped {
            self.traps.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// (events, traps) so far.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.events.load(Ordering::Relaxed),
            self.traps.load(Ordering::Relaxed),
        )
    }
}

/// A class: its record and the versions compiled so far.
struct Class<T: 'static> {
    record: ClassRecord,
    loaded: HashMap<String, Arc<Version<T>>>,
}

impl<T: 'static> Class<T> {
    fn active(&self) -> Option<&Arc<Version<T>>> {
        self.loaded.get(&self.record.active)
    }
}

/// Every class, ready to instantiate.
pub struct Components<T: 'static> {
    pub(crate) engine: Engine,
    linker: Linker<T>,
    db: Db,
    metrics: Arc<Metrics>,
    classes: RwLock<HashMap<String, Class<T>>>,
    /// Bumped whenever the version that serves some objects changes.
    generation: AtomicU64,
    /// wasmtime's compiled-component cache (its misses are compilations).
    cache: Option<wasmtime::Cache>,
    /// Compilations without a cache.
    uncached: AtomicU64,
    ticker_stop: Arc<AtomicBool>,
    /// Guest activity, for the epoch ticker.
    activity: Arc<Activity>,
    /// The threads long events run on (see [`crate::lane`]).
    long_lane: LongLane,
}

/// What a deploy or a rollback did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Change {
    /// The class.
    pub class: String,
    /// The version that serves now (or, for a canary, is being tried).
    pub version: VersionInfo,
    /// The version that served before, if any.
    pub previous: Option<String>,
    /// A canary share, when the change is a canary deploy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canary_percent: Option<u8>,
}

impl<T: Capabilities> Components<T> {
    /// Builds the engine, then compiles and links the active version of every
    /// class: the config's classes (a config component whose content changed
    /// since the last start is deployed as a new version) and the classes
    /// deployed into this database.
    pub fn load(
        config: &Config,
        db: &Db,
        metrics: Arc<Metrics>,
    ) -> Result<Components<T>, ComponentError> {
        let components = Components::empty(config, db, metrics)?;
        components.start(config)?;
        Ok(components)
    }

    /// The engine and the linker for `config`'s limits, with no class loaded
    /// (`roomhost check` loads each on its own, to report every problem).
    pub fn empty(
        config: &Config,
        db: &Db,
        metrics: Arc<Metrics>,
    ) -> Result<Components<T>, ComponentError> {
        let (engine, cache) = engine::engine(config)?;
        let linker = link::linker::<T>(&engine).map_err(|source| ComponentError::Engine {
            context: "the linker",
            source,
        })?;
        let ticker_stop = Arc::new(AtomicBool::new(false));
        let activity = Arc::new(Activity::default());
        engine::start_ticker(&engine, activity.clone(), ticker_stop.clone())?;
        let components = Components {
            engine,
            linker,
            db: db.clone(),
            metrics,
            classes: RwLock::new(HashMap::new()),
            generation: AtomicU64::new(1),
            cache,
            uncached: AtomicU64::new(0),
            ticker_stop,
            activity,
            long_lane: LongLane::new(config.limits.long_event_workers),
        };
        Ok(components)
    }

    /// Reconciles the config with the stored classes and loads them all.
    fn start(&self, config: &Config) -> Result<(), ComponentError> {
        let mut records: BTreeMap<String, ClassRecord> = BTreeMap::new();
        for (class, json) in self.db.classes()? {
            let record =
                serde_json::from_slice(&json).map_err(|source| ComponentError::Stored {
                    class: class.clone(),
                    source,
                })?;
            records.insert(class, record);
        }
        let mut changed: Vec<String> = Vec::new();
        // The config's components by hash; `new_hashes`: those to store.
        let mut from_config: HashMap<String, Vec<u8>> = HashMap::new();
        let mut new_hashes: Vec<String> = Vec::new();
        for (class, cc) in &config.classes {
            let bytes = config_bytes(class, &cc.component)?;
            let hash = content_hash(&bytes);
            let record = records.entry(class.clone()).or_default();
            if record.config_hash.as_deref() != Some(hash.as_str()) {
                let info = version_info(&hash, bytes.len(), "config");
                if record.versions.is_empty() {
                    tracing::debug!(%class, version = %info.id, "first version, from the config");
                } else {
                    tracing::info!(%class, version = %info.id, component = %cc.component,
                        "the config names a component whose content changed: deployed as a new version");
                    self.metrics.deployed();
                }
                record.deploy(info);
                record.config_hash = Some(hash.clone());
                changed.push(class.clone());
                new_hashes.push(hash.clone());
            }
            from_config.insert(hash, bytes);
        }
        // Compile what serves now (the cache makes this cheap after the first start).
        let mut classes = HashMap::new();
        for (class, record) in records {
            let mut wanted = vec![record.active.clone()];
            if let Some(c) = &record.canary {
                wanted.push(c.version.clone());
            }
            let mut loaded = HashMap::new();
            for id in wanted {
                let info = record
                    .version(&id)
                    .ok_or_else(|| ComponentError::NoSuchVersion {
                        class: class.clone(),
                        version: id.clone(),
                    })?
                    .clone();
                let stored;
                let bytes = match from_config.get(&info.hash) {
                    Some(b) => b.as_slice(),
                    None => {
                        stored = self.stored_bytes(&class, &info)?;
                        stored.as_slice()
                    }
                };
                let version = self.compile(&class, info, bytes)?;
                loaded.insert(id, Arc::new(version));
            }
            classes.insert(class, Class { record, loaded });
        }
        if !changed.is_empty() {
            let records: Vec<(&str, Vec<u8>)> = changed
                .iter()
                .filter_map(|c| Some((c.as_str(), to_json(&classes.get(c)?.record))))
                .collect();
            let bytes: Vec<(&str, &[u8])> = new_hashes
                .iter()
                .filter_map(|h| Some((h.as_str(), from_config.get(h)?.as_slice())))
                .collect();
            self.db.save_classes(&records, &bytes)?;
        }
        if let Ok(mut c) = self.classes.write() {
            *c = classes;
        }
        self.count_compilations();
        Ok(())
    }

    /// Compiles and links `bytes` as a version of `class`, without making it
    /// serve: the first half of a deploy. Slow (Cranelift, unless cached):
    /// call it off the async workers.
    pub fn prepare(
        &self,
        class: &str,
        bytes: &[u8],
        deployed_by: &str,
    ) -> Result<Arc<Version<T>>, ComponentError> {
        let hash = content_hash(bytes);
        let info = version_info(&hash, bytes.len(), deployed_by);
        let version = self.compile(class, info, bytes);
        self.count_compilations();
        version.map(Arc::new)
    }

    /// Makes a prepared version serve (all objects, or a canary share of
    /// them) and records it, with its bytes, in the database.
    pub fn activate(
        &self,
        class: &str,
        version: Arc<Version<T>>,
        bytes: &[u8],
        canary: Option<u8>,
    ) -> Result<Change, ComponentError> {
        let mut record = self.record(class).unwrap_or_default();
        let previous = (!record.active.is_empty()).then(|| record.active.clone());
        let info = version.info.clone();
        let canary = canary.filter(|_| previous.is_some());
        match canary {
            Some(percent) => {
                record.versions.retain(|v| v.id != info.id);
                record.versions.push(info.clone());
                record.canary = Some(Canary {
                    version: info.id.clone(),
                    percent,
                });
            }
            None => record.deploy(info.clone()),
        }
        self.db
            .save_classes(&[(class, to_json(&record))], &[(info.hash.as_str(), bytes)])?;
        self.install(class, record, Some(version));
        Ok(Change {
            class: class.to_string(),
            version: info,
            previous,
            canary_percent: canary,
        })
    }

    /// A class's record now.
    fn record(&self, class: &str) -> Option<ClassRecord> {
        Some(self.classes.read().ok()?.get(class)?.record.clone())
    }

    /// Puts a saved record (and a newly compiled version) in place, and tells
    /// the actors.
    fn install(&self, class: &str, record: ClassRecord, version: Option<Arc<Version<T>>>) {
        if let Ok(mut classes) = self.classes.write() {
            let entry = classes.entry(class.to_string()).or_insert_with(|| Class {
                record: ClassRecord::default(),
                loaded: HashMap::new(),
            });
            entry.record = record;
            if let Some(v) = version {
                entry.loaded.insert(v.info.id.clone(), v);
            }
        }
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// Goes back to the version deployed before the active one, or to `to`.
    /// A canary under way is simply ended: its objects go back to the active
    /// version.
    pub fn rollback(&self, class: &str, to: Option<&str>) -> Result<Change, ComponentError> {
        let mut record = self
            .record(class)
            .ok_or_else(|| ComponentError::NoSuchClass(class.to_string()))?;
        let target = match (to, &record.canary) {
            (Some(id), _) => {
                record
                    .version(id)
                    .cloned()
                    .ok_or_else(|| ComponentError::NoSuchVersion {
                        class: class.to_string(),
                        version: id.to_string(),
                    })
            }
            (None, Some(_)) => record
                .version(&record.active)
                .cloned()
                .ok_or_else(|| ComponentError::NoPreviousVersion(class.to_string())),
            (None, None) => record
                .previous()
                .cloned()
                .ok_or_else(|| ComponentError::NoPreviousVersion(class.to_string())),
        }?;
        let loaded = self
            .classes
            .read()
            .ok()
            .and_then(|c| c.get(class)?.loaded.get(&target.id).cloned());
        let version = match loaded {
            Some(_) => None,
            None => {
                let bytes = self.stored_bytes(class, &target)?;
                let v = self.compile(class, target.clone(), &bytes);
                self.count_compilations();
                Some(Arc::new(v?))
            }
        };
        let previous = match record.canary.take() {
            Some(c) => c.version,
            None => record.active.clone(),
        };
        record.active = target.id.clone();
        self.db.save_classes(&[(class, to_json(&record))], &[])?;
        self.install(class, record, version);
        Ok(Change {
            class: class.to_string(),
            version: target,
            previous: Some(previous),
            canary_percent: None,
        })
    }

    /// Ends a canary rollout: its version serves every object.
    pub fn promote(&self, class: &str) -> Result<Change, ComponentError> {
        let mut record = self
            .record(class)
            .ok_or_else(|| ComponentError::NoSuchClass(class.to_string()))?;
        let canary = record
            .canary
            .take()
            .ok_or_else(|| ComponentError::NoCanary(class.to_string()))?;
        let info = record.version(&canary.version).cloned().ok_or_else(|| {
            ComponentError::NoSuchVersion {
                class: class.to_string(),
                version: canary.version.clone(),
            }
        })?;
        let previous = std::mem::replace(&mut record.active, canary.version);
        self.db.save_classes(&[(class, to_json(&record))], &[])?;
        self.install(class, record, None);
        Ok(Change {
            class: class.to_string(),
            version: info,
            previous: Some(previous),
            canary_percent: None,
        })
    }

    fn stored_bytes(&self, class: &str, info: &VersionInfo) -> Result<Vec<u8>, ComponentError> {
        self.db
            .component(&info.hash)?
            .ok_or_else(|| ComponentError::MissingBytes {
                class: class.to_string(),
                version: info.id.clone(),
            })
    }

    fn compile(
        &self,
        class: &str,
        info: VersionInfo,
        bytes: &[u8],
    ) -> Result<Version<T>, ComponentError> {
        if let Some(why) = not_a_component(bytes) {
            return Err(ComponentError::NotAComponent {
                class: class.to_string(),
                why,
            });
        }
        if self.cache.is_none() {
            self.uncached.fetch_add(1, Ordering::Relaxed);
        }
        let component =
            Component::new(&self.engine, bytes).map_err(|source| ComponentError::Invalid {
                class: class.to_string(),
                source,
            })?;
        let pre = link(&self.linker, class, &component)?;
        Ok(Version {
            info,
            pre,
            stats: VersionStats::default(),
        })
    }

    fn count_compilations(&self) {
        let n = match &self.cache {
            Some(c) => c.cache_misses() as u64,
            None => self.uncached.load(Ordering::Relaxed),
        };
        self.metrics.set_compilations(n);
    }
}

impl<T: 'static> Components<T> {
    /// The generation of the version assignment: it changes whenever some
    /// objects should move to another version.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The version `id` should run — the active one, or a canary's for the
    /// share of objects whose id hashes into it — and whether it is the
    /// active one.
    pub(crate) fn version_for(&self, id: &ObjectId) -> Option<(Arc<Version<T>>, bool)> {
        let classes = self.classes.read().ok()?;
        let class = classes.get(&id.class)?;
        if let Some(c) = &class.record.canary
            && canary_bucket(id) < u64::from(c.percent)
            && let Some(v) = class.loaded.get(&c.version)
        {
            return Some((v.clone(), false));
        }
        Some((class.active()?.clone(), true))
    }

    /// A version already compiled (the active one, a canary, or one served
    /// since the start).
    pub(crate) fn loaded(&self, class: &str, id: &str) -> Option<Arc<Version<T>>> {
        self.classes
            .read()
            .ok()?
            .get(class)?
            .loaded
            .get(id)
            .cloned()
    }

    /// The active version of a class (what pre-warmed instances are made of).
    pub(crate) fn active(&self, class: &str) -> Option<Arc<Version<T>>> {
        self.classes.read().ok()?.get(class)?.active().cloned()
    }

    /// Every class's record, for the admin API.
    pub fn records(&self) -> Vec<(String, ClassRecord)> {
        let Ok(classes) = self.classes.read() else {
            return Vec::new();
        };
        let mut out: Vec<_> = classes
            .iter()
            .map(|(n, c)| (n.clone(), c.record.clone()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Marks guest code as running until the guard drops: keeps the epoch
    /// ticking every [`EPOCH_TICK`].
    pub(crate) fn guest_running(&self) -> RunningGuard {
        self.activity.running()
    }

    /// The threads long events run on.
    pub(crate) fn long_lane(&self) -> LongLane {
        self.long_lane.clone()
    }

    /// True when a class of this name is configured or deployed.
    pub fn has_class(&self, class: &str) -> bool {
        self.classes.read().is_ok_and(|c| c.contains_key(class))
    }
}

impl<T: 'static> Drop for Components<T> {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

/// Which of 100 canary buckets an object falls in: a stable hash of its id
/// (FNV-1a), the same on every host and every start.
pub fn canary_bucket(id: &ObjectId) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.class.bytes().chain([0]).chain(id.name.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h % 100
}

fn version_info(hash: &str, size: usize, deployed_by: &str) -> VersionInfo {
    VersionInfo {
        id: version_id(hash),
        hash: hash.to_string(),
        deployed_at_ms: crate::clock::now_ms(),
        deployed_by: deployed_by.to_string(),
        size: size as u64,
    }
}

fn to_json(record: &ClassRecord) -> Vec<u8> {
    serde_json::to_vec(record).unwrap_or_default()
}

/// The bytes a config class names: `builtin:NAME` or a file.
pub(crate) fn config_bytes(class: &str, component: &str) -> Result<Vec<u8>, ComponentError> {
    if let Some(name) = component.strip_prefix("builtin:") {
        return crate::guests::builtin(name)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| ComponentError::UnknownBuiltin {
                class: class.to_string(),
                name: name.to_string(),
            });
    }
    let path = PathBuf::from(component);
    std::fs::read(&path).map_err(|source| ComponentError::Read {
        class: class.to_string(),
        path,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canary_buckets_are_stable_and_spread() {
        let id = |n: usize| ObjectId::new("chat-room", format!("room-{n}"));
        assert_eq!(canary_bucket(&id(7)), canary_bucket(&id(7)));
        let under_30 = (0..1000).filter(|n| canary_bucket(&id(*n)) < 30).count();
        assert!(
            (200..400).contains(&under_30),
            "{under_30} of 1000 in a 30% canary"
        );
    }
}
