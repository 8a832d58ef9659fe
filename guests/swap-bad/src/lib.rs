//! # swap-bad — a test guest whose `init` traps
//!
//! `swap-v1`'s code, except that `init` panics: a deploy of it must be
//! refused, and the running version must keep serving.

const VERSION: &str = "swap-bad";
const TRAP_IN_INIT: bool = true;
const TRAP_ON_MESSAGE: bool = false;

include!("../../swap-v1/src/body.rs");
