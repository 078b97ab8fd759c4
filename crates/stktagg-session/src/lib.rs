//! The peers-protocol session engine: one session between two peers, from the first
//! hello byte to the close, as a sans-IO state machine in the manner of quinn-proto.
//!
//! Everything that speaks HAProxy's peers protocol in this workspace drives this
//! engine: the daemon's session tasks, the load generator's sources, the mock peers
//! of the tests and the deterministic simulator. It owns the rules of a session:
//! the handshake on both sides (HAProxy's status codes, in HAProxy's order), table
//! definitions and switches, update ids, acknowledgements, heartbeats and the idle
//! rule, and full resyncs in both directions (request, lesson with teach-back
//! first, FINISHED or PARTIAL, CONFIRM, retries). What a session means (which table
//! is aggregated, what to teach) is the caller's: it reads [`Event`]s and supplies
//! entries through a [`Feed`].
//!
//! No sockets, no tasks, no clock: inputs are `handle_*(now, ..)`, outputs are
//! `poll_*()`, time is milliseconds passed in.
//!
//! # Layout
//! - `config`: [`SessionConfig`] and the [`ResyncPolicy`].
//! - `event`: [`Event`] and [`End`].
//! - `resync`: the two resync state machines, [`Learning`] and [`Teaching`].
//! - `outbox`: sending entries ([`Outbox`], [`Feed`], [`TableKey`]), one at a time,
//!   encoded once for many sessions, or as pre-encoded runs ([`PreencodedError`]).
//! - `session`: [`PeerSession`], which ties them together.

#![warn(missing_docs)]

mod config;
mod event;
mod outbox;
mod resync;
mod session;

#[cfg(test)]
mod tests;

pub use config::{
    DEFAULT_HEARTBEAT_MS, DEFAULT_HELLO_MS, DEFAULT_HIGH_WATER, DEFAULT_IDLE_MS, ResyncPolicy,
    SessionConfig,
};
pub use event::{End, Event, PeerComplaint};
pub use outbox::{Feed, NothingToSend, Outbox, Phase, PreencodedError, Progress, TableKey};
pub use resync::{Learning, Teaching};
pub use session::PeerSession;
