//! Reading the tables of a running topology and judging them.
//!
//! An observation point is one table on one process, with its *scope*: the nodes
//! whose `.uncombined` tables it must sum. A node's `.uncombined` has itself as
//! scope, its `.aggr` the nodes of its intermediate, its `.l2` every node; an
//! intermediate's `.aggr` its own nodes and its relayed `.l2` every node; a top
//! aggregator's `.l2` every node. The table of an aggregator that serves one shard
//! holds the keys of that shard only, and nothing else.
//!
//! Two judgements: `exact` (with traffic paused: every point equals the sum of the
//! `.uncombined` tables read from the nodes, and those equal what the driver sent)
//! and `Monitor` (continuously, through a fault: no reading ever exceeds what was
//! sent in its scope, and once a point has been right, it never drops below).

use super::fleet::Fleet;
use super::topology::{FAMILIES, Family, Level, NODE_PEERS_SECTION, ShardSel, Topology};
use super::traffic::Tally;
use anyhow::Result;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use stktagg_tests::show_table::parse_table_dump;

/// The counter compared exactly with the driver's tally.
pub const REQ_CNT: &str = "http_req_cnt";

/// Which table of the tree a point is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Tier {
    /// A node's own counts.
    Uncombined,
    /// An intermediate's sums (on the intermediate, or relayed to its nodes).
    Aggr,
    /// The fleet's sums (on a top aggregator, relayed by intermediates, on nodes).
    L2,
}

impl Tier {
    /// The table suffix.
    pub fn suffix(self) -> &'static str {
        match self {
            Tier::Uncombined => "uncombined",
            Tier::Aggr => "aggr",
            Tier::L2 => "l2",
        }
    }
}

/// One table on one process, and the nodes it sums.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Point {
    /// The process.
    pub proc: String,
    /// Whether the process is a HAProxy node (else a daemon).
    pub on_node: bool,
    /// The table name as the runtime API knows it.
    pub table: String,
    /// The family.
    pub family: Family,
    /// The tier.
    pub tier: Tier,
    /// The nodes whose `.uncombined` it sums.
    pub scope: Vec<String>,
    /// The shard whose keys it holds (strict) or whose keys only are judged.
    pub shard: Option<ShardSel>,
}

impl Point {
    /// `proc:table`, for messages.
    pub fn label(&self) -> String {
        format!("{}:{}", self.proc, self.table)
    }

    /// Whether client `k`'s key is judged on this point: every key, or those of
    /// its shard.
    pub fn judged(&self, k: u32) -> bool {
        self.shard.is_none_or(|s| s.holds(self.family, k))
    }

    /// Whether this point must not hold client `k`'s key at all: a key of another
    /// shard on an aggregator of one shard.
    pub fn foreign(&self, k: u32) -> bool {
        self.shard
            .is_some_and(|s| s.strict && !s.holds(self.family, k))
    }

    /// The same table, judged on the keys of `shard` only (the others are not
    /// looked at): what the nodes hold of a shard.
    pub fn view(&self, shard: ShardSel) -> Point {
        Point {
            shard: Some(ShardSel {
                strict: false,
                ..shard
            }),
            ..self.clone()
        }
    }
}

/// Every observation point of `topo`.
pub fn all_points(topo: &Topology) -> Vec<Point> {
    let all = topo.node_names();
    let has_top = topo.has_top();
    let mut out = Vec::new();
    for fam in FAMILIES {
        for n in &topo.nodes {
            let mut tiers = vec![
                (Tier::Uncombined, vec![n.name.clone()]),
                (Tier::Aggr, topo.neighbours(n)),
            ];
            if has_top {
                tiers.push((Tier::L2, all.clone()));
            }
            for (tier, scope) in tiers {
                out.push(Point {
                    proc: n.name.clone(),
                    on_node: true,
                    table: format!("{NODE_PEERS_SECTION}/{}.{}", fam.prefix(), tier.suffix()),
                    family: fam,
                    tier,
                    scope,
                    shard: None,
                });
            }
        }
        for a in &topo.aggregators {
            // An aggregator of a shard holds that shard's keys of what it sums; what
            // an intermediate relays from above is every key.
            let shard = topo.shard_of(a, fam);
            let mut tiers = match a.level {
                Level::Intermediate => vec![(Tier::Aggr, topo.nodes_of(&a.name), shard)],
                Level::Top => vec![(Tier::L2, all.clone(), shard)],
            };
            if has_top && a.level == Level::Intermediate {
                tiers.push((Tier::L2, all.clone(), None));
            }
            for (tier, scope, shard) in tiers {
                out.push(Point {
                    proc: a.name.clone(),
                    on_node: false,
                    table: format!("{}/{}.{}", a.section, fam.prefix(), tier.suffix()),
                    family: fam,
                    tier,
                    scope,
                    shard,
                });
            }
        }
    }
    out
}

/// One table's entries: key, then counter fields (rates left out: they decay).
pub type Table = BTreeMap<String, BTreeMap<String, i128>>;

/// Tables read in one round, by (process, table).
pub type Snapshot = BTreeMap<(String, String), Table>;

/// Reads every point whose process is running, one runtime API connection per
/// process (`show table a;show table b`). A daemon that has not created a table yet
/// answers `No such table`: that reads as empty. Processes that cannot be read are
/// listed in the error.
pub fn snapshot(fleet: &Fleet, points: &[Point]) -> Result<Snapshot, String> {
    let mut by_proc: BTreeMap<&str, Vec<&Point>> = BTreeMap::new();
    for p in points {
        if fleet.running(&p.proc) {
            by_proc.entry(&p.proc).or_default().push(p);
        }
    }
    let mut snap = Snapshot::new();
    let mut errors = Vec::new();
    for (proc, pts) in by_proc {
        let api = match fleet.api(proc) {
            Ok(a) => a,
            Err(e) => {
                errors.push(e.to_string());
                continue;
            }
        };
        let cmd = pts
            .iter()
            .map(|p| format!("show table {}", p.table))
            .collect::<Vec<_>>()
            .join(";");
        match api.command(&cmd) {
            Ok(text) => match parse_multi(&text) {
                Ok(mut tables) => {
                    for p in pts {
                        let t = tables.remove(&p.table).unwrap_or_default();
                        snap.insert((proc.to_owned(), p.table.clone()), t);
                    }
                }
                Err(e) => errors.push(format!("{proc}: {e}")),
            },
            Err(e) => errors.push(format!("{proc}: {e}")),
        }
    }
    if errors.is_empty() {
        Ok(snap)
    } else {
        Err(errors.join("; "))
    }
}

/// Splits the answer to several `show table <name>` commands into tables.
pub fn parse_multi(text: &str) -> Result<BTreeMap<String, Table>, String> {
    let mut chunks: Vec<String> = Vec::new();
    for line in text.lines() {
        if line.starts_with("# table:") {
            chunks.push(format!("{line}\n"));
        } else if line.contains(": key=") {
            match chunks.last_mut() {
                Some(c) => {
                    c.push_str(line);
                    c.push('\n');
                }
                None => return Err(format!("entry before any table header: {line}")),
            }
        }
        // Anything else is a blank separator or `No such table`.
    }
    let mut out = BTreeMap::new();
    for c in chunks {
        let dump = parse_table_dump(&c).map_err(|e| e.to_string())?;
        let table: Table = dump
            .entries
            .into_iter()
            .map(|e| {
                let fields = e
                    .fields
                    .iter()
                    .filter(|f| f.period_ms.is_none())
                    .filter_map(|f| f.value.parse().ok().map(|v| (f.name.clone(), v)))
                    .collect();
                (e.key, fields)
            })
            .collect();
        out.insert(dump.info.name, table);
    }
    Ok(out)
}

/// The client number of a table key, if it is one of the driver's keys.
pub fn client_of(family: Family, key: &str) -> Option<u32> {
    match family {
        Family::Str => key.strip_prefix("client-")?.parse().ok(),
        Family::Ip => {
            let rest = key.strip_prefix("10.0.")?;
            let (hi, lo) = rest.split_once('.')?;
            let (hi, lo): (u32, u32) = (hi.parse().ok()?, lo.parse().ok()?);
            (hi < 256 && lo < 256).then_some(hi * 256 + lo)
        }
    }
}

fn uncombined_table(family: Family) -> String {
    format!("{NODE_PEERS_SECTION}/{}.uncombined", family.prefix())
}

/// Compares every point with traffic paused. Returns the mismatches (empty when
/// everything is right). Every node's `.uncombined` must hold exactly the requests
/// the driver sent it (`http_req_cnt` per client); every other point must equal the
/// sum, field by field, of the `.uncombined` tables of its scope as read in the
/// same round, with the same keys.
pub fn exact(snap: &Snapshot, points: &[Point], tally: &Tally) -> Vec<String> {
    let mut bad = Vec::new();
    let clients = tally.clients();
    for p in points.iter().filter(|p| p.tier == Tier::Uncombined) {
        let Some(t) = snap.get(&(p.proc.clone(), p.table.clone())) else {
            continue;
        };
        for &k in &clients {
            let sent = Tally::sum(&tally.done, &p.scope, k) as i128;
            let key = p.family.key(k);
            let got = t.get(&key).and_then(|f| f.get(REQ_CNT)).copied();
            if sent > 0 && got != Some(sent) {
                bad.push(format!(
                    "{} key {key}: {REQ_CNT}={got:?}, driver sent {sent}",
                    p.label()
                ));
            }
        }
        for key in t.keys() {
            if client_of(p.family, key).is_none_or(|k| Tally::sum(&tally.done, &p.scope, k) == 0) {
                bad.push(format!("{} has key {key} that nobody sent", p.label()));
            }
        }
    }
    for p in points.iter().filter(|p| p.tier != Tier::Uncombined) {
        let Some(got) = snap.get(&(p.proc.clone(), p.table.clone())) else {
            continue;
        };
        let mut want = Table::new();
        let mut missing = false;
        for n in &p.scope {
            match snap.get(&(n.clone(), uncombined_table(p.family))) {
                Some(t) => {
                    for (key, fields) in t {
                        let w = want.entry(key.clone()).or_default();
                        for (f, v) in fields {
                            *w.entry(f.clone()).or_default() += v;
                        }
                    }
                }
                None => missing = true,
            }
        }
        if missing {
            bad.push(format!(
                "{}: the uncombined tables of its scope were not all read",
                p.label()
            ));
            continue;
        }
        // Of a shard's table, only the shard's keys are wanted; a view judges only
        // those, and a shard's aggregator must hold nothing else.
        let client = |key: &String| client_of(p.family, key);
        want.retain(|key, _| client(key).is_none_or(|k| p.judged(k)));
        let mut got = got.clone();
        got.retain(|key, _| match client(key) {
            Some(k) if p.foreign(k) => {
                bad.push(format!(
                    "{} key {key}: holds a key of another shard",
                    p.label()
                ));
                false
            }
            Some(k) => p.judged(k),
            None => true,
        });
        let keys: BTreeSet<&String> = want.keys().chain(got.keys()).collect();
        for key in keys {
            match (want.get(key), got.get(key)) {
                (Some(_), None) => bad.push(format!("{} key {key}: missing", p.label())),
                (None, Some(_)) => bad.push(format!(
                    "{} key {key}: present but in no uncombined table",
                    p.label()
                )),
                (Some(w), Some(g)) => {
                    for (f, v) in w {
                        if g.get(f) != Some(v) {
                            bad.push(format!(
                                "{} key {key}: {f}={:?}, sum of uncombined is {v}",
                                p.label(),
                                g.get(f)
                            ));
                        }
                    }
                }
                (None, None) => {}
            }
        }
    }
    bad
}

/// Continuous judgement through a fault.
#[derive(Debug)]
pub struct Monitor {
    points: Vec<Point>,
    check_lower: bool,
    check_upper: bool,
    right_once: BTreeSet<usize>,
    start: Instant,
    /// Rounds taken.
    pub rounds: u64,
    /// Tables read.
    pub readings: u64,
    /// Rounds in which some running process could not be read (restarting).
    pub unreadable: u64,
    /// What went wrong, with the time since the monitor started.
    pub violations: Vec<String>,
    /// When every point being read was right in one round, the first time.
    pub all_right_at: Option<Duration>,
    /// Whether the last round had every point right.
    pub all_right_now: bool,
    /// When each point was first right, by label.
    pub right_at: BTreeMap<String, Duration>,
    /// Readings below what was sent on a point that had been right, when lower
    /// bounds are not enforced (reported, not failed).
    pub dips: u64,
    /// The first dip seen.
    pub first_dip: Option<String>,
}

impl Monitor {
    /// A monitor over `points`. With `check_lower`, traffic must be paused: a point
    /// that has been right once must stay right (never below what was sent).
    pub fn new(points: Vec<Point>, check_lower: bool) -> Monitor {
        Monitor {
            points,
            check_lower,
            check_upper: true,
            right_once: BTreeSet::new(),
            start: Instant::now(),
            rounds: 0,
            readings: 0,
            unreadable: 0,
            violations: Vec::new(),
            all_right_at: None,
            all_right_now: false,
            right_at: BTreeMap::new(),
            dips: 0,
            first_dip: None,
        }
    }

    /// A monitor of lower bounds only (traffic paused): a point that has been
    /// right once must never read below what was sent; readings above are not
    /// judged here (a scope that is shrinking, such as a node removed from its
    /// aggregator, is watched from above by another monitor over the old scope).
    pub fn floor(points: Vec<Point>) -> Monitor {
        Monitor {
            check_upper: false,
            ..Monitor::new(points, true)
        }
    }

    /// Time since the monitor was created.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Whether every point is right now and has been since `hold` at least
    /// (counted from the first round where all were right).
    pub fn settled_for(&self, hold: Duration) -> bool {
        self.all_right_now
            && self
                .all_right_at
                .is_some_and(|a| self.elapsed() >= a + hold)
    }

    /// Takes one round of readings. `tally` is called before (lower bounds: what
    /// was answered) and after (upper bounds: what was started) the reading.
    pub fn round(&mut self, fleet: &Fleet, tally: &dyn Fn() -> Tally) {
        self.rounds += 1;
        let before = tally();
        let snap = match snapshot(fleet, &self.points) {
            Ok(s) => s,
            Err(_) => {
                // A process that was just restarted may not answer yet; the next
                // round reads it. Bounded by the caller's deadline.
                self.unreadable += 1;
                return;
            }
        };
        let after = tally();
        self.judge(&snap, &before, &after);
    }

    /// Judges one round of readings: `before` is the tally taken before reading
    /// (lower bounds), `after` the one taken after (upper bounds).
    pub fn judge(&mut self, snap: &Snapshot, before: &Tally, after: &Tally) {
        let t = self.start.elapsed();
        let mut all_right = true;
        for (i, p) in self.points.iter().enumerate() {
            let Some(table) = snap.get(&(p.proc.clone(), p.table.clone())) else {
                continue;
            };
            self.readings += 1;
            let mut right = true;
            for (key, fields) in table {
                let Some(k) = client_of(p.family, key) else {
                    self.violations
                        .push(format!("{t:.2?} {} holds unknown key {key}", p.label()));
                    continue;
                };
                if p.foreign(k) {
                    self.violations.push(format!(
                        "{t:.2?} {} holds key {key}, of another shard",
                        p.label()
                    ));
                    continue;
                }
                if !p.judged(k) {
                    continue;
                }
                let got = fields.get(REQ_CNT).copied().unwrap_or(0);
                let max = Tally::sum(&after.started, &p.scope, k) as i128;
                if self.check_upper && got > max {
                    self.violations.push(format!(
                        "{t:.2?} {} key {key}: {REQ_CNT}={got} exceeds the {max} requests sent (counted twice)",
                        p.label()
                    ));
                }
            }
            for k in before.clients().into_iter().filter(|&k| p.judged(k)) {
                let min = Tally::sum(&before.done, &p.scope, k) as i128;
                let key = p.family.key(k);
                let got = table
                    .get(&key)
                    .and_then(|f| f.get(REQ_CNT))
                    .copied()
                    .unwrap_or(0);
                if got < min {
                    right = false;
                    if self.right_once.contains(&i) {
                        let msg = format!(
                            "{t:.2?} {} key {key}: {REQ_CNT}={got} dropped below the {min} requests sent (stale or lost)",
                            p.label()
                        );
                        if self.check_lower {
                            self.violations.push(msg);
                        } else {
                            self.dips += 1;
                            self.first_dip.get_or_insert(msg);
                        }
                    }
                }
            }
            if right {
                self.right_once.insert(i);
                self.right_at.entry(p.label()).or_insert(t);
            } else {
                all_right = false;
            }
        }
        self.all_right_now = all_right;
        if all_right && self.all_right_at.is_none() {
            self.all_right_at = Some(t);
        }
    }
}

/// One peer line of a daemon's `show peers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerLine {
    /// The peer name.
    pub name: String,
    /// `ESTA`, `CONN` or `IDLE`.
    pub state: String,
    /// For `up` peers: whether it is its group's active member.
    pub active: Option<bool>,
    /// For `up` peers: its group (`-` for an `up` peer without `group`, a group
    /// of its own).
    pub group: Option<String>,
    /// Sessions established in all.
    pub sessions: u64,
    /// Sessions replaced by a newer one.
    pub collisions: u64,
    /// Sessions claiming this peer refused for their address (`addr-check`).
    pub addr_refused: u64,
    /// Sessions claiming this peer refused for a TLS client certificate that
    /// names someone else.
    pub cert_refused: u64,
    /// The established session's transport: `SSL`, `RAW`, or `-` without one.
    pub xprt: String,
    /// The established session's remote address, `-` without one.
    pub remote: String,
}

/// Parses a daemon's `show peers`: HAProxy's layout, one block per peer whose
/// first line is `  0x…: id=<name>(…)`, then indented `key=value` lines.
pub fn parse_peers(text: &str) -> Vec<PeerLine> {
    let mut blocks: Vec<(String, String)> = Vec::new();
    for l in text.lines() {
        let t = l.trim_start();
        let indent = l.len() - t.len();
        if indent == 2
            && let Some((_, rest)) = t.split_once(": id=")
        {
            let name = rest.split('(').next().unwrap_or_default().to_owned();
            blocks.push((name, t.to_owned()));
        } else if indent > 2
            && let Some((_, body)) = blocks.last_mut()
        {
            body.push(' ');
            body.push_str(t);
        }
    }
    blocks
        .into_iter()
        .map(|(name, l)| {
            let field = |k: &str| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix(k).map(str::to_owned))
            };
            let active = if l.contains("role=(up ") {
                Some(l.contains(" active)"))
            } else {
                None
            };
            PeerLine {
                group: active.and(field("group=")),
                name,
                state: field("state=").unwrap_or_default(),
                active,
                sessions: field("sessions=").and_then(|s| s.parse().ok()).unwrap_or(0),
                collisions: field("coll=").and_then(|s| s.parse().ok()).unwrap_or(0),
                addr_refused: field("addr_refused=")
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0),
                cert_refused: field("cert_refused=")
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0),
                xprt: field("xprt=").unwrap_or_else(|| "-".to_owned()),
                // The session's own `addr=` is on its `xprt=` line, after the
                // configured one.
                remote: l
                    .split_once(" xprt=")
                    .and_then(|(_, x)| {
                        x.split_whitespace()
                            .find_map(|w| w.strip_prefix("addr=").map(str::to_owned))
                    })
                    .unwrap_or_else(|| "-".to_owned()),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn topo() -> Topology {
        Topology::load(&crate::project_root().join("tests/topologies"), "ha").unwrap()
    }

    #[test]
    fn points_have_the_right_scopes() {
        let pts = all_points(&topo());
        let find = |proc: &str, table: &str| {
            pts.iter()
                .find(|p| p.proc == proc && p.table == table)
                .unwrap()
        };
        assert_eq!(
            find("hapee3", "fleet/ip.aggr").scope,
            vec!["hapee3", "hapee4"]
        );
        assert_eq!(find("hapee3", "fleet/str.l2").scope.len(), 4);
        assert_eq!(
            find("aggr1", "myaggr/ip.aggr").scope,
            vec!["hapee1", "hapee2"]
        );
        assert_eq!(find("aggr4", "myl2/str.l2").scope.len(), 4);
        // 4 nodes x 3 tiers + 2 intermediates x 2 + 2 tops, per family.
        assert_eq!(pts.len(), 2 * (12 + 4 + 2));
        let _ = Path::new("");
    }

    #[test]
    fn parses_several_tables_in_one_answer() {
        let text = "# table: fleet/ip.l2, type: ip, size:102400, used:1\n\
0x55d1: key=10.0.0.3 use=0 exp=119000 http_req_cnt=7 http_req_rate(10000)=2 gpc0=0\n\n\
No such table\n\n\
# table: fleet/str.l2, type: string, size:102400, used:0\n\n";
        let t = parse_multi(text).unwrap();
        assert_eq!(t["fleet/ip.l2"]["10.0.0.3"][REQ_CNT], 7);
        assert!(!t["fleet/ip.l2"]["10.0.0.3"].contains_key("http_req_rate"));
        assert!(t["fleet/str.l2"].is_empty());
    }

    #[test]
    fn client_numbers_round_trip() {
        for k in [0, 1, 255, 256, 4097] {
            assert_eq!(client_of(Family::Ip, &Family::Ip.key(k)), Some(k));
            assert_eq!(client_of(Family::Str, &Family::Str.key(k)), Some(k));
        }
        assert_eq!(client_of(Family::Ip, "127.0.0.1"), None);
        assert_eq!(client_of(Family::Str, "other"), None);
    }

    fn table(entries: &[(&str, i128)]) -> Table {
        entries
            .iter()
            .map(|(k, v)| ((*k).to_owned(), BTreeMap::from([(REQ_CNT.to_owned(), *v)])))
            .collect()
    }

    #[test]
    fn exact_finds_doubles_missing_and_foreign_keys() {
        let topo = topo();
        let pts: Vec<Point> = all_points(&topo)
            .into_iter()
            .filter(|p| {
                p.family == Family::Str && (p.tier == Tier::Uncombined || p.proc == "hapee1")
            })
            .collect();
        let mut tally = Tally::default();
        for (n, v) in [("hapee1", 2), ("hapee2", 3), ("hapee3", 1), ("hapee4", 4)] {
            tally.started.insert((n.to_owned(), 1), v);
            tally.done.insert((n.to_owned(), 1), v);
        }
        let mut snap = Snapshot::new();
        for (n, v) in [("hapee1", 2), ("hapee2", 3), ("hapee3", 1), ("hapee4", 4)] {
            snap.insert(
                (n.into(), "fleet/str.uncombined".into()),
                table(&[("client-1", v)]),
            );
        }
        snap.insert(
            ("hapee1".into(), "fleet/str.aggr".into()),
            table(&[("client-1", 5)]),
        );
        snap.insert(
            ("hapee1".into(), "fleet/str.l2".into()),
            table(&[("client-1", 10)]),
        );
        assert_eq!(exact(&snap, &pts, &tally), Vec::<String>::new());
        snap.insert(
            ("hapee1".into(), "fleet/str.l2".into()),
            table(&[("client-1", 20)]),
        );
        let bad = exact(&snap, &pts, &tally);
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert!(bad[0].contains("sum of uncombined is 10"), "{bad:?}");
        snap.insert(
            ("hapee1".into(), "fleet/str.l2".into()),
            table(&[("client-1", 10), ("client-9", 1)]),
        );
        assert_eq!(exact(&snap, &pts, &tally).len(), 1);
        snap.insert(
            ("hapee2".into(), "fleet/str.uncombined".into()),
            table(&[("client-1", 2)]),
        );
        let bad = exact(&snap, &pts, &tally);
        assert!(bad.iter().any(|b| b.contains("driver sent 3")), "{bad:?}");
    }

    #[test]
    fn monitor_flags_doubles_and_drops_after_right() {
        let topo = topo();
        let pts: Vec<Point> = all_points(&topo)
            .into_iter()
            .filter(|p| p.proc == "hapee4" && p.table == "fleet/ip.l2")
            .collect();
        let mut tally = Tally::default();
        for n in ALL_NODES {
            tally.started.insert((n.to_owned(), 3), 1);
            tally.done.insert((n.to_owned(), 3), 1);
        }
        let read = |v: i128| {
            Snapshot::from([(
                ("hapee4".to_owned(), "fleet/ip.l2".to_owned()),
                table(&[("10.0.0.3", v)]),
            )])
        };
        let mut m = Monitor::new(pts.clone(), true);
        // Below the truth before it was ever right: still converging, allowed.
        m.judge(&read(2), &tally, &tally);
        assert!(m.violations.is_empty() && !m.all_right_now);
        m.judge(&read(4), &tally, &tally);
        assert!(m.violations.is_empty() && m.all_right_now);
        m.judge(&read(3), &tally, &tally);
        assert_eq!(m.violations.len(), 1, "{:?}", m.violations);
        assert!(m.violations[0].contains("dropped below"));
        m.judge(&read(5), &tally, &tally);
        assert!(
            m.violations[1].contains("counted twice"),
            "{:?}",
            m.violations
        );
        // Without lower bounds, a drop is only counted.
        let mut m = Monitor::new(pts, false);
        m.judge(&read(4), &tally, &tally);
        m.judge(&read(1), &tally, &tally);
        assert!(m.violations.is_empty());
        assert_eq!(m.dips, 1);
    }

    const ALL_NODES: [&str; 4] = ["hapee1", "hapee2", "hapee3", "hapee4"];

    #[test]
    fn a_shards_aggregator_must_hold_its_shard_and_nothing_else() {
        let topo =
            Topology::load(&crate::project_root().join("tests/topologies"), "sharded").unwrap();
        let pts: Vec<Point> = all_points(&topo)
            .into_iter()
            .filter(|p| p.family == Family::Str)
            .collect();
        // No top level: no `.l2` anywhere; the three aggregators sum every node.
        assert!(pts.iter().all(|p| p.tier != Tier::L2));
        let s2 = pts
            .iter()
            .find(|p| p.proc == "shard2" && p.tier == Tier::Aggr)
            .unwrap();
        assert_eq!(s2.scope.len(), 4);
        let sel = s2.shard.unwrap();
        let (mine, theirs) = (1..40).partition::<Vec<u32>, _>(|&k| sel.holds(Family::Str, k));
        let (k2, k1) = (mine[0], theirs[0]);
        let mut tally = Tally::default();
        for k in [k1, k2] {
            tally.started.insert(("hapee1".to_owned(), k), 1);
            tally.done.insert(("hapee1".to_owned(), k), 1);
        }
        let key = |k: u32| Family::Str.key(k);
        let mut snap = Snapshot::new();
        for n in ALL_NODES {
            let t = if n == "hapee1" {
                table(&[(&key(k1), 1), (&key(k2), 1)])
            } else {
                Table::new()
            };
            snap.insert((n.into(), "fleet/str.uncombined".into()), t);
        }
        let only = |p: &Point| {
            vec![p.clone()]
                .into_iter()
                .chain(pts.iter().filter(|q| q.tier == Tier::Uncombined).cloned())
                .collect::<Vec<_>>()
        };
        let s2_label = ("shard2".to_owned(), "myaggr/str.aggr".to_owned());
        snap.insert(s2_label.clone(), table(&[(&key(k2), 1)]));
        assert_eq!(exact(&snap, &only(s2), &tally), Vec::<String>::new());
        // A key of the other shard on shard2 is wrong, whatever its value.
        snap.insert(s2_label.clone(), table(&[(&key(k2), 1), (&key(k1), 1)]));
        let bad = exact(&snap, &only(s2), &tally);
        assert!(
            bad.iter().any(|b| b.contains("of another shard")),
            "{bad:?}"
        );
        let mut m = Monitor::new(vec![s2.clone()], true);
        m.judge(&snap, &tally, &tally);
        assert!(
            m.violations[0].contains("of another shard"),
            "{:?}",
            m.violations
        );
        // A node's view of shard 2 ignores the other shard's keys.
        let node = pts
            .iter()
            .find(|p| p.proc == "hapee3" && p.tier == Tier::Aggr)
            .unwrap()
            .view(sel);
        snap.insert(
            ("hapee3".into(), "fleet/str.aggr".into()),
            table(&[(&key(k2), 1), (&key(k1), 7)]),
        );
        assert_eq!(exact(&snap, &only(&node), &tally), Vec::<String>::new());
    }

    #[test]
    fn parses_show_peers() {
        let text = "0x1: [04/Dec/2026:23:37:05] id=myaggr disabled=0 local=aggr1 listen=127.0.56.111:11111 complete=1\n\
\x20 0x2: id=hapee1(remote,active) addr=127.0.56.101:44444 last_status=ESTA last_hdshk=1s\n\
\x20       role=(node) state=ESTA last_hello=1ms last_rx=1ms last_heartbeat=<NEVER>\n\
\x20       sessions=1 reconnects=0 coll=0 proto_err=0 addr_refused=2 cert_refused=3 resyncs_in=1\n\
\x20       xprt=SSL src=127.0.56.111:11111 addr=127.0.0.1:40000\n\
\x20 0x3: id=aggr3(remote,active) addr=127.0.56.113:11111 last_status=ESTA last_hdshk=2s\n\
\x20       role=(up group=1 active) state=ESTA last_hello=2000ms\n\
\x20       sessions=2 reconnects=1 coll=0 proto_err=0\n\
\x20       last_error=\"connection closed by peer\"\n\
\x20 0x4: id=aggr4(remote,inactive) addr=127.0.56.114:11111 last_status=NONE last_hdshk=<NEVER>\n\
\x20       role=(up group=1 standby) state=IDLE last_hello=<NEVER>\n\
\x20       sessions=0 reconnects=0 coll=0 proto_err=0\n";
        let p = parse_peers(text);
        assert_eq!(p.len(), 3);
        assert_eq!((p[0].name.as_str(), p[0].active), ("hapee1", None));
        assert_eq!(
            (p[1].state.as_str(), p[1].active, p[1].sessions),
            ("ESTA", Some(true), 2)
        );
        assert_eq!((p[2].state.as_str(), p[2].active), ("IDLE", Some(false)));
        assert_eq!(
            (p[0].remote.as_str(), p[0].collisions, p[0].addr_refused),
            ("127.0.0.1:40000", 0, 2)
        );
        assert_eq!((p[0].cert_refused, p[0].xprt.as_str()), (3, "SSL"));
        assert_eq!((p[2].remote.as_str(), p[2].xprt.as_str()), ("-", "-"));
        assert_eq!(p[1].group.as_deref(), Some("1"));
        assert_eq!(p[0].group, None);
    }
}
