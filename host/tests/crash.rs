//! Crash consistency: the real `roomhost` binary is killed with SIGKILL while
//! chat clients are sending, then restarted on the same data file. Every
//! message any client received must be in the room's history afterwards, in
//! order, exactly once — the output gate releases a broadcast only after its
//! write is durable.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

/// Starts the binary on an ephemeral port.
fn spawn_host(data: &Path) -> HostProcess {
    HostProcess::spawn(
        Command::new(env!("CARGO_BIN_EXE_roomhost"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(data),
    )
}

/// A pseudo-random number from the clock (no extra dependency needed).
fn jitter(max: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    u64::from(nanos) % max
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_a_client_saw_is_lost_when_the_host_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("crash.redb");
    let mut received: Vec<Value> = Vec::new();
    for round in 0..5u8 {
        let mut proc = spawn_host(&data);
        let mut clients = Vec::new();
        for c in 0..6u8 {
            let (client, _) = join_chat_at(
                proc.addr,
                ip(10 * round + c + 1),
                "crash",
                &format!("r{round}c{c}"),
            )
            .await;
            clients.push(client);
        }
        // Every client sends up to 4 messages (under the rate limit) while one
        // collector reads; the host is killed at a random moment meanwhile.
        let kill_after = Duration::from_millis(50 + jitter(400));
        let mut tasks = Vec::new();
        for (c, mut client) in clients.into_iter().enumerate() {
            tasks.push(tokio::spawn(async move {
                let mut got = Vec::new();
                for n in 0..4 {
                    let text = format!("round {round} client {c} message {n}");
                    if client
                        .ws
                        .send(tokio_tungstenite::tungstenite::Message::text(
                            json!({"message": text}).to_string(),
                        ))
                        .await
                        .is_err()
                    {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(60)).await;
                }
                // Read whatever arrived until the connection dies.
                while let Ok(Some(Ok(m))) =
                    tokio::time::timeout(Duration::from_secs(3), client.ws.next()).await
                {
                    if let tokio_tungstenite::tungstenite::Message::Text(t) = m {
                        let v: Value = serde_json::from_str(&t).unwrap();
                        if v.get("message").is_some() {
                            got.push(v);
                        }
                    }
                }
                got
            }));
        }
        tokio::time::sleep(kill_after).await;
        proc.child.kill().unwrap(); // SIGKILL
        proc.child.wait().unwrap();
        for t in tasks {
            received.extend(t.await.unwrap());
        }

        // Restart on the same file: it opens, and the history holds every
        // message anyone saw, in order, once.
        let mut proc = spawn_host(&data);
        let h = room_history(proc.addr, "crash").await;
        let stamps: Vec<u64> = h.iter().map(|m| m["timestamp"].as_u64().unwrap()).collect();
        assert!(
            stamps.windows(2).all(|w| w[0] < w[1]),
            "history in order: {stamps:?}"
        );
        let texts: Vec<&str> = h.iter().map(|m| m["message"].as_str().unwrap()).collect();
        let unique: HashSet<&str> = texts.iter().copied().collect();
        assert_eq!(unique.len(), texts.len(), "no duplicates");
        for m in &received {
            assert!(
                h.contains(m),
                "round {round}: a message a client received is missing after the crash: {m}"
            );
        }
        proc.child.kill().unwrap();
        proc.child.wait().unwrap();
    }
    assert!(!received.is_empty(), "the test saw messages at all");
}
