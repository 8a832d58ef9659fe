//! Deploys, rollbacks and canary promotions of a class's component, while
//! its objects serve.
//!
//! A deploy is refused unless the bytes compile and link as a
//! `roomhost:object` component and a throwaway instance (bound to no object)
//! runs its start functions and `init` without trapping; a refused deploy
//! changes nothing. An accepted one is recorded with its bytes, then serves:
//! each live object moves to it at its next event boundary (see
//! `actor::follow_version`), hibernated ones wake on it, and the class's
//! pre-warmed instances of the old version are dropped. No connection is
//! closed. Admin operations run one at a time.

use std::sync::Arc;

use serde::Serialize;

use super::{ObjectCtx, Runtime};
use crate::components::versions::{Canary, VersionInfo};
use crate::components::{Change, Version};
use crate::error::{ComponentError, Report};

/// One version of a class as `GET /admin/classes` shows it.
#[derive(Debug, Serialize)]
pub struct VersionStatus {
    /// The version.
    #[serde(flatten)]
    pub info: VersionInfo,
    /// It serves every object not in a canary.
    pub active: bool,
    /// Objects with a live instance of it.
    pub live_objects: u64,
    /// Objects whose last instance was of it, hibernating (sockets open).
    pub hibernated_objects: u64,
}

/// One class as `GET /admin/classes` shows it.
#[derive(Debug, Serialize)]
pub struct ClassStatus {
    /// The class.
    pub class: String,
    /// The active version's id.
    pub active: String,
    /// A canary rollout under way.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canary: Option<Canary>,
    /// Its versions, oldest first.
    pub versions: Vec<VersionStatus>,
}

impl Runtime {
    /// Deploys `bytes` as the new version of `class` (a new class if there is
    /// none), for every object or, with `canary`, for that share of them.
    pub async fn deploy(
        self: &Arc<Self>,
        class: &str,
        bytes: Vec<u8>,
        deployed_by: &str,
        canary: Option<u8>,
    ) -> Result<Change, ComponentError> {
        let _one_at_a_time = self.admin_lock.lock().await;
        let result = async {
            let bytes = Arc::new(bytes);
            let version = {
                let (rt, class, bytes, by) = (
                    self.clone(),
                    class.to_string(),
                    bytes.clone(),
                    deployed_by.to_string(),
                );
                // Compiling is seconds of CPU: not on the async workers.
                tokio::task::spawn_blocking(move || rt.components.prepare(&class, &bytes, &by))
                    .await
                    .map_err(|_| ComponentError::Poisoned)??
            };
            self.try_out(class, &version).await?;
            let change = self
                .components
                .activate(class, version.clone(), &bytes, canary)?;
            self.warm.clear_class(class, &self.metrics);
            if let Some(old) = change
                .previous
                .as_deref()
                .and_then(|id| self.components.loaded(class, id))
            {
                self.watch(class, version, old);
            }
            Ok(change)
        }
        .await;
        match &result {
            Ok(change) => {
                self.metrics.deployed();
                tracing::info!(
                    class = %change.class,
                    version = %change.version.id,
                    previous = change.previous.as_deref().unwrap_or("none"),
                    canary_percent = change.canary_percent,
                    by = %change.version.deployed_by,
                    "deployed",
                );
            }
            Err(e) => {
                self.metrics.deploy_refused();
                tracing::warn!(%class, error = %Report(e), "deploy refused; nothing changed");
            }
        }
        result
    }

    /// Watches a new version for `auto_rollback_ms`: if its events trap more
    /// often than the old version's did, by more than
    /// `auto_rollback_trap_rate`, rolls back to the old one by itself. A
    /// later deploy or rollback ends the watch.
    fn watch(
        self: &Arc<Self>,
        class: &str,
        new: Arc<Version<ObjectCtx>>,
        old: Arc<Version<ObjectCtx>>,
    ) {
        let window = std::time::Duration::from_millis(self.config.auto_rollback_ms);
        if window.is_zero() {
            return;
        }
        let (old_events, old_traps) = old.stats.counts();
        let old_rate = if old_events == 0 {
            0.0
        } else {
            old_traps as f64 / old_events as f64
        };
        let (new_events0, new_traps0) = new.stats.counts();
        let (rt, class) = (self.clone(), class.to_string());
        let generation = self.components.generation();
        self.tasks.spawn(async move {
            let deadline = tokio::time::Instant::now() + window;
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(100));
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = rt.shutdown.cancelled() => return,
                }
                if rt.components.generation() != generation || tokio::time::Instant::now() > deadline {
                    return;
                }
                let (events, traps) = new.stats.counts();
                let (events, traps) = (events - new_events0, traps - new_traps0);
                if events < rt.config.auto_rollback_min_events.max(1) {
                    continue;
                }
                let rate = traps as f64 / events as f64;
                if rate > old_rate + rt.config.auto_rollback_trap_rate {
                    let _one_at_a_time = rt.admin_lock.lock().await;
                    if rt.components.generation() != generation {
                        return;
                    }
                    tracing::error!(
                        %class,
                        version = %new.info.id,
                        back_to = %old.info.id,
                        trapped = traps,
                        of = events,
                        old_trap_rate = old_rate,
                        "the new version traps too often: rolling back by itself"
                    );
                    match rt.components.rollback(&class, Some(&old.info.id)) {
                        Ok(_) => {
                            rt.warm.clear_class(&class, &rt.metrics);
                            rt.metrics.auto_rolled_back();
                        }
                        Err(e) => tracing::error!(%class, error = %Report(&e), "the automatic rollback failed"),
                    }
                    return;
                }
            }
        });
    }

    /// Runs a version's start functions and `init` in a throwaway store.
    async fn try_out(
        self: &Arc<Self>,
        class: &str,
        version: &Version<ObjectCtx>,
    ) -> Result<(), ComponentError> {
        super::warm::trial(self, class, version)
            .await
            .map_err(|source| ComponentError::Trial {
                class: class.to_string(),
                source,
            })
    }

    /// Goes back to the version deployed before the active one, or to `to`;
    /// ends a canary rollout.
    pub async fn rollback(
        self: &Arc<Self>,
        class: &str,
        to: Option<&str>,
    ) -> Result<Change, ComponentError> {
        let _one_at_a_time = self.admin_lock.lock().await;
        let (rt, c, t) = (self.clone(), class.to_string(), to.map(str::to_string));
        // A version not compiled since the start loads from the cache (or,
        // without one, compiles): off the async workers.
        let change = tokio::task::spawn_blocking(move || rt.components.rollback(&c, t.as_deref()))
            .await
            .map_err(|_| ComponentError::Poisoned)??;
        self.warm.clear_class(class, &self.metrics);
        self.metrics.rolled_back();
        tracing::info!(
            class = %change.class,
            version = %change.version.id,
            from = change.previous.as_deref().unwrap_or("none"),
            "rolled back",
        );
        Ok(change)
    }

    /// Ends a canary rollout: its version serves every object.
    pub async fn promote(self: &Arc<Self>, class: &str) -> Result<Change, ComponentError> {
        let _one_at_a_time = self.admin_lock.lock().await;
        let change = self.components.promote(class)?;
        self.warm.clear_class(class, &self.metrics);
        tracing::info!(class = %change.class, version = %change.version.id, "canary promoted");
        Ok(change)
    }

    /// Every class, its versions, and the objects on each.
    pub fn classes(&self) -> Vec<ClassStatus> {
        let counts = self.objects_by_version();
        self.components
            .records()
            .into_iter()
            .map(|(class, record)| {
                let versions = record
                    .versions
                    .iter()
                    .map(|v| {
                        let (live, hibernated) = counts
                            .get(&(class.clone(), v.id.clone()))
                            .copied()
                            .unwrap_or_default();
                        VersionStatus {
                            info: v.clone(),
                            active: v.id == record.active,
                            live_objects: live,
                            hibernated_objects: hibernated,
                        }
                    })
                    .collect();
                ClassStatus {
                    class,
                    active: record.active,
                    canary: record.canary,
                    versions,
                }
            })
            .collect()
    }
}
