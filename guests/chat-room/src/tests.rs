//! The room on the SDK's test host: the demo's protocol, hibernation and the
//! rate limiter, without a running host. (`host/tests/chat.rs` runs the same
//! protocol against the real host over WebSockets.)

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use roomhost_sdk::testing::{TestObject, request, stub_class};
use roomhost_sdk::{CallError, Frame, Socket};
use serde_json::{Value, json};

use super::ChatRoom;

fn room() -> TestObject<ChatRoom> {
    // Every message is allowed unless a test says otherwise.
    stub_class("rate-limiter", |_, _, _| {
        Ok(br#"{"allowed":true,"cooldown":0}"#.to_vec())
    });
    TestObject::new("chat-room", "lobby")
}

/// Connects from `ip` and joins as `name`; returns the socket and what it
/// received while joining.
fn join_from(room: &mut TestObject<ChatRoom>, name: &str, ip: &str) -> (Socket, Vec<Value>) {
    let mut upgrade = request("GET", "/api/room/lobby/websocket");
    upgrade.client_ip = ip.to_string();
    let ws = room
        .try_connect_with(upgrade)
        .unwrap_or_else(|r| panic!("refused: {} {}", r.status, r.body_text()));
    room.send_json(ws, &json!({ "name": name }));
    let got = room.received_json(ws);
    (ws, got)
}

fn join(room: &mut TestObject<ChatRoom>, name: &str) -> (Socket, Vec<Value>) {
    join_from(room, name, "10.0.0.1")
}

fn say(room: &mut TestObject<ChatRoom>, ws: Socket, message: &str) {
    room.send_json(ws, &json!({ "message": message }));
}

#[test]
fn a_newcomer_gets_the_roster_then_the_history_then_ready() {
    let mut room = room();
    let (alice, got) = join(&mut room, "alice");
    assert_eq!(got, [json!({"joined": "alice"}), json!({"ready": true})]);
    say(&mut room, alice, "hello");
    room.received(alice);

    let (_bob, got) = join(&mut room, "bob");
    assert_eq!(got[0], json!({"joined": "alice"}));
    assert_eq!(got[1]["name"], "alice");
    assert_eq!(got[1]["message"], "hello");
    assert_eq!(
        &got[2..],
        [json!({"joined": "bob"}), json!({"ready": true})]
    );
    // Alice hears that bob joined.
    assert_eq!(room.received_json(alice), [json!({"joined": "bob"})]);
    assert_eq!(room.tags(alice), ["member"]);
}

#[test]
fn messages_reach_every_member_with_increasing_timestamps_even_across_evictions() {
    let mut room = room();
    let (alice, _) = join(&mut room, "alice");
    let (bob, _) = join(&mut room, "bob");
    room.received(alice);

    // The clock does not move between these, and the room is evicted in
    // between: timestamps must still increase (read back from storage).
    say(&mut room, alice, "one");
    room.evict();
    say(&mut room, bob, "two");
    let at_alice = room.received_json(alice);
    let at_bob = room.received_json(bob);
    assert_eq!(at_alice, at_bob);
    let texts: Vec<&str> = at_alice
        .iter()
        .map(|m| m["message"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(texts, ["one", "two"]);
    let t0 = at_alice[0]["timestamp"].as_u64().unwrap_or(0);
    let t1 = at_alice[1]["timestamp"].as_u64().unwrap_or(0);
    assert!(t1 > t0, "{t1} after {t0}");
    assert_eq!(room.instances(), 2);

    // Both are stored, under zero-padded timestamps.
    let keys: Vec<String> = room.storage().into_keys().collect();
    assert_eq!(keys, [format!("msg:{t0:016}"), format!("msg:{t1:016}")]);
}

#[test]
fn a_room_woken_after_eviction_knows_its_members() {
    let mut room = room();
    let (alice, _) = join(&mut room, "alice");
    room.evict();
    // The roster is rebuilt from the sockets' tags and attachments.
    let (_bob, got) = join(&mut room, "bob");
    assert_eq!(got[0], json!({"joined": "alice"}));
    room.evict();
    room.close(alice, 1000, "");
    let (carol, got) = join(&mut room, "carol");
    assert!(!got.contains(&json!({"joined": "alice"})), "{got:?}");
    assert_eq!(room.sockets().len(), 2);
    assert_eq!(
        room.attachment::<Value>(carol),
        Some(json!({"ip": "10.0.0.1", "name": "carol"}))
    );
}

#[test]
fn pings_are_answered_by_the_host_without_waking_the_room() {
    let mut room = room();
    let (alice, _) = join(&mut room, "alice");
    room.evict();
    room.send_text(alice, "ping");
    assert_eq!(room.received_text(alice), ["pong"]);
    assert_eq!(room.instances(), 1, "the ping woke the room");
}

#[test]
fn leaving_members_are_announced_to_the_others() {
    let mut room = room();
    let (alice, _) = join(&mut room, "alice");
    let (bob, _) = join(&mut room, "bob");
    room.received(alice);
    room.close(bob, 1001, "gone");
    assert_eq!(room.received_json(alice), [json!({"quit": "bob"})]);
}

#[test]
fn bad_input_gets_clear_errors_and_the_room_keeps_working() {
    let mut room = room();
    let (alice, _) = join(&mut room, "alice");
    room.send(alice, Frame::Binary(vec![1, 2]));
    room.send_text(alice, "{not json");
    room.send_text(alice, "[1]");
    room.send_json(alice, &json!({"message": "x".repeat(257)}));
    room.send_json(alice, &json!({"message": {"nested": true}}));
    room.send_json(alice, &json!({"other": 1}));
    let errors: Vec<String> = room
        .received_json(alice)
        .into_iter()
        .map(|e| e["error"].as_str().unwrap_or("?").to_string())
        .collect();
    assert_eq!(errors[0], "Binary frames are not supported.");
    assert!(errors[1].starts_with("Malformed JSON: "), "{}", errors[1]);
    assert_eq!(errors[2], "Malformed JSON: expected a JSON object");
    assert_eq!(errors[3], "Message too long.");
    assert_eq!(errors[4], "Message must be a string.");
    assert_eq!(errors[5], "Expected {\"message\": ...}.");
    say(&mut room, alice, "still here");
    assert_eq!(room.received_json(alice)[0]["message"], "still here");

    // A name that is too long is refused and the socket closed with 1009.
    let ws = room.connect("/api/room/lobby/websocket");
    room.send_json(ws, &json!({"name": "n".repeat(33)}));
    assert_eq!(room.received_json(ws), [json!({"error": "Name too long."})]);
    assert_eq!(room.closed(ws), Some((1009, "Name too long.".to_string())));
}

#[test]
fn the_rate_limiter_is_asked_per_ip_and_fails_open() {
    let mut room = room();
    let asked = Rc::new(Cell::new(0));
    let seen = asked.clone();
    stub_class("rate-limiter", move |ip, method, _| {
        seen.set(seen.get() + 1);
        assert_eq!((ip, method), ("10.9.9.9", "check"));
        Ok(br#"{"allowed":false,"cooldown":3}"#.to_vec())
    });
    let (spammer, _) = join_from(&mut room, "spam", "10.9.9.9");
    say(&mut room, spammer, "buy now");
    assert_eq!(
        room.received_json(spammer),
        [json!({"error": "Your IP is being rate-limited, please try again later."})]
    );
    assert_eq!(asked.get(), 1);
    assert!(room.storage().is_empty());

    // A limiter that fails lets the message through.
    stub_class("rate-limiter", |_, _, _| Err(CallError::Timeout));
    say(&mut room, spammer, "now?");
    assert_eq!(room.received_json(spammer)[0]["message"], "now?");
}

#[test]
fn the_class_var_turns_the_rate_limiter_off() {
    let mut room = room();
    room.set_var("RATE_LIMIT", "off");
    stub_class("rate-limiter", |_, _, _| panic!("the limiter was asked"));
    let (alice, _) = join(&mut room, "alice");
    say(&mut room, alice, "free");
    assert_eq!(room.received_json(alice)[0]["message"], "free");
}

#[test]
fn history_answers_the_last_messages_oldest_first() {
    let mut room = room();
    let (alice, _) = join(&mut room, "alice");
    for i in 0..5 {
        say(&mut room, alice, &format!("m{i}"));
        room.advance(Duration::from_millis(10));
    }
    let response = room.get("/api/room/lobby/history?limit=2");
    assert_eq!(response.status, 200);
    let got: Vec<Value> = serde_json::from_slice(&response.body).unwrap_or_default();
    let texts: Vec<&str> = got.iter().filter_map(|m| m["message"].as_str()).collect();
    assert_eq!(texts, ["m3", "m4"]);

    let bad = room.get("/api/room/lobby/history?limit=-1");
    assert_eq!(
        (bad.status, bad.body_text().as_str()),
        (400, "limit must be a non-negative integer")
    );
    assert_eq!(room.get("/api/room/lobby/other").status, 400);
}
