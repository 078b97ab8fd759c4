//! One aggregation section's logic, without tasks, sockets or clock reads: what
//! each peer session means (its events applied to the tables, the tables fed to it),
//! the election of each `up` group's relayed member, and the peers' state.
//!
//! The daemon runs it with tokio tasks around real sockets; the deterministic
//! simulator runs the same logic over an in-memory network on simulated time. The
//! tables are reached through the [`TableStore`] trait (implemented by
//! [`stktagg_store::Store`]), the session protocol is [`stktagg_session`]'s engine,
//! and what a section asks of its runner goes through [`Signals`].
//!
//! # Layout
//! - `ratelimit`: [`LogLimiter`], so that one peer cannot flood the logs.
//! - `stats`: [`PeerStats`] and [`SessionState`].
//! - `store`: the [`TableStore`] trait.
//! - `metrics`: the Prometheus series recorded here.
//! - `section`: [`SectionCore`], its peers ([`PeerInfo`]) and the group election.
//! - `session`: [`SessionCore`], one session's meaning (a sharded peer's entries
//!   filtered by HAProxy's key-to-shard function), and its [`Ending`].

#![warn(missing_docs)]

mod metrics;
mod ratelimit;
mod section;
mod session;
mod stats;
mod store;

#[cfg(test)]
mod tests;

pub use metrics::{PROTOCOL_ERROR_KINDS, UpdateCounters, error_kind};
pub use ratelimit::LogLimiter;
pub use section::{FIRST_LESSON_WAIT_MS, PeerInfo, SectionCore, Signals};
pub use session::{Ending, SessionCore, resync_policy};
pub use stats::{OwedTeachBack, PeerStats, SessionState};
pub use store::TableStore;

/// Locks a mutex, ignoring poisoning: the data under our mutexes stays consistent
/// whatever a panicking holder did (plain values replaced whole).
pub fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
