//! Hibernation: idle instances are evicted while their WebSockets stay open,
//! and the next event wakes them as if nothing happened.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::chat::{Room, chat_tests};
use common::*;
use serde_json::json;

// The chat room's hibernation tests are in `common/chat.rs`, shared with the
// JavaScript room (`js_chat.rs`).
chat_tests!(Room::Rust =>
    an_evicted_room_keeps_its_clients_and_wakes_on_the_next_message,
    pings_are_answered_by_the_host_without_waking_the_room,
);

const IDLE_MS: u64 = 300;
const EVICTED_WITHIN: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guest_reads_when_the_host_last_auto_responded_on_a_socket() {
    let dir = tempfile::tempdir().unwrap();
    let host = start_host(hibernating_config(dir.path(), IDLE_MS)).await;
    let mut a = host.ws("/probe/auto/ws").await;
    let mut b = host.ws("/probe/auto/ws").await;
    a.send_text("auto-ts").await;
    assert_eq!(a.recv_text().await, "none", "never answered yet");
    a.send_text("auto:hi:ho").await;
    assert_eq!(a.recv_text().await, "ok");

    // Answered by the host while the object is evicted.
    assert!(eventually(EVICTED_WITHIN, || host.stats().instances_live == 0).await);
    let before = now_ms();
    a.send_text("hi").await;
    assert_eq!(a.recv_text().await, "ho");
    let after = now_ms();
    assert_eq!(host.stats().instances_live, 0, "still evicted");

    // The woken guest reads the time for that socket, and none for the other.
    a.send_text("auto-ts").await;
    let at: u64 = a.recv_text().await.parse().unwrap();
    assert!(
        (before..=after).contains(&at),
        "{before} <= {at} <= {after}"
    );
    b.send_text("auto-ts").await;
    assert_eq!(b.recv_text().await, "none");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_read_is_cut_off_and_the_others_keep_receiving() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.limits.socket_send_queue_bytes = 256 * 1024;
    let host = start_host(config).await;
    let mut stalled = host.ws("/probe/slow/ws").await;
    let mut reader = host.ws("/probe/slow/ws").await;
    // Make sure both are accepted before the flood.
    stalled.send_text("echo:ready").await;
    assert_eq!(stalled.recv_text().await, "ready");
    let big = "x".repeat(60_000);
    // ~30 MB of broadcasts: far more than the kernel buffers plus the queue.
    for i in 0..500 {
        reader.send_text(&format!("broadcast:{i}:{big}")).await;
        let got = reader.recv_text().await;
        assert!(
            got.starts_with(&format!("{i}:")),
            "the reader gets every frame in order"
        );
        if host.stats().sockets_closed_slow > 0 && i > 50 {
            break;
        }
    }
    assert!(
        eventually(Duration::from_secs(10), || host.stats().sockets_closed_slow
            == 1)
        .await,
        "{:?}",
        host.stats()
    );
    assert!(
        eventually(Duration::from_secs(10), || host.stats().sockets_open == 1).await,
        "{:?}",
        host.stats()
    );
    reader.send_text("echo:fine").await;
    assert_eq!(reader.recv_text().await, "fine");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_instance_cap_evicts_the_least_recently_used_first() {
    let dir = tempfile::tempdir().unwrap();
    let config = roomhost::Config {
        max_live_instances: 2,
        ..test_config(dir.path())
    };
    let host = start_host(config).await;
    let mut a = host.ws("/probe/a/ws").await;
    let mut b = host.ws("/probe/b/ws").await;
    a.send_text("put:k=a").await;
    assert_eq!(a.recv_text().await, "ok");
    b.send_text("put:k=b").await;
    assert_eq!(b.recv_text().await, "ok");
    // a is the least recently used: object c takes its slot.
    assert_eq!(host.http("GET", "/probe/c/self", b"").await.1, "probe/c");
    let s = host.stats();
    assert!(s.instances_live <= 2, "{s:?}");
    assert_eq!(s.evictions, 1);
    b.send_text("inits").await;
    assert_eq!(b.recv_text().await, "1", "b kept its instance");
    // a wakes with its storage and socket intact.
    a.send_text("get:k").await;
    assert_eq!(a.recv_text().await, "a");
    assert_eq!(host.stats().wakes, 1);
    assert!(host.stats().instances_live <= 2);
    // Rotating through more objects than slots keeps working, promptly.
    let started = std::time::Instant::now();
    for round in 0..3 {
        for name in ["d", "e", "f", "g"] {
            let (status, body) = host.http("GET", &format!("/probe/{name}/self"), b"").await;
            assert_eq!(
                (status, body.as_str()),
                (200, format!("probe/{name}").as_str()),
                "round {round}"
            );
            assert!(host.stats().instances_live <= 2);
        }
    }
    assert!(
        started.elapsed() < std::time::Duration::from_secs(3),
        "no waiting for a slot"
    );
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_objects_without_sockets_go_away_entirely() {
    let dir = tempfile::tempdir().unwrap();
    let host = start_host(hibernating_config(dir.path(), IDLE_MS)).await;
    for name in ["x", "y", "z"] {
        assert_eq!(
            host.http(
                "POST",
                &format!("/probe/{name}/put?key=k&value={name}"),
                b""
            )
            .await
            .0,
            200
        );
    }
    assert_eq!(host.stats().actors_live, 3);
    assert!(
        eventually(EVICTED_WITHIN * 2, || host.stats().actors_live == 0).await,
        "{:?}",
        host.stats()
    );
    // They come back with their storage.
    assert_eq!(host.http("GET", "/probe/y/get?key=k", b"").await.1, "y");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_served_as_prometheus_text() {
    let dir = tempfile::tempdir().unwrap();
    let host = start_host(hibernating_config(dir.path(), IDLE_MS)).await;
    let (mut ann, _) = join_chat(&host, ip(1), "metered", "ann").await;
    assert!(eventually(EVICTED_WITHIN, || host.stats().instances_live == 0).await);
    ann.send_json(json!({"message": "wake up"})).await;
    ann.recv_json().await;
    let (status, body) = host.http("GET", "/metrics", b"").await;
    assert_eq!(status, 200);
    assert!(body.contains("roomhost_sockets_open 1"), "{body}");
    assert!(
        body.contains("roomhost_wakes_total 1") || body.contains("roomhost_wakes_total 2"),
        "{body}"
    );
    assert!(
        body.contains("roomhost_wake_latency_microseconds{quantile=\"0.99\"}"),
        "{body}"
    );
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wakes_take_pre_warmed_instances_and_messages_stay_in_order() {
    for prewarm in [1, 0] {
        let dir = tempfile::tempdir().unwrap();
        let mut config = hibernating_config(dir.path(), IDLE_MS);
        config.prewarm_instances = prewarm;
        let host = start_host(config).await;
        let (mut ann, _) = join_chat(&host, ip(1), "warm", "ann").await;
        ann.send_json(json!({"message": "one"})).await;
        let first = ann.recv_json().await;
        assert_eq!(first["message"], "one");

        assert!(eventually(EVICTED_WITHIN, || host.stats().instances_live == 0).await);
        if prewarm > 0 {
            // One warm instance per class in use (the room and the limiter).
            assert!(
                eventually(EVICTED_WITHIN, || host.stats().instances_warm == 2).await,
                "{:?}",
                host.stats()
            );
        } else {
            assert_eq!(host.stats().instances_warm, 0);
        }
        let created = host.stats().instances_created;

        // The wake binds a warm instance (the room's and the limiter's): the
        // room still knows its newest message.
        ann.send_json(json!({"message": "two"})).await;
        let second = ann.recv_json().await;
        assert_eq!(second["message"], "two");
        assert!(second["timestamp"].as_u64() > first["timestamp"].as_u64());
        assert!(host.stats().wakes >= 1);
        if prewarm > 0 {
            // Refilled off the wake's path.
            assert!(
                eventually(EVICTED_WITHIN, || host.stats().instances_warm == 2).await,
                "{:?}",
                host.stats()
            );
        }
        assert_eq!(host.stats().instances_created, created + 2);
        host.stop().await;
    }
}
