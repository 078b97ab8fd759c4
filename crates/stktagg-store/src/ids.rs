//! The store's identifiers and the hasher of its per-key maps, shared by the tables
//! (`store`) and the change logs (`subscribe`) so that neither imports the other's
//! internals.

/// The hasher of the per-key maps (entries, rate activity, dirty sets): foldhash,
/// seeded per process. It replaced SipHash, which cost a fifth of the ingest path.
pub(crate) type KeyHasher = foldhash::fast::RandomState;

/// A source or member peer, identified by the daemon (the peer's index).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceId(pub u16);

/// A table of the store (output or relay). Ids start at 1, so they can be used as
/// wire table ids as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableId(pub u32);

/// What a table holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TableKind {
    /// Sums over sources (`from … to <suffix>`).
    Output,
    /// The tables relayed from the active member of an up group (`forward`).
    Relay {
        /// The group number.
        group: u16,
    },
}
