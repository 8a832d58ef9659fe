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

use roomhost_sdk::{Error, Object, Reply, Request, Response, Result, now_ms};
use serde::Serialize;

/// Allowance time one message costs, in seconds.
const COST: f64 = 5.0;
/// How far ahead of the clock a client may run before it is blocked, in seconds.
const GRACE: f64 = 20.0;

/// The rate limiter object: its whole state lives in the instance.
#[derive(Default)]
struct RateLimiter {
    /// When the next message is "due" (seconds since the epoch).
    next_allowed: f64,
    /// Until when the client is blocked (seconds since the epoch).
    blocked_until: f64,
}

/// The answer of `check`.
#[derive(Serialize)]
struct Verdict {
    allowed: bool,
    cooldown: f64,
}

impl RateLimiter {
    /// Checks (and, when allowed, counts) one message at time `now` (seconds).
    fn check(&mut self, now: f64) -> Verdict {
        if now < self.blocked_until {
            return Verdict {
                allowed: false,
                cooldown: self.blocked_until - now,
            };
        }
        self.next_allowed = now.max(self.next_allowed) + COST;
        let cooldown = (self.next_allowed - now - GRACE).max(0.0);
        if cooldown > 0.0 {
            self.blocked_until = now + cooldown;
        }
        Verdict {
            allowed: true,
            cooldown,
        }
    }
}

/// The current time in seconds since the epoch.
fn now_s() -> f64 {
    now_ms() as f64 / 1000.0
}

impl Object for RateLimiter {
    fn init() -> Result<Self> {
        Ok(RateLimiter::default())
    }

    fn on_call(&mut self, method: &str, _payload: Vec<u8>) -> Result<Vec<u8>> {
        match method {
            "check" => Ok(serde_json::to_vec(&self.check(now_s()))?),
            _ => Err(Error::not_found(format!("no such method: {method}"))),
        }
    }

    fn on_request(&mut self, request: Request) -> Result<Reply> {
        if request.method != "POST" {
            return Ok(Response::text(405, "method not allowed")
                .with_header("allow", "POST")
                .into());
        }
        Ok(Response::text(200, self.check(now_s()).cooldown.to_string()).into())
    }
}

roomhost_sdk::export_object!(RateLimiter);

#[cfg(test)]
mod tests {
    use roomhost_sdk::testing::TestObject;
    use serde_json::{Value, json};

    use super::RateLimiter;

    fn check(limiter: &mut TestObject<RateLimiter>) -> Value {
        let answer = limiter.call("check", b"").unwrap_or_default();
        serde_json::from_slice(&answer).unwrap_or_default()
    }

    #[test]
    fn five_quick_messages_pass_then_the_client_waits() {
        let mut limiter = TestObject::<RateLimiter>::new("rate-limiter", "10.0.0.1");
        for _ in 0..4 {
            assert_eq!(
                check(&mut limiter),
                json!({"allowed": true, "cooldown": 0.0})
            );
        }
        // The fifth puts the client 25 s ahead: allowed, blocked for 5 s.
        assert_eq!(
            check(&mut limiter),
            json!({"allowed": true, "cooldown": 5.0})
        );
        assert_eq!(check(&mut limiter)["allowed"], false);
        limiter.advance(std::time::Duration::from_secs(5));
        assert_eq!(check(&mut limiter)["allowed"], true);
        // Unknown methods are refused by name; an eviction forgets everything.
        assert!(limiter.call("nope", b"").is_err());
        limiter.evict();
        assert_eq!(
            check(&mut limiter),
            json!({"allowed": true, "cooldown": 0.0})
        );
    }

    #[test]
    fn http_post_answers_the_cooldown_and_other_methods_405() {
        let mut limiter = TestObject::<RateLimiter>::new("rate-limiter", "10.0.0.2");
        assert_eq!(limiter.post("/limit", b"").body_text(), "0");
        let get = limiter.get("/limit");
        assert_eq!(get.status, 405);
        assert!(get.headers.contains(&("allow".into(), "POST".into())));
    }
}
