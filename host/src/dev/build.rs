//! Building a guest crate for `wasm32-wasip2` with cargo, its messages
//! streamed to the terminal, and finding the `.wasm` it wrote — from cargo's
//! own report of its artifacts, so that `CARGO_TARGET_DIR`, a workspace or a
//! renamed `[lib]` do not matter.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::error::DevError;

/// The target guests are built for: its output is already a component.
pub const TARGET: &str = "wasm32-wasip2";

/// Runs `cargo build --release --target wasm32-wasip2` in `dir` (cargo's
/// diagnostics and progress go to this process's stderr) and returns the
/// `.wasm` file the crate in `dir` produced. Dropping the future kills cargo.
pub async fn build(dir: &Path) -> Result<PathBuf, DevError> {
    let mut child = tokio::process::Command::new("cargo")
        .current_dir(dir)
        .args([
            "build",
            "--release",
            "--target",
            TARGET,
            "--message-format",
            "json-render-diagnostics",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| DevError::Spawn {
            program: "cargo build".into(),
            dir: dir.to_path_buf(),
            source,
        })?;
    let manifest = std::fs::canonicalize(dir.join("Cargo.toml")).ok();
    // (the crate's manifest, a .wasm it wrote), in cargo's order.
    let mut wasm: Vec<(Option<PathBuf>, PathBuf)> = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(found) = wasm_artifact(&line) {
                wasm.extend(found);
            }
        }
    }
    let status = child.wait().await.map_err(|source| DevError::Spawn {
        program: "cargo build".into(),
        dir: dir.to_path_buf(),
        source,
    })?;
    if !status.success() {
        return Err(DevError::BuildFailed {
            dir: dir.to_path_buf(),
        });
    }
    // The crate in `dir` first; else (a workspace root) the last one built.
    let own = wasm
        .iter()
        .rev()
        .find(|(m, _)| {
            m.is_some() && m.as_ref().and_then(|m| std::fs::canonicalize(m).ok()) == manifest
        })
        .or(wasm.last())
        .map(|(_, p)| p.clone());
    own.ok_or_else(|| DevError::NoArtifact {
        dir: dir.to_path_buf(),
    })
}

/// The `.wasm` files of one line of cargo's JSON output, if it reports an
/// artifact, with the manifest of the crate that made them.
fn wasm_artifact(line: &str) -> Option<Vec<(Option<PathBuf>, PathBuf)>> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    if v["reason"].as_str() != Some("compiler-artifact") {
        return None;
    }
    let manifest = v["manifest_path"].as_str().map(PathBuf::from);
    let files = v["filenames"]
        .as_array()?
        .iter()
        .filter_map(|f| f.as_str())
        .filter(|f| f.ends_with(".wasm"))
        .map(|f| (manifest.clone(), PathBuf::from(f)))
        .collect();
    Some(files)
}

/// The file name cargo gives the crate's component: its package name with
/// `-` as `_`, or its `[lib] name` (`counter.wasm` when unknown).
pub fn artifact_name(dir: &Path) -> String {
    let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap_or_default();
    let parsed: toml::Table = toml::from_str(&manifest).unwrap_or_default();
    let lib = parsed
        .get("lib")
        .and_then(|l| l.get("name"))
        .and_then(|n| n.as_str());
    let package = parsed
        .get("package")
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str());
    let name = lib.or(package).unwrap_or("counter").replace('-', "_");
    format!("{name}.wasm")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifacts_come_from_cargo_json() {
        let line = r#"{"reason":"compiler-artifact","manifest_path":"/g/Cargo.toml","target":{"kind":["cdylib"]},"filenames":["/t/wasm32-wasip2/release/g.wasm","/t/wasm32-wasip2/release/libg.rlib"]}"#;
        assert_eq!(
            wasm_artifact(line),
            Some(vec![(
                Some(PathBuf::from("/g/Cargo.toml")),
                PathBuf::from("/t/wasm32-wasip2/release/g.wasm")
            )])
        );
        assert_eq!(
            wasm_artifact(r#"{"reason":"build-finished","success":true}"#),
            None
        );
        assert_eq!(wasm_artifact("Compiling g"), None);
    }

    #[test]
    fn the_artifact_name_follows_the_package() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(
            dir.path().join("Cargo.toml"),
            "[package]\nname = \"my-room\"\n",
        )
        .expect("write");
        assert_eq!(artifact_name(dir.path()), "my_room.wasm");
    }
}
