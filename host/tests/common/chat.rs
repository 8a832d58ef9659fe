//! The chat protocol's tests, written once and run against each chat room:
//! the Rust room built into the host (wrapped in `chat.rs` and
//! `hibernation.rs`) and the JavaScript room of `guests-js/chat-room`
//! (`js_chat.rs`). Each test takes the [`Room`] to run; [`chat_tests!`] makes
//! the `#[tokio::test]` wrappers.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use roomhost::Config;
use serde_json::{Value, json};

use super::*;

/// Which chat room serves the class `chat-room`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Room {
    /// The built-in Rust room (`guests/chat-room`).
    Rust,
    /// The JavaScript room (`guests-js/chat-room`), built by its own tools.
    Js,
}

impl Room {
    /// A test config (see [`test_config`]) whose `chat-room` is this room.
    pub fn config(self, dir: &Path) -> Config {
        let mut config = test_config(dir);
        if self == Room::Js {
            js::use_js_chat_room(&mut config);
        }
        config
    }

    /// Like [`Room::config`], with objects evicted after `idle_ms` idle.
    pub fn hibernating_config(self, dir: &Path, idle_ms: u64) -> Config {
        Config {
            idle_timeout_ms: idle_ms,
            ..self.config(dir)
        }
    }

    /// Starts a host with `config`.
    pub async fn start(self, config: Config) -> TestHost {
        match self {
            Room::Rust => start_host(config).await,
            Room::Js => js::start_host(config).await,
        }
    }
}

/// `chat_tests!(Room::Js => name, ...)`: a `#[tokio::test]` per named test of
/// this module, run against that room. (Test files that include `common`
/// without running chat tests leave it unused.)
#[allow(unused_macros)]
macro_rules! chat_tests {
    ($room:expr => $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                common::chat::$name($room).await;
            }
        )*
    };
}
#[allow(unused_imports)]
pub(crate) use chat_tests;

/// The protocol's tests for `$room`, listed once for both rooms.
#[allow(unused_macros)]
macro_rules! protocol_tests {
    ($room:expr) => {
        $crate::common::chat::chat_tests!($room =>
            newcomer_gets_roster_then_history_then_ready,
            messages_reach_every_member_in_one_order_with_increasing_timestamps,
            bad_input_gets_clear_errors_and_the_room_keeps_working,
            one_ip_is_rate_limited_after_its_grace,
            a_class_var_turns_the_rate_limiter_off,
            rooms_never_see_each_others_messages,
            leaving_members_are_announced,
            a_message_sent_before_a_client_names_itself_reaches_it_once_after_joining,
            history_survives_a_restart_on_the_same_data_file,
            the_history_endpoint_answers_the_last_messages_oldest_first,
            concurrent_connects_to_a_new_room_create_exactly_one_instance,
        );
    };
}
#[allow(unused_imports)]
pub(crate) use protocol_tests;

/// Idle time before eviction in the hibernation tests.
const IDLE_MS: u64 = 300;
const EVICTED_WITHIN: Duration = Duration::from_secs(5);

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

pub async fn newcomer_gets_roster_then_history_then_ready(room: Room) {
    let dir = tempfile::tempdir().unwrap();
    let host = room.start(room.config(dir.path())).await;

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

pub async fn messages_reach_every_member_in_one_order_with_increasing_timestamps(room: Room) {
    let dir = tempfile::tempdir().unwrap();
    let host = room.start(room.config(dir.path())).await;
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

pub async fn bad_input_gets_clear_errors_and_the_room_keeps_working(room: Room) {
    let dir = tempfile::tempdir().unwrap();
    let host = room.start(room.config(dir.path())).await;

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

pub async fn one_ip_is_rate_limited_after_its_grace(room: Room) {
    let dir = tempfile::tempdir().unwrap();
    let host = room.start(room.config(dir.path())).await;
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

pub async fn a_class_var_turns_the_rate_limiter_off(room: Room) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = room.config(dir.path());
    let chat = config.classes.get_mut("chat-room").unwrap();
    chat.vars.insert("RATE_LIMIT".into(), "off".into());
    let host = room.start(config).await;
    let (mut c, _) = join_chat(&host, ip(9), "unlimited", "fast").await;
    for i in 0..20 {
        c.send_json(json!({"message": format!("m{i}")})).await;
    }
    let got = recv_messages(&mut c, 20).await;
    assert_eq!(got.len(), 20, "no message was limited");
    host.stop().await;
}

pub async fn rooms_never_see_each_others_messages(room: Room) {
    let dir = tempfile::tempdir().unwrap();
    let host = room.start(room.config(dir.path())).await;
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

pub async fn leaving_members_are_announced(room: Room) {
    let dir = tempfile::tempdir().unwrap();
    let host = room.start(room.config(dir.path())).await;
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

pub async fn a_message_sent_before_a_client_names_itself_reaches_it_once_after_joining(room: Room) {
    let dir = tempfile::tempdir().unwrap();
    let host = room.start(room.config(dir.path())).await;
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

pub async fn history_survives_a_restart_on_the_same_data_file(room: Room) {
    let dir = tempfile::tempdir().unwrap();
    let host = room.start(room.config(dir.path())).await;
    let (mut a, _) = join_chat(&host, ip(1), "durable", "a").await;
    for i in 0..3 {
        a.send_json(json!({"message": format!("kept {i}")})).await;
    }
    let before = recv_messages(&mut a, 3).await;
    drop(a);
    host.stop().await;

    let host = room.start(room.config(dir.path())).await;
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

pub async fn the_history_endpoint_answers_the_last_messages_oldest_first(room: Room) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = room.config(dir.path());
    let chat = config.classes.get_mut("chat-room").unwrap();
    chat.vars.insert("RATE_LIMIT".into(), "off".into());
    let host = room.start(config).await;
    let (status, body) = host.http("GET", "/api/room/books/history", b"").await;
    assert_eq!((status, body.as_str()), (200, "[]"), "no messages yet");
    let (mut a, _) = join_chat(&host, ip(1), "books", "a").await;
    for i in 0..5 {
        a.send_json(json!({"message": format!("page {i}")})).await;
    }
    let sent = recv_messages(&mut a, 5).await;
    assert_eq!(room_history(host.addr, "books").await, sent);
    let history = |query: &'static str| {
        let host = &host;
        async move {
            let path = format!("/api/room/books/history{query}");
            let (status, body) = host.http("GET", &path, b"").await;
            (
                status,
                serde_json::from_str::<Value>(&body).unwrap_or(Value::Null),
            )
        }
    };
    assert_eq!(history("").await, (200, Value::from(sent.clone())));
    assert_eq!(
        history("?limit=2").await,
        (200, Value::from(sent[3..].to_vec())),
        "the last two, oldest first"
    );
    assert_eq!(history("?limit=0").await, (200, json!([])));
    assert_eq!(history("?limit=5000").await.1, Value::from(sent));
    assert_eq!(history("?limit=abc").await.0, 400);
    assert_eq!(history("?limit=-1").await.0, 400);
    host.stop().await;
}

pub async fn concurrent_connects_to_a_new_room_create_exactly_one_instance(room: Room) {
    let dir = tempfile::tempdir().unwrap();
    let host = room.start(room.config(dir.path())).await;
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

pub async fn an_evicted_room_keeps_its_clients_and_wakes_on_the_next_message(room: Room) {
    let dir = tempfile::tempdir().unwrap();
    let host = room
        .start(room.hibernating_config(dir.path(), IDLE_MS))
        .await;
    let (mut ann, _) = join_chat(&host, ip(1), "sleepy", "ann").await;
    let (mut bob, _) = join_chat(&host, ip(2), "sleepy", "bob").await;
    assert_eq!(ann.recv_json().await, json!({"joined": "bob"}));

    // Every instance (room and rate limiters) goes away; the sockets stay.
    assert!(
        eventually(EVICTED_WITHIN, || host.stats().instances_live == 0).await,
        "{:?}",
        host.stats()
    );
    let s = host.stats();
    assert_eq!(s.sockets_open, 2);
    assert!(s.evictions >= 1);

    // The next message wakes the room; it knows who is who from the host.
    ann.send_json(json!({"message": "anyone?"})).await;
    for c in [&mut ann, &mut bob] {
        let m = c.recv_json().await;
        assert_eq!(
            (m["name"].as_str(), m["message"].as_str()),
            (Some("ann"), Some("anyone?"))
        );
    }
    assert!(host.stats().wakes >= 1);

    // A newcomer after another eviction gets the right roster and history.
    assert!(eventually(EVICTED_WITHIN, || host.stats().instances_live == 0).await);
    let (_cat, frames) = join_chat(&host, ip(3), "sleepy", "cat").await;
    assert_eq!(frames[0], json!({"joined": "ann"}));
    assert_eq!(frames[1], json!({"joined": "bob"}));
    assert_eq!(frames[2]["message"], "anyone?");
    assert_eq!(frames[3], json!({"joined": "cat"}));
    assert_eq!(frames[4], json!({"ready": true}));
    // Members leaving an evicted room are still announced.
    assert!(eventually(EVICTED_WITHIN, || host.stats().instances_live == 0).await);
    bob.close().await;
    assert_eq!(ann.recv_json().await, json!({"joined": "cat"}));
    assert_eq!(ann.recv_json().await, json!({"quit": "bob"}));
    host.stop().await;
}

pub async fn pings_are_answered_by_the_host_without_waking_the_room(room: Room) {
    let dir = tempfile::tempdir().unwrap();
    let host = room
        .start(room.hibernating_config(dir.path(), IDLE_MS))
        .await;
    let (mut ann, _) = join_chat(&host, ip(1), "quiet", "ann").await;
    assert!(eventually(EVICTED_WITHIN, || host.stats().instances_live == 0).await);
    let before = host.stats();
    for _ in 0..3 {
        ann.send_text("ping").await;
        assert_eq!(ann.recv_text().await, "pong");
    }
    let after = host.stats();
    assert_eq!(after.instances_live, 0, "still evicted");
    assert_eq!(
        after.instances_created, before.instances_created,
        "never woken"
    );
    assert_eq!(after.auto_responses, before.auto_responses + 3);
    host.stop().await;
}

/// The two rooms store the same keys and values: a room's history written by
/// one is served by the other, and timestamps keep increasing across the switch.
pub async fn a_room_switched_to_the_other_language_keeps_its_history(from: Room) {
    let to = match from {
        Room::Rust => Room::Js,
        Room::Js => Room::Rust,
    };
    let dir = tempfile::tempdir().unwrap();
    let host = from.start(from.config(dir.path())).await;
    let (mut a, _) = join_chat(&host, ip(1), "switch", "a").await;
    for i in 0..3 {
        a.send_json(json!({"message": format!("before {i}")})).await;
    }
    let before = recv_messages(&mut a, 3).await;
    drop(a);
    host.stop().await;

    let host = to.start(to.config(dir.path())).await;
    let (mut b, frames) = join_chat(&host, ip(2), "switch", "b").await;
    let replayed: Vec<Value> = frames
        .into_iter()
        .filter(|f| f.get("message").is_some())
        .collect();
    assert_eq!(replayed, before, "{from:?} → {to:?}");
    b.send_json(json!({"message": "after"})).await;
    let after = recv_messages(&mut b, 1).await;
    assert!(after[0]["timestamp"].as_u64() > before[2]["timestamp"].as_u64());
    let mut all = before;
    all.extend(after);
    assert_eq!(room_history(host.addr, "switch").await, all);
    host.stop().await;
}
