//! Watching a guest crate's sources (`src/`, `wit/`, `Cargo.toml`,
//! `build.rs`, and `roomhost.toml`) with the OS's file notifications, and
//! turning a burst of saves into one change.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use notify::event::{EventKind, MetadataKind, ModifyKind};
use notify::{RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::error::DevError;

/// A change is over once no file has changed for this long (an editor's
/// save is often several writes and renames).
pub const QUIET: Duration = Duration::from_millis(150);

/// A steady stream of changes still ends a change after this long.
const MAX_BURST: Duration = Duration::from_secs(2);

/// What changed in a burst of file events.
#[derive(Debug)]
pub struct Change {
    /// When the first event of the burst arrived (a save's time).
    pub first: Instant,
    /// The files changed, relative to the crate's folder, each once.
    pub files: Vec<PathBuf>,
}

impl Change {
    /// True when only `roomhost.toml` changed (nothing to rebuild).
    pub fn only_config(&self) -> bool {
        self.files.iter().all(|f| f == Path::new(CONFIG_FILE))
    }

    /// True when `roomhost.toml` is among the changed files.
    pub fn config(&self) -> bool {
        self.files.iter().any(|f| f == Path::new(CONFIG_FILE))
    }
}

/// The host config of a guest crate, in its folder.
pub const CONFIG_FILE: &str = "roomhost.toml";

/// Watches one crate folder.
pub struct Watcher {
    dir: PathBuf,
    _watcher: RecommendedWatcher,
    rx: mpsc::UnboundedReceiver<PathBuf>,
}

impl Watcher {
    /// Starts watching `dir` (its top level, and `src/` and `wit/` with
    /// everything under them).
    pub fn new(dir: &Path) -> Result<Watcher, DevError> {
        let dir = std::fs::canonicalize(dir).map_err(|source| DevError::Io {
            context: format!("cannot open {}", dir.display()),
            source,
        })?;
        let (tx, rx) = mpsc::unbounded_channel();
        let root = dir.clone();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                let Ok(event) = event else { return };
                if !counts(&event.kind) {
                    return;
                }
                for path in event.paths {
                    if let Some(rel) = relevant(&root, &path) {
                        let _ = tx.send(rel);
                    }
                }
            })
            .map_err(|source| DevError::Watch {
                path: dir.clone(),
                source,
            })?;
        let mut watch = |path: &Path, mode| {
            watcher.watch(path, mode).map_err(|source| DevError::Watch {
                path: path.to_path_buf(),
                source,
            })
        };
        watch(&dir, RecursiveMode::NonRecursive)?;
        for sub in ["src", "wit"] {
            let path = dir.join(sub);
            if path.is_dir() {
                watch(&path, RecursiveMode::Recursive)?;
            }
        }
        Ok(Watcher {
            dir,
            _watcher: watcher,
            rx,
        })
    }

    /// The folder watched (canonical).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Waits for a change, then until the files have been quiet for
    /// [`QUIET`]. `None` if the watcher has stopped.
    pub async fn changed(&mut self) -> Option<Change> {
        let first_file = self.rx.recv().await?;
        let first = Instant::now();
        let mut files = vec![first_file];
        let end = first + MAX_BURST;
        loop {
            let quiet = (Instant::now() + QUIET).min(end);
            match tokio::time::timeout_at(quiet, self.rx.recv()).await {
                Ok(Some(file)) => files.push(file),
                Ok(None) | Err(_) => break,
            }
        }
        files.sort();
        files.dedup();
        Some(Change { first, files })
    }
}

/// Events that mean a file's content (or existence) changed: not reads, not
/// access times.
fn counts(kind: &EventKind) -> bool {
    match kind {
        EventKind::Create(_) | EventKind::Remove(_) | EventKind::Any => true,
        EventKind::Modify(ModifyKind::Metadata(MetadataKind::AccessTime)) => false,
        EventKind::Modify(_) => true,
        EventKind::Access(_) | EventKind::Other => false,
    }
}

/// `path` relative to the crate's folder, if a change to it matters: a
/// source under `src/` or `wit/` (not an editor's swap or backup file), or
/// `Cargo.toml`, `build.rs`, `roomhost.toml`.
fn relevant(root: &Path, path: &Path) -> Option<PathBuf> {
    let rel = path.strip_prefix(root).ok()?;
    let parts: Vec<&std::ffi::OsStr> = rel
        .components()
        .filter_map(|c| match c {
            Component::Normal(p) => Some(p),
            _ => None,
        })
        .collect();
    let name = parts.last()?.to_str()?;
    match parts.as_slice() {
        [_] => ["Cargo.toml", "build.rs", CONFIG_FILE]
            .contains(&name)
            .then(|| rel.to_path_buf()),
        [top, ..] if *top == "src" || *top == "wit" => {
            let editor_file = name.starts_with('.')
                || name.ends_with('~')
                || name.ends_with(".swp")
                || name.ends_with(".swx")
                || name.ends_with(".tmp")
                || name == "4913";
            (!editor_file).then(|| rel.to_path_buf())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_matter_and_the_rest_does_not() {
        let root = Path::new("/c");
        let rel = |p: &str| relevant(root, Path::new(p));
        assert_eq!(rel("/c/src/lib.rs"), Some(PathBuf::from("src/lib.rs")));
        assert_eq!(rel("/c/src/a/b.rs"), Some(PathBuf::from("src/a/b.rs")));
        assert_eq!(
            rel("/c/wit/world.wit"),
            Some(PathBuf::from("wit/world.wit"))
        );
        assert_eq!(rel("/c/Cargo.toml"), Some(PathBuf::from("Cargo.toml")));
        assert_eq!(
            rel("/c/roomhost.toml"),
            Some(PathBuf::from("roomhost.toml"))
        );
        assert_eq!(rel("/c/Cargo.lock"), None);
        assert_eq!(rel("/c/target"), None);
        assert_eq!(rel("/c/.roomhost"), None);
        assert_eq!(rel("/c/src/.lib.rs.swp"), None);
        assert_eq!(rel("/c/src/lib.rs~"), None);
        assert_eq!(rel("/c/src/4913"), None);
        assert_eq!(rel("/elsewhere/src/lib.rs"), None);
        assert!(!counts(&EventKind::Access(notify::event::AccessKind::Any)));
        assert!(counts(&EventKind::Modify(ModifyKind::Any)));
    }
}
