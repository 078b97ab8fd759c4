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
//! - `tls`: the TLS options of `peer` and `default-server` lines, and what a
//!   listener or a dialed peer needs of them.
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
mod tls;
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

#[cfg(test)]
mod tests {
    /// The modules in the order of the layout above.
    const LAYOUT: &[(&str, &str)] = &[
        ("diag", include_str!("diag.rs")),
        ("keywords", include_str!("keywords.rs")),
        ("tokens", include_str!("tokens.rs")),
        ("tls", include_str!("tls.rs")),
        ("global", include_str!("global.rs")),
        ("peers", include_str!("peers.rs")),
        ("sections", include_str!("sections.rs")),
        ("rules", include_str!("rules.rs")),
        ("walk", include_str!("walk.rs")),
    ];

    /// The layout is an order: a module that used itself or a later one could
    /// close a cycle, which `modcycles.py` does not see below the crate's top level.
    #[test]
    fn modules_use_only_those_listed_before_them() {
        for (i, (name, source)) in LAYOUT.iter().enumerate() {
            for (later, _) in &LAYOUT[i..] {
                let path = format!("super::{later}");
                assert!(!source.contains(&path), "`{name}` uses `{later}`");
            }
        }
    }
}
