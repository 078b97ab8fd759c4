//! Per-source contributions and aggregated outputs of stick tables.
//!
//! HAProxy nodes (and lower-level aggregators) push their stick-table entries to
//! stktagg; this crate keeps each source's latest values per key, combines them per
//! data type (SPEC §4: saturating sums, rates evaluated at one instant and summed,
//! maximum of tags, latest server), and tells each destination which keys changed,
//! in one coalesced log per table that every destination reads with its own cursor. It also holds the relay tables received from up
//! groups, and everything the runtime API and teach-back need.
//!
//! Guarantees (property-tested): an output depends only on each source's latest
//! snapshot per key, never on the order updates arrive in nor on replays of a
//! snapshot (except `server_id`/`server_key`, whose rule is "most recent wins");
//! sums saturate at their type's width.
//!
//! The crate is pure: no sockets, no tasks, no clock. The daemon passes its monotonic
//! clock as `now` (ms) and drives time with [`Store::expire`] and
//! [`Store::refresh_rates_budget`]. A [`Store`] is `Send + Sync` and is shared behind an
//! `Arc` by every peer session task; its locking is documented in `store`.
//!
//! # Layout
//! - `rules`: the aggregation rules as pure functions (frequency counters: receipt,
//!   HAProxy's read rule, the published shape of a sum; saturating sums; max; latest).
//! - `layout`: how a table's values are packed into fixed-width records, and how an
//!   input definition maps onto an output (by data type).
//! - `store`: the [`Store`]: registrations, updates, resyncs, expiry, rate refresh,
//!   relays, reads, teach-back and introspection.
//! - `subscribe`: change tracking: one coalesced change log per table, one cursor
//!   per destination ([`Subscription`], [`Waker`]), each change encoded once for
//!   every destination ([`SharedChange`]).
//! - `ids` (private): [`TableId`], [`SourceId`], [`TableKind`] and the key hasher,
//!   shared by `store` and `subscribe`.
//! - `error`: [`StoreError`].

pub mod error;
mod ids;
pub mod layout;
pub mod rules;
pub mod store;
pub mod subscribe;

pub use error::StoreError;
pub use ids::{SourceId, TableId, TableKind};
pub use layout::Mismatch;
pub use store::{
    Applied, ContributionDetail, EntryMeta, InputHandle, OutputEntry, RelayHandle, Store,
    StoreOptions, TableInfo, TableSummary, TaughtEntry, TaughtTable,
};
pub use subscribe::{Change, SharedChange, SharedSlot, Subscription, SubscriptionFilter, Waker};

#[cfg(test)]
mod tests;
