//! The processes a benchmark drives: the daemon, HAProxy and the load generator,
//! and what `/proc` says about them.
//!
//! Every process is started by us, stopped by its pid (on drop too), and listens on
//! 127.0.0.1 only.

use anyhow::{Context, Result, bail};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process, stopped on drop.
pub struct Proc {
    child: Child,
    /// Its pid, for `/proc`.
    pub pid: u32,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Drop for Proc {
    fn drop(&mut self) {
        // SIGKILL to this pid only; then reap it.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free loopback port (bound, read, released: another process could take it in
/// between, which a failed start then reports).
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

fn wait_listening(addr: SocketAddr, child: &mut Child, what: &str) -> Result<()> {
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        if let Some(status) = child.try_wait()? {
            bail!("{what} exited at start ({status}); see its log");
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("{what} not listening on {addr} after 10 s")
}

/// Starts the daemon with one section: us on a free port, `sources` peers
/// `src1..srcN` without address (they dial us), `from .uncombined to .aggr`.
pub fn start_daemon(bin: &Path, dir: &Path, tag: &str, sources: usize) -> Result<Proc> {
    start_daemon_on(bin, dir, tag, sources, None)
}

/// `cmd` run by `taskset -c <cpu>` when `cpu` is given: pinned to that core.
pub fn pinned(cmd: &Path, cpu: Option<u32>) -> Command {
    match cpu {
        Some(cpu) => {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(cpu.to_string()).arg(cmd);
            c
        }
        None => Command::new(cmd),
    }
}

/// Like `start_daemon`, pinned to core `cpu` if given.
pub fn start_daemon_on(
    bin: &Path,
    dir: &Path,
    tag: &str,
    sources: usize,
    cpu: Option<u32>,
) -> Result<Proc> {
    let port = free_port()?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut cfg = format!(
        "global\n    log-level warn\naggregations bench\n    peer stktagg 127.0.0.1:{port} local\n"
    );
    for i in 1..=sources {
        cfg.push_str(&format!("    peer src{i}\n"));
    }
    cfg.push_str("    from .uncombined to .aggr\n");
    let cfg_path = dir.join(format!("{tag}.stktagg.cfg"));
    std::fs::write(&cfg_path, cfg)?;
    let log = std::fs::File::create(dir.join(format!("{tag}.stktagg.log")))?;
    // `taskset` execs the daemon: the pid is the daemon's own.
    let mut child = pinned(bin, cpu)
        .arg("-f")
        .arg(&cfg_path)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let pid = child.id();
    wait_listening(addr, &mut child, "stktagg")?;
    Ok(Proc { child, pid, addr })
}

/// Starts `haproxy` 2.6 (one thread) with a peers section holding the stream's
/// table and the generator's `src1` as a peer (HAProxy also dials `src1` at a port
/// where nothing listens; that fails harmlessly and the generator's incoming session
/// is used).
pub fn start_haproxy(dir: &Path, tag: &str, key_type: &str) -> Result<Proc> {
    let port = free_port()?;
    let dead = free_port()?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let cfg = format!(
        "global\n    nbthread 1\n    localpeer hap\n\
         defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n\
         peers bench\n    peer hap 127.0.0.1:{port}\n    peer src1 127.0.0.1:{dead}\n    \
         table bench.uncombined type {key_type} size 12m expire 60s store gpc0,http_req_cnt,http_req_rate(10s)\n"
    );
    let cfg_path = dir.join(format!("{tag}.haproxy.cfg"));
    std::fs::write(&cfg_path, cfg)?;
    let log = std::fs::File::create(dir.join(format!("{tag}.haproxy.log")))?;
    let mut child = Command::new("haproxy")
        .args(["-db", "-f"])
        .arg(&cfg_path)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting haproxy (is Debian's haproxy installed?)")?;
    let pid = child.id();
    wait_listening(addr, &mut child, "haproxy")?;
    Ok(Proc { child, pid, addr })
}

/// Runs the load generator and parses its JSON report.
pub fn loadgen(bin: &Path, args: &[String]) -> Result<serde_json::Value> {
    loadgen_on(bin, args, None)
}

/// Like `loadgen`, pinned to core `cpu` if given.
pub fn loadgen_on(bin: &Path, args: &[String], cpu: Option<u32>) -> Result<serde_json::Value> {
    let out = pinned(bin, cpu)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    if !out.status.success() {
        bail!(
            "stktagg-loadgen {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    serde_json::from_slice(&out.stdout).context("parsing the generator's report")
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// User + system CPU seconds of a process so far (`/proc/<pid>/stat`).
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed /proc stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); utime and stime are fields 14 and 15.
    let utime: f64 = f.get(11).context("no utime")?.parse()?;
    let stime: f64 = f.get(12).context("no stime")?.parse()?;
    Ok((utime + stime) / clock_ticks())
}

/// Resident memory of a process in bytes (`VmRSS` in `/proc/<pid>/status`).
pub fn rss_bytes(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS")?;
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .context("malformed VmRSS")?
        .parse()?;
    Ok(kb * 1024)
}

/// The release binaries, built first.
pub struct Bins {
    /// `stktagg`.
    pub daemon: PathBuf,
    /// `stktagg-loadgen`.
    pub loadgen: PathBuf,
}

/// Builds the daemon and the generator in release mode.
pub fn build() -> Result<Bins> {
    let mut cmd = crate::cargo();
    cmd.args([
        "build",
        "--release",
        "-p",
        "stktagg-daemon",
        "-p",
        "stktagg-loadgen",
    ]);
    crate::run(cmd)?;
    let dir = crate::target_dir().join("release");
    Ok(Bins {
        daemon: dir.join("stktagg"),
        loadgen: dir.join("stktagg-loadgen"),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_pinned_command_runs_under_taskset_on_its_core() {
        let c = super::pinned(std::path::Path::new("/bin/stktagg"), Some(1));
        assert_eq!(c.get_program(), "taskset");
        let args: Vec<_> = c.get_args().collect();
        assert_eq!(args, ["-c", "1", "/bin/stktagg"]);
        let c = super::pinned(std::path::Path::new("/bin/stktagg"), None);
        assert_eq!(c.get_program(), "/bin/stktagg");
    }
}
