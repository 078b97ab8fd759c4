//! The store's error type.

use stktagg_wire::{DataType, KeyType};

/// Why the store refused a registration or an update.
///
/// Variants that come from what a peer sent (a definition or an update) say so: the
/// daemon logs them and may end that peer's session; the store itself is unchanged
/// by a refused call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// Peer: an input's key type or key length differs from the table it feeds (the
    /// table took them from the first input that routed to it).
    #[error(
        "table {table}: key {got_type:?}/{got_len} does not match the table's {want_type:?}/{want_len}"
    )]
    KeyMismatch {
        /// The table's name, lossily decoded.
        table: String,
        /// The table's key type.
        want_type: KeyType,
        /// The table's key length.
        want_len: u32,
        /// The input's key type.
        got_type: KeyType,
        /// The input's key length.
        got_len: u32,
    },
    /// Peer: a key whose length does not fit the table's key type and length.
    #[error("key of {len} bytes does not fit a {key_type:?} key of length {key_len}")]
    BadKey {
        /// The key's length in bytes.
        len: usize,
        /// The table's key type.
        key_type: KeyType,
        /// The table's key length.
        key_len: u32,
    },
    /// Peer: an update carries another number of values than its definition declares.
    #[error("update carries {got} values, its definition declares {expected}")]
    ValueCount {
        /// Values declared by the definition.
        expected: usize,
        /// Values in the update.
        got: usize,
    },
    /// Peer: a value's kind does not match its data type's storage.
    #[error("value for {data_type} has the wrong kind")]
    ValueKind {
        /// The data type whose value is wrong.
        data_type: DataType,
    },
    /// Peer: an array type declares more elements than HAProxy allows (100).
    #[error("{data_type} declares {nbelem} elements, more than 100")]
    ArrayTooLong {
        /// The array type.
        data_type: DataType,
        /// Its declared element count.
        nbelem: u32,
    },
    /// Limit: a new key would exceed the per-table entry limit.
    #[error("table {table} is full ({limit} entries)")]
    TableFull {
        /// The table's name, lossily decoded.
        table: String,
        /// The configured limit.
        limit: usize,
    },
    /// Limit: too many distinct server names (`server_key` values) were seen.
    #[error("too many distinct server names ({limit})")]
    DictFull {
        /// The limit on distinct names.
        limit: usize,
    },
    /// Caller: the handle belongs to a source removed with `drop_source`.
    #[error("source {0} was dropped")]
    SourceDropped(u16),
    /// Caller: no table has this id.
    #[error("no table with id {0}")]
    UnknownTable(u32),
}
