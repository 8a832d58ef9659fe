//! The built-in chat room, end to end: the edge-chat-demo protocol over real
//! WebSockets to a real host with a real redb file. The protocol's tests are
//! in `common/chat.rs`, shared with the JavaScript room (`js_chat.rs`).

#![allow(clippy::unwrap_used)]

mod common;

use common::chat::{Room, protocol_tests};
use common::*;

protocol_tests!(Room::Rust);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chat_page_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let host = start_host(test_config(dir.path())).await;
    let (status, body) = host.http("GET", "/", b"").await;
    assert_eq!(status, 200);
    assert!(
        body.contains("<html") && body.contains("/api/room"),
        "the chat page"
    );
    host.stop().await;
}

/// One raw HTTP request with extra header lines; returns the body.
async fn get_with_headers(addr: std::net::SocketAddr, path: &str, headers: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\n{headers}connection: close\r\n\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out.split("\r\n\r\n").nth(1).unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_forwarded_for_is_the_client_ip_only_when_trusted() {
    let xff = "x-forwarded-for: 203.0.113.7, not-an-ip, 198.51.100.9\r\n";
    for trust in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(dir.path());
        config.trust_forwarded_for = trust;
        let host = start_host(config).await;
        let plain = get_with_headers(host.addr, "/probe/ip/client-ip", "").await;
        assert_eq!(plain, "127.0.0.1");
        let forwarded = get_with_headers(host.addr, "/probe/ip/client-ip", xff).await;
        // Trusted: the last address the proxy appended; otherwise the peer.
        let want = if trust { "198.51.100.9" } else { "127.0.0.1" };
        assert_eq!(forwarded, want, "trust_forwarded_for = {trust}");
        // A header with no address in it falls back to the peer.
        let junk = get_with_headers(
            host.addr,
            "/probe/ip/client-ip",
            "x-forwarded-for: junk\r\n",
        )
        .await;
        assert_eq!(junk, "127.0.0.1");
        host.stop().await;
    }
}
