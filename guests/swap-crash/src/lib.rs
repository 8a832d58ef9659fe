//! # swap-crash — a test guest that traps on every message
//!
//! `swap-v1`'s code, except that every WebSocket message panics: deployed, it
//! must be rolled back by the host itself.

const VERSION: &str = "swap-crash";
const TRAP_IN_INIT: bool = false;
const TRAP_ON_MESSAGE: bool = true;

include!("../../swap-v1/src/body.rs");
