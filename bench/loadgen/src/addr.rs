//! Loopback source addresses: every client connects from its own address in
//! 127.0.0.0/8 (all of which is loopback on Linux), so the host's per-IP rate
//! limiter sees distinct clients and no single address runs out of ephemeral
//! ports.
//!
//! Slot `k` maps to `127.A.B.C` with `C` in 1..=254 (never `.0` or `.255`),
//! `B` in 0..=255 and `A` in 1..=255 — 127.0.x.x (where 127.0.0.1 lives) is
//! left alone.

use std::net::{Ipv4Addr, SocketAddr};

/// Usable last octets per /24 (1..=254).
const PER_C: u64 = 254;
/// How many source addresses there are.
pub const CAPACITY: u64 = PER_C * 256 * 255;

/// The source address of slot `k`, or `None` past [`CAPACITY`].
pub fn source_addr(k: u64) -> Option<Ipv4Addr> {
    if k >= CAPACITY {
        return None;
    }
    let c = (k % PER_C) as u8 + 1;
    let rest = k / PER_C;
    let b = (rest % 256) as u8;
    let a = (rest / 256) as u8 + 1;
    Some(Ipv4Addr::new(127, a, b, c))
}

/// The source address of client `i` in a run whose addresses start at slot
/// `offset`; an error when the range is exhausted.
pub fn client_source(offset: u64, i: u64) -> anyhow::Result<Ipv4Addr> {
    offset.checked_add(i).and_then(source_addr).ok_or_else(|| {
        anyhow::anyhow!(
            "no loopback source address left for client {i} (offset {offset}, capacity {CAPACITY})"
        )
    })
}

/// A random slot offset that leaves room for `clients` addresses, so repeated
/// runs do not inherit each other's rate-limiter state on the host.
pub fn random_offset(clients: u64) -> u64 {
    let room = CAPACITY.saturating_sub(clients).max(1);
    crate::random_u64() % room
}

/// Refuses anything but a loopback IPv4 host: the load generator only ever
/// talks to 127.0.0.0/8.
pub fn check_loopback(host: SocketAddr) -> anyhow::Result<()> {
    match host {
        SocketAddr::V4(v4) if v4.ip().is_loopback() => Ok(()),
        other => anyhow::bail!("--host must be a 127.x.x.x address (got {other}); loopback only"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn first_addresses() {
        assert_eq!(source_addr(0), Some(Ipv4Addr::new(127, 1, 0, 1)));
        assert_eq!(source_addr(253), Some(Ipv4Addr::new(127, 1, 0, 254)));
        assert_eq!(source_addr(254), Some(Ipv4Addr::new(127, 1, 1, 1)));
        assert_eq!(source_addr(254 * 256), Some(Ipv4Addr::new(127, 2, 0, 1)));
        assert_eq!(
            source_addr(CAPACITY - 1),
            Some(Ipv4Addr::new(127, 255, 255, 254))
        );
        assert_eq!(source_addr(CAPACITY), None);
    }

    #[test]
    fn all_distinct_loopback_and_never_0_or_255() {
        let mut seen = HashSet::new();
        for k in (0..200_000).chain(CAPACITY - 1000..CAPACITY) {
            let a = source_addr(k).expect("in range");
            let o = a.octets();
            assert!(a.is_loopback());
            assert_ne!(o[1], 0, "127.0.x.x is left alone");
            assert!(o[3] != 0 && o[3] != 255, "{a}");
            assert!(seen.insert(a), "{a} twice");
        }
    }

    #[test]
    fn offsets_and_exhaustion() {
        assert_eq!(
            client_source(254, 1).expect("ok"),
            Ipv4Addr::new(127, 1, 1, 2)
        );
        assert!(client_source(CAPACITY - 1, 1).is_err());
        assert!(client_source(u64::MAX, 1).is_err());
        for _ in 0..100 {
            let off = random_offset(10_000);
            assert!(off + 10_000 <= CAPACITY);
        }
    }

    #[test]
    fn only_loopback_hosts() {
        assert!(check_loopback("127.0.0.1:8080".parse().expect("addr")).is_ok());
        assert!(check_loopback("127.9.9.9:1".parse().expect("addr")).is_ok());
        assert!(check_loopback("10.0.0.1:8080".parse().expect("addr")).is_err());
        assert!(check_loopback("[::1]:8080".parse().expect("addr")).is_err());
    }
}
