//! The operator's tools against the real binary: `roomhost objects`,
//! `inspect`, `export`, `import`, `evict`, `delete` and `backup`, each run as
//! the real CLI against a real host serving the `probe` test guest, with
//! real WebSocket clients; and a backup taken while clients keep writing,
//! restored by serving the snapshot.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use roomhost::client::AdminClient;

const TOKEN: &str = "operator-test-token";

/// A config serving `probe` at `/probe/{name}/*`; idle objects hibernate
/// after `idle_ms`.
fn write_config(dir: &Path, idle_ms: u64) -> PathBuf {
    let text = format!(
        "admin_token = \"{TOKEN}\"\nidle_timeout_ms = {idle_ms}\n\
         [classes.probe]\ncomponent = {:?}\n\
         [[routes]]\npath = \"/probe/{{name}}/*\"\nobject = \"probe\"\n",
        roomhost::guests::wasm("probe").display().to_string()
    );
    let file = dir.join("roomhost.toml");
    std::fs::write(&file, text).unwrap();
    file
}

fn spawn_host(data: &Path, config: &Path) -> HostProcess {
    HostProcess::serve(data, config)
}

/// Runs the CLI against `addr` with `token`; (success, stdout + stderr).
fn run_cli(addr: SocketAddr, token: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_roomhost"))
        .args(args)
        .args(["--url", &format!("http://{addr}"), "--token", token])
        .env("USER", "tester")
        .output()
        .unwrap();
    (out.status.success(), output_text(&out))
}

/// The CLI on a blocking thread (clients keep going meanwhile).
async fn cli(addr: SocketAddr, args: &[&str]) -> (bool, String) {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_cli(addr, TOKEN, &args)
    })
    .await
    .unwrap()
}

/// The CLI must succeed; its output.
async fn ok(addr: SocketAddr, args: &[&str]) -> String {
    let (success, out) = cli(addr, args).await;
    assert!(success, "roomhost {args:?} failed: {out}");
    out
}

async fn http(addr: SocketAddr, method: &str, path: &str) -> String {
    let (status, body) = http_request(addr, method, path, b"").await;
    assert_eq!(status, 200, "{method} {path}: {body}");
    body
}

/// The names in a `roomhost objects` table.
fn names(table: &str) -> BTreeSet<String> {
    table
        .lines()
        .skip(1)
        .filter(|l| !l.starts_with('('))
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_inspect_evict_and_a_wrong_token() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), 1500);
    let host = spawn_host(&dir.path().join("roomhost.redb"), &config);
    let addr = host.addr;

    // 25 objects that only store; after the idle timeout they have no actor.
    for i in 0..25 {
        http(
            addr,
            "POST",
            &format!("/probe/s{i:02}/put?key=k&value=v{i}"),
        )
        .await;
    }
    http(addr, "POST", "/probe/s00/alarm-set?in=3600000").await;
    // One with a socket (tags, an attachment) that will hibernate.
    let mut ws = connect_ws(addr, Ipv4Addr::LOCALHOST, "/probe/hib/ws?tags=red,blue")
        .await
        .unwrap();
    ws.send_text("attach:seat-7").await;
    assert_eq!(ws.recv_text().await, "ok");
    ws.send_text("put:long=".to_string().as_str()).await;
    assert_eq!(ws.recv_text().await, "ok");
    let long = "x".repeat(300);
    http(
        addr,
        "POST",
        &format!("/probe/hib/put?key=long&value={long}"),
    )
    .await;
    http(addr, "POST", "/probe/hib/put?key=greeting&value=hello").await;
    // A trap, for inspect's recent traps.
    let (status, _) =
        http_request(addr, "POST", "/probe/hib/put-then-trap?key=t&value=1", b"").await;
    assert_eq!(status, 500);
    tokio::time::sleep(Duration::from_millis(2500)).await;

    // All 26; the stored ones page through the API 7 at a time.
    let all = ok(addr, &["objects", "probe"]).await;
    assert_eq!(names(&all).len(), 26, "{all}");
    let stored = ok(addr, &["objects", "--stored"]).await;
    assert_eq!(names(&stored).len(), 25, "{stored}");
    assert!(
        stored.contains("s00") && stored.contains("(in "),
        "the alarm shows: {stored}"
    );
    let limited = ok(addr, &["objects", "--stored", "--limit", "10"]).await;
    assert_eq!(names(&limited).len(), 10, "{limited}");
    let client = AdminClient::new(&format!("http://{addr}"), TOKEN.into()).unwrap();
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = client
            .objects(Some("probe"), "stored", after.as_deref(), 7)
            .await
            .unwrap();
        let rows = page["objects"].as_array().unwrap();
        assert!(rows.len() <= 7);
        seen.extend(rows.iter().map(|o| o["name"].as_str().unwrap().to_string()));
        match page["next"].as_str() {
            Some(n) => after = Some(n.to_string()),
            None => break,
        }
    }
    let expected: Vec<String> = (0..25).map(|i| format!("s{i:02}")).collect();
    assert_eq!(seen, expected, "every stored object once, in order");
    let hib = ok(addr, &["objects", "--hibernated"]).await;
    assert_eq!(names(&hib), BTreeSet::from(["hib".to_string()]), "{hib}");
    assert!(
        hib.lines().nth(1).unwrap().contains(" 1 "),
        "one socket: {hib}"
    );

    // inspect: keys cut, --key in full, the socket, the trap.
    let out = ok(addr, &["inspect", "probe", "hib"]).await;
    assert!(out.contains("greeting = hello"), "{out}");
    assert!(
        out.contains("… (300 bytes)") || out.contains("(300 bytes)"),
        "{out}"
    );
    assert!(
        out.contains("tags [red, blue]") && out.contains("attachment seat-7"),
        "{out}"
    );
    assert!(out.contains("peer 127.0.0.1:"), "{out}");
    assert!(
        out.contains("recent traps: 1") && out.contains("trap requested"),
        "{out}"
    );
    let full = ok(addr, &["inspect", "probe", "hib", "--key", "long"]).await;
    assert_eq!(full.trim(), long);
    let (found, out) = cli(addr, &["inspect", "probe", "nobody"]).await;
    assert!(
        !found && out.contains("404") && out.contains("no such object"),
        "{out}"
    );
    let (found, out) = cli(addr, &["inspect", "nope", "x"]).await;
    assert!(!found && out.contains("no such class"), "{out}");

    // evict: the socket stays, the next message wakes the object.
    ws.send_text("inits").await;
    assert_eq!(ws.recv_text().await, "1");
    let live = ok(addr, &["objects", "--live"]).await;
    assert!(names(&live).contains("hib"), "{live}");
    let out = ok(addr, &["evict", "probe", "hib"]).await;
    assert!(out.contains("instance dropped"), "{out}");
    let mut hibernated = false;
    for _ in 0..50 {
        if names(&ok(addr, &["objects", "--hibernated"]).await).contains("hib") {
            hibernated = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(hibernated, "evicted");
    ws.send_text("get:greeting").await;
    assert_eq!(ws.recv_text().await, "hello", "woken by the next message");
    ws.send_text("inits").await;
    assert_eq!(ws.recv_text().await, "1", "a fresh instance");

    // Without the token: 401, nothing else.
    let (allowed, out) =
        tokio::task::spawn_blocking(move || run_cli(addr, "wrong-token", &["objects"]))
            .await
            .unwrap();
    assert!(!allowed && out.contains("401"), "{out}");
    let (status, body) = http_request(addr, "GET", "/admin/objects", b"").await;
    assert_eq!(status, 401, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_import_round_trip_refuses_overwrite_and_delete_closes_with_1012() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), 1500);
    let host = spawn_host(&dir.path().join("roomhost.redb"), &config);
    let addr = host.addr;

    // Keys with text, a binary value (imported as hex), quotes and newlines.
    let seed = dir.path().join("seed.jsonl");
    std::fs::write(
        &seed,
        "{\"key\":\"bin\",\"value\":{\"hex\":\"00ff10\"}}\n\
         {\"key\":\"quote\\\"d\\nkey\",\"value\":{\"text\":\"line1\\nline2\"}}\n",
    )
    .unwrap();
    let out = ok(addr, &["import", "probe", "a", seed.to_str().unwrap()]).await;
    assert!(out.contains("2 keys imported"), "{out}");
    http(addr, "POST", "/probe/a/put?key=plain&value=v").await;
    assert_eq!(http(addr, "GET", "/probe/a/get?key=plain").await, "v");
    let inspect = ok(addr, &["inspect", "probe", "a"]).await;
    assert!(inspect.contains("bin = hex:00ff10"), "{inspect}");

    let a = dir.path().join("a.jsonl");
    ok(
        addr,
        &["export", "probe", "a", "--out", a.to_str().unwrap()],
    )
    .await;
    let exported = std::fs::read_to_string(&a).unwrap();
    assert_eq!(exported.lines().count(), 3, "{exported}");
    // To stdout, the same lines.
    let stdout = ok(addr, &["export", "probe", "a"]).await;
    assert_eq!(stdout, exported);

    // Into another object, and back out: equal.
    ok(addr, &["import", "probe", "b", a.to_str().unwrap()]).await;
    let b = dir.path().join("b.jsonl");
    ok(
        addr,
        &["export", "probe", "b", "--out", b.to_str().unwrap()],
    )
    .await;
    assert_eq!(std::fs::read_to_string(&b).unwrap(), exported);
    // The object's own guest sees the imported keys.
    assert_eq!(http(addr, "GET", "/probe/b/get?key=plain").await, "v");

    // Again: refused, nothing written; with --overwrite: done.
    http(addr, "POST", "/probe/b/put?key=plain&value=changed").await;
    let (done, out) = cli(addr, &["import", "probe", "b", a.to_str().unwrap()]).await;
    assert!(
        !done && out.contains("409") && out.contains("exist already"),
        "{out}"
    );
    assert_eq!(http(addr, "GET", "/probe/b/get?key=plain").await, "changed");
    ok(
        addr,
        &["import", "probe", "b", a.to_str().unwrap(), "--overwrite"],
    )
    .await;
    assert_eq!(http(addr, "GET", "/probe/b/get?key=plain").await, "v");
    // A broken line: refused with its number.
    std::fs::write(
        dir.path().join("bad.jsonl"),
        "{\"key\":\"x\",\"value\":{\"text\":\"1\"}}\n{oops\n",
    )
    .unwrap();
    let bad = dir.path().join("bad.jsonl");
    let (done, out) = cli(addr, &["import", "probe", "c", bad.to_str().unwrap()]).await;
    assert!(!done && out.contains("line 2"), "{out}");

    // delete: sockets closed with 1012, keys and alarm gone, who is logged.
    let mut ws = connect_ws(addr, Ipv4Addr::LOCALHOST, "/probe/b/ws")
        .await
        .unwrap();
    ws.send_text("put:w=1").await;
    assert_eq!(ws.recv_text().await, "ok");
    http(addr, "POST", "/probe/b/alarm-set?in=3600000").await;
    let (done, out) = cli(addr, &["delete", "probe", "b"]).await;
    assert!(!done && out.contains("--yes"), "{out}");
    let out = ok(addr, &["delete", "probe", "b", "--yes"]).await;
    assert!(
        out.contains("1 sockets closed with 1012") && out.contains("alarm deleted"),
        "{out}"
    );
    let (code, _) = ws.expect_close().await;
    assert_eq!(code, 1012);
    let (found, out) = cli(addr, &["inspect", "probe", "b"]).await;
    assert!(!found && out.contains("no such object"), "gone: {out}");
    assert!(
        !names(&ok(addr, &["objects", "probe"]).await).contains("b"),
        "not listed"
    );
    assert!(
        eventually(WAIT, || host.output().contains("deleted by tester@")).await,
        "the host logs who: {}",
        host.output()
    );
    assert_eq!(http(addr, "GET", "/probe/b/alarm-get").await, "none");
    let (status, _) = http_request(addr, "GET", "/probe/b/get?key=plain", b"").await;
    assert_eq!(status, 404);
    let (done, out) = cli(addr, &["delete", "probe", "never", "--yes"]).await;
    assert!(!done && out.contains("404"), "{out}");
}

/// Clients keep writing during a backup; the snapshot, served, holds every
/// write acknowledged before the backup began, and each object's counter
/// and log agree (nothing torn).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_load_restores_every_acknowledged_write_untorn() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), 10_000);
    let host = spawn_host(&dir.path().join("roomhost.redb"), &config);
    let addr = host.addr;
    // Some bulk, so the copy takes a while.
    let filler = "f".repeat(4000);
    for i in 0..300 {
        http(
            addr,
            "POST",
            &format!("/probe/bulk{}/put?key=k{i}&value={filler}", i % 10),
        )
        .await;
    }

    const WRITERS: usize = 4;
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Vec<std::sync::atomic::AtomicU64>> =
        Arc::new((0..WRITERS).map(|_| Default::default()).collect());
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let (stop, acked) = (stop.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                // The counter and its log entry: one event, one transaction.
                let path = format!("/probe/writer{w}/put-many?keys=count,log:{n:06}&values={n},x");
                let (status, body) = http_request(addr, "POST", &path, b"").await;
                assert_eq!(status, 200, "{body}");
                acked[w].store(n, Ordering::SeqCst);
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before: Vec<u64> = acked.iter().map(|a| a.load(Ordering::SeqCst)).collect();
    assert!(before.iter().all(|n| *n > 0), "writers are writing");
    let snap = dir.path().join("snap.redb");
    let out = ok(addr, &["backup", snap.to_str().unwrap()]).await;
    assert!(out.contains("backup written"), "{out}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let after: Vec<u64> = acked.iter().map(|a| a.load(Ordering::SeqCst)).collect();
    assert!(
        after.iter().zip(&before).all(|(a, b)| a > b),
        "writes went on during the backup: {before:?} → {after:?}"
    );
    drop(host);

    // Restore: serve the snapshot.
    let restored = spawn_host(&snap, &config);
    let addr = restored.addr;
    for w in 0..WRITERS {
        let count: u64 = http(addr, "GET", &format!("/probe/writer{w}/get?key=count"))
            .await
            .parse()
            .unwrap();
        assert!(
            count >= before[w],
            "writer {w}: {count} < {} acknowledged before",
            before[w]
        );
        assert!(count <= after[w]);
        let list = http(addr, "GET", &format!("/probe/writer{w}/list?prefix=log:")).await;
        let logs: Vec<serde_json::Value> = serde_json::from_str(&list).unwrap();
        let keys: Vec<String> = logs
            .iter()
            .map(|e| e[0].as_str().unwrap().to_string())
            .collect();
        let expected: Vec<String> = (1..=count).map(|n| format!("log:{n:06}")).collect();
        assert_eq!(keys, expected, "writer {w}: counter and log agree");
    }
    assert_eq!(http(addr, "GET", "/probe/bulk3/get?key=k3").await, filler);
}
