//! The JavaScript chat room (`guests-js/chat-room`) and the test object of
//! its `durable.js` layer as classes of a test host. Their components are
//! built by their own tools (npm, componentize-js), not by cargo: the first
//! test that needs one runs `npm ci` (when `node_modules` is missing or older
//! than the lock file) and `build.sh` (when the `.wasm` is missing or older
//! than a source). The hosts of these tests share one
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

/// The built chat room, (re)built first if its sources are newer.
pub fn chat_room_wasm() -> &'static Path {
    static WASM: OnceLock<PathBuf> = OnceLock::new();
    WASM.get_or_init(|| build("chat-room.wasm", "src/chat-room.js", None))
}

/// The test object of `durable.js` (`test/layer-probe.js`), likewise.
pub fn layer_probe_wasm() -> &'static Path {
    static WASM: OnceLock<PathBuf> = OnceLock::new();
    WASM.get_or_init(|| build("layer-probe.wasm", "test/layer-probe.js", Some("test")))
}

/// Adds class `layer-probe` (var `GREETING = "hi"`), routed at `/lp/{name}/*`.
pub fn add_layer_probe(config: &mut Config) {
    let mut class = ClassConfig::new(layer_probe_wasm().display().to_string());
    class.vars.insert("GREETING".into(), "hi".into());
    config.classes.insert("layer-probe".into(), class);
    config.routes.push(roomhost::config::RouteConfig::object(
        "/lp/{name}/*",
        "layer-probe",
    ));
    config.cache_dir = Some(cache_dir());
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

/// Runs `npm ci` in the guest's folder, once, if `node_modules` is missing
/// or older than the lock file.
fn install_tools() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let dir = guest_dir();
        // npm writes node_modules/.package-lock.json when it installs.
        let installed = modified(&dir.join("node_modules/.package-lock.json"));
        if installed.is_none() || installed < modified(&dir.join("package-lock.json")) {
            run(
                Command::new("npm")
                    .args(["ci", "--no-audit", "--no-fund"])
                    .current_dir(&dir),
                "installing the JS guest's tools",
            );
        }
    });
}

/// Builds `source` into `out` (in the guest's folder) unless `out` is newer
/// than every source (the layer, the world, the tools' versions, `extra`).
fn build(out: &str, source: &str, extra: Option<&str>) -> PathBuf {
    install_tools();
    let dir = guest_dir();
    let wasm = dir.join(out);
    let sources = [
        "src",
        "wit",
        "package.json",
        "package-lock.json",
        "build.sh",
    ]
    .into_iter()
    .chain(extra)
    .filter_map(|s| newest(&dir.join(s)))
    .max();
    let built = modified(&wasm);
    if built.is_none() || built < sources {
        eprintln!("building {} (componentize-js, about 10 s)", wasm.display());
        run(
            Command::new("sh")
                .args(["build.sh", out, source])
                .current_dir(&dir),
            "building a JS guest",
        );
    }
    wasm.canonicalize().expect("the built component")
}
