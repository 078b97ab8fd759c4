//! `cargo xtask topo-test [scenario]`: whole topologies on loopback with real haproxy.

use anyhow::{Result, bail};

/// Entry point.
pub fn main(args: &[String]) -> Result<()> {
    bail!("not implemented yet (args: {args:?})")
}
