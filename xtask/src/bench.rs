//! `cargo xtask bench [--quick]`: benchmarks and `docs/performance.md`.

use anyhow::{Result, bail};

/// Entry point.
pub fn main(args: &[String]) -> Result<()> {
    bail!("not implemented yet (args: {args:?})")
}
