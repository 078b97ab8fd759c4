//! A deterministic simulator of whole stktagg topologies: the real section logic
//! (`stktagg_section`'s `SectionCore` and `SessionCore` over the real store, the
//! `stktagg_session` engine) of several aggregators, and simulated HAProxy nodes
//! (the same engine, playing a node), over an in-memory network on simulated
//! milliseconds, in one thread, everything random drawn from one seed.
//!
//! A run builds a topology from the aggregators' real configuration files, lets
//! the nodes count requests, plays a few faults drawn from the seed (kills and
//! restarts with or without state, partitions, delays, slow readers, duplicate
//! sessions), then stops the traffic and waits for every value to be exact. The
//! invariants are checked after every step (see `world`). A failing run is shrunk
//! by dropping faults while it still fails, and printed with its trace and the
//! command that replays it; `cargo xtask sim` runs many seeds.
//!
//! No wall clock, no threads, no sockets: the same seed gives the same run, byte
//! for byte ([`Outcome::hash`]).
//!
//! # Layout
//! - `rng`: the seeded generator.
//! - `net`: connections, delays, partitions, slow readers.
//! - `endpoint`: a connection's end with its engine, the step context, the trace.
//! - `store`: the real store, listing in a deterministic order.
//! - `aggregator`: an aggregator driven as the daemon drives one.
//! - `node`: a HAProxy node.
//! - `topology`: the topologies and their configurations.
//! - `faults`: the faults and how they are drawn.
//! - `world`: a run: the processes, the loop, the faults played.
//! - `oracle`: the invariants a run checks, and what a failure explains.

#![warn(missing_docs)]

pub mod aggregator;
pub mod endpoint;
pub mod faults;
pub mod net;
pub mod node;
mod oracle;
pub mod rng;
pub mod store;
pub mod topology;
pub mod world;

pub use faults::Fault;
pub use topology::Topology;
pub use world::{Failure, Outcome, World};

use std::fmt::Write as _;

/// One run: a topology, a seed, and which of the seed's faults to play.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSpec {
    /// The topology.
    pub topology: Topology,
    /// The seed.
    pub seed: u64,
    /// The indices of the seed's faults to play (`None`: all of them).
    pub keep: Option<Vec<usize>>,
}

impl RunSpec {
    /// Every fault of the seed.
    pub fn new(topology: Topology, seed: u64) -> RunSpec {
        RunSpec {
            topology,
            seed,
            keep: None,
        }
    }

    /// Every fault the seed draws, in order.
    ///
    /// # Errors
    /// A topology whose configurations do not load.
    pub fn plan(&self) -> Result<Vec<Fault>, String> {
        let layout = world::Layout::of(&self.topology.spec())?;
        Ok(faults::draw(
            self.seed,
            world::START_MS,
            layout.names.len(),
            &layout.links,
            &layout.lossable,
        ))
    }

    /// The faults this run plays, with their indices in the plan.
    ///
    /// # Errors
    /// A topology whose configurations do not load.
    pub fn faults(&self) -> Result<Vec<(usize, Fault)>, String> {
        let plan = self.plan()?;
        Ok(plan
            .into_iter()
            .enumerate()
            .filter(|(i, _)| self.keep.as_ref().is_none_or(|k| k.contains(i)))
            .collect())
    }

    /// Runs it.
    ///
    /// # Errors
    /// The first broken invariant, with the trace.
    pub fn run(&self) -> Result<Outcome, Failure> {
        let faults = self.faults().map_err(|message| Failure {
            at: 0,
            message,
            trace: Vec::new(),
        })?;
        let faults: Vec<Fault> = faults.into_iter().map(|(_, f)| f).collect();
        let world = World::new(self.topology, self.seed, &faults).map_err(|message| Failure {
            at: 0,
            message,
            trace: Vec::new(),
        })?;
        world.run()
    }

    /// The command that replays it.
    pub fn command(&self) -> String {
        let mut c = format!(
            "cargo xtask sim --topology {} --seed {}",
            self.topology, self.seed
        );
        if let Some(k) = &self.keep {
            let k: Vec<String> = k.iter().map(ToString::to_string).collect();
            let _ = write!(c, " --faults {}", k.join(","));
        }
        c
    }
}

/// A failing run reduced: faults are dropped one at a time, for as long as the run
/// still fails, until none can go. Returns the smallest failing run found and its
/// failure.
pub fn shrink(spec: &RunSpec, failure: Failure) -> (RunSpec, Failure) {
    let Ok(all) = spec.faults() else {
        return (spec.clone(), failure);
    };
    let mut kept: Vec<usize> = all.iter().map(|(i, _)| *i).collect();
    let mut best = failure;
    loop {
        let mut dropped = false;
        for i in 0..kept.len() {
            let mut fewer = kept.clone();
            fewer.remove(i);
            let candidate = RunSpec {
                keep: Some(fewer.clone()),
                ..spec.clone()
            };
            if let Err(f) = candidate.run() {
                kept = fewer;
                best = f;
                dropped = true;
                break;
            }
        }
        if !dropped {
            break;
        }
    }
    (
        RunSpec {
            keep: Some(kept),
            ..spec.clone()
        },
        best,
    )
}

/// What a failing run prints: the seed, the broken invariant, the faults, the
/// trace, and how to replay it.
pub fn report(spec: &RunSpec, failure: &Failure) -> String {
    let mut r = String::new();
    let names = world::Layout::of(&spec.topology.spec())
        .map(|l| l.names)
        .unwrap_or_default();
    let _ = writeln!(
        r,
        "FAILED: topology {} seed {} at {}.{:03} s\n  {}",
        spec.topology,
        spec.seed,
        failure.at / 1000,
        failure.at % 1000,
        failure.message
    );
    let _ = writeln!(r, "faults:");
    for (i, f) in spec.faults().unwrap_or_default() {
        let _ = writeln!(r, "  [{i}] {}", f.describe(&names));
    }
    let _ = writeln!(r, "trace ({} events):", failure.trace.len());
    for line in &failure.trace {
        let _ = writeln!(r, "  {line}");
    }
    let _ = writeln!(r, "replay: {}", spec.command());
    let keep = spec
        .keep
        .as_ref()
        .map_or_else(|| "None".to_owned(), |k| format!("Some(vec!{k:?})"));
    let _ = writeln!(
        r,
        "regression test (crates/stktagg-sim/tests/regressions.rs):\n  check(Topology::{:?}, {}, {keep});",
        spec.topology, spec.seed
    );
    r
}
