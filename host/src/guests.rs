//! The guests the build script compiled (`host/build.rs` lists them once):
//! the built-in classes, embedded in the binary, and the test guests and
//! examples, which the tests load from their files.

use std::path::{Path, PathBuf};

/// One compiled guest.
#[derive(Debug)]
pub struct Guest {
    /// The crate name, which is also the built-in class name (`chat-room`).
    pub name: &'static str,
    /// Where the build script wrote its `.wasm`.
    pub file: &'static str,
    /// Its bytes, when it is a built-in class embedded in the binary.
    pub embedded: Option<&'static [u8]>,
}

include!(concat!(env!("OUT_DIR"), "/guests.rs"));

/// The directory holding every compiled guest `.wasm`.
pub const DIR: &str = env!("ROOMHOST_GUEST_DIR");

/// The names of the built-in classes (`builtin:NAME` in a config).
pub fn builtin_names() -> impl Iterator<Item = &'static str> {
    GUESTS
        .iter()
        .filter(|g| g.embedded.is_some())
        .map(|g| g.name)
}

/// The bytes of a built-in component.
pub fn builtin(name: &str) -> Option<&'static [u8]> {
    GUESTS.iter().find(|g| g.name == name)?.embedded
}

/// The path of a compiled guest by crate name (e.g. `probe`), for tests and
/// tools.
pub fn wasm(name: &str) -> PathBuf {
    match GUESTS.iter().find(|g| g.name == name) {
        Some(g) => PathBuf::from(g.file),
        None => Path::new(DIR).join(format!("{}.wasm", name.replace('-', "_"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chat_and_its_limiter_are_built_in_and_the_test_guests_are_files() {
        let names: Vec<_> = builtin_names().collect();
        assert_eq!(names, ["chat-room", "rate-limiter"]);
        assert!(builtin("chat-room").is_some_and(|b| b.starts_with(b"\0asm")));
        assert!(builtin("probe").is_none());
        assert!(wasm("probe").exists(), "{}", wasm("probe").display());
    }
}
