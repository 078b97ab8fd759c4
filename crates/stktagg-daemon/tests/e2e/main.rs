//! End-to-end tests of the aggregation core against real HAProxy 2.6 nodes.
//!
//! Each test runs the `stktagg` binary as a subprocess and three `haproxy` nodes on
//! their own block of 127.0.0.x addresses (see `fleet`), sends real HTTP requests
//! into the nodes, and reads every table through the node's own runtime API (and
//! ours, for what a 2.6 node cannot show). Tests run in parallel; every wait is
//! bounded. Without `haproxy` every test fails with the harness's install hint.
//! Measured numbers and the chosen bounds are in `docs/e2e-results.md`.
//!
//! # Layout
//! - `fleet`: the aggregator process, the nodes, the HTTP client, snapshots and the
//!   rate tolerance.
//! - `sums`: every data-type family, in a peers-section IP table and in a
//!   string-keyed table declared the older way in backends.
//! - `decay`: rates fall to 0 without traffic; keys expire everywhere.
//! - `restart`: aggregator SIGKILL and restart during traffic; hard restart of one
//!   node, with and without teach-back.
//! - `latency`: time from a request on one node to the new sum on every node.
//! - `many`: fifty engine-driven sources at once: no session dropped, every sum exact.

// Test code may unwrap (a panic is a test failure); helpers outside `#[test]`
// functions are test code too.
#![allow(clippy::unwrap_used)]

mod decay;
mod fleet;
mod latency;
mod many;
mod restart;
mod sums;
