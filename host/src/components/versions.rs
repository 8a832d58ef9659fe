//! Versions: what a class has run, and which version runs now.
//!
//! A version is a component identified by its content (SHA-256); its id is the
//! first 12 hex digits of the hash. Each class keeps its versions in deploy
//! order with when and by whom each was deployed, and which one is active
//! ([`ClassRecord`], stored as JSON in redb with the component bytes beside
//! it, so that versions survive restarts and rollbacks never recompile).
//!
//! The config's `component` is a class's first version. After that, the last
//! deploy wins; a config file whose component's content has changed since
//! the last start counts as a deploy.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// One deployed version of a class.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VersionInfo {
    /// The first 12 hex digits of `hash`.
    pub id: String,
    /// SHA-256 of the component bytes, hex.
    pub hash: String,
    /// When it was deployed (ms since the Unix epoch).
    pub deployed_at_ms: u64,
    /// Who deployed it: `config` for the config file, otherwise what the
    /// deploying client said (the CLI sends the user and host name).
    pub deployed_by: String,
    /// The component's size in bytes.
    pub size: u64,
}

/// A gradual rollout: a share of the class's objects run `version`, the rest
/// the active one, until it is promoted (or rolled back).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Canary {
    /// The version under test.
    pub version: String,
    /// The share of objects (by a stable hash of their id) that run it, 1–99.
    pub percent: u8,
}

/// A class's versions, stored as one record.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ClassRecord {
    /// In the order they were first deployed, oldest first; each id once.
    pub versions: Vec<VersionInfo>,
    /// The version that serves (for every object, unless a canary runs).
    pub active: String,
    /// A canary rollout under way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<Canary>,
    /// The hash of the component the config file named at the last start:
    /// a different one at the next start is a deploy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_hash: Option<String>,
}

impl ClassRecord {
    /// The version with this id.
    pub fn version(&self, id: &str) -> Option<&VersionInfo> {
        self.versions.iter().find(|v| v.id == id)
    }

    /// Records `info` (moved to the end if the same content was deployed
    /// before) and makes it the active version.
    pub fn deploy(&mut self, info: VersionInfo) {
        self.versions.retain(|v| v.id != info.id);
        self.active = info.id.clone();
        self.versions.push(info);
        self.canary = None;
    }

    /// The version deployed before the active one, for a rollback without a
    /// named target.
    pub fn previous(&self) -> Option<&VersionInfo> {
        let at = self.versions.iter().position(|v| v.id == self.active)?;
        at.checked_sub(1).map(|i| &self.versions[i])
    }
}

/// The content hash of a component, hex.
pub fn content_hash(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut hex = String::with_capacity(64);
    for b in digest {
        hex.push_str(&format!("{b:02x}"));
    }
    hex
}

/// A version id: the first 12 hex digits of the content hash.
pub fn version_id(hash: &str) -> String {
    hash.chars().take(12).collect()
}

/// What the bytes are, before wasmtime is asked: a clear word for the
/// commonest mistakes. `None` when they look like a component.
pub fn not_a_component(bytes: &[u8]) -> Option<&'static str> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Some("not a WebAssembly binary (no `\\0asm` header)");
    }
    // Bytes 4..8: version and layer. Core modules are 1 0 0 0; components
    // are 0x0d 0 1 0 (layer 1).
    match bytes[6..8] {
        [0, 0] => Some(
            "a core WebAssembly module, not a component: build for wasm32-wasip2 (or run `wasm-tools component new`)",
        ),
        [1, 0] => None,
        _ => Some("an unknown WebAssembly layer"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn info(id: &str) -> VersionInfo {
        VersionInfo {
            id: id.into(),
            hash: format!("{id}..."),
            deployed_at_ms: 1,
            deployed_by: "test".into(),
            size: 1,
        }
    }

    #[test]
    fn the_last_deploy_wins_and_rollback_goes_to_the_one_before() {
        let mut r = ClassRecord::default();
        r.deploy(info("a"));
        assert_eq!(r.previous(), None);
        r.deploy(info("b"));
        r.deploy(info("c"));
        assert_eq!(r.active, "c");
        assert_eq!(r.previous().unwrap().id, "b");
        // Deploying old content again makes it the newest.
        r.deploy(info("a"));
        let ids: Vec<_> = r.versions.iter().map(|v| v.id.as_str()).collect();
        assert_eq!(ids, ["b", "c", "a"]);
        let json = serde_json::to_vec(&r).unwrap();
        assert_eq!(serde_json::from_slice::<ClassRecord>(&json).unwrap(), r);
    }

    #[test]
    fn bytes_that_are_not_components_are_named() {
        assert!(
            not_a_component(b"hello world")
                .unwrap()
                .contains("not a WebAssembly")
        );
        assert!(
            not_a_component(b"\0asm\x01\0\0\0")
                .unwrap()
                .contains("core WebAssembly module")
        );
        assert_eq!(not_a_component(b"\0asm\x0d\0\x01\0"), None);
        assert_eq!(content_hash(b"").len(), 64);
        assert_eq!(version_id(&content_hash(b"")), "e3b0c44298fc");
    }
}
