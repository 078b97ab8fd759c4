//! Integration tests of the resolver: the seed's plans and the routing invariants.

// Helpers outside `#[test]` functions unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used)]

mod invariants;
mod renumber;
mod seeds;
