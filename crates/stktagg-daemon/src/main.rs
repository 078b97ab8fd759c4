//! The `stktagg` binary: command line, logging, then [`stktagg_daemon::run`].

use anyhow::{Context, Result};
use clap::{ArgAction, Parser};
use std::path::PathBuf;
use std::process::ExitCode;

/// Stick-table aggregator for HAProxy fleets.
///
/// With no `-f`, runs the embedded default configuration (a single-level aggregator on
/// loopback; see `--print-default-config`).
#[derive(Debug, Parser)]
#[command(name = "stktagg", version, about, long_about = None)]
struct Cli {
    /// Configuration file; may be given several times, files are read in order as one.
    #[arg(short = 'f', long = "config", value_name = "FILE", action = ArgAction::Append)]
    config: Vec<PathBuf>,
    /// Check the configuration, print the resolved plan and exit (0 if valid).
    #[arg(short = 'c', long = "check")]
    check: bool,
    /// Print the embedded default configuration and exit.
    #[arg(long)]
    print_default_config: bool,
    /// Log level (error, warn, info, debug, trace); overrides the configuration.
    #[arg(short = 'd', long = "log-level", value_name = "LEVEL")]
    log_level: Option<String>,
    /// Log as JSON lines instead of text.
    #[arg(long)]
    log_json: bool,
    /// Prometheus listener address (overrides the configuration), e.g. 127.0.0.1:10090.
    #[arg(long, value_name = "ADDR")]
    prometheus: Option<std::net::SocketAddr>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match real_main(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("stktagg: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn real_main(cli: Cli) -> Result<ExitCode> {
    if cli.print_default_config {
        print!("{}", stktagg_config::DEFAULT_CONFIG);
        return Ok(ExitCode::SUCCESS);
    }
    let loaded = match stktagg_daemon::load(&cli.config) {
        Ok(l) => l,
        Err(stktagg_daemon::LoadError::Invalid(msg)) => {
            eprint!("{msg}");
            if !msg.ends_with('\n') {
                eprintln!();
            }
            return Ok(ExitCode::from(2));
        }
    };
    if cli.check {
        print!("{}", loaded.plan);
        print!("{}", loaded.tls_summary());
        println!("configuration is valid");
        return Ok(ExitCode::SUCCESS);
    }
    let level = cli
        .log_level
        .clone()
        .unwrap_or_else(|| loaded.log_level().to_owned());
    stktagg_daemon::logging::init(&level, cli.log_json)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("stktagg")
        .build()
        .context("starting the tokio runtime")?;
    let mut options = stktagg_daemon::Options {
        config_files: cli.config.clone(),
        ..Default::default()
    };
    if let Some(p) = cli.prometheus {
        options.prometheus = Some(p);
    }
    runtime.block_on(stktagg_daemon::run_until_signal(loaded, options))?;
    Ok(ExitCode::SUCCESS)
}
