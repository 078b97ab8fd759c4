//! Resolves a checked configuration into the plan the daemon runs: per section,
//! the listener, each peer's role (source, `down` source, upstream and its group),
//! and the routing of every table a peer may define to us.
//!
//! The crate is pure: [`resolve`] takes a [`stktagg_config::Config`] and returns a
//! [`Plan`]; the daemon asks the plan, for each table a peer announces,
//! [`SectionPlan::route_incoming`], and for each peer whether it
//! [`SectionPlan::receives_output`] and [`SectionPlan::receives_relay`].
//!
//! ```
//! use stktagg_topology::{PeerId, Route, resolve};
//! let cfg = stktagg_config::parse_str(stktagg_config::DEFAULT_CONFIG, "<default>").unwrap();
//! let plan = resolve(&cfg).unwrap();
//! let s = &plan.sections[0];
//! let hap1 = s.peer_by_name("hap1").unwrap();
//! assert_eq!(
//!     s.route_incoming(hap1, "/req.uncombined"),
//!     Route::Aggregate { output: "/req.aggr".to_owned() }
//! );
//! ```
//!
//! **Invariants** (property-tested): a table is never routed back to the peer it
//! came from under the same name; nothing received from an upstream is ever
//! aggregated as input; what we send (outputs and relayed tables) is never input.
//!
//! # Layout
//!
//! - `plan`: the types ([`Plan`], [`SectionPlan`], [`PeerPlan`], [`GroupPlan`],
//!   [`Route`]), [`resolve`], and the routing queries.
//! - `identity`: who may claim to be a peer (the `addr-check` address rules) and
//!   the source address our dialer binds.
//! - `display`: the readable summary printed by `stktagg -c`.
//! - `slots`: stable peer and group ids across reloads ([`renumber`]).
//! - `diff`: what a new plan changes, by meaning ([`plan_changes`]).

mod diff;
mod display;
mod identity;
mod plan;
mod slots;

pub use diff::{Change, PlanChange, plan_changes, role_label, section_changes};
pub use slots::{Slots, renumber};

pub use plan::{
    GroupId, GroupPlan, IgnoreReason, PeerId, PeerPlan, Plan, Role, Route, RulePlan, SectionPlan,
    SourceKind, resolve,
};

/// A configuration that cannot be resolved. `stktagg_config::parse_str` already
/// rejects all of these; they can only come from a configuration built by hand.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopologyError {
    /// The section has no `local` peer.
    #[error("section `{section}` has no `local` peer")]
    NoLocal {
        /// The section.
        section: String,
    },
    /// The section has more than one `local` peer.
    #[error("section `{section}` has more than one `local` peer")]
    TwoLocals {
        /// The section.
        section: String,
    },
    /// The `local` peer has no address to listen on.
    #[error("the `local` peer of section `{section}` has no address")]
    LocalWithoutAddress {
        /// The section.
        section: String,
    },
    /// Two peers share a name.
    #[error("duplicate peer name `{name}` in section `{section}`")]
    DuplicatePeer {
        /// The section.
        section: String,
        /// The name.
        name: String,
    },
    /// The section has no aggregation rule.
    #[error("section `{section}` has no `from ... to ...` rule")]
    NoRule {
        /// The section.
        section: String,
    },
    /// A suffix that is empty or does not start with `.`.
    #[error("invalid suffix `{suffix}` in section `{section}`")]
    BadSuffix {
        /// The section.
        section: String,
        /// The suffix.
        suffix: String,
    },
    /// A `shard` above the section's `shards` (or any `shard` without `shards`).
    #[error("peer `{name}` of section `{section}` has a shard above the section's `shards`")]
    ShardOutOfRange {
        /// The section.
        section: String,
        /// The peer.
        name: String,
    },
    /// Members of one `up` group with different shards.
    #[error("the members of group {group} of section `{section}` have different shards")]
    GroupShards {
        /// The section.
        section: String,
        /// The group number.
        group: u32,
    },
    /// A suffix used twice, or ending with another one, or two `from any`.
    #[error("suffix `{suffix}` in section `{section}` collides with another suffix")]
    SuffixConflict {
        /// The section.
        section: String,
        /// The suffix.
        suffix: String,
    },
}
