//! One scenario run: its processes, its traffic, its progress lines and results.

use super::fleet::{self, Fleet};
use super::observe::{self, Monitor, PeerLine, Point, Tier};
use super::topology::{Level, Topology};
use super::traffic::{self, Background, Load, SharedTally, Tally};
use anyhow::{Context, Result, bail};
use std::path::Path;
use std::time::{Duration, Instant};

/// How long sums may take to converge after traffic stops.
pub const CONVERGE_TIMEOUT: Duration = Duration::from_secs(20);
/// How long every session may take to come up.
pub const SESSIONS_TIMEOUT: Duration = Duration::from_secs(20);
/// The pause between two rounds of polling.
pub const POLL: Duration = Duration::from_millis(20);
/// Bound on the time one traffic wave may take.
const WAVE_DEADLINE: Duration = Duration::from_secs(30);

/// What a scenario measured.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    /// Convergence checks: what, and how long it took to become right.
    pub checks: Vec<(String, Duration)>,
    /// Other measurements and observations, as label and value.
    pub measures: Vec<(String, String)>,
    /// Requests sent.
    pub requests: u64,
}

/// The state of one scenario run.
#[derive(Debug)]
pub struct Ctx {
    /// The scenario name.
    pub name: &'static str,
    /// The topology.
    pub topo: Topology,
    /// The processes.
    pub fleet: Fleet,
    /// What the driver sent.
    pub tally: SharedTally,
    /// Results so far.
    pub outcome: Outcome,
    t0: Instant,
}

impl Ctx {
    /// Prepares a run of `topo` in `dir` (created fresh).
    pub fn new(
        name: &'static str,
        topo: Topology,
        dir: &Path,
        daemon_bin: &Path,
        haproxy_bin: &str,
    ) -> Result<Ctx> {
        fleet::fresh_dir(dir)?;
        fleet::check_addrs_free(&topo.listen_addrs()?)?;
        let fleet = Fleet::prepare(&topo, dir, daemon_bin, haproxy_bin)?;
        Ok(Ctx {
            name,
            topo,
            fleet,
            tally: SharedTally::default(),
            outcome: Outcome::default(),
            t0: Instant::now(),
        })
    }

    /// Prints one progress line (and keeps it in the run's log).
    pub fn step(&self, msg: impl AsRef<str>) {
        let line = format!(
            "[{:>6.2}s] {:<20} {}",
            self.t0.elapsed().as_secs_f64(),
            self.name,
            msg.as_ref()
        );
        println!("{line}");
        fleet::note(self.fleet.dir(), &line);
    }

    /// Records a measurement.
    pub fn measure(&mut self, label: impl Into<String>, value: impl Into<String>) {
        let (label, value) = (label.into(), value.into());
        self.step(format!("measured: {label}: {value}"));
        self.outcome.measures.push((label, value));
    }

    /// Starts every process: aggregators in the order listed, then the nodes; then
    /// waits until every session is up.
    pub fn start_all(&mut self) -> Result<()> {
        let names: Vec<String> = self
            .topo
            .aggregators
            .iter()
            .map(|a| a.name.clone())
            .chain(self.topo.nodes.iter().map(|n| n.name.clone()))
            .collect();
        for n in &names {
            self.fleet.start(n)?;
        }
        self.step(format!("started {}", names.join(" ")));
        let took = self.wait_sessions(SESSIONS_TIMEOUT)?;
        self.step(format!("every peer session established ({took:.2?})"));
        self.outcome
            .checks
            .push(("sessions up after start".to_owned(), took));
        Ok(())
    }

    /// `show peers` of daemon `name`.
    pub fn peers(&self, name: &str) -> Result<Vec<PeerLine>> {
        let text = self
            .fleet
            .api(name)?
            .command("show peers")
            .with_context(|| format!("show peers on {name}"))?;
        Ok(observe::parse_peers(&text))
    }

    /// The active member of the `up` group on intermediate `name`, if any.
    pub fn active_up(&self, name: &str) -> Result<Option<String>> {
        Ok(self
            .peers(name)?
            .into_iter()
            .find(|p| p.active == Some(true))
            .map(|p| p.name))
    }

    /// Waits until, on every running daemon, every peer whose process runs has an
    /// established session, and every intermediate relays some `up` member.
    pub fn wait_sessions(&mut self, timeout: Duration) -> Result<Duration> {
        let start = Instant::now();
        loop {
            self.fleet.check_all_alive()?;
            let missing = self.sessions_missing();
            match missing {
                Ok(m) if m.is_empty() => return Ok(start.elapsed()),
                Ok(m) if start.elapsed() >= timeout => {
                    bail!("sessions still not up after {timeout:?}: {}", m.join(", "))
                }
                Err(e) if start.elapsed() >= timeout => return Err(e),
                _ => std::thread::sleep(POLL * 5),
            }
        }
    }

    fn sessions_missing(&self) -> Result<Vec<String>> {
        let mut missing = Vec::new();
        for a in &self.topo.aggregators {
            if !self.fleet.running(&a.name) {
                continue;
            }
            let peers = self.peers(&a.name)?;
            for p in &peers {
                if self.fleet.running(&p.name) && p.state != "ESTA" {
                    missing.push(format!("{}->{} {}", a.name, p.name, p.state));
                }
            }
            // The daemon relays the first member (in config order, which is the
            // order `show peers` lists) that is up; this is the steady state.
            let ups: Vec<&PeerLine> = peers.iter().filter(|p| p.active.is_some()).collect();
            let preferred = ups.iter().find(|p| self.fleet.running(&p.name));
            if let Some(pref) = preferred
                && pref.active != Some(true)
            {
                missing.push(format!(
                    "{}: {} is not the active up member yet",
                    a.name, pref.name
                ));
            }
        }
        Ok(missing)
    }

    /// Every observation point of the topology.
    pub fn points(&self) -> Vec<Point> {
        observe::all_points(&self.topo)
    }

    /// Points of `tier` only.
    pub fn points_of(&self, tier: Tier) -> Vec<Point> {
        self.points()
            .into_iter()
            .filter(|p| p.tier == tier)
            .collect()
    }

    /// (name, ip) of the given nodes.
    pub fn nodes(&self, names: &[&str]) -> Result<Vec<(String, String)>> {
        names
            .iter()
            .map(|n| {
                self.topo
                    .node(n)
                    .map(|node| (node.name.clone(), node.ip.clone()))
                    .with_context(|| format!("no node `{n}`"))
            })
            .collect()
    }

    /// Sends a wave of traffic and waits for it to be answered.
    pub fn send(
        &mut self,
        nodes: &[&str],
        clients: std::ops::RangeInclusive<u32>,
        rounds: u32,
    ) -> Result<u64> {
        let load = Load {
            nodes: self.nodes(nodes)?,
            clients: clients.clone().collect(),
            rounds,
        };
        let sent = load.run(&self.tally, None, Instant::now() + WAVE_DEADLINE)?;
        self.outcome.requests += sent;
        self.step(format!(
            "sent {sent} requests to {} for clients {}..={} (both families)",
            nodes.join(","),
            clients.start(),
            clients.end()
        ));
        Ok(sent)
    }

    /// Starts traffic in the background over the given nodes and clients, bounded by
    /// `max_time` and 20 000 requests.
    pub fn background(
        &self,
        nodes: &[&str],
        clients: std::ops::RangeInclusive<u32>,
        max_time: Duration,
    ) -> Result<Background> {
        let load = Load {
            nodes: self.nodes(nodes)?,
            clients: clients.collect(),
            rounds: 1,
        };
        Ok(Background::start(
            load,
            self.tally.clone(),
            Duration::from_millis(2),
            20_000,
            max_time,
        ))
    }

    /// A snapshot of the tally.
    pub fn tally(&self) -> Tally {
        traffic::lock(&self.tally).clone()
    }

    /// Polls until every point of a running process is exactly right (traffic must
    /// be paused), and records how long that took under `what`.
    pub fn converge(&mut self, what: &str) -> Result<Duration> {
        let points = self.points();
        self.converge_on(what, &points)
    }

    /// `converge`, over `points` only.
    pub fn converge_on(&mut self, what: &str, points: &[Point]) -> Result<Duration> {
        let start = Instant::now();
        let points = points.to_vec();
        let tally = self.tally();
        if !tally.settled() {
            bail!("converge called with requests in flight");
        }
        let mut last = Vec::new();
        let mut rounds = 0u32;
        while start.elapsed() < CONVERGE_TIMEOUT {
            rounds += 1;
            self.fleet.check_all_alive()?;
            match observe::snapshot(&self.fleet, &points) {
                Ok(snap) => {
                    last = observe::exact(&snap, &points, &tally);
                    if last.is_empty() {
                        let took = start.elapsed();
                        let tables = snap.len();
                        self.step(format!(
                            "converged: {what} ({took:.2?}, {tables} tables right)"
                        ));
                        self.outcome.checks.push((what.to_owned(), took));
                        return Ok(took);
                    }
                }
                Err(e) => last = vec![e],
            }
            std::thread::sleep(POLL * 2);
        }
        let n = last.len();
        last.truncate(12);
        bail!(
            "{what}: not right after {CONVERGE_TIMEOUT:?} ({rounds} rounds); {n} mismatches, first ones:\n  {}",
            last.join("\n  ")
        )
    }

    /// What is wrong right now, in a few lines, for an error message.
    pub fn mismatches(&self) -> String {
        let points = self.points();
        let tally = self.tally();
        match observe::snapshot(&self.fleet, &points) {
            Ok(snap) => {
                let mut bad = observe::exact(&snap, &points, &tally);
                let n = bad.len();
                bad.truncate(12);
                format!("{n} mismatches now, first ones:\n  {}", bad.join("\n  "))
            }
            Err(e) => format!("tables unreadable now: {e}"),
        }
    }

    /// Runs `monitor` round after round until `done` says so (it is given the
    /// monitor and the time since the monitor started), failing after `timeout` or
    /// at the first violation.
    pub fn watch(
        &mut self,
        monitor: &mut Monitor,
        timeout: Duration,
        mut done: impl FnMut(&mut Ctx, &Monitor, Duration) -> Result<bool>,
    ) -> Result<Duration> {
        let start = Instant::now();
        loop {
            let tally = self.tally.clone();
            monitor.round(&self.fleet, &|| traffic::lock(&tally).clone());
            if let Some(v) = monitor.violations.first() {
                bail!(
                    "{} violation(s) while watching; first: {v}",
                    monitor.violations.len()
                );
            }
            let t = start.elapsed();
            if done(self, monitor, t)? {
                return Ok(t);
            }
            if t >= timeout {
                bail!(
                    "still not done after {timeout:?} of watching ({} rounds, all right once: {:?}); {}",
                    monitor.rounds,
                    monitor.all_right_at,
                    self.mismatches()
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// Records a monitor's totals. Dips (a right value read lower later) only mean
    /// something when the traffic was paused while watching.
    pub fn monitor_summary(&mut self, label: &str, m: &Monitor, paused: bool) {
        let dips = if paused {
            format!(", {} dips below a right value", m.dips)
        } else {
            String::new()
        };
        self.measure(
            format!("{label}: readings"),
            format!(
                "{} tables in {} rounds, {} violations{dips}",
                m.readings,
                m.rounds,
                m.violations.len(),
            ),
        );
        if let (true, Some(d)) = (paused, &m.first_dip) {
            self.measure(format!("{label}: first dip"), d.clone());
        }
    }

    /// The intermediates.
    pub fn intermediates(&self) -> Vec<String> {
        self.topo
            .at_level(Level::Intermediate)
            .map(|a| a.name.clone())
            .collect()
    }
}
