//! `roomhost new` and `roomhost update-sdk`: a guest crate that builds
//! anywhere, from registry crates and the SDK and WIT this binary carries.
//!
//! The binary embeds the SDK's sources (`guests/sdk/src`), the world
//! (`wit/`), the templates (`host/templates/`) and the workspace's
//! `Cargo.lock`, so a scaffolded crate resolves the dependency versions this
//! roomhost was tested with and points into no checkout.

use std::path::{Path, PathBuf};

/// A file to write: its path in the crate and its text.
type File = (&'static str, &'static str);

/// The SDK's sources, as `roomhost-sdk/...` paths in a scaffolded crate.
pub const SDK_FILES: &[File] = &[
    ("src/lib.rs", include_str!("../../guests/sdk/src/lib.rs")),
    (
        "src/error.rs",
        include_str!("../../guests/sdk/src/error.rs"),
    ),
    ("src/http.rs", include_str!("../../guests/sdk/src/http.rs")),
    (
        "src/sockets.rs",
        include_str!("../../guests/sdk/src/sockets.rs"),
    ),
    (
        "src/storage.rs",
        include_str!("../../guests/sdk/src/storage.rs"),
    ),
    ("src/sys.rs", include_str!("../../guests/sdk/src/sys.rs")),
    (
        "src/testing/mod.rs",
        include_str!("../../guests/sdk/src/testing/mod.rs"),
    ),
    (
        "src/testing/world.rs",
        include_str!("../../guests/sdk/src/testing/world.rs"),
    ),
    (
        "src/testing/imports.rs",
        include_str!("../../guests/sdk/src/testing/imports.rs"),
    ),
    (
        "src/testing/e2e.rs",
        include_str!("../../guests/sdk/src/testing/e2e.rs"),
    ),
    ("wit/world.wit", include_str!("../../wit/world.wit")),
    ("wit/types.wit", include_str!("../../wit/types.wit")),
    ("wit/handler.wit", include_str!("../../wit/handler.wit")),
    ("wit/storage.wit", include_str!("../../wit/storage.wit")),
    ("wit/sockets.wit", include_str!("../../wit/sockets.wit")),
    ("wit/objects.wit", include_str!("../../wit/objects.wit")),
    ("wit/alarms.wit", include_str!("../../wit/alarms.wit")),
    ("wit/versions.wit", include_str!("../../wit/versions.wit")),
    ("wit/log.wit", include_str!("../../wit/log.wit")),
];

/// The vendored SDK's manifest (the workspace's one inherits from it).
const SDK_MANIFEST: &str = include_str!("../templates/sdk-Cargo.toml.tmpl");

/// What every template writes: (path in the crate, text with `{{...}}`
/// holes).
const COMMON: &[File] = &[
    (
        "Cargo.toml",
        include_str!("../templates/common/Cargo.toml.tmpl"),
    ),
    (
        "roomhost.toml",
        include_str!("../templates/common/roomhost.toml.tmpl"),
    ),
    (
        "README.md",
        include_str!("../templates/common/README.md.tmpl"),
    ),
    (
        ".gitignore",
        include_str!("../templates/common/gitignore.tmpl"),
    ),
];

/// A template: its name, its own files, what it is (the README's table),
/// and what to try while `roomhost dev` runs.
struct Template {
    name: &'static str,
    files: &'static [File],
    what: &'static str,
    try_it: &'static str,
}

const ROOM: Template = Template {
    name: "room",
    files: &[
        ("src/lib.rs", include_str!("../templates/room/src/lib.rs")),
        (
            "src/tests.rs",
            include_str!("../templates/room/src/tests.rs"),
        ),
        (
            "tests/e2e.rs",
            include_str!("../templates/room/tests/e2e.rs.tmpl"),
        ),
    ],
    what: "the room: messages over WebSockets, stored, and expired by an alarm",
    try_it: "websocat 'ws://127.0.0.1:8080/{{class}}/lobby/ws?user=ada'   # then type a message\n\
             curl http://127.0.0.1:8080/{{class}}/lobby/history",
};

const COUNTER: Template = Template {
    name: "counter",
    files: &[
        (
            "src/lib.rs",
            include_str!("../templates/counter/src/lib.rs"),
        ),
        (
            "src/tests.rs",
            include_str!("../templates/counter/src/tests.rs"),
        ),
        (
            "tests/e2e.rs",
            include_str!("../templates/counter/tests/e2e.rs.tmpl"),
        ),
    ],
    what: "the counter: one per name, with WebSocket watchers",
    try_it: "curl -X POST 'http://127.0.0.1:8080/{{class}}/hits/increment?by=2'\n\
             websocat ws://127.0.0.1:8080/{{class}}/hits/watch",
};

const ALL: &[&Template] = &[&ROOM, &COUNTER];

/// The versions this roomhost was tested with.
const CARGO_LOCK: &str = include_str!("../../Cargo.lock");

/// The templates `roomhost new --template` knows.
pub const TEMPLATES: &[&str] = &["room", "counter"];

/// Why a crate could not be made or updated.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScaffoldError {
    /// The name cannot be a crate and class name.
    #[error(
        "{0:?} cannot name a room crate: use letters, digits, `-` and `_`, starting with a letter (at most 64)"
    )]
    BadName(String),
    /// No template of that name.
    #[error("no template {0:?}: the templates are {templates}", templates = TEMPLATES.join(", "))]
    NoTemplate(String),
    /// The folder exists and is not empty.
    #[error("{} already exists and is not empty: choose another name, or remove it", .0.display())]
    Exists(PathBuf),
    /// The folder holds no crate made by `roomhost new`.
    #[error("{} has no roomhost-sdk/ folder: run `roomhost update-sdk` in a crate made by `roomhost new`", .0.display())]
    NotScaffolded(PathBuf),
    /// Writing failed.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// Creates crate `name` from `template` in `parent/name`; returns its path.
pub fn new_crate(parent: &Path, name: &str, template: &str) -> Result<PathBuf, ScaffoldError> {
    let starts_with_letter = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic());
    if !crate::ids::valid_class_name(name) || !starts_with_letter {
        return Err(ScaffoldError::BadName(name.to_string()));
    }
    let Some(chosen) = ALL.iter().find(|t| t.name == template) else {
        return Err(ScaffoldError::NoTemplate(template.to_string()));
    };
    let dir = parent.join(name);
    let occupied = std::fs::read_dir(&dir).is_ok_and(|mut entries| entries.next().is_some());
    if occupied || dir.is_file() {
        return Err(ScaffoldError::Exists(dir));
    }
    let holes = [
        // First: they hold holes of their own.
        ("{{try_it}}", chosen.try_it.to_string()),
        ("{{what}}", chosen.what.to_string()),
        ("{{template}}", chosen.name.to_string()),
        ("{{name}}", name.to_string()),
        ("{{class}}", name.to_string()),
        ("{{crate_file}}", name.replace('-', "_")),
        (
            "{{roomhost_version}}",
            env!("CARGO_PKG_VERSION").to_string(),
        ),
        ("{{sdk_version}}", env!("CARGO_PKG_VERSION").to_string()),
    ];
    for (path, text) in COMMON.iter().chain(chosen.files) {
        write(&dir.join(path), &fill(text, &holes))?;
    }
    write(&dir.join("Cargo.lock"), CARGO_LOCK)?;
    write_sdk(&dir)?;
    Ok(dir)
}

/// Rewrites `dir/roomhost-sdk` with the SDK and WIT this binary carries.
pub fn update_sdk(dir: &Path) -> Result<(), ScaffoldError> {
    let sdk = dir.join("roomhost-sdk");
    if !sdk.is_dir() {
        return Err(ScaffoldError::NotScaffolded(dir.to_path_buf()));
    }
    for old in ["src", "wit"] {
        let path = sdk.join(old);
        if path.exists() {
            std::fs::remove_dir_all(&path).map_err(|source| ScaffoldError::Write {
                path: path.clone(),
                source,
            })?;
        }
    }
    write_sdk(dir)
}

fn write_sdk(dir: &Path) -> Result<(), ScaffoldError> {
    let sdk = dir.join("roomhost-sdk");
    let holes = [("{{sdk_version}}", env!("CARGO_PKG_VERSION").to_string())];
    write(&sdk.join("Cargo.toml"), &fill(SDK_MANIFEST, &holes))?;
    for (path, text) in SDK_FILES {
        write(&sdk.join(path), text)?;
    }
    Ok(())
}

fn fill(text: &str, holes: &[(&str, String)]) -> String {
    holes.iter().fold(text.to_string(), |text, (hole, value)| {
        text.replace(hole, value)
    })
}

fn write(path: &Path, text: &str) -> Result<(), ScaffoldError> {
    let failed = |source| ScaffoldError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(failed)?;
    }
    std::fs::write(path, text).map_err(failed)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn files_under(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files_under(root, &path, out);
            } else {
                let rel = path.strip_prefix(root).unwrap();
                out.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }

    #[test]
    fn every_sdk_and_wit_file_is_carried() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guests/sdk");
        let mut on_disk = Vec::new();
        files_under(&root, &root.join("src"), &mut on_disk);
        files_under(&root, &root.join("wit"), &mut on_disk);
        let mut carried: Vec<String> = SDK_FILES.iter().map(|(p, _)| p.to_string()).collect();
        on_disk.sort();
        carried.sort();
        assert_eq!(carried, on_disk, "update SDK_FILES in host/src/scaffold.rs");
    }

    #[test]
    fn the_vendored_manifest_asks_for_the_workspace_versions() {
        let workspace: toml::Table = toml::from_str(include_str!("../../Cargo.toml")).unwrap();
        let deps = &workspace["workspace"]["dependencies"];
        let sdk: toml::Table = toml::from_str(SDK_MANIFEST).unwrap();
        let own: toml::Table = toml::from_str(include_str!("../../guests/sdk/Cargo.toml")).unwrap();
        let version = |v: &toml::Value| match v {
            toml::Value::String(s) => s.clone(),
            t => t["version"].as_str().unwrap().to_string(),
        };
        let mut named = 0;
        for table in ["dependencies", "target"] {
            let ours = own.get(table).unwrap();
            let mut check = |name: &str, theirs: &toml::Value| {
                assert_eq!(version(&deps[name]), version(theirs), "{name}");
                named += 1;
            };
            if table == "dependencies" {
                for (name, _) in ours.as_table().unwrap() {
                    check(name, &sdk["dependencies"][name.as_str()]);
                }
            } else {
                let target = "cfg(not(target_arch = \"wasm32\"))";
                for (name, _) in ours[target]["dependencies"].as_table().unwrap() {
                    check(name, &sdk["target"][target]["dependencies"][name.as_str()]);
                }
            }
        }
        assert_eq!(named, 4);
        assert_eq!(sdk["features"], own["features"]);
    }

    #[test]
    fn every_template_is_listed_and_every_listed_one_exists() {
        let names: Vec<&str> = ALL.iter().map(|t| t.name).collect();
        assert_eq!(names, TEMPLATES);
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("templates");
        for t in ALL {
            let mut on_disk = Vec::new();
            files_under(&root.join(t.name), &root.join(t.name), &mut on_disk);
            let mut carried: Vec<String> = t
                .files
                .iter()
                .map(|(p, _)| p.replace("tests/e2e.rs", "tests/e2e.rs.tmpl"))
                .collect();
            on_disk.sort();
            carried.sort();
            assert_eq!(carried, on_disk, "template {}", t.name);
        }
    }

    #[test]
    fn new_fills_the_template_and_refuses_bad_names_and_taken_folders() {
        let tmp = tempfile::tempdir().unwrap();
        let counter = new_crate(tmp.path(), "hits", "counter").unwrap();
        let readme = std::fs::read_to_string(counter.join("README.md")).unwrap();
        assert!(readme.contains("template `counter`"), "{readme}");
        assert!(readme.contains("/hits/hits/increment"), "{readme}");
        let dir = new_crate(tmp.path(), "my-room", "room").unwrap();
        let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
        assert!(manifest.contains("name = \"my-room\""));
        let config = std::fs::read_to_string(dir.join("roomhost.toml")).unwrap();
        assert!(config.contains("release/my_room.wasm"), "{config}");
        assert!(config.contains("[classes.my-room]"));
        let crate_files = COMMON.iter().chain(ROOM.files).map(|(p, _)| dir.join(p));
        let sdk_files = SDK_FILES
            .iter()
            .map(|(p, _)| dir.join("roomhost-sdk").join(p));
        for path in crate_files.chain(sdk_files) {
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(
                !text.contains("{{"),
                "{} has an unfilled hole",
                path.display()
            );
        }
        assert!(matches!(
            new_crate(tmp.path(), "my-room", "room"),
            Err(ScaffoldError::Exists(_))
        ));
        for bad in ["", "9lives", "a b", "../up", "x/y"] {
            assert!(
                matches!(
                    new_crate(tmp.path(), bad, "room"),
                    Err(ScaffoldError::BadName(_))
                ),
                "{bad:?}"
            );
        }
        assert!(matches!(
            new_crate(tmp.path(), "other", "nope"),
            Err(ScaffoldError::NoTemplate(_))
        ));

        // update-sdk rewrites the SDK and leaves the rest alone.
        std::fs::write(dir.join("roomhost-sdk/src/lib.rs"), "stale").unwrap();
        std::fs::write(dir.join("roomhost-sdk/src/gone.rs"), "old file").unwrap();
        std::fs::write(dir.join("src/lib.rs"), "mine").unwrap();
        update_sdk(&dir).unwrap();
        let sdk = std::fs::read_to_string(dir.join("roomhost-sdk/src/lib.rs")).unwrap();
        assert_eq!(sdk, SDK_FILES[0].1);
        assert!(!dir.join("roomhost-sdk/src/gone.rs").exists());
        assert_eq!(
            std::fs::read_to_string(dir.join("src/lib.rs")).unwrap(),
            "mine"
        );
        assert!(matches!(
            update_sdk(tmp.path()),
            Err(ScaffoldError::NotScaffolded(_))
        ));
    }
}
