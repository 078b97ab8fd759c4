//! Reading HAProxy's `show peers` answer, so that tests can see the session state
//! HAProxy keeps for us: the section's resync state, our peer's learning state and
//! heartbeat counters, and per shared table the ack and push cursors.
//!
//! The layout (peers-protocol.md §10) is one line for the section, then per peer a
//! block whose first line is `<ptr>: id=<name>(...)`, and after a `shared tables:`
//! line one block per table starting with `<ptr> local_id=`. Every interesting value
//! is a `key=value` token. Inside a table block, the tokens after `table:<ptr>`
//! describe the stick table itself rather than this peer's view of it, so they are
//! stored with a `table.` prefix (`table.id`, `table.update`, `table.localupdate`).
//!
//! HAProxy 3.0 rewrote the resync state machine: a peer's learning state became its
//! own field (`learn_state=`, next to a new `app_state=`) instead of `PEER_F_*` flag
//! bits, and the section's `PEERS_F_*` bits were renumbered. The two layouts are told
//! apart by `learn_state=`, and read through `Resync`, `PeerInfo::learn_assigned` and
//! `PeerInfo::not_up_to_date`, so that the tests say what they mean for either.

use std::collections::BTreeMap;
use stktagg_tests::PeerLab;

/// Which `show peers` layout an answer has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Layout {
    /// 2.6 and 2.8: the learning state is in the peer's flags.
    #[default]
    Flags,
    /// 3.0 and later: `learn_state=` and renumbered section flags.
    LearnState,
}

/// The section's resync bits (`PEERS_F_*` in `src/peers.c`@2.6 and 2.8,
/// `include/haproxy/peers-t.h`@3.0 and later). The first three kept their values.
mod bits {
    /// The local resync (from the old process of a reload) is over.
    pub const RESYNC_LOCAL: u64 = 0x1;
    /// The remote resync is over (finished, or no more needed).
    pub const RESYNC_REMOTE: u64 = 0x2;
    /// A peer is assigned to teach this process its lesson.
    pub const RESYNC_ASSIGN: u64 = 0x4;
    /// A remote peer taught us and said FINISHED: 2.6 and 2.8.
    pub const REMOTEFINISHED_2_6: u64 = 0x200;
    /// The same, 3.0 and later (`PEERS_F_DBG_RESYNC_REMOTEFINISHED`).
    pub const REMOTEFINISHED_3_0: u64 = 0x0200_0000;
    /// A remote peer taught us and said PARTIAL: 2.6 and 2.8.
    pub const REMOTEPARTIAL_2_6: u64 = 0x800;
    /// The same, 3.0 and later (`PEERS_F_DBG_RESYNC_REMOTEPARTIAL`).
    pub const REMOTEPARTIAL_3_0: u64 = 0x0800_0000;
    /// A peer's own bit, 2.6 and 2.8 (`PEER_F_LEARN_ASSIGN`): it is assigned to
    /// teach HAProxy. 3.0 has `learn_state=ASSIGNED` or `PROCESSING` instead.
    pub const PEER_LEARN_ASSIGN_2_6: u64 = 0x100;
    /// A peer's lesson ended with PARTIAL, so HAProxy will not ask it again
    /// (`PEER_F_LEARN_NOTUP2DATE`): 2.6 and 2.8.
    pub const PEER_NOTUP2DATE_2_6: u64 = 0x200;
    /// The same, 3.0 and later.
    pub const PEER_NOTUP2DATE_3_0: u64 = 0x8;
}

/// The section's resync state, read from its flags for either layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resync {
    /// The raw flags, for messages.
    pub flags: u64,
    /// The local resync is over.
    pub local_done: bool,
    /// The remote resync is over.
    pub remote_done: bool,
    /// A peer is assigned to teach HAProxy.
    pub assigned: bool,
    /// A remote peer's lesson ended with FINISHED.
    pub remote_finished: bool,
    /// A remote peer's lesson ended with PARTIAL.
    pub remote_partial: bool,
}

impl Resync {
    fn from_flags(flags: u64, layout: Layout) -> Resync {
        let (finished, partial) = match layout {
            Layout::Flags => (bits::REMOTEFINISHED_2_6, bits::REMOTEPARTIAL_2_6),
            Layout::LearnState => (bits::REMOTEFINISHED_3_0, bits::REMOTEPARTIAL_3_0),
        };
        Resync {
            flags,
            local_done: flags & bits::RESYNC_LOCAL != 0,
            remote_done: flags & bits::RESYNC_REMOTE != 0,
            assigned: flags & bits::RESYNC_ASSIGN != 0,
            remote_finished: flags & finished != 0,
            remote_partial: flags & partial != 0,
        }
    }
}

/// `key=value` tokens, the first occurrence of each key.
pub type Fields = BTreeMap<String, String>;

/// One peer's block.
#[derive(Debug, Clone, Default)]
pub struct PeerInfo {
    /// The name from `id=<name>(...)`.
    pub name: String,
    /// The peer-level tokens.
    pub fields: Fields,
    /// One entry per shared table.
    pub tables: Vec<Fields>,
}

/// The whole answer.
#[derive(Debug, Clone, Default)]
pub struct PeersDump {
    /// The section line's tokens.
    pub section: Fields,
    /// The peers, in the order printed.
    pub peers: Vec<PeerInfo>,
}

fn put_tokens(fields: &mut Fields, line: &str, prefix: &mut String) {
    for tok in line.split_whitespace() {
        if tok.starts_with("table:") {
            *prefix = "table.".to_owned();
            continue;
        }
        if let Some((k, v)) = tok.split_once('=') {
            fields
                .entry(format!("{prefix}{k}"))
                .or_insert_with(|| v.to_owned());
        }
    }
}

/// Parses the text of `show peers`.
pub fn parse(text: &str) -> PeersDump {
    let mut dump = PeersDump::default();
    let mut in_tables = false;
    let mut prefix = String::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if trimmed.is_empty() {
            continue;
        }
        if indent == 0 {
            put_tokens(&mut dump.section, line, &mut String::new());
        } else if indent == 2 && trimmed.starts_with("0x") {
            let name = trimmed
                .split_once("id=")
                .map(|(_, r)| r.split('(').next().unwrap_or_default().to_owned())
                .unwrap_or_default();
            let mut p = PeerInfo {
                name,
                ..PeerInfo::default()
            };
            put_tokens(&mut p.fields, trimmed, &mut String::new());
            dump.peers.push(p);
            in_tables = false;
        } else if let Some(p) = dump.peers.last_mut() {
            if trimmed == "shared tables:" {
                in_tables = true;
            } else if in_tables && trimmed.starts_with("0x") && trimmed.contains("local_id=") {
                prefix.clear();
                let mut t = Fields::new();
                put_tokens(&mut t, trimmed, &mut prefix);
                p.tables.push(t);
            } else if in_tables {
                if let Some(t) = p.tables.last_mut() {
                    put_tokens(t, trimmed, &mut prefix);
                }
            } else {
                put_tokens(&mut p.fields, trimmed, &mut String::new());
            }
        }
    }
    dump
}

/// Runs `show peers` on the lab's haproxy.
pub fn show_peers(lab: &PeerLab) -> PeersDump {
    parse(&lab.api().command("show peers").unwrap())
}

/// A number printed in decimal or as `0x` hex.
pub fn number(v: &str) -> u64 {
    match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).unwrap_or_else(|e| panic!("`{v}`: {e}")),
        None => v.parse().unwrap_or_else(|e| panic!("`{v}`: {e}")),
    }
}

/// A numeric field, panicking with the fields when it is missing.
pub fn num(fields: &Fields, key: &str) -> u64 {
    number(
        fields
            .get(key)
            .unwrap_or_else(|| panic!("no `{key}` in {fields:?}")),
    )
}

impl PeersDump {
    /// The section's flags.
    pub fn section_flags(&self) -> u64 {
        num(&self.section, "flags")
    }

    /// The answer's layout: every peer block of 3.0 and later has `learn_state=`,
    /// the local peer's included, so a section always shows it.
    pub fn layout(&self) -> Layout {
        self.peers.first().map(PeerInfo::layout).unwrap_or_default()
    }

    /// The section's resync state.
    pub fn resync(&self) -> Resync {
        Resync::from_flags(self.section_flags(), self.layout())
    }

    /// The peer called `name`.
    pub fn peer(&self, name: &str) -> &PeerInfo {
        self.peers
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no peer `{name}` in {self:?}"))
    }
}

impl PeerInfo {
    /// This peer's view of the table HAProxy calls `cli_name` (`lab/t`).
    pub fn table(&self, cli_name: &str) -> &Fields {
        self.tables
            .iter()
            .find(|t| t.get("table.id").map(String::as_str) == Some(cli_name))
            .unwrap_or_else(|| panic!("no table `{cli_name}` for {}: {:?}", self.name, self.tables))
    }

    /// A numeric peer-level field.
    pub fn num(&self, key: &str) -> u64 {
        num(&self.fields, key)
    }

    /// The peer's flags.
    pub fn flags(&self) -> u64 {
        self.num("flags")
    }

    /// The layout of this peer's block.
    pub fn layout(&self) -> Layout {
        if self.fields.contains_key("learn_state") {
            Layout::LearnState
        } else {
            Layout::Flags
        }
    }

    /// HAProxy has assigned this peer to teach it (and may have asked already).
    pub fn learn_assigned(&self) -> bool {
        match self.layout() {
            Layout::Flags => self.flags() & bits::PEER_LEARN_ASSIGN_2_6 != 0,
            Layout::LearnState => matches!(
                self.fields["learn_state"].as_str(),
                "ASSIGNED" | "PROCESSING"
            ),
        }
    }

    /// This peer's lesson ended with PARTIAL: HAProxy will not ask it again.
    pub fn not_up_to_date(&self) -> bool {
        let bit = match self.layout() {
            Layout::Flags => bits::PEER_NOTUP2DATE_2_6,
            Layout::LearnState => bits::PEER_NOTUP2DATE_3_0,
        };
        self.flags() & bit != 0
    }
}

#[test]
fn parses_a_real_2_6_answer() {
    // Output of 2.6.12 (peers section with two tables, no session yet), trimmed.
    let text = "\
0x55e61ed42d50: [25/Nov/2026:17:06:13] id=lab disabled=0 flags=0x11 resync_timeout=4s task_calls=1
  0x55e61ed45e60: id=agg(remote,active) addr=127.0.0.1:39102 last_status=CONN last_hdshk=0s
        reconnect=4s heartbeat=<NEVER> confirm=0 tx_hbt=0 rx_hbt=7 no_hbt=0 new_conn=1 proto_err=0 coll=0
        flags=0x20000100 appctx:0x55e61eefea70 st0=6 st1=0 task_calls=2 state=TAR
        last_local_table:0x55e61ee72b20 id=lab/t1 local_id=2 remote_id=0
        shared tables:
          0x55e61ee72b20 local_id=2 remote_id=5 flags=0x0 remote_data=0x6000004
              last_acked=3 last_pushed=9 last_get=3 teaching_origin=0 update=6
              table:0x55e61ed46ef0 id=lab/t1 update=9 localupdate=9 commitupdate=9 refcnt=1
        Dictionary cache not dumped (use \"show peers dict\")
          0x55e61ee728f0 local_id=1 remote_id=0 flags=0x0 remote_data=0x0
              last_acked=0 last_pushed=0 last_get=0 teaching_origin=0 update=0
              table:0x55e61ed471b0 id=lab/t2 update=0 localupdate=0 commitupdate=0 refcnt=1
        Dictionary cache not dumped (use \"show peers dict\")
  0x55e61ed42ec0: id=hap1(local,inactive) addr=127.0.0.1:39101 last_status=NONE last_hdshk=<NEVER>
        reconnect=<NEVER> heartbeat=<NEVER> confirm=0 tx_hbt=0 rx_hbt=0 no_hbt=0 new_conn=0 proto_err=0 coll=0
        flags=0x0
";
    let d = parse(text);
    assert_eq!(d.layout(), Layout::Flags);
    assert_eq!(d.section_flags(), 0x11);
    let r = d.resync();
    assert!(r.local_done && !r.remote_done && !r.assigned, "{r:?}");
    assert_eq!(d.section["id"], "lab");
    assert_eq!(d.peers.len(), 2);
    let agg = d.peer("agg");
    assert_eq!(agg.flags(), 0x2000_0100);
    assert!(agg.learn_assigned() && !agg.not_up_to_date());
    assert_eq!(agg.num("rx_hbt"), 7);
    assert_eq!(agg.fields["state"], "TAR");
    // The `last_local_table` tokens do not shadow the peer's own id.
    assert_eq!(agg.fields["id"], "agg(remote,active)");
    let t1 = agg.table("lab/t1");
    assert_eq!(
        (num(t1, "local_id"), num(t1, "remote_id"), num(t1, "update")),
        (2, 5, 6)
    );
    assert_eq!((num(t1, "last_acked"), num(t1, "last_pushed")), (3, 9));
    assert_eq!(num(t1, "remote_data"), 0x600_0004);
    assert_eq!(num(t1, "table.update"), 9);
    assert_eq!(num(agg.table("lab/t2"), "local_id"), 1);
    assert_eq!(d.peer("hap1").tables.len(), 0);
}

#[test]
fn parses_a_real_3_0_answer() {
    // Output of 3.0.11 (one table, no session yet), trimmed.
    let text = "\
0x563e1511af90: [10/Jan/2027:14:27:56] id=lab disabled=0 flags=0x100001 resync_timeout=4s task_calls=2
  0x563e1511e710: id=agg(remote,active) addr=127.0.0.1:39102 app_state=STOPPED learn_state=NOTASSIGNED last_status=CONN last_hdshk=0s
        reconnect=4s heartbeat=<NEVER> confirm=0 tx_hbt=0 rx_hbt=0 no_hbt=0 new_conn=1 proto_err=0 coll=0
        flags=0x0 appctx:0x563e152fe1d0 st0=6 st1=0 task_calls=2 state=TAR
        shared tables:
          0x563e152660a0 local_id=1 remote_id=0 flags=0x0 remote_data=0x0
              last_acked=0 last_pushed=0 last_get=0 teaching_origin=0 update=0
              table:0x563e1511f7a0 id=lab/t1 update=1 localupdate=1 commitupdate=0 refcnt=1
        Dictionary cache not dumped (use \"show peers dict\")
  0x563e1511b440: id=hap1(local,inactive) addr=127.0.0.1:39101 app_state=STOPPED learn_state=PROCESSING last_status=NONE last_hdshk=<NEVER>
        reconnect=<NEVER> heartbeat=<NEVER> confirm=0 tx_hbt=0 rx_hbt=0 no_hbt=0 new_conn=0 proto_err=0 coll=0
        flags=0x8
";
    let d = parse(text);
    assert_eq!(d.layout(), Layout::LearnState);
    let r = d.resync();
    assert!(r.local_done && !r.remote_done && !r.assigned, "{r:?}");
    assert!(!r.remote_finished && !r.remote_partial, "{r:?}");
    let agg = d.peer("agg");
    assert_eq!(agg.fields["app_state"], "STOPPED");
    assert!(!agg.learn_assigned() && !agg.not_up_to_date());
    assert_eq!(num(agg.table("lab/t1"), "table.update"), 1);
    // The local peer's line is edited to show the other readings.
    let hap1 = d.peer("hap1");
    assert!(hap1.learn_assigned() && hap1.not_up_to_date());
}
