//! A fleet on loopback: one `stktagg` subprocess and three HAProxy 2.6 nodes.
//!
//! Every test gets its own block of 16 loopback addresses (`127.0.0.<16·block + i>`):
//! `i = 1` is the aggregator, `i = 2..=4` are the nodes `hap1..hap3` (peers port and
//! HTTP frontend on the node's own address), and `i = 8..=15` are client source
//! addresses, so that each client is its own `src` key. Ports come from the
//! harness's `free_addr`, so nothing collides when tests run in parallel.
//!
//! The aggregator runs the real `stktagg` binary with `-f`, its configuration, log and
//! stats socket in a scratch directory; it is stopped by PID (SIGTERM, SIGKILL for a
//! hard restart) and the tail of its log is printed when a test panics.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use stktagg_tests::ports::{free_addr, remove_dir, scratch_dir};
use stktagg_tests::show_table::parse_table_dump;
use stktagg_tests::{Entry, Haproxy, HaproxyConfig, HarnessError, Result, RuntimeApi, eventually};

/// The peers section on the nodes; peers-section tables are `cl/<table>` in their CLI.
pub const SECTION: &str = "cl";
/// Our `aggregations` section; our CLI shows peers-section outputs as `ag/<table>`.
pub const AGG_SECTION: &str = "ag";
/// Our peer name, as the nodes declare it.
pub const AGG_PEER: &str = "stktagg";
/// How long a fleet may take to converge after a change.
pub const CONVERGE: Duration = Duration::from_secs(5);
/// How long the aggregator may take to answer on its stats socket after a start.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A test's block of loopback addresses.
#[derive(Debug, Clone, Copy)]
pub struct Block(pub u8);

impl Block {
    /// `127.0.0.<16·block + i>`.
    pub fn ip(self, i: u8) -> Ipv4Addr {
        Ipv4Addr::new(127, 0, 0, self.0 * 16 + i)
    }

    /// The aggregator's address.
    pub fn agg(self) -> Ipv4Addr {
        self.ip(1)
    }

    /// Node `n`'s address (`n` from 0).
    pub fn node(self, n: usize) -> Ipv4Addr {
        self.ip(2 + n as u8)
    }

    /// Client `c`'s source address (`c` from 0 to 7); also its key in `src` tables.
    pub fn client(self, c: usize) -> Ipv4Addr {
        self.ip(8 + c as u8)
    }
}

/// The same port on another loopback address: `free_addr` probes 127.0.0.1 only, and
/// a port free there is free on the whole (otherwise unused) test block.
fn on(ip: Ipv4Addr) -> Result<SocketAddr> {
    Ok(SocketAddr::from((ip, free_addr()?.port())))
}

/// What a node needs to know to render its own sections.
#[derive(Debug, Clone, Copy)]
pub struct NodeCtx {
    /// 0-based node index (`hap1` is 0).
    pub index: usize,
    /// Where its HTTP frontend listens.
    pub http: SocketAddr,
}

/// The shape of a fleet.
pub struct FleetSpec<'a> {
    /// Names the scratch directories.
    pub label: &'a str,
    /// The test's address block.
    pub block: Block,
    /// `table` lines of the nodes' peers section, without the keyword.
    pub tables: Vec<String>,
    /// Frontends and backends of node `ctx.index`, with their header lines.
    pub body: Box<dyn Fn(&NodeCtx) -> String + 'a>,
    /// Extra lines for our `aggregations` section (e.g. `no option teach-back`).
    pub agg_lines: Vec<String>,
}

/// The two `table` lines `<base>.uncombined` and `<base>.aggr` with one declaration:
/// the output table must match its input exactly (SPEC §3).
pub fn table_pair(base: &str, decl: &str) -> Vec<String> {
    vec![
        format!("{base}.uncombined {decl}"),
        format!("{base}.aggr {decl}"),
    ]
}

/// A frontend that answers 200 to everything, with `rules` before the answer.
pub fn frontend(ctx: &NodeCtx, rules: &[String]) -> String {
    let mut s = format!("frontend fe\n    bind {}\n", ctx.http);
    for r in rules {
        s.push_str("    ");
        s.push_str(r);
        s.push('\n');
    }
    s.push_str("    http-request return status 200 content-type text/plain string ok\n");
    s
}

/// The `stktagg` subprocess.
#[derive(Debug)]
pub struct Aggregator {
    child: Option<Child>,
    dir: PathBuf,
    cfg: PathBuf,
    log: PathBuf,
    api: RuntimeApi,
}

impl Aggregator {
    /// Starts `stktagg` alone on `config`, in a scratch directory named after
    /// `label`; `{dir}` in the text is that directory (for the stats socket, which
    /// must be `{dir}/agg.sock`).
    pub fn start_alone(label: &str, config: &str) -> Result<Aggregator> {
        let dir = scratch_dir(label)?;
        let config = config.replace("{dir}", &dir.display().to_string());
        Aggregator::start(dir, &config)
    }

    /// Writes `config` into `dir` and starts `stktagg -f` on it.
    fn start(dir: PathBuf, config: &str) -> Result<Aggregator> {
        let cfg = dir.join("stktagg.cfg");
        std::fs::write(&cfg, config)
            .map_err(|e| HarnessError::io(format!("writing {}", cfg.display()), e))?;
        let mut a = Aggregator {
            child: None,
            log: dir.join("stktagg.log"),
            api: RuntimeApi::new(dir.join("agg.sock")),
            dir,
            cfg,
        };
        a.spawn()?;
        Ok(a)
    }

    /// Starts the process (again) on the same configuration and waits until its
    /// runtime API answers. The log is appended to, so a restart keeps the history.
    pub fn spawn(&mut self) -> Result<()> {
        let out = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| HarnessError::io(format!("opening {}", self.log.display()), e))?;
        let err = out
            .try_clone()
            .map_err(|e| HarnessError::io("duplicating the log file handle", e))?;
        let child = Command::new(env!("CARGO_BIN_EXE_stktagg"))
            .arg("-f")
            .arg(&self.cfg)
            .env("NO_COLOR", "1")
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| HarnessError::io("spawning stktagg", e))?;
        self.child = Some(child);
        let start = Instant::now();
        let mut last = String::from("not tried");
        while start.elapsed() < START_TIMEOUT {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(st)) = c.try_wait()
            {
                self.child = None;
                return Err(HarnessError::Unexpected(format!(
                    "stktagg exited at start ({st}); log tail:\n{}",
                    self.log_tail(30)
                )));
            }
            match self.api.command("show info") {
                Ok(v) if v.contains("Name: stktagg") => return Ok(()),
                Ok(v) => last = v,
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(HarnessError::Timeout {
            what: format!("stktagg's stats socket; log tail:\n{}", self.log_tail(30)),
            waited: start.elapsed(),
            last,
        })
    }

    /// Our runtime API.
    pub fn api(&self) -> &RuntimeApi {
        &self.api
    }

    /// SIGKILL, as a crash would: nothing is flushed, no session is closed cleanly.
    pub fn kill_hard(&mut self) -> Result<()> {
        if let Some(mut c) = self.child.take() {
            c.kill()
                .map_err(|e| HarnessError::io("killing stktagg", e))?;
            c.wait()
                .map_err(|e| HarnessError::io("waiting for stktagg", e))?;
        }
        Ok(())
    }

    /// SIGTERM, then SIGKILL if it lingers past 3 s.
    pub fn stop(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        // Only this child's PID is signalled.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(3) {
            if let Ok(Some(_)) = c.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
    }

    /// The last `n` lines of its log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = std::fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Aggregator {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            let cfg = std::fs::read_to_string(&self.cfg).unwrap_or_default();
            eprintln!(
                "--- stktagg log ({}), last lines ---\n{}\n--- stktagg config ---\n{cfg}",
                self.log.display(),
                self.log_tail(60)
            );
        } else {
            remove_dir(&self.dir);
        }
    }
}

/// One HAProxy node: its configuration, kept so that it can be restarted fresh.
#[derive(Debug)]
pub struct Node {
    /// `hap1`, `hap2`, `hap3`.
    pub name: String,
    /// Where its HTTP frontend listens.
    pub http: SocketAddr,
    config: HaproxyConfig,
    label: String,
    proc: Option<Haproxy>,
}

impl Node {
    /// Its runtime API; fails while the node is stopped.
    pub fn api(&self) -> Result<&RuntimeApi> {
        self.proc
            .as_ref()
            .map(Haproxy::api)
            .ok_or_else(|| HarnessError::Unexpected(format!("{} is stopped", self.name)))
    }

    /// Kills it with SIGKILL: its tables are gone with it.
    pub fn kill_hard(&mut self) -> Result<()> {
        if let Some(mut h) = self.proc.take() {
            if let Some(pid) = h.pid() {
                // Only this child's PID is signalled; `stop` then reaps it.
                let _ = Command::new("kill")
                    .arg("-KILL")
                    .arg(pid.to_string())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
            h.stop()?;
        }
        Ok(())
    }

    /// Starts a fresh process with the same configuration (empty tables).
    pub fn start(&mut self) -> Result<()> {
        self.proc = Some(Haproxy::start(&self.config, &self.label)?);
        Ok(())
    }
}

/// The aggregator and its three nodes.
#[derive(Debug)]
pub struct Fleet {
    /// The `stktagg` process.
    pub agg: Aggregator,
    /// `hap1..hap3`.
    pub nodes: Vec<Node>,
    /// The test's address block.
    pub block: Block,
}

impl Fleet {
    /// Starts the aggregator, then the nodes, and waits until our runtime API shows
    /// every peer session established.
    pub fn start(spec: FleetSpec<'_>) -> Result<Fleet> {
        stktagg_tests::require_haproxy()?;
        let b = spec.block;
        let listen = on(b.agg())?;
        let mut peer_addrs = Vec::new();
        let mut https = Vec::new();
        for n in 0..3 {
            peer_addrs.push(on(b.node(n))?);
            https.push(on(b.node(n))?);
        }
        let mut agg_cfg = format!(
            "global\n    stats socket {{dir}}/agg.sock mode 600 level admin\n    log-level debug\n\n\
             aggregations {AGG_SECTION}\n    peer {AGG_PEER} {listen} local\n"
        );
        for (n, a) in peer_addrs.iter().enumerate() {
            agg_cfg.push_str(&format!("    peer hap{} {a}\n", n + 1));
        }
        agg_cfg.push_str("    from .uncombined to .aggr\n");
        for l in &spec.agg_lines {
            agg_cfg.push_str(&format!("    {l}\n"));
        }
        let dir = scratch_dir(&format!("{}_agg", spec.label))?;
        let agg_cfg = agg_cfg.replace("{dir}", &dir.display().to_string());
        let agg = Aggregator::start(dir, &agg_cfg)?;
        let mut nodes = Vec::new();
        for n in 0..3 {
            let name = format!("hap{}", n + 1);
            let ctx = NodeCtx {
                index: n,
                http: https[n],
            };
            let mut cfg = HaproxyConfig::new()
                .local_peer(&name)
                .peers_section(SECTION)
                .peer(&name, peer_addrs[n])
                .peer(AGG_PEER, listen)
                .section(&(spec.body)(&ctx));
            for t in &spec.tables {
                cfg = cfg.table(t);
            }
            let mut node = Node {
                name: name.clone(),
                http: https[n],
                config: cfg,
                label: format!("{}_{name}", spec.label),
                proc: None,
            };
            node.start()?;
            nodes.push(node);
        }
        let fleet = Fleet {
            agg,
            nodes,
            block: b,
        };
        fleet.wait_sessions(3)?;
        Ok(fleet)
    }

    /// Waits until `n` of our peer sessions are established.
    pub fn wait_sessions(&self, n: usize) -> Result<()> {
        eventually("every peer session established", CONVERGE, || {
            let peers = self.agg.api().command("show peers")?;
            let up = peers.matches("state=ESTA").count();
            if up >= n {
                Ok(())
            } else {
                Err(HarnessError::Unexpected(format!("{up} up:\n{peers}")))
            }
        })
    }

    /// One HTTP/1.0 request from client `c` into node `n`; returns the status code.
    pub fn get(&self, n: usize, c: usize) -> Result<u16> {
        http_get(self.block.client(c), self.nodes[n].http, &[])
    }

    /// `count` requests from client `c` into node `n`, each of which must get a 200.
    pub fn hit(&self, n: usize, c: usize, count: usize) -> Result<()> {
        for _ in 0..count {
            let st = self.get(n, c)?;
            if st != 200 {
                return Err(HarnessError::Unexpected(format!(
                    "{} answered {st}",
                    self.nodes[n].name
                )));
            }
        }
        Ok(())
    }

    /// Node `n`'s entry for `key` in `table` (a CLI name), if it has one.
    pub fn node_entry(&self, n: usize, table: &str, key: &str) -> Result<Option<Entry>> {
        entry(self.nodes[n].api()?, table, key)
    }

    /// Our entry for `key` in `table` (a name in our CLI, e.g. `ag/req.aggr`).
    pub fn our_entry(&self, table: &str, key: &str) -> Result<Option<Entry>> {
        entry(self.agg.api(), table, key)
    }

    /// Reads `input` and `output` (CLI names) for `key` on every node, outputs
    /// first: the inputs' counters only grow, so an output read before them can never
    /// legitimately exceed their sum.
    pub fn snapshot(&self, input: &str, output: &str, key: &str) -> Result<Snapshot> {
        let outputs = (0..self.nodes.len())
            .map(|n| self.node_entry(n, output, key))
            .collect::<Result<Vec<_>>>()?;
        let inputs = (0..self.nodes.len())
            .map(|n| self.node_entry(n, input, key))
            .collect::<Result<Vec<_>>>()?;
        Ok(Snapshot { inputs, outputs })
    }
}

/// Every node's input and output entry for one key.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// `<base>.uncombined` per node.
    pub inputs: Vec<Option<Entry>>,
    /// `<base>.aggr` per node.
    pub outputs: Vec<Option<Entry>>,
}

impl Snapshot {
    /// The field in each node's input (0 when the node has no entry).
    pub fn input_values(&self, field: &str) -> Vec<i128> {
        values(&self.inputs, field)
    }

    /// The field in each node's output (0 when the node has no entry).
    pub fn output_values(&self, field: &str) -> Vec<i128> {
        values(&self.outputs, field)
    }

    /// The sum of the field over the nodes' inputs.
    pub fn input_sum(&self, field: &str) -> i128 {
        self.input_values(field).iter().sum()
    }

    /// Ok when every node's output shows `want` for `field`; else says who differs.
    pub fn outputs_equal(&self, field: &str, want: i128) -> std::result::Result<(), String> {
        let got = self.output_values(field);
        if self.outputs.iter().all(Option::is_some) && got.iter().all(|v| *v == want) {
            Ok(())
        } else {
            Err(format!(
                "{field}: want {want} on every node's output, got {got:?} (inputs {:?})",
                self.input_values(field)
            ))
        }
    }
}

fn values(entries: &[Option<Entry>], field: &str) -> Vec<i128> {
    entries
        .iter()
        .map(|e| e.as_ref().and_then(|e| e.num(field)).unwrap_or(0))
        .collect()
}

/// `key`'s entry in `table`, read with a full `show table <table>` (2.6's `key`
/// filter answers nothing at all for a missing key, which a parser cannot tell from
/// a dead socket).
pub fn entry(api: &RuntimeApi, table: &str, key: &str) -> Result<Option<Entry>> {
    let text = api.command(&format!("show table {table}"))?;
    if !text.starts_with("# table:") {
        return Err(HarnessError::Cli {
            command: format!("show table {table}"),
            answer: text.trim().to_owned(),
        });
    }
    Ok(parse_table_dump(&text)?.entry(key).cloned())
}

pub use stktagg_tests::http::{connect_from, http_get};

/// The largest difference allowed between a rate read from a node's output table and
/// the sum of the nodes' own rates read at about the same time (one snapshot).
///
/// stktagg publishes a summed rate `S`, `C` of it from the nodes' current periods,
/// as `{age 0, curr C, prev S−C}`, which a node reads back as exactly `S`, then
/// `C + ⌊(S−C)·(P − t)/P⌋` `t` ms after receipt (`stktagg_store::rules`), and
/// re-publishes it when that reading drifts from the true sum, checked every 250 ms
/// (for tables of up to 2048 keys with a non-zero rate, as here). So within a
/// snapshot the two readings differ by at most:
/// - 1 for the floor of the published reading, plus 1 for the floors of the three
///   nodes' own readings, which the aggregator sums unfloored no more than they are;
/// - `S·δ/P` for the decay of either side during `δ`, the time since the last
///   re-publication plus the time between reading the output and the inputs: at most
///   the 250 ms refresh tick, propagation and a few CLI round trips. We allow
///   δ = 750 ms.
pub fn rate_tolerance(sum: i128, period_ms: i128) -> i128 {
    // Rounded up: the bound must not shrink below what it states.
    2 + (sum * 750 + period_ms - 1) / period_ms
}
