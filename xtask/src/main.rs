//! Project automation: `cargo xtask <command>`.
//!
//! - `ci`: everything CI checks (format, lints, dependency rules, the whole test
//!   suite and `topo-test` against Debian's `haproxy` 2.6, then against HAProxy
//!   3.0, a thousand simulated seeds of each topology, every fuzz target).
//! - `tidy`: the workspace's structural rules (sans-IO crates, no anyhow in
//!   libraries).
//! - `topo-test [scenario]`: multi-process HA scenarios (see `tests/topologies/`).
//! - `bench [--quick]`: benchmarks and `docs/performance.md`.
//! - `deb`: the Debian package.
//! - `haproxy [--path]`: builds HAProxy 3.0 into a cache outside the checkout.
//! - `sim [--seeds N] [--seed S] [--topology T]`: the deterministic simulator of
//!   whole topologies (`crates/stktagg-sim`).
//! - `fuzz [--time SECS] [target...]`: the fuzz targets of `fuzz/` (nightly).

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

mod bench;
mod deb;
mod fuzz;
mod haproxy;
mod sim;
mod topo;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let cmd = args.next().unwrap_or_else(|| "help".to_owned());
    let rest: Vec<String> = args.collect();
    match cmd.as_str() {
        "ci" => ci(),
        "tidy" => check_sans_io(),
        "topo-test" => topo::main(&rest),
        "bench" => bench::main(&rest),
        "deb" => deb::main(&rest),
        "haproxy" => haproxy::main(&rest),
        "sim" => sim::main(&rest),
        "fuzz" => fuzz::main(&rest),
        "help" | "--help" | "-h" => {
            println!("usage: cargo xtask <ci|tidy|topo-test|bench|deb|haproxy|sim|fuzz>");
            Ok(())
        }
        other => bail!("unknown xtask command `{other}` (args: {rest:?})"),
    }
}

/// The workspace root.
pub(crate) fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Cargo's target directory: `$CARGO_TARGET_DIR` (relative to the workspace root
/// when relative), else `<root>/target`.
pub(crate) fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => {
            let d = PathBuf::from(d);
            if d.is_absolute() {
                d
            } else {
                project_root().join(d)
            }
        }
        None => project_root().join("target"),
    }
}

pub(crate) fn cargo() -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(project_root());
    cmd
}

pub(crate) fn run(mut cmd: Command) -> Result<()> {
    eprintln!("$ {cmd:?}");
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

fn ci() -> Result<()> {
    // Both HAProxy versions come first, so that CI fails (never skips) when either
    // is missing, before it spends minutes on the rest.
    let hap26 = ensure_debian_haproxy()?;
    let hap30 = haproxy::ensure(&haproxy::V30)?;
    let passes = [
        (DEBIAN_HAPROXY.to_owned(), hap26),
        (hap30.display().to_string(), haproxy::version_line(&hap30)?),
    ];
    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--check"]);
    run(fmt)?;
    check_sans_io()?;
    let mut clippy = cargo();
    clippy.args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]);
    run(clippy)?;
    // The whole suite once per HAProxy version: the unit tests run twice too, which
    // costs about 20 s and means no live suite can be left out of the second pass.
    for (binary, version) in &passes {
        eprintln!("== cargo test --workspace against {version} ({binary})");
        let mut test = cargo();
        test.args(["test", "--workspace"]);
        // Real-HAProxy tests fail rather than skip when this is set.
        test.env("CI", "true");
        test.env(stktagg_tests::haproxy::HAPROXY_ENV, binary);
        run(test)?;
    }
    // A thousand seeds of every topology in the simulator: faults no live test
    // can time, checked after every step (about a minute and a half on two cores).
    sim::main(&["--seeds".to_owned(), "1000".to_owned()])?;
    // Every fuzz target for a while (what a peer or an operator controls must never
    // panic the daemon): about 2 minutes, plus the instrumented build.
    fuzz::main(&["--time".to_owned(), "30".to_owned()])?;
    // Every multi-process HA scenario of the product document, with real haproxy.
    for (binary, version) in &passes {
        eprintln!("== cargo xtask topo-test against {version} ({binary})");
        topo::main(&["--haproxy".to_owned(), binary.clone()])?;
    }
    // The Debian package builds, lists and runs (debug build: the one just tested).
    deb::main(&["--debug".to_owned(), "--check".to_owned()])?;
    // The reduced benchmark: it checks that the report is produced, not the figures
    // (CI machines are shared and noisy).
    bench::main(&["--quick".to_owned()])
}

/// The sans-IO crates: no tokio in their dependency trees (default features), no
/// clock reads in their sources (time is passed in), and no anyhow in any library
/// crate (each has its own `thiserror` error type).
const SANS_IO: [&str; 7] = [
    "stktagg-wire",
    "stktagg-session",
    "stktagg-section",
    "stktagg-store",
    "stktagg-topology",
    "stktagg-config",
    // The simulator: its whole point is that nothing but the seed decides a run.
    "stktagg-sim",
];

fn check_sans_io() -> Result<()> {
    for krate in SANS_IO {
        let out = cargo()
            .args(["tree", "-p", krate, "-e", "normal", "--prefix", "none"])
            .output()
            .context("running cargo tree")?;
        if !out.status.success() {
            bail!(
                "cargo tree failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let tree = String::from_utf8_lossy(&out.stdout);
        for banned in ["tokio", "anyhow"] {
            if let Some(line) = tree.lines().find(|l| l.starts_with(banned)) {
                bail!("{krate} must stay sans-IO but depends on `{line}`");
            }
        }
        let src = project_root().join("crates").join(krate).join("src");
        if let Some(hit) =
            find_in_sources(&src, &["Instant::now", "SystemTime::now", "std::net::Tcp"])?
        {
            bail!("{krate} must take time and sockets from its caller, but {hit}");
        }
    }
    eprintln!(
        "sans-IO crates: no tokio, no anyhow, no clock reads ({})",
        SANS_IO.join(", ")
    );
    Ok(())
}

/// The first line of a `.rs` file under `dir` that contains one of `needles`.
fn find_in_sources(dir: &Path, needles: &[&str]) -> Result<Option<String>> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            if let Some(hit) = find_in_sources(&path, needles)? {
                return Ok(Some(hit));
            }
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        for (i, line) in text.lines().enumerate() {
            if let Some(n) = needles.iter().find(|n| line.contains(**n)) {
                return Ok(Some(format!("{}:{} uses `{n}`", path.display(), i + 1)));
            }
        }
    }
    Ok(None)
}

/// Debian's haproxy, found on `PATH`: the first version the live suites run against.
const DEBIAN_HAPROXY: &str = "haproxy";

/// The suite drives a real `haproxy`: Debian bookworm's 2.6 first. On a machine
/// without it, install Debian's package when we are root, else say how. Returns its
/// version line; any other version than 2.6 fails, since the second pass (3.0) and
/// the compatibility table assume 2.6 here.
fn ensure_debian_haproxy() -> Result<String> {
    let version = || haproxy::version_line(Path::new(DEBIAN_HAPROXY));
    if version().is_err() {
        if !haproxy::is_root() {
            bail!("haproxy is not installed: run `sudo apt-get install -y haproxy socat` first");
        }
        let mut update = Command::new("apt-get");
        update.arg("update");
        run(update)?;
        let mut install = Command::new("apt-get");
        install.args([
            "install",
            "-y",
            "--no-install-recommends",
            "haproxy",
            "socat",
        ]);
        install.env("DEBIAN_FRONTEND", "noninteractive");
        run(install)?;
    }
    let v = version()?;
    if !v.starts_with("HAProxy version 2.6.") {
        bail!(
            "cargo xtask ci runs the live suites against Debian bookworm's haproxy 2.6 \
             (`haproxy` on PATH) and HAProxy {}, but `haproxy -v` says `{v}`",
            haproxy::V30.version
        );
    }
    Ok(v)
}
