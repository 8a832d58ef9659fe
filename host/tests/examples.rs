//! The example objects in `examples/` against a real host: `counter`
//! (serialized increments, separate names, watchers over WebSockets, data kept
//! across a restart) and `session-manager` (sessions swept by an alarm at their
//! expiry, also after a restart).

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use roomhost::Config;
use roomhost::ids::ObjectId;
use roomhost::storage::{Db, ListQuery, ObjectStorage};
use serde_json::{Value, json};

/// The test config plus the two examples, routed as their READMEs show.
fn examples_config(dir: &Path) -> Config {
    examples_on(test_config(dir))
}

fn examples_on(mut config: Config) -> Config {
    for (class, path) in [
        ("counter", "/counter/{name}/*"),
        ("session-manager", "/sessions/{name}/*"),
    ] {
        add_class(&mut config, class, path);
    }
    config
}

fn parse(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// A request whose answer must be JSON; returns (status, JSON).
async fn call(host: &TestHost, method: &str, path: &str, body: &[u8]) -> (u16, Value) {
    let (status, text) = host.http(method, path, body).await;
    (status, parse(&text))
}

/// Sleeps until the wall clock reaches `at_ms`.
async fn sleep_until_ms(at_ms: u64) {
    let now = now_ms();
    if at_ms > now {
        tokio::time::sleep(Duration::from_millis(at_ms - now)).await;
    }
}

/// What the database holds for one object (read with the host stopped): its
/// keys and its pending alarm.
fn stored(data: &Path, class: &str, name: &str) -> (Vec<String>, Option<u64>) {
    let db = Db::open(data).unwrap();
    let storage = ObjectStorage::new(db, ObjectId::new(class, name));
    let keys = storage
        .list(&ListQuery::default())
        .unwrap()
        .into_iter()
        .map(|(k, _)| String::from_utf8(k).unwrap())
        .collect();
    (keys, storage.alarm().unwrap())
}

// ---------------------------------------------------------------- counter

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_increments_are_serialized_and_names_are_separate() {
    let dir = tempfile::tempdir().unwrap();
    let host = start_host(examples_config(dir.path())).await;

    // 50 increments on 50 connections at once: the one instance runs them one
    // at a time, so each sees a distinct value and none is lost.
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let addr = host.addr;
        tasks
            .spawn(async move { http_request(addr, "POST", "/counter/race/increment", b"").await });
    }
    let mut seen = Vec::new();
    while let Some(done) = tasks.join_next().await {
        let (status, body) = done.unwrap();
        assert_eq!(status, 200, "{body}");
        seen.push(parse(&body)["value"].as_i64().unwrap());
    }
    seen.sort_unstable();
    assert_eq!(seen, (1..=50).collect::<Vec<i64>>());
    assert_eq!(
        call(&host, "GET", "/counter/race/value", b"").await,
        (200, json!({"value": 50}))
    );

    // Another name is another counter.
    assert_eq!(
        call(&host, "GET", "/counter/other/value", b"").await,
        (200, json!({"value": 0}))
    );
    assert_eq!(
        call(&host, "POST", "/counter/other/increment?by=5", b"").await,
        (200, json!({"value": 5}))
    );
    assert_eq!(
        call(&host, "POST", "/counter/other/decrement?by=7", b"").await,
        (200, json!({"value": -2}))
    );
    assert_eq!(
        call(&host, "POST", "/counter/race/decrement", b"").await,
        (200, json!({"value": 49}))
    );
    assert_eq!(
        call(&host, "POST", "/counter/race/reset", b"").await,
        (200, json!({"value": 0}))
    );
    assert_eq!(
        call(&host, "GET", "/counter/other/value", b"").await,
        (200, json!({"value": -2}))
    );
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counter_refuses_bad_requests_with_json_errors() {
    let dir = tempfile::tempdir().unwrap();
    let host = start_host(examples_config(dir.path())).await;
    for (method, path, status) in [
        ("POST", "/counter/c/increment?by=abc", 400),
        ("POST", "/counter/c/increment?by=1.5", 400),
        ("POST", "/counter/c/increment?by=99999999999999999999", 400),
        ("GET", "/counter/c/nope", 404),
        ("GET", "/counter/c", 404),
        ("GET", "/counter/c/value/extra", 404),
        ("POST", "/counter/c/value", 405),
        ("GET", "/counter/c/increment", 405),
    ] {
        let (got, body) = call(&host, method, path, b"").await;
        assert_eq!(got, status, "{method} {path}: {body}");
        assert!(body["error"].is_string(), "{method} {path}: {body}");
    }
    // Overflow is refused and changes nothing.
    let max = i64::MAX;
    assert_eq!(
        call(
            &host,
            "POST",
            &format!("/counter/c/increment?by={max}"),
            b""
        )
        .await,
        (200, json!({"value": max}))
    );
    let (status, body) = call(&host, "POST", "/counter/c/increment", b"").await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("overflow"),
        "{body}"
    );
    // A negative step, percent-encoded.
    assert_eq!(
        call(&host, "POST", "/counter/c/increment?by=%2D1", b"").await,
        (200, json!({"value": max - 1}))
    );
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_get_every_new_value_even_after_eviction() {
    let dir = tempfile::tempdir().unwrap();
    let host = start_host(examples_on(hibernating_config(dir.path(), 200))).await;
    host.http("POST", "/counter/w/increment?by=10", b"").await;

    // A new watcher is sent the current value at once, and again on asking.
    let mut a = host.ws("/counter/w/watch").await;
    assert_eq!(a.recv_json().await, json!({"value": 10}));
    a.send_text("get").await;
    assert_eq!(a.recv_json().await, json!({"value": 10}));
    let mut b = host.ws("/counter/w/anything").await;
    assert_eq!(b.recv_json().await, json!({"value": 10}));

    for expected in 11..=13 {
        host.http("POST", "/counter/w/increment", b"").await;
        for c in [&mut a, &mut b] {
            assert_eq!(c.recv_json().await, json!({"value": expected}));
        }
    }
    // No change, no frame: the next frame is the decrement's.
    host.http("POST", "/counter/w/increment?by=0", b"").await;
    host.http("POST", "/counter/w/decrement", b"").await;
    assert_eq!(a.recv_json().await, json!({"value": 12}));
    // Another counter's changes are not sent here.
    host.http("POST", "/counter/elsewhere/increment", b"").await;

    // The instance is evicted while the watchers stay connected (their tags
    // stay with the host); the next change wakes it and still reaches them.
    assert!(
        eventually(Duration::from_secs(5), || host.stats().instances_live == 0).await,
        "{:?}",
        host.stats()
    );
    host.http("POST", "/counter/w/reset", b"").await;
    // `b` has not read the decrement's frame yet.
    assert_eq!(b.recv_json().await, json!({"value": 12}));
    assert_eq!(b.recv_json().await, json!({"value": 0}));
    assert_eq!(a.recv_json().await, json!({"value": 0}));
    a.close().await;
    b.close().await;
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_counter_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let host = start_host(examples_config(dir.path())).await;
    host.http("POST", "/counter/kept/increment?by=41", b"")
        .await;
    assert_eq!(
        call(&host, "POST", "/counter/kept/increment", b"").await,
        (200, json!({"value": 42}))
    );
    host.stop().await;

    let host = start_host(examples_config(dir.path())).await;
    assert_eq!(
        call(&host, "GET", "/counter/kept/value", b"").await,
        (200, json!({"value": 42}))
    );
    assert_eq!(
        call(&host, "POST", "/counter/kept/increment", b"").await,
        (200, json!({"value": 43}))
    );
    host.stop().await;
}

// -------------------------------------------------------- session-manager

/// Creates a session; returns (id, expires).
async fn create(host: &TestHost, name: &str, query: &str, data: &Value) -> (String, u64) {
    let (status, body) = call(
        host,
        "POST",
        &format!("/sessions/{name}/sessions{query}"),
        data.to_string().as_bytes(),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let id = body["session_id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 64, "{body}");
    (id, body["expires"].as_u64().unwrap())
}

async fn live_ids(host: &TestHost, name: &str) -> Vec<String> {
    let (status, body) = call(host, "GET", &format!("/sessions/{name}/sessions"), b"").await;
    assert_eq!(status, 200, "{body}");
    let mut ids: Vec<String> = body
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_swept_by_the_alarm_at_their_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let host = start_host(examples_config(dir.path())).await;
    let data = host.data.clone();

    // Long first: creating `short` then moves the alarm earlier; `medium`
    // leaves it; after sweeping `short` the alarm moves on to `medium`.
    let long_data = json!({"user": "long", "roles": ["a", "b"], "n": 1});
    let (long, long_expires) = create(&host, "app", "", &long_data).await;
    let (short, short_expires) =
        create(&host, "app", "?ttl_ms=300", &json!({"user": "short"})).await;
    let (medium, medium_expires) =
        create(&host, "app", "?ttl_ms=700", &json!({"user": "medium"})).await;
    let day = 86_400_000;
    assert!(
        long_expires >= now_ms() + day - 60_000,
        "default TTL is a day"
    );
    assert!(short_expires < medium_expires);

    for (id, expected) in [
        (&long, long_data.clone()),
        (&short, json!({"user": "short"})),
        (&medium, json!({"user": "medium"})),
    ] {
        assert_eq!(
            call(&host, "GET", &format!("/sessions/app/sessions/{id}"), b"").await,
            (200, expected)
        );
    }
    assert_eq!(
        live_ids(&host, "app").await,
        sorted(vec![long.clone(), short.clone(), medium.clone()])
    );
    // Another object has its own sessions.
    assert!(live_ids(&host, "other-app").await.is_empty());

    // Well past both short expiries: both were swept by the alarm, not just
    // hidden (deleting a stored but expired session would answer 204).
    sleep_until_ms(medium_expires + 500).await;
    assert_eq!(live_ids(&host, "app").await, vec![long.clone()]);
    for id in [&short, &medium] {
        let path = format!("/sessions/app/sessions/{id}");
        assert_eq!(host.http("GET", &path, b"").await.0, 404);
        assert_eq!(host.http("DELETE", &path, b"").await.0, 404, "swept");
    }
    assert_eq!(
        call(&host, "GET", &format!("/sessions/app/sessions/{long}"), b"").await,
        (200, long_data)
    );
    host.stop().await;

    // In the database: only the long session, and the alarm at its expiry.
    let (keys, alarm) = stored(&data, "session-manager", "app");
    assert_eq!(keys, vec![format!("session:{long}")]);
    assert_eq!(alarm, Some(long_expires));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_requests_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let host = start_host(examples_config(dir.path())).await;
    let base = "/sessions/checks/sessions";
    for (method, path, body, status) in [
        ("POST", base.to_string(), &b"{not json"[..], 400),
        ("POST", base.to_string(), &b""[..], 400),
        ("POST", format!("{base}?ttl_ms=abc"), &b"{}"[..], 400),
        ("POST", format!("{base}?ttl_ms=0"), &b"{}"[..], 400),
        ("POST", format!("{base}?ttl_ms=-5"), &b"{}"[..], 400),
        (
            "POST",
            format!("{base}?ttl_ms={}", u64::MAX),
            &b"{}"[..],
            400,
        ),
        ("PUT", base.to_string(), &b"{}"[..], 405),
        ("GET", format!("{base}/{}", "0".repeat(64)), &b""[..], 404),
        ("GET", format!("{base}/not-an-id"), &b""[..], 404),
        (
            "DELETE",
            format!("{base}/{}", "0".repeat(64)),
            &b""[..],
            404,
        ),
        ("GET", "/sessions/checks/nope".to_string(), &b""[..], 404),
        ("GET", "/sessions/checks".to_string(), &b""[..], 404),
    ] {
        let (got, answer) = call(&host, method, &path, body).await;
        assert_eq!(got, status, "{method} {path}: {answer}");
        assert!(answer["error"].is_string(), "{method} {path}: {answer}");
    }
    assert!(live_ids(&host, "checks").await.is_empty(), "nothing stored");

    // Any JSON value is session data; deleting answers 204 once.
    let (id, _) = create(&host, "checks", "?ttl_ms=60000", &json!([1, "two", null])).await;
    let path = format!("{base}/{id}");
    assert_eq!(
        call(&host, "GET", &path, b"").await,
        (200, json!([1, "two", null]))
    );
    assert_eq!(host.http("PATCH", &path, b"").await.0, 405);
    assert_eq!(host.http("DELETE", &path, b"").await, (204, String::new()));
    assert_eq!(host.http("GET", &path, b"").await.0, 404);
    assert_eq!(host.http("DELETE", &path, b"").await.0, 404);
    assert!(live_ids(&host, "checks").await.is_empty());
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_alarm_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let host = start_host(examples_config(dir.path())).await;
    let data = host.data.clone();
    let (id, expires) = create(&host, "durable", "?ttl_ms=800", &json!({"k": "v"})).await;
    host.stop().await;
    let (keys, alarm) = stored(&data, "session-manager", "durable");
    assert_eq!(keys, vec![format!("session:{id}")]);
    assert_eq!(alarm, Some(expires), "the alarm is stored with the session");

    // A new host, and no request to the object: only the stored alarm wakes it.
    let host = start_host(examples_config(dir.path())).await;
    sleep_until_ms(expires + 500).await;
    host.stop().await;
    let (keys, alarm) = stored(&data, "session-manager", "durable");
    assert!(keys.is_empty(), "swept after the restart: {keys:?}");
    assert_eq!(alarm, None, "no sessions left, no alarm");
}
