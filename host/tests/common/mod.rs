//! Test harness: a real host on 127.0.0.1:0 with a real redb file, and real
//! WebSocket clients (tokio-tungstenite, an independent implementation).

#![allow(dead_code, async_fn_in_trait, clippy::unwrap_used)]

pub mod chat;
pub mod js;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub use futures_util::{SinkExt, StreamExt};
use roomhost::Config;
use roomhost::config::RouteConfig;
pub use roomhost::testing::{TestHost, http_request};
use serde_json::Value;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

/// How long a test waits for any single expected frame.
pub const WAIT: Duration = Duration::from_secs(10);

/// A config for tests: data in `dir`, an ephemeral port, and the `probe` test
/// guest routed at `/probe/{name}/*`.
pub fn test_config(dir: &Path) -> Config {
    let mut config = roomhost::testing::config_in(dir);
    add_class(&mut config, "probe", "/probe/{name}/*");
    config
}

/// Adds a guest the build script compiled as class `class`, routed at `path`.
pub fn add_class(config: &mut Config, class: &str, path: &str) {
    let wasm = roomhost::guests::wasm(class).display().to_string();
    config
        .classes
        .insert(class.into(), roomhost::config::ClassConfig::new(wasm));
    config.routes.push(RouteConfig::object(path, class));
}

/// Starts a host with `config` on 127.0.0.1:0.
pub async fn start_host(config: Config) -> TestHost {
    TestHost::start(config).await
}

/// WebSocket clients of a test host.
pub trait Sockets {
    /// Opens a WebSocket from 127.0.0.1.
    async fn ws(&self, path: &str) -> Client;
    /// Opens a WebSocket from a chosen loopback source address (all of
    /// 127.0.0.0/8 is loopback), so that per-IP logic sees distinct clients.
    async fn ws_from(&self, source: Ipv4Addr, path: &str) -> Client;
    /// Like `ws_from` but returns the handshake error (e.g. a 404).
    async fn try_ws_from(
        &self,
        source: Ipv4Addr,
        path: &str,
    ) -> Result<Client, tokio_tungstenite::tungstenite::Error>;
}

impl Sockets for TestHost {
    async fn ws(&self, path: &str) -> Client {
        self.ws_from(Ipv4Addr::LOCALHOST, path).await
    }

    async fn ws_from(&self, source: Ipv4Addr, path: &str) -> Client {
        self.try_ws_from(source, path)
            .await
            .expect("WebSocket upgrade")
    }

    async fn try_ws_from(
        &self,
        source: Ipv4Addr,
        path: &str,
    ) -> Result<Client, tokio_tungstenite::tungstenite::Error> {
        connect_ws(self.addr, source, path).await
    }
}

/// A chat room's stored history (up to 1,000 messages), oldest first.
pub async fn room_history(addr: SocketAddr, room: &str) -> Vec<Value> {
    let path = format!("/api/room/{room}/history?limit=1000");
    let (status, body) = http_request(addr, "GET", &path, b"").await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("history is JSON")
}

/// A WebSocket client.
pub struct Client {
    pub ws: WebSocketStream<TcpStream>,
}

impl Client {
    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.expect("send");
    }

    pub async fn send_json(&mut self, v: Value) {
        self.send_text(&v.to_string()).await;
    }

    /// The next data frame (text or binary), skipping pings.
    pub async fn next(&mut self) -> Message {
        loop {
            let m = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("a frame within the wait")
                .expect("the socket is still open")
                .expect("a valid frame");
            match m {
                Message::Ping(_) | Message::Pong(_) => continue,
                other => return other,
            }
        }
    }

    pub async fn recv_text(&mut self) -> String {
        match self.next().await {
            Message::Text(t) => t.to_string(),
            other => panic!("expected text, got {other:?}"),
        }
    }

    pub async fn recv_json(&mut self) -> Value {
        let t = self.recv_text().await;
        serde_json::from_str(&t).unwrap_or_else(|e| panic!("not JSON ({e}): {t}"))
    }

    /// Waits for the server's close frame; returns its code and reason.
    pub async fn expect_close(&mut self) -> (u16, String) {
        loop {
            let m = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("close within the wait");
            match m {
                Some(Ok(Message::Close(Some(CloseFrame { code, reason })))) => {
                    return (u16::from(code), reason.to_string());
                }
                Some(Ok(Message::Close(None))) => return (1005, String::new()),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(other)) => panic!("expected close, got {other:?}"),
                Some(Err(e)) => panic!("expected close, got error {e}"),
                None => panic!("expected a close frame, the stream ended"),
            }
        }
    }

    /// Asserts nothing arrives within `d`.
    pub async fn expect_silence(&mut self, d: Duration) {
        if let Ok(m) = tokio::time::timeout(d, self.ws.next()).await {
            panic!("expected no frame, got {m:?}");
        }
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
        // Drain until the server answers the close.
        let _ = tokio::time::timeout(WAIT, async {
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await;
    }
}

/// Joins chat room `room` as `name` from `source`; returns the client and every
/// frame it got up to and including `{"ready":true}`.
pub async fn join_chat(
    host: &TestHost,
    source: Ipv4Addr,
    room: &str,
    name: &str,
) -> (Client, Vec<Value>) {
    join_chat_at(host.addr, source, room, name).await
}

/// Like [`join_chat`], for a host known only by its address (a real binary).
pub async fn join_chat_at(
    addr: SocketAddr,
    source: Ipv4Addr,
    room: &str,
    name: &str,
) -> (Client, Vec<Value>) {
    let mut c = connect_ws(addr, source, &format!("/api/room/{room}/websocket"))
        .await
        .expect("WebSocket upgrade");
    c.send_json(serde_json::json!({ "name": name })).await;
    let mut got = Vec::new();
    loop {
        let v = c.recv_json().await;
        let ready = v.get("ready") == Some(&Value::Bool(true));
        got.push(v);
        if ready {
            return (c, got);
        }
    }
}

/// The n-th loopback address 127.0.1.n (distinct client IPs).
pub fn ip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 1, n)
}

/// Polls `cond` every 20 ms until it holds or `within` passes; returns whether
/// it held.
pub async fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}

/// What a finished command printed, stdout then stderr.
pub fn output_text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A test config whose objects are evicted after `idle_ms` without events.
pub fn hibernating_config(dir: &Path, idle_ms: u64) -> Config {
    Config {
        idle_timeout_ms: idle_ms,
        ..test_config(dir)
    }
}

/// Milliseconds since the Unix epoch, by the host's own clock function.
pub fn now_ms() -> u64 {
    roomhost::clock::now_ms()
}

/// Opens a WebSocket to `addr` from a chosen loopback source address (all of
/// 127.0.0.0/8 is loopback), so that per-IP logic sees distinct clients.
pub async fn connect_ws(
    addr: SocketAddr,
    source: Ipv4Addr,
    path: &str,
) -> Result<Client, tokio_tungstenite::tungstenite::Error> {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(IpAddr::V4(source), 0))
        .expect("bind source address");
    let stream = socket.connect(addr).await.expect("connect");
    let url = format!("ws://{addr}{path}");
    let (ws, _) = tokio_tungstenite::client_async(url, stream).await?;
    Ok(Client { ws })
}

/// The real `roomhost` binary, running as a child process.
pub struct HostProcess {
    pub child: std::process::Child,
    /// Where it listens (read from its log).
    pub addr: SocketAddr,
    /// Everything it printed (log on stdout, errors on stderr).
    output: Arc<std::sync::Mutex<String>>,
}

impl HostProcess {
    /// Starts `roomhost serve --listen 127.0.0.1:0 --data DATA --config
    /// CONFIG` and waits until it listens.
    pub fn serve(data: &std::path::Path, config: &std::path::Path) -> HostProcess {
        HostProcess::spawn(
            std::process::Command::new(env!("CARGO_BIN_EXE_roomhost"))
                .args(["serve", "--listen", "127.0.0.1:0", "--data"])
                .arg(data)
                .arg("--config")
                .arg(config),
        )
    }

    /// Starts `cmd`, which must run `roomhost serve --listen 127.0.0.1:0 ...`
    /// (perhaps through a shell that execs it), and waits until it listens.
    pub fn spawn(cmd: &mut std::process::Command) -> HostProcess {
        use std::io::{BufRead, BufReader, Read};
        use std::process::Stdio;
        let mut child = cmd
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start roomhost");
        let output = Arc::new(std::sync::Mutex::new(String::new()));
        let mut stderr = child.stderr.take().unwrap();
        let out = output.clone();
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            out.lock().unwrap().push_str(&s);
        });
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let addr = loop {
            let line = match lines.next() {
                Some(l) => l.unwrap(),
                None => panic!(
                    "roomhost exited before listening: {}",
                    output.lock().unwrap()
                ),
            };
            output.lock().unwrap().push_str(&format!("{line}\n"));
            if let Some(rest) = line.split("listening on http://").nth(1) {
                let addr = rest.split_whitespace().next().unwrap();
                break addr.parse().unwrap();
            }
        };
        // Keep draining the log so the child never blocks on a full pipe.
        let out = output.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                out.lock().unwrap().push_str(&format!("{line}\n"));
            }
        });
        HostProcess {
            child,
            addr,
            output,
        }
    }

    /// Everything the host printed so far.
    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// Waits for the process to exit on its own.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + within;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Kills it (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A failing assertion must not leave a host running.
impl Drop for HostProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
