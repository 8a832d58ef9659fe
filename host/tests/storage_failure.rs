//! A commit that fails for real: the `roomhost` binary runs with a file-size
//! limit (`ulimit -f`, with SIGXFSZ ignored, so that growing the database file
//! fails with EFBIG instead of killing the process) while chat clients send
//! messages. redb refuses every write after an I/O error until the database is
//! reopened, so the host must drop the failed batches' output, close its
//! sockets with 1011, exit non-zero, and — restarted on the same file without
//! the limit — hold every message any client received.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

/// Starts the real binary on an ephemeral port; with `max_file_blocks`, under
/// `ulimit -f` (512-byte blocks) with SIGXFSZ ignored, set by a shell that then
/// execs the host (both survive the exec).
fn spawn_host(data: &Path, config: &Path, max_file_blocks: Option<u64>) -> HostProcess {
    let bin = env!("CARGO_BIN_EXE_roomhost");
    let mut cmd = match max_file_blocks {
        Some(blocks) => {
            let mut c = Command::new("/bin/sh");
            c.arg("-c")
                .arg(r#"trap '' XFSZ; ulimit -f "$1" || exit 97; shift; exec "$@""#)
                .arg("sh")
                .arg(blocks.to_string())
                .arg(bin);
            c
        }
        None => Command::new(bin),
    };
    HostProcess::spawn(
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .arg("--config")
            .arg(config),
    )
}

async fn join(addr: SocketAddr, source: std::net::Ipv4Addr, name: &str) -> Client {
    join_chat_at(addr, source, "full", name).await.0
}

/// What a client saw: the chat messages, and how the connection ended.
#[derive(Default)]
struct Seen {
    messages: Vec<Value>,
    close: Option<u16>,
}

/// Reads one frame; `false` once the connection is over.
async fn read_one(c: &mut Client, seen: &mut Seen, wait: Duration) -> Option<bool> {
    match tokio::time::timeout(wait, c.ws.next()).await {
        Err(_) => None,
        Ok(Some(Ok(Message::Text(t)))) => {
            let v: Value = serde_json::from_str(&t).unwrap();
            if v.get("message").is_some() {
                seen.messages.push(v);
            }
            Some(true)
        }
        Ok(Some(Ok(Message::Close(frame)))) => {
            seen.close = Some(frame.map_or(1005, |CloseFrame { code, .. }| u16::from(code)));
            Some(false)
        }
        Ok(Some(Ok(_))) => Some(true),
        Ok(Some(Err(_)) | None) => {
            seen.close.get_or_insert(1006);
            Some(false)
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_drops_its_output_and_stops_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("full.redb");
    let config = dir.path().join("roomhost.toml");
    std::fs::write(
        &config,
        "[classes.chat-room]\ncomponent = \"builtin:chat-room\"\nvars = { RATE_LIMIT = \"off\" }\n",
    )
    .unwrap();

    // A first start creates the database (and the compiled-component cache,
    // which the limited start must not have to write).
    let proc = spawn_host(&data, &config, None);
    let (status, _) = http_request(proc.addr, "GET", "/api/room/full/history", b"").await;
    assert_eq!(status, 200);
    drop(proc);
    let size = std::fs::metadata(&data).unwrap().len();
    assert_eq!(size % 512, 0, "redb files grow in pages");

    // Now the file may not grow: the first commit that needs more room fails.
    let mut proc = spawn_host(&data, &config, Some(size / 512));
    let mut sender = join(proc.addr, ip(1), "sender").await;
    let mut watcher = join(proc.addr, ip(2), "watcher").await;
    let (mut sent, mut seen_s, mut seen_w) = (Vec::new(), Seen::default(), Seen::default());
    let filler = "x".repeat(200);
    'send: for n in 0..20_000u32 {
        let text = format!("{n} {filler}");
        if sender
            .ws
            .send(Message::text(json!({ "message": text }).to_string()))
            .await
            .is_err()
        {
            break;
        }
        sent.push(text.clone());
        // Window 1: wait for the echo (the commit is durable) or the end.
        loop {
            match read_one(&mut sender, &mut seen_s, WAIT).await {
                Some(true) => {
                    if seen_s.messages.last().is_some_and(|m| m["message"] == text) {
                        break;
                    }
                }
                Some(false) => break 'send,
                None => panic!("no echo and no close within {WAIT:?} (message {n})"),
            }
        }
    }
    assert!(
        seen_s.close.is_some(),
        "the file limit never made a commit fail ({} messages sent)",
        sent.len()
    );
    while read_one(&mut watcher, &mut seen_w, WAIT)
        .await
        .expect("the watcher's socket closes")
    {}

    // The host said why and stopped, without panicking or hanging.
    let status = proc
        .wait_exit(Duration::from_secs(15))
        .unwrap_or_else(|| panic!("the host did not exit: {}", proc.output()));
    let log = proc.output();
    assert!(!status.success(), "exit status {status}: {log}");
    assert_ne!(status.code(), Some(97), "ulimit -f failed: {log}");
    assert!(log.contains("group commit failed"), "{log}");
    assert!(log.contains("roomhost: database commit failed"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    assert_eq!(seen_s.close, Some(1011), "{log}");
    assert_eq!(seen_w.close, Some(1011), "{log}");

    // The message whose commit failed reached nobody.
    let last = sent.last().unwrap();
    for seen in [&seen_s, &seen_w] {
        assert!(
            seen.messages.iter().all(|m| m["message"] != *last),
            "a client received the message whose commit failed"
        );
    }
    assert!(
        !seen_w.messages.is_empty(),
        "the room worked before the failure"
    );

    // Restarted without the limit on the same file: redb repairs it, and every
    // message anyone received is there, in order, once.
    let proc = spawn_host(&data, &config, None);
    let h = room_history(proc.addr, "full").await;
    let stamps: Vec<u64> = h.iter().map(|m| m["timestamp"].as_u64().unwrap()).collect();
    assert!(stamps.windows(2).all(|w| w[0] < w[1]), "in order");
    for m in seen_s.messages.iter().chain(&seen_w.messages) {
        assert!(h.contains(m), "received but lost: {m}");
    }
    assert!(
        h.iter().all(|m| m["message"] != *last),
        "the failed message is not in the history"
    );
    // And the host works again.
    let mut again = join(proc.addr, ip(3), "again").await;
    again.send_json(json!({ "message": "after" })).await;
    loop {
        let v = again.recv_json().await;
        if v["message"] == "after" {
            break;
        }
    }
    drop(proc);
}

/// Not a storage failure, but the same real-binary harness: what a guest
/// writes to stderr (a panic message) reaches the host's log with the object's
/// id, next to the host's own record of the trap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_stderr_reaches_the_host_log_with_the_object_id() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("log.redb");
    let config = dir.path().join("roomhost.toml");
    let probe = roomhost::guests::wasm("probe");
    std::fs::write(
        &config,
        format!(
            "[classes.probe]\ncomponent = {:?}\n\n[[routes]]\npath = \"/probe/{{name}}/*\"\nobject = \"probe\"\n",
            probe.display().to_string()
        ),
    )
    .unwrap();
    let proc = spawn_host(&data, &config, None);
    let (status, body) = http_request(
        proc.addr,
        "GET",
        "/probe/loud/put-then-trap?key=k&value=v",
        b"",
    )
    .await;
    assert_eq!(status, 500, "the trap answers 500");
    // The client learns that the object failed and where to look, no more.
    assert!(body.starts_with("object failed"), "{body}");
    assert!(
        body.contains("host's log") && body.contains("probe/loud"),
        "{body}"
    );
    assert!(
        !body.contains("panicked") && !body.contains("wasm"),
        "{body}"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    let line = loop {
        let out = proc.output();
        if let Some(line) = out.lines().find(|l| l.contains("probe: trap requested")) {
            break line.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no panic message in the log:\n{out}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(line.contains("roomhost::guest"), "{line}");
    assert!(line.contains("probe/loud"), "{line}");
    assert!(line.contains("on-request"), "{line}");
    // One panic, one log entry: the message and the backtrace once each, and
    // no other warning (not the stderr lines apart, not the HTTP layer again).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let out = proc.output();
    let warnings: Vec<&str> = out
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect();
    assert_eq!(warnings.len(), 1, "{out}");
    assert_eq!(out.matches("probe: trap requested").count(), 1, "{out}");
    assert_eq!(out.matches("wasm backtrace").count(), 1, "{out}");
    assert!(!out.contains("RUST_BACKTRACE"), "{out}");
    drop(proc);
}
