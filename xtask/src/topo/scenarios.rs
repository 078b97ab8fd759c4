//! The scenarios. Each starts its topology from scratch, drives traffic, injects
//! its fault and checks the sums; see `docs/ha.md` for what each one proves.

use super::impostor::{self, FAKE_COUNT};
use super::observe::{self, Monitor, PeerLine, Point, Tier};
use super::run::Ctx;
use super::topology::{FAMILIES, ShardSel};
use anyhow::{Context, Result, bail};
use std::time::{Duration, Instant};
use stktagg_wire::StatusCode;

/// A scenario: name, topology, one line of description, body.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    /// The name given on the command line.
    pub name: &'static str,
    /// The directory under `tests/topologies/`.
    pub topology: &'static str,
    /// What it checks.
    pub about: &'static str,
    /// Whether its nodes use `shards` (HAProxy >= 2.7): they then run the cached
    /// HAProxy 3.0 when the haproxy given is older.
    pub needs_shards: bool,
    /// The body.
    pub run: fn(&mut Ctx) -> Result<()>,
}

/// Every scenario, in the order `topo-test` runs them.
pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "multi-level",
        topology: "multi-level",
        about: "2 intermediates x 2 nodes, 1 top (no group): .aggr and .l2 right on every node",
        needs_shards: false,
        run: multi_level,
    },
    Scenario {
        name: "ha",
        topology: "ha",
        about: "the seed's HA setup as written (incl. the :11111/:22222 slip): sessions up, sums right",
        needs_shards: false,
        run: ha,
    },
    Scenario {
        name: "ha-failover",
        topology: "ha",
        about: "kill -9 aggr3 under traffic: every .l2 converges again through aggr4; failover time",
        needs_shards: false,
        run: ha_failover,
    },
    Scenario {
        name: "ha-recovery",
        topology: "ha",
        about: "restart aggr3: it rebuilds, takes over again, no reading ever doubled or stale",
        needs_shards: false,
        run: ha_recovery,
    },
    Scenario {
        name: "intermediate-restart",
        topology: "ha",
        about: "kill -9 and restart aggr1: it rebuilds from its nodes, sums right, never doubled",
        needs_shards: false,
        run: intermediate_restart,
    },
    Scenario {
        name: "node-restart",
        topology: "ha",
        about: "hard-restart hapee1: teach-back restores its counts, fleet sums never drop nor double",
        needs_shards: false,
        run: node_restart,
    },
    Scenario {
        name: "partition",
        topology: "ha",
        about: "SIGSTOP aggr1 past the idle timeout, then SIGCONT: sessions recover, sums right",
        needs_shards: false,
        run: partition,
    },
    Scenario {
        name: "tls",
        topology: "ha-tls",
        about: "the HA setup with every link over mutual TLS: sums right under a continuous watch; impostors without a valid certificate for the name they claim refused, counted, nothing of them counted",
        needs_shards: false,
        run: tls,
    },
    Scenario {
        name: "impostor",
        topology: "multi-level",
        about: "hellos claiming hapee1, aggr3, aggr1 from a spare loopback address: refused, counted, nothing of them counted, real sessions kept",
        needs_shards: false,
        run: impostor,
    },
    Scenario {
        name: "sharded",
        topology: "sharded",
        about: "4 nodes with `shards 2` (HAProxy >= 2.7), a pair on shard 1, one aggregator on shard 2: sums exact; kill one of the pair; lose and rebuild shard 2; node restart",
        needs_shards: true,
        run: sharded,
    },
    Scenario {
        name: "sharded-upper",
        topology: "sharded-upper",
        about: "2 intermediates shard what they send up to a 2-shard top tier: every .l2 exact; lose and rebuild top2",
        needs_shards: true,
        run: sharded_upper,
    },
    Scenario {
        name: "reload",
        topology: "reload",
        about: "SIGHUP under traffic: a node added, a node removed, a rule added, a broken file: no reading above the truth, no dip, untouched sessions never re-established",
        needs_shards: false,
        run: super::reload::reload_scenario,
    },
];

const ALL: [&str; 4] = ["hapee1", "hapee2", "hapee3", "hapee4"];

/// How long a recovery may take to show in the monitored tables.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(25);
/// How long every table must stay right, read every ~20 ms, before a recovery
/// counts as done: a late double or a late drop shows here.
const HOLD: Duration = Duration::from_millis(1500);
/// How long traffic goes on after the kill in `ha-failover`.
const TRAFFIC_AFTER_KILL: Duration = Duration::from_millis(200);

fn multi_level(c: &mut Ctx) -> Result<()> {
    c.start_all()?;
    for i in c.intermediates() {
        if c.active_up(&i)?.as_deref() != Some("aggr3") {
            bail!("{i} does not relay aggr3");
        }
    }
    c.send(&ALL, 1..=12, 2)?;
    c.converge("first wave: .aggr and .l2 on every node and aggregator")?;
    c.send(&["hapee1", "hapee4"], 7..=18, 1)?;
    c.converge("second wave (two nodes, old and new keys)")?;
    Ok(())
}

fn ha(c: &mut Ctx) -> Result<()> {
    c.start_all()?;
    // aggr1 and aggr2 dial aggr3/aggr4 on :11111, where nothing listens; the
    // sessions come from aggr3/aggr4 dialing the intermediates.
    for i in c.intermediates() {
        let peers = c.peers(&i)?;
        for top in ["aggr3", "aggr4"] {
            let p = peers.iter().find(|p| p.name == top);
            if p.is_none_or(|p| p.state != "ESTA") {
                bail!("{i} has no session with {top} despite the seed's port slip: {p:?}");
            }
        }
        if c.active_up(&i)?.as_deref() != Some("aggr3") {
            bail!("{i} does not relay aggr3, the first member of group 1");
        }
    }
    c.step(
        "aggr1 and aggr2 see aggr3 and aggr4 up (sessions dialed by the top level); aggr3 active",
    );
    c.send(&ALL, 1..=12, 2)?;
    c.converge("first wave: every level, both top replicas complete")?;
    c.send(&["hapee2", "hapee3"], 5..=20, 1)?;
    c.converge("second wave (two nodes, old and new keys)")?;
    Ok(())
}

fn all_active(c: &Ctx, member: &str) -> Result<bool> {
    for i in c.intermediates() {
        if c.active_up(&i)?.as_deref() != Some(member) {
            return Ok(false);
        }
    }
    Ok(true)
}

fn ha_failover(c: &mut Ctx) -> Result<()> {
    c.start_all()?;
    c.send(&ALL, 1..=12, 1)?;
    c.converge("before the fault")?;
    let bg = c.background(&ALL, 1..=20, Duration::from_secs(20))?;
    std::thread::sleep(Duration::from_millis(800));
    let pid = c.fleet.pid("aggr3").unwrap_or(0);
    c.fleet.kill9("aggr3")?;
    let killed = Instant::now();
    c.step(format!("kill -9 aggr3 (pid {pid}) with traffic flowing"));
    // Traffic goes on for a while after the kill, so that the failover is judged
    // on data that only aggr4 can have relayed.
    let mut bg = Some(bg);
    let mut switched: Option<Duration> = None;
    let mut last_request: Option<Duration> = None;
    let mut m = Monitor::new(c.points_of(Tier::L2), false);
    c.watch(&mut m, RECOVERY_TIMEOUT, |c, m, _| {
        if switched.is_none() && all_active(c, "aggr4")? {
            switched = Some(killed.elapsed());
        }
        if killed.elapsed() >= TRAFFIC_AFTER_KILL
            && let Some(b) = bg.take()
        {
            let n = b.finish()?;
            last_request = Some(killed.elapsed());
            c.outcome.requests += n;
            c.step(format!("traffic stopped ({n} requests in the background)"));
        }
        Ok(bg.is_none() && switched.is_some() && m.all_right_now)
    })?;
    let failover = killed.elapsed();
    c.measure(
        "switch: aggr4 active on every intermediate after the kill",
        format!("{:.2?}", switched.unwrap_or_default()),
    );
    c.measure(
        "failover time: kill -9 aggr3 -> every .l2 right (traffic ran 0.2 s past the kill)",
        format!("{failover:.2?}"),
    );
    c.measure(
        "last request -> every .l2 right",
        format!(
            "{:.2?}",
            failover.saturating_sub(last_request.unwrap_or_default())
        ),
    );
    c.monitor_summary("failover watch", &m, false);
    c.outcome.checks.push((
        "every .l2 right through aggr4 (from the kill)".into(),
        failover,
    ));
    c.converge("all levels right after the failover")?;
    c.send(&ALL, 15..=30, 1)?;
    c.converge("new traffic through aggr4")?;
    if !all_active(c, "aggr4")? {
        bail!("aggr4 is no longer the active member");
    }
    Ok(())
}

fn ha_recovery(c: &mut Ctx) -> Result<()> {
    c.start_all()?;
    c.send(&ALL, 1..=12, 1)?;
    c.converge("before the fault")?;
    c.fleet.kill9("aggr3")?;
    c.step("kill -9 aggr3");
    c.send(&ALL, 8..=20, 1)?;
    c.converge("through aggr4 while aggr3 is down")?;
    // Traffic paused: the truth is known and fixed through the switch back.
    c.fleet.start("aggr3")?;
    let restarted = Instant::now();
    c.step("aggr3 restarted; watching every .l2 every ~20 ms through the switch back");
    let mut m = Monitor::new(c.points_of(Tier::L2), true);
    let mut switched: Option<Duration> = None;
    c.watch(&mut m, RECOVERY_TIMEOUT, |c, m, _| {
        if switched.is_none() && all_active(c, "aggr3")? {
            switched = Some(restarted.elapsed());
            c.step("aggr3 active again on every intermediate");
        }
        // Keep watching past the switch, where a doubled or stale value would show.
        Ok(switched.is_some_and(|s| restarted.elapsed() >= s + HOLD) && m.all_right_now)
    })?;
    let rebuilt = ["aggr3:myl2/ip.l2", "aggr3:myl2/str.l2"]
        .iter()
        .filter_map(|l| m.right_at.get(*l))
        .max()
        .copied();
    c.measure(
        "aggr3 rebuilt (its own .l2 right) after restart",
        format!("{:.2?}", rebuilt.unwrap_or_default()),
    );
    c.measure(
        "switch back: aggr3 active on every intermediate after restart",
        format!("{:.2?}", switched.unwrap_or_default()),
    );
    c.monitor_summary("switch-back watch", &m, true);
    if let Some(s) = switched {
        c.outcome
            .checks
            .push(("switch back to aggr3 (from its restart)".into(), s));
    }
    c.converge("all levels right after the switch back")?;
    c.send(&ALL, 18..=26, 1)?;
    c.converge("new traffic through aggr3")?;
    Ok(())
}

fn intermediate_restart(c: &mut Ctx) -> Result<()> {
    c.start_all()?;
    c.send(&ALL, 1..=12, 1)?;
    c.converge("before the fault")?;
    c.fleet.kill9("aggr1")?;
    c.step("kill -9 aggr1");
    c.send(&["hapee1", "hapee3"], 6..=16, 1)?;
    // Traffic paused from here: what aggr1 must rebuild is fixed.
    c.fleet.start("aggr1")?;
    c.step("aggr1 restarted; watching every table for doubles");
    let mut m = Monitor::new(c.points(), false);
    c.watch(&mut m, RECOVERY_TIMEOUT, |_, m, _| Ok(m.settled_for(HOLD)))?;
    let took = m.all_right_at.unwrap_or_default();
    c.measure(
        "rebuild: aggr1 restart -> every level right",
        format!("{took:.2?}"),
    );
    c.monitor_summary("restart watch", &m, true);
    c.outcome
        .checks
        .push(("every level right after aggr1's restart".into(), took));
    c.wait_sessions(Duration::from_secs(10))?;
    c.converge("all levels right, sessions up")?;
    c.send(&["hapee1", "hapee2"], 14..=22, 1)?;
    c.converge("new traffic through the restarted aggr1")?;
    Ok(())
}

fn node_restart(c: &mut Ctx) -> Result<()> {
    c.start_all()?;
    c.send(&ALL, 1..=12, 2)?;
    c.converge("before the fault")?;
    let pid = c.fleet.pid("hapee1").unwrap_or(0);
    c.fleet.kill9("hapee1")?;
    c.step(format!("kill -9 hapee1 (pid {pid})"));
    // While hapee1 is away, the fleet's sums must hold everywhere else.
    let mut m = Monitor::new(c.points(), true);
    let away = Duration::from_secs(1);
    c.watch(&mut m, away + Duration::from_secs(5), |_, m, _| {
        Ok(m.elapsed() >= away)
    })?;
    c.step(format!(
        "sums held on every other process for {away:?} ({} rounds)",
        m.rounds
    ));
    c.fleet.start("hapee1")?;
    let restarted = m.elapsed();
    c.step("hapee1 restarted with empty tables; watching every table (no drop, no double)");
    c.watch(&mut m, RECOVERY_TIMEOUT, |_, m, _| {
        Ok(m.settled_for(HOLD)
            && m.right_at
                .keys()
                .filter(|l| l.starts_with("hapee1:"))
                .count()
                == 6)
    })?;
    let since_restart = |label: &str| m.right_at.get(label).map(|t| t.saturating_sub(restarted));
    let taught = ["hapee1:fleet/ip.uncombined", "hapee1:fleet/str.uncombined"]
        .iter()
        .filter_map(|l| since_restart(l))
        .max()
        .unwrap_or_default();
    let all = m
        .right_at
        .iter()
        .filter(|(l, _)| l.starts_with("hapee1:"))
        .map(|(_, t)| t.saturating_sub(restarted))
        .max()
        .unwrap_or_default();
    c.measure(
        "teach-back: hapee1's .uncombined back to its counts after restart",
        format!("{taught:.2?}"),
    );
    c.measure(
        "node restart -> hapee1's .aggr and .l2 right too",
        format!("{all:.2?}"),
    );
    c.monitor_summary("node restart watch", &m, true);
    c.outcome
        .checks
        .push(("every table right after hapee1's restart".into(), all));
    c.wait_sessions(Duration::from_secs(10))?;
    c.converge("all levels right, sessions up")?;
    c.send(&["hapee1"], 1..=16, 2)?;
    c.converge("new traffic into hapee1 adds exactly")?;
    Ok(())
}

fn partition(c: &mut Ctx) -> Result<()> {
    c.start_all()?;
    c.send(&ALL, 1..=12, 1)?;
    c.converge("before the fault")?;
    let pid = c.fleet.pid("aggr1").unwrap_or(0);
    c.fleet.freeze("aggr1")?;
    let frozen = Instant::now();
    c.step(format!("kill -STOP aggr1 (pid {pid})"));
    c.send(&ALL, 8..=18, 1)?;
    // Past the idle timeout (5 s) the peers must have dropped their sessions.
    let idle = Duration::from_millis(6500);
    let mut dropped = None;
    while frozen.elapsed() < idle + Duration::from_secs(5) {
        let down = c
            .peers("aggr3")?
            .iter()
            .any(|p| p.name == "aggr1" && p.state != "ESTA");
        if down && dropped.is_none() {
            dropped = Some(frozen.elapsed());
        }
        if dropped.is_some() && frozen.elapsed() >= idle {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let Some(dropped) = dropped else {
        bail!(
            "aggr3 still shows a session with the frozen aggr1 after {:?}",
            frozen.elapsed()
        );
    };
    c.measure(
        "aggr3 dropped its session with the frozen aggr1 after",
        format!("{dropped:.2?}"),
    );
    c.fleet.thaw("aggr1")?;
    let thawed = Instant::now();
    c.step(format!("kill -CONT aggr1 after {:.2?}", frozen.elapsed()));
    let mut m = Monitor::new(c.points(), false);
    c.watch(&mut m, RECOVERY_TIMEOUT, |_, m, _| Ok(m.settled_for(HOLD)))?;
    let took = m.all_right_at.unwrap_or_default();
    c.measure(
        "partition healed: SIGCONT -> every level right",
        format!("{took:.2?}"),
    );
    c.monitor_summary("heal watch", &m, true);
    c.outcome
        .checks
        .push(("every level right after SIGCONT".into(), took));
    c.wait_sessions(Duration::from_secs(15))?;
    c.measure(
        "every session up again after SIGCONT",
        format!("{:.2?}", thawed.elapsed()),
    );
    let renewed = c.peers("aggr1")?.iter().filter(|p| p.sessions >= 2).count();
    if renewed == 0 {
        bail!("aggr1 shows no renewed session after the partition");
    }
    c.converge("all levels right, sessions up")?;
    c.send(&ALL, 16..=24, 1)?;
    c.converge("new traffic after the partition")?;
    Ok(())
}

/// The impostors: the aggregator dialed, the peer claimed, the table pushed
/// behind the hello.
const IMPOSTORS: [(&str, &str, &str); 3] = [
    // A node's input: it would add to every `.aggr` and `.l2`.
    ("aggr1", "hapee1", "ip.uncombined"),
    // The top's forward table: relayed to the nodes as the fleet's sums.
    ("aggr1", "aggr3", "ip.l2"),
    // An intermediate's sums: they would add to the top's `.l2`.
    ("aggr3", "aggr1", "ip.aggr"),
];

/// The `show peers` line of `claimed` on aggregator `target`.
fn peer_line(c: &Ctx, target: &str, claimed: &str) -> Result<PeerLine> {
    c.peers(target)?
        .into_iter()
        .find(|p| p.name == claimed)
        .with_context(|| format!("{target} has no peer `{claimed}`"))
}

/// Every real session the impostors claimed is the one it was, and each
/// impostor was counted once more than in `before`.
fn real_sessions_kept(c: &Ctx, before: &[PeerLine], refused: u64) -> Result<()> {
    for ((target, claimed, _), old) in IMPOSTORS.iter().zip(before) {
        let now = peer_line(c, target, claimed)?;
        if now.addr_refused != old.addr_refused + refused {
            bail!(
                "{target} counted {} refusals for `{claimed}`, want {}",
                now.addr_refused,
                old.addr_refused + refused
            );
        }
        let same = now.state == "ESTA"
            && (now.sessions, now.collisions, &now.remote)
                == (old.sessions, old.collisions, &old.remote);
        if !same {
            bail!("{target}'s session with the real `{claimed}` changed: {old:?} -> {now:?}");
        }
    }
    Ok(())
}

fn impostor(c: &mut Ctx) -> Result<()> {
    c.start_all()?;
    c.send(&ALL, 1..=12, 2)?;
    c.converge("before the impostors")?;
    let src = c.topo.spare_ip(199)?;
    let before = IMPOSTORS
        .iter()
        .map(|(target, claimed, _)| peer_line(c, target, claimed))
        .collect::<Result<Vec<_>>>()?;
    for ((target, claimed, table), old) in IMPOSTORS.iter().zip(&before) {
        let addr = c
            .topo
            .aggregator(target)
            .with_context(|| format!("no aggregator `{target}`"))?
            .listen;
        let a = impostor::attempt(src, addr, target, claimed, table)?;
        if a.code != StatusCode::UnknownPeer || !a.closed {
            bail!(
                "{claimed} -> {target} from {src}: `{}`, closed: {}",
                a.status,
                a.closed
            );
        }
        c.step(format!(
            "{claimed} -> {target} from {src} ({table} = {FAKE_COUNT} pipelined): `{}`, closed; the real one's session is from {}",
            a.status, old.remote
        ));
    }
    real_sessions_kept(c, &before, 1)?;
    c.step("every refusal counted on its target; every real session the same (sessions, collisions, remote)");
    c.converge("right after the impostors: nothing of theirs counted")?;
    c.send(&ALL, 5..=16, 1)?;
    c.converge("new traffic: every sum exact")?;
    real_sessions_kept(c, &before, 1)?;
    Ok(())
}

/// Every established session of every aggregator runs over TLS.
fn all_sessions_tls(c: &Ctx) -> Result<usize> {
    let mut n = 0;
    for a in &c.topo.aggregators {
        for p in c.peers(&a.name)? {
            if p.state != "ESTA" {
                continue;
            }
            if p.xprt != "SSL" {
                bail!(
                    "{}'s session with {} is not over TLS: {p:?}",
                    a.name,
                    p.name
                );
            }
            n += 1;
        }
    }
    Ok(n)
}

/// `TlsHandshakeFailures` in `show info` of aggregator `name`.
fn tls_failures(c: &Ctx, name: &str) -> Result<u64> {
    let info = c.fleet.api(name)?.command("show info")?;
    info.lines()
        .find_map(|l| l.strip_prefix("TlsHandshakeFailures: "))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no TlsHandshakeFailures in {name}'s show info:\n{info}"))
}

/// The TLS impostors: target, claimed peer, table pushed, and the certificate
/// shown: `None` for none, `Some(name)` for `name`'s real one (the run's CA), or
/// `Some("other-ca:" + name)` for one of that name from another CA.
const TLS_IMPOSTORS: [(&str, &str, &str, Option<&str>); 4] = [
    ("aggr1", "hapee1", "ip.uncombined", None),
    ("aggr1", "hapee1", "ip.uncombined", Some("other-ca:hapee1")),
    ("aggr1", "hapee1", "ip.uncombined", Some("hapee2")),
    ("aggr3", "aggr1", "ip.aggr", Some("hapee1")),
];

fn tls(c: &mut Ctx) -> Result<()> {
    c.start_all()?;
    let n = all_sessions_tls(c)?;
    c.step(format!(
        "all {n} established sessions of the aggregators are over TLS"
    ));
    c.send(&ALL, 1..=12, 2)?;
    c.converge("first wave over mutual TLS: every level, both top replicas")?;
    let dir = c.fleet.dir().to_owned();
    let ca_pem = std::fs::read_to_string(dir.join("ca.pem")).context("reading the run's CA")?;
    let other_ca = stktagg_tests::pki::Ca::new("another CA").context("another CA")?;
    let watched: Vec<&str> = vec!["aggr1", "aggr3"];
    let before: Vec<(String, Vec<PeerLine>)> = watched
        .iter()
        .map(|a| Ok(((*a).to_owned(), c.peers(a)?)))
        .collect::<Result<_>>()?;
    let failures_before = tls_failures(c, "aggr1")?;
    // The impostors knock while traffic flows, under the continuous watch.
    let bg = c.background(&ALL, 1..=20, Duration::from_secs(20))?;
    let mut bg = Some(bg);
    let mut knocked = false;
    let mut m = Monitor::new(c.points(), false);
    c.watch(&mut m, RECOVERY_TIMEOUT, |c, m, t| {
        if !knocked {
            knocked = true;
            for (target, claimed, table, cert) in TLS_IMPOSTORS {
                let addr = c
                    .topo
                    .aggregator(target)
                    .with_context(|| format!("no aggregator `{target}`"))?
                    .listen;
                let leaf = match cert {
                    None => None,
                    Some(name) => Some(match name.strip_prefix("other-ca:") {
                        Some(n) => other_ca.leaf(n)?,
                        None => {
                            let pem = std::fs::read_to_string(dir.join(format!("{name}.pem")))?;
                            let split = pem.find("-----BEGIN PRIVATE KEY").unwrap_or(pem.len());
                            stktagg_tests::pki::Leaf {
                                cert_pem: pem[..split].to_owned(),
                                key_pem: pem[split..].to_owned(),
                            }
                        }
                    }),
                };
                let got =
                    impostor::attempt_tls(addr, target, claimed, table, &ca_pem, leaf.as_ref())?;
                let shown = match cert {
                    None => "no certificate".to_owned(),
                    Some(n) => match n.strip_prefix("other-ca:") {
                        Some(n) => format!("another CA's certificate for {n}"),
                        None => format!("{n}'s certificate"),
                    },
                };
                // Without a certificate of the run's CA the handshake fails; with
                // one that names another peer, the hello gets 504.
                let chained = cert.is_some_and(|n| !n.starts_with("other-ca:"));
                match &got {
                    stktagg_tests::tls::TlsAttempt::Refused(why) if !chained => {
                        c.step(format!(
                            "{claimed} -> {target} over TLS with {shown}: handshake refused ({why})"
                        ));
                    }
                    stktagg_tests::tls::TlsAttempt::Status {
                        code,
                        closed: true,
                        line,
                    } if chained && *code == StatusCode::UnknownPeer => {
                        c.step(format!(
                            "{claimed} -> {target} over TLS with {shown}: `{line}`, closed"
                        ));
                    }
                    _ => bail!("{claimed} -> {target} over TLS with {shown}: {got:?}"),
                }
            }
            let addr = c.topo.aggregator("aggr1").context("aggr1")?.listen;
            if let Some(status) = impostor::attempt_plain_on_tls(addr, "aggr1", "aggr3", "ip.l2")? {
                bail!("plain text on aggr1's TLS port got a status line: `{status}`");
            }
            c.step("aggr3 -> aggr1 in plain text on the TLS port: closed without a status line");
        }
        if t >= Duration::from_millis(800)
            && let Some(b) = bg.take()
        {
            let n = b.finish()?;
            c.outcome.requests += n;
            c.step(format!("traffic stopped ({n} requests in the background)"));
        }
        Ok(bg.is_none() && m.settled_for(HOLD))
    })?;
    c.monitor_summary("impostor watch", &m, false);
    let failures = tls_failures(c, "aggr1")? - failures_before;
    if failures != 3 {
        bail!("aggr1 counted {failures} failed TLS handshakes, want 3");
    }
    for (name, old) in &before {
        let now = c.peers(name)?;
        for p in &now {
            let o = old.iter().find(|o| o.name == p.name);
            let want = TLS_IMPOSTORS
                .iter()
                .filter(|(t, cl, _, cert)| {
                    t == name && *cl == p.name && cert.is_some_and(|n| !n.starts_with("other-ca:"))
                })
                .count() as u64;
            let same = o.is_some_and(|o| {
                (o.sessions, o.collisions, &o.remote, &o.state)
                    == (p.sessions, p.collisions, &p.remote, &p.state)
                    && p.cert_refused == o.cert_refused + want
            });
            if !same {
                bail!(
                    "{name}'s session with {} changed or miscounted: {o:?} -> {p:?} (want {want} more cert_refused)",
                    p.name
                );
            }
        }
    }
    c.step("every refusal counted (3 failed TLS handshakes on aggr1, each wrong certificate as cert_refused); every real session the same");
    c.converge("after the impostors: nothing of theirs counted")?;
    c.send(&ALL, 5..=16, 1)?;
    c.converge("new traffic over mutual TLS: every sum exact")?;
    all_sessions_tls(c)?;
    Ok(())
}

/// The selection of the keys of `shard` as aggregator `aggr` holds them, per
/// family, judged leniently (a view of other tables).
fn shard_views(c: &Ctx, aggr: &str) -> Result<Vec<(super::topology::Family, ShardSel)>> {
    let a = c
        .topo
        .aggregator(aggr)
        .with_context(|| format!("no aggregator `{aggr}`"))?;
    FAMILIES
        .iter()
        .map(|&f| {
            let sel = c
                .topo
                .shard_of(a, f)
                .with_context(|| format!("`{aggr}` serves no shard"))?;
            Ok((f, sel))
        })
        .collect()
}

/// Every point, but the nodes' tables of `tier` (and the intermediates' relayed
/// `.l2` when `tier` is `.l2`) judged on the keys of `views` only: what must stay
/// right while the other shard has no aggregator.
fn other_shard_gone(
    c: &Ctx,
    tier: Tier,
    views: &[(super::topology::Family, ShardSel)],
) -> Vec<Point> {
    c.points()
        .into_iter()
        .map(|p| {
            let relayed = p.tier == tier && p.shard.is_none() && (p.on_node || tier == Tier::L2);
            match views.iter().find(|(f, _)| *f == p.family) {
                Some((_, sel)) if relayed => p.view(*sel),
                _ => p,
            }
        })
        .collect()
}

/// The nodes' `tier` tables, for a comparison before and after.
fn node_tables(c: &Ctx, tier: Tier) -> Result<observe::Snapshot> {
    let points: Vec<Point> = c
        .points()
        .into_iter()
        .filter(|p| p.on_node && p.tier == tier)
        .collect();
    observe::snapshot(&c.fleet, &points).map_err(|e| anyhow::anyhow!("reading the nodes: {e}"))
}

/// Checks that the keys of `gone` (the shard without aggregator) did not move on
/// the nodes since `before`: the same values for the keys they had, nothing for
/// new ones. Returns how many entries were compared.
fn frozen(
    c: &Ctx,
    tier: Tier,
    before: &observe::Snapshot,
    gone: &[(super::topology::Family, ShardSel)],
) -> Result<usize> {
    let now = node_tables(c, tier)?;
    let mut compared = 0;
    for ((proc, table), entries) in &now {
        let Some(old) = before.get(&(proc.clone(), table.clone())) else {
            bail!("{proc}:{table} was not read before");
        };
        let Some((family, sel)) = gone
            .iter()
            .find(|(f, _)| table.contains(&format!("/{}.", f.prefix())))
        else {
            continue;
        };
        let of_shard =
            |key: &String| observe::client_of(*family, key).is_some_and(|k| sel.holds(*family, k));
        for key in entries.keys().chain(old.keys()).filter(|k| of_shard(k)) {
            let (was, is) = (old.get(key), entries.get(key));
            if was != is {
                bail!(
                    "{proc}:{table} key {key} moved while its shard had no aggregator: {was:?} -> {is:?}"
                );
            }
            compared += 1;
        }
    }
    Ok(compared)
}

fn sharded(c: &mut Ctx) -> Result<()> {
    c.start_all()?;
    c.send(&ALL, 1..=24, 2)?;
    c.converge("first wave: each aggregator holds its shard's keys only, every node every sum")?;
    let one = shard_views(c, "shard1a")?;
    let split: Vec<String> = one
        .iter()
        .map(|(f, sel)| {
            let n = (1..=24u32).filter(|&k| sel.holds(*f, k)).count();
            format!("{}: {n} of 24 keys in shard 1", f.prefix())
        })
        .collect();
    c.measure("how the nodes split the keys", split.join(", "));

    // One aggregator of the pair dies: its partner has every key of the shard.
    let pid = c.fleet.pid("shard1a").unwrap_or(0);
    c.fleet.kill9("shard1a")?;
    c.step(format!(
        "kill -9 shard1a (pid {pid}), its partner shard1b stays"
    ));
    c.converge("right at once without shard1a")?;
    let mut m = Monitor::new(c.points(), true);
    c.watch(&mut m, RECOVERY_TIMEOUT, |_, m, _| Ok(m.settled_for(HOLD)))?;
    c.monitor_summary("pair member killed", &m, true);
    c.send(&ALL, 10..=30, 1)?;
    c.converge("new traffic: shard 1 through shard1b alone")?;
    c.fleet.start("shard1a")?;
    // It holds its sums back until the nodes have answered its resync: a partial
    // sum of its would pull the nodes below shard1b's right ones.
    c.step("shard1a restarted; watching every table (no drop, no double)");
    let mut m = Monitor::new(c.points(), true);
    c.watch(&mut m, RECOVERY_TIMEOUT, |_, m, _| Ok(m.settled_for(HOLD)))?;
    let took = m.all_right_at.unwrap_or_default();
    c.measure(
        "pair member restarted -> every table right (shard1a rebuilt from the nodes)",
        format!("{took:.2?}"),
    );
    c.monitor_summary("pair member restart", &m, true);
    c.wait_sessions(Duration::from_secs(10))?;
    c.converge("the pair complete again")?;

    // Shard 2 loses its only aggregator: the nodes keep its last sums, shard 1
    // goes on.
    let two = shard_views(c, "shard2")?;
    let before = node_tables(c, Tier::Aggr)?;
    c.fleet.kill9("shard2")?;
    c.step("kill -9 shard2, the only aggregator of shard 2");
    c.send(&ALL, 20..=40, 1)?;
    let points = other_shard_gone(c, Tier::Aggr, &one);
    c.converge_on("shard 1 right on every node without shard 2", &points)?;
    let n = frozen(c, Tier::Aggr, &before, &two)?;
    c.measure(
        "shard 2 without aggregator: its sums on the nodes",
        format!("unchanged ({n} entries compared), new keys absent"),
    );
    c.fleet.start("shard2")?;
    let restarted = Instant::now();
    c.step("shard2 restarted; watching every table (no drop, no double)");
    let mut m = Monitor::new(c.points(), true);
    c.watch(&mut m, RECOVERY_TIMEOUT, |_, m, _| Ok(m.settled_for(HOLD)))?;
    let took = m.all_right_at.unwrap_or_default();
    c.measure(
        "shard2 restarted -> its shard rebuilt from the nodes, every sum right",
        format!("{took:.2?}"),
    );
    c.monitor_summary("shard 2 rebuild", &m, true);
    c.outcome.checks.push((
        "shard 2 rebuilt (from its restart)".into(),
        restarted.elapsed(),
    ));
    c.wait_sessions(Duration::from_secs(10))?;
    c.converge("every shard right again")?;

    // A node restarts: each shard teaches it back its own entries.
    let pid = c.fleet.pid("hapee1").unwrap_or(0);
    c.fleet.kill9("hapee1")?;
    c.step(format!("kill -9 hapee1 (pid {pid})"));
    let mut m = Monitor::new(c.points(), true);
    let away = Duration::from_secs(1);
    c.watch(&mut m, away + Duration::from_secs(5), |_, m, _| {
        Ok(m.elapsed() >= away)
    })?;
    c.fleet.start("hapee1")?;
    let restarted = m.elapsed();
    c.step("hapee1 restarted with empty tables; watching every table (no drop, no double)");
    c.watch(&mut m, RECOVERY_TIMEOUT, |_, m, _| {
        Ok(m.settled_for(HOLD)
            && m.right_at
                .keys()
                .filter(|l| l.starts_with("hapee1:"))
                .count()
                == 4)
    })?;
    let since = |label: &str| m.right_at.get(label).map(|t| t.saturating_sub(restarted));
    let taught = ["hapee1:fleet/ip.uncombined", "hapee1:fleet/str.uncombined"]
        .iter()
        .filter_map(|l| since(l))
        .max()
        .unwrap_or_default();
    c.measure(
        "node restart -> hapee1's .uncombined taught back by both shards",
        format!("{taught:.2?}"),
    );
    c.monitor_summary("node restart", &m, true);
    c.outcome
        .checks
        .push(("hapee1 taught back by every shard".into(), taught));
    c.wait_sessions(Duration::from_secs(10))?;
    c.converge("all right, sessions up")?;
    c.send(&["hapee1"], 1..=40, 1)?;
    c.converge("new traffic into hapee1 adds exactly")?;
    Ok(())
}

fn sharded_upper(c: &mut Ctx) -> Result<()> {
    c.start_all()?;
    for i in c.intermediates() {
        let text = c.fleet.api(&i)?.command("show peers")?;
        for (top, role) in [("top1", "shard=1 active"), ("top2", "shard=2 active")] {
            let ok = text
                .split("id=")
                .any(|b| b.starts_with(top) && b.contains(role));
            if !ok {
                bail!("{i} does not show {top} as `{role}`:\n{text}");
            }
        }
    }
    c.step("aggr1 and aggr2 send top1 shard 1 and top2 shard 2, and relay both");
    c.send(&ALL, 1..=24, 2)?;
    c.converge("first wave: each top holds its shard's keys only, every .l2 whole")?;
    c.send(&["hapee1", "hapee4"], 12..=36, 1)?;
    c.converge("second wave (two nodes, old and new keys)")?;

    // Shard 2 of the top tier goes away: shard 1 goes on, shard 2 stays frozen.
    let one = shard_views(c, "top1")?;
    let two = shard_views(c, "top2")?;
    let before = node_tables(c, Tier::L2)?;
    c.fleet.kill9("top2")?;
    c.step("kill -9 top2");
    c.send(&ALL, 30..=44, 1)?;
    let points = other_shard_gone(c, Tier::L2, &one);
    c.converge_on("shard 1 of .l2 right everywhere without top2", &points)?;
    let n = frozen(c, Tier::L2, &before, &two)?;
    c.measure(
        "top2 gone: shard 2 of .l2 on the nodes",
        format!("unchanged ({n} entries compared), new keys absent"),
    );
    c.fleet.start("top2")?;
    c.step("top2 restarted; it asks the intermediates, which teach it shard 2 only");
    let mut m = Monitor::new(c.points(), true);
    c.watch(&mut m, RECOVERY_TIMEOUT, |_, m, _| Ok(m.settled_for(HOLD)))?;
    let took = m.all_right_at.unwrap_or_default();
    c.measure(
        "top2 restarted -> rebuilt from the intermediates, every .l2 right",
        format!("{took:.2?}"),
    );
    c.monitor_summary("top2 rebuild", &m, true);
    c.outcome
        .checks
        .push(("top2 rebuilt (from its restart)".into(), took));
    c.wait_sessions(Duration::from_secs(10))?;
    c.converge("every shard right again")?;
    c.send(&ALL, 40..=50, 1)?;
    c.converge("new traffic through both shards")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenario_names_are_unique_and_topologies_exist() {
        let root = crate::project_root().join("tests/topologies");
        let mut names = std::collections::BTreeSet::new();
        for s in SCENARIOS {
            assert!(names.insert(s.name), "duplicate {}", s.name);
            super::super::topology::Topology::load(&root, s.topology).unwrap();
        }
        for required in [
            "multi-level",
            "ha",
            "ha-failover",
            "ha-recovery",
            "intermediate-restart",
            "node-restart",
            "partition",
            "impostor",
            "tls",
            "sharded",
            "sharded-upper",
        ] {
            assert!(names.contains(required), "{required} missing");
        }
    }
}
