//! # swap-v2 — a test guest for hot swap (version 2)
//!
//! `swap-v1`'s code, answering `swap-v2:<count>:<text>`.

const VERSION: &str = "swap-v2";
const TRAP_IN_INIT: bool = false;
const TRAP_ON_MESSAGE: bool = false;

include!("../../swap-v1/src/body.rs");
