//! Object identity: `(class, name)`, name validation and minted unique ids.

use std::fmt;

/// The longest object name, in bytes.
pub const MAX_NAME_BYTES: usize = 256;

/// The identity of one room object. Exactly one live instance exists per id.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId {
    /// The class: which component runs the object.
    pub class: String,
    /// The object's name within its class.
    pub name: String,
}

impl ObjectId {
    /// An object id from its parts (not validated).
    pub fn new(class: impl Into<String>, name: impl Into<String>) -> ObjectId {
        ObjectId {
            class: class.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.class, self.name)
    }
}

/// True when `name` is a 64-digit lower-case hex id, as minted by [`unique_id`].
pub fn is_unique_id(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Checks an object name: non-empty, at most [`MAX_NAME_BYTES`], no control chars.
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("object name is empty".into());
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(format!("object name longer than {MAX_NAME_BYTES} bytes"));
    }
    if name.chars().any(char::is_control) {
        return Err("object name contains control characters".into());
    }
    Ok(())
}

/// A fresh random 64-hex-digit name (256 random bits), like `newUniqueId()`.
pub fn unique_id() -> String {
    let mut bytes = [0u8; 32];
    if getrandom::fill(&mut bytes).is_err() {
        // The OS RNG failing is exceptional; fall back to a time-and-counter mix
        // that is still unique within this process.
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        bytes[..16].copy_from_slice(&nanos.to_le_bytes());
        bytes[16..24].copy_from_slice(&COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
        bytes[24..].copy_from_slice(&std::process::id().to_le_bytes().repeat(2));
    }
    let mut out = String::with_capacity(64);
    for b in bytes {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// A class name: letters, digits, `-` and `_`, not empty, at most 64 bytes.
pub fn valid_class_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_ids_are_64_hex_and_distinct() {
        let a = unique_id();
        let b = unique_id();
        assert!(is_unique_id(&a), "{a}");
        assert_ne!(a, b);
    }

    #[test]
    fn names_are_validated() {
        assert!(validate_name("lobby").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name(&"x".repeat(257)).is_err());
        assert!(validate_name("a\nb").is_err());
        assert!(!is_unique_id("ABCD"));
    }
}
