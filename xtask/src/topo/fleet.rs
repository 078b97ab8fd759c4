//! The processes of one scenario run: HAProxy nodes and stktagg daemons.
//!
//! Every process is a child of ours, known by its PID. Faults are injected by PID
//! (`kill -9` through `Child::kill`, `kill -STOP`/`-CONT` through the `kill`
//! command), and the `Fleet` stops whatever is still running when it is dropped,
//! also when a check fails or panics: a stopped process is continued first, then
//! sent SIGTERM, then SIGKILL if it lingers. Nothing is ever signalled by name.

use super::topology::Topology;
use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use stktagg_tests::RuntimeApi;

/// How long a process may take to answer on its runtime API after being started.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a process gets to exit after SIGTERM before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(3);

/// What kind of process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A `haproxy` node.
    Haproxy,
    /// A `stktagg` daemon.
    Daemon,
}

/// Where a process is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Running (and answering once `start` returned).
    Running,
    /// Frozen with SIGSTOP.
    Stopped,
    /// Killed or exited.
    Dead,
}

#[derive(Debug)]
struct Proc {
    kind: Kind,
    config: PathBuf,
    log: PathBuf,
    api: RuntimeApi,
    child: Option<Child>,
    state: State,
    starts: u32,
}

/// The processes of a run, by name.
#[derive(Debug)]
pub struct Fleet {
    dir: PathBuf,
    daemon_bin: PathBuf,
    haproxy_bin: String,
    procs: BTreeMap<String, Proc>,
}

impl Fleet {
    /// Writes every configuration of `topo` into `dir` (which must exist and be
    /// empty) without starting anything.
    pub fn prepare(
        topo: &Topology,
        dir: &Path,
        daemon_bin: &Path,
        haproxy_bin: &str,
    ) -> Result<Fleet> {
        let mut procs = BTreeMap::new();
        for a in &topo.aggregators {
            let config = dir.join(format!("{}.cfg", a.name));
            std::fs::write(&config, topo.aggregator_config(a, dir)?)
                .with_context(|| format!("writing {}", config.display()))?;
            procs.insert(
                a.name.clone(),
                Proc::new(Kind::Daemon, dir, &a.name, config),
            );
        }
        for n in &topo.nodes {
            let config = dir.join(format!("{}.cfg", n.name));
            std::fs::write(&config, topo.node_config(n, dir)?)
                .with_context(|| format!("writing {}", config.display()))?;
            procs.insert(
                n.name.clone(),
                Proc::new(Kind::Haproxy, dir, &n.name, config),
            );
        }
        Ok(Fleet {
            dir: dir.to_owned(),
            daemon_bin: daemon_bin.to_owned(),
            haproxy_bin: haproxy_bin.to_owned(),
            procs,
        })
    }

    /// The run directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn proc(&self, name: &str) -> Result<&Proc> {
        self.procs
            .get(name)
            .with_context(|| format!("no process `{name}` in this topology"))
    }

    fn proc_mut(&mut self, name: &str) -> Result<&mut Proc> {
        self.procs
            .get_mut(name)
            .with_context(|| format!("no process `{name}` in this topology"))
    }

    /// The runtime API of `name`.
    pub fn api(&self, name: &str) -> Result<RuntimeApi> {
        Ok(self.proc(name)?.api.clone())
    }

    /// The state of `name`.
    pub fn state(&self, name: &str) -> State {
        self.procs.get(name).map(|p| p.state).unwrap_or(State::Dead)
    }

    /// Whether `name` is running (not killed, not frozen).
    pub fn running(&self, name: &str) -> bool {
        self.state(name) == State::Running
    }

    /// The PID of `name`, if it has a child.
    pub fn pid(&self, name: &str) -> Option<u32> {
        self.procs
            .get(name)
            .and_then(|p| p.child.as_ref())
            .map(Child::id)
    }

    /// Starts `name` (again) and waits until its runtime API answers.
    pub fn start(&mut self, name: &str) -> Result<()> {
        let daemon_bin = self.daemon_bin.clone();
        let haproxy_bin = self.haproxy_bin.clone();
        let dir = self.dir.clone();
        let p = self.proc_mut(name)?;
        if p.state != State::Dead {
            bail!("`{name}` is already running");
        }
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p.log)
            .with_context(|| format!("opening {}", p.log.display()))?;
        p.starts += 1;
        let _ = writeln!(log, "==== topo-test: start #{} of {name} ====", p.starts);
        let err = log.try_clone().context("duplicating a log handle")?;
        let mut cmd = match p.kind {
            Kind::Haproxy => {
                let mut c = Command::new(&haproxy_bin);
                // Foreground, so that the PID we hold is the process itself.
                c.arg("-db").arg("-f").arg(&p.config);
                c
            }
            Kind::Daemon => {
                let mut c = Command::new(&daemon_bin);
                // Plain text logs: they are read in a file, not on a terminal.
                c.arg("-f").arg(&p.config).env("NO_COLOR", "1");
                c
            }
        };
        cmd.stdin(Stdio::null()).stdout(log).stderr(err);
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {name} ({cmd:?})"))?;
        // Remembered so that the next run can stop what an interrupted one left.
        note_pid(&dir, child.id());
        p.child = Some(child);
        p.state = State::Running;
        self.wait_ready(name)
    }

    fn wait_ready(&mut self, name: &str) -> Result<()> {
        let start = Instant::now();
        let mut last = String::from("not tried");
        let probe = match self.proc(name)?.kind {
            Kind::Haproxy => "show version",
            Kind::Daemon => "show info",
        };
        while start.elapsed() < START_TIMEOUT {
            self.check_alive(name)?;
            match self.proc(name)?.api.command(probe) {
                Ok(v) if !v.trim().is_empty() => return Ok(()),
                Ok(_) => last = "empty answer".into(),
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!(
            "{name} did not answer on its runtime API within {START_TIMEOUT:?} ({last}); log tail:\n{}",
            self.log_tail(name, 20)
        )
    }

    /// Fails if `name` was started and has exited since.
    pub fn check_alive(&mut self, name: &str) -> Result<()> {
        let p = self.proc_mut(name)?;
        if p.state == State::Dead {
            bail!("`{name}` is not running");
        }
        let exited = match p.child.as_mut() {
            Some(c) => c.try_wait().context("polling a child")?,
            None => None,
        };
        if let Some(st) = exited {
            p.state = State::Dead;
            p.child = None;
            bail!(
                "{name} exited unexpectedly ({st}); log tail:\n{}",
                self.log_tail(name, 20)
            );
        }
        Ok(())
    }

    /// Checks that every process that should run still does.
    pub fn check_all_alive(&mut self) -> Result<()> {
        let names: Vec<String> = self.procs.keys().cloned().collect();
        for n in names {
            if self.state(&n) != State::Dead {
                self.check_alive(&n)?;
            }
        }
        Ok(())
    }

    /// `kill -9`: the process dies at once, without closing anything cleanly.
    pub fn kill9(&mut self, name: &str) -> Result<()> {
        let p = self.proc_mut(name)?;
        let mut child = p
            .child
            .take()
            .with_context(|| format!("`{name}` is not running"))?;
        p.state = State::Dead;
        // Child::kill sends SIGKILL to this PID only.
        child.kill().with_context(|| format!("killing {name}"))?;
        child.wait().with_context(|| format!("reaping {name}"))?;
        Ok(())
    }

    /// `kill -STOP`: the process is frozen; its sockets stay open.
    pub fn freeze(&mut self, name: &str) -> Result<()> {
        self.signal(name, "-STOP")?;
        self.proc_mut(name)?.state = State::Stopped;
        Ok(())
    }

    /// `kill -CONT`: the frozen process resumes.
    pub fn thaw(&mut self, name: &str) -> Result<()> {
        self.signal(name, "-CONT")?;
        self.proc_mut(name)?.state = State::Running;
        Ok(())
    }

    /// `kill -HUP`: a daemon reloads its configuration file.
    pub fn hup(&self, name: &str) -> Result<()> {
        self.signal(name, "-HUP")
    }

    /// Where `name`'s configuration file is (a reload re-reads it).
    pub fn config_path(&self, name: &str) -> Result<PathBuf> {
        Ok(self.proc(name)?.config.clone())
    }

    fn signal(&self, name: &str, sig: &str) -> Result<()> {
        let pid = self
            .pid(name)
            .with_context(|| format!("`{name}` is not running"))?;
        let st = Command::new("kill")
            .arg(sig)
            .arg(pid.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .context("running kill")?;
        if !st.success() {
            bail!("kill {sig} {pid} ({name}) failed with {st}");
        }
        Ok(())
    }

    /// The last `n` lines of `name`'s log.
    pub fn log_tail(&self, name: &str, n: usize) -> String {
        let Some(p) = self.procs.get(name) else {
            return String::new();
        };
        let text = std::fs::read(&p.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Stops every process still running (continued first if frozen).
    pub fn stop_all(&mut self) {
        for p in self.procs.values_mut() {
            p.stop();
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.stop_all();
    }
}

impl Proc {
    fn new(kind: Kind, dir: &Path, name: &str, config: PathBuf) -> Proc {
        Proc {
            kind,
            config,
            log: dir.join(format!("{name}.log")),
            api: RuntimeApi::new(dir.join(format!("{name}.sock"))),
            child: None,
            state: State::Dead,
            starts: 0,
        }
    }

    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = child.id().to_string();
        let kill = |sig: &str| {
            let _ = Command::new("kill")
                .arg(sig)
                .arg(&pid)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        };
        if self.state == State::Stopped {
            kill("-CONT");
        }
        self.state = State::Dead;
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        // SIGTERM first: both haproxy and stktagg then exit cleanly and finish
        // their logs, which matters for a failed run's post-mortem.
        kill("-TERM");
        let start = Instant::now();
        while start.elapsed() < STOP_TIMEOUT {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Fails with a clear message if an address of the topology is already taken
/// (typically by a leftover process of an interrupted run).
pub fn check_addrs_free(addrs: &[(String, SocketAddr)]) -> Result<()> {
    for (name, addr) in addrs {
        if let Err(e) = TcpListener::bind(addr) {
            bail!(
                "{addr} (for {name}) is not free: {e}; is another topo-test run still going? \
                 (`ss -ltnp | grep 127.0.56` shows who holds it)"
            );
        }
    }
    Ok(())
}

const PIDS_FILE: &str = "pids";

fn note_pid(dir: &Path, pid: u32) {
    if let Ok(mut f) = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(PIDS_FILE))
    {
        let _ = writeln!(f, "{pid}");
    }
}

/// Stops the processes an interrupted run left behind in `dir` (killed itself
/// with SIGKILL, it could not stop its children). Only PIDs that this tool wrote
/// down in `dir/pids` and whose command line still names `dir` are signalled.
fn reap_leftovers(dir: &Path) -> Vec<u32> {
    let Ok(text) = std::fs::read_to_string(dir.join(PIDS_FILE)) else {
        return Vec::new();
    };
    let needle = dir.display().to_string();
    let mut reaped = Vec::new();
    for pid in text.lines().filter_map(|l| l.trim().parse::<u32>().ok()) {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default();
        if !cmdline.contains(&needle) {
            continue;
        }
        for sig in ["-CONT", "-KILL"] {
            let _ = Command::new("kill")
                .arg(sig)
                .arg(pid.to_string())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        reaped.push(pid);
    }
    if !reaped.is_empty() {
        // Give the kernel a moment to release their listening sockets.
        std::thread::sleep(Duration::from_millis(200));
    }
    reaped
}

/// Creates an empty run directory, first stopping what an interrupted earlier run
/// left running there, and removing its files.
pub fn fresh_dir(dir: &Path) -> Result<()> {
    let reaped = reap_leftovers(dir);
    if !reaped.is_empty() {
        eprintln!(
            "stopped {} processes left by an interrupted run in {}: {reaped:?}",
            reaped.len(),
            dir.display()
        );
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    // Unix socket paths are limited to 107 bytes; `<dir>/<name>.sock` must fit.
    let longest = dir.join("intermediate-000.sock");
    if longest.as_os_str().len() > 100 {
        bail!(
            "the run directory {} is too deep for unix socket paths; set CARGO_TARGET_DIR to a shorter path",
            dir.display()
        );
    }
    Ok(())
}

/// Appends a line to the run's own log (`topo-test.log`), best effort.
pub fn note(dir: &Path, line: &str) {
    if let Ok(mut f) = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("topo-test.log"))
    {
        let _ = writeln!(f, "{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taken_addresses_are_reported_with_their_owner() {
        let held = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = held.local_addr().unwrap();
        let err = check_addrs_free(&[("aggr9".to_owned(), addr)]).unwrap_err();
        assert!(err.to_string().contains("aggr9"), "{err}");
        drop(held);
        check_addrs_free(&[("aggr9".to_owned(), addr)]).unwrap();
    }

    #[test]
    fn leftovers_are_reaped_only_if_they_name_the_run_dir() {
        let dir = std::env::temp_dir().join(format!("topo-reap-{}", std::process::id()));
        fresh_dir(&dir).unwrap();
        // A process whose command line names the directory, and one that does not.
        // `sh -c CMD NAME` runs CMD with $0 = NAME, so the directory is in its
        // command line while it sleeps.
        let mut ours = Command::new("sh")
            .arg("-c")
            .arg("sleep 30")
            .arg(&dir)
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let mut other = Command::new("sleep").arg("31").spawn().unwrap();
        note_pid(&dir, ours.id());
        note_pid(&dir, other.id());
        let reaped = reap_leftovers(&dir);
        assert_eq!(reaped, vec![ours.id()]);
        assert!(!ours.wait().unwrap().success());
        assert!(other.try_wait().unwrap().is_none());
        other.kill().unwrap();
        other.wait().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn prepare_writes_every_config() {
        let root = crate::project_root().join("tests/topologies");
        let topo = Topology::load(&root, "multi-level").unwrap();
        let dir = std::env::temp_dir().join(format!("topo-prep-{}", std::process::id()));
        fresh_dir(&dir).unwrap();
        let fleet = Fleet::prepare(&topo, &dir, Path::new("/bin/false"), "haproxy").unwrap();
        for name in ["aggr1", "aggr3", "hapee4"] {
            let cfg = std::fs::read_to_string(dir.join(format!("{name}.cfg"))).unwrap();
            assert!(
                cfg.contains(&format!("{}/{name}.sock", dir.display())),
                "{cfg}"
            );
            assert_eq!(fleet.state(name), State::Dead);
        }
        drop(fleet);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
