//! The `reload` scenario: live reloads of running aggregators (SIGHUP) with real
//! HAProxy nodes attached: a node added (inserted between two running peers)
//! under traffic, a node removed, a rule added, a broken file under traffic.
//!
//! Throughout, no table ever reads above what was sent to the nodes it sums, no
//! reading that was right ever drops below what was sent (traffic paused), and
//! the session of every peer that a reload does not touch is never established
//! again (`show peers`' `sessions=` stays what it was on every aggregator).

use super::observe::{self, Monitor, Point, Tier};
use super::run::Ctx;
use super::topology::Family;
use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const OLD: [&str; 4] = ["hapee1", "hapee2", "hapee3", "hapee4"];
/// How long a watch may take to see every table right again.
const SETTLE: Duration = Duration::from_secs(25);
/// How long every table must stay right before a step counts as done.
const HOLD: Duration = Duration::from_millis(1500);
/// How long traffic runs on after a reload issued under traffic.
const TRAFFIC_AFTER: Duration = Duration::from_millis(1500);

/// The points to check while the nodes in `pending` are nobody's peer yet and
/// those in `removed` nobody's any more: their own `.aggr` and `.l2` are fed by
/// nobody (left out), and no sum counts a removed node. Plus, once `spare` is
/// set, aggr1's `.sparesum` (on aggr1 and its nodes), which sums the nodes'
/// `.spare`: the same requests as their `.uncombined`.
fn points(c: &Ctx, pending: &[&str], removed: &[&str], spare: bool) -> Vec<Point> {
    let out_of = |n: &str| pending.contains(&n) || removed.contains(&n);
    let mut out: Vec<Point> = c
        .points()
        .into_iter()
        .filter(|p| !(p.on_node && p.tier != Tier::Uncombined && out_of(&p.proc)))
        .map(|mut p| {
            if p.tier != Tier::Uncombined {
                p.scope.retain(|n| !removed.contains(&n.as_str()));
            }
            p
        })
        .collect();
    if spare {
        let scope = c.topo.nodes_of("aggr1");
        let procs = std::iter::once(("aggr1".to_owned(), false, "myaggr"))
            .chain(scope.iter().map(|n| (n.clone(), true, "fleet")));
        for (proc, on_node, section) in procs {
            out.push(Point {
                proc,
                on_node,
                table: format!("{section}/ip.sparesum"),
                family: Family::Ip,
                tier: Tier::Aggr,
                scope: scope.clone(),
                shard: None,
            });
        }
    }
    out
}

/// `sessions=` of every peer on every aggregator.
fn sessions(c: &Ctx) -> Result<BTreeMap<(String, String), u64>> {
    let mut out = BTreeMap::new();
    for a in &c.topo.aggregators {
        for p in c.peers(&a.name)? {
            out.insert((a.name.clone(), p.name), p.sessions);
        }
    }
    Ok(out)
}

/// Fails if a peer present before and now was established again in between.
fn untouched(c: &mut Ctx, before: &BTreeMap<(String, String), u64>, what: &str) -> Result<()> {
    let now = sessions(c)?;
    let mut again = Vec::new();
    for (k, n) in before {
        if let Some(m) = now.get(k)
            && m != n
        {
            again.push(format!("{}->{} sessions {n} -> {m}", k.0, k.1));
        }
    }
    if !again.is_empty() {
        bail!(
            "{what}: untouched peers' sessions were established again: {}",
            again.join(", ")
        );
    }
    c.step(format!(
        "{what}: no untouched session established again ({} peers)",
        before.len()
    ));
    Ok(())
}

/// The lines a reload writes, outcome first.
const OUTCOMES: [&str; 4] = [
    "reload: configuration applied",
    "reload: the configuration is valid and unchanged",
    "reload: the configuration is invalid",
    "reload: the configuration cannot be applied",
];

fn outcomes(c: &Ctx, aggr: &str) -> usize {
    c.fleet
        .log_tail(aggr, 100_000)
        .lines()
        .filter(|l| OUTCOMES.iter().any(|o| l.contains(o)))
        .count()
}

/// Writes `variant` (a file beside the topology's configurations) as `aggr`'s
/// configuration, sends SIGHUP, and returns the reload's log lines once its
/// outcome is logged.
fn reload(c: &mut Ctx, aggr: &str, variant: &str) -> Result<Vec<String>> {
    let a = c
        .topo
        .aggregator(aggr)
        .cloned()
        .with_context(|| format!("no aggregator `{aggr}`"))?;
    let mut v = a.clone();
    v.config = variant.to_owned();
    let text = c.topo.aggregator_config(&v, c.fleet.dir())?;
    let path = c.fleet.config_path(aggr)?;
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    let before = outcomes(c, aggr);
    let lines_before = c.fleet.log_tail(aggr, 100_000).lines().count();
    let sent = Instant::now();
    c.fleet.hup(aggr)?;
    while outcomes(c, aggr) == before {
        if sent.elapsed() > Duration::from_secs(5) {
            bail!(
                "{aggr} logged no reload outcome 5 s after SIGHUP:\n{}",
                c.fleet.log_tail(aggr, 20)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let took = sent.elapsed();
    let log = c.fleet.log_tail(aggr, 100_000);
    let lines: Vec<String> = log
        .lines()
        .skip(lines_before)
        .filter(|l| l.contains("reload: "))
        .map(|l| {
            // After the log target (`stktagg_daemon::reload: `), the message.
            let at = l.find("::reload: ").map_or(0, |i| i + "::reload: ".len());
            l[at..].to_owned()
        })
        .collect();
    c.step(format!("SIGHUP {aggr} with {variant} ({took:.2?}):"));
    for l in &lines {
        c.step(format!("  {l}"));
    }
    c.measure(
        format!("{aggr} reload with {variant}"),
        format!("{took:.2?}"),
    );
    Ok(lines)
}

fn expect_line(lines: &[String], want: &str) -> Result<()> {
    if lines.iter().any(|l| l.contains(want)) {
        Ok(())
    } else {
        bail!("no `{want}` in the reload's lines: {lines:?}")
    }
}

/// Whether every point of `points` is exactly right now (traffic paused).
fn exact_now(c: &Ctx, points: &[Point]) -> bool {
    observe::snapshot(&c.fleet, points)
        .map(|snap| observe::exact(&snap, points, &c.tally()).is_empty())
        .unwrap_or(false)
}

/// Holds `points` under a strict monitor (traffic paused) for `HOLD`.
fn hold(c: &mut Ctx, what: &str, points: Vec<Point>) -> Result<()> {
    let mut m = Monitor::new(points, true);
    c.watch(&mut m, SETTLE, |_, m, _| Ok(m.settled_for(HOLD)))?;
    c.monitor_summary(what, &m, true);
    Ok(())
}

pub fn reload_scenario(c: &mut Ctx) -> Result<()> {
    c.start_all()?;
    if c.peers("aggr1")?.iter().any(|p| p.name == "hapee5") {
        bail!("aggr1 knows hapee5 before the reload that adds it");
    }
    c.send(&OLD, 1..=12, 1)?;
    let before_add = points(c, &["hapee5"], &[], false);
    c.converge_on("before any reload (hapee5 not a peer yet)", &before_add)?;
    let s0 = sessions(c)?;

    // 1. A node added, under traffic: inserted between two running peers.
    let bg = c.background(&OLD, 1..=16, Duration::from_secs(20))?;
    let mut m = Monitor::new(before_add.clone(), false);
    std::thread::sleep(Duration::from_millis(300));
    let lines = reload(c, "aggr1", "aggr1.add.cfg")?;
    expect_line(&lines, "section `myaggr`: peer `hapee5` added (node, ")?;
    let hupped = Instant::now();
    let mut bg = Some(bg);
    let mut joined: Option<Duration> = None;
    c.watch(&mut m, SETTLE, |c, m, _| {
        if joined.is_none()
            && c.peers("aggr1")?
                .iter()
                .any(|p| p.name == "hapee5" && p.state == "ESTA")
        {
            joined = Some(hupped.elapsed());
        }
        if hupped.elapsed() >= TRAFFIC_AFTER
            && let Some(b) = bg.take()
        {
            let n = b.finish()?;
            c.outcome.requests += n;
            c.step(format!("traffic stopped ({n} requests in the background)"));
        }
        Ok(bg.is_none() && joined.is_some() && m.all_right_now)
    })?;
    c.monitor_summary("add watch (under traffic)", &m, false);
    c.measure(
        "hapee5's session up after the reload",
        format!("{:.2?}", joined.unwrap_or_default()),
    );
    let all = points(c, &[], &[], false);
    c.converge_on("hapee5 attached: every table right, its own too", &all)?;
    c.send(&["hapee5", "hapee1", "hapee3"], 6..=20, 1)?;
    c.converge_on("traffic through hapee5 counted everywhere", &all)?;
    untouched(c, &s0, "node added")?;

    // 2. A node removed (traffic paused): its counts leave the sums, which go
    // from the old truth down to the new one and never outside.
    let s1 = sessions(c)?;
    let after_remove = points(c, &[], &["hapee4"], false);
    let mut ceiling = Monitor::new(all.clone(), false);
    let mut floor = Monitor::floor(after_remove.clone());
    let lines = reload(c, "aggr2", "aggr2.remove.cfg")?;
    expect_line(&lines, "section `myaggr`: peer `hapee4` removed")?;
    let hupped = Instant::now();
    let took = c.watch(&mut ceiling, SETTLE, |c, _, _| {
        let tally = c.tally.clone();
        floor.round(&c.fleet, &|| super::traffic::lock(&tally).clone());
        if let Some(v) = floor.violations.first() {
            bail!("below the sums without hapee4: {v}");
        }
        Ok(exact_now(c, &after_remove))
    })?;
    c.measure(
        "hapee4's counts gone from every sum after the reload",
        format!("{:.2?}", took.min(hupped.elapsed())),
    );
    hold(c, "after the removal", after_remove.clone())?;
    if c.peers("aggr2")?.iter().any(|p| p.name == "hapee4") {
        bail!("aggr2 still shows hapee4");
    }
    untouched(c, &s1, "node removed")?;

    // 3. A rule added (traffic paused): aggr1's nodes are asked for a full resync
    // within their sessions; nothing dips, and the new output is right.
    let s2 = sessions(c)?;
    let with_spare = points(c, &[], &["hapee4"], true);
    let mut m = Monitor::new(after_remove.clone(), true);
    let lines = reload(c, "aggr1", "aggr1.rule.cfg")?;
    expect_line(
        &lines,
        "section `myaggr`: rule `from .spare to .sparesum` added",
    )?;
    let took = c.watch(&mut m, SETTLE, |c, _, _| Ok(exact_now(c, &with_spare)))?;
    c.measure(
        "the new rule's output right (by the nodes' resync)",
        format!("{took:.2?}"),
    );
    hold(c, "after the rule", with_spare.clone())?;
    untouched(c, &s2, "rule added")?;

    // 4. A broken file, under traffic: nothing changes.
    let s3 = sessions(c)?;
    let live: Vec<&str> = vec!["hapee1", "hapee2", "hapee3", "hapee5"];
    let bg = c.background(&live, 10..=24, Duration::from_secs(20))?;
    let mut m = Monitor::new(with_spare.clone(), false);
    std::thread::sleep(Duration::from_millis(300));
    let lines = reload(c, "aggr1", "aggr1.broken.cfg")?;
    expect_line(&lines, "the configuration is invalid, nothing changed")?;
    let hupped = Instant::now();
    let mut bg = Some(bg);
    c.watch(&mut m, SETTLE, |c, m, _| {
        if hupped.elapsed() >= TRAFFIC_AFTER
            && let Some(b) = bg.take()
        {
            let n = b.finish()?;
            c.outcome.requests += n;
            c.step(format!("traffic stopped ({n} requests in the background)"));
        }
        Ok(bg.is_none() && m.all_right_now)
    })?;
    c.monitor_summary("broken-file watch (under traffic)", &m, false);
    c.converge_on(
        "after the broken file: every sum, the new rule's too",
        &with_spare,
    )?;
    hold(c, "after the broken file", with_spare)?;
    c.fleet.check_all_alive()?;
    untouched(c, &s3, "broken file")?;
    Ok(())
}
