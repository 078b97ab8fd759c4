//! `cargo xtask fuzz [--time SECS] [target...]`: runs the fuzz targets of `fuzz/`
//! (libFuzzer through `cargo +nightly fuzz`), each for `SECS` seconds (default
//! 60), all of them when none is named. A crash fails the command; libFuzzer
//! leaves the input in `fuzz/artifacts/<target>/` and prints how to replay it
//! (`cargo +nightly fuzz run <target> <file>`).
//!
//! The targets are what a peer or an operator controls: `wire_decode` (any byte
//! stream into the codec), `session` (any bytes into the engine on both sides of
//! the handshake), `section` (a scripted hostile peer, well-formed messages with
//! fuzzed contents and raw bytes, against the engine, the section logic and a
//! real store, with an honest source whose share must survive) and `config`
//! (any text as a configuration, seeded with the configuration goldens). Each
//! keeps its corpus in `fuzz/corpus/<target>/` (not committed) so that later
//! runs on the same checkout start where the last one stopped.

use anyhow::{Context, Result, bail};
use std::process::Command;

/// Every target, in the order they run.
pub const TARGETS: &[&str] = &["wire_decode", "session", "section", "config"];

/// Entry point.
pub fn main(args: &[String]) -> Result<()> {
    let mut secs: u64 = 60;
    let mut targets: Vec<&str> = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--time" => {
                secs = it
                    .next()
                    .context("--time needs a number of seconds")?
                    .parse()
                    .context("--time needs a number of seconds")?;
            }
            "--help" | "-h" => {
                println!(
                    "usage: cargo xtask fuzz [--time SECS] [target...]\ntargets: {}",
                    TARGETS.join(" ")
                );
                return Ok(());
            }
            t => match TARGETS.iter().find(|k| **k == t) {
                Some(k) => targets.push(k),
                None => bail!("unknown fuzz target `{t}` (targets: {})", TARGETS.join(" ")),
            },
        }
    }
    if targets.is_empty() {
        targets = TARGETS.to_vec();
    }
    ensure_cargo_fuzz()?;
    let root = crate::project_root();
    let fuzz_dir = root.join("fuzz");
    // Its own target directory: the instrumented build shares nothing with the
    // workspace's.
    let target_dir = crate::target_dir().join("fuzz");
    for t in targets {
        eprintln!("== fuzz {t} for {secs} s");
        let corpus = fuzz_dir.join("corpus").join(t);
        std::fs::create_dir_all(&corpus)
            .with_context(|| format!("creating {}", corpus.display()))?;
        let mut cmd = Command::new("cargo");
        cmd.current_dir(&fuzz_dir)
            .env("CARGO_TARGET_DIR", &target_dir)
            .args(["+nightly", "fuzz", "run", "-O", t])
            .arg(&corpus);
        if t == "config" {
            // Read-only seeds: libFuzzer writes new inputs to the first directory.
            let data = root.join("crates/stktagg-config/tests/data");
            cmd.arg(data.join("ok")).arg(data.join("err"));
        }
        cmd.arg("--")
            .arg(format!("-max_total_time={secs}"))
            .arg("-rss_limit_mb=2048")
            .arg("-print_final_stats=1");
        crate::run(cmd).with_context(|| format!("fuzz target `{t}` failed"))?;
    }
    Ok(())
}

/// `cargo fuzz` on the nightly toolchain, installed from crates.io if missing.
fn ensure_cargo_fuzz() -> Result<()> {
    let works = |cmd: &mut Command| cmd.output().is_ok_and(|o| o.status.success());
    if !works(Command::new("cargo").args(["+nightly", "--version"])) {
        bail!("fuzzing needs the nightly toolchain: `rustup toolchain install nightly`");
    }
    if works(Command::new("cargo").args(["+nightly", "fuzz", "--version"])) {
        return Ok(());
    }
    eprintln!("== installing cargo-fuzz");
    let mut install = Command::new("cargo");
    install.args(["install", "cargo-fuzz", "--locked"]);
    crate::run(install)
}
