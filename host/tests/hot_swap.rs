//! Hot swap against the real binary: deploys, rollbacks, canaries and
//! refused deploys through the admin API and the `roomhost` CLI, while
//! clients chat, some of their rooms hibernated. No connection may close, no
//! message may be lost or run twice, and every room must switch.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use roomhost::client::{AdminClient, ClientError};
use roomhost::ids::ObjectId;

const TOKEN: &str = "test-admin-token";

fn wasm(name: &str) -> PathBuf {
    roomhost::guests::wasm(name)
}

/// A config serving the `swap` class (first version: `swap-v1`) at
/// `/swap/{name}/*`; objects hibernate after 300 ms without events.
fn write_config(dir: &Path, token: Option<&str>) -> PathBuf {
    let token = token
        .map(|t| format!("admin_token = \"{t}\"\n"))
        .unwrap_or_default();
    let text = format!(
        "{token}idle_timeout_ms = 300\n\
         [classes.swap]\ncomponent = {:?}\n\
         [[routes]]\npath = \"/swap/{{name}}/*\"\nobject = \"swap\"\n\
         [[routes]]\npath = \"/metrics\"\npage = \"metrics\"\n",
        wasm("swap-v1").display().to_string()
    );
    let file = dir.join("roomhost.toml");
    std::fs::write(&file, text).unwrap();
    file
}

fn spawn_host(dir: &Path, config: &Path) -> HostProcess {
    HostProcess::serve(&dir.join("roomhost.redb"), config)
}

/// Runs the `roomhost` CLI against the host at `addr`; returns (success,
/// stdout + stderr).
fn run_cli(addr: std::net::SocketAddr, args: &[String]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_roomhost"))
        .args(args)
        .args(["--url", &format!("http://{addr}"), "--token", TOKEN])
        .output()
        .unwrap();
    let text = common::output_text(&out);
    (out.status.success(), text)
}

fn cli(host: &HostProcess, args: &[&str]) -> (bool, String) {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    run_cli(host.addr, &args)
}

/// Runs the CLI on a blocking thread, so that chatting tasks keep going.
async fn cli_async(host: &HostProcess, args: &[&str]) -> (bool, String) {
    let addr = host.addr;
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || run_cli(addr, &args))
        .await
        .unwrap()
}

/// One client in one room: sends numbered messages and checks every reply:
/// the room's counter goes up by exactly one per message (none lost, none
/// run twice), whatever version answers.
struct Chatter {
    client: Client,
    sent: u64,
}

impl Chatter {
    async fn join(host: &HostProcess, room: &str) -> Chatter {
        let client = connect_ws(host.addr, ip(1), &format!("/swap/{room}/ws"))
            .await
            .unwrap();
        Chatter { client, sent: 0 }
    }

    /// Sends one message; returns the version that answered.
    async fn say(&mut self) -> String {
        self.sent += 1;
        let text = format!("m{}", self.sent);
        self.client.send_text(&text).await;
        let reply = self.client.recv_text().await;
        let mut parts = reply.splitn(3, ':');
        let (version, n, echoed) = (
            parts.next().unwrap().to_string(),
            parts.next().unwrap().parse::<u64>().unwrap(),
            parts.next().unwrap(),
        );
        assert_eq!(n, self.sent, "the room's count: {reply}");
        assert_eq!(echoed, text);
        version
    }
}

/// The `swap` class in a `GET /admin/classes` answer.
fn swap_class(classes: serde_json::Value) -> serde_json::Value {
    classes["classes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["class"] == "swap")
        .unwrap()
        .clone()
}

async fn metric(host: &HostProcess, name: &str) -> u64 {
    let (status, body) = http_request(host.addr, "GET", "/metrics", b"").await;
    assert_eq!(status, 200);
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("roomhost_{name} ")))
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_and_rollback_under_traffic_close_nothing_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), Some(TOKEN));
    let host = spawn_host(dir.path(), &config);

    // Two rooms chat without pause; two stay quiet and hibernate.
    let mut busy = Vec::new();
    for room in ["busy-a", "busy-b"] {
        busy.push(Chatter::join(&host, room).await);
    }
    let mut quiet = Vec::new();
    for room in ["quiet-a", "quiet-b"] {
        let mut c = Chatter::join(&host, room).await;
        assert_eq!(c.say().await, "swap-v1");
        quiet.push(c);
    }
    assert!(metric(&host, "evictions_total").await == 0);

    // The busy rooms keep talking through the deploy and the rollback.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut talkers = Vec::new();
    for mut c in busy {
        let stop = stop_rx.clone();
        talkers.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            while !*stop.borrow() {
                let v = c.say().await;
                if seen.last() != Some(&v) {
                    seen.push(v);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (c, seen)
        }));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        metric(&host, "evictions_total").await >= 2,
        "the quiet rooms hibernate"
    );

    let (ok, out) = cli_async(
        &host,
        &["deploy", "swap", wasm("swap-v2").to_str().unwrap()],
    )
    .await;
    assert!(ok, "{out}");
    assert!(out.contains("serves now"), "{out}");
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The hibernated rooms wake on the new version.
    for c in &mut quiet {
        assert_eq!(c.say().await, "swap-v2");
    }
    let (ok, classes) = cli_async(&host, &["classes"]).await;
    assert!(ok, "{classes}");
    assert!(classes.contains("swap"), "{classes}");

    let (ok, out) = cli_async(&host, &["rollback", "swap"]).await;
    assert!(ok, "{out}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    for c in &mut quiet {
        assert_eq!(c.say().await, "swap-v1");
    }
    stop_tx.send(true).unwrap();
    let mut still_open = Vec::new();
    for t in talkers {
        let (mut c, seen) = t.await.unwrap();
        assert_eq!(
            seen,
            ["swap-v1", "swap-v2", "swap-v1"],
            "every busy room switched, and back"
        );
        // Still connected: the next message is answered.
        assert_eq!(c.say().await, "swap-v1");
        still_open.push(c);
    }
    let stats = (
        metric(&host, "deploys_total").await,
        metric(&host, "rollbacks_total").await,
        metric(&host, "sockets_open").await,
    );
    assert_eq!(
        stats,
        (1, 1, 4),
        "one deploy, one rollback, every socket open"
    );
    assert!(metric(&host, "swaps_total").await >= 2);
    assert!(!host.output().contains("closing"), "{}", host.output());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_deploys_are_refused_with_their_cause_while_the_old_version_serves() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), Some(TOKEN));
    let host = spawn_host(dir.path(), &config);
    let admin = AdminClient::new(&format!("http://{}", host.addr), TOKEN.into()).unwrap();
    let mut chatter = Chatter::join(&host, "room").await;
    assert_eq!(chatter.say().await, "swap-v1");

    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"this is not wasm at all").unwrap();
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let cases = [
        (junk, "not a WebAssembly binary"),
        (core, "core WebAssembly module"),
        (wasm("command"), "invalid component"),
        (wasm("swap-bad"), "traps when it starts"),
    ];
    for (file, cause) in &cases {
        match admin.deploy("swap", file, None, "test").await {
            Err(ClientError::Refused { status, message }) => {
                assert_eq!(status.as_u16(), 422, "{message}");
                assert!(message.contains(cause), "{file:?}: {message}");
            }
            other => panic!("{file:?}: expected a refusal, got {other:?}"),
        }
        // Traffic goes on, on the old version.
        assert_eq!(chatter.say().await, "swap-v1");
    }
    // The CLI says why, in one line, and fails.
    let (ok, out) = cli(&host, &["deploy", "swap", cases[1].0.to_str().unwrap()]);
    assert!(!ok);
    assert!(out.contains("core WebAssembly module"), "{out}");
    assert_eq!(out.trim().lines().count(), 1, "{out}");

    assert_eq!(metric(&host, "deploys_refused_total").await, 5);
    assert_eq!(metric(&host, "deploys_total").await, 0);
    let swap = swap_class(admin.classes().await.unwrap());
    let versions = swap["versions"].as_array().unwrap();
    assert_eq!(
        versions.len(),
        1,
        "a refused deploy records nothing: {swap}"
    );
    // The command component's refusal names what it lacks.
    let Err(ClientError::Refused { message, .. }) =
        admin.deploy("swap", &wasm("command"), None, "test").await
    else {
        panic!("the command component was accepted");
    };
    assert!(message.contains("roomhost:object/handler"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_answers_nothing_without_the_token() {
    let dir = tempfile::tempdir().unwrap();
    // No token in the config: the host generates one beside the database.
    let config = write_config(dir.path(), None);
    let host = HostProcess::spawn(
        Command::new(env!("CARGO_BIN_EXE_roomhost"))
            .env_remove("ROOMHOST_ADMIN_TOKEN")
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(dir.path().join("roomhost.redb"))
            .arg("--config")
            .arg(&config),
    );
    let file = dir.path().join("admin.token");
    let token = std::fs::read_to_string(&file).unwrap().trim().to_string();
    assert_eq!(token.len(), 64);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert!(host.output().contains("admin.token"), "{}", host.output());

    let url = format!("http://{}", host.addr);
    for bad in ["", "wrong", &token[..63], &format!("{token}x")] {
        let client = AdminClient::new(&url, bad.to_string()).unwrap();
        for path in [
            "/admin/classes",
            "/admin/nope",
            "/admin/classes/swap/rollback",
        ] {
            match client.request(hyper::Method::GET, path, vec![], &[]).await {
                Err(ClientError::Refused { status, .. }) => {
                    assert_eq!(status.as_u16(), 401, "{path} with {bad:?}");
                }
                other => panic!("{path} with {bad:?}: {other:?}"),
            }
        }
    }
    // No Authorization header at all.
    let (status, _) = http_request(host.addr, "GET", "/admin/classes", b"").await;
    assert_eq!(status, 401);
    // The CLI finds the generated token beside --data.
    let out = Command::new(env!("CARGO_BIN_EXE_roomhost"))
        .env_remove("ROOMHOST_ADMIN_TOKEN")
        .args(["classes", "--url", &url, "--data"])
        .arg(dir.path().join("roomhost.redb"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("swap"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_serves_the_deployed_version_without_compiling() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), Some(TOKEN));
    let mut host = spawn_host(dir.path(), &config);
    let (ok, out) = cli(
        &host,
        &["deploy", "swap", wasm("swap-v2").to_str().unwrap()],
    );
    assert!(ok, "{out}");
    host.kill();

    let host = spawn_host(dir.path(), &config);
    let (status, body) = http_request(host.addr, "GET", "/swap/r/version", b"").await;
    assert_eq!((status, body.as_str()), (200, "swap-v2"));
    assert_eq!(metric(&host, "component_compilations_total").await, 0);
    // A rollback loads v1 from the cache too.
    let (ok, out) = cli(&host, &["rollback", "swap"]);
    assert!(ok, "{out}");
    let (_, body) = http_request(host.addr, "GET", "/swap/r/version", b"").await;
    assert_eq!(body, "swap-v1");
    assert_eq!(metric(&host, "component_compilations_total").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_moves_only_its_share_of_objects_until_promoted() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), Some(TOKEN));
    let host = spawn_host(dir.path(), &config);
    let rooms: Vec<String> = (0..40).map(|i| format!("room-{i}")).collect();
    let addr = host.addr;
    let version = |room: String| async move {
        let (status, body) = http_request(addr, "GET", &format!("/swap/{room}/version"), b"").await;
        assert_eq!(status, 200);
        body
    };
    let (ok, out) = cli(
        &host,
        &[
            "deploy",
            "swap",
            wasm("swap-v2").to_str().unwrap(),
            "--canary",
            "30",
        ],
    );
    assert!(ok, "{out}");
    assert!(out.contains("canary"), "{out}");
    let mut moved = 0;
    for room in &rooms {
        let id = ObjectId::new("swap", room.as_str());
        let want = if roomhost::components::canary_bucket(&id) < 30 {
            "swap-v2"
        } else {
            "swap-v1"
        };
        assert_eq!(version(room.clone()).await, want, "{room}");
        moved += usize::from(want == "swap-v2");
    }
    assert!(
        (4..=20).contains(&moved),
        "{moved} of 40 rooms in a 30% canary"
    );
    let (ok, out) = cli(&host, &["promote", "swap"]);
    assert!(ok, "{out}");
    for room in &rooms {
        assert_eq!(version(room.clone()).await, "swap-v2", "{room}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_that_traps_on_every_message_is_rolled_back_by_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), Some(TOKEN));
    let host = spawn_host(dir.path(), &config);
    let mut chatters = Vec::new();
    for i in 0..4 {
        let mut c = Chatter::join(&host, &format!("room-{i}")).await;
        assert_eq!(c.say().await, "swap-v1");
        chatters.push(c);
    }
    let (ok, out) = cli(
        &host,
        &["deploy", "swap", wasm("swap-crash").to_str().unwrap()],
    );
    assert!(ok, "{out}");
    // Every message now traps: no answer comes. Keep sending until the host
    // has seen enough traps (20 by default) and rolled back.
    let rolled_back = async {
        loop {
            for c in &mut chatters {
                c.client.send_text("again").await;
            }
            if metric(&host, "auto_rollbacks_total").await == 1 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), rolled_back)
        .await
        .expect("an automatic rollback within 20 s");
    assert!(
        host.output().contains("rolling back by itself"),
        "{}",
        host.output()
    );
    // The rooms answer on v1 again, still on their sockets. (Messages sent
    // just before the rollback may be answered by v1 first.)
    for (i, c) in chatters.iter_mut().enumerate() {
        c.client.send_text("back").await;
        loop {
            let reply = c.client.recv_text().await;
            assert!(reply.starts_with("swap-v1:"), "room-{i}: {reply}");
            if reply.ends_with(":back") {
                break;
            }
        }
    }
    assert_eq!(metric(&host, "sockets_open").await, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_version_learns_in_init_which_version_wrote_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), Some(TOKEN));
    let host = spawn_host(dir.path(), &config);
    let admin = AdminClient::new(&format!("http://{}", host.addr), TOKEN.into()).unwrap();
    let get = |path: &'static str| async move {
        let (status, body) = http_request(host.addr, "GET", path, b"").await;
        (status, body)
    };
    let swap = swap_class(admin.classes().await.unwrap());
    let v1 = swap["active"].as_str().unwrap().to_string();
    // An object without data has nothing to migrate.
    assert_eq!(get("/swap/fresh/versions").await.1, format!("{v1} none"));
    // v1 writes the room's data.
    let mut c = Chatter::join(&host, "room").await;
    assert_eq!(c.say().await, "swap-v1");
    assert_eq!(get("/swap/room/versions").await.1, format!("{v1} none"));
    assert_eq!(get("/swap/room/migrated-from").await.0, 404);

    let change = admin
        .deploy("swap", &wasm("swap-v2"), None, "test")
        .await
        .unwrap();
    let v2 = change["version"]["id"].as_str().unwrap().to_string();
    // The room's next event runs v2's init, which sees v1's data and
    // "migrates" it: that write records v2 as the data's writer.
    assert_eq!(c.say().await, "swap-v2");
    assert_eq!(get("/swap/room/migrated-from").await, (200, v1.clone()));
    assert_eq!(get("/swap/room/versions").await.1, format!("{v2} none"));
    // A room that hibernated through the deploy migrates when it wakes; the
    // record survives restarts.
    assert_eq!(get("/swap/fresh/versions").await.1, format!("{v2} none"));
    drop(c);
    drop(host);
    let host = spawn_host(dir.path(), &config);
    let (_, body) = http_request(host.addr, "GET", "/swap/room/versions", b"").await;
    assert_eq!(body, format!("{v2} none"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_listen_moves_the_admin_api_to_its_own_listener() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), Some(TOKEN));
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.insert_str(0, "admin_listen = \"127.0.0.1:0\"\n");
    std::fs::write(&config, text).unwrap();
    let host = spawn_host(dir.path(), &config);
    assert!(
        eventually(Duration::from_secs(10), || host
            .output()
            .contains("admin API on http://"))
        .await,
        "{}",
        host.output()
    );
    let out = host.output();
    let admin_addr: std::net::SocketAddr = out
        .split("admin API on http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap()
        .parse()
        .unwrap();
    // The main listener no longer knows /admin/; the admin one knows only it.
    let main = AdminClient::new(&format!("http://{}", host.addr), TOKEN.into()).unwrap();
    match main.classes().await {
        Err(ClientError::Refused { status, .. }) => assert_eq!(status.as_u16(), 404),
        other => panic!("the main listener answered the admin API: {other:?}"),
    }
    let admin = AdminClient::new(&format!("http://{admin_addr}"), TOKEN.into()).unwrap();
    assert!(admin.classes().await.unwrap()["classes"].is_array());
    let (status, _) = http_request(admin_addr, "GET", "/swap/r/version", b"").await;
    assert_eq!(status, 404);
    let (status, body) = http_request(host.addr, "GET", "/swap/r/version", b"").await;
    assert_eq!((status, body.as_str()), (200, "swap-v1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_config_component_is_a_deploy_and_classes_count_objects() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), Some(TOKEN));
    let mut host = spawn_host(dir.path(), &config);
    let mut c = Chatter::join(&host, "room").await;
    assert_eq!(c.say().await, "swap-v1");
    drop(c);
    host.kill();

    // The config now names another file: the next start deploys it.
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("swap_v1.wasm", "swap_v2.wasm");
    std::fs::write(&config, text).unwrap();
    let host = spawn_host(dir.path(), &config);
    assert!(
        host.output().contains("deployed as a new version"),
        "{}",
        host.output()
    );
    assert_eq!(metric(&host, "deploys_total").await, 1);
    let admin = AdminClient::new(&format!("http://{}", host.addr), TOKEN.into()).unwrap();
    let mut c = Chatter::join(&host, "room").await;
    c.sent = 1;
    assert_eq!(
        c.say().await,
        "swap-v2",
        "the count goes on: storage carried over"
    );
    let listed = swap_class(admin.classes().await.unwrap());
    let versions = listed["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 2, "{listed}");
    assert_eq!(versions[0]["deployed_by"], "config");
    assert_eq!(versions[1]["active"], true);
    assert_eq!(versions[1]["live_objects"], 1, "{listed}");
    // Idle for 300 ms: the room hibernates on its version, its socket open.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let listed = swap_class(admin.classes().await.unwrap());
    assert_eq!(listed["versions"][1]["live_objects"], 0, "{listed}");
    assert_eq!(listed["versions"][1]["hibernated_objects"], 1, "{listed}");
    assert_eq!(c.say().await, "swap-v2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_may_name_a_class_that_a_deploy_creates_later() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), Some(TOKEN));
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("[[routes]]\npath = \"/later/{name}/*\"\nobject = \"later\"\n");
    std::fs::write(&config, text).unwrap();
    let host = spawn_host(dir.path(), &config);
    assert!(
        host.output().contains("neither configured nor deployed"),
        "{}",
        host.output()
    );
    let (status, _) = http_request(host.addr, "GET", "/later/x/version", b"").await;
    assert_eq!(status, 404);
    let (ok, out) = cli(
        &host,
        &["deploy", "later", wasm("swap-v2").to_str().unwrap()],
    );
    assert!(ok, "{out}");
    assert!(out.contains("was none"), "{out}");
    let (status, body) = http_request(host.addr, "GET", "/later/x/version", b"").await;
    assert_eq!((status, body.as_str()), (200, "swap-v2"));
}

/// `bytes` with a custom section appended: the same behaviour, another
/// content hash — a new version.
fn another_version_of(bytes: &[u8], name: &str) -> Vec<u8> {
    let mut section = vec![name.len() as u8];
    section.extend_from_slice(name.as_bytes());
    section.extend_from_slice(b"another build");
    let mut out = bytes.to_vec();
    out.push(0); // custom section
    out.push(section.len() as u8); // < 128: one LEB128 byte
    out.extend_from_slice(&section);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swap_keeps_tags_attachments_auto_responses_storage_and_alarms() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), Some(TOKEN));
    // The room stays live through the deploy (whose compilation may take
    // longer than the usual 300 ms idle timeout), so that it is swapped at
    // its next event rather than woken on the new version.
    let mut text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("idle_timeout_ms = 300\n", "idle_timeout_ms = 60000\n");
    text.push_str(&format!(
        "[classes.probe]\ncomponent = {:?}\n[[routes]]\npath = \"/probe/{{name}}/*\"\nobject = \"probe\"\n",
        wasm("probe").display().to_string()
    ));
    std::fs::write(&config, text).unwrap();
    let host = spawn_host(dir.path(), &config);
    let mut a = connect_ws(host.addr, ip(1), "/probe/room/ws?tags=red,blue")
        .await
        .unwrap();
    let ask = async |c: &mut Client, frame: &str| {
        c.send_text(frame).await;
        c.recv_text().await
    };
    let id = ask(&mut a, "list").await;
    assert_eq!(ask(&mut a, "attach:hello").await, "ok");
    assert_eq!(ask(&mut a, "auto:ping:pong").await, "ok");
    assert_eq!(ask(&mut a, "put:k=v").await, "ok");
    let (status, _) = http_request(host.addr, "POST", "/probe/room/alarm-set?in=600000", b"").await;
    assert_eq!(status, 200);
    let (_, alarm) = http_request(host.addr, "GET", "/probe/room/alarm-get", b"").await;
    assert_ne!(alarm, "none");

    let probe2 = dir.path().join("probe2.wasm");
    let bytes = std::fs::read(wasm("probe")).unwrap();
    std::fs::write(&probe2, another_version_of(&bytes, "roomhost-test")).unwrap();
    let admin = AdminClient::new(&format!("http://{}", host.addr), TOKEN.into()).unwrap();
    let change = admin.deploy("probe", &probe2, None, "test").await.unwrap();
    assert_ne!(change["version"]["id"], change["previous"], "{change}");

    // The next event runs on the new version: a fresh instance, init, then it.
    assert_eq!(ask(&mut a, "inits").await, "1");
    assert_eq!(metric(&host, "swaps_total").await, 1);
    assert_eq!(ask(&mut a, &format!("tags:{id}")).await, "red,blue");
    assert_eq!(ask(&mut a, "attachment").await, "hello");
    assert_eq!(ask(&mut a, "get:k").await, "v");
    let auto_before = metric(&host, "auto_responses_total").await;
    assert_eq!(ask(&mut a, "ping").await, "pong");
    assert_eq!(metric(&host, "auto_responses_total").await, auto_before + 1);
    let (_, after) = http_request(host.addr, "GET", "/probe/room/alarm-get", b"").await;
    assert_eq!(after, alarm, "the alarm carried over");
    assert_eq!(metric(&host, "sockets_open").await, 1);
}
