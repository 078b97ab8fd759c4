//! `cargo xtask deb`: the Debian package.

use anyhow::{Result, bail};

/// Entry point.
pub fn main(args: &[String]) -> Result<()> {
    bail!("not implemented yet (args: {args:?})")
}
