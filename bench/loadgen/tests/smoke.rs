//! Smoke tests: every scenario with tiny parameters against a real roomhost
//! started in-process on 127.0.0.1:0 with a fresh redb file.
//!
//! The host runs with its rate limiter on (the default config), so every
//! client here sends at most 3 messages — each from its own source address;
//! `swap`, whose senders send more, turns it off.

#![allow(clippy::unwrap_used)]

use loadgen::metrics::MetricsFetch;
use loadgen::{
    Common, DurableOpts, FanoutOpts, IdleOpts, JoinOpts, RunawayOpts, ScenarioFailed, SwapOpts,
    WakeOpts, durable, fanout, idle, join, runaway, swap, wake,
};
use roomhost::Config;
use roomhost::testing::TestHost;

/// A real host on 127.0.0.1:0 with a fresh redb file, `tweak`ed.
async fn start_host(tweak: impl FnOnce(&mut Config)) -> TestHost {
    TestHost::start_temp(tweak).await
}

/// The scenarios' common options against `host`.
fn options(host: &TestHost) -> Common {
    Common {
        timeout_secs: 30,
        ..Common::new(host.addr)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fanout_burst_delivers_everything() {
    let host = start_host(|_| {}).await;
    let opts = FanoutOpts {
        clients: 6,
        rooms: 2,
        senders: 2,
        messages: 3,
        interval_ms: None,
        drain_secs: 5,
    };
    let r = fanout(&options(&host), &opts).await.unwrap();
    println!("{r}");
    // 2 rooms × 2 senders × 3 messages × 3 members.
    assert_eq!(r.delivered.expected, 36);
    assert_eq!(r.delivered.deliveries, 36);
    assert_eq!(r.delivered.missing, 0);
    assert_eq!(r.sent, 12);
    assert_eq!(r.delivered.rate_limited, 0);
    // Each message reaches the 2 other members of its room.
    assert_eq!(r.delivered.latency.count, 24);
    assert_eq!(r.delivered.echo_latency.count, 12);
    assert!(r.delivered.deliveries_per_s > 0.0);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fanout_paced_delivers_everything() {
    let host = start_host(|_| {}).await;
    let opts = FanoutOpts {
        clients: 4,
        rooms: 1,
        senders: 2,
        messages: 3,
        interval_ms: Some(20),
        drain_secs: 5,
    };
    let r = fanout(&options(&host), &opts).await.unwrap();
    assert_eq!((r.delivered.deliveries, r.delivered.expected), (24, 24));
    // 3 messages 20 ms apart: the window is at least 40 ms.
    assert!(r.delivered.window_s >= 0.04, "{r}");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fanout_reports_rate_limiting_as_a_failure() {
    let host = start_host(|_| {}).await;
    let opts = FanoutOpts {
        clients: 2,
        rooms: 1,
        senders: 1,
        messages: 8,
        interval_ms: None,
        drain_secs: 5,
    };
    let err = fanout(&options(&host), &opts).await.unwrap_err();
    let failed = err.downcast_ref::<ScenarioFailed>().expect("a report");
    assert!(failed.reason.contains("rate-limited"), "{failed}");
    let limited = failed.json["rate_limited"].as_u64().unwrap();
    let delivered = failed.json["deliveries"].as_u64().unwrap();
    assert!(limited >= 1, "{failed}");
    // What was not refused reached both members.
    assert_eq!(delivered, 2 * (8 - limited), "{failed}");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn join_everyone_gets_ready() {
    let host = start_host(|_| {}).await;
    let r = join(
        &options(&host),
        &JoinOpts {
            clients: 10,
            rooms: 2,
        },
    )
    .await
    .unwrap();
    println!("{r}");
    assert_eq!(r.join.count, 10);
    // Room of 5: the k-th joiner sees k joined frames before ready (k−1
    // members and itself): 1+2+3+4+5 per room; after ready, the later ones
    // (at most 4+3+2+1 per room: the clients close as soon as the last one
    // is ready, possibly before the last broadcasts reach everyone).
    assert_eq!(r.joined_frames_before_ready, 2 * 15);
    assert!(r.joined_frames_after_ready <= 2 * (4 + 3 + 2 + 1), "{r}");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wake_after_eviction() {
    let host = start_host(|c| c.idle_timeout_ms = 30).await;
    let opts = WakeOpts {
        rooms: 2,
        clients_per_room: 2,
        rounds: 1,
        idle_ms: 100,
    };
    let r = wake(&options(&host), &opts).await.unwrap();
    println!("{r}");
    assert_eq!(r.latency.count, 2, "one other client per room");
    assert_eq!(r.echo_latency.count, 2);
    assert_eq!(r.per_round.len(), 1);
    // The host has /metrics; tolerate one that has not.
    if let MetricsFetch::Found { lines } = &r.metrics_after
        && let Some((_, wakes)) = lines.iter().find(|(s, _)| s == "roomhost_wakes_total")
    {
        assert!(*wakes >= 2.0, "both rooms were woken: {r}");
    }
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn runaway_guests_are_stopped_and_the_chat_goes_on() {
    let host = start_host(|c| {
        let wasm = roomhost::guests::wasm("probe").display().to_string();
        c.classes
            .insert("probe".into(), roomhost::config::ClassConfig::new(wasm));
        c.routes.push(roomhost::config::RouteConfig::object(
            "/probe/{name}/*",
            "probe",
        ));
        c.limits.max_event_cpu_ms = 100;
        c.admin_token = Some("t".into());
        let chat = c.classes.get_mut("chat-room").unwrap();
        chat.vars.insert("RATE_LIMIT".into(), "off".into());
    })
    .await;
    let opts = RunawayOpts {
        runaways: 2,
        path_prefix: "/probe/runaway-".into(),
        class: "probe".into(),
        secs: 0.5,
        interval_ms: 20,
        admin_token: Some("t".into()),
    };
    let r = runaway(&options(&host), &opts).await.unwrap();
    println!("{r}");
    assert!(r.stopped >= 2, "{r}");
    assert_eq!(r.other_answers, 0);
    assert!(r.chat.count >= 10, "{r}");
    let o = r.overshoot.clone().unwrap();
    assert_eq!(o.budget_ms, 100);
    assert_eq!(o.traps as u64, r.stopped, "{r}");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_measures_rss_and_fds() {
    let host = start_host(|_| {}).await;
    let common = Common {
        host_pid: Some(std::process::id()),
        ..options(&host)
    };
    let r = idle(
        &common,
        &IdleOpts {
            clients: 20,
            rooms: 2,
            hold_secs: 0.2,
        },
    )
    .await
    .unwrap();
    println!("{r}");
    assert_eq!(r.join.count, 20);
    assert!(r.rss_before_bytes > 0 && r.rss_after_bytes > 0);
    // In-process: both ends of 20 connections.
    assert!(r.fds_after >= r.fds_before + 40, "{r}");
    // Without --host-pid it refuses.
    assert!(
        idle(
            &options(&host),
            &IdleOpts {
                clients: 1,
                rooms: 1,
                hold_secs: 0.0
            }
        )
        .await
        .is_err()
    );
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn durable_every_message_acknowledged() {
    let host = start_host(|_| {}).await;
    let r = durable(
        &options(&host),
        &DurableOpts {
            rooms: 3,
            messages: 3,
            window: 1,
            drain_secs: 5,
        },
    )
    .await
    .unwrap();
    println!("{r}");
    assert_eq!(
        (r.acknowledged, r.sent, r.received, r.expected),
        (9, 9, 9, 9)
    );
    assert_eq!(r.ack_latency.count, 9);
    assert!(r.durable_messages_per_s > 0.0);
    host.stop().await;
}

/// The `swap` options of the smoke tests: 6 clients, 2 rooms, 1 sender per
/// room every 40 ms, the deploy after 0.3 s, 1.5 s more (the rooms must
/// still be sending when the deploy lands, even on a busy machine where the
/// request goes out half a second late and its compile takes as long).
fn small_swap(token: Option<&str>) -> SwapOpts {
    SwapOpts {
        clients: 6,
        rooms: 2,
        senders: 1,
        interval_ms: 40,
        warmup_secs: 0.3,
        after_secs: 1.5,
        component: roomhost::guests::wasm("chat-room"),
        admin_token: token.map(str::to_string),
        class: "chat-room".into(),
        admin_host: None,
        poll_ms: 10,
        drain_secs: 5,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn swap_moves_every_room_without_losing_anything() {
    let host = start_host(|c| {
        c.admin_token = Some("smoke-token".into());
        // The rooms of one run are evicted soon after it, so that only the
        // next run's rooms are live on the class (what `swap` waits for).
        c.idle_timeout_ms = 300;
        let chat = c.classes.get_mut("chat-room").unwrap();
        chat.vars.insert("RATE_LIMIT".into(), "off".into());
    })
    .await;
    let common = Common {
        host_pid: Some(std::process::id()),
        ..options(&host)
    };
    let r = swap(&common, &small_swap(Some("smoke-token")))
        .await
        .unwrap();
    println!("{r}");
    assert_eq!(r.deploy_status, 200, "{r}");
    assert!(r.deploy_error.is_none(), "{r}");
    let (old, new) = (
        r.old_version.clone().unwrap(),
        r.new_version.clone().unwrap(),
    );
    assert_ne!(old, new);
    assert!(r.all_moved, "{r}");
    assert_eq!(r.on_new.live, 2, "{r}");
    assert_eq!(r.on_old.live, 0, "{r}");
    assert!(r.moved_after_s.unwrap() >= r.deploy_request_s, "{r}");
    assert_eq!(r.dropped, 0, "{r}");
    // 45 messages per sender (1.8 s / 40 ms), 2 senders, 3 members each.
    assert_eq!(r.messages_per_sender, 45);
    assert_eq!((r.sent, r.delivered.expected), (90, 270));
    assert_eq!(r.delivered.deliveries, 270, "{r}");
    assert_eq!(
        (r.delivered.missing, r.duplicates, r.out_of_order),
        (0, 0, 0),
        "{r}"
    );
    assert_eq!(r.delivered.rate_limited, 0);
    // Messages sent on both sides of the deploy reached the other members.
    assert!(
        r.latency_before.count > 0 && r.latency_after.count > 0,
        "{r}"
    );
    assert_eq!(r.delivered.latency.count, 180);
    assert!(r.delivered.cpu.host_cpu_s.is_some());

    // The host now runs the new version; a second swap moves the rooms again
    // (fresh rooms this time, with a fresh nonce: another version).
    let again = swap(&options(&host), &small_swap(Some("smoke-token")))
        .await
        .unwrap();
    assert_eq!(again.old_version.as_deref(), Some(new.as_str()));
    assert!(
        again.all_moved && again.dropped == 0 && again.delivered.missing == 0,
        "{again}"
    );

    // A wrong token: the deploy is refused (401) and the run reports it.
    let err = swap(&options(&host), &small_swap(Some("wrong")))
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("401"), "{err:#}");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refuses_non_loopback_hosts() {
    let common = Common::new("192.0.2.1:8080".parse().unwrap());
    let err = join(
        &common,
        &JoinOpts {
            clients: 1,
            rooms: 1,
        },
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("loopback"), "{err}");
}
