//! `stktagg-loadgen`: runs one load scenario and prints its report as JSON.

use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;
use stktagg_loadgen::{KeyKind, RunSpec, StreamSpec};

#[derive(Debug, Parser)]
#[command(
    name = "stktagg-loadgen",
    about = "HAProxy-like peers-protocol sources for benchmarks"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, clap::Args)]
struct StreamArgs {
    /// Updates per active source.
    #[arg(long, default_value_t = 100_000)]
    updates: u64,
    /// Distinct keys.
    #[arg(long, default_value_t = 10_000)]
    keys: u32,
    /// `ipv4` or `string`.
    #[arg(long, default_value = "ipv4")]
    key_kind: KeyKind,
    /// The table's wire name.
    #[arg(long, default_value = "/bench.uncombined")]
    table: String,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Sends streams to a target (the aggregator or HAProxy) and reports.
    Send {
        /// The target's address (loopback only).
        #[arg(long)]
        target: SocketAddr,
        /// The target's local peer name.
        #[arg(long, default_value = "stktagg")]
        remote: String,
        /// Our peer names are this prefix and 1, 2, ...
        #[arg(long, default_value = "src")]
        local_prefix: String,
        /// Sessions.
        #[arg(long, default_value_t = 1)]
        sources: usize,
        /// Sessions that send (default: all, or 1 with --latency).
        #[arg(long)]
        active: Option<usize>,
        /// Total updates per second over the active sources (default: full speed).
        #[arg(long)]
        rate: Option<f64>,
        /// Measure propagation from source 1 to the others; with `--active` above 1,
        /// source 1 probes on a table of its own and the last source watches it.
        #[arg(long)]
        latency: bool,
        /// Also report the cost of the updates after this update id.
        #[arg(long)]
        measure_from: Option<u32>,
        /// Wait this long for the target's RESYNC REQUEST before sending.
        #[arg(long, default_value_t = 1000)]
        wait_resync_ms: u64,
        /// Keep reading this long after the last ack.
        #[arg(long, default_value_t = 200)]
        linger_ms: u64,
        /// Hard bound on the run.
        #[arg(long, default_value_t = 120)]
        timeout_s: u64,
        #[command(flatten)]
        stream: StreamArgs,
    },
    /// Measures the generator alone: the stream into a socket that discards it.
    Discard {
        #[command(flatten)]
        stream: StreamArgs,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let out = match cli.cmd {
        Cmd::Send {
            target,
            remote,
            local_prefix,
            sources,
            active,
            rate,
            latency,
            measure_from,
            wait_resync_ms,
            linger_ms,
            timeout_s,
            stream,
        } => {
            let mut s = StreamSpec::new(stream.updates, stream.keys, stream.key_kind);
            s.table_name = stream.table;
            let spec = RunSpec {
                target,
                remote_name: remote,
                local_prefix,
                sources,
                active: active.unwrap_or(if latency { 1 } else { sources }),
                stream: s,
                total_rate: rate,
                latency,
                wait_resync: Duration::from_millis(wait_resync_ms),
                linger: Duration::from_millis(linger_ms),
                timeout: Duration::from_secs(timeout_s),
                measure_from,
            };
            stktagg_loadgen::run(&spec).and_then(|r| to_json(&r))
        }
        Cmd::Discard { stream } => {
            let mut s = StreamSpec::new(stream.updates, stream.keys, stream.key_kind);
            s.table_name = stream.table;
            s.build()
                .and_then(|st| stktagg_loadgen::discard(&st))
                .and_then(|r| to_json(&r))
        }
    };
    match out {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("stktagg-loadgen: {e}");
            ExitCode::FAILURE
        }
    }
}

fn to_json(v: &impl serde::Serialize) -> Result<String, stktagg_loadgen::LoadgenError> {
    serde_json::to_string(v)
        .map_err(|_| stktagg_loadgen::LoadgenError::BadSpec("report not serializable"))
}
