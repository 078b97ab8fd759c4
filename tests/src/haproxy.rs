//! Real `haproxy` processes: configuration builder and process handle.
//!
//! Each `Haproxy` gets its own scratch directory (config, stats socket, log) and
//! loopback ports picked by the kernel, so tests run in parallel. The process runs in
//! the foreground (`-db`) with one thread (the machine is shared and 2.6's peers code
//! is the same with one thread), and is killed by PID when the handle drops: SIGTERM,
//! then SIGKILL if it lingers. If the test is panicking at that point, the tail of
//! its log is printed and the directory is kept for a post-mortem.

use crate::error::{HarnessError, Result};
use crate::ports::{remove_dir, scratch_dir};
use crate::runtime::RuntimeApi;
use std::fmt::Write as _;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long `haproxy` may take to answer on its stats socket after being started.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `haproxy` gets to exit after SIGTERM before it is sent SIGKILL.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(3);
/// The environment variable that overrides the `haproxy` binary to run.
pub const HAPROXY_ENV: &str = "STKTAGG_HAPROXY";
/// The hint given when `haproxy` cannot be run.
pub const INSTALL_HINT: &str = "install haproxy: apt-get install -y haproxy";
/// The hint given under `CI=true`, where the real-HAProxy suite must never be skipped.
pub const CI_HINT: &str = "CI=true and haproxy is missing: the real-HAProxy suite must run in CI; \
     install haproxy: apt-get install -y haproxy";
/// The hint given when the binary named by `STKTAGG_HAPROXY` cannot be run.
pub const BUILD_HINT: &str = "STKTAGG_HAPROXY names a haproxy that does not run; \
     `cargo xtask haproxy` builds HAProxy 3.0 into a cache and prints its path";
/// The same under `CI=true`.
pub const CI_BUILD_HINT: &str = "CI=true and the haproxy named by STKTAGG_HAPROXY is missing: \
     the real-HAProxy suite must run in CI against every tested version; \
     `cargo xtask haproxy` builds HAProxy 3.0 into a cache and prints its path";

/// The `haproxy` binary to run: `$STKTAGG_HAPROXY`, else `haproxy` from `PATH`.
pub fn haproxy_binary() -> String {
    std::env::var(HAPROXY_ENV).unwrap_or_else(|_| "haproxy".to_owned())
}

/// The version line of the binary this process runs, once it has been read.
static VERSION_LINE: OnceLock<String> = OnceLock::new();

/// Checks that `haproxy` runs and returns its version line. Tests call this (or
/// `Haproxy::start`, which calls it) and fail when it errs: they never skip. Under
/// `CI=true` the message says that CI needs haproxy; elsewhere it says how to
/// install (or, for `STKTAGG_HAPROXY`, build) it.
///
/// The first success in a process prints the binary and its version on stderr, so
/// that a failing test's output says which HAProxy it ran against (the suites run
/// against more than one).
pub fn require_haproxy() -> Result<String> {
    if let Some(v) = VERSION_LINE.get() {
        return Ok(v.clone());
    }
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let binary = haproxy_binary();
    let line = check_haproxy(&binary, ci)?;
    if VERSION_LINE.set(line.clone()).is_ok() {
        eprintln!("stktagg-tests: running `{binary}`: {line}");
    }
    Ok(line)
}

/// The version of the binary the harness runs (see `require_haproxy`).
pub fn haproxy_version() -> Result<HaproxyVersion> {
    let line = require_haproxy()?;
    HaproxyVersion::parse(&line)
        .ok_or_else(|| HarnessError::Unexpected(format!("cannot read a version in `{line}`")))
}

/// `require_haproxy` for a given binary and CI flag. A bare name is looked up on
/// `PATH`, so the hint says to install Debian's package; a path (as
/// `STKTAGG_HAPROXY` gives for HAProxy 3.0) gets the hint to build it.
pub fn check_haproxy(binary: &str, ci: bool) -> Result<String> {
    let hint = match (!binary.contains('/'), ci) {
        (true, false) => INSTALL_HINT,
        (true, true) => CI_HINT,
        (false, false) => BUILD_HINT,
        (false, true) => CI_BUILD_HINT,
    };
    let missing = |source| HarnessError::HaproxyMissing {
        binary: binary.to_owned(),
        hint,
        source,
    };
    let out = Command::new(binary).arg("-v").output().map_err(missing)?;
    if !out.status.success() {
        return Err(missing(std::io::Error::other(format!(
            "`{binary} -v` exited with {}",
            out.status
        ))));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text.lines().next().unwrap_or_default().to_owned())
}

/// A HAProxy release, as `haproxy -v` names it: `2.6.12`, or `3.4.0` for
/// `3.4-dev5`. Ordered, so that tests can say `>= HaproxyVersion::new(3, 0, 0)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HaproxyVersion {
    /// `3` in 3.0.11.
    pub major: u32,
    /// `0` in 3.0.11.
    pub minor: u32,
    /// `11` in 3.0.11; 0 for a development version.
    pub patch: u32,
}

impl HaproxyVersion {
    /// A version from its numbers.
    pub const fn new(major: u32, minor: u32, patch: u32) -> HaproxyVersion {
        HaproxyVersion {
            major,
            minor,
            patch,
        }
    }

    /// Reads the first line of `haproxy -v`, e.g. `HAProxy version 2.6.12-1+deb12u4
    /// 2026/10/17 - https://haproxy.org/`.
    pub fn parse(line: &str) -> Option<HaproxyVersion> {
        let (_, rest) = line.split_once("version ")?;
        let release = rest.split(['-', ' ']).next()?;
        let mut nums = release.split('.').map(str::parse::<u32>);
        let major = nums.next()?.ok()?;
        let minor = nums.next()?.ok()?;
        let patch = match nums.next() {
            Some(p) => p.ok()?,
            None => 0,
        };
        Some(HaproxyVersion::new(major, minor, patch))
    }
}

impl std::fmt::Display for HaproxyVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// One `peer <name> <addr>` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerDecl {
    /// The peer's name.
    pub name: String,
    /// The address HAProxy listens on (local peer) or dials (remote peer).
    pub addr: SocketAddr,
}

/// A `peers` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeersSection {
    /// The section name; tables are `<name>/<table>` in the CLI.
    pub name: String,
    /// The peers, local one included.
    pub peers: Vec<PeerDecl>,
    /// The `table` lines without the keyword, e.g. `t type ip size 1k store gpc0`.
    pub tables: Vec<String>,
}

/// A configuration for one `haproxy` process.
///
/// The `global` section always gets the stats socket (in the process's scratch
/// directory, at operator level `admin`), `nbthread 1` and the `localpeer`. The
/// `defaults` section is HTTP mode with short timeouts. Everything else is added
/// with the builder methods, or as raw text with `section`.
#[derive(Debug, Clone, Default)]
pub struct HaproxyConfig {
    /// The `localpeer` name.
    pub local_peer: Option<String>,
    /// The peers section, if any.
    pub peers: Option<PeersSection>,
    /// Extra `global` lines.
    pub global: Vec<String>,
    /// Raw sections (frontends, backends), appended in order.
    pub sections: Vec<String>,
}

impl HaproxyConfig {
    /// An empty configuration (only global and defaults).
    pub fn new() -> HaproxyConfig {
        HaproxyConfig::default()
    }

    /// Sets `localpeer`.
    pub fn local_peer(mut self, name: &str) -> HaproxyConfig {
        self.local_peer = Some(name.to_owned());
        self
    }

    /// Starts (or renames) the peers section.
    pub fn peers_section(mut self, name: &str) -> HaproxyConfig {
        match &mut self.peers {
            Some(p) => p.name = name.to_owned(),
            None => {
                self.peers = Some(PeersSection {
                    name: name.to_owned(),
                    peers: Vec::new(),
                    tables: Vec::new(),
                })
            }
        }
        self
    }

    fn section_mut(&mut self) -> &mut PeersSection {
        self.peers.get_or_insert_with(|| PeersSection {
            name: "p".to_owned(),
            peers: Vec::new(),
            tables: Vec::new(),
        })
    }

    /// Adds a `peer` line (the section is called `p` unless named otherwise).
    pub fn peer(mut self, name: &str, addr: SocketAddr) -> HaproxyConfig {
        self.section_mut().peers.push(PeerDecl {
            name: name.to_owned(),
            addr,
        });
        self
    }

    /// Adds a `table` line to the peers section, without the `table` keyword.
    pub fn table(mut self, decl: &str) -> HaproxyConfig {
        self.section_mut().tables.push(decl.to_owned());
        self
    }

    /// Adds a line to `global`.
    pub fn global(mut self, line: &str) -> HaproxyConfig {
        self.global.push(line.to_owned());
        self
    }

    /// Appends a raw section (e.g. a frontend or backend, with its header line).
    pub fn section(mut self, text: &str) -> HaproxyConfig {
        self.sections.push(text.to_owned());
        self
    }

    /// Renders the configuration text with the stats socket at `stats_socket`.
    pub fn render(&self, stats_socket: &Path) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "global");
        let _ = writeln!(
            s,
            "    stats socket {} mode 600 level admin",
            stats_socket.display()
        );
        let _ = writeln!(s, "    nbthread 1");
        if let Some(lp) = &self.local_peer {
            let _ = writeln!(s, "    localpeer {lp}");
        }
        for l in &self.global {
            let _ = writeln!(s, "    {l}");
        }
        let _ = writeln!(
            s,
            "\ndefaults\n    mode http\n    timeout connect 2s\n    timeout client 30s\n    timeout server 30s\n"
        );
        if let Some(p) = &self.peers {
            let _ = writeln!(s, "peers {}", p.name);
            for peer in &p.peers {
                let _ = writeln!(s, "    peer {} {}", peer.name, peer.addr);
            }
            for t in &p.tables {
                let _ = writeln!(s, "    table {t}");
            }
            s.push('\n');
        }
        for sec in &self.sections {
            s.push_str(sec.trim_end());
            s.push_str("\n\n");
        }
        s
    }
}

/// A running `haproxy`, stopped by PID when dropped.
#[derive(Debug)]
pub struct Haproxy {
    child: Option<Child>,
    dir: PathBuf,
    log: PathBuf,
    config: String,
    api: RuntimeApi,
}

impl Haproxy {
    /// Writes `config` into a fresh scratch directory named after `label`, starts
    /// `haproxy -db -f` on it, and waits until its stats socket answers.
    pub fn start(config: &HaproxyConfig, label: &str) -> Result<Haproxy> {
        Haproxy::start_with(label, |sock| config.render(sock))
    }

    /// Like `start`, with a raw configuration text in which `{stats_socket}` is
    /// replaced by the socket path. The text must declare that socket.
    pub fn start_text(text: &str, label: &str) -> Result<Haproxy> {
        Haproxy::start_with(label, |sock| {
            text.replace("{stats_socket}", &sock.display().to_string())
        })
    }

    fn start_with(label: &str, render: impl FnOnce(&Path) -> String) -> Result<Haproxy> {
        require_haproxy()?;
        let dir = scratch_dir(label)?;
        let sock = dir.join("admin.sock");
        let cfg_path = dir.join("haproxy.cfg");
        let log = dir.join("haproxy.log");
        let config = render(&sock);
        std::fs::write(&cfg_path, &config)
            .map_err(|e| HarnessError::io(format!("writing {}", cfg_path.display()), e))?;
        let out = File::create(&log)
            .map_err(|e| HarnessError::io(format!("creating {}", log.display()), e))?;
        let err = out
            .try_clone()
            .map_err(|e| HarnessError::io("duplicating the log file handle", e))?;
        let child = Command::new(haproxy_binary())
            .arg("-db")
            .arg("-f")
            .arg(&cfg_path)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| HarnessError::io("spawning haproxy", e))?;
        let mut h = Haproxy {
            child: Some(child),
            dir,
            log,
            config,
            api: RuntimeApi::new(sock),
        };
        h.wait_ready()?;
        Ok(h)
    }

    fn wait_ready(&mut self) -> Result<()> {
        let start = Instant::now();
        let mut last = String::from("not tried");
        while start.elapsed() < START_TIMEOUT {
            self.check_alive()?;
            match self.api.command("show version") {
                Ok(v) if !v.trim().is_empty() => return Ok(()),
                Ok(_) => last = "empty answer".into(),
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(HarnessError::Timeout {
            what: format!(
                "haproxy's stats socket {}; log tail:\n{}",
                self.api.path().display(),
                self.log_tail(30)
            ),
            waited: start.elapsed(),
            last,
        })
    }

    /// Fails if the process has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        let status = match self.child.as_mut() {
            Some(c) => c
                .try_wait()
                .map_err(|e| HarnessError::io("polling haproxy", e))?,
            None => return Err(HarnessError::Unexpected("haproxy already stopped".into())),
        };
        match status {
            None => Ok(()),
            Some(st) => Err(HarnessError::HaproxyExited {
                status: st.to_string(),
                log_tail: self.log_tail(30),
            }),
        }
    }

    /// The runtime API client for this process.
    pub fn api(&self) -> &RuntimeApi {
        &self.api
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The scratch directory (config, socket, log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The configuration text that was started.
    pub fn config(&self) -> &str {
        &self.config
    }

    /// Everything the process wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        std::fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Stops the process (SIGTERM, then SIGKILL after `STOP_TIMEOUT`) and returns
    /// its exit status.
    pub fn stop(&mut self) -> Result<ExitStatus> {
        let mut child = self
            .child
            .take()
            .ok_or_else(|| HarnessError::Unexpected("haproxy already stopped".into()))?;
        if let Ok(Some(st)) = child.try_wait() {
            return Ok(st);
        }
        // std only sends SIGKILL; SIGTERM lets haproxy exit cleanly, which keeps
        // its log complete. Only this child's PID is signalled.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let start = Instant::now();
        while start.elapsed() < STOP_TIMEOUT {
            if let Ok(Some(st)) = child.try_wait() {
                return Ok(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child
            .kill()
            .map_err(|e| HarnessError::io("killing haproxy", e))?;
        child
            .wait()
            .map_err(|e| HarnessError::io("waiting for haproxy", e))
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.stop();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- haproxy log ({}, {}), last lines ---\n{}\n--- config ---\n{}",
                self.log.display(),
                VERSION_LINE.get().map_or("version unknown", String::as_str),
                self.log_tail(40),
                self.config
            );
        } else {
            remove_dir(&self.dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_from_haproxy_v() {
        let v = |l| HaproxyVersion::parse(l);
        assert_eq!(
            v("HAProxy version 2.6.12-1+deb12u4 2026/10/17 - https://haproxy.org/"),
            Some(HaproxyVersion::new(2, 6, 12))
        );
        assert_eq!(
            v("HAProxy version 3.0.11-9e587df 2025/06/02 - https://haproxy.org/"),
            Some(HaproxyVersion::new(3, 0, 11))
        );
        assert_eq!(
            v("HAProxy version 3.4-dev5-1a2b3c 2026/02/01 - https://haproxy.org/"),
            Some(HaproxyVersion::new(3, 4, 0))
        );
        assert_eq!(
            v("HAProxy version 3.2.0 2025/05/28"),
            Some(HaproxyVersion::new(3, 2, 0))
        );
        assert_eq!(v("not haproxy"), None);
        assert_eq!(v("HAProxy version x.y"), None);
        assert!(HaproxyVersion::new(2, 6, 12) < HaproxyVersion::new(3, 0, 0));
        assert_eq!(HaproxyVersion::new(3, 0, 11).to_string(), "3.0.11");
    }

    #[test]
    fn renders_peers_section_and_sections() {
        let a: SocketAddr = "127.0.0.1:1001".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:1002".parse().unwrap();
        let cfg = HaproxyConfig::new()
            .local_peer("hap1")
            .peers_section("lab")
            .peer("hap1", a)
            .peer("agg", b)
            .table("t type ip size 1k store gpc0")
            .section("frontend fe\n    bind 127.0.0.1:1003\n");
        let text = cfg.render(Path::new("/tmp/x/admin.sock"));
        assert!(text.contains("stats socket /tmp/x/admin.sock mode 600 level admin"));
        assert!(text.contains("    localpeer hap1\n"));
        assert!(text.contains("peers lab\n    peer hap1 127.0.0.1:1001\n    peer agg 127.0.0.1:1002\n    table t type ip size 1k store gpc0\n"));
        assert!(text.contains("frontend fe\n    bind 127.0.0.1:1003\n"));
    }
}
