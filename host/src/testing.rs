//! A real host for tests and benchmarks (feature `testing`, on by default):
//! it listens on 127.0.0.1:0, keeps its redb file in a directory of the
//! caller's or in a fresh temporary one, knows its address, and shuts down
//! gracefully when asked.
//!
//! ```no_run
//! # async fn example() {
//! let host = roomhost::testing::TestHost::start_temp(|_config| {}).await;
//! let (status, _page) = roomhost::testing::http_request(host.addr, "GET", "/", b"").await;
//! assert_eq!(status, 200);
//! host.stop().await;
//! # }
//! ```
//!
//! Failures panic with a message: this module is for tests.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::metrics::{Metrics, MetricsSnapshot};
use crate::{Config, Server};

/// How long a test waits for the host to stop, or for a response.
pub const WAIT: Duration = Duration::from_secs(30);

/// The default config, listening on 127.0.0.1:0, with its database in `dir`.
pub fn config_in(dir: &Path) -> Config {
    Config {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        data: dir.join("roomhost.redb"),
        ..Config::default()
    }
}

/// A host serving on 127.0.0.1, stopped by [`TestHost::stop`] (or, less
/// gracefully, when dropped with its runtime).
pub struct TestHost {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its counters.
    pub metrics: Arc<Metrics>,
    /// Its database file.
    pub data: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    join: Option<tokio::task::JoinHandle<crate::Result<()>>>,
    /// The temporary data directory it owns, if any (removed on drop).
    _dir: Option<tempfile::TempDir>,
}

impl TestHost {
    /// Starts a host with `config`, on its `listen` address (use port 0).
    pub async fn start(config: Config) -> TestHost {
        let data = config.data.clone();
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .unwrap_or_else(|e| panic!("cannot bind {}: {e}", config.listen));
        let addr = listener.local_addr().unwrap();
        let server = Server::new(config)
            .unwrap_or_else(|e| panic!("host does not start: {}", crate::error::Report(&e)));
        let metrics = server.metrics();
        let (stop, stopped) = oneshot::channel::<()>();
        let join = tokio::spawn(server.serve(listener, async move {
            let _ = stopped.await;
        }));
        TestHost {
            addr,
            metrics,
            data,
            stop: Some(stop),
            join: Some(join),
            _dir: None,
        }
    }

    /// Starts a host with its database in a fresh temporary directory (removed
    /// when the host is dropped), after `tweak` has changed the config.
    pub async fn start_temp(tweak: impl FnOnce(&mut Config)) -> TestHost {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config_in(dir.path());
        tweak(&mut config);
        let mut host = TestHost::start(config).await;
        host._dir = Some(dir);
        host
    }

    /// Counters now.
    pub fn stats(&self) -> MetricsSnapshot {
        self.metrics.snapshot()
    }

    /// `http://127.0.0.1:port` + path.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// A plain HTTP request; returns (status, body).
    pub async fn http(&self, method: &str, path: &str, body: &[u8]) -> (u16, String) {
        http_request(self.addr, method, path, body).await
    }

    /// Shuts down gracefully and waits until the database is closed; panics
    /// if that takes more than [`WAIT`] or ends in an error.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(join) = self.join.take() {
            let result = tokio::time::timeout(WAIT, join)
                .await
                .expect("the host stops in time")
                .expect("the host's task");
            if let Err(e) = result {
                panic!(
                    "the host did not shut down cleanly: {}",
                    crate::error::Report(&e)
                );
            }
        }
    }
}

/// A minimal HTTP/1.1 client over a real socket (one request per
/// connection); returns (status, body).
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.expect("write");
    s.write_all(body).await.expect("write");
    let mut buf = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut buf))
        .await
        .expect("response in time")
        .expect("read");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    // Bodies are small; hyper sends them with content-length (not chunked).
    (status, body)
}
