//! `stktagg-sim`: runs the simulator over many seeds (`cargo xtask sim` calls it in
//! a release build).
//!
//! ```text
//! stktagg-sim [--seeds N] [--first S] [--seed S [--faults I,J..]] [--topology T]
//!             [--jobs J] [--trace] [--shrink-max K]
//! ```
//!
//! Each seed runs on each selected topology (all three by default). Seeds run in
//! parallel on `--jobs` threads; each run is single-threaded and deterministic,
//! and results are printed in seed order whatever the threads did. A failing run
//! is shrunk and printed with its trace and the command that replays it; the exit
//! status is 1 if any run failed. Nothing here reads the wall clock (`cargo xtask
//! tidy` holds the crate to it): `cargo xtask sim` reports the time taken.

use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use stktagg_sim::{Failure, Outcome, RunSpec, Topology, report, shrink};

#[derive(Debug)]
struct Args {
    seeds: u64,
    first: u64,
    seed: Option<u64>,
    faults: Option<Vec<usize>>,
    topologies: Vec<Topology>,
    jobs: usize,
    trace: bool,
    shrink_max: usize,
}

fn usage() -> String {
    "usage: stktagg-sim [--seeds N] [--first S] [--seed S [--faults I,J..]] \
     [--topology single|two-level|ha] [--jobs J] [--trace] [--shrink-max K]"
        .to_owned()
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        seeds: 100,
        first: 0,
        seed: None,
        faults: None,
        topologies: Topology::ALL.to_vec(),
        jobs: std::thread::available_parallelism().map_or(1, usize::from),
        trace: false,
        shrink_max: 3,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| format!("{flag} needs a value\n{}", usage()))
        };
        let num = |v: String| v.parse::<u64>().map_err(|e| format!("{flag} {v}: {e}"));
        match flag.as_str() {
            "--seeds" => a.seeds = num(value()?)?,
            "--first" => a.first = num(value()?)?,
            "--seed" => a.seed = Some(num(value()?)?),
            "--jobs" => a.jobs = num(value()?)?.max(1) as usize,
            "--shrink-max" => a.shrink_max = num(value()?)? as usize,
            "--trace" => a.trace = true,
            "--topology" => {
                let v = value()?;
                let t = Topology::from_name(&v).ok_or_else(|| format!("unknown topology {v}"))?;
                a.topologies = vec![t];
            }
            "--faults" => {
                let v = value()?;
                let list: Result<Vec<usize>, _> = v
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::parse)
                    .collect();
                a.faults = Some(list.map_err(|e| format!("--faults {v}: {e}"))?);
            }
            "-h" | "--help" => return Err(usage()),
            other => return Err(format!("unknown argument {other}\n{}", usage())),
        }
    }
    Ok(a)
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if let Some(seed) = args.seed {
        return single(&args, seed);
    }
    many(&args)
}

/// One seed, its outcome (and trace, if asked) printed.
fn single(args: &Args, seed: u64) -> ExitCode {
    let mut failed = false;
    for &t in &args.topologies {
        let spec = RunSpec {
            topology: t,
            seed,
            keep: args.faults.clone(),
        };
        match spec.run() {
            Ok(o) => {
                println!("{}", line(&spec, &o));
                let names = stktagg_sim::world::Layout::of(&t.spec())
                    .map(|l| l.names)
                    .unwrap_or_default();
                for (i, f) in spec.faults().unwrap_or_default() {
                    println!("  [{i}] {}", f.describe(&names));
                }
                if args.trace {
                    for l in trace_of(&spec) {
                        println!("  {l}");
                    }
                }
            }
            Err(f) => {
                failed = true;
                println!("{}", report(&spec, &f));
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// The trace of a run, pass or fail.
fn trace_of(spec: &RunSpec) -> Vec<String> {
    let faults: Vec<_> = spec
        .faults()
        .unwrap_or_default()
        .into_iter()
        .map(|(_, f)| f)
        .collect();
    stktagg_sim::World::new(spec.topology, spec.seed, &faults)
        .map(|w| w.run_traced().1)
        .unwrap_or_default()
}

fn line(spec: &RunSpec, o: &Outcome) -> String {
    format!(
        "ok: topology {} seed {}: {} faults, exact {} ms after the last one, {} ms simulated, {} steps, {} bytes, hash {:016x}",
        spec.topology, spec.seed, o.faults, o.converged_ms, o.sim_ms, o.steps, o.bytes, o.hash
    )
}

/// Many seeds on every selected topology, in parallel.
fn many(args: &Args) -> ExitCode {
    let runs: Vec<RunSpec> = (args.first..args.first + args.seeds)
        .flat_map(|s| args.topologies.iter().map(move |&t| RunSpec::new(t, s)))
        .collect();
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(usize, Result<Outcome, Failure>)>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..args.jobs.min(runs.len()).max(1) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(spec) = runs.get(i) else {
                        break;
                    };
                    let r = spec.run();
                    results
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push((i, r));
                }
            });
        }
    });
    let mut results = results
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    results.sort_by_key(|(i, _)| *i);
    let mut failures = Vec::new();
    let mut per: Vec<(Topology, Vec<u64>)> =
        args.topologies.iter().map(|&t| (t, Vec::new())).collect();
    let mut steps = 0u64;
    let mut sim_ms = 0u64;
    let mut faults = 0usize;
    let mut max_pending = 0usize;
    for (i, r) in results {
        let spec = &runs[i];
        match r {
            Ok(o) => {
                if let Some((_, v)) = per.iter_mut().find(|(t, _)| *t == spec.topology) {
                    v.push(o.converged_ms);
                }
                steps += o.steps;
                sim_ms += o.sim_ms;
                faults += o.faults;
                max_pending = max_pending.max(o.max_pending);
            }
            Err(f) => failures.push((spec.clone(), f)),
        }
    }
    println!(
        "{} runs ({} seeds from {} x {} topologies, {} threads): {} failed",
        runs.len(),
        args.seeds,
        args.first,
        args.topologies.len(),
        args.jobs,
        failures.len()
    );
    println!(
        "  {faults} faults played, {:.0} s simulated, {steps} steps; at most {max_pending} changes pending for one session",
        sim_ms as f64 / 1000.0
    );
    for (t, mut v) in per {
        if v.is_empty() {
            continue;
        }
        v.sort_unstable();
        let pct = |p: usize| v[(v.len() - 1) * p / 100];
        println!(
            "  {t}: {} passed; exact after the last fault within {} ms (p50), {} ms (p99), {} ms (max)",
            v.len(),
            pct(50),
            pct(99),
            pct(100)
        );
    }
    for (spec, f) in failures.iter().take(args.shrink_max) {
        let (small, f) = shrink(spec, f.clone());
        println!("\n{}", report(&small, &f));
    }
    if failures.len() > args.shrink_max {
        println!("\n{} more failures:", failures.len() - args.shrink_max);
        for (spec, f) in failures.iter().skip(args.shrink_max) {
            println!("  {}: {}", spec.command(), f.message);
        }
    }
    if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
