//! `cargo xtask haproxy`: the HAProxy binaries the live suites run against.
//!
//! Debian's `haproxy` (2.6 on bookworm) comes from apt. HAProxy 3.0 is built from
//! the upstream tarball of Debian trixie's `haproxy` source package, into a cache
//! outside the checkout (`<cache>/haproxy-3.0.11/haproxy`), so that later runs on
//! the same machine reuse it while a fresh machine builds it once (about 80 s on 2
//! cores). The cache is `$STKTAGG_CACHE_DIR`, else `/var/cache/stktagg` for root,
//! else `$XDG_CACHE_HOME/stktagg` or `~/.cache/stktagg`.
//!
//! Trixie's source index is read with a private apt configuration in a temporary
//! directory (a `deb-src`-only source, its own lists and cache), so the machine's
//! apt sources are never touched and nothing from trixie can be installed. The
//! index is signed (apt checks it against Debian's archive keyring); it gives the
//! tarball's address and SHA-256, which must also match the one pinned here, and
//! `apt-helper` checks the download against it. Only the `.orig` tarball is
//! fetched: the Debian patches are not needed to speak the peers protocol, and
//! some mirrors do not carry the Debian part of a point release.

use anyhow::{Context, Result, bail};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// The HAProxy 3.0 release built for the second run of the live suites: the one in
/// Debian trixie.
pub const V30: Release = Release {
    version: "3.0.11",
    sha256: "a133e2d550c5fd9a849b5c7ab17bb945bcdad209ca140d41f45ebf31943ae783",
    suite: "trixie",
};

/// An upstream release taken from a Debian source package.
#[derive(Debug, Clone, Copy)]
pub struct Release {
    /// The upstream version, as in the `.orig` tarball's name.
    pub version: &'static str,
    /// The SHA-256 of `haproxy_<version>.orig.tar.gz`, as in Debian's index.
    pub sha256: &'static str,
    /// The Debian suite whose source index lists it.
    pub suite: &'static str,
}

impl Release {
    /// The name of the upstream tarball in Debian's pool.
    fn tarball(&self) -> String {
        format!("haproxy_{}.orig.tar.gz", self.version)
    }

    /// Where the built binary lives in the cache.
    pub fn binary(&self) -> Result<PathBuf> {
        Ok(cache_dir()?
            .join(format!("haproxy-{}", self.version))
            .join("haproxy"))
    }
}

/// Entry point: `cargo xtask haproxy [--path]`. Builds the 3.0 binary unless the
/// cache has it; `--path` prints only its path (for scripts).
pub fn main(args: &[String]) -> Result<()> {
    let mut path_only = false;
    for a in args {
        match a.as_str() {
            "--path" => path_only = true,
            "--help" | "-h" => {
                println!(
                    "usage: cargo xtask haproxy [--path]\n\
                     builds HAProxy {} from Debian {}'s source package into the cache \
                     (unless it is there) and prints the binary's path and version",
                    V30.version, V30.suite
                );
                return Ok(());
            }
            other => bail!("unknown argument `{other}` (see cargo xtask haproxy --help)"),
        }
    }
    let bin = ensure(&V30)?;
    if path_only {
        println!("{}", bin.display());
    } else {
        println!("{}: {}", bin.display(), version_line(&bin)?);
    }
    Ok(())
}

/// The cache root: `$STKTAGG_CACHE_DIR`, `/var/cache/stktagg` for root, else the
/// user's cache directory.
pub fn cache_dir() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("STKTAGG_CACHE_DIR") {
        return Ok(PathBuf::from(d));
    }
    if is_root() {
        return Ok(PathBuf::from("/var/cache/stktagg"));
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return Ok(PathBuf::from(d).join("stktagg"));
    }
    let home = std::env::var_os("HOME")
        .context("neither STKTAGG_CACHE_DIR, XDG_CACHE_HOME nor HOME is set")?;
    Ok(PathBuf::from(home).join(".cache").join("stktagg"))
}

pub(crate) fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// The first line of `<bin> -v`, e.g. `HAProxy version 3.0.11-... 2025/...`.
pub fn version_line(bin: &Path) -> Result<String> {
    let out = Command::new(bin)
        .arg("-v")
        .output()
        .with_context(|| format!("running {} -v", bin.display()))?;
    if !out.status.success() {
        bail!("`{} -v` exited with {}", bin.display(), out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned())
}

/// Whether `bin` runs and says it is `version`.
fn is_built(bin: &Path, version: &str) -> bool {
    bin.is_file() && version_line(bin).is_ok_and(|v| says_version(&v, version))
}

/// Whether a `haproxy -v` line names exactly `version` (`3.0.11-9e587df` or
/// `3.0.11 2025/06/02`, not `3.0.110`).
fn says_version(line: &str, version: &str) -> bool {
    line.strip_prefix("HAProxy version ")
        .and_then(|rest| rest.strip_prefix(version))
        .is_some_and(|rest| rest.starts_with(['-', ' ']))
}

/// The cached binary of `rel`, if it is built (never builds it).
pub fn cached(rel: &Release) -> Result<Option<PathBuf>> {
    let bin = rel.binary()?;
    Ok(is_built(&bin, rel.version).then_some(bin))
}

/// Returns the cached binary of `rel`, building it first if the cache lacks it.
/// Concurrent runs on one machine wait for each other on a lock file rather than
/// building twice.
pub fn ensure(rel: &Release) -> Result<PathBuf> {
    let bin = rel.binary()?;
    if is_built(&bin, rel.version) {
        return Ok(bin);
    }
    let dir = bin.parent().context("the binary path has a directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let lock_path = dir.join("build.lock");
    let lock = File::create(&lock_path)
        .with_context(|| format!("creating lock file {}", lock_path.display()))?;
    lock.lock()
        .with_context(|| format!("locking {}", lock_path.display()))?;
    // Another run may have built it while we waited for the lock.
    if is_built(&bin, rel.version) {
        return Ok(bin);
    }
    let started = Instant::now();
    let work = TempDir::new(&format!("haproxy-{}", rel.version))?;
    let tarball = download(rel, work.path())?;
    let src = unpack(&tarball, work.path(), rel)?;
    build(&src)?;
    // Copied under a temporary name then renamed, so that the cache never holds a
    // half-written binary that `is_built` would then run.
    let tmp = dir.join("haproxy.new");
    std::fs::copy(src.join("haproxy"), &tmp)
        .with_context(|| format!("copying the built haproxy to {}", tmp.display()))?;
    std::fs::rename(&tmp, &bin).with_context(|| format!("renaming to {}", bin.display()))?;
    if !is_built(&bin, rel.version) {
        bail!(
            "built {} but it does not say `HAProxy version {}`",
            bin.display(),
            rel.version
        );
    }
    eprintln!(
        "built HAProxy {} into {} in {:.0?}",
        rel.version,
        bin.display(),
        started.elapsed()
    );
    drop(lock);
    Ok(bin)
}

/// Runs a step of the build with its output on stderr: stdout is only the result,
/// so that `$(cargo xtask haproxy --path)` is the path even on the first run.
fn run(mut cmd: Command) -> Result<()> {
    cmd.stdout(std::io::stderr());
    crate::run(cmd)
}

/// Fetches `rel`'s upstream tarball into `work` and returns its path.
fn download(rel: &Release, work: &Path) -> Result<PathBuf> {
    let apt = PrivateApt::new(work, rel.suite)?;
    apt.run(&["update"])?;
    let uris = apt.output(&["source", "--print-uris", "haproxy"])?;
    let wanted = rel.tarball();
    let (uri, sha256) = orig_uri(&uris, &wanted).with_context(|| {
        format!(
            "Debian {}'s haproxy source package has no {wanted}; it lists:\n{uris}\n\
             update V30 in xtask/src/haproxy.rs (version and SHA-256) to the release it has",
            rel.suite
        )
    })?;
    if sha256 != rel.sha256 {
        bail!(
            "Debian {}'s index gives {wanted} the SHA-256 {sha256}, not the pinned {}",
            rel.suite,
            rel.sha256
        );
    }
    let dest = work.join(&wanted);
    let mut get = Command::new("/usr/lib/apt/apt-helper");
    get.args(apt.options())
        .arg("download-file")
        .arg(&uri)
        .arg(&dest)
        .arg(format!("SHA256:{sha256}"));
    run(get)?;
    Ok(dest)
}

/// Finds `name` in `apt-get source --print-uris` output, whose lines read
/// `'<uri>' <name> <size> SHA256:<hex>`, and returns its URI and SHA-256.
fn orig_uri(print_uris: &str, name: &str) -> Option<(String, String)> {
    print_uris.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        let uri = words.next()?.strip_prefix('\'')?.strip_suffix('\'')?;
        if words.next()? != name {
            return None;
        }
        let _size = words.next()?;
        let sha = words.next()?.strip_prefix("SHA256:")?;
        Some((uri.to_owned(), sha.to_owned()))
    })
}

/// Unpacks the tarball in `work` and returns the source directory.
fn unpack(tarball: &Path, work: &Path, rel: &Release) -> Result<PathBuf> {
    let mut tar = Command::new("tar");
    tar.arg("-xzf").arg(tarball).arg("-C").arg(work);
    run(tar)?;
    let src = work.join(format!("haproxy-{}", rel.version));
    if !src.join("Makefile").is_file() {
        bail!("{} has no Makefile after unpacking", src.display());
    }
    Ok(src)
}

/// `make TARGET=linux-glibc USE_OPENSSL=1`, after checking (or, as root,
/// installing from the machine's own suite) what it needs.
fn build(src: &Path) -> Result<()> {
    ensure_build_deps()?;
    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut make = Command::new("make");
    make.current_dir(src)
        .arg(format!("-j{jobs}"))
        .args(["TARGET=linux-glibc", "USE_OPENSSL=1"]);
    run(make)
}

/// The compiler, `make` and the headers the build includes (OpenSSL, and
/// `crypt.h` which `linux-glibc` uses).
fn ensure_build_deps() -> Result<()> {
    let missing = || {
        let mut m = Vec::new();
        if Command::new("cc").arg("--version").output().is_err() {
            m.push("gcc");
        }
        if Command::new("make").arg("--version").output().is_err() {
            m.push("make");
        }
        if !Path::new("/usr/include/openssl/ssl.h").is_file() {
            m.push("libssl-dev");
        }
        if !Path::new("/usr/include/crypt.h").is_file() {
            m.push("libcrypt-dev");
        }
        m
    };
    let need = missing();
    if need.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "building HAProxy needs {}: run `sudo apt-get install -y {}` first",
            need.join(", "),
            need.join(" ")
        );
    }
    let mut install = Command::new("apt-get");
    install
        .args(["install", "-y", "--no-install-recommends", "libc6-dev"])
        .args(&need)
        .env("DEBIAN_FRONTEND", "noninteractive");
    run(install)?;
    let still = missing();
    if !still.is_empty() {
        bail!("still missing after apt-get install: {}", still.join(", "));
    }
    Ok(())
}

/// apt with its own sources, lists and cache under a work directory: it reads one
/// suite's signed source index and changes nothing on the machine.
struct PrivateApt {
    options: Vec<String>,
}

impl PrivateApt {
    fn new(work: &Path, suite: &str) -> Result<PrivateApt> {
        let root = work.join("apt");
        for d in [
            "etc/sources.list.d",
            "etc/preferences.d",
            "lists/partial",
            "cache/archives/partial",
        ] {
            std::fs::create_dir_all(root.join(d))
                .with_context(|| format!("creating {}", root.join(d).display()))?;
        }
        let sources = root.join("etc/src.sources");
        std::fs::write(
            &sources,
            format!(
                "Types: deb-src\n\
                 URIs: http://deb.debian.org/debian\n\
                 Suites: {suite}\n\
                 Components: main\n\
                 Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
            ),
        )
        .with_context(|| format!("writing {}", sources.display()))?;
        let d = |p: &str| root.join(p).display().to_string();
        let options = [
            ("Dir::Etc::SourceList", d("etc/src.sources")),
            ("Dir::Etc::SourceParts", d("etc/sources.list.d")),
            ("Dir::Etc::Preferences", d("etc/preferences")),
            ("Dir::Etc::PreferencesParts", d("etc/preferences.d")),
            ("Dir::State::Lists", d("lists")),
            ("Dir::Cache", d("cache")),
            // The work directory is private to us; apt's download sandbox user
            // could not write into it.
            ("APT::Sandbox::User", "root".to_owned()),
        ]
        .into_iter()
        .flat_map(|(k, v)| ["-o".to_owned(), format!("{k}={v}")])
        .collect();
        Ok(PrivateApt { options })
    }

    fn options(&self) -> &[String] {
        &self.options
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("apt-get");
        c.args(&self.options).args(args);
        c
    }

    fn run(&self, args: &[&str]) -> Result<()> {
        run(self.command(args))
    }

    fn output(&self, args: &[&str]) -> Result<String> {
        let mut c = self.command(args);
        eprintln!("$ {c:?}");
        let out = c.output().with_context(|| format!("running {c:?}"))?;
        if !out.status.success() {
            bail!(
                "{c:?} failed with {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// A scratch directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(label: &str) -> Result<TempDir> {
        let d = std::env::temp_dir().join(format!("stktagg-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        Ok(TempDir(d))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orig_uri_finds_the_tarball_line() {
        let out = "Need to get 4845 kB of source archives.\n\
            'http://deb.debian.org/debian/pool/main/h/haproxy/haproxy_3.0.11-1%2bdeb13u4.dsc' haproxy_3.0.11-1+deb13u4.dsc 2462 SHA256:d42b\n\
            'http://deb.debian.org/debian/pool/main/h/haproxy/haproxy_3.0.11.orig.tar.gz' haproxy_3.0.11.orig.tar.gz 4738655 SHA256:a133\n";
        assert_eq!(
            orig_uri(out, "haproxy_3.0.11.orig.tar.gz"),
            Some((
                "http://deb.debian.org/debian/pool/main/h/haproxy/haproxy_3.0.11.orig.tar.gz"
                    .to_owned(),
                "a133".to_owned()
            ))
        );
        assert_eq!(orig_uri(out, "haproxy_3.0.12.orig.tar.gz"), None);
    }

    #[test]
    fn version_lines_name_one_release() {
        let line = "HAProxy version 3.0.11-9e587df 2025/06/02 - https://haproxy.org/";
        assert!(says_version(line, "3.0.11"));
        assert!(says_version("HAProxy version 3.0.11 2025/06/02", "3.0.11"));
        assert!(!says_version(line, "3.0.1"));
        assert!(!says_version("HAProxy version 3.0.110-abc", "3.0.11"));
        assert!(!says_version("HA-Proxy version 3.0.11-abc", "3.0.11"));
    }

    #[test]
    fn the_binary_is_named_by_version_in_the_cache() {
        let p = V30.binary().unwrap();
        assert!(p.ends_with("haproxy-3.0.11/haproxy"), "{}", p.display());
    }
}
