//! The conformance cases (`guests/probe/conformance/cases.txt`) on the real
//! host, over HTTP and WebSockets. The probe's native tests run the same
//! cases on the SDK's in-memory test host, so the two cannot drift apart
//! without one of them failing.

mod common;

#[path = "../../guests/probe/conformance/steps.rs"]
mod steps;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use futures_util::SinkExt;
use roomhost::testing::TestHost;
use steps::{Step, with_ids};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

/// Idle instances are evicted after this long; `evict` waits past it.
const IDLE_MS: u64 = 100;

struct Run<'h> {
    host: &'h TestHost,
    clients: HashMap<String, Client>,
    ids: Vec<(String, u64)>,
}

impl Run<'_> {
    fn client(&mut self, name: &str) -> &mut Client {
        self.clients
            .get_mut(name)
            .unwrap_or_else(|| panic!("no socket {name}"))
    }

    async fn step(&mut self, step: &Step) -> Result<(), String> {
        match step {
            Step::Http {
                method,
                path,
                body,
                status,
                expect,
            } => {
                let path = with_ids(path, &self.ids);
                let body = with_ids(body, &self.ids);
                let (got, text) = self.host.http(method, &path, body.as_bytes()).await;
                if got != *status || !expect.with_ids(&self.ids).matches(&text) {
                    return Err(format!("got {got} {text:?}"));
                }
            }
            Step::Ws { socket, path } => {
                let mut client = self.host.ws(path).await;
                client.send_text("id").await;
                let id = client.recv_text().await;
                self.ids.push((
                    socket.clone(),
                    id.parse().map_err(|_| format!("id {id:?}"))?,
                ));
                self.clients.insert(socket.clone(), client);
            }
            Step::Send { socket, text } => {
                let text = with_ids(text, &self.ids);
                self.client(socket).send_text(&text).await;
            }
            Step::Expect { socket, expect } => {
                let expect = expect.with_ids(&self.ids);
                let got = self.client(socket).recv_text().await;
                if !expect.matches(&got) {
                    return Err(format!("got {got:?}"));
                }
            }
            Step::Silent { socket } => {
                self.client(socket)
                    .expect_silence(Duration::from_millis(300))
                    .await;
            }
            Step::Close { socket, code } => {
                let client = self.client(socket);
                let frame = CloseFrame {
                    code: (*code).into(),
                    reason: "".into(),
                };
                client
                    .ws
                    .send(Message::Close(Some(frame)))
                    .await
                    .map_err(|e| format!("closing: {e}"))?;
            }
            Step::Closed {
                socket,
                code,
                reason,
            } => {
                let got = self.client(socket).expect_close().await;
                if got != (*code, reason.clone()) {
                    return Err(format!("closed with {got:?}"));
                }
            }
            Step::Evict => tokio::time::sleep(Duration::from_millis(IDLE_MS * 4)).await,
            Step::Wait { ms } => tokio::time::sleep(Duration::from_millis(*ms)).await,
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_conformance_cases_hold_on_the_host() {
    let cases = steps::parse(include_str!("../../guests/probe/conformance/cases.txt"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(cases.len() >= 10, "{} cases", cases.len());
    let dir = tempfile::tempdir().expect("temp dir");
    let mut failures = Vec::new();
    for (n, case) in cases.iter().enumerate() {
        // Each case on a fresh database.
        let data = dir.path().join(format!("case-{n}"));
        std::fs::create_dir_all(&data).expect("case dir");
        let mut config = hibernating_config(&data, IDLE_MS);
        config.limits.alarm_retry_base_ms = 100;
        let host = start_host(config).await;
        let mut run = Run {
            host: &host,
            clients: HashMap::new(),
            ids: Vec::new(),
        };
        for (line, step) in &case.steps {
            if let Err(e) = run.step(step).await {
                failures.push(format!("{}: cases.txt:{line}: {step:?}: {e}", case.name));
                break;
            }
        }
        drop(run);
        host.stop().await;
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}
