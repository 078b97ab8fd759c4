//! [`SessionCore`] over a real store, against a bare protocol engine standing for
//! the peer, in memory on simulated milliseconds: what a sharded peer receives.

use crate::{SectionCore, SessionCore, Signals};
use bytes::{Bytes, BytesMut};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use stktagg_session::{Event, Feed, PeerSession, SessionConfig};
use stktagg_store::{SourceId, Store, StoreOptions, Waker};
use stktagg_topology::PeerId;
use stktagg_wire::shard::{key_shard, table_seed};
use stktagg_wire::{DataSpec, DataType, Key, KeyType, TableDefinition, Value};

/// An intermediate whose upstream tier has two shards, one upstream without a
/// shard, and a source with a shard (legal, with a warning).
const CONFIG: &str = "\
aggregations myaggr
    shards 2
    peer aggr1 127.0.0.1:10000 local
    peer hap1  127.0.0.1:10001
    peer hap2  127.0.0.1:10002 shard 2
    peer top1  127.0.0.1:10011 up shard 1
    peer top2  127.0.0.1:10012 up shard 2
    peer top0  127.0.0.1:10010 up
    from .uncombined to .aggr
    forward .l2
";

const HAP1: PeerId = PeerId(0);
const HAP2: PeerId = PeerId(1);
const TOP1: PeerId = PeerId(2);
const TOP2: PeerId = PeerId(3);
const TOP0: PeerId = PeerId(4);

struct NoSignals;

impl Signals for NoSignals {
    fn request_resync(&self, _peer: PeerId) {}
}

/// The peer's side: nothing to send, and a lesson that is always PARTIAL, as a
/// restarted HAProxy node answers (so that our resync request keeps what the
/// store holds of it).
struct Restarted;

impl Feed for Restarted {
    fn lesson_complete(&self) -> bool {
        false
    }
}

struct NoWake;

impl Waker for NoWake {
    fn wake(&self) {}
}

fn section() -> Arc<SectionCore<Store>> {
    section_with_grace(0)
}

/// A section started at 0 that answers PARTIAL and holds its sums until its
/// sources have all resynced to it or `grace_ms` is over.
fn section_with_grace(grace_ms: u64) -> Arc<SectionCore<Store>> {
    let cfg = stktagg_config::parse_str(CONFIG, "t.cfg").unwrap();
    let plan = stktagg_topology::resolve(&cfg).unwrap().sections.remove(0);
    let store = Arc::new(Store::new(StoreOptions::default()));
    Arc::new(SectionCore::new(plan, store, 0, grace_ms))
}

fn input_def() -> TableDefinition {
    TableDefinition {
        table_id: 1,
        name: Bytes::from_static(b"/req.uncombined"),
        key_type: KeyType::Ipv4,
        key_len: 4,
        expire_ms: 60_000,
        data: vec![DataSpec::plain(DataType::HttpReqCnt)],
    }
}

fn key(i: u32) -> Key {
    Key::from_ipv4(std::net::Ipv4Addr::from(0x0a00_0000 + i))
}

/// `source`'s counts for keys `range` (key `i` counts `i + base`).
fn contribute(s: &SectionCore<Store>, source: PeerId, range: std::ops::Range<u32>, base: u32) {
    let h = s
        .store
        .register_input(
            SourceId(source.0 as u16),
            b"/req.uncombined",
            &input_def(),
            b"/req.aggr",
        )
        .unwrap();
    for i in range {
        s.store
            .apply(&h, &key(i), &[Value::Uint(i + base)], None, 1)
            .unwrap();
    }
}

/// The shard of key `i` of table `table` of section `myaggr`.
fn shard_of(table: &str, i: u32) -> u32 {
    let seed = table_seed(format!("myaggr/{table}").as_bytes());
    key_shard(seed, KeyType::Ipv4, &key(i), 2)
}

/// A session of ours with `peer`, which a bare engine plays.
struct Pair {
    ours: PeerSession,
    core: SessionCore<Store>,
    theirs: PeerSession,
    now: u64,
    /// The peer's table names by our table id.
    names: HashMap<u32, Bytes>,
    /// Every definition the peer received: our table id and the name.
    defined: Vec<(u32, Bytes)>,
    /// What the peer received: table name and key.
    received: Vec<(Bytes, Key)>,
}

impl Pair {
    fn new(section: &Arc<SectionCore<Store>>, peer: PeerId) -> Pair {
        let name = section.peers[peer.0].name.clone();
        let mut ours = PeerSession::dial(SessionConfig::new("aggr1"), &name, 1).unwrap();
        ours.set_resync_policy(crate::resync_policy(section.peers[peer.0].role));
        let core = SessionCore::start(
            section.clone(),
            Arc::new(NoSignals),
            peer,
            "test".to_owned(),
            Arc::new(NoWake),
            1,
        );
        let theirs = PeerSession::accept(SessionConfig::new(name), 1);
        let mut pair = Pair {
            ours,
            core,
            theirs,
            now: 1,
            names: HashMap::new(),
            defined: Vec::new(),
            received: Vec::new(),
        };
        pair.run();
        assert!(pair.ours.is_established() && pair.theirs.is_established());
        pair
    }

    /// Moves bytes both ways until neither side has anything more to say.
    fn run(&mut self) {
        for _ in 0..10_000 {
            self.now += 1;
            let now = self.now;
            assert!(self.core.handle_events(&mut self.ours, now).is_none());
            let mut buf = BytesMut::new();
            self.ours.poll_transmit(now, &mut self.core, &mut buf);
            let mut moved = !buf.is_empty();
            self.theirs.handle_input(now, &buf);
            while let Some(e) = self.theirs.poll_event() {
                match e {
                    Event::HelloReceived(_) => self.theirs.accept_hello(),
                    Event::TableDefined(def) => {
                        self.defined.push((def.table_id, def.name.clone()));
                        self.names.insert(def.table_id, def.name);
                    }
                    Event::Update(u) => {
                        let name = self.names.get(&u.table_id).cloned().unwrap_or_default();
                        self.received.push((name, u.key));
                    }
                    Event::Closed(end) => panic!("the peer closed: {end}"),
                    _ => {}
                }
            }
            buf.clear();
            self.theirs.poll_transmit(now, &mut Restarted, &mut buf);
            moved |= !buf.is_empty();
            self.ours.handle_input(now, &buf);
            if !moved {
                return;
            }
        }
        panic!("the session never went quiet");
    }

    /// The numbers of the keys received in `table` since the last call.
    fn take(&mut self, table: &str) -> BTreeSet<u32> {
        let got: BTreeSet<u32> = self
            .received
            .iter()
            .filter(|(name, _)| name.as_ref() == table.as_bytes())
            .map(|(_, k)| {
                let b = k.as_bytes();
                u32::from_be_bytes([b[0], b[1], b[2], b[3]]) - 0x0a00_0000
            })
            .collect();
        self.received.clear();
        got
    }
}

fn of_shard(table: &str, range: std::ops::Range<u32>, shard: u32) -> BTreeSet<u32> {
    range.filter(|&i| shard_of(table, i) == shard).collect()
}

#[test]
fn a_sharded_upstream_gets_only_its_shard_live_and_in_lessons() {
    let s = section();
    contribute(&s, HAP1, 0..400, 0);
    let shard1 = of_shard("req.aggr", 0..400, 1);
    // The hash spreads: both shards hold keys, so the filter can be wrong both ways.
    assert!(shard1.len() > 120 && shard1.len() < 280, "{}", shard1.len());
    let mut top1 = Pair::new(&s, TOP1);
    // A new session starts by sending every entry the peer should hold.
    assert_eq!(top1.take("/req.aggr"), shard1, "first push");
    // Live changes, old keys and new.
    contribute(&s, HAP1, 300..600, 1);
    top1.run();
    assert_eq!(
        top1.take("/req.aggr"),
        of_shard("req.aggr", 300..600, 1),
        "live"
    );
    // A full resync the peer asks for.
    top1.theirs.request_resync();
    top1.run();
    assert_eq!(
        top1.take("/req.aggr"),
        of_shard("req.aggr", 0..600, 1),
        "lesson"
    );
}

#[test]
fn the_shards_split_the_keys_and_an_upstream_without_shard_gets_them_all() {
    let s = section();
    contribute(&s, HAP1, 0..300, 0);
    let mut top1 = Pair::new(&s, TOP1);
    let mut top2 = Pair::new(&s, TOP2);
    let mut top0 = Pair::new(&s, TOP0);
    let (one, two) = (top1.take("/req.aggr"), top2.take("/req.aggr"));
    assert!(one.is_disjoint(&two));
    let all: BTreeSet<u32> = (0..300).collect();
    assert_eq!(one.union(&two).copied().collect::<BTreeSet<_>>(), all);
    assert_eq!(top0.take("/req.aggr"), all);
    // The seed is our section's name with the table's: another section name would
    // have split them otherwise.
    let elsewhere: BTreeSet<u32> = (0..300)
        .filter(|&i| key_shard(table_seed(b"other/req.aggr"), KeyType::Ipv4, &key(i), 2) == 1)
        .collect();
    assert_ne!(one, elsewhere);
}

#[test]
fn a_sharded_source_is_taught_back_and_sent_only_its_shard() {
    let s = section();
    contribute(&s, HAP1, 0..200, 0);
    contribute(&s, HAP2, 100..300, 0);
    let mut hap2 = Pair::new(&s, HAP2);
    hap2.take("/req.aggr");
    // A restarted node asks for a resync: its own entries come back, of its shard.
    hap2.theirs.request_resync();
    hap2.run();
    let received = std::mem::take(&mut hap2.received);
    hap2.received = received.clone();
    assert_eq!(
        hap2.take("/req.uncombined"),
        of_shard("req.uncombined", 100..300, 2),
        "teach-back"
    );
    hap2.received = received;
    assert_eq!(
        hap2.take("/req.aggr"),
        of_shard("req.aggr", 0..300, 2),
        "lesson"
    );
    // A source without a shard gets every sum.
    let mut hap1 = Pair::new(&s, HAP1);
    assert_eq!(hap1.take("/req.aggr"), (0..300).collect());
}

/// `member` of up group `group` is relayed, with `/req.l2` entries for `range`.
fn relay(s: &SectionCore<Store>, group: u16, member: PeerId, range: std::ops::Range<u32>) {
    let def = TableDefinition {
        name: Bytes::from_static(b"/req.l2"),
        ..input_def()
    };
    let source = SourceId(member.0 as u16);
    let h = s
        .store
        .register_relay(group, source, &def, b"/req.l2")
        .unwrap();
    s.store.relay_replace(group, source, 1);
    for i in range {
        s.store
            .relay_apply(&h, &key(i), &[Value::Uint(i)], None, 1)
            .unwrap();
    }
}

#[test]
fn one_name_relayed_from_several_upstream_groups_goes_out_as_one_table() {
    let s = section();
    // The two shards of the upper tier each forward their keys of `/req.l2`.
    relay(&s, 0, TOP1, 0..100);
    relay(&s, 1, TOP2, 100..200);
    let mut hap1 = Pair::new(&s, HAP1);
    assert_eq!(hap1.take("/req.l2"), (0..200).collect());
    let ids: BTreeSet<u32> = hap1
        .defined
        .iter()
        .filter(|(_, n)| n.as_ref() == b"/req.l2")
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(
        ids.len(),
        1,
        "one table id for one name: {:?}",
        hap1.defined
    );
    // Upstreams are never sent what is relayed.
    let mut top0 = Pair::new(&s, TOP0);
    assert!(top0.take("/req.l2").is_empty());
}

/// Source `p`'s session is up since `at`, and it has or has not answered our
/// resync request.
fn source_up(s: &SectionCore<Store>, p: PeerId, at: u64, answered: bool) {
    use std::sync::atomic::Ordering;
    let stats = &s.peers[p.0].stats;
    stats.set_state(crate::SessionState::Established);
    stats.last_hello_ms.store(at, Ordering::Relaxed);
    stats.answered_resync.store(answered, Ordering::Relaxed);
}

#[test]
fn changes_wait_for_the_first_lesson_of_every_connected_source() {
    let s = section_with_grace(10_000);
    contribute(&s, HAP1, 0..50, 0);
    source_up(&s, HAP1, 1, true);
    source_up(&s, HAP2, 1, false);
    // Past the wait for sources that never connected: only hap2 holds us.
    s.peers[HAP2.0].stats.last_hello_ms.store(
        crate::FIRST_LESSON_WAIT_MS,
        std::sync::atomic::Ordering::Relaxed,
    );
    let mut top0 = Pair::new(&s, TOP0);
    top0.now = crate::FIRST_LESSON_WAIT_MS;
    top0.run();
    // hap2 is connected and has not answered yet: our sums lack its counts.
    assert!(top0.take("/req.aggr").is_empty());
    source_up(&s, HAP2, 1, true);
    top0.run();
    assert_eq!(top0.take("/req.aggr"), (0..50).collect());
}

#[test]
fn the_wait_is_bounded_per_source() {
    let wait = crate::FIRST_LESSON_WAIT_MS;
    let s = section_with_grace(10_000);
    // Sources that have not connected yet are waited for from our start.
    assert!(!s.publishing(wait - 1));
    assert!(s.publishing(wait));
    // Connected at 3000 and silent: it holds us until 3000 + the bound only.
    source_up(&s, HAP2, 3_000, false);
    assert!(!s.publishing(3_000 + wait - 1));
    assert!(s.publishing(3_000 + wait));
    // Once it answered, nothing is waited for.
    source_up(&s, HAP2, 3_000, true);
    assert!(s.publishing(3_001));
    // After the start-up grace, nothing is waited for.
    source_up(&s, HAP2, 9_999, false);
    assert!(!s.publishing(9_999));
    assert!(s.publishing(10_000));
    // A silent upstream is never waited for.
    let s = section_with_grace(10_000);
    for p in [HAP1, HAP2] {
        source_up(&s, p, 1, true);
    }
    source_up(&s, TOP1, 1, false);
    assert!(s.publishing(2));
}
