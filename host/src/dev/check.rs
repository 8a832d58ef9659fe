//! `roomhost check`: everything a host would refuse or fail on at start —
//! and what a deploy would refuse — found without serving: the config
//! parses, every class's component loads, compiles, links against the
//! `roomhost:object` world, and starts (a throwaway instance runs its start
//! functions and `init`, as a deploy's trial does), and every route names a
//! configured class. Every problem is reported, not only the first.

use crate::components::config_bytes;
use crate::components::versions::{content_hash, version_id};
use crate::config::Config;
use crate::error::{ComponentError, Error};
use crate::server::Server;

/// What the check found about one class.
#[derive(Debug)]
pub struct ClassCheck {
    /// The class.
    pub class: String,
    /// Its component, as the config names it (`builtin:NAME` or a path).
    pub component: String,
    /// Its version id and size in bytes, or why it would not serve.
    pub result: Result<(String, usize), ComponentError>,
}

/// What the check found.
#[derive(Debug, Default)]
pub struct CheckReport {
    /// Each class, in name order.
    pub classes: Vec<ClassCheck>,
    /// Routes whose class is not configured: `(path, class)`.
    pub routes_without_class: Vec<(String, String)>,
}

impl CheckReport {
    /// True when nothing is wrong.
    pub fn ok(&self) -> bool {
        self.classes.iter().all(|c| c.result.is_ok()) && self.routes_without_class.is_empty()
    }
}

/// Checks `config`'s classes and routes. The database is a temporary one
/// (the config's own is not opened: a host may be using it), so nothing is
/// recorded anywhere. `Err` when no host could be set up at all (the
/// config's limits or routes are invalid, no temporary folder).
pub async fn check(config: &Config) -> Result<CheckReport, Error> {
    let dir = tempfile::tempdir().map_err(|source| Error::Io {
        context: "cannot create a temporary folder for the check's database".into(),
        source,
    })?;
    let mut trial = config.clone();
    trial.data = dir.path().join("check.redb");
    trial.prewarm_instances = 0;
    let server = Server::without_classes(trial)?;
    let rt = server.runtime().clone();
    let mut report = CheckReport::default();
    for (class, cc) in &config.classes {
        let result = async {
            let bytes = config_bytes(class, &cc.component)?;
            let size = bytes.len();
            let id = version_id(&content_hash(&bytes));
            let (rt2, c) = (rt.clone(), class.clone());
            // Compiling is seconds of CPU: not on the async workers.
            let version = tokio::task::spawn_blocking(move || {
                rt2.components.prepare(&c, &bytes, "roomhost check")
            })
            .await
            .map_err(|_| ComponentError::Poisoned)??;
            crate::objects::warm::trial(&rt, class, &version)
                .await
                .map_err(|source| ComponentError::Trial {
                    class: class.clone(),
                    source,
                })?;
            Ok((id, size))
        }
        .await;
        report.classes.push(ClassCheck {
            class: class.clone(),
            component: cc.component.clone(),
            result,
        });
    }
    report.routes_without_class = config.routes_without_class(|_| false);
    drop(rt);
    server.close();
    Ok(report)
}
