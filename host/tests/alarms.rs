//! Alarms: stored with the object's data, fired after eviction and after a
//! restart, retried with backoff when `on-alarm` traps, and part of the event's
//! transaction.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;

fn alarm_log_retries(body: &str) -> Vec<u32> {
    body.split(';')
        .filter(|e| !e.is_empty())
        .map(|e| e.split('@').next().unwrap().parse().unwrap())
        .collect()
}

fn alarm_log_times(body: &str) -> Vec<u64> {
    body.split(';')
        .filter(|e| !e.is_empty())
        .map(|e| e.split('@').nth(1).unwrap().parse().unwrap())
        .collect()
}

async fn alarm_log(host: &TestHost, name: &str) -> String {
    let (status, body) = host
        .http("GET", &format!("/probe/{name}/get?key=alarm-log"), b"")
        .await;
    if status == 404 { String::new() } else { body }
}

async fn wait_for_log(host: &TestHost, name: &str, within: Duration) -> String {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let log = alarm_log(host, name).await;
        if !log.is_empty() || tokio::time::Instant::now() > deadline {
            return log;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_wakes_an_evicted_object() {
    let dir = tempfile::tempdir().unwrap();
    let host = start_host(hibernating_config(dir.path(), 200)).await;
    let set_at = now_ms();
    assert_eq!(
        host.http("POST", "/probe/sleeper/alarm-set?in=1200", b"")
            .await
            .0,
        200
    );
    let (_, at) = host.http("GET", "/probe/sleeper/alarm-get", b"").await;
    let at: u64 = at.parse().unwrap();
    assert!(at >= set_at + 1200);
    // The object is evicted (and its actor gone) before the alarm is due.
    assert!(
        eventually(Duration::from_secs(1), || host.stats().actors_live == 0).await,
        "{:?}",
        host.stats()
    );
    assert!(alarm_log(&host, "sleeper").await.is_empty(), "not yet");
    let log = wait_for_log(&host, "sleeper", Duration::from_secs(5)).await;
    assert_eq!(alarm_log_retries(&log), vec![0]);
    assert!(alarm_log_times(&log)[0] >= at, "not early: {log} vs {at}");
    assert_eq!(
        host.http("GET", "/probe/sleeper/alarm-get", b"").await.1,
        "none",
        "cleared once delivered"
    );
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarms_survive_a_restart_and_late_ones_fire_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let host = start_host(test_config(dir.path())).await;
    assert_eq!(
        host.http("POST", "/probe/late/alarm-set?in=300", b"")
            .await
            .0,
        200
    );
    assert_eq!(
        host.http("POST", "/probe/future/alarm-set?in=2500", b"")
            .await
            .0,
        200
    );
    host.stop().await;
    // Down while `late` falls due.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let restarted = now_ms();
    let host = start_host(test_config(dir.path())).await;
    let log = wait_for_log(&host, "late", Duration::from_secs(3)).await;
    assert_eq!(
        alarm_log_retries(&log),
        vec![0],
        "the late alarm fired after the restart"
    );
    assert!(
        alarm_log_times(&log)[0] < restarted + 1500,
        "at once, not much later: {log}"
    );
    assert!(
        alarm_log(&host, "future").await.is_empty(),
        "the future one waits for its time"
    );
    let log = wait_for_log(&host, "future", Duration::from_secs(5)).await;
    assert_eq!(alarm_log_retries(&log), vec![0]);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trapping_alarm_is_retried_with_backoff() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.limits.alarm_retry_base_ms = 150;
    let host = start_host(config).await;
    host.http("POST", "/probe/flaky/put?key=alarm-fail-until&value=2", b"")
        .await;
    let set_at = now_ms();
    assert_eq!(
        host.http("POST", "/probe/flaky/alarm-set?in=0", b"")
            .await
            .0,
        200
    );
    let log = wait_for_log(&host, "flaky", Duration::from_secs(5)).await;
    // Deliveries 0 and 1 trapped; retry 2 succeeded after 150 + 300 ms of backoff.
    assert_eq!(alarm_log_retries(&log), vec![2], "{log}");
    assert!(
        alarm_log_times(&log)[0] >= set_at + 450,
        "{log} (set at {set_at})"
    );
    assert_eq!(host.stats().traps, 2);
    assert_eq!(
        host.http("GET", "/probe/flaky/alarm-get", b"").await.1,
        "none"
    );
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_that_keeps_trapping_is_given_up_after_six_retries() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.limits.alarm_retry_base_ms = 10;
    let host = start_host(config).await;
    host.http(
        "POST",
        "/probe/doomed/put?key=alarm-fail-until&value=100",
        b"",
    )
    .await;
    assert_eq!(
        host.http("POST", "/probe/doomed/alarm-set?in=0", b"")
            .await
            .0,
        200
    );
    // 1 delivery + 6 retries (10 + 20 + ... + 320 ms of backoff).
    assert!(
        eventually(Duration::from_secs(5), || host.stats().traps == 7).await,
        "{:?}",
        host.stats()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(host.stats().traps, 7, "no eighth delivery");
    assert_eq!(
        host.http("GET", "/probe/doomed/alarm-get", b"").await.1,
        "none",
        "deleted"
    );
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_set_in_a_trapped_event_is_not_set() {
    let dir = tempfile::tempdir().unwrap();
    let host = start_host(test_config(dir.path())).await;
    assert_eq!(
        host.http("POST", "/probe/oops/alarm-set-then-trap?in=100", b"")
            .await
            .0,
        500
    );
    assert_eq!(
        host.http("GET", "/probe/oops/alarm-get", b"").await.1,
        "none"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(alarm_log(&host, "oops").await.is_empty(), "it never fires");
    // Deleting a pending alarm stops it, and periodic alarms re-arm themselves.
    assert_eq!(
        host.http("POST", "/probe/cancel/alarm-set?in=300", b"")
            .await
            .0,
        200
    );
    assert_eq!(
        host.http("POST", "/probe/cancel/alarm-delete", b"").await.0,
        200
    );
    host.http("POST", "/probe/tick/put?key=alarm-rearm-ms&value=100", b"")
        .await;
    assert_eq!(
        host.http("POST", "/probe/tick/alarm-set?in=0", b"").await.0,
        200
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(alarm_log(&host, "cancel").await.is_empty());
    let ticks = alarm_log_retries(&alarm_log(&host, "tick").await).len();
    assert!(ticks >= 3, "a periodic alarm fired {ticks} times");
    host.stop().await;
}
