//! Integration tests of the configuration language: golden files and robustness.
//!
//! One test binary for the crate (matklad's "one integration test binary").

// Helpers outside `#[test]` functions unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used)]

mod golden;
mod never_panics;
