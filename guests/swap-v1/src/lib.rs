//! # swap-v1 — a test guest for hot swap (version 1)
//!
//! Each WebSocket text message increments the counter `count` in storage and
//! is answered to its sender as `swap-v1:<count>:<text>`. `GET .../count`
//! answers the counter, `GET .../version` the version name. `swap-v2` is the
//! same code answering `swap-v2:...`; `swap-bad` traps in `init`.

const VERSION: &str = "swap-v1";
const TRAP_IN_INIT: bool = false;
const TRAP_ON_MESSAGE: bool = false;

include!("body.rs");
