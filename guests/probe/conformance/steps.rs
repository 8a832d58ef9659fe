//! The conformance cases' format, shared by the two runners (`#[path]`
//! included): the probe's native tests run the cases on the SDK's test host,
//! `host/tests/conformance.rs` on the real host. Keeping one file of cases
//! for both is what keeps the test host from drifting from the host.
//!
//! `cases.txt` is a list of cases, each `case NAME` followed by steps, one
//! per line (`#` starts a comment line):
//!
//! | step | meaning |
//! |---|---|
//! | `http METHOD PATH [BODY...] => STATUS [EXPECT]` | a request to the object named in PATH (`/probe/NAME/op?...`) |
//! | `ws SOCKET PATH` | a client opens a WebSocket (`SOCKET` names it in later steps) |
//! | `send SOCKET TEXT` | the client sends a text frame |
//! | `expect SOCKET [EXPECT]` | the client's next frame |
//! | `silent SOCKET` | the client has received nothing more |
//! | `close SOCKET CODE` | the client closes the socket |
//! | `closed SOCKET CODE [REASON]` | the object closed the socket so |
//! | `evict` | the instances are dropped (host: idle eviction) |
//! | `wait MS` | time passes (test host: the clock moves; host: a sleep) |
//!
//! `EXPECT` is the exact text, `*` for anything, or `^PREFIX`. A runner
//! learns each socket's id (the probe's `id` command) right after it opens,
//! and puts it for `{SOCKET}` in later paths, texts and expectations.

#![allow(dead_code)]

/// What a response body or frame must be.
#[derive(Clone, Debug)]
pub enum Expect {
    Exact(String),
    Any,
    Prefix(String),
}

impl Expect {
    fn parse(text: &str) -> Expect {
        match text {
            "*" => Expect::Any,
            t => match t.strip_prefix('^') {
                Some(prefix) => Expect::Prefix(prefix.to_string()),
                None => Expect::Exact(t.to_string()),
            },
        }
    }

    pub fn matches(&self, got: &str) -> bool {
        match self {
            Expect::Exact(e) => got == e,
            Expect::Any => true,
            Expect::Prefix(p) => got.starts_with(p.as_str()),
        }
    }
}

#[derive(Clone, Debug)]
pub enum Step {
    Http {
        method: String,
        path: String,
        body: String,
        status: u16,
        expect: Expect,
    },
    Ws {
        socket: String,
        path: String,
    },
    Send {
        socket: String,
        text: String,
    },
    Expect {
        socket: String,
        expect: Expect,
    },
    Silent {
        socket: String,
    },
    Close {
        socket: String,
        code: u16,
    },
    Closed {
        socket: String,
        code: u16,
        reason: String,
    },
    Evict,
    Wait {
        ms: u64,
    },
}

/// One case: its name and its steps with their line numbers.
#[derive(Debug)]
pub struct Case {
    pub name: String,
    pub steps: Vec<(usize, Step)>,
}

/// The object name in a probe path (`/probe/NAME/...`).
pub fn object_name(path: &str) -> &str {
    path.trim_start_matches('/').split('/').nth(1).unwrap_or("")
}

/// `text` with `{SOCKET}` replaced by the ids of the sockets opened so far.
pub fn with_ids(text: &str, ids: &[(String, u64)]) -> String {
    ids.iter().fold(text.to_string(), |text, (name, id)| {
        text.replace(&format!("{{{name}}}"), &id.to_string())
    })
}

impl Expect {
    /// The expectation with socket ids filled in.
    pub fn with_ids(&self, ids: &[(String, u64)]) -> Expect {
        match self {
            Expect::Exact(e) => Expect::Exact(with_ids(e, ids)),
            Expect::Prefix(p) => Expect::Prefix(with_ids(p, ids)),
            Expect::Any => Expect::Any,
        }
    }
}

pub fn parse(text: &str) -> Result<Vec<Case>, String> {
    let mut cases: Vec<Case> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let n = n + 1;
        let line = line.trim_end();
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let bad = |why: &str| format!("cases.txt:{n}: {why}: {line}");
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        if word == "case" {
            cases.push(Case {
                name: rest.to_string(),
                steps: Vec::new(),
            });
            continue;
        }
        let case = cases
            .last_mut()
            .ok_or_else(|| bad("a step before any case"))?;
        let mut words = rest.splitn(2, ' ');
        let mut next = || words.next().unwrap_or("").to_string();
        let step = match word {
            "http" => {
                let (request, response) = rest.split_once(" => ").ok_or_else(|| bad("no =>"))?;
                let mut parts = request.splitn(3, ' ');
                let method = parts.next().unwrap_or("").to_string();
                let path = parts.next().ok_or_else(|| bad("no path"))?.to_string();
                let body = parts.next().unwrap_or("").to_string();
                let (status, expect) = response.split_once(' ').unwrap_or((response, ""));
                Step::Http {
                    method,
                    path,
                    body,
                    status: status.parse().map_err(|_| bad("bad status"))?,
                    expect: Expect::parse(expect),
                }
            }
            "ws" => Step::Ws {
                socket: next(),
                path: next(),
            },
            "send" => Step::Send {
                socket: next(),
                text: next(),
            },
            "expect" => Step::Expect {
                socket: next(),
                expect: Expect::parse(&next()),
            },
            "silent" => Step::Silent { socket: next() },
            "close" => Step::Close {
                socket: next(),
                code: next().parse().map_err(|_| bad("bad code"))?,
            },
            "closed" => {
                let socket = next();
                let rest = next();
                let (code, reason) = rest.split_once(' ').unwrap_or((&rest, ""));
                Step::Closed {
                    socket,
                    code: code.parse().map_err(|_| bad("bad code"))?,
                    reason: reason.to_string(),
                }
            }
            "evict" => Step::Evict,
            "wait" => Step::Wait {
                ms: next().parse().map_err(|_| bad("bad ms"))?,
            },
            _ => return Err(bad("unknown step")),
        };
        case.steps.push((n, step));
    }
    Ok(cases)
}
