//! Builds the built-in guests (and the test guests) for `wasm32-wasip2` into
//! their own target directory, and embeds the built-in ones in the binary.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Guest crates built here: the built-in classes (embedded), the test guest,
/// and the examples (loaded from their files by the tests).
const GUESTS: &[&str] = &[
    "chat-room",
    "rate-limiter",
    "probe",
    "counter",
    "session-manager",
];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets this"));
    let root = manifest_dir
        .parent()
        .expect("host/ is inside the workspace")
        .to_path_buf();
    for dir in ["wit", "guests", "examples"] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    let target_dir = root.join("target").join("guests");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args([
            "build",
            "--profile",
            "guest",
            "--target",
            "wasm32-wasip2",
            "--target-dir",
        ])
        .arg(&target_dir);
    for g in GUESTS {
        cmd.args(["-p", g]);
    }
    // Do not leak the host build's flags and settings into the guest build.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        if (key.starts_with("CARGO_") && key != "CARGO_HOME" && key != "CARGO_NET_OFFLINE")
            || key == "RUSTFLAGS"
            || key == "RUSTC_WRAPPER"
            || key == "RUSTC_WORKSPACE_WRAPPER"
        {
            cmd.env_remove(&key);
        }
    }
    let status = cmd.status().expect("cannot run cargo to build the guests");
    if !status.success() {
        panic!(
            "building the guests failed; run `cargo build --profile guest --target wasm32-wasip2 -p chat-room` to see why (is the wasm32-wasip2 target installed? rust-toolchain.toml names it)"
        );
    }
    let out_dir = target_dir.join("wasm32-wasip2").join("guest");
    let file = |name: &str| out_dir.join(format!("{}.wasm", name.replace('-', "_")));
    for g in GUESTS {
        assert!(
            file(g).exists(),
            "guest {g} was not built at {}",
            file(g).display()
        );
    }
    let embed = |name: &str| format!("include_bytes!({:?})", file(name).display().to_string());
    let code = format!(
        "/// The `chat-room` component.\npub const CHAT_ROOM: &[u8] = {};\n/// The `rate-limiter` component.\npub const RATE_LIMITER: &[u8] = {};\n",
        embed("chat-room"),
        embed("rate-limiter")
    );
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets this")).join("guests.rs");
    write_if_changed(&out, &code);
    println!("cargo:rustc-env=ROOMHOST_GUEST_DIR={}", out_dir.display());
}

fn write_if_changed(path: &Path, contents: &str) {
    if std::fs::read_to_string(path).ok().as_deref() != Some(contents) {
        std::fs::write(path, contents).expect("cannot write OUT_DIR/guests.rs");
    }
}
