//! The world's imports, one function per WIT function, with the signatures
//! wit-bindgen gives them. In a component (`wasm32`) they are the real
//! imports; in a native build they are served by the in-memory test host
//! ([`crate::testing`]), so that code written against them runs in `cargo
//! test`. Use these (or the typed modules of this crate) rather than
//! [`crate::bindings`].

#[cfg(target_arch = "wasm32")]
pub use crate::bindings::roomhost::object::{alarms, log, objects, sockets, storage, versions};

#[cfg(not(target_arch = "wasm32"))]
pub use crate::testing::imports::{alarms, log, objects, sockets, storage, versions};

/// The clock.
pub mod clock {
    /// The wall clock in ms since the Unix epoch.
    #[cfg(target_arch = "wasm32")]
    pub fn now_ms() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }

    /// The test host's clock in ms since the Unix epoch.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn now_ms() -> u64 {
        crate::testing::imports::now_ms()
    }
}

/// Class vars.
pub mod vars {
    /// A class var: the host passes them as environment variables.
    #[cfg(target_arch = "wasm32")]
    pub fn get(name: &str) -> Option<String> {
        std::env::var(name).ok()
    }

    /// A class var of the test host ([`crate::testing::TestObject::set_var`]).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn get(name: &str) -> Option<String> {
        crate::testing::imports::var(name)
    }
}
