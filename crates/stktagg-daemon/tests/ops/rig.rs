//! Processes and clients for the operations tests.
//!
//! Addresses: test `b` owns `127.0.77.<16·b + i>` (`i = 1..=3` aggregators, `4..=5`
//! nodes, `8..=15` HTTP clients, each its own `src` key). Ports come from the
//! harness's `free_addr`. The `stktagg` binary runs with its configuration, log and
//! stats socket in a scratch directory; it is stopped by PID and its log tail is
//! printed if the test panics.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use stktagg_tests::http::http_get;
use stktagg_tests::ports::{free_addr, remove_dir, scratch_dir};
use stktagg_tests::{Haproxy, HaproxyConfig, HarnessError, Result, RuntimeApi, eventually};

/// The `stktagg` binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_stktagg");
/// How long a daemon may take to answer on its stats socket.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a fleet may take to converge after a change.
pub const CONVERGE: Duration = Duration::from_secs(8);
/// The peers section on the nodes.
pub const SECTION: &str = "cl";
/// Our section on the aggregator the nodes talk to.
pub const AGG_SECTION: &str = "ag";
/// Table declaration shared by every `req.*` table (inputs and outputs must match).
pub const REQ_DECL: &str =
    "type ip size 1k expire 60s store http_req_cnt,http_req_rate(60s),gpc0,gpt0,bytes_in_cnt";

/// A test's block of loopback addresses.
#[derive(Debug, Clone, Copy)]
pub struct Block(pub u8);

impl Block {
    /// `127.0.77.<16·block + i>`.
    pub fn ip(self, i: u8) -> Ipv4Addr {
        Ipv4Addr::new(127, 0, 77, self.0 * 16 + i)
    }

    /// A fresh port on address `i` of the block: `free_addr` probes 127.0.0.1, and a
    /// port free there is free on this otherwise unused block.
    pub fn addr(self, i: u8) -> SocketAddr {
        SocketAddr::from((self.ip(i), free_addr().unwrap().port()))
    }

    /// HTTP client `c` (0 to 7): its source address, also its key in `src` tables.
    pub fn client(self, c: usize) -> Ipv4Addr {
        self.ip(8 + c as u8)
    }
}

/// A `stktagg` subprocess.
#[derive(Debug)]
pub struct Daemon {
    child: Option<Child>,
    /// Its scratch directory (config, log, socket).
    pub dir: PathBuf,
    /// Its configuration file.
    pub cfg: PathBuf,
    log: PathBuf,
    /// Its runtime API (`<dir>/api.sock` by convention).
    pub api: RuntimeApi,
}

impl Daemon {
    /// Writes `config` (where `{dir}` stands for the scratch directory) and starts
    /// `stktagg -f` on it with `args`; waits until `show info` answers, unless the
    /// configuration has no stats socket, in which case it waits for the
    /// "listening" line on stdout.
    pub fn start(label: &str, config: &str, args: &[&str]) -> Result<Daemon> {
        Daemon::start_with_env(label, config, args, &[])
    }

    /// `start`, with these environment variables set for the daemon.
    pub fn start_with_env(
        label: &str,
        config: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Daemon> {
        let dir = scratch_dir(label)?;
        let cfg = dir.join("stktagg.cfg");
        let text = config.replace("{dir}", &dir.display().to_string());
        std::fs::write(&cfg, &text)
            .map_err(|e| HarnessError::io(format!("writing {}", cfg.display()), e))?;
        let log = dir.join("stktagg.log");
        let out = File::create(&log).map_err(|e| HarnessError::io("creating the log", e))?;
        let err = out
            .try_clone()
            .map_err(|e| HarnessError::io("duplicating the log handle", e))?;
        let child = Command::new(BIN)
            .arg("-f")
            .arg(&cfg)
            .args(args)
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| HarnessError::io("spawning stktagg", e))?;
        let mut d = Daemon {
            child: Some(child),
            api: RuntimeApi::new(dir.join("api.sock")),
            dir,
            cfg,
            log,
        };
        let has_socket = text.contains("stats socket");
        let start = Instant::now();
        let mut last = String::from("not tried");
        while start.elapsed() < START_TIMEOUT {
            if let Some(st) = d.try_wait() {
                return Err(HarnessError::Unexpected(format!(
                    "stktagg exited at start ({st}); log:\n{}",
                    d.log()
                )));
            }
            if has_socket {
                match d.api.command("show info") {
                    Ok(v) if v.contains("Name: stktagg") => return Ok(d),
                    Ok(v) => last = v,
                    Err(e) => last = e.to_string(),
                }
            } else if d.log().contains("listening for peers on") {
                return Ok(d);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(HarnessError::Timeout {
            what: format!("stktagg to start; log:\n{}", d.log()),
            waited: start.elapsed(),
            last,
        })
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The exit status, if it has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        let st = self
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten());
        if st.is_some() {
            self.child = None;
        }
        st
    }

    /// Sends `signal` (`TERM`, `INT`...) to this process only and waits at most
    /// `bound` for it to exit; returns its status and how long it took, or `None`
    /// (after a SIGKILL) if it was still running.
    pub fn signal_and_wait(
        &mut self,
        signal: &str,
        bound: Duration,
    ) -> Option<(ExitStatus, Duration)> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(c.id().to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let start = Instant::now();
        while start.elapsed() < bound {
            if let Ok(Some(st)) = c.try_wait() {
                return Some((st, start.elapsed()));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = c.kill();
        let _ = c.wait();
        None
    }

    /// Everything it wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        std::fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Stops it: SIGTERM, then SIGKILL after 6 s.
    pub fn stop(&mut self) {
        let _ = self.signal_and_wait("TERM", Duration::from_secs(6));
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!(
                "--- stktagg log ({}), last lines ---\n{}\n--- config ---\n{}",
                self.log.display(),
                lines[lines.len().saturating_sub(60)..].join("\n"),
                std::fs::read_to_string(&self.cfg).unwrap_or_default()
            );
        } else {
            remove_dir(&self.dir);
        }
    }
}

/// One HAProxy node of a fleet.
#[derive(Debug)]
pub struct Node {
    /// `hap1`, `hap2`.
    pub name: String,
    /// Its HTTP frontend.
    pub http: SocketAddr,
    /// Its peers address (where it listens, and where we dial it).
    pub peer: SocketAddr,
    /// The process.
    pub proc: Haproxy,
}

impl Node {
    /// Its runtime API.
    pub fn api(&self) -> &RuntimeApi {
        self.proc.api()
    }
}

/// Where a fleet's top-level aggregators listen, when it has an `up` group.
#[derive(Debug)]
pub struct Tops {
    /// `top1`, `top2`: stktagg processes summing the mid aggregator's `.aggr`
    /// into `.l2`.
    pub daemons: Vec<Daemon>,
}

/// One aggregator (`stktagg`, section `ag`) with HAProxy nodes `hap1`, `hap2`, a
/// Prometheus listener, and optionally two top-level aggregators as `up group 1`
/// and a peer `rogue` without address (for protocol errors).
#[derive(Debug)]
pub struct Fleet {
    /// The aggregator the nodes talk to.
    pub agg: Daemon,
    /// The nodes.
    pub nodes: Vec<Node>,
    /// Its Prometheus listener.
    pub prometheus: SocketAddr,
    /// Where it listens for peers.
    pub listen: SocketAddr,
    /// The top-level aggregators, if any.
    pub tops: Option<Tops>,
    /// The address block.
    pub block: Block,
}

/// Options of a fleet.
#[derive(Debug, Clone, Copy, Default)]
pub struct FleetOpts {
    /// Add `top1` and `top2` as `up group 1`, with `forward .l2`.
    pub tops: bool,
    /// Add `peer rogue` (no address): a source that never connects unless a test
    /// dials as it. Until it has resynced (or the 10 s start-up grace is over) the
    /// aggregator answers PARTIAL to resync requests, so fleets with tops leave it
    /// out.
    pub rogue: bool,
}

impl Fleet {
    /// Starts the tops (if any), the aggregator, then the nodes, and waits until
    /// every session of the aggregator is established.
    pub fn start(label: &str, block: Block, opts: FleetOpts) -> Result<Fleet> {
        stktagg_tests::require_haproxy()?;
        let listen = block.addr(1);
        let prometheus = block.addr(1);
        let node_peers = [block.addr(4), block.addr(5)];
        let node_http = [block.addr(4), block.addr(5)];
        let top_addrs = [block.addr(2), block.addr(3)];
        let mut tops = None;
        if opts.tops {
            let mut daemons = Vec::new();
            for (i, a) in top_addrs.iter().enumerate() {
                let cfg = format!(
                    "global\n    stats socket {{dir}}/api.sock\n\n\
                     aggregations top\n    peer top{n} {a} local\n    peer stktagg {listen} down\n    \
                     from .aggr to .l2\n",
                    n = i + 1
                );
                daemons.push(Daemon::start(&format!("{label}_top{}", i + 1), &cfg, &[])?);
            }
            tops = Some(Tops { daemons });
        }
        let mut cfg = format!(
            "global\n    stats socket {{dir}}/api.sock level admin\n    prometheus {prometheus}\n    \
             log-level debug\n\naggregations {AGG_SECTION}\n    peer stktagg {listen} local\n    \
             peer hap1 {}\n    peer hap2 {}\n    from .uncombined to .aggr\n",
            node_peers[0], node_peers[1]
        );
        if opts.rogue {
            cfg.push_str("    peer rogue\n");
        }
        if opts.tops {
            cfg.push_str(&format!(
                "    peer top1 {} up group 1\n    peer top2 {} up group 1\n    forward .l2\n",
                top_addrs[0], top_addrs[1]
            ));
        }
        let agg = Daemon::start(&format!("{label}_agg"), &cfg, &[])?;
        let mut nodes = Vec::new();
        for n in 0..2 {
            let name = format!("hap{}", n + 1);
            let mut hc = HaproxyConfig::new()
                .local_peer(&name)
                .peers_section(SECTION)
                .peer(&name, node_peers[n])
                .peer("stktagg", listen)
                .table(&format!("req.uncombined {REQ_DECL}"))
                .table(&format!("req.aggr {REQ_DECL}"))
                .section(&format!(
                    "frontend fe\n    bind {}\n    http-request track-sc0 src table {SECTION}/req.uncombined\n    \
                     http-request sc-inc-gpc0(0)\n    http-request sc-set-gpt0(0) {}\n    \
                     http-request return status 200 content-type text/plain string ok\n",
                    node_http[n],
                    n + 1
                ));
            if opts.tops {
                hc = hc.table(&format!("req.l2 {REQ_DECL}"));
            }
            let proc = Haproxy::start(&hc, &format!("{label}_{name}"))?;
            nodes.push(Node {
                name,
                http: node_http[n],
                peer: node_peers[n],
                proc,
            });
        }
        let fleet = Fleet {
            agg,
            nodes,
            prometheus,
            listen,
            tops,
            block,
        };
        let want = if opts.tops { 4 } else { 2 };
        fleet.wait_established(want)?;
        Ok(fleet)
    }

    /// Waits until `n` of the aggregator's sessions are established.
    pub fn wait_established(&self, n: usize) -> Result<()> {
        eventually("peer sessions established", CONVERGE, || {
            let peers = self.agg.api.command("show peers")?;
            let up = peers.matches("state=ESTA").count();
            if up >= n {
                Ok(())
            } else {
                Err(HarnessError::Unexpected(format!("{up} up:\n{peers}")))
            }
        })
    }

    /// `count` requests from client `c` into node `n`, each answered 200.
    pub fn hit(&self, n: usize, c: usize, count: usize) -> Result<()> {
        for _ in 0..count {
            let st = http_get(self.block.client(c), self.nodes[n].http, &[])?;
            if st != 200 {
                return Err(HarnessError::Unexpected(format!("node {n} answered {st}")));
            }
        }
        Ok(())
    }

    /// The node's CLI name of a peers-section table.
    pub fn node_table(table: &str) -> String {
        format!("{SECTION}/{table}")
    }

    /// Our CLI name of an output or relayed table.
    pub fn our_table(table: &str) -> String {
        format!("{AGG_SECTION}/{table}")
    }
}

/// `GET <path>` over plain HTTP/1.0; returns the status code and the body.
pub fn http_fetch(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let io = |what: &str, e| HarnessError::io(format!("{what} {addr}{path}"), e);
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))
        .map_err(|e| io("connecting to", e))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| io("setting a timeout on", e))?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: ops\r\n\r\n").as_bytes())
        .map_err(|e| io("writing to", e))?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).map_err(|e| io("reading from", e))?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| HarnessError::Unexpected(format!("no header end in `{text}`")))?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| HarnessError::Unexpected(format!("no status in `{head}`")))?;
    Ok((code, body.to_owned()))
}

/// One sample of the Prometheus text exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The series name, e.g. `stktagg_peer_up` or `stktagg_propagation_seconds_count`.
    pub name: String,
    /// The labels in order.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: f64,
}

/// A parsed scrape.
#[derive(Debug, Clone)]
pub struct Scrape {
    /// The raw text.
    pub text: String,
    /// Every sample.
    pub samples: Vec<Sample>,
}

impl Scrape {
    /// Scrapes `http://<addr>/metrics`.
    pub fn fetch(addr: SocketAddr) -> Result<Scrape> {
        let (code, body) = http_fetch(addr, "/metrics")?;
        if code != 200 {
            return Err(HarnessError::Unexpected(format!(
                "/metrics answered {code}: {body}"
            )));
        }
        Ok(Scrape::parse(&body))
    }

    /// Parses the text exposition (comments skipped; label values without escapes,
    /// which is all ours carry: names from the configuration).
    pub fn parse(text: &str) -> Scrape {
        let mut samples = Vec::new();
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => {
                    let inner = rest.trim_end_matches('}');
                    let labels = inner
                        .split("\",")
                        .filter_map(|kv| {
                            let (k, v) = kv.split_once('=')?;
                            Some((k.to_owned(), v.trim_matches('"').to_owned()))
                        })
                        .collect();
                    (n.to_owned(), labels)
                }
                None => (series.to_owned(), Vec::new()),
            };
            samples.push(Sample {
                name,
                labels,
                value,
            });
        }
        Scrape {
            text: text.to_owned(),
            samples,
        }
    }

    /// The value of the sample called `name` whose labels include all of `labels`.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|s| s.value)
    }

    /// Whether the exposition declares `name` with `# TYPE name <kind>`.
    pub fn has_type(&self, name: &str, kind: &str) -> bool {
        self.text
            .lines()
            .any(|l| l == format!("# TYPE {name} {kind}"))
    }
}

/// The block of peer `name` in a `show peers` answer (HAProxy's layout: a line
/// `  0x…: id=<name>(…) …`, then lines indented by 8), its lines joined by spaces.
pub fn peer_block(show_peers: &str, name: &str) -> Option<String> {
    let head = format!(": id={name}(");
    let mut lines = show_peers
        .lines()
        .skip_while(|l| !(l.starts_with("  0x") && l.contains(&head)));
    let first = lines.next()?.trim().to_owned();
    let rest: Vec<&str> = lines
        .take_while(|l| l.starts_with("        "))
        .map(str::trim)
        .collect();
    Some(
        std::iter::once(first.as_str())
            .chain(rest)
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// An interactive connection to a stats socket (for `prompt` mode and `;` lines).
#[derive(Debug)]
pub struct CliConn {
    s: UnixStream,
}

impl CliConn {
    /// Connects to `path`; every read and write is bounded by 5 s.
    pub fn connect(path: &Path) -> Result<CliConn> {
        let s = UnixStream::connect(path)
            .map_err(|e| HarnessError::io(format!("connecting to {}", path.display()), e))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .and_then(|()| s.set_write_timeout(Some(Duration::from_secs(5))))
            .map_err(|e| HarnessError::io("setting timeouts", e))?;
        Ok(CliConn { s })
    }

    /// Writes `line` and a LF.
    pub fn send(&mut self, line: &str) -> Result<()> {
        self.s
            .write_all(format!("{line}\n").as_bytes())
            .map_err(|e| HarnessError::io("writing a command", e))
    }

    /// Reads until the text read ends with `end`, or EOF; fails after 5 s.
    pub fn read_until(&mut self, end: &str) -> Result<String> {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            if String::from_utf8_lossy(&out).ends_with(end) {
                return Ok(String::from_utf8_lossy(&out).into_owned());
            }
            let n = self
                .s
                .read(&mut buf)
                .map_err(|e| HarnessError::io(format!("reading up to {end:?}"), e))?;
            if n == 0 {
                return Err(HarnessError::Closed {
                    context: format!(
                        "waiting for {end:?}, got {:?}",
                        String::from_utf8_lossy(&out)
                    ),
                });
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    /// Reads to EOF (bounded by the read timeout).
    pub fn read_to_end(&mut self) -> Result<String> {
        let mut out = Vec::new();
        self.s
            .read_to_end(&mut out)
            .map_err(|e| HarnessError::io("reading to EOF", e))?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}

/// Runs `stktagg` with `args` to completion (bounded: 20 s); returns the exit code
/// (`None` if killed by a signal), stdout and stderr.
pub fn run_bin(args: &[&str]) -> (Option<i32>, String, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if let Some(_st) = child.try_wait().unwrap() {
            break;
        }
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}
