//! The redb tables, declared once.

use redb::TableDefinition;

/// Every object's key-value pairs: `(class, name, key) → value`. Tuple keys
/// order by class, then name, then key bytes, so one object's keys are one
/// contiguous range.
pub const KV: TableDefinition<(&str, &str, &[u8]), &[u8]> = TableDefinition::new("kv");
