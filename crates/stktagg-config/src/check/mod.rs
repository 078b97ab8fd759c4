//! From parsed lines to a checked [`Config`]: values, sections, and every rule
//! that spans more than one line. All errors are collected, none stops the walk.
//!
//! # Layout
//!
//! Each module uses only those listed before it, so none imports another that
//! imports it back.
//!
//! - `diag`: where every error and warning goes, and the positions they point at.
//! - `keywords`: the known keywords and "did you mean" suggestions.
//! - `tokens`: the meaning of one token on its own (names, suffixes, durations,
//!   counts, modes, addresses).
//! - `global`: the lines of `global`.
//! - `peers`: the `peer` lines of a section, against the peers declared before.
//! - `sections`: what is kept per `aggregations` section, and its other lines.
//! - `rules`: the checks that need a whole section or the whole file.
//! - `walk`: which section each line is in, misplaced lines, and the dispatch to
//!   the modules above.

mod diag;
mod global;
mod keywords;
mod peers;
mod rules;
mod sections;
mod tokens;
mod walk;

use crate::ast::Config;
use crate::error::ConfigErrors;
use crate::syntax::parse_lines;

/// Checks `text` and builds the configuration, or returns every error found.
pub(crate) fn check(text: &str, file: &str) -> Result<Config, ConfigErrors> {
    let mut walk = walk::Walk::new(file);
    for parsed in parse_lines(text) {
        walk.line(parsed);
    }
    walk.finish()
}
