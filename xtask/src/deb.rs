//! `cargo xtask deb [--debug] [--check]`: the Debian package.
//!
//! Built with `dpkg-deb --build` from a staging tree, so that nothing beyond
//! dpkg (present on every Debian machine) is needed, not even network access for
//! `cargo install cargo-deb`. The package metadata lives in `deploy/debian/`
//! (`control` with `@…@` placeholders, `conffiles`, maintainer scripts,
//! `copyright`); this file only lays the tree out and fills the placeholders.
//!
//! Layout of the package:
//! - `/usr/bin/stktagg` (release build unless `--debug`, for a quick local check)
//! - `/lib/systemd/system/stktagg.service` (`deploy/systemd/`)
//! - `/etc/stktagg/stktagg.cfg` (`deploy/stktagg.cfg`), a conffile
//! - `/usr/share/doc/stktagg/`: `README.md`, `ARCHITECTURE.md` and `docs/` laid out
//!   as in the repository (so that the README's links, `docs/ha.md` and the like,
//!   resolve), `copyright`, and `examples/` (the seed's HA configs, the HAProxy node
//!   configs, the Prometheus scrape config and alerts, the Grafana dashboard)
//!
//! `--check` then lists the package with `dpkg-deb -I` and `-c`, fails if an
//! expected path is missing, extracts it into a scratch root with `dpkg -x`, fails
//! if a relative link of any packaged Markdown file leads nowhere inside the
//! package's documentation, and runs the extracted binary (`--version`, and `-c`
//! on the packaged config).

use crate::{cargo, project_root, run};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Paths every package must contain (as `dpkg-deb -c` prints them, without `.`).
const EXPECTED: &[&str] = &[
    "/usr/bin/stktagg",
    "/lib/systemd/system/stktagg.service",
    "/etc/stktagg/stktagg.cfg",
    "/usr/share/doc/stktagg/copyright",
    "/usr/share/doc/stktagg/README.md",
    "/usr/share/doc/stktagg/ARCHITECTURE.md",
    "/usr/share/doc/stktagg/docs/operations.md",
    "/usr/share/doc/stktagg/docs/runtime-api.md",
    "/usr/share/doc/stktagg/docs/configuration.md",
    "/usr/share/doc/stktagg/docs/ha.md",
    "/usr/share/doc/stktagg/docs/decisions.md",
    "/usr/share/doc/stktagg/docs/security.md",
    "/usr/share/doc/stktagg/examples/ha/README.md",
    "/usr/share/doc/stktagg/examples/prometheus/stktagg-alerts.yml",
    "/usr/share/doc/stktagg/examples/ha/aggr1.cfg",
    "/usr/share/doc/stktagg/examples/ha/haproxy-hapee1.cfg",
    "/usr/share/doc/stktagg/examples/haproxy-hap1.cfg",
    "/usr/share/doc/stktagg/examples/prometheus/prometheus.yml",
    "/usr/share/doc/stktagg/examples/grafana/stktagg.json",
];

/// Entry point.
pub fn main(args: &[String]) -> Result<()> {
    let mut debug = false;
    let mut check = false;
    for a in args {
        match a.as_str() {
            "--debug" => debug = true,
            "--check" => check = true,
            other => bail!("usage: cargo xtask deb [--debug] [--check] (unknown `{other}`)"),
        }
    }
    let deb = build(debug)?;
    println!("{}", deb.display());
    if check {
        check_package(&deb)?;
    }
    Ok(())
}

/// Builds the binary and the package; returns the `.deb` path.
fn build(debug: bool) -> Result<PathBuf> {
    let root = project_root();
    let mut b = cargo();
    b.args(["build", "-p", "stktagg-daemon", "--bin", "stktagg"]);
    if !debug {
        b.arg("--release");
    }
    run(b)?;
    let target = crate::target_dir();
    let bin = target
        .join(if debug { "debug" } else { "release" })
        .join("stktagg");
    let version = binary_version(&bin)?;
    let arch = output(Command::new("dpkg").arg("--print-architecture"))?;
    let name = format!("stktagg_{version}_{arch}");
    let stage = target.join("deb").join(&name);
    if stage.exists() {
        std::fs::remove_dir_all(&stage).with_context(|| format!("clearing {}", stage.display()))?;
    }
    let deploy = root.join("deploy");
    let doc = stage.join("usr/share/doc/stktagg");
    let ex = doc.join("examples");
    copy(&bin, &stage.join("usr/bin/stktagg"), 0o755)?;
    copy(
        &deploy.join("systemd/stktagg.service"),
        &stage.join("lib/systemd/system/stktagg.service"),
        0o644,
    )?;
    copy(
        &deploy.join("stktagg.cfg"),
        &stage.join("etc/stktagg/stktagg.cfg"),
        0o644,
    )?;
    copy(
        &deploy.join("debian/copyright"),
        &doc.join("copyright"),
        0o644,
    )?;
    // The documents keep the repository's layout, so that their relative links
    // (the README's `docs/ha.md`, `performance.md`'s charts) resolve in the package.
    for d in ["README.md", "ARCHITECTURE.md"] {
        copy(&root.join(d), &doc.join(d), 0o644)?;
    }
    copy_dir(&root.join("docs"), &doc.join("docs"))?;
    copy_dir(&deploy.join("examples"), &ex)?;
    copy_dir(&deploy.join("prometheus"), &ex.join("prometheus"))?;
    copy_dir(&deploy.join("grafana"), &ex.join("grafana"))?;

    let control_dir = stage.join("DEBIAN");
    let size_kib = dir_size(&stage)?.div_ceil(1024);
    let control = std::fs::read_to_string(deploy.join("debian/control"))
        .context("reading deploy/debian/control")?
        .replace("@VERSION@", &version)
        .replace("@ARCH@", &arch)
        .replace("@INSTALLED_SIZE@", &size_kib.to_string())
        .replace("@DEPENDS@", &depends(&bin)?);
    if has_placeholder(&control) {
        bail!("deploy/debian/control has a placeholder this task does not fill:\n{control}");
    }
    std::fs::create_dir_all(&control_dir)?;
    std::fs::write(control_dir.join("control"), control)?;
    copy(
        &deploy.join("debian/conffiles"),
        &control_dir.join("conffiles"),
        0o644,
    )?;
    for s in ["postinst", "prerm", "postrm"] {
        copy(&deploy.join("debian").join(s), &control_dir.join(s), 0o755)?;
    }

    let deb = target.join("deb").join(format!("{name}.deb"));
    let mut pack = Command::new("dpkg-deb");
    pack.args(["--root-owner-group", "--build"])
        .arg(&stage)
        .arg(&deb);
    run(pack)?;
    Ok(deb)
}

/// The version the binary reports (`stktagg 0.1.0` gives `0.1.0`).
fn binary_version(bin: &Path) -> Result<String> {
    let out = output(Command::new(bin).arg("--version"))?;
    match out.split_whitespace().collect::<Vec<_>>().as_slice() {
        ["stktagg", v] => Ok((*v).to_owned()),
        _ => bail!("unexpected `stktagg --version` output `{out}`"),
    }
}

/// `libc6 (>= 2.N)` for the newest `GLIBC_2.N` symbol version the binary needs:
/// the one shared library a Rust binary links (found without objdump, by scanning
/// the version strings, which are plain ASCII in the dynamic section).
fn depends(bin: &Path) -> Result<String> {
    let bytes = std::fs::read(bin).with_context(|| format!("reading {}", bin.display()))?;
    let needle = b"GLIBC_2.";
    let mut best: Option<(u32, u32)> = None;
    let mut i = 0;
    while let Some(pos) = find(&bytes[i..], needle) {
        let start = i + pos + needle.len();
        let digits: String = bytes[start..]
            .iter()
            .take_while(|b| b.is_ascii_digit() || **b == b'.')
            .map(|b| *b as char)
            .collect();
        let mut parts = digits.split('.').filter_map(|p| p.parse::<u32>().ok());
        if let Some(minor) = parts.next() {
            let v = (minor, parts.next().unwrap_or(0));
            best = best.max(Some(v));
        }
        i = start;
    }
    Ok(match best {
        Some((minor, 0)) => format!("libc6 (>= 2.{minor})"),
        Some((minor, patch)) => format!("libc6 (>= 2.{minor}.{patch})"),
        None => "libc6".to_owned(),
    })
}

/// Whether `text` still holds an `@NAME@` placeholder (an e-mail address's `@` is
/// not one: a placeholder is upper case and underscores between two `@`).
fn has_placeholder(text: &str) -> bool {
    text.split('@')
        .skip(1)
        .zip(text.split('@').skip(2))
        .any(|(name, _)| {
            !name.is_empty() && name.chars().all(|c| c.is_ascii_uppercase() || c == '_')
        })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn copy(from: &Path, to: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", to.display()))?;
    Ok(())
}

/// Copies the regular files of `from`, recursively, with mode 0644.
fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    for e in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let e = e?;
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()))?;
        } else {
            copy(&p, &to.join(e.file_name()), 0o644)?;
        }
    }
    Ok(())
}

fn dir_size(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let m = e.metadata()?;
        total += if m.is_dir() {
            dir_size(&e.path())?
        } else {
            m.len()
        };
    }
    Ok(total)
}

/// `dpkg-deb -I` and `-c`, the expected paths, then `dpkg -x` and the binary runs.
fn check_package(deb: &Path) -> Result<()> {
    let info = output(Command::new("dpkg-deb").arg("-I").arg(deb))?;
    println!("{info}");
    for want in [
        "Package: stktagg",
        "Depends: libc6",
        "conffiles",
        "postinst",
    ] {
        if !info.contains(want) {
            bail!("`dpkg-deb -I` does not show `{want}`");
        }
    }
    let contents = output(Command::new("dpkg-deb").arg("-c").arg(deb))?;
    println!("{contents}");
    let paths: Vec<&str> = contents
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .map(|p| p.trim_start_matches('.'))
        .collect();
    for want in EXPECTED {
        if !paths.contains(want) {
            bail!("the package lacks {want}");
        }
    }
    let bin_line = contents
        .lines()
        .find(|l| l.ends_with("./usr/bin/stktagg"))
        .unwrap_or_default();
    if !bin_line.starts_with("-rwxr-xr-x root/root") {
        bail!("/usr/bin/stktagg has the wrong mode or owner: {bin_line}");
    }
    let scratch = std::env::temp_dir().join(format!("stktagg-deb-{}", std::process::id()));
    if scratch.exists() {
        std::fs::remove_dir_all(&scratch)?;
    }
    let mut x = Command::new("dpkg");
    x.arg("-x").arg(deb).arg(&scratch);
    run(x)?;
    let broken = broken_links(&scratch.join("usr/share/doc/stktagg"))?;
    if !broken.is_empty() {
        bail!(
            "links in the packaged documents lead nowhere in the package:\n{}",
            broken.join("\n")
        );
    }
    let bin = scratch.join("usr/bin/stktagg");
    let v = output(Command::new(&bin).arg("--version"))?;
    println!("extracted binary: {v}");
    let cfg = scratch.join("etc/stktagg/stktagg.cfg");
    let plan = output(Command::new(&bin).arg("-c").arg("-f").arg(&cfg))?;
    if !plan.ends_with("configuration is valid") {
        bail!("the packaged configuration does not check:\n{plan}");
    }
    std::fs::remove_dir_all(&scratch)?;
    println!("package checked: {}", deb.display());
    Ok(())
}

/// The relative link targets of a Markdown text: the `(target)` of every
/// `[text](target)`, without a `#fragment`; web and mail links and links to an
/// anchor of the same page are left out.
fn relative_links(markdown: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_code = false;
    for line in markdown.lines() {
        // Fenced code blocks hold configuration and shell lines, not links.
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        let mut rest = line;
        while let Some(i) = rest.find("](") {
            let tail = &rest[i + 2..];
            let Some(end) = tail.find(')') else { break };
            let target = tail[..end].split_whitespace().next().unwrap_or_default();
            let path = target.split('#').next().unwrap_or_default();
            let external = target.contains("://") || target.starts_with("mailto:");
            if !external && !path.is_empty() {
                out.push(path.to_owned());
            }
            rest = &tail[end..];
        }
    }
    out
}

/// Every relative link of every Markdown file under `root` whose target does not
/// exist, or lies outside `root`, as `file: target` lines.
pub fn broken_links(root: &Path) -> Result<Vec<String>> {
    let root = root
        .canonicalize()
        .with_context(|| format!("resolving {}", root.display()))?;
    let mut files = Vec::new();
    markdown_files(&root, &mut files)?;
    if files.is_empty() {
        bail!("no Markdown file under {}", root.display());
    }
    let mut broken = Vec::new();
    for f in files {
        let text =
            std::fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?;
        let dir = f.parent().unwrap_or(&root);
        for target in relative_links(&text) {
            let ok = dir
                .join(&target)
                .canonicalize()
                .is_ok_and(|p| p.starts_with(&root));
            if !ok {
                let rel = f.strip_prefix(&root).unwrap_or(&f);
                broken.push(format!("{}: {target}", rel.display()));
            }
        }
    }
    Ok(broken)
}

fn markdown_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let p = e?.path();
        if p.is_dir() {
            markdown_files(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "md") {
            out.push(p);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_links_skip_the_web_anchors_and_code() {
        let md = "See [a](docs/ha.md) and [b](docs/x.md#part), [c](https://e.org/y.md),\n\
                  [d](#here) [e](mailto:x@y) ![chart](performance/s.svg \"title\")\n\
                  ```\n[f](in/code.md)\n```\n";
        assert_eq!(
            relative_links(md),
            vec!["docs/ha.md", "docs/x.md", "performance/s.svg"]
        );
    }

    #[test]
    fn broken_links_finds_missing_and_escaping_targets() {
        let dir = std::env::temp_dir().join(format!("stktagg-links-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("docs")).unwrap();
        std::fs::write(
            dir.join("README.md"),
            "[ok](docs/ha.md) [gone](docs/decisions.md) [out](../etc/passwd)",
        )
        .unwrap();
        std::fs::write(dir.join("docs/ha.md"), "[back](../README.md)").unwrap();
        let broken = broken_links(&dir).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(
            broken,
            vec!["README.md: docs/decisions.md", "README.md: ../etc/passwd"]
        );
    }

    #[test]
    fn the_repositorys_documents_link_only_to_files_a_package_holds() {
        // What the package holds of the repository: README, ARCHITECTURE and
        // docs/ keep their places, so a link that resolves here resolves there,
        // unless it leaves them (into the source tree, say).
        let root = crate::project_root();
        let stage = std::env::temp_dir().join(format!("stktagg-docs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&stage);
        for d in ["README.md", "ARCHITECTURE.md"] {
            copy(&root.join(d), &stage.join(d), 0o644).unwrap();
        }
        copy_dir(&root.join("docs"), &stage.join("docs")).unwrap();
        copy_dir(&root.join("deploy/examples"), &stage.join("examples")).unwrap();
        let broken = broken_links(&stage).unwrap();
        let _ = std::fs::remove_dir_all(&stage);
        assert!(broken.is_empty(), "{broken:#?}");
    }
}
