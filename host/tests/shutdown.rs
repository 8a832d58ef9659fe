//! Graceful shutdown (Ctrl-C, SIGTERM, `Server::serve`'s shutdown future):
//! every socket is closed with 1001, and the events that were running or
//! queued when it began are committed — a client never sees a reply that the
//! database then lacks.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_sockets_with_1001_and_commits_what_was_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let host = start_host(test_config(dir.path())).await;
    let mut writer = host.ws("/probe/room/ws").await;
    let mut idle = host.ws("/probe/room/ws").await;
    let mut other = host.ws("/probe/elsewhere/ws").await;
    for c in [&mut idle, &mut other] {
        c.send_text("echo:ready").await;
        assert_eq!(c.recv_text().await, "ready");
    }

    // A stream of writes, still arriving and running when the host stops.
    const SENT: u64 = 300;
    for _ in 0..SENT {
        writer.send_text("count").await;
    }
    assert_eq!(writer.recv_text().await, "1");
    let stopped = tokio::spawn(host.stop());

    // The writer gets replies until the close, in order, then 1001.
    let mut last = 1;
    let close = loop {
        let m = tokio::time::timeout(WAIT, futures_util::StreamExt::next(&mut writer.ws))
            .await
            .expect("a frame or the close within the wait");
        match m {
            Some(Ok(Message::Text(t))) => {
                let n: u64 = t.parse().unwrap();
                assert_eq!(n, last + 1, "replies in order, none lost");
                last = n;
            }
            Some(Ok(Message::Close(Some(CloseFrame { code, reason })))) => {
                break (u16::from(code), reason.to_string());
            }
            other => panic!("expected a reply or the close, got {other:?}"),
        }
    };
    assert_eq!(close, (1001, "host shutting down".to_string()));
    assert_eq!(idle.expect_close().await.0, 1001);
    assert_eq!(other.expect_close().await.0, 1001);
    stopped.await.unwrap();

    // Every reply the writer saw is in the database, and nothing more.
    let host = start_host(test_config(dir.path())).await;
    let (status, stored) = host.http("GET", "/probe/room/get?key=count", b"").await;
    assert_eq!((status, stored), (200, last.to_string()));
    assert!(last <= SENT);
    host.stop().await;
}
