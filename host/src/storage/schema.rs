//! The redb tables, declared once.

use redb::TableDefinition;

/// Every object's key-value pairs: `(class, name, key) → value`. Tuple keys
/// order by class, then name, then key bytes, so one object's keys are one
/// contiguous range.
pub const KV: TableDefinition<(&str, &str, &[u8]), &[u8]> = TableDefinition::new("kv");

/// Each object's pending alarm: `(class, name) → at_ms` (ms since the epoch).
pub const ALARMS: TableDefinition<(&str, &str), u64> = TableDefinition::new("alarms");

/// Bytes (keys + values) each object stores: `(class, name) → bytes`, kept
/// exact by the committer, for the per-object quota.
pub const USAGE: TableDefinition<(&str, &str), u64> = TableDefinition::new("usage");

/// Each class's versions and which one is active: `class → JSON` (see
/// `components::versions::ClassRecord`). Written by deploys and rollbacks,
/// read at start-up.
pub const CLASSES: TableDefinition<&str, &[u8]> = TableDefinition::new("classes");

/// Component bytes by content hash: `sha-256 hex → bytes`. Every version of
/// every class, so that a restart or a rollback finds what it needs.
pub const COMPONENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("components");

/// Which version of its class's component last wrote each object's keys:
/// `(class, name) → version id`, written with the commit.
pub const OBJECT_VERSIONS: TableDefinition<(&str, &str), &str> =
    TableDefinition::new("object_versions");
