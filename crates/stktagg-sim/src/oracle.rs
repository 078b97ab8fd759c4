//! The oracle: what the world checks after every step, and what it prints when a
//! check fails.
//!
//! - **No double count**: no value any node learns (`.aggr`, `.l2`), and no output
//!   or relayed entry of any aggregator, exceeds the sum over the nodes it covers of
//!   the highest count each of them ever had for that key (a correct aggregate
//!   holds one of each node's values; a snapshot added twice, or a node counted
//!   twice, goes over).
//! - **Relays follow the election**, **FINISHED is honest**, **memory per
//!   destination is bounded by keys**: checked by each aggregator as it steps (see
//!   `aggregator`).
//! - **Convergence**: once the last fault is over and traffic stopped, every value
//!   every node learned, every aggregator's outputs and relayed tables equal the
//!   truth (the saturating sum of the covered nodes' current counts), every relayed
//!   entry comes from its group's elected member, which is complete.
//! - **Teach-back gives counts back**: a node restarted empty ends up with at least
//!   what its aggregator held for it then.

use crate::aggregator::Aggregator;
use crate::node::{Counters, FAMILIES, Node};
use crate::world::{KEYS_PER_FAMILY, Proc, World};
use std::fmt::Write as _;
use stktagg_section::TableStore;
use stktagg_store::TableKind;
use stktagg_wire::Key;

impl World {
    /// The nodes a table with `suffix` sums when it is held by (or comes from)
    /// aggregator `aggr`.
    pub(crate) fn coverage(&self, suffix: &str, aggr: &str) -> Vec<usize> {
        self.spec.coverage(suffix, aggr)
    }

    pub(crate) fn node(&self, n: usize) -> Option<&Node> {
        match self.procs.get(self.n_aggs + n) {
            Some(Proc::Node(node)) => Some(node),
            _ => None,
        }
    }

    /// The saturating sum of the highest counts each covered node ever had.
    pub(crate) fn bound(&self, family: usize, cov: &[usize], key: &Key) -> Counters {
        cov.iter()
            .filter_map(|&n| self.node(n))
            .fold(Counters::default(), |acc, n| {
                acc.saturating_add(n.peak(family, key))
            })
    }

    /// The saturating sum of the covered nodes' current counts; `None` if none of
    /// them holds the key (then nothing can say it is gone: there are no deletes on
    /// the wire, only expiry, which these runs never reach).
    pub(crate) fn truth(&self, family: usize, cov: &[usize], key: &Key) -> Option<Counters> {
        let mut held = false;
        let mut sum = Counters::default();
        for n in cov.iter().filter_map(|&n| self.node(n)) {
            if let Some(c) = n.local(family, key) {
                held = true;
                sum = sum.saturating_add(c);
            }
        }
        held.then_some(sum)
    }

    /// No double count in what the nodes learned since the last check.
    pub(crate) fn check_views(&mut self) -> Result<(), String> {
        for i in 0..self.procs.len() {
            let changes = match &mut self.procs[i] {
                Proc::Node(n) => std::mem::take(&mut n.view_changes),
                Proc::Agg(_) => continue,
            };
            let Some(Proc::Node(n)) = self.procs.get(i) else {
                continue;
            };
            let aggr = self.spec.nodes[self.node_of[i].unwrap_or(0)].aggr;
            for (t, key) in changes {
                let table = &n.tables[t];
                let cov = self.coverage(table.suffix, aggr);
                let bound = self.bound(table.family, &cov, &key);
                let Some(seen) = n.view(t, &key) else {
                    continue;
                };
                if !seen.within(bound) {
                    return Err(format!(
                        "double count: {} learned {}{} {} = {seen:?}, above the sum of every covered node's highest count {bound:?}",
                        n.name,
                        FAMILIES[table.family].base,
                        table.suffix,
                        show_key(&key),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The tables of an aggregator: (family, suffix, id, is relay) for each.
    pub(crate) fn tables_of(
        a: &Aggregator,
    ) -> Vec<(usize, &'static str, stktagg_store::TableInfo)> {
        let mut out = Vec::new();
        for info in a.core.store.0.tables() {
            let name = String::from_utf8_lossy(&info.name).into_owned();
            for (f, fam) in FAMILIES.iter().enumerate() {
                for suffix in [".aggr", ".l2"] {
                    if name == format!("{}{suffix}", fam.base) {
                        out.push((f, suffix, info.clone()));
                    }
                }
            }
        }
        out
    }

    /// No double count in any aggregator's outputs and relayed tables.
    pub(crate) fn check_aggregators(&self) -> Result<(), String> {
        let now = self.now;
        for p in &self.procs {
            let Proc::Agg(ap) = p else {
                continue;
            };
            let Some(a) = &ap.running else {
                continue;
            };
            for (f, suffix, info) in Self::tables_of(a) {
                let cov = self.coverage(suffix, &a.name);
                for key in (0..KEYS_PER_FAMILY).map(|i| FAMILIES[f].key(i)) {
                    let Some(e) = a.core.store.0.read(info.id, &key, now) else {
                        continue;
                    };
                    let seen = Counters::of(&e.values, &info.definition.data);
                    let bound = self.bound(f, &cov, &key);
                    if !seen.within(bound) {
                        return Err(format!(
                            "double count: {} holds {}{suffix} {} = {seen:?}, above the sum of every covered node's highest count {bound:?}",
                            a.name,
                            FAMILIES[f].base,
                            show_key(&key)
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Teach-back gave every node restarted empty its counts back: at least what its
    /// aggregator held for it when it restarted (if that aggregator kept its data
    /// and the node asked for them before giving up learning). The first unpaid
    /// count otherwise.
    pub(crate) fn debts_unpaid(&self) -> Option<(usize, Key, String)> {
        // Counters wrap: "at or after", modulo 2^32.
        let after = |a: u32, b: u32| a.wrapping_sub(b) < 1 << 31;
        for p in &self.procs {
            let Proc::Node(n) = p else {
                continue;
            };
            for ((f, key), owed) in n.debt.iter().flatten() {
                let has = n.local(*f, key).unwrap_or_default();
                if !(after(has.cnt, owed.cnt) && after(has.gpc0, owed.gpc0)) {
                    let why = format!(
                        "{} restarted empty and has {}.uncombined {} = {has:?}: teach-back did not give back the {owed:?} its aggregator held for it",
                        n.name,
                        FAMILIES[*f].base,
                        show_key(key)
                    );
                    return Some((*f, key.clone(), why));
                }
            }
        }
        None
    }

    /// Whether everything is exact; the first difference otherwise.
    pub(crate) fn converged(&self) -> Result<(), (usize, Key, String)> {
        let now = self.now;
        let universe: Vec<Vec<Key>> = FAMILIES
            .iter()
            .map(|fam| (0..KEYS_PER_FAMILY).map(|i| fam.key(i)).collect())
            .collect();
        for (i, p) in self.procs.iter().enumerate() {
            match p {
                Proc::Node(n) => {
                    let aggr = self.spec.nodes[self.node_of[i].unwrap_or(0)].aggr;
                    for (t, table) in n.tables.iter().enumerate() {
                        if table.is_local() {
                            continue;
                        }
                        let cov = self.coverage(table.suffix, aggr);
                        for key in &universe[table.family] {
                            let Some(truth) = self.truth(table.family, &cov, key) else {
                                continue;
                            };
                            let seen = n.view(t, key);
                            if seen != Some(truth) {
                                let why = format!(
                                    "{} has {}{} {} = {seen:?}, the truth is {truth:?}",
                                    n.name,
                                    FAMILIES[table.family].base,
                                    table.suffix,
                                    show_key(key)
                                );
                                return Err((table.family, key.clone(), why));
                            }
                        }
                    }
                }
                Proc::Agg(ap) => {
                    if self.lost.contains(&i) {
                        continue;
                    }
                    let Some(a) = &ap.running else {
                        return Err((0, FAMILIES[0].key(0), format!("{} is down", ap.name)));
                    };
                    self.aggregator_exact(a, &universe, now)?;
                }
            }
        }
        Ok(())
    }

    pub(crate) fn aggregator_exact(
        &self,
        a: &Aggregator,
        universe: &[Vec<Key>],
        now: u64,
    ) -> Result<(), (usize, Key, String)> {
        let store = &a.core.store.0;
        for g in &a.plan().groups {
            let active = a.core.active_member(g.id.0 as u16);
            let complete = active.is_some_and(|m| a.core.peers[m.0].stats.is_complete());
            if !complete {
                let why = format!(
                    "{}: group {} relays {:?}, which is not complete",
                    a.name,
                    a.core.group_number(g.id.0 as u16),
                    active.map(|m| a.core.peers[m.0].name.clone())
                );
                return Err((0, FAMILIES[0].key(0), why));
            }
        }
        for (f, suffix, info) in Self::tables_of(a) {
            let cov = self.coverage(suffix, &a.name);
            let relay = match info.kind {
                TableKind::Relay { group } => a.core.store.active_member(group),
                TableKind::Output => None,
            };
            for key in &universe[f] {
                let Some(truth) = self.truth(f, &cov, key) else {
                    continue;
                };
                let seen = store
                    .read(info.id, key, now)
                    .map(|e| Counters::of(&e.values, &info.definition.data));
                if seen != Some(truth) {
                    let why = format!(
                        "{} holds {}{suffix} {} = {seen:?}, the truth is {truth:?}",
                        a.name,
                        FAMILIES[f].base,
                        show_key(key)
                    );
                    return Err((f, key.clone(), why));
                }
                if let Some(member) = relay {
                    let from: Vec<_> = store
                        .detail(info.id, key, now)
                        .unwrap_or_default()
                        .into_iter()
                        .map(|d| d.source)
                        .collect();
                    if from != [member] {
                        let why = format!(
                            "{} relays {}{suffix} {} from {from:?}, not from the elected member {member:?}",
                            a.name,
                            FAMILIES[f].base,
                            show_key(key)
                        );
                        return Err((f, key.clone(), why));
                    }
                }
            }
        }
        Ok(())
    }

    /// Everything the world knows about one key: each node's counts, highest
    /// counts and learned values, each aggregator's tables and contributions.
    pub(crate) fn explain(&self, family: usize, key: &Key) -> String {
        let mut r = format!("state of {}.* {}:", FAMILIES[family].base, show_key(key));
        for p in &self.procs {
            match p {
                Proc::Node(n) => {
                    let _ = write!(
                        r,
                        "\n  {}: local {:?} (highest {:?})",
                        n.name,
                        n.local(family, key),
                        n.peak(family, key)
                    );
                    for (t, table) in n.tables.iter().enumerate() {
                        if table.family == family && !table.is_local() {
                            let _ = write!(r, ", {} {:?}", table.suffix, n.view(t, key));
                        }
                    }
                }
                Proc::Agg(ap) => {
                    let Some(a) = &ap.running else {
                        let _ = write!(r, "\n  {}: down", ap.name);
                        continue;
                    };
                    for (f, suffix, info) in Self::tables_of(a) {
                        if f != family {
                            continue;
                        }
                        let store = &a.core.store.0;
                        let seen = store
                            .read(info.id, key, self.now)
                            .map(|e| Counters::of(&e.values, &info.definition.data));
                        let _ = write!(
                            r,
                            "\n  {}: {suffix} {} {seen:?} from",
                            a.name,
                            if info.kind == TableKind::Output {
                                "output"
                            } else {
                                "relay"
                            }
                        );
                        for d in store.detail(info.id, key, self.now).unwrap_or_default() {
                            let who = a
                                .core
                                .peers
                                .get(usize::from(d.source.0))
                                .map_or("?", |p| p.name.as_str());
                            let _ = write!(
                                r,
                                " {who} {:?}",
                                Counters::of(&d.values, &info.definition.data)
                            );
                        }
                    }
                }
            }
        }
        r
    }
}

/// A key as the trace shows it.
pub fn show_key(key: &Key) -> String {
    let b = key.as_bytes();
    if b.len() == 4 {
        format!("{}.{}.{}.{}", b[0], b[1], b[2], b[3])
    } else {
        String::from_utf8_lossy(b).into_owned()
    }
}
