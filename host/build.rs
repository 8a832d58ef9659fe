//! Builds the built-in guests (and the test guests) for `wasm32-wasip2` into
//! their own target directory, and embeds the built-in ones in the binary.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Guest crates built here, and whether each is embedded in the binary as a
/// built-in class. The others (the test guest, the examples) are loaded from
/// their files by the tests. The one list: the build script generates the
/// host's table of guests (`roomhost::guests`) from it.
const GUESTS: &[(&str, bool)] = &[
    ("chat-room", true),
    ("rate-limiter", true),
    ("probe", false),
    ("swap-v1", false),
    ("swap-v2", false),
    ("swap-bad", false),
    ("swap-crash", false),
    ("command", false),
    ("counter", false),
    ("session-manager", false),
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
    ensure_wasm_target();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args([
            "build",
            "--profile",
            "guest",
            "--target",
            WASM_TARGET,
            "--target-dir",
        ])
        .arg(&target_dir);
    for (g, _) in GUESTS {
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
        fail(&format!(
            "building the guests failed (the errors are above); to see them alone, run: cargo build --profile guest --target {WASM_TARGET} -p chat-room"
        ));
    }
    let out_dir = target_dir.join(WASM_TARGET).join("guest");
    // Libraries (room objects) are named with `_`; binaries (the `command`
    // test guest) keep their name.
    let file = |name: &str| {
        let lib = out_dir.join(format!("{}.wasm", name.replace('-', "_")));
        if lib.exists() {
            lib
        } else {
            out_dir.join(format!("{name}.wasm"))
        }
    };
    let mut table = String::from(
        "/// Every guest the build script compiled, in the order `host/build.rs` lists them.\npub const GUESTS: &[Guest] = &[\n",
    );
    for (name, embedded) in GUESTS {
        let path = file(name);
        if !path.exists() {
            fail(&format!("guest {name} was not built at {}", path.display()));
        }
        let path = path.display().to_string();
        let bytes = if *embedded {
            format!("Some(include_bytes!({path:?}))")
        } else {
            "None".to_string()
        };
        table.push_str(&format!(
            "    Guest {{ name: {name:?}, file: {path:?}, embedded: {bytes} }},\n"
        ));
    }
    table.push_str("];\n");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets this")).join("guests.rs");
    write_if_changed(&out, &table);
    println!("cargo:rustc-env=ROOMHOST_GUEST_DIR={}", out_dir.display());
}

/// The target the guests are built for.
const WASM_TARGET: &str = "wasm32-wasip2";

/// Makes sure the active toolchain can build for [`WASM_TARGET`].
///
/// `rust-toolchain.toml` names the target, but rustup installs the targets
/// it lists only when it installs the toolchain itself. A machine that
/// already has the pinned toolchain (and `RUSTUP_AUTO_INSTALL=0`) would fail
/// with "can't find crate for `std`". So: if the target's standard library is
/// not in the sysroot, install it with rustup for the toolchain this build
/// runs on, once; if that cannot be done, stop with the command to run.
fn ensure_wasm_target() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = match Command::new(&rustc).args(["--print", "sysroot"]).output() {
        Ok(out) if out.status.success() => {
            PathBuf::from(String::from_utf8_lossy(&out.stdout).trim().to_string())
        }
        _ => fail(&format!("cannot run `{rustc} --print sysroot`")),
    };
    let installed = |sysroot: &Path| {
        sysroot
            .join("lib/rustlib")
            .join(WASM_TARGET)
            .join("lib")
            .is_dir()
    };
    if installed(&sysroot) {
        return;
    }
    // rustup's proxies tell the processes they start which toolchain is active.
    let toolchain = std::env::var("RUSTUP_TOOLCHAIN").ok();
    let by_hand = match &toolchain {
        Some(t) => format!("rustup target add {WASM_TARGET} --toolchain {t}"),
        None => format!("rustup target add {WASM_TARGET}"),
    };
    let mut cmd = Command::new("rustup");
    cmd.args(["target", "add", WASM_TARGET]);
    if let Some(t) = &toolchain {
        cmd.args(["--toolchain", t]);
    }
    match cmd.status() {
        // Cargo shows this once, and again (from its cache) on later builds
        // until the guests are rebuilt.
        Ok(status) if status.success() && installed(&sysroot) => println!(
            "cargo:warning=installed the {WASM_TARGET} target for the built-in guests (`{by_hand}`)"
        ),
        Ok(status) if status.success() => fail(&format!(
            "rustup added {WASM_TARGET}, but this toolchain ({}) still lacks it; is rustc from rustup? Install the target for this rustc, or run: {by_hand}",
            sysroot.display()
        )),
        Ok(_) => fail(&format!(
            "could not install the {WASM_TARGET} target (rustup's error is above); run this, then build again: {by_hand}"
        )),
        Err(e) => fail(&format!(
            "the {WASM_TARGET} target is missing and rustup cannot be run ({e}); install the target for this toolchain ({}), e.g.: {by_hand}",
            sysroot.display()
        )),
    }
}

/// Stops the build with one clear message.
fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    println!("cargo:warning={message}");
    std::process::exit(1);
}

fn write_if_changed(path: &Path, contents: &str) {
    if std::fs::read_to_string(path).ok().as_deref() != Some(contents) {
        std::fs::write(path, contents).expect("cannot write OUT_DIR/guests.rs");
    }
}
