//! `cargo xtask sim [--seeds N] [--first S] [--seed S [--faults I,J..]]
//! [--topology single|two-level|ha] [--jobs J] [--trace]`: the
//! deterministic simulator (`crates/stktagg-sim`) over many seeds, each on every
//! topology (or the one named). It is built in release: a run simulates about half
//! a minute of a whole topology, tens of thousands of steps of the real section
//! logic, and CI runs a thousand seeds of each topology.
//!
//! A failing seed is shrunk and printed with its trace, the command that replays
//! it, and the line that keeps it as a regression test.

use anyhow::Result;

/// Runs the simulator with `args` (see the module documentation), and says how
/// long it took (the simulator itself never reads the wall clock).
pub fn main(args: &[String]) -> Result<()> {
    let mut build = crate::cargo();
    build.args(["build", "--release", "--quiet", "-p", "stktagg-sim"]);
    crate::run(build)?;
    let mut cmd = crate::cargo();
    cmd.args(["run", "--release", "--quiet", "-p", "stktagg-sim", "--"]);
    cmd.args(args);
    let started = std::time::Instant::now();
    let result = crate::run(cmd);
    eprintln!(
        "simulator: {:.1} s (build excluded)",
        started.elapsed().as_secs_f64()
    );
    result
}
