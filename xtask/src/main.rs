//! Project automation: `cargo xtask <command>`.
//!
//! - `ci`: everything CI checks (format, lints, dependency rules, the whole test
//!   suite against a real `haproxy`).
//! - `topo-test [scenario]`: multi-process HA scenarios (see `tests/topologies/`).
//! - `bench [--quick]`: benchmarks and `docs/performance.md`.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

mod bench;
mod deb;
mod topo;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let cmd = args.next().unwrap_or_else(|| "help".to_owned());
    let rest: Vec<String> = args.collect();
    match cmd.as_str() {
        "ci" => ci(),
        "topo-test" => topo::main(&rest),
        "bench" => bench::main(&rest),
        "deb" => deb::main(&rest),
        "help" | "--help" | "-h" => {
            println!("usage: cargo xtask <ci|topo-test|bench|deb>");
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
    ensure_haproxy()?;
    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--check"]);
    run(fmt)?;
    check_wire_is_sans_io()?;
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
    let mut test = cargo();
    test.args(["test", "--workspace"]);
    // Real-HAProxy tests fail rather than skip when this is set.
    test.env("CI", "true");
    run(test)?;
    // Every multi-process HA scenario of the product document, with real haproxy.
    topo::main(&[])?;
    // The Debian package builds, lists and runs (debug build: the one just tested).
    deb::main(&["--debug".to_owned(), "--check".to_owned()])?;
    // The reduced benchmark: it checks that the report is produced, not the figures
    // (CI machines are shared and noisy).
    bench::main(&["--quick".to_owned()])
}

/// The codec must never depend on tokio (with its default features).
fn check_wire_is_sans_io() -> Result<()> {
    let out = cargo()
        .args([
            "tree",
            "-p",
            "stktagg-wire",
            "-e",
            "normal",
            "--prefix",
            "none",
        ])
        .output()
        .context("running cargo tree")?;
    if !out.status.success() {
        bail!(
            "cargo tree failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let tree = String::from_utf8_lossy(&out.stdout);
    if let Some(line) = tree.lines().find(|l| l.starts_with("tokio")) {
        bail!("stktagg-wire must stay sans-IO but depends on `{line}`");
    }
    eprintln!("stktagg-wire: no tokio in its dependency tree");
    Ok(())
}

/// The suite drives a real `haproxy`. On a machine without it, install Debian's
/// package when we are root, else say how.
fn ensure_haproxy() -> Result<()> {
    if Command::new("haproxy").arg("-v").output().is_ok() {
        return Ok(());
    }
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    if !is_root {
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
    run(install)
}
