//! Transactions, traps and isolation, driven through the `probe` test guest:
//! a trapping event loses its writes and its output, its clients stay
//! connected, and other objects never notice.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use roomhost::client::AdminClient;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_rolls_back_the_events_writes_and_keeps_clients_connected() {
    let dir = tempfile::tempdir().unwrap();
    let host = start_host(test_config(dir.path())).await;
    let mut a = host.ws("/probe/t1/ws").await;
    let mut b = host.ws("/probe/t1/ws").await;
    a.send_text("put:k=before").await;
    assert_eq!(a.recv_text().await, "ok");

    // The trapping event wrote `trapped` and sent `before-trap`: neither is
    // ever observable.
    a.send_text("trap").await;
    a.send_text("get:trapped").await;
    assert_eq!(
        a.recv_text().await,
        "none",
        "the trapped write was rolled back"
    );
    a.send_text("get:k").await;
    assert_eq!(a.recv_text().await, "before", "earlier writes are intact");
    assert_eq!(host.stats().traps, 1);

    // Both clients are still connected to the (fresh) instance.
    a.send_text("inits").await;
    assert_eq!(a.recv_text().await, "1", "a new instance after the trap");
    assert_eq!(host.stats().instances_created, 2);
    b.send_text("echo:still here").await;
    assert_eq!(b.recv_text().await, "still here");
    a.send_text("list").await;
    assert_eq!(a.recv_text().await.split(',').count(), 2);

    // Over HTTP: the trap answers 500 and the write is not there.
    let (status, _) = host
        .http("POST", "/probe/t1/put-then-trap?key=h&value=1", b"")
        .await;
    assert_eq!(status, 500);
    assert_eq!(host.http("GET", "/probe/t1/get?key=h", b"").await.0, 404);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_attachments_and_closes_are_kept_by_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let host = start_host(test_config(dir.path())).await;
    let mut red = host.ws("/probe/t2/ws?tags=red,warm").await;
    let mut blue = host.ws("/probe/t2/ws?tags=blue").await;
    red.send_text("attach:alice").await;
    assert_eq!(red.recv_text().await, "ok");
    // A trap does not lose the attachment (it lives with the host).
    red.send_text("trap").await;
    red.send_text("attachment").await;
    assert_eq!(red.recv_text().await, "alice");

    blue.send_text("broadcast-tag:red:only red").await;
    assert_eq!(red.recv_text().await, "only red");
    blue.expect_silence(Duration::from_millis(200)).await;
    blue.send_text("broadcast:all").await;
    assert_eq!(red.recv_text().await, "all");
    assert_eq!(blue.recv_text().await, "all");

    // The guest lists its sockets by tag.
    let mut list = async |what: &str| {
        blue.send_text(what).await;
        blue.recv_text().await
    };
    let (all, reds, warms, blues) = (
        list("list").await,
        list("list:red").await,
        list("list:warm").await,
        list("list:blue").await,
    );
    assert_eq!(all, format!("{reds},{blues}"), "accept order");
    assert_eq!(warms, reds);
    assert!(!reds.is_empty() && !reds.contains(',') && reds != blues);
    assert_eq!(list("list:green").await, "");

    // Oversized attachments are refused with a clear error.
    blue.send_text(&format!("attach:{}", "x".repeat(3000)))
        .await;
    let reply = blue.recv_text().await;
    assert!(
        reply.starts_with("err:") && reply.contains("AttachmentTooLarge"),
        "{reply}"
    );

    // The guest closes a socket with its own code; the close is recorded when
    // the client goes away by itself.
    red.send_text("close:4001:bye").await;
    let (code, reason) = red.expect_close().await;
    assert_eq!((code, reason.as_str()), (4001, "bye"));
    let blue_id = {
        blue.send_text("list").await;
        blue.recv_text().await
    };
    assert!(!blue_id.contains(','), "only blue is left: {blue_id}");
    blue.close().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, body) = host
        .http("GET", &format!("/probe/t2/get?key=closed:{blue_id}"), b"")
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.starts_with("1000:") || body.starts_with("1005:"),
        "{body}"
    );
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_call_each_other_and_cycles_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let host = start_host(test_config(dir.path())).await;
    let (s, body) = host
        .http(
            "POST",
            "/probe/caller/call?class=probe&name=callee&method=echo",
            b"ping",
        )
        .await;
    assert_eq!((s, body.as_str()), (200, "ping"));
    let (s, body) = host
        .http(
            "POST",
            "/probe/caller/call?class=probe&name=callee&method=fail",
            b"",
        )
        .await;
    assert_eq!(s, 502);
    assert!(body.contains("asked to fail"), "{body}");
    // A → B → A would deadlock: the host refuses it.
    let (s, body) = host
        .http(
            "POST",
            "/probe/a/call?class=probe&name=b&method=call",
            b"probe:a:echo:x",
        )
        .await;
    assert_eq!(s, 502, "{body}");
    assert!(body.contains("Cycle"), "{body}");
    // A callee that traps fails the call, not the caller.
    let (s, body) = host
        .http(
            "POST",
            "/probe/caller/call?class=probe&name=callee&method=trap",
            b"",
        )
        .await;
    assert_eq!(s, 502);
    assert!(body.contains("Failed"), "{body}");
    let (s, body) = host
        .http(
            "POST",
            "/probe/caller/call?class=nope&name=x&method=echo",
            b"",
        )
        .await;
    assert_eq!(s, 502);
    assert!(body.contains("NoSuchClass"), "{body}");
    assert_eq!(
        host.http("GET", "/probe/caller/self", b"").await.1,
        "probe/caller"
    );
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runaway_and_greedy_guests_fail_only_their_own_event() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.limits.max_event_cpu_ms = 300;
    config.limits.max_instance_memory_bytes = 32 << 20;
    let host = start_host(config).await;
    let mut neighbour = host.ws("/probe/quiet/ws").await;

    let spin = tokio::spawn({
        let addr = host.addr;
        async move { http_request(addr, "GET", "/probe/busy/spin", b"").await }
    });
    // While one object spins, another answers promptly.
    neighbour.send_text("echo:unaffected").await;
    assert_eq!(neighbour.recv_text().await, "unaffected");
    let (status, _) = spin.await.unwrap();
    assert_eq!(status, 500, "the runaway event is stopped by its CPU limit");
    // The object works again on its next event.
    assert_eq!(host.http("GET", "/probe/busy/self", b"").await.0, 200);

    assert_eq!(
        host.http("GET", "/probe/greedy/alloc?mb=8", b"").await.0,
        200
    );
    assert_eq!(
        host.http("GET", "/probe/greedy/alloc?mb=64", b"").await.0,
        500
    );
    assert_eq!(host.http("GET", "/probe/greedy/self", b"").await.0, 200);
    neighbour.send_text("echo:still fine").await;
    assert_eq!(neighbour.recv_text().await, "still fine");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frames_close_only_that_socket() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.limits.max_frame_bytes = 4096;
    let host = start_host(config).await;
    let mut big = host.ws("/probe/frames/ws").await;
    let mut ok = host.ws("/probe/frames/ws").await;
    big.ws
        .send(Message::text("echo:".to_string() + &"x".repeat(5000)))
        .await
        .unwrap();
    let (code, _) = big.expect_close().await;
    assert_eq!(code, 1009);
    ok.send_text("echo:fine").await;
    assert_eq!(ok.recv_text().await, "fine");
    ok.ws.send(Message::binary(vec![7u8; 100])).await.unwrap();
    assert_eq!(ok.next().await, Message::binary(vec![7u8; 100]));
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_just_under_the_limit_arrive_whole() {
    let dir = tempfile::tempdir().unwrap();
    let host = start_host(test_config(dir.path())).await;
    let mut c = host.ws("/probe/large/ws").await;
    // Larger than any single read the host makes: it is assembled from many.
    let limit = roomhost::Config::default().limits.max_frame_bytes;
    let body: String = (0..limit - 5)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    c.send_text(&format!("echo:{body}")).await;
    let echoed = c.recv_text().await;
    assert_eq!(echoed.len(), body.len());
    assert!(echoed == body, "the echo differs from what was sent");
    // And the socket goes on with small frames.
    c.send_text("echo:small").await;
    assert_eq!(c.recv_text().await, "small");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_limits_are_typed_errors_and_the_event_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let host = start_host(test_config(dir.path())).await;
    for (what, expect) in [
        ("key", "KeyTooLarge(2048)"),
        ("value", "ValueTooLarge(131072)"),
        ("many", "TooManyKeys(128)"),
    ] {
        let (s, body) = host
            .http("GET", &format!("/probe/lim/storage-error?what={what}"), b"")
            .await;
        assert_eq!(s, 200);
        assert!(body.contains(expect), "{what}: {body}");
    }
    let (s, body) = host.http("GET", "/probe/lim/list", b"").await;
    assert_eq!((s, body.as_str()), (200, "[]"), "nothing was written");
    host.stop().await;
}

/// Tags, attachments and the auto-response pair are held to `[limits]`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_limits_come_from_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.limits.max_tags_per_socket = 2;
    config.limits.max_tag_bytes = 4;
    config.limits.max_attachment_bytes = 8;
    config.limits.max_auto_response_bytes = 5;
    let host = start_host(config).await;
    let mut c = host.ws("/probe/limited/ws?tags=a,b").await;
    for (command, want) in [
        ("set-tags:a,bcde", "ok"),
        (
            "set-tags:a,b,c",
            "err:SocketError::InvalidTags(\"at most 2 tags\")",
        ),
        ("set-tags:abcde", "err:SocketError::InvalidTags"),
        ("attach:12345678", "ok"),
        ("attach:123456789", "err:SocketError::AttachmentTooLarge(8)"),
        ("auto:ping:pong", "ok"),
        (
            "auto:pingpong:x",
            "err:SocketError::AutoResponseTooLarge(5)",
        ),
    ] {
        c.send_text(command).await;
        let got = c.recv_text().await;
        assert!(got.starts_with(want), "{command}: {got}");
    }
    // Accepting with too many tags fails the upgrade.
    assert!(
        host.try_ws_from(
            std::net::Ipv4Addr::LOCALHOST,
            "/probe/limited/ws?tags=a,b,c"
        )
        .await
        .is_err()
    );
    c.send_text("echo:still").await;
    assert_eq!(c.recv_text().await, "still");
    host.stop().await;
}

/// Runaway guests take turns in the long-event lane (one worker here): each
/// is stopped after its own budget of guest time, however long it waited
/// for its turn, and while they run, a neighbour is answered all along.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runaways_take_turns_and_are_stopped_after_their_own_guest_time() {
    const RUNAWAYS: u64 = 4;
    const BUDGET_MS: u64 = 300;
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.limits.max_event_cpu_ms = BUDGET_MS;
    config.limits.long_event_workers = 1;
    config.admin_token = Some("t".into());
    let host = start_host(config).await;
    let mut neighbour = host.ws("/probe/calm/ws").await;

    let started = std::time::Instant::now();
    let spins: Vec<_> = (0..RUNAWAYS)
        .map(|i| {
            let addr = host.addr;
            tokio::spawn(async move {
                let r = http_request(addr, "GET", &format!("/probe/spin{i}/spin"), b"").await;
                (r.0, started.elapsed())
            })
        })
        .collect();
    // Wait until every runaway has run a whole slice (counted when it ends,
    // so: until the first one is in the lane and the others wait).
    tokio::time::sleep(Duration::from_millis(100)).await;
    for i in 0..50 {
        neighbour.send_text(&format!("echo:n{i}")).await;
        assert_eq!(neighbour.recv_text().await, format!("n{i}"));
    }
    let neighbour_done = started.elapsed();
    let mut ends = Vec::new();
    for s in spins {
        let (status, end) = s.await.unwrap();
        assert_eq!(status, 500, "a runaway is stopped by its budget");
        ends.push(end);
    }
    let first_end = ends.iter().min().copied().unwrap();
    let last_end = ends.iter().max().copied().unwrap();
    assert!(
        neighbour_done < first_end,
        "the neighbour's 50 round trips ({neighbour_done:?}) finish while the runaways \
         still run (the first stopped after {first_end:?})"
    );
    // One lane, four budgets: the last runaway ends after all four budgets
    // of guest time have been spent, one slice at a time.
    assert!(
        last_end >= Duration::from_millis(RUNAWAYS * BUDGET_MS * 9 / 10),
        "{last_end:?}"
    );
    let admin = AdminClient::new(&format!("http://{}", host.addr), "t".into()).unwrap();
    for i in 0..RUNAWAYS {
        let shown = admin
            .inspect("probe", &format!("spin{i}"), None)
            .await
            .unwrap();
        let message = shown["traps"][0]["message"].as_str().unwrap().to_string();
        let used: u64 = message
            .split(" ms used of max_event_cpu_ms = ")
            .next()
            .and_then(|m| m.rsplit('(').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("the trap says how long it ran: {message}"));
        assert!(
            message.ends_with(&format!("max_event_cpu_ms = {BUDGET_MS})")),
            "{message}"
        );
        // Guest time, not wall time: the budget and at most a few slices
        // more (a slice can stretch when the machine is busy).
        assert!(
            (BUDGET_MS..BUDGET_MS + 200).contains(&used),
            "spin{i} ran {used} ms of guest time in {last_end:?}: {message}"
        );
    }
    let stats = host.stats();
    assert_eq!(stats.events_over_budget, RUNAWAYS);
    assert!(stats.long_events >= RUNAWAYS, "{stats:?}");
    neighbour.send_text("echo:after").await;
    assert_eq!(neighbour.recv_text().await, "after");
    host.stop().await;
}
