//! The guest author's loop, end to end with real parts: a guest crate in a
//! temporary folder outside the workspace, real `cargo build`s of it, the real
//! `roomhost` binary, real sockets on 127.0.0.1.
//!
//! - `roomhost dev` serves the crate; a WebSocket client stays connected
//!   while `src/lib.rs` is edited, and the same connection sees the new code
//!   after the swap, with the stored count carried over; a syntax error
//!   prints cargo's error and the old version serves on; a version whose
//!   `init` panics is refused, with the panic, and the old one serves on; a
//!   fix swaps again; SIGTERM stops it cleanly.
//! - `roomhost check` on a good config and on a broken one (every problem
//!   named, exit 1, never a panic).
//! - `roomhost test` runs the crate's ignored end-to-end test against a host
//!   (ROOMHOST_URL), passes extra arguments through, and exits with cargo
//!   test's status.
//!
//! The temporary crates build into `<target>/scaffold` (shared by runs, so
//! repeat runs reuse the SDK's build), with the workspace's `Cargo.lock` and
//! toolchain.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

/// A cold build of the temporary crate (the SDK, wit-bindgen) on a busy
/// 2-core machine can take minutes; a warm one takes about a second.
const FIRST_BUILD: Duration = Duration::from_secs(600);
/// A rebuild of the crate alone, and the swap.
const REBUILD: Duration = Duration::from_secs(180);

/// The workspace (for the SDK's path, its `Cargo.lock` and toolchain).
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Where the temporary crates build: beside the test's own build.
fn scaffold_target() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_roomhost"));
    // <target>/release/roomhost
    bin.parent().unwrap().parent().unwrap().join("scaffold")
}

/// The guest's code: answers each request and each frame with its version
/// and a count kept in storage.
fn guest_source(version: &str) -> String {
    format!(
        r#"use roomhost_sdk::{{Frame, Object, Reply, Request, Response, Result, Socket, accept, storage}};

const VERSION: &str = "{version}";

struct Guest;

impl Object for Guest {{
    fn init() -> Result<Self> {{
        Ok(Guest)
    }}

    fn on_request(&mut self, request: Request) -> Result<Reply> {{
        if request.is_websocket() {{
            return Ok(accept(&["client"]));
        }}
        Ok(Response::text(200, format!("{{VERSION}} {{}}", bump()?)).into())
    }}

    fn on_socket_message(&mut self, socket: Socket, _frame: Frame) -> Result<()> {{
        Ok(socket.send_text(format!("{{VERSION}} {{}}", bump()?))?)
    }}
}}

/// Counts events in storage: the count outlives instances and versions.
fn bump() -> Result<u64> {{
    let n = storage::get::<u64>("n")?.unwrap_or(0) + 1;
    storage::put("n", &n)?;
    Ok(n)
}}

roomhost_sdk::export_object!(Guest);
"#
    )
}

/// The crate's end-to-end tests: ignored unless a host is there.
const E2E: &str = r#"use std::io::{Read, Write};

fn get(path: &str) -> String {
    let url = std::env::var("ROOMHOST_URL").expect("ROOMHOST_URL is set by `roomhost test`");
    let addr = url.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    write!(s, "GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n").expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    out
}

#[test]
#[ignore = "needs a host: run `roomhost test`"]
fn counts_over_http() {
    assert!(get("/guest/e2e/x").ends_with("v1 1"));
    assert!(get("/guest/e2e/x").ends_with("v1 2"));
}

#[test]
#[ignore = "needs a host: run `roomhost test`"]
fn fails_on_purpose() {
    assert!(get("/guest/e2e/x").ends_with("v2"), "fails on purpose");
}
"#;

/// Writes a guest crate named `name` into `dir`: Cargo.toml (its own
/// workspace, the SDK by path), the workspace's Cargo.lock and toolchain,
/// src/lib.rs, roomhost.toml, and tests/e2e.rs.
fn scaffold(dir: &Path, name: &str) {
    let sdk = workspace().join("guests/sdk");
    std::fs::write(
        dir.join("Cargo.toml"),
        format!(
            "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2024\"\npublish = false\n\n\
             [lib]\ncrate-type = [\"cdylib\"]\n\n\
             [dependencies]\nroomhost-sdk = {{ path = {:?} }}\n\n\
             # Not part of any other workspace.\n[workspace]\n",
            sdk.display().to_string()
        ),
    )
    .unwrap();
    std::fs::copy(workspace().join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();
    std::fs::copy(
        workspace().join("rust-toolchain.toml"),
        dir.join("rust-toolchain.toml"),
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(dir.join("src/lib.rs"), guest_source("v1")).unwrap();
    std::fs::create_dir_all(dir.join("tests")).unwrap();
    std::fs::write(dir.join("tests/e2e.rs"), E2E).unwrap();
    std::fs::write(
        dir.join("roomhost.toml"),
        format!(
            "[classes.guest]\ncomponent = \"target/wasm32-wasip2/release/{}.wasm\"\n\n\
             [[routes]]\npath = \"/guest/{{name}}/*\"\nobject = \"guest\"\n",
            name.replace('-', "_")
        ),
    )
    .unwrap();
}

/// A running `roomhost` command, everything it prints (stdout and stderr)
/// collected.
struct Proc {
    child: Child,
    output: Arc<Mutex<String>>,
}

impl Proc {
    /// Runs `roomhost ARGS DIR REST`.
    fn spawn(args: &[&str], dir: &Path, rest: &[&str]) -> Proc {
        let mut child = Command::new(env!("CARGO_BIN_EXE_roomhost"))
            .args(args)
            .arg(dir)
            .args(rest)
            .env("CARGO_TARGET_DIR", scaffold_target())
            .env("NO_COLOR", "1")
            .env("CARGO_TERM_COLOR", "never")
            .env_remove("RUST_LOG")
            .env_remove("ROOMHOST_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start roomhost");
        let output = Arc::new(Mutex::new(String::new()));
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        for pipe in [
            Box::new(stdout) as Box<dyn std::io::Read + Send>,
            Box::new(stderr),
        ] {
            let out = output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    out.lock().unwrap().push_str(&format!("{line}\n"));
                }
            });
        }
        Proc { child, output }
    }

    fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// Waits until the output satisfies `done`; panics with the output if it
    /// does not within `within` or the process exits first.
    fn wait_for(&mut self, within: Duration, what: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + within;
        loop {
            let out = self.output();
            if done(&out) {
                return out;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "roomhost exited ({status}) before {what}:\n{}",
                    self.output()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no {what} within {within:?}:\n{out}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM and asserts a clean exit.
    fn terminate(&mut self) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success());
        let status = self.wait_exit(Duration::from_secs(30));
        assert!(status.success(), "{status}:\n{}", self.output());
    }

    /// Waits for the process to exit.
    fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the readers catch the last lines.
                std::thread::sleep(Duration::from_millis(100));
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "roomhost did not exit within {within:?}:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How many times `needle` occurs in `out`.
fn count(out: &str, needle: &str) -> usize {
    out.matches(needle).count()
}

/// Sends a frame and returns the next text frame.
async fn ask(ws: &mut common::Client, text: &str) -> String {
    ws.ws.send(Message::text(text)).await.unwrap();
    recv(ws).await
}

/// Replaces `src/lib.rs` (a save), and returns when it was saved.
fn save(dir: &Path, source: &str) -> Instant {
    std::fs::write(dir.join("src/lib.rs"), source).unwrap();
    Instant::now()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_swaps_on_save_keeping_connections_and_state() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    scaffold(dir, "dev-loop-guest");
    let (mut dev, addr) = start_dev(dir, FIRST_BUILD);
    let out = dev.output();
    // It prints the route's URL, and keeps its database in the crate folder,
    // out of git.
    assert!(
        out.contains(&format!("http://{addr}/guest/{{name}}/*")),
        "{out}"
    );
    assert!(dir.join(".roomhost/data.redb").exists());
    let ignore = std::fs::read_to_string(dir.join(".roomhost/.gitignore")).unwrap();
    assert!(ignore.lines().any(|l| l == "*"), "{ignore}");

    let http = |path: &'static str| async move {
        let (status, body) = common::http_request(addr, "GET", path, b"").await;
        assert_eq!(status, 200, "{body}");
        body
    };
    assert_eq!(http("/guest/a/x").await, "v1 1");
    let mut ws = common::connect_ws(addr, std::net::Ipv4Addr::LOCALHOST, "/guest/a/ws")
        .await
        .unwrap();
    assert_eq!(ask(&mut ws, "hi").await, "v1 2");

    // 1. An edit: rebuilt and swapped; the open connection runs the new code
    // on the stored count.
    let saved = save(dir, &guest_source("v2"));
    dev.wait_for(REBUILD, "the first swap", |o| {
        count(o, "swapped guest to version") == 1
    });
    let swap = saved.elapsed();
    assert_eq!(ask(&mut ws, "hi").await, "v2 3");

    // 2. A syntax error: cargo's error is printed, the old version serves on.
    let broken = guest_source("v3").replace(
        "const VERSION: &str = \"v3\";",
        "const VERSION: &str = \"v3\"",
    );
    save(dir, &broken);
    let out = dev.wait_for(REBUILD, "the build failure", |o| {
        count(o, "keeps serving") == 1
    });
    assert!(out.contains("error: expected `;`"), "{out}");
    assert!(out.contains("src/lib.rs:3:"), "{out}");
    assert!(out.contains("build of") && out.contains("failed"), "{out}");
    assert_eq!(ask(&mut ws, "hi").await, "v2 4");

    // 3. A version whose init panics builds but is refused, with the panic;
    // the old version serves on.
    let panics = guest_source("v3").replace("Ok(Guest)", "panic!(\"init fails on purpose\")");
    save(dir, &panics);
    let out = dev.wait_for(REBUILD, "the refusal", |o| count(o, "keeps serving") == 2);
    let refusal = out
        .lines()
        .find(|l| l.contains("refused:"))
        .unwrap_or_else(|| panic!("no refusal line:\n{out}"));
    assert!(refusal.contains("traps when it starts"), "{refusal}");
    assert!(refusal.contains("init fails on purpose"), "{refusal}");
    assert_eq!(ask(&mut ws, "hi").await, "v2 5");

    // 4. The fix swaps again, on the same connection.
    save(dir, &guest_source("v3"));
    let out = dev.wait_for(REBUILD, "the second swap", |o| {
        count(o, "swapped guest to version") == 2
    });
    assert_eq!(ask(&mut ws, "hi").await, "v3 6");
    assert_eq!(http("/guest/a/x").await, "v3 7");
    assert!(!out.contains("panicked at host"), "{out}");

    // 5. SIGTERM: a clean stop; the client is told the host is going away.
    dev.terminate();
    match tokio::time::timeout(Duration::from_secs(10), ws.ws.next()).await {
        Ok(Some(Ok(Message::Close(Some(frame))))) => assert_eq!(u16::from(frame.code), 1001),
        other => panic!("expected a close frame, got {other:?}"),
    }

    // 6. A restart serves what was built, on the stored data.
    let (mut dev, addr) = start_dev(dir, REBUILD);
    let (status, body) = common::http_request(addr, "GET", "/guest/a/x", b"").await;
    assert_eq!((status, body.as_str()), (200, "v3 8"), "{}", dev.output());
    dev.terminate();
    eprintln!("save to swap: {swap:?}");
}

/// Starts `roomhost dev DIR` on an ephemeral port; returns it once it serves,
/// and where.
fn start_dev(dir: &Path, within: Duration) -> (Proc, std::net::SocketAddr) {
    let mut dev = Proc::spawn(&["dev", "--listen", "127.0.0.1:0"], dir, &[]);
    let out = dev.wait_for(within, "serving", |o| o.contains("serving on http://"));
    let addr = out
        .split("serving on http://")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in:\n{out}"));
    (dev, addr)
}

#[test]
fn check_names_every_problem_of_a_config() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let wasm = |name: &str| roomhost::guests::wasm(name).display().to_string();
    let check = |config: &Path| {
        let out = Command::new(env!("CARGO_BIN_EXE_roomhost"))
            .args(["check", "--config"])
            .arg(config)
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        let text = common::output_text(&out);
        // The host never panics (the guest's own panic is reported).
        assert!(!text.contains("panicked at host/"), "{text}");
        assert!(!text.contains("RUST_BACKTRACE"), "{text}");
        (out.status.success(), text)
    };

    // Good: one line per class, with its version and size.
    let good = dir.join("good.toml");
    std::fs::write(
        &good,
        format!(
            "[classes.probe]\ncomponent = {:?}\n\n[[routes]]\npath = \"/probe/{{name}}/*\"\nobject = \"probe\"\n",
            wasm("probe")
        ),
    )
    .unwrap();
    let (ok, out) = check(&good);
    assert!(ok, "{out}");
    let line = out
        .lines()
        .find(|l| l.contains("class probe"))
        .unwrap_or_else(|| panic!("no line for probe:\n{out}"));
    assert!(line.starts_with("ok"), "{line}");
    assert!(line.contains("version ") && line.contains("KB"), "{line}");
    assert!(out.lines().any(|l| l.contains("class chat-room")), "{out}");

    // Broken: every problem, each with its cause, and exit 1.
    let broken = dir.join("broken.toml");
    std::fs::write(
        &broken,
        format!(
            "[classes.missing]\ncomponent = \"nowhere/missing.wasm\"\n\n\
             [classes.starts-badly]\ncomponent = {:?}\n\n\
             [classes.command]\ncomponent = {:?}\n\n\
             [[routes]]\npath = \"/x/{{name}}/*\"\nobject = \"nobody\"\n",
            wasm("swap-bad"),
            wasm("command")
        ),
    )
    .unwrap();
    let (ok, out) = check(&broken);
    assert!(!ok, "{out}");
    let fail = |needle: &str| {
        out.lines()
            .find(|l| l.starts_with("FAIL") && l.contains(needle))
            .unwrap_or_else(|| panic!("no FAIL line with {needle:?}:\n{out}"))
            .to_string()
    };
    assert!(
        fail("class missing").contains("cannot read component"),
        "{out}"
    );
    let starts = fail("class starts-badly");
    assert!(starts.contains("traps when it starts"), "{starts}");
    assert!(starts.contains("panicked at"), "{starts}");
    assert!(
        fail("class command").contains("roomhost:object/handler"),
        "{out}"
    );
    assert!(fail("route /x/{name}/*").contains("nobody"), "{out}");
    assert!(out.contains("4 problems"), "{out}");

    // Unreadable and unparseable configs: the file and the reason.
    let (ok, out) = check(&dir.join("absent.toml"));
    assert!(!ok);
    assert!(
        out.contains("absent.toml") && out.contains("No such file"),
        "{out}"
    );
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "listen = 5\n").unwrap();
    let (ok, out) = check(&bad);
    assert!(!ok);
    assert!(
        out.contains("invalid config file") && out.contains("bad.toml"),
        "{out}"
    );
    assert!(out.contains("socket address"), "{out}");
}

#[test]
fn test_runs_the_crates_tests_against_a_host() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    scaffold(dir, "test-cmd-guest");
    // Extra arguments reach the test binaries: only this test runs.
    let mut run = Proc::spawn(&["test"], dir, &["--", "counts_over_http"]);
    let status = run.wait_exit(FIRST_BUILD);
    let out = run.output();
    assert!(status.success(), "{status}:\n{out}");
    assert!(out.contains("test counts_over_http ... ok"), "{out}");
    assert!(!out.contains("fails_on_purpose"), "{out}");
    // The temporary database is gone.
    let data = out
        .split("(data: ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .unwrap_or_else(|| panic!("no data path in:\n{out}"));
    assert!(!Path::new(data).exists(), "{data} is still there");

    // A failing test fails the command, with cargo test's status.
    let mut run = Proc::spawn(&["test"], dir, &["--", "fails_on_purpose"]);
    let status = run.wait_exit(REBUILD);
    let out = run.output();
    assert_eq!(status.code(), Some(101), "{out}");
    assert!(out.contains("fails on purpose"), "{out}");
}

/// The loop a new author follows, as the issue asks: `roomhost new` outside
/// the workspace, a build and the native tests of what it wrote, `roomhost
/// test`, then `roomhost dev` with an edit while a client is connected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_crate_builds_tests_and_swaps_under_a_connected_client() {
    let tmp = tempfile::tempdir().unwrap();
    let made = Command::new(env!("CARGO_BIN_EXE_roomhost"))
        .args(["new", "my-room"])
        .current_dir(tmp.path())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&made.stdout).into_owned();
    assert!(
        made.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&made.stderr)
    );
    assert!(said.contains("roomhost dev"), "{said}");
    let dir = tmp.path().join("my-room");
    // Nothing in it points into this checkout.
    for file in ["Cargo.toml", "roomhost.toml", "roomhost-sdk/Cargo.toml"] {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        assert!(
            !text.contains(workspace().to_str().unwrap()),
            "{file}:\n{text}"
        );
        assert!(!text.contains("../"), "{file}:\n{text}");
    }
    // The machine's one toolchain, as the workspace pins it.
    std::fs::copy(
        workspace().join("rust-toolchain.toml"),
        dir.join("rust-toolchain.toml"),
    )
    .unwrap();

    // Its unit tests, on the SDK's test host.
    let unit = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["test", "--release"])
        .current_dir(&dir)
        .env("CARGO_TARGET_DIR", scaffold_target())
        .output()
        .unwrap();
    let out = common::output_text(&unit);
    assert!(unit.status.success(), "{out}");
    assert!(out.contains("test result: ok. 4 passed"), "{out}");
    assert!(out.contains("1 ignored"), "{out}");

    // Its end-to-end test, against a real host.
    let mut run = Proc::spawn(&["test"], &dir, &[]);
    let status = run.wait_exit(FIRST_BUILD);
    let out = run.output();
    assert!(status.success(), "{status}:\n{out}");
    assert!(
        out.contains("test a_message_goes_round_a_real_host ... ok"),
        "{out}"
    );

    // `roomhost dev`, a client, an edit: the same connection runs the new
    // code, and the stored messages stay.
    let (mut dev, addr) = start_dev(&dir, FIRST_BUILD);
    let mut ws = common::connect_ws(
        addr,
        std::net::Ipv4Addr::LOCALHOST,
        "/my-room/lobby/ws?user=ada",
    )
    .await
    .unwrap();
    let welcome: serde_json::Value = serde_json::from_str(&recv(&mut ws).await).unwrap();
    assert_eq!(welcome["welcome"], "ada");
    let said: serde_json::Value = serde_json::from_str(&ask(&mut ws, "first").await).unwrap();
    assert_eq!(said["text"], "first");

    let lib = std::fs::read_to_string(dir.join("src/lib.rs")).unwrap();
    let edited = lib.replacen(
        "            text,\n",
        "            text: text.to_uppercase(),\n",
        1,
    );
    assert_ne!(lib, edited, "the template changed: update this edit");
    save(&dir, &edited);
    dev.wait_for(REBUILD, "the swap", |o| {
        count(o, "swapped my-room to version") == 1
    });
    let said: serde_json::Value = serde_json::from_str(&ask(&mut ws, "second").await).unwrap();
    assert_eq!(said["text"], "SECOND");
    let (status, body) = common::http_request(addr, "GET", "/my-room/lobby/history", b"").await;
    assert_eq!(status, 200, "{body}");
    let history: serde_json::Value = serde_json::from_str(&body).unwrap();
    let texts: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["text"].as_str())
        .collect();
    assert_eq!(texts, ["first", "SECOND"]);

    dev.terminate();
}

/// The next text frame.
async fn recv(ws: &mut common::Client) -> String {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return t.to_string(),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// Every template passes its own unit and end-to-end tests (`roomhost test`
/// runs both) where `roomhost new` writes it.
#[test]
fn the_counter_template_passes_its_own_tests() {
    let tmp = tempfile::tempdir().unwrap();
    let made = Command::new(env!("CARGO_BIN_EXE_roomhost"))
        .args(["new", "hits", "--template", "counter"])
        .current_dir(tmp.path())
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", common::output_text(&made));
    let dir = tmp.path().join("hits");
    std::fs::copy(
        workspace().join("rust-toolchain.toml"),
        dir.join("rust-toolchain.toml"),
    )
    .unwrap();
    let mut run = Proc::spawn(&["test"], &dir, &[]);
    let status = run.wait_exit(FIRST_BUILD);
    let out = run.output();
    assert!(status.success(), "{status}:\n{out}");
    assert!(out.contains("test result: ok. 3 passed"), "{out}");
    assert!(
        out.contains("test a_watcher_hears_an_increment_made_over_http ... ok"),
        "{out}"
    );
}
