//! Unit tests on the SDK's in-memory host: no host, no wasm build, and the
//! host's semantics (transactions, hibernation, alarms) all the same.

use std::time::Duration;

use roomhost_sdk::testing::{TestObject, request};
use serde_json::{Value, json};

use super::{KEEP_MS, Room};

fn room() -> TestObject<Room> {
    TestObject::new("room", "lobby")
}

#[test]
fn messages_reach_everyone_and_are_stored() {
    let mut room = room();
    let ada = room.connect("/room/lobby/ws?user=ada");
    assert_eq!(room.received_json(ada), [json!({"welcome": "ada", "online": []})]);
    let bob = room.connect("/room/lobby/ws?user=bob");
    assert_eq!(room.received_json(bob), [json!({"welcome": "bob", "online": ["ada"]})]);

    room.send_text(ada, "hello");
    let at = roomhost_sdk::testing::now_ms();
    let expected = json!({"from": "ada", "text": "hello", "at": at});
    assert_eq!(room.received_json(ada), [expected.clone()]);
    assert_eq!(room.received_json(bob), [expected.clone()]);

    let history = room.get("/room/lobby/history");
    assert_eq!(history.status, 200);
    let history: Value = serde_json::from_slice(&history.body).unwrap_or_default();
    assert_eq!(history, json!([expected]));
}

#[test]
fn clients_and_state_survive_an_eviction() {
    let mut room = room();
    let ada = room.connect("/room/lobby/ws?user=ada");
    room.send_text(ada, "one");
    // The host drops idle instances; the socket and its name stay with it.
    room.evict();
    room.send_text(ada, "two");
    let texts: Vec<Value> = room.received_json(ada).into_iter().skip(1).map(|m| m["text"].clone()).collect();
    assert_eq!(texts, [json!("one"), json!("two")]);
    assert_eq!(room.instances(), 2);
    assert_eq!(room.stored::<u64>("count"), Some(2));
}

#[test]
fn an_alarm_expires_old_messages() {
    let mut room = room();
    let ada = room.connect("/room/lobby/ws?user=ada");
    room.send_text(ada, "old");
    room.advance(Duration::from_millis(KEEP_MS / 2));
    room.send_text(ada, "newer");
    // An hour after the first message, it goes; the second stays.
    room.advance(Duration::from_millis(KEEP_MS / 2));
    let left: Value = serde_json::from_slice(&room.get("/room/lobby/history").body).unwrap_or_default();
    assert_eq!(left.as_array().map(Vec::len), Some(1));
    assert_eq!(left[0]["text"], "newer");
    assert_eq!(room.stored::<u64>("count"), Some(1));
    // ...and the alarm is set for when it expires.
    assert!(room.alarm().is_some());
    room.advance(Duration::from_millis(KEEP_MS));
    assert_eq!(room.storage().keys().filter(|k| k.starts_with("msg:")).count(), 0);
    assert_eq!(room.alarm(), None);
}

#[test]
fn bad_requests_get_clear_errors() {
    let mut room = room();
    let long = format!("/room/lobby/ws?user={}", "x".repeat(33));
    let refused = room.try_connect_with(request("GET", &long)).err();
    assert_eq!(refused.map(|r| r.status), Some(400));
    assert_eq!(room.get("/room/lobby/nothing").status, 404);
}
