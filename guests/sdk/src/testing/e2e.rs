//! A small client for end-to-end tests of a built component in a real host,
//! over real HTTP and WebSockets (feature `e2e`).
//!
//! `roomhost test` builds the crate's component, starts a host on 127.0.0.1
//! with the crate's `roomhost.toml` and a temporary database, and runs
//! `cargo test -- --include-ignored` with `ROOMHOST_URL` set to it. Mark
//! end-to-end tests `#[ignore = "needs a host: run `roomhost test`"]` so
//! that a plain `cargo test` runs only the unit tests.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde::Serialize;
use tungstenite::{Message, WebSocket};

/// How long a read waits before the test fails.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The host under test.
pub struct Host {
    /// `host:port`.
    authority: String,
}

/// An HTTP response.
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// Headers, names lower-case.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The body as (lossy UTF-8) text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body decoded from JSON (panics, failing the test, if it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("the body {:?} is not JSON: {e}", self.text()))
    }
}

impl Host {
    /// The host `roomhost test` started (`ROOMHOST_URL`); panics, failing
    /// the test, when it is not set.
    pub fn from_env() -> Host {
        let url = std::env::var("ROOMHOST_URL").unwrap_or_else(|_| {
            panic!("ROOMHOST_URL is not set: run the end-to-end tests with `roomhost test`")
        });
        Host::at(&url)
    }

    /// The host at `url` (`http://127.0.0.1:8080`).
    pub fn at(url: &str) -> Host {
        let authority = url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        Host { authority }
    }

    /// `GET path`.
    pub fn get(&self, path: &str) -> HttpResponse {
        self.request("GET", path, b"")
    }

    /// `POST path` with a body.
    pub fn post(&self, path: &str, body: &[u8]) -> HttpResponse {
        self.request("POST", path, body)
    }

    /// `POST path` with `value` as a JSON body.
    pub fn post_json<T: Serialize + ?Sized>(&self, path: &str, value: &T) -> HttpResponse {
        let body = serde_json::to_vec(value).expect("the test's value encodes as JSON");
        self.request("POST", path, &body)
    }

    /// One HTTP/1.1 request on a new connection.
    pub fn request(&self, method: &str, path: &str, body: &[u8]) -> HttpResponse {
        let mut stream = self.tcp();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nhost: {}\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
            self.authority,
            body.len()
        );
        stream
            .write_all(head.as_bytes())
            .and_then(|()| stream.write_all(body))
            .unwrap_or_else(|e| panic!("{method} {path}: sending: {e}"));
        read_response(stream).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// Opens a WebSocket at `path` (panics, failing the test, if refused).
    pub fn connect(&self, path: &str) -> Client {
        let url = format!("ws://{}{path}", self.authority);
        let (ws, _) = tungstenite::client(url.as_str(), self.tcp())
            .unwrap_or_else(|e| panic!("WebSocket {path}: {e}"));
        Client { ws }
    }

    fn tcp(&self) -> TcpStream {
        let stream = TcpStream::connect(&self.authority)
            .unwrap_or_else(|e| panic!("connecting to {}: {e}", self.authority));
        let _ = stream.set_read_timeout(Some(TIMEOUT));
        let _ = stream.set_nodelay(true);
        stream
    }
}

fn read_response(stream: TcpStream) -> Result<HttpResponse, String> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).map_err(|e| e.to_string())?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("not an HTTP response: {line:?}"))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).map_err(|e| e.to_string())?;
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    let mut raw = Vec::new();
    reader.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked { dechunk(&raw)? } else { raw };
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

fn dechunk(mut raw: &[u8]) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let end = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("a chunk without a size line")?;
        let size = std::str::from_utf8(&raw[..end])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next()?.trim(), 16).ok())
            .ok_or("a bad chunk size")?;
        raw = &raw[end + 2..];
        if size == 0 {
            return Ok(body);
        }
        body.extend_from_slice(raw.get(..size).ok_or("a short chunk")?);
        raw = raw.get(size + 2..).ok_or("a short chunk")?;
    }
}

/// A WebSocket client.
pub struct Client {
    ws: WebSocket<TcpStream>,
}

impl Client {
    /// Sends a text frame.
    pub fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::text(text))
            .unwrap_or_else(|e| panic!("sending {text:?}: {e}"));
    }

    /// Sends `value` as a JSON text frame.
    pub fn send_json<T: Serialize + ?Sized>(&mut self, value: &T) {
        let text = serde_json::to_string(value).expect("the test's value encodes as JSON");
        self.send_text(&text)
    }

    /// The next text frame (panics, failing the test, after 10 s or on a
    /// close).
    pub fn recv_text(&mut self) -> String {
        loop {
            match self.ws.read() {
                Ok(Message::Text(text)) => return text.to_string(),
                Ok(Message::Close(close)) => panic!("the socket closed: {close:?}"),
                Ok(_) => continue,
                Err(e) => panic!("reading a frame: {e}"),
            }
        }
    }

    /// The next text frame decoded from JSON.
    pub fn recv_json(&mut self) -> serde_json::Value {
        let text = self.recv_text();
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text:?} is not JSON: {e}"))
    }

    /// Closes the socket.
    pub fn close(mut self) {
        let _ = self.ws.close(None);
        let _ = self.ws.flush();
    }
}
