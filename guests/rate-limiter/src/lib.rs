//! # rate-limiter — per-IP message throttling for the chat room
//!
//! One object per client IP (class `rate-limiter`, name = the IP), working like
//! the `RateLimiter` of Cloudflare's `edge-chat-demo`: every message costs 5
//! seconds of "allowance time", and a client may run up to 20 seconds ahead of
//! the clock. So about five quick messages pass; after that each message blocks
//! the client for a few seconds (5 s more per message once the 20 s of grace are
//! used up).
//!
//! * `on_call("check", _)` answers JSON `{"allowed":bool,"cooldown":seconds}`.
//!   While a client is blocked, `allowed` is false and `cooldown` is the time
//!   left. Otherwise the message is allowed and counted; when that puts the
//!   client more than 20 s ahead, `cooldown` is how long it is now blocked.
//!   Any other method fails with `no such method: <method>`.
//! * `POST` (any path) does the same check and answers the cooldown as plain
//!   text (e.g. `0` or `2.5`), like the demo's limiter; other HTTP methods answer
//!   405.
//!
//! The state (`next_allowed` and `blocked_until`, in seconds since the epoch) is
//! kept in guest memory only and nothing is written to storage, exactly like the
//! demo's limiter: if the instance is dropped (eviction, restart, trap), the
//! client simply starts over with a clean slate. That is acceptable for a
//! best-effort spam brake.

use std::cell::Cell;

use roomhost_sdk::{Object, Reply, Request, Response, now_ms};
use serde::Serialize;

/// Allowance time one message costs, in seconds.
const COST: f64 = 5.0;
/// How far ahead of the clock a client may run before it is blocked, in seconds.
const GRACE: f64 = 20.0;

thread_local! {
    /// When the next message is "due" (seconds since the epoch).
    static NEXT_ALLOWED: Cell<f64> = const { Cell::new(0.0) };
    /// Until when the client is blocked (seconds since the epoch).
    static BLOCKED_UNTIL: Cell<f64> = const { Cell::new(0.0) };
}

/// The rate limiter object.
struct RateLimiter;

/// The answer of `check`.
#[derive(Serialize)]
struct Verdict {
    allowed: bool,
    cooldown: f64,
}

/// Checks (and, when allowed, counts) one message at time `now` (seconds).
fn check(now: f64) -> Verdict {
    let blocked_until = BLOCKED_UNTIL.get();
    if now < blocked_until {
        return Verdict {
            allowed: false,
            cooldown: blocked_until - now,
        };
    }
    let next_allowed = now.max(NEXT_ALLOWED.get()) + COST;
    NEXT_ALLOWED.set(next_allowed);
    let cooldown = (next_allowed - now - GRACE).max(0.0);
    if cooldown > 0.0 {
        BLOCKED_UNTIL.set(now + cooldown);
    }
    Verdict {
        allowed: true,
        cooldown,
    }
}

/// The current time in seconds since the epoch.
fn now_s() -> f64 {
    now_ms() as f64 / 1000.0
}

impl Object for RateLimiter {
    fn on_call(method: String, _payload: Vec<u8>) -> Result<Vec<u8>, String> {
        match method.as_str() {
            "check" => serde_json::to_vec(&check(now_s())).map_err(|e| e.to_string()),
            _ => Err(format!("no such method: {method}")),
        }
    }

    fn on_request(request: Request) -> Reply {
        if request.method != "POST" {
            let mut response = Response::text(405, "method not allowed");
            response.headers.push(("allow".into(), "POST".into()));
            return response.into();
        }
        Response::text(200, check(now_s()).cooldown.to_string()).into()
    }
}

roomhost_sdk::export_object!(RateLimiter);
