//! The world of one run: processes, network, clock and faults.
//!
//! Time advances from event to event (a delivery, a timer, a traffic tick, a
//! fault, a check), never by the wall clock. At each instant the faults due are
//! played, the live processes take their step in a shuffled order, and the
//! invariants are checked (`oracle`); once the last fault is over, traffic stops
//! and the run ends when every value has been exact for [`STABLE_MS`], or fails
//! [`CONVERGE_BOUND_MS`] after it.

use crate::aggregator::{Aggregator, Tunables};
use crate::endpoint::{Cx, Trace, earliest};
use crate::faults::{Action, Fault};
use crate::net::{Net, fnv};
use crate::node::{Counters, FAMILIES, Node};
use crate::rng::Rng;
use crate::store::SimStore;
use crate::topology::{Spec, Topology};
use std::net::IpAddr;
use std::sync::Arc;
use stktagg_topology::SectionPlan;

/// The simulated clock at the start of a run (not 0: a few places treat 0 as
/// "never").
pub const START_MS: u64 = 1_000;
/// Keys per family of tables: small enough that a session's batch (256 entries)
/// always holds every pending key (see `store`).
pub const KEYS_PER_FAMILY: usize = 8;
/// Traffic runs at least this long, and until the last fault is over.
pub const MIN_TRAFFIC_MS: u64 = 8_000;
/// The stated bound: every value exact within this long after the last fault is
/// over (and traffic stopped).
pub const CONVERGE_BOUND_MS: u64 = 30_000;
/// Converged values must stay so this long.
pub const STABLE_MS: u64 = 3_000;

/// Period of the checks that read every aggregator's tables.
const CHECK_MS: u64 = 100;

/// A process of the world.
#[derive(Debug)]
pub(crate) enum Proc {
    Agg(Box<AggProc>),
    Node(Box<Node>),
}

/// An aggregator across its restarts.
#[derive(Debug)]
pub(crate) struct AggProc {
    pub(crate) name: String,
    pub(crate) plan: SectionPlan,
    pub(crate) tun: Tunables,
    pub(crate) running: Option<Aggregator>,
    /// The store kept by a kill that keeps the state.
    pub(crate) kept: Option<Arc<SimStore>>,
}

/// What a finished run measured.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Time from the end of the last fault (traffic stopped) to exact values.
    pub converged_ms: u64,
    /// Simulated time of the whole run.
    pub sim_ms: u64,
    /// Instants simulated.
    pub steps: u64,
    /// Bytes delivered.
    pub bytes: u64,
    /// The most changes pending for one session.
    pub max_pending: usize,
    /// Faults played.
    pub faults: usize,
    /// A hash of every delivery and of the trace: same seed, same hash.
    pub hash: u64,
}

/// Why a run failed.
#[derive(Debug, Clone)]
pub struct Failure {
    /// When (simulated ms).
    pub at: u64,
    /// The broken invariant.
    pub message: String,
    /// The run's trace.
    pub trace: Vec<String>,
}

/// One run (see the module documentation).
#[derive(Debug)]
pub struct World {
    pub(crate) now: u64,
    pub(crate) spec: Spec,
    pub(crate) net: Net,
    pub(crate) rng: Rng,
    pub(crate) trace: Trace,
    pub(crate) procs: Vec<Proc>,
    pub(crate) names: Vec<String>,
    pub(crate) ips: Vec<IpAddr>,
    /// The node a process index is, `None` for aggregators.
    pub(crate) node_of: Vec<Option<usize>>,
    pub(crate) actions: Vec<(u64, Action)>,
    pub(crate) n_aggs: usize,
    /// Processes lost for good.
    pub(crate) lost: Vec<usize>,
    /// Armed flaps: (one side, the other, delay).
    pub(crate) flaps: Vec<(usize, usize, u64)>,
    pub(crate) faults: usize,
    pub(crate) stop_at: u64,
    pub(crate) steps: u64,
}

/// Who is who in a topology: processes (aggregators first), their addresses, and
/// the links between configured peers.
#[derive(Debug)]
pub struct Layout {
    /// Process names.
    pub names: Vec<String>,
    /// Each aggregator's plan and tunables.
    pub aggregators: Vec<(SectionPlan, Tunables)>,
    /// Each process's IP.
    pub ips: Vec<IpAddr>,
    /// Each process's listen address.
    pub listen: Vec<String>,
    /// Links between configured peers.
    pub links: Vec<(usize, usize)>,
    /// The processes the topology can lose for good: members of an `up group`
    /// with another member.
    pub lossable: Vec<usize>,
}

impl Layout {
    /// The layout of `spec`, from the aggregators' configurations.
    ///
    /// # Errors
    /// A configuration that does not load (a bug of the simulation's topologies).
    pub fn of(spec: &Spec) -> Result<Layout, String> {
        let mut names = Vec::new();
        let mut aggregators = Vec::new();
        let mut ips = Vec::new();
        let mut listen = Vec::new();
        for a in &spec.aggregators {
            let config = stktagg_config::parse_str(&a.config, a.name).map_err(|e| e.to_string())?;
            let plan = stktagg_topology::resolve(&config).map_err(|e| e.to_string())?;
            let Some(section) = plan.sections.into_iter().next() else {
                return Err(format!("{}: no section", a.name));
            };
            names.push(section.local_name.clone());
            let host = &section.listener.host;
            ips.push(
                host.parse()
                    .map_err(|e| format!("{}: {host}: {e}", a.name))?,
            );
            listen.push(format!("{host}:{}", section.listener.port));
            aggregators.push((section, Tunables::from_global(&config.global)));
        }
        for n in &spec.nodes {
            names.push(n.name.clone());
            ips.push(
                n.ip.parse()
                    .map_err(|e| format!("{}: {}: {e}", n.name, n.ip))?,
            );
            listen.push(format!("{}:{}", n.ip, n.port));
        }
        let mut links = Vec::new();
        for (a, (plan, _)) in aggregators.iter().enumerate() {
            for p in &plan.peers {
                if let Some(b) = names.iter().position(|n| *n == p.name) {
                    let l = (a.min(b), a.max(b));
                    if !links.contains(&l) {
                        links.push(l);
                    }
                }
            }
        }
        links.sort();
        let mut lossable = Vec::new();
        for (plan, _) in &aggregators {
            for g in plan.groups.iter().filter(|g| g.members.len() > 1) {
                for m in &g.members {
                    let name = &plan.peers[m.0].name;
                    if let Some(p) = names.iter().position(|n| n == name)
                        && !lossable.contains(&p)
                    {
                        lossable.push(p);
                    }
                }
            }
        }
        lossable.sort();
        Ok(Layout {
            names,
            aggregators,
            ips,
            listen,
            links,
            lossable,
        })
    }
}

impl World {
    /// A world for `topology`, its randomness from `seed`, playing `faults`.
    ///
    /// # Errors
    /// A topology whose configurations do not load.
    pub fn new(topology: Topology, seed: u64, faults: &[Fault]) -> Result<World, String> {
        let spec = topology.spec();
        let layout = Layout::of(&spec)?;
        let mut rng = Rng::new(seed, 0);
        let mut net = Net::new();
        for (p, addr) in layout.listen.iter().enumerate() {
            net.listen(addr.clone(), p);
        }
        for &(a, b) in &layout.links {
            net.link(a, b, rng.range(1, 10));
        }
        let n_aggs = layout.aggregators.len();
        let mut actions: Vec<(u64, Action)> = faults.iter().flat_map(Fault::actions).collect();
        actions.sort_by_key(|(t, _)| *t);
        let stop_at = faults
            .iter()
            .map(Fault::end)
            .max()
            .unwrap_or(0)
            .max(START_MS + MIN_TRAFFIC_MS);
        let mut w = World {
            now: START_MS,
            net,
            rng,
            trace: Trace::default(),
            procs: Vec::new(),
            names: layout.names.clone(),
            ips: layout.ips.clone(),
            node_of: (0..layout.names.len())
                .map(|p| p.checked_sub(n_aggs))
                .collect(),
            actions,
            n_aggs,
            lost: Vec::new(),
            flaps: Vec::new(),
            faults: faults.len(),
            stop_at,
            steps: 0,
            spec,
        };
        let alive = vec![true; w.names.len()];
        for (plan, tun) in layout.aggregators {
            let name = plan.local_name.clone();
            let proc = w.procs.len();
            let mut cx = w.cx(&alive);
            let running = Aggregator::start(
                name.clone(),
                proc,
                plan.clone(),
                tun.clone(),
                Arc::new(SimStore::default()),
                KEYS_PER_FAMILY,
                &mut cx,
            );
            w.procs.push(Proc::Agg(Box::new(AggProc {
                name,
                plan,
                tun,
                running: Some(running),
                kept: None,
            })));
        }
        let suffixes = w.spec.node_suffixes();
        for (i, n) in w.spec.nodes.clone().into_iter().enumerate() {
            let mut cx = w.cx(&alive);
            let node = Node::new(
                n.name,
                n_aggs + i,
                (n.aggr.to_owned(), n.aggr_addr.to_owned()),
                &suffixes,
                KEYS_PER_FAMILY,
                &mut cx,
            );
            w.procs.push(Proc::Node(Box::new(node)));
        }
        Ok(w)
    }

    fn cx<'a>(&'a mut self, alive: &'a [bool]) -> Cx<'a> {
        Cx {
            now: self.now,
            net: &mut self.net,
            rng: &mut self.rng,
            trace: &mut self.trace,
            alive,
            ips: &self.ips,
        }
    }

    fn alive(&self) -> Vec<bool> {
        self.procs
            .iter()
            .map(|p| match p {
                Proc::Agg(a) => a.running.is_some(),
                Proc::Node(n) => n.alive,
            })
            .collect()
    }

    /// Runs to convergence (or to a broken invariant).
    ///
    /// # Errors
    /// The first broken invariant, with the trace.
    pub fn run(mut self) -> Result<Outcome, Failure> {
        self.run_inner()
    }

    /// Runs as [`World::run`] does, and returns the trace too, pass or fail.
    pub fn run_traced(mut self) -> (Result<Outcome, Failure>, Vec<String>) {
        let r = self.run_inner();
        (r, std::mem::take(&mut self.trace.lines))
    }

    fn run_inner(&mut self) -> Result<Outcome, Failure> {
        let mut next_check = self.now;
        let mut converged_since: Option<u64> = None;
        let mut stopped = false;
        loop {
            self.steps += 1;
            self.play_actions();
            if !stopped && self.now >= self.stop_at {
                stopped = true;
                for p in &mut self.procs {
                    if let Proc::Node(n) = p {
                        n.traffic = false;
                    }
                }
                let now = self.now;
                self.trace
                    .log(now, "world", format_args!("faults over, traffic stops"));
            }
            self.step_all().map_err(|m| self.failure(m))?;
            if self.now >= next_check {
                next_check = self.now + CHECK_MS;
                self.check_aggregators().map_err(|m| self.failure(m))?;
                if stopped {
                    match self.converged() {
                        Ok(()) => {
                            let since = *converged_since.get_or_insert(self.now);
                            if self.now - since >= STABLE_MS {
                                if let Some((f, key, why)) = self.debts_unpaid() {
                                    let why = format!("{why}\n{}", self.explain(f, &key));
                                    return Err(self.failure(why));
                                }
                                return Ok(self.outcome(since));
                            }
                        }
                        Err((family, key, why)) => {
                            converged_since = None;
                            if self.now > self.stop_at + CONVERGE_BOUND_MS {
                                let m = format!(
                                    "not exact {CONVERGE_BOUND_MS} ms after the last fault: {why}\n{}",
                                    self.explain(family, &key)
                                );
                                return Err(self.failure(m));
                            }
                        }
                    }
                }
            }
            let mut next = earliest(Some(next_check), self.net.next_event(self.now));
            if let Some(&(t, _)) = self.actions.first() {
                next = earliest(next, Some(t));
            }
            if !stopped {
                next = earliest(next, Some(self.stop_at));
            }
            for p in &self.procs {
                let w = match p {
                    Proc::Agg(a) => a
                        .running
                        .as_ref()
                        .and_then(|a| a.wake_at(self.now, &self.net)),
                    Proc::Node(n) if n.alive => n.wake_at(self.now, &self.net),
                    Proc::Node(_) => None,
                };
                next = earliest(next, w);
            }
            self.now = next.unwrap_or(self.now + 1).max(self.now + 1);
        }
    }

    fn failure(&self, message: String) -> Failure {
        Failure {
            at: self.now,
            message,
            trace: self.trace.lines.clone(),
        }
    }

    fn outcome(&self, converged_at: u64) -> Outcome {
        let max_pending = self
            .procs
            .iter()
            .filter_map(|p| match p {
                Proc::Agg(a) => a.running.as_ref().map(|a| a.max_pending),
                Proc::Node(_) => None,
            })
            .max()
            .unwrap_or(0);
        let mut hash = self.net.hash;
        for l in &self.trace.lines {
            hash = fnv(hash, l.as_bytes());
        }
        Outcome {
            converged_ms: converged_at.saturating_sub(self.stop_at),
            sim_ms: self.now - START_MS,
            steps: self.steps,
            bytes: self.net.bytes_delivered,
            max_pending,
            faults: self.faults,
            hash,
        }
    }

    fn play_actions(&mut self) {
        while let Some(&(t, _)) = self.actions.first() {
            if t > self.now {
                break;
            }
            let (_, action) = self.actions.remove(0);
            self.play(action);
        }
    }

    fn play(&mut self, action: Action) {
        let name = |w: &World, p: usize| w.names[p].clone();
        match action {
            Action::Kill(p) => self.kill(p),
            Action::Lose(p) => {
                self.lost.push(p);
                self.kill(p);
            }
            Action::Restart(p, keep_state) => self.restart(p, keep_state),
            Action::Partition(a, b, p) => {
                let what = match p {
                    Some(crate::net::Partition::Cut) => "cuts",
                    Some(crate::net::Partition::Blackhole) => "blackholes",
                    None => "heals",
                };
                let (x, y) = (name(self, a), name(self, b));
                self.log(format_args!("{what} {x} | {y}"));
                self.net.set_partition(a, b, p);
            }
            Action::Delay(a, b, ms) => {
                let (x, y) = (name(self, a), name(self, b));
                self.log(format_args!("delay {x} - {y} +{ms} ms"));
                self.net.set_delay(a, b, ms);
            }
            Action::Slow(p, budget) => {
                let x = name(self, p);
                match budget {
                    Some(b) => self.log(format_args!("{x} reads {b} bytes per 20 ms")),
                    None => self.log(format_args!("{x} reads normally")),
                }
                self.net.set_slow(p, budget);
            }
            Action::Flap(a, b, delay_ms) => {
                let (x, y) = (name(self, a), name(self, b));
                self.log(format_args!(
                    "will cut the next session {x} - {y} {delay_ms} ms after it comes up"
                ));
                self.flaps.push((a.min(b), a.max(b), delay_ms));
            }
            Action::Duplicate(p, peer) => self.duplicate(p, peer),
        }
    }

    fn log(&mut self, what: std::fmt::Arguments<'_>) {
        let now = self.now;
        self.trace.log(now, "world", what);
    }

    /// `p` dies: its connections close, its sessions vanish without a word; an
    /// aggregator's store is kept in case it restarts with its state.
    fn kill(&mut self, p: usize) {
        if !self.alive()[p] {
            return;
        }
        let x = self.names[p].clone();
        self.log(format_args!("kills {x}"));
        self.net.kill(self.now, p, &mut self.rng);
        match &mut self.procs[p] {
            Proc::Agg(a) => a.kept = a.running.take().map(|r| r.store()),
            Proc::Node(n) => n.kill(),
        }
    }

    /// `p` starts again, with its state or empty (never after a loss for good).
    fn restart(&mut self, p: usize, keep_state: bool) {
        let alive = self.alive();
        if alive[p] || self.lost.contains(&p) {
            return;
        }
        let mut procs = std::mem::take(&mut self.procs);
        let mut cx = self.cx(&alive);
        match &mut procs[p] {
            Proc::Agg(a) => {
                let store = match a.kept.take() {
                    Some(s) if keep_state => s,
                    _ => Arc::new(SimStore::default()),
                };
                let how = if keep_state {
                    "with its store"
                } else {
                    "empty"
                };
                cx.trace
                    .log(cx.now, "world", format_args!("restarts {} {how}", a.name));
                a.running = Some(Aggregator::start(
                    a.name.clone(),
                    p,
                    a.plan.clone(),
                    a.tun.clone(),
                    store,
                    KEYS_PER_FAMILY,
                    &mut cx,
                ));
            }
            Proc::Node(n) => n.restart(keep_state, &mut cx),
        }
        self.procs = procs;
        self.note_debts(p, keep_state);
    }

    /// `p` dials `peer` again although a session may be running.
    fn duplicate(&mut self, p: usize, peer: usize) {
        let alive = self.alive();
        if !alive[p] {
            return;
        }
        let (x, y) = (self.names[p].clone(), self.names[peer].clone());
        self.log(format_args!("{x} dials {y} again"));
        let mut procs = std::mem::take(&mut self.procs);
        let mut cx = self.cx(&alive);
        match &mut procs[p] {
            Proc::Agg(a) => {
                if let Some(run) = &mut a.running
                    && let Some(i) = a.plan.peer_by_name(&y)
                {
                    run.force_dial(i.0, &mut cx);
                }
            }
            Proc::Node(n) => n.force_dial(&mut cx),
        }
        self.procs = procs;
    }

    /// A restart without state: a node is owed the counts its aggregator holds for
    /// it now; an aggregator that lost its store owes nothing any more.
    fn note_debts(&mut self, p: usize, keep_state: bool) {
        if keep_state {
            return;
        }
        let Some(n) = self.node_of[p] else {
            let name = self.names[p].clone();
            for i in 0..self.spec.nodes.len() {
                if self.spec.nodes[i].aggr == name
                    && let Some(Proc::Node(node)) = self.procs.get_mut(self.n_aggs + i)
                {
                    node.debt = None;
                }
            }
            return;
        };
        let aggr = self.spec.nodes[n].aggr;
        let mut debt = std::collections::BTreeMap::new();
        let held = self.procs.iter().find_map(|q| match q {
            Proc::Agg(a) if a.name == aggr => a.running.as_ref(),
            _ => None,
        });
        if let Some(a) = held
            && let Some(source) = a.core.peer_by_name(&self.names[p])
        {
            for (f, _, info) in Self::tables_of(a) {
                for key in (0..KEYS_PER_FAMILY).map(|i| FAMILIES[f].key(i)) {
                    let mine = a
                        .core
                        .store
                        .0
                        .detail(info.id, &key, self.now)
                        .unwrap_or_default()
                        .into_iter()
                        .find(|d| usize::from(d.source.0) == source);
                    if let Some(d) = mine {
                        debt.insert((f, key), Counters::of(&d.values, &info.definition.data));
                    }
                }
            }
        }
        let owed = held.is_some().then_some(debt);
        if let Some(Proc::Node(node)) = self.procs.get_mut(p) {
            node.debt = owed;
        }
    }

    fn step_all(&mut self) -> Result<(), String> {
        let alive = self.alive();
        let mut order: Vec<usize> = (0..self.procs.len()).filter(|&p| alive[p]).collect();
        self.rng.shuffle(&mut order);
        let mut procs = std::mem::take(&mut self.procs);
        let mut result = Ok(());
        for p in order {
            let mut cx = self.cx(&alive);
            match &mut procs[p] {
                Proc::Agg(a) => {
                    if let Some(run) = &mut a.running
                        && let Err(e) = run.step(&mut cx)
                    {
                        result = Err(e);
                        break;
                    }
                }
                Proc::Node(n) => n.step(&mut cx),
            }
        }
        self.procs = procs;
        result?;
        self.trigger_flaps();
        self.check_views()
    }

    /// Sessions that came up where a flap waits: their cut is scheduled.
    fn trigger_flaps(&mut self) {
        for [x, y] in self.net.take_established() {
            let pair = (x.min(y), x.max(y));
            if let Some(i) = self.flaps.iter().position(|f| (f.0, f.1) == pair) {
                let (a, b, delay) = self.flaps.remove(i);
                let at = self.now + delay;
                let cut = Some(crate::net::Partition::Cut);
                self.actions.push((at, Action::Partition(a, b, cut)));
                self.actions
                    .push((at + crate::faults::FLAP_MS, Action::Partition(a, b, None)));
                self.actions.sort_by_key(|(t, _)| *t);
            }
        }
    }
}
