//! `cargo xtask bench [--quick]`: benchmarks and `docs/performance.md`.
//!
//! Builds the daemon and the load generator in release mode, then runs each
//! scenario against fresh processes on 127.0.0.1 (a new daemon or HAProxy per run,
//! so that no run inherits another's table), and writes the report, its raw figures
//! as JSON and its charts as SVG. The full run writes `docs/performance.md` and
//! `docs/performance/`; `--quick` runs a reduced plan in under two minutes into
//! `target/bench/report/` and checks that the report was produced (CI runs it; its
//! figures mean little on a shared machine). `--out DIR` writes elsewhere, and
//! `--report-only` rewrites the report from the `bench.json` already there. The
//! report ends with `docs/performance/analysis.md` (profiles, reasons, proposals),
//! which is written by hand.
//!
//! Every load is bounded: the generator has a deadline per run, and every process is
//! stopped by its pid when its run ends.

mod procs;
mod report;
mod svg;

use anyhow::{Context, Result, bail};
use procs::{
    Bins, cpu_seconds, loadgen, loadgen_on, rss_bytes, start_daemon, start_daemon_on, start_haproxy,
};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What to run.
#[derive(Debug, Clone)]
struct Plan {
    /// (updates, keys, key kind) streams for the side-by-side ingest.
    ingest: Vec<(u64, u32, &'static str)>,
    runs: usize,
    /// The fleet: every count of sources at every total rate, each source one
    /// session that sends and receives every sum, for `fleet_secs` of sending.
    fleet_sources: Vec<usize>,
    fleet_rates: Vec<f64>,
    fleet_secs: f64,
    fleet_keys: u32,
    /// (rate, keys) runs for propagation latency, one sender and two receivers.
    latency_runs: Vec<(f64, u32)>,
    latency_secs: f64,
    /// Keys and sources for the memory figures.
    memory_keys: u32,
    memory_sources: usize,
    /// Table sizes for the scaling curve.
    scaling: Vec<u32>,
    scaling_min_measured: u64,
    /// Largest table of the store-level scaling bench (criterion).
    store_max_keys: u32,
    /// Keys and updates per source of the whole stream for 1 vs 2 shards, and the
    /// number of sources.
    shards_keys: u32,
    shards_updates: u64,
    shards_sources: usize,
}

impl Plan {
    fn full() -> Plan {
        Plan {
            ingest: vec![
                (1_000_000, 100_000, "ipv4"),
                (1_000_000, 1_000_000, "ipv4"),
                (10_000_000, 100_000, "ipv4"),
                (10_000_000, 1_000_000, "ipv4"),
                (1_000_000, 100_000, "string"),
            ],
            runs: 5,
            fleet_sources: vec![10, 50, 100],
            fleet_rates: vec![100_000.0, 500_000.0],
            fleet_secs: 5.0,
            fleet_keys: 100_000,
            latency_runs: vec![
                (10_000.0, 1_000_000),
                (100_000.0, 100_000),
                (100_000.0, 1_000_000),
                (500_000.0, 1_000_000),
            ],
            latency_secs: 5.0,
            memory_keys: 1_000_000,
            memory_sources: 10,
            scaling: vec![10_000, 100_000, 1_000_000, 10_000_000],
            scaling_min_measured: 1_000_000,
            store_max_keys: 10_000_000,
            shards_keys: 1_000_000,
            shards_updates: 1_000_000,
            shards_sources: 2,
        }
    }

    fn quick() -> Plan {
        Plan {
            ingest: vec![(200_000, 10_000, "ipv4"), (100_000, 10_000, "string")],
            runs: 3,
            fleet_sources: vec![4, 10],
            fleet_rates: vec![20_000.0],
            fleet_secs: 1.0,
            fleet_keys: 10_000,
            latency_runs: vec![(10_000.0, 100_000), (50_000.0, 100_000)],
            latency_secs: 1.0,
            memory_keys: 100_000,
            memory_sources: 4,
            scaling: vec![10_000, 100_000],
            scaling_min_measured: 200_000,
            store_max_keys: 100_000,
            shards_keys: 50_000,
            shards_updates: 100_000,
            shards_sources: 2,
        }
    }
}

/// Entry point.
pub fn main(args: &[String]) -> Result<()> {
    let mut quick = false;
    let mut report_only = false;
    let mut out: Option<PathBuf> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--report-only" => report_only = true,
            "--out" => out = Some(PathBuf::from(it.next().context("--out needs a directory")?)),
            other => bail!(
                "unknown bench argument `{other}` (usage: cargo xtask bench [--quick] [--report-only] [--out DIR])"
            ),
        }
    }
    let plan = if quick { Plan::quick() } else { Plan::full() };
    let root = crate::project_root();
    let (doc, assets) = match (&out, quick) {
        (Some(dir), _) => (dir.join("performance.md"), dir.join("performance")),
        (None, true) => {
            let d = crate::target_dir().join("bench/report");
            (d.join("performance.md"), d.join("performance"))
        }
        (None, false) => (
            root.join("docs/performance.md"),
            root.join("docs/performance"),
        ),
    };
    let analysis = std::fs::read_to_string(root.join("docs/performance/analysis.md")).ok();
    if report_only {
        // Rewrite the report from the figures already measured (after editing the
        // analysis, or the report's code), without measuring again.
        let raw = assets.join("bench.json");
        let results: Value = serde_json::from_slice(
            &std::fs::read(&raw).with_context(|| format!("reading {}", raw.display()))?,
        )?;
        report::write(&results, &doc, &assets, analysis.as_deref())?;
        return check_report(&doc, &assets);
    }
    let work = crate::target_dir().join("bench/work");
    std::fs::create_dir_all(&work)?;
    std::fs::create_dir_all(&assets)?;
    let bins = procs::build()?;
    let started = Instant::now();
    let command = if quick {
        "cargo xtask bench --quick".to_owned()
    } else {
        "cargo xtask bench".to_owned()
    };
    let mut results = json!({
        "command": command,
        "quick": quick,
        "machine": machine(),
    });
    let b = Bench {
        bins: &bins,
        work: &work,
        plan: &plan,
    };
    // Each section's figures are saved as soon as they exist, so that an interrupted
    // run still leaves them for `--report-only`.
    let save = |results: &Value| -> Result<()> {
        let text = serde_json::to_string_pretty(results)? + "\n";
        std::fs::write(assets.join("bench.json"), text)?;
        Ok(())
    };
    results["generator"] = b.generator()?;
    save(&results)?;
    results["ingest"] = b.ingest()?;
    save(&results)?;
    results["fleet"] = b.fleet()?;
    save(&results)?;
    results["latency"] = b.latency()?;
    save(&results)?;
    results["memory"] = b.memory()?;
    save(&results)?;
    results["scaling"] = b.scaling()?;
    save(&results)?;
    results["shards"] = b.shards()?;
    save(&results)?;
    results["store"] = b.store()?;
    results["duration_s"] = json!(started.elapsed().as_secs_f64());
    report::write(&results, &doc, &assets, analysis.as_deref())?;
    check_report(&doc, &assets)?;
    eprintln!(
        "bench: report in {} ({:.0} s)",
        doc.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The report must exist with every section and its charts: what CI checks.
fn check_report(doc: &Path, assets: &Path) -> Result<()> {
    let text =
        std::fs::read_to_string(doc).with_context(|| format!("reading {}", doc.display()))?;
    for section in report::SECTIONS {
        if !text.contains(section) {
            bail!("{} lacks the section `{section}`", doc.display());
        }
    }
    for file in report::ASSETS {
        let p = assets.join(file);
        let meta = std::fs::metadata(&p).with_context(|| format!("missing {}", p.display()))?;
        if meta.len() == 0 {
            bail!("{} is empty", p.display());
        }
    }
    let raw: Value = serde_json::from_slice(&std::fs::read(assets.join("bench.json"))?)?;
    if raw["ingest"].as_array().is_none_or(|a| a.is_empty()) {
        bail!("bench.json has no ingest figures");
    }
    Ok(())
}

fn sh(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal"))
        .map(|l| {
            l.split_whitespace()
                .nth(1)
                .unwrap_or("0")
                .parse::<u64>()
                .unwrap_or(0)
                * 1024
        })
        .unwrap_or(0);
    let haproxy = sh("haproxy", &["-v"]);
    json!({
        "cpu": cpu,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "memory_bytes": mem,
        "kernel": sh("uname", &["-sr"]),
        "loadavg": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
        "haproxy": haproxy.lines().next().unwrap_or(""),
        "rustc": sh("rustc", &["-V"]),
        "commit": sh("git", &["-C", &crate::project_root().to_string_lossy(), "rev-parse", "--short", "HEAD"]),
        "date": sh("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
    })
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn f(v: &Value, k: &str) -> f64 {
    v[k].as_f64().unwrap_or(0.0)
}

struct Bench<'a> {
    bins: &'a Bins,
    work: &'a Path,
    plan: &'a Plan,
}

fn stream_args(updates: u64, keys: u32, kind: &str) -> Vec<String> {
    vec![
        "--updates".into(),
        updates.to_string(),
        "--keys".into(),
        keys.to_string(),
        "--key-kind".into(),
        kind.into(),
    ]
}

/// A deadline for a run of `updates` at no less than 100k updates/s; a slower run
/// reports what was acknowledged by then (a lower bound) and `complete: false`.
fn timeout_for(updates: u64) -> u64 {
    30 + updates / 100_000
}

impl Bench<'_> {
    /// The store alone (criterion and the memory bench of `stktagg-store`): the
    /// per-update cost against table size and the bytes per contribution, without
    /// sockets, sessions or per-destination queues.
    fn store(&self) -> Result<Value> {
        let p = self.plan;
        eprintln!(
            "bench: store alone, scaling up to {} keys, memory",
            p.store_max_keys
        );
        let mut cmd = crate::cargo();
        cmd.args([
            "bench",
            "-p",
            "stktagg-store",
            "--bench",
            "apply",
            "--",
            "scaling",
        ]);
        cmd.env("STKTAGG_BENCH_MAX_KEYS", p.store_max_keys.to_string());
        crate::run(cmd)?;
        let target = crate::target_dir();
        let mut scaling = Vec::new();
        for keys in [10_000u32, 100_000, 1_000_000, 10_000_000] {
            if keys > p.store_max_keys {
                continue;
            }
            let path = target.join(format!("criterion/scaling/{keys}/new/estimates.json"));
            let est: Value = serde_json::from_slice(
                &std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
            )?;
            // One iteration is 10 000 applies (`BATCH` in the bench).
            let ns = f(&est["median"], "point_estimate") / 10_000.0;
            scaling.push(json!({"keys": keys, "ns_per_update": ns}));
        }
        let out = crate::cargo()
            .args(["bench", "-p", "stktagg-store", "--bench", "memory"])
            .env("STKTAGG_BENCH_MEM_KEYS", p.memory_keys.to_string())
            .env("STKTAGG_BENCH_MEM_SOURCES", p.memory_sources.to_string())
            .output()
            .context("running the store memory bench")?;
        if !out.status.success() {
            bail!(
                "store memory bench failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout
            .lines()
            .rfind(|l| l.starts_with('{'))
            .context("no report from the store memory bench")?;
        let memory: Value = serde_json::from_str(line)?;
        Ok(json!({"scaling": scaling, "memory": memory}))
    }

    fn send(&self, target: &procs::Proc, remote: &str, extra: &[String]) -> Result<Value> {
        let mut args: Vec<String> = vec![
            "send".into(),
            "--target".into(),
            target.addr.to_string(),
            "--remote".into(),
            remote.into(),
        ];
        args.extend_from_slice(extra);
        let r = loadgen(&self.bins.loadgen, &args)?;
        if r["complete"].as_bool() != Some(true) {
            eprintln!("bench: incomplete run {args:?}: {}", r["errors"]);
        }
        Ok(r)
    }

    fn generator(&self) -> Result<Value> {
        eprintln!("bench: generator limit (discard sink)");
        let mut out = Vec::new();
        for &(updates, keys, kind) in &self.plan.ingest {
            let mut rates = Vec::new();
            for _ in 0..3 {
                let mut args = vec!["discard".to_owned()];
                args.extend(stream_args(updates, keys, kind));
                rates.push(f(&loadgen(&self.bins.loadgen, &args)?, "updates_per_s"));
            }
            out.push(json!({
                "updates": updates, "keys": keys, "key_kind": kind,
                "updates_per_s": median(&mut rates), "runs": rates,
            }));
        }
        Ok(Value::Array(out))
    }

    fn ingest(&self) -> Result<Value> {
        let mut out = Vec::new();
        for &(updates, keys, kind) in &self.plan.ingest {
            eprintln!(
                "bench: ingest {updates} updates over {keys} {kind} keys, {} runs each",
                self.plan.runs
            );
            let mut ours = Vec::new();
            let mut hap = Vec::new();
            let mut ours_cpu = Vec::new();
            let mut complete = true;
            let mut args = stream_args(updates, keys, kind);
            args.extend(["--timeout-s".into(), timeout_for(updates).to_string()]);
            let haproxy_type = if kind == "string" {
                "string len 32"
            } else {
                "ip"
            };
            // Alternate the two targets, so that noise from the shared machine hits
            // both alike.
            for run in 0..self.plan.runs {
                let d = start_daemon(&self.bins.daemon, self.work, "ingest", 1)?;
                let cpu0 = cpu_seconds(d.pid)?;
                let r = self.send(&d, "stktagg", &args)?;
                ours_cpu.push(cpu_seconds(d.pid)? - cpu0);
                complete &= r["complete"].as_bool() == Some(true);
                ours.push(f(&r, "updates_per_s"));
                drop(d);
                let h = start_haproxy(self.work, &format!("ingest{run}"), haproxy_type)?;
                let r = self.send(&h, "hap", &args)?;
                complete &= r["complete"].as_bool() == Some(true);
                hap.push(f(&r, "updates_per_s"));
                drop(h);
            }
            let (mo, mh) = (median(&mut ours.clone()), median(&mut hap.clone()));
            out.push(json!({
                "updates": updates, "keys": keys, "key_kind": kind,
                "ours_updates_per_s": mo, "haproxy_updates_per_s": mh,
                "ratio": if mh > 0.0 { mo / mh } else { 0.0 },
                "ours_runs": ours, "haproxy_runs": hap,
                "ours_cpu_s_per_run": ours_cpu,
                "complete": complete,
            }));
        }
        Ok(Value::Array(out))
    }

    /// The fleet capacity of 1 vs 2 shards. An aggregator pinned to core 0 sums
    /// the whole stream (K keys, U updates from each of S sources), then a fresh
    /// one sums one shard's part of it (K/2 keys, U/2 updates from each source:
    /// what HAProxy's key-to-shard function gives each of 2 shards, a random half);
    /// the generator runs on core 1. A shard's capacity is the updates it summed
    /// per CPU second of its own; 2 shards on 2 cores have twice that. CPU time
    /// rather than wall time: the generator shares this 2-core machine.
    fn shards(&self) -> Result<Value> {
        let p = self.plan;
        let mut out = Vec::new();
        for shards in [1u32, 2] {
            let keys = p.shards_keys / shards;
            let updates = p.shards_updates / u64::from(shards);
            eprintln!(
                "bench: {shards} shard(s): one aggregator on core 0, {keys} keys, {updates} updates from each of {} sources, {} runs",
                p.shards_sources, p.runs
            );
            let mut cpu = Vec::new();
            let mut rss = Vec::new();
            let mut complete = true;
            let mut args: Vec<String> = vec![
                "send".into(),
                "--remote".into(),
                "stktagg".into(),
                "--sources".into(),
                p.shards_sources.to_string(),
                "--timeout-s".into(),
                timeout_for(updates * p.shards_sources as u64).to_string(),
            ];
            args.extend(stream_args(updates, keys, "ipv4"));
            for _ in 0..p.runs {
                let d = start_daemon_on(
                    &self.bins.daemon,
                    self.work,
                    "shards",
                    p.shards_sources,
                    Some(0),
                )?;
                let mut run_args = args.clone();
                run_args.extend(["--target".into(), d.addr.to_string()]);
                let cpu0 = cpu_seconds(d.pid)?;
                let r = loadgen_on(&self.bins.loadgen, &run_args, Some(1))?;
                cpu.push(cpu_seconds(d.pid)? - cpu0);
                rss.push(rss_bytes(d.pid)? as f64);
                complete &= r["complete"].as_bool() == Some(true);
            }
            let summed = (updates * p.shards_sources as u64) as f64;
            let cpu_s = median(&mut cpu.clone());
            let per_core = if cpu_s > 0.0 { summed / cpu_s } else { 0.0 };
            out.push(json!({
                "shards": shards,
                "keys": keys,
                "updates": summed,
                "cpu_s": cpu_s,
                "cpu_runs": cpu,
                "updates_per_cpu_s": per_core,
                "fleet_updates_per_s": per_core * f64::from(shards),
                "rss_bytes": median(&mut rss),
                "complete": complete,
            }));
        }
        Ok(Value::Array(out))
    }

    /// The fleet: S sources, one session each, all sending at R updates/s in
    /// total and all receiving every changed sum. The daemon runs on core 0 and the
    /// generator on core 1: with both on both cores, the generator's two threads
    /// per source outnumber the daemon's workers, the kernel's fair share starves
    /// the daemon, and sessions end for want of CPU on the measuring side (the
    /// figures would be the generator's). Source 1 probes the propagation on a
    /// table of its own, watched by the last source.
    fn fleet(&self) -> Result<Value> {
        let p = self.plan;
        let mut out = Vec::new();
        for &rate in &p.fleet_rates {
            for &sources in &p.fleet_sources {
                eprintln!("bench: fleet, {sources} sources at {rate} updates/s in total");
                let total = (rate * p.fleet_secs) as u64;
                let per_source = total / sources as u64;
                let d = start_daemon_on(&self.bins.daemon, self.work, "fleet", sources, Some(0))?;
                let cpu0 = cpu_seconds(d.pid)?;
                let mut args: Vec<String> = vec![
                    "send".into(),
                    "--target".into(),
                    d.addr.to_string(),
                    "--remote".into(),
                    "stktagg".into(),
                    "--sources".into(),
                    sources.to_string(),
                    "--active".into(),
                    sources.to_string(),
                    "--latency".into(),
                    "--rate".into(),
                    rate.to_string(),
                    "--linger-ms".into(),
                    "500".into(),
                    "--timeout-s".into(),
                    (30 + p.fleet_secs as u64 * 6).to_string(),
                ];
                args.extend(stream_args(per_source, p.fleet_keys, "ipv4"));
                let r = loadgen_on(&self.bins.loadgen, &args, Some(1))?;
                let cpu = cpu_seconds(d.pid)? - cpu0;
                let updates = r["updates"].as_u64().unwrap_or(0);
                let dropped = r["errors"].as_array().map_or(0, Vec::len);
                if dropped > 0 || r["complete"].as_bool() != Some(true) {
                    eprintln!("bench: fleet run {sources}x{rate}: {}", r["errors"]);
                }
                out.push(json!({
                    "sources": sources,
                    "total_rate": rate,
                    "updates": updates,
                    "achieved_rate": r["updates_per_s"],
                    "daemon_cpu_s": cpu,
                    "cpu_s_per_million": if updates > 0 { cpu / (updates as f64 / 1e6) } else { 0.0 },
                    "aggregated_updates": r["received_updates"],
                    "aggregated_per_s": r["received_per_s"],
                    "sessions_dropped": dropped,
                    "p99_ms": r["latency"]["p99_us"].as_f64().map(|us| us / 1000.0),
                    "latency_coverage": r["latency_coverage"],
                    "complete": r["complete"],
                }));
            }
        }
        Ok(Value::Array(out))
    }

    fn latency(&self) -> Result<Value> {
        let p = self.plan;
        let mut out = Vec::new();
        for &(rate, keys) in &p.latency_runs {
            eprintln!("bench: propagation latency at {rate} updates/s over {keys} keys");
            let updates = (rate * p.latency_secs) as u64;
            let d = start_daemon(&self.bins.daemon, self.work, "latency", 3)?;
            let mut args = stream_args(updates, keys, "ipv4");
            args.extend([
                "--sources".into(),
                "3".into(),
                "--latency".into(),
                "--rate".into(),
                rate.to_string(),
                "--linger-ms".into(),
                "1000".into(),
                "--timeout-s".into(),
                (30 + p.latency_secs as u64 * 4).to_string(),
            ]);
            let r = self.send(&d, "stktagg", &args)?;
            out.push(json!({
                "rate": rate,
                "keys": keys,
                "updates": r["updates"],
                "achieved_rate": r["updates_per_s"],
                "latency": r["latency"],
                "coverage": r["latency_coverage"],
                "complete": r["complete"],
            }));
        }
        Ok(Value::Array(out))
    }

    fn memory(&self) -> Result<Value> {
        let p = self.plan;
        let keys = p.memory_keys;
        eprintln!(
            "bench: memory, {keys} keys x 1 and x {} sources",
            p.memory_sources
        );
        let timeout = timeout_for(u64::from(keys) * p.memory_sources as u64).to_string();
        let measure = |sources: usize| -> Result<(u64, u64, u64, bool)> {
            let d = start_daemon(&self.bins.daemon, self.work, "memory", sources)?;
            std::thread::sleep(Duration::from_millis(200));
            let idle = rss_bytes(d.pid)?;
            let mut args = stream_args(u64::from(keys), keys, "ipv4");
            args.extend([
                "--sources".into(),
                sources.to_string(),
                "--linger-ms".into(),
                "1000".into(),
                "--timeout-s".into(),
                timeout.clone(),
            ]);
            let r = self.send(&d, "stktagg", &args)?;
            // Sessions closed, their buffers freed: what is left is the tables.
            std::thread::sleep(Duration::from_millis(500));
            let loaded = rss_bytes(d.pid)?;
            // Each source sends each key once: what it had acknowledged is what it
            // contributed, even if the run did not finish.
            let contributions = r["acked"].as_u64().unwrap_or(0);
            Ok((
                idle,
                loaded,
                contributions,
                r["complete"].as_bool() == Some(true),
            ))
        };
        let (idle1, one, k1, c1) = measure(1)?;
        let (idle_n, many, kn, cn) = measure(p.memory_sources)?;
        let extra = kn.saturating_sub(k1).max(1) as f64;
        let per_contribution =
            (many.saturating_sub(idle_n) as f64 - one.saturating_sub(idle1) as f64) / extra;
        let per_key = one.saturating_sub(idle1) as f64 / k1.max(1) as f64 - per_contribution;
        Ok(json!({
            "keys": keys,
            "sources": p.memory_sources,
            "key_bytes": 4,
            "rss_idle_1": idle1, "rss_loaded_1": one,
            "rss_idle_n": idle_n, "rss_loaded_n": many,
            "contributions_1": k1, "contributions_n": kn,
            "bytes_per_contribution": per_contribution,
            "bytes_per_output_key": per_key,
            "complete": c1 && cn,
        }))
    }

    fn scaling(&self) -> Result<Value> {
        let p = self.plan;
        let mut out = Vec::new();
        for &keys in &p.scaling {
            let measured = u64::from(keys).max(p.scaling_min_measured);
            let updates = u64::from(keys) + measured;
            eprintln!("bench: scaling, {keys} keys ({updates} updates, the last {measured} timed)");
            let d = start_daemon(&self.bins.daemon, self.work, "scaling", 1)?;
            let mut args = stream_args(updates, keys, "ipv4");
            args.extend([
                "--measure-from".into(),
                keys.to_string(),
                "--timeout-s".into(),
                timeout_for(updates).to_string(),
            ]);
            let r = self.send(&d, "stktagg", &args)?;
            let rss = rss_bytes(d.pid)?;
            out.push(json!({
                "keys": keys,
                "updates": updates,
                "measured": measured,
                "ns_per_update": r["segment"]["ns_per_update"],
                "fill_and_measure_updates_per_s": r["updates_per_s"],
                "rss_bytes": rss,
                "complete": r["complete"],
            }));
        }
        Ok(Value::Array(out))
    }
}
