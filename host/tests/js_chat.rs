//! The JavaScript chat room (`guests-js/chat-room`, built with
//! componentize-js) passes the same chat tests as the Rust room: the
//! edge-chat-demo protocol, rate limiting, hibernation and restarts (the
//! bodies are in `common/chat.rs`).

#![allow(clippy::unwrap_used)]

mod common;

use common::chat::{Room, chat_tests, protocol_tests};

protocol_tests!(Room::Js);

chat_tests!(Room::Js =>
    an_evicted_room_keeps_its_clients_and_wakes_on_the_next_message,
    pings_are_answered_by_the_host_without_waking_the_room,
);

/// Both rooms store the same keys and values (`msg:<16-digit timestamp>` →
/// the message's JSON): switching a room's class from Rust to JS keeps its
/// history and its timestamps' order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_js_room_serves_the_rust_rooms_history() {
    common::chat::a_room_switched_to_the_other_language_keeps_its_history(Room::Rust).await;
}

/// ... and from JS back to Rust.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_room_serves_the_js_rooms_history() {
    common::chat::a_room_switched_to_the_other_language_keeps_its_history(Room::Js).await;
}

/// The JS room's component creates 4 core instances (StarlingMonkey, its
/// WASI adapter and their glue): `limits.max_core_instances` decides whether
/// it may, and a refusal fails the request, not the host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_core_instance_cap_is_a_setting() {
    for (cap, status) in [(3, 500), (4, 200)] {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Room::Js.config(dir.path());
        config.limits.max_core_instances = cap;
        let host = Room::Js.start(config).await;
        let (got, _) = host.http("GET", "/api/room/caps/history", b"").await;
        assert_eq!(got, status, "max_core_instances = {cap}");
        host.stop().await;
    }
}

/// `durable.js` against the host, through its test object
/// (`guests-js/chat-room/test/layer-probe.js`): storage (single and batch
/// calls, bytes, a host error as a `RoomhostError`), an alarm that fires,
/// calls between objects and their rejections, the class's vars as `env`,
/// and an `async` handler.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_durable_object_layer_reaches_every_capability() {
    use serde_json::{Value, json};
    let dir = tempfile::tempdir().unwrap();
    let mut config = Room::Js.config(dir.path());
    common::js::add_layer_probe(&mut config);
    let host = Room::Js.start(config).await;
    let ask = |method: &'static str, path: &'static str| {
        let host = &host;
        async move {
            let (status, body) = host.http(method, path, b"").await;
            assert_eq!(status, 200, "{path}: {body}");
            serde_json::from_str::<Value>(&body).unwrap()
        }
    };

    assert_eq!(
        ask("POST", "/lp/a/storage").await,
        json!({
            "one": {"x": 1},
            "many": {"a": {"x": 1}, "b": 2},
            "listed": ["raw", "c", "b"],
            "raw": [255, 0],
            "deleted": true,
            "deletedMany": 2,
            "tooLong": {"kind": "key-too-large", "value": 2048},
            "left": ["raw"],
            "missing": null,
        })
    );
    assert_eq!(
        ask("POST", "/lp/a/call").await,
        json!({
            "echo": {"ok": "HI"},
            "refused": {"kind": "rejected", "value": "no method nope"},
            "noClass": {"kind": "no-such-class", "value": "no-such-class"},
        })
    );
    assert_eq!(
        ask("GET", "/lp/a/env").await,
        json!({"env": {"GREETING": "hi"}, "id": {"class": "layer-probe", "name": "a"}})
    );
    assert_eq!(ask("GET", "/lp/a/async").await, json!({"sum": 42}));

    assert_eq!(ask("GET", "/lp/a/alarmed").await, Value::Null);
    assert_eq!(
        ask("POST", "/lp/a/alarm?in=100").await,
        json!({"pending": true})
    );
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let alarmed = ask("GET", "/lp/a/alarmed").await;
        if alarmed != Value::Null {
            assert_eq!(alarmed, json!({"retryCount": 0}));
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the alarm fired");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(host.stats().traps, 0);
    host.stop().await;
}
