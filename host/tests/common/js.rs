//! The JavaScript chat room (`guests-js/chat-room`) as a class of a test
//! host. Its component is built by its own tools (npm, componentize-js), not
//! by cargo: the first test that needs it runs `npm ci` (when `node_modules`
//! is missing or older than the lock file) and `build.sh` (when the `.wasm`
//! is missing or older than a source). The hosts of these tests share one
//! compile cache under the target directory, and the first host of a test
//! process starts alone, so that the 12 MB component is compiled once.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::SystemTime;

use roomhost::Config;
use roomhost::config::ClassConfig;

use super::TestHost;

/// The JS guest's folder.
pub fn guest_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../guests-js/chat-room")
}

/// The built component, (re)built first if its sources are newer.
pub fn chat_room_wasm() -> &'static Path {
    static WASM: OnceLock<PathBuf> = OnceLock::new();
    WASM.get_or_init(build)
}

/// Makes `config`'s class `chat-room` the JS room, with the shared cache.
pub fn use_js_chat_room(config: &mut Config) {
    let wasm = chat_room_wasm().display().to_string();
    config
        .classes
        .insert("chat-room".into(), ClassConfig::new(wasm));
    config.cache_dir = Some(cache_dir());
}

/// `<target dir>/js-cache`: the test binary is `<target dir>/<profile>/deps/NAME`.
pub fn cache_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let target = exe
        .ancestors()
        .nth(3)
        .expect("the test binary is in <target>/<profile>/deps");
    target.join("js-cache")
}

/// Starts a host; until one has started in this process, one at a time (the
/// first compiles the component into the shared cache, the rest load it).
pub async fn start_host(config: Config) -> TestHost {
    static WARM: tokio::sync::Mutex<bool> = tokio::sync::Mutex::const_new(false);
    let mut warm = WARM.lock().await;
    if *warm {
        drop(warm);
        return TestHost::start(config).await;
    }
    let host = TestHost::start(config).await;
    *warm = true;
    host
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The newest modification time of the files under `path` (following links).
fn newest(path: &Path) -> Option<SystemTime> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_dir() {
        return meta.modified().ok();
    }
    std::fs::read_dir(path)
        .ok()?
        .filter_map(|e| newest(&e.ok()?.path()))
        .max()
}

fn run(cmd: &mut Command, what: &str) {
    let status = cmd.status().unwrap_or_else(|e| {
        panic!("{what}: cannot run {cmd:?} ({e}); the JS guest needs Node.js 20 and npm")
    });
    assert!(status.success(), "{what}: {cmd:?} failed ({status})");
}

fn build() -> PathBuf {
    let dir = guest_dir();
    let wasm = dir.join("chat-room.wasm");
    let lock = dir.join("package-lock.json");
    // npm writes node_modules/.package-lock.json when it installs.
    let installed = modified(&dir.join("node_modules/.package-lock.json"));
    if installed.is_none() || installed < modified(&lock) {
        run(
            Command::new("npm")
                .arg("ci")
                .arg("--no-audit")
                .arg("--no-fund")
                .current_dir(&dir),
            "installing the JS guest's tools",
        );
    }
    let sources = [
        "src",
        "wit",
        "package.json",
        "package-lock.json",
        "build.sh",
    ]
    .iter()
    .filter_map(|s| newest(&dir.join(s)))
    .max();
    let built = modified(&wasm);
    if built.is_none() || built < sources {
        eprintln!("building {} (componentize-js, about 10 s)", wasm.display());
        run(
            Command::new("sh").arg("build.sh").current_dir(&dir),
            "building the JS chat room",
        );
    }
    wasm.canonicalize().expect("the built component")
}
