//! `cargo xtask topo-test [--list] [--keep] [--net 127.0.N] [--haproxy PATH]
//! [scenario...]`: whole topologies on loopback with real `haproxy` nodes and
//! `stktagg` daemons, faults injected, sums checked at every level.
//!
//! It builds the daemon, then runs each scenario (all by default) in its own run
//! directory, `<target>/topo-test/<scenario>/` (configs, stats sockets, one log
//! per process, `topo-test.log` with the progress lines). A passing scenario's
//! directory is removed unless `--keep` is given; a failing one's is kept and
//! printed. A report with the time each check took to converge closes the run,
//! and is also written to `<target>/topo-test/report.txt`. The exit code is
//! non-zero if any scenario failed. Addresses are the topology files' (127.0.56.N,
//! the seed's 192.168.56.N on loopback); `--net 127.0.57` (or
//! `$STKTAGG_TOPO_NET`) moves them to another loopback /24, for a machine where
//! something already holds those. The nodes run `--haproxy PATH`, else
//! `$STKTAGG_HAPROXY`, else `haproxy` from `PATH`; the report names its version.
//! Scenarios whose nodes need HAProxy >= 2.7 (`shards`) run the cached 3.0 build
//! when that haproxy is older (they fail, never skip, when the cache lacks it:
//! `cargo xtask haproxy` builds it), and their report names the version they ran.
//!
//! # Layout
//! - `topology`: `tests/topologies/<name>/topology.toml`, configs, node template.
//! - `fleet`: the child processes, faults by PID, stopped on drop.
//! - `traffic`: the HTTP/1.0 driver and the tally of what was sent.
//! - `impostor`: a connection that claims a peer's name from another address.
//! - `observe`: reading tables, `exact` checks and the continuous `Monitor`.
//! - `run`: one scenario run (`Ctx`): progress lines, waits, convergence.
//! - `scenarios`: the scenarios themselves.
//! - `reload`: the `reload` scenario (SIGHUP with nodes attached).

mod fleet;
mod impostor;
mod observe;
mod reload;
mod run;
mod scenarios;
mod topology;
mod traffic;

use anyhow::{Context, Result, bail};
use scenarios::{SCENARIOS, Scenario};
use std::fmt::Write as _;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use stktagg_tests::haproxy::HaproxyVersion;

/// What one scenario gave.
#[derive(Debug)]
struct Report {
    name: &'static str,
    took: Duration,
    outcome: run::Outcome,
    error: Option<String>,
    dir: PathBuf,
}

/// Entry point.
pub fn main(args: &[String]) -> Result<()> {
    let mut keep = false;
    let mut net =
        std::env::var("STKTAGG_TOPO_NET").unwrap_or_else(|_| topology::DEFAULT_NET.to_owned());
    let mut wanted: Vec<&Scenario> = Vec::new();
    let mut haproxy = stktagg_tests::haproxy::haproxy_binary();
    let mut args = args.iter();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--list" | "-l" => {
                for s in SCENARIOS {
                    println!("{:<22} [{}] {}", s.name, s.topology, s.about);
                }
                return Ok(());
            }
            "--keep" => keep = true,
            "--net" => {
                net = args
                    .next()
                    .context("--net needs a value such as 127.0.57")?
                    .clone()
            }
            "--haproxy" => {
                haproxy = args
                    .next()
                    .context("--haproxy needs the path of a haproxy binary")?
                    .clone()
            }
            "--help" | "-h" => {
                println!(
                    "usage: cargo xtask topo-test [--list] [--keep] [--net 127.0.N] \
                     [--haproxy PATH] [scenario...]\n\
                     runs every scenario when none is named; --keep keeps the run \
                     directories of passing scenarios too; --net (or $STKTAGG_TOPO_NET) \
                     moves every 127.0.56.x address to another loopback /24; --haproxy \
                     (or $STKTAGG_HAPROXY) is the haproxy the nodes run"
                );
                return Ok(());
            }
            name => match SCENARIOS.iter().find(|s| s.name == name) {
                Some(s) => wanted.push(s),
                None => bail!(
                    "unknown scenario `{name}`; known: {}",
                    SCENARIOS
                        .iter()
                        .map(|s| s.name)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            },
        }
    }
    if wanted.is_empty() {
        wanted = SCENARIOS.iter().collect();
    }
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let version = stktagg_tests::haproxy::check_haproxy(&haproxy, ci)
        .context("topo-test runs real haproxy nodes")?;
    println!("using {version} ({haproxy})");
    let daemon = build_daemon()?;
    let base = crate::target_dir().join("topo-test");
    let root = crate::project_root().join("tests/topologies");
    let started = Instant::now();
    let mut reports = Vec::new();
    for s in wanted {
        let dir = base.join(s.name);
        let t = Instant::now();
        let nodes_bin = nodes_haproxy(s, &haproxy, &version);
        let result =
            std::panic::catch_unwind(AssertUnwindSafe(|| -> (run::Outcome, Result<()>) {
                let (nodes_bin, nodes_version) = match &nodes_bin {
                    Ok(b) => b,
                    Err(e) => return (run::Outcome::default(), Err(anyhow::anyhow!("{e:#}"))),
                };
                let topo = match topology::Topology::load_on(&root, s.topology, &net) {
                    Ok(t) => t,
                    Err(e) => return (run::Outcome::default(), Err(e)),
                };
                let mut ctx = match run::Ctx::new(s.name, topo, &dir, &daemon, nodes_bin) {
                    Ok(c) => c,
                    Err(e) => return (run::Outcome::default(), Err(e)),
                };
                ctx.step(format!("start: {}", s.about));
                if nodes_version != &version {
                    ctx.measure(
                        format!("nodes run (this scenario needs HAProxy >= {MIN_SHARDS})"),
                        nodes_version.clone(),
                    );
                }
                ctx.step(format!(
                    "topology {}: {}",
                    ctx.topo.name, ctx.topo.description
                ));
                let r = (s.run)(&mut ctx);
                match &r {
                    Ok(()) => ctx.step("PASS"),
                    Err(e) => ctx.step(format!("FAIL: {e:#}")),
                }
                ctx.fleet.stop_all();
                (ctx.outcome.clone(), r)
            }));
        let (outcome, error) = match result {
            Ok((o, Ok(()))) => (o, None),
            Ok((o, Err(e))) => (o, Some(format!("{e:#}"))),
            Err(p) => {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_else(|| "panic".to_owned());
                (run::Outcome::default(), Some(format!("panicked: {msg}")))
            }
        };
        if error.is_none() && !keep {
            let _ = std::fs::remove_dir_all(&dir);
        }
        reports.push(Report {
            name: s.name,
            took: t.elapsed(),
            outcome,
            error,
            dir,
        });
    }
    let text = render(&version, &reports, started.elapsed());
    println!("\n{text}");
    let _ = std::fs::create_dir_all(&base);
    let _ = std::fs::write(base.join("report.txt"), &text);
    let failed = reports.iter().filter(|r| r.error.is_some()).count();
    if failed > 0 {
        bail!(
            "{failed} of {} scenarios failed (logs kept in the run directories above)",
            reports.len()
        );
    }
    Ok(())
}

fn render(version: &str, reports: &[Report], total: Duration) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "topo-test report");
    let _ = writeln!(o, "================");
    let _ = writeln!(o, "nodes: {version}");
    for r in reports {
        let status = if r.error.is_some() { "FAIL" } else { "PASS" };
        let _ = writeln!(
            o,
            "\n{status} {} ({:.1}s, {} requests)",
            r.name,
            r.took.as_secs_f64(),
            r.outcome.requests
        );
        for (what, took) in &r.outcome.checks {
            let _ = writeln!(o, "  converged in {:>8}  {what}", format!("{took:.2?}"));
        }
        for (what, value) in &r.outcome.measures {
            let _ = writeln!(o, "  {what}: {value}");
        }
        if let Some(e) = &r.error {
            let _ = writeln!(o, "  error: {}", e.replace('\n', "\n    "));
            let _ = writeln!(o, "  logs of every process: {}", r.dir.display());
        }
    }
    let passed = reports.iter().filter(|r| r.error.is_none()).count();
    let _ = writeln!(
        o,
        "\n{passed}/{} scenarios passed in {:.1}s",
        reports.len(),
        total.as_secs_f64()
    );
    o
}

/// The first HAProxy release with `shards` in a peers section.
const MIN_SHARDS: HaproxyVersion = HaproxyVersion::new(2, 7, 0);

/// The haproxy binary and version line scenario `s`'s nodes run: the one given,
/// unless the scenario needs `shards` and that one predates them; then the cached
/// HAProxy 3.0 build, or an error saying how to build it.
fn nodes_haproxy(s: &Scenario, given: &str, version: &str) -> Result<(String, String)> {
    let recent = HaproxyVersion::parse(version).is_some_and(|v| v >= MIN_SHARDS);
    if !s.needs_shards || recent {
        return Ok((given.to_owned(), version.to_owned()));
    }
    let rel = crate::haproxy::V30;
    let Some(bin) = crate::haproxy::cached(&rel)? else {
        bail!(
            "scenario `{}` runs its nodes with `shards`, which needs HAProxy >= {MIN_SHARDS}:              {given} is `{version}`, and HAProxy {} is not built in the cache ({});              run `cargo xtask haproxy` first",
            s.name,
            rel.version,
            rel.binary()?.display()
        );
    };
    let line = crate::haproxy::version_line(&bin)?;
    Ok((bin.display().to_string(), line))
}

/// Builds the daemon (debug profile) and returns the binary's path.
fn build_daemon() -> Result<PathBuf> {
    let mut cmd = crate::cargo();
    cmd.args(["build", "-p", "stktagg-daemon"]);
    crate::run(cmd)?;
    let bin = crate::target_dir().join("debug").join("stktagg");
    if !bin.is_file() {
        bail!("built the daemon but {} is not there", bin.display());
    }
    Ok(bin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_names_failures_and_their_logs() {
        let ok = Report {
            name: "ha",
            took: Duration::from_millis(4200),
            outcome: run::Outcome {
                checks: vec![("first wave".into(), Duration::from_millis(120))],
                measures: vec![("failover time".into(), "310ms".into())],
                requests: 96,
            },
            error: None,
            dir: PathBuf::from("/t/ha"),
        };
        let bad = Report {
            name: "partition",
            took: Duration::from_secs(9),
            outcome: run::Outcome::default(),
            error: Some("sums wrong\nsecond line".into()),
            dir: PathBuf::from("/t/partition"),
        };
        let text = render(
            "HAProxy version 3.0.11-9e587df 2025/06/02",
            &[ok, bad],
            Duration::from_secs(14),
        );
        assert!(
            text.contains("nodes: HAProxy version 3.0.11-9e587df"),
            "{text}"
        );
        assert!(text.contains("PASS ha (4.2s, 96 requests)"), "{text}");
        assert!(text.contains("converged in"), "{text}");
        assert!(text.contains("first wave"), "{text}");
        assert!(text.contains("failover time: 310ms"), "{text}");
        assert!(text.contains("FAIL partition"), "{text}");
        assert!(
            text.contains("logs of every process: /t/partition"),
            "{text}"
        );
        assert!(text.contains("1/2 scenarios passed"), "{text}");
    }
}
