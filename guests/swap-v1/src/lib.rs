//! # swap-v1 — a test guest for hot swap (version 1)
//!
//! Each WebSocket text message increments the counter `count` in storage and
//! is answered to its sender as `swap-v1:<count>:<text>`. `GET .../count`
//! answers the counter, `GET .../version` the version name, `GET .../versions`
//! `<current id> <upgraded-from id, or none>`, and `GET .../migrated-from` the
//! version whose data `init` found on its first run after a deploy (its
//! "migration" notes it, which makes this version the data's writer).
//! `swap-v2` is the same code answering `swap-v2:...`; `swap-bad` traps in
//! `init`, `swap-crash` on every message.

const VERSION: &str = "swap-v1";
const TRAP_IN_INIT: bool = false;
const TRAP_ON_MESSAGE: bool = false;

include!("body.rs");
