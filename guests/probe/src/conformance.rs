//! The conformance cases (`conformance/cases.txt`) on the SDK's test host.
//! `host/tests/conformance.rs` runs the same cases on the real host.

#[path = "../conformance/steps.rs"]
mod steps;

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use roomhost_sdk::testing::{TestObject, request};
use roomhost_sdk::{Frame, Socket};

use self::steps::{Step, object_name, with_ids};
use super::Probe;

/// One case's world: the objects it touched and its clients.
#[derive(Default)]
struct Run {
    objects: HashMap<String, TestObject<Probe>>,
    /// Socket name → (object name, socket).
    sockets: HashMap<String, (String, Socket)>,
    ids: Vec<(String, u64)>,
    /// Frames received and not yet read by a step, per socket.
    inbox: HashMap<String, VecDeque<String>>,
}

impl Run {
    fn object(&mut self, name: &str) -> &mut TestObject<Probe> {
        self.objects
            .entry(name.to_string())
            .or_insert_with(|| TestObject::new("probe", name))
    }

    fn socket(&mut self, name: &str) -> (&mut TestObject<Probe>, Socket) {
        let (object, socket) = self
            .sockets
            .get(name)
            .cloned()
            .unwrap_or_else(|| panic!("no socket {name}"));
        (self.object(&object), socket)
    }

    /// The next frame socket `name`'s client received, as text.
    fn recv(&mut self, name: &str) -> Option<String> {
        let (object, socket) = self.socket(name);
        let fresh = object.received(socket);
        let inbox = self.inbox.entry(name.to_string()).or_default();
        inbox.extend(fresh.into_iter().map(|frame| match frame {
            Frame::Text(t) => t,
            Frame::Binary(b) => format!("binary {b:?}"),
        }));
        inbox.pop_front()
    }

    fn step(&mut self, step: &Step) -> Result<(), String> {
        match step {
            Step::Http {
                method,
                path,
                body,
                status,
                expect,
            } => {
                let path = with_ids(path, &self.ids);
                let mut req = request(method, &path);
                req.body = with_ids(body, &self.ids).into_bytes();
                let got = self.object(object_name(&path)).request(req);
                let text = got.body_text();
                if got.status != *status || !expect.with_ids(&self.ids).matches(&text) {
                    return Err(format!("got {} {text:?}", got.status));
                }
            }
            Step::Ws { socket, path } => {
                let object = object_name(path).to_string();
                let s = self.object(&object).connect(path);
                self.sockets.insert(socket.clone(), (object.clone(), s));
                self.object(&object).send_text(s, "id");
                let id = self.recv(socket).ok_or("no answer to id")?;
                self.ids.push((
                    socket.clone(),
                    id.parse().map_err(|_| format!("id {id:?}"))?,
                ));
            }
            Step::Send { socket, text } => {
                let text = with_ids(text, &self.ids);
                let (object, s) = self.socket(socket);
                object.send_text(s, &text);
            }
            Step::Expect { socket, expect } => {
                let got = self.recv(socket);
                match got {
                    Some(text) if expect.with_ids(&self.ids).matches(&text) => {}
                    other => return Err(format!("got {other:?}")),
                }
            }
            Step::Silent { socket } => {
                if let Some(text) = self.recv(socket) {
                    return Err(format!("got {text:?}"));
                }
            }
            Step::Close { socket, code } => {
                let (object, s) = self.socket(socket);
                object.close(s, *code, "");
            }
            Step::Closed {
                socket,
                code,
                reason,
            } => {
                let (object, s) = self.socket(socket);
                let got = object.closed(s);
                if got != Some((*code, reason.clone())) {
                    return Err(format!("closed with {got:?}"));
                }
            }
            Step::Evict => {
                for object in self.objects.values_mut() {
                    object.evict();
                }
            }
            Step::Wait { ms } => roomhost_sdk::testing::advance(Duration::from_millis(*ms)),
        }
        Ok(())
    }
}

#[test]
fn the_conformance_cases_hold_on_the_test_host() {
    let cases =
        steps::parse(include_str!("../conformance/cases.txt")).unwrap_or_else(|e| panic!("{e}"));
    assert!(cases.len() >= 10, "{} cases", cases.len());
    let mut failures = Vec::new();
    for case in cases {
        // Each case on a fresh test host: its own thread.
        let name = case.name.clone();
        let outcome = std::thread::spawn(move || {
            let mut run = Run::default();
            for (line, step) in &case.steps {
                run.step(step)
                    .map_err(|e| format!("cases.txt:{line}: {step:?}: {e}"))?;
            }
            Ok::<(), String>(())
        })
        .join();
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failures.push(format!("{name}: {e}")),
            Err(_) => failures.push(format!("{name}: panicked")),
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}
