//! The built-in chat room, end to end: the edge-chat-demo protocol over real
//! WebSockets to a real host with a real redb file.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

fn message_texts(frames: &[Value]) -> Vec<String> {
    frames
        .iter()
        .filter_map(|f| f.get("message").and_then(Value::as_str).map(str::to_string))
        .collect()
}

/// Reads frames until `n` chat messages (frames with "message") arrived.
async fn recv_messages(c: &mut Client, n: usize) -> Vec<Value> {
    let mut out = Vec::new();
    while out.len() < n {
        let v = c.recv_json().await;
        if v.get("message").is_some() {
            out.push(v);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newcomer_gets_roster_then_history_then_ready() {
    let dir = tempfile::tempdir().unwrap();
    let host = start_host(test_config(dir.path())).await;

    let (mut alice, frames) = join_chat(&host, ip(1), "lobby", "alice").await;
    assert_eq!(
        frames,
        vec![json!({"joined": "alice"}), json!({"ready": true})]
    );
    alice.send_json(json!({"message": "hello"})).await;
    let echoed = alice.recv_json().await;
    assert_eq!(echoed["name"], "alice");
    assert_eq!(echoed["message"], "hello");
    assert!(echoed["timestamp"].as_u64().unwrap() > 1_600_000_000_000);

    let (_bob, frames) = join_chat(&host, ip(2), "lobby", "bob").await;
    assert_eq!(frames.len(), 4, "{frames:?}");
    assert_eq!(frames[0], json!({"joined": "alice"}));
    assert_eq!(frames[1], echoed, "history is the stored message as sent");
    assert_eq!(frames[2], json!({"joined": "bob"}));
    assert_eq!(frames[3], json!({"ready": true}));
    // Everyone else hears about the newcomer.
    assert_eq!(alice.recv_json().await, json!({"joined": "bob"}));
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_reach_every_member_in_one_order_with_increasing_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    let host = start_host(test_config(dir.path())).await;
    let mut clients = Vec::new();
    for (i, name) in ["ann", "ben", "cat"].iter().enumerate() {
        let (c, _) = join_chat(&host, ip(10 + i as u8), "room-a", name).await;
        clients.push(c);
    }
    // Drain the joined notices of later members.
    for (i, c) in clients.iter_mut().enumerate() {
        for _ in i + 1..3 {
            assert!(c.recv_json().await.get("joined").is_some());
        }
    }
    for round in 0..2 {
        for (i, c) in clients.iter_mut().enumerate() {
            c.send_json(json!({"message": format!("m{round}-{i}")}))
                .await;
        }
    }
    let mut seen: Vec<Vec<Value>> = Vec::new();
    for c in clients.iter_mut() {
        seen.push(recv_messages(c, 6).await);
    }
    // Same messages, same order, at every member (sender included).
    assert!(seen.iter().all(|s| s == &seen[0]), "{seen:?}");
    let texts: HashSet<String> = message_texts(&seen[0]).into_iter().collect();
    assert_eq!(texts.len(), 6);
    let stamps: Vec<u64> = seen[0]
        .iter()
        .map(|v| v["timestamp"].as_u64().unwrap())
        .collect();
    assert!(
        stamps.windows(2).all(|w| w[0] < w[1]),
        "strictly increasing: {stamps:?}"
    );
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_errors_and_the_room_keeps_working() {
    let dir = tempfile::tempdir().unwrap();
    let host = start_host(test_config(dir.path())).await;

    // Name too long: error, then close 1009.
    let mut c = host.ws_from(ip(1), "/api/room/errs/websocket").await;
    c.send_json(json!({"name": "n".repeat(33)})).await;
    assert_eq!(c.recv_json().await, json!({"error": "Name too long."}));
    let (code, _) = c.expect_close().await;
    assert_eq!(code, 1009);

    let (mut c, _) = join_chat(&host, ip(2), "errs", "dora").await;
    // Message too long: error, connection stays.
    c.send_json(json!({"message": "m".repeat(257)})).await;
    assert_eq!(c.recv_json().await, json!({"error": "Message too long."}));
    // Malformed JSON and binary frames: errors, no crash.
    c.send_text("{not json").await;
    let e = c.recv_json().await;
    assert!(e["error"].as_str().unwrap().contains("JSON"), "{e}");
    c.ws.send(tokio_tungstenite::tungstenite::Message::binary(vec![
        1u8, 2, 3,
    ]))
    .await
    .unwrap();
    assert!(c.recv_json().await.get("error").is_some());
    // The room still works, and the full-length message is fine.
    c.send_json(json!({"message": "m".repeat(256)})).await;
    assert_eq!(c.recv_json().await["message"].as_str().unwrap().len(), 256);
    assert_eq!(host.stats().traps, 0, "bad input never traps the guest");

    // Room names: > 32 chars → 404; a 64-hex private id is fine.
    let err = host
        .try_ws_from(ip(3), &format!("/api/room/{}/websocket", "x".repeat(33)))
        .await;
    match err {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 404),
        other => panic!("expected 404, got {:?}", other.map(|_| ())),
    }
    let (status, id) = host.http("POST", "/api/room", b"").await;
    assert_eq!(status, 200);
    assert!(
        id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );
    let (_p, frames) = join_chat(&host, ip(3), &id, "eve").await;
    assert_eq!(frames.last(), Some(&json!({"ready": true})));

    // Not a WebSocket, unknown routes, wrong methods.
    assert_eq!(
        host.http("GET", "/api/room/errs/websocket", b"").await.0,
        400
    );
    assert_eq!(host.http("GET", "/no/such/route", b"").await.0, 404);
    assert_eq!(host.http("GET", "/api/room", b"").await.0, 405);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_ip_is_rate_limited_after_its_grace() {
    let dir = tempfile::tempdir().unwrap();
    let host = start_host(test_config(dir.path())).await;
    let (mut c, _) = join_chat(&host, ip(7), "limits", "fast").await;
    // +5 s per message with 20 s of grace: the first few pass, then the limit.
    let mut accepted = 0;
    let mut limited = 0;
    for i in 0..10 {
        c.send_json(json!({"message": format!("spam {i}")})).await;
        let v = c.recv_json().await;
        if v.get("message").is_some() {
            accepted += 1;
        } else {
            assert_eq!(
                v,
                json!({"error": "Your IP is being rate-limited, please try again later."})
            );
            limited += 1;
        }
    }
    assert!((4..=6).contains(&accepted), "accepted {accepted}");
    assert_eq!(accepted + limited, 10);
    // Another IP in the same room is not limited.
    let (mut other, _) = join_chat(&host, ip(8), "limits", "calm").await;
    other.send_json(json!({"message": "hi"})).await;
    assert_eq!(recv_messages(&mut other, 1).await[0]["message"], "hi");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_class_var_turns_the_rate_limiter_off() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    let chat = config.classes.get_mut("chat-room").unwrap();
    chat.vars.insert("RATE_LIMIT".into(), "off".into());
    let host = start_host(config).await;
    let (mut c, _) = join_chat(&host, ip(9), "unlimited", "fast").await;
    for i in 0..20 {
        c.send_json(json!({"message": format!("m{i}")})).await;
    }
    let got = recv_messages(&mut c, 20).await;
    assert_eq!(got.len(), 20, "no message was limited");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_never_see_each_others_messages() {
    let dir = tempfile::tempdir().unwrap();
    let host = start_host(test_config(dir.path())).await;
    let (mut a, _) = join_chat(&host, ip(1), "red", "a").await;
    let (mut b, _) = join_chat(&host, ip(2), "blue", "b").await;
    a.send_json(json!({"message": "in red"})).await;
    assert_eq!(recv_messages(&mut a, 1).await[0]["message"], "in red");
    b.expect_silence(Duration::from_millis(300)).await;
    // And history is per room.
    let (_b2, frames) = join_chat(&host, ip(3), "blue", "b2").await;
    assert!(message_texts(&frames).is_empty(), "{frames:?}");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaving_members_are_announced() {
    let dir = tempfile::tempdir().unwrap();
    let host = start_host(test_config(dir.path())).await;
    let (mut a, _) = join_chat(&host, ip(1), "bye", "stay").await;
    let (b, _) = join_chat(&host, ip(2), "bye", "go").await;
    assert_eq!(a.recv_json().await, json!({"joined": "go"}));
    b.close().await;
    assert_eq!(a.recv_json().await, json!({"quit": "go"}));
    // A dropped TCP connection (no close frame) is announced too.
    let (c, _) = join_chat(&host, ip(3), "bye", "vanish").await;
    assert_eq!(a.recv_json().await, json!({"joined": "vanish"}));
    drop(c);
    assert_eq!(a.recv_json().await, json!({"quit": "vanish"}));
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_sent_before_a_client_names_itself_reaches_it_once_after_joining() {
    let dir = tempfile::tempdir().unwrap();
    let host = start_host(test_config(dir.path())).await;
    let (mut a, _) = join_chat(&host, ip(1), "early", "a").await;
    let mut pending = host.ws_from(ip(2), "/api/room/early/websocket").await;
    // Give the upgrade time to be accepted before the message.
    tokio::time::sleep(Duration::from_millis(100)).await;
    a.send_json(json!({"message": "while you were connecting"}))
        .await;
    recv_messages(&mut a, 1).await;
    pending.expect_silence(Duration::from_millis(200)).await;
    pending.send_json(json!({"name": "late"})).await;
    let mut frames = Vec::new();
    loop {
        let v = pending.recv_json().await;
        let ready = v.get("ready").is_some();
        frames.push(v);
        if ready {
            break;
        }
    }
    assert_eq!(
        message_texts(&frames),
        vec!["while you were connecting".to_string()]
    );
    pending.expect_silence(Duration::from_millis(300)).await;
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_survives_a_restart_on_the_same_data_file() {
    let dir = tempfile::tempdir().unwrap();
    let host = start_host(test_config(dir.path())).await;
    let (mut a, _) = join_chat(&host, ip(1), "durable", "a").await;
    for i in 0..3 {
        a.send_json(json!({"message": format!("kept {i}")})).await;
    }
    let before = recv_messages(&mut a, 3).await;
    drop(a);
    host.stop().await;

    let host = start_host(test_config(dir.path())).await;
    let (mut b, frames) = join_chat(&host, ip(2), "durable", "b").await;
    let history: Vec<Value> = frames
        .into_iter()
        .filter(|f| f.get("message").is_some())
        .collect();
    assert_eq!(history, before);
    // Timestamps keep increasing after the restart.
    b.send_json(json!({"message": "after"})).await;
    let after = recv_messages(&mut b, 1).await;
    assert!(after[0]["timestamp"].as_u64() > before[2]["timestamp"].as_u64());
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_connects_to_a_new_room_create_exactly_one_instance() {
    let dir = tempfile::tempdir().unwrap();
    let host = start_host(test_config(dir.path())).await;
    let joins = (0..24u8).map(|i| {
        let host = &host;
        async move { join_chat(host, ip(50 + i), "crowd", &format!("u{i}")).await }
    });
    let clients = futures_util::future::join_all(joins).await;
    assert_eq!(clients.len(), 24);
    let stats = host.stats();
    assert_eq!(stats.instances_created, 1, "{stats:?}");
    assert_eq!(stats.instances_live, 1);
    assert_eq!(stats.sockets_open, 24);
    // The last to join saw all the others.
    let most = clients
        .iter()
        .map(|(_, f)| f.iter().filter(|v| v.get("joined").is_some()).count())
        .max();
    assert_eq!(most, Some(24));
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chat_page_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let host = start_host(test_config(dir.path())).await;
    let (status, body) = host.http("GET", "/", b"").await;
    assert_eq!(status, 200);
    assert!(
        body.contains("<html") && body.contains("/api/room"),
        "the chat page"
    );
    host.stop().await;
}

/// One raw HTTP request with extra header lines; returns the body.
async fn get_with_headers(addr: std::net::SocketAddr, path: &str, headers: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\n{headers}connection: close\r\n\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out.split("\r\n\r\n").nth(1).unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_forwarded_for_is_the_client_ip_only_when_trusted() {
    let xff = "x-forwarded-for: 203.0.113.7, not-an-ip, 198.51.100.9\r\n";
    for trust in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(dir.path());
        config.trust_forwarded_for = trust;
        let host = start_host(config).await;
        let plain = get_with_headers(host.addr, "/probe/ip/client-ip", "").await;
        assert_eq!(plain, "127.0.0.1");
        let forwarded = get_with_headers(host.addr, "/probe/ip/client-ip", xff).await;
        // Trusted: the last address the proxy appended; otherwise the peer.
        let want = if trust { "198.51.100.9" } else { "127.0.0.1" };
        assert_eq!(forwarded, want, "trust_forwarded_for = {trust}");
        // A header with no address in it falls back to the peer.
        let junk = get_with_headers(
            host.addr,
            "/probe/ip/client-ip",
            "x-forwarded-for: junk\r\n",
        )
        .await;
        assert_eq!(junk, "127.0.0.1");
        host.stop().await;
    }
}
