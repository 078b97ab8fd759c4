//! The `stktagg` binary: parses the command line and runs the daemon.

use clap::Parser;

/// Stick-table aggregator for HAProxy fleets.
#[derive(Debug, Parser)]
#[command(name = "stktagg", version, about)]
struct Cli {
    /// Configuration file.
    #[arg(short = 'f', long = "config")]
    config: Option<std::path::PathBuf>,
    /// Check the configuration and exit.
    #[arg(short = 'c', long = "check")]
    check: bool,
}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    anyhow::bail!(
        "stktagg {}: the daemon is not implemented yet",
        env!("CARGO_PKG_VERSION")
    )
}
