//! A peer's state and counters, as the runtime API and the metrics read them.

use crate::ratelimit::LogLimiter;
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use stktagg_store::{TaughtEntry, TaughtTable};
use stktagg_wire::Key;

/// A peer session's state, as shown by `show peers` and the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum SessionState {
    /// No session and no attempt in progress.
    Idle = 0,
    /// Dialing or in the handshake.
    Connecting = 1,
    /// Established.
    Established = 2,
}

impl SessionState {
    /// The word `show peers` prints.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionState::Idle => "IDLE",
            SessionState::Connecting => "CONN",
            SessionState::Established => "ESTA",
        }
    }
}

/// Counters and state of one peer. Written by its session, read by anyone.
#[derive(Debug, Default)]
pub struct PeerStats {
    state: AtomicU8,
    /// Updates received.
    pub updates_in: AtomicU64,
    /// Updates sent.
    pub updates_out: AtomicU64,
    /// Full resyncs received from this peer (its FINISHED after our request).
    pub resyncs_in: AtomicU64,
    /// Full resyncs we taught this peer.
    pub resyncs_out: AtomicU64,
    /// Sessions established, after the first.
    pub reconnects: AtomicU64,
    /// Sessions established in all.
    pub sessions: AtomicU64,
    /// Sessions replaced by a newer one (collisions).
    pub collisions: AtomicU64,
    /// Sessions ended by bad input from the peer.
    pub protocol_errors: AtomicU64,
    /// Sessions that claimed this peer from an address it may not use
    /// (`addr-check`), refused.
    pub addr_refused: AtomicU64,
    /// Sessions that claimed this peer with a TLS client certificate that does not
    /// name it, refused.
    pub cert_refused: AtomicU64,
    /// The established session runs over TLS.
    pub tls: AtomicBool,
    /// Clock reading of the last established hello, 0 if never.
    pub last_hello_ms: AtomicU64,
    /// Clock reading of the last message received, 0 if never.
    pub last_rx_ms: AtomicU64,
    /// Clock reading of the last heartbeat received, 0 if never.
    pub last_heartbeat_ms: AtomicU64,
    /// The peer's last full resync to us ended with FINISHED (for `up` peers: it can
    /// be the group's active member; for sources: we hold its data).
    pub resynced: AtomicBool,
    /// The peer has answered a resync request of ours (FINISHED or PARTIAL) since
    /// we started: what we hold of a source is then all we can get of it.
    pub answered_resync: AtomicBool,
    /// The established session's addresses (ours, the peer's), as text.
    pub addrs: Mutex<Option<(String, String)>>,
    /// Why the last session ended.
    pub last_error: Mutex<Option<String>>,
    /// Limits this peer's warning lines (failed sessions, dial errors).
    pub log_limit: LogLimiter,
    /// What we began to teach back to this source and it has not confirmed
    /// having yet. It outlives the session: a restarted node's lesson replaces
    /// its old contributions with the few counts it made since its restart, so
    /// if the session is cut before the teach-back arrives, the next teach-back
    /// must still carry the old counts (see `SessionCore`'s resync handling).
    pub teach_back_owed: Mutex<Option<OwedTeachBack>>,
}

/// A teach-back a source has not confirmed: its tables as we first began to
/// teach them, and when.
#[derive(Debug, Clone)]
pub struct OwedTeachBack {
    /// Clock reading when the snapshot was taken (remaining lifetimes count from it).
    pub at_ms: u64,
    /// The source's tables as taught.
    pub tables: Vec<TaughtTable>,
}

impl OwedTeachBack {
    /// Lays what is owed over `tables` (the source's contributions now): an entry
    /// owed wins over the current one for its key, since the source, once taught,
    /// holds the taught value (HAProxy overwrites an entry with what a peer sends);
    /// an owed entry that has expired since is dropped; owed tables and keys the
    /// store no longer holds are taught all the same.
    pub fn lay_over(&self, tables: &mut Vec<TaughtTable>, now: u64) {
        let elapsed = now.saturating_sub(self.at_ms);
        let elapsed = u32::try_from(elapsed).unwrap_or(u32::MAX);
        for owed in &self.tables {
            let i = match tables.iter().position(|t| t.input_name == owed.input_name) {
                Some(i) => i,
                None => {
                    tables.push(TaughtTable {
                        entries: Vec::new(),
                        ..owed.clone()
                    });
                    tables.len() - 1
                }
            };
            let table = &mut tables[i];
            let mut at: HashMap<Key, usize> = table
                .entries
                .iter()
                .enumerate()
                .map(|(i, e)| (e.key.clone(), i))
                .collect();
            for e in &owed.entries {
                let expire_ms = match e.expire_ms {
                    None => None,
                    Some(left) if left > elapsed => Some(left - elapsed),
                    Some(_) => continue,
                };
                let entry = TaughtEntry {
                    expire_ms,
                    ..e.clone()
                };
                match at.get(&e.key) {
                    Some(&j) => table.entries[j] = entry,
                    None => {
                        at.insert(e.key.clone(), table.entries.len());
                        table.entries.push(entry);
                    }
                }
            }
        }
    }
}

impl PeerStats {
    /// The session state.
    pub fn state(&self) -> SessionState {
        match self.state.load(Ordering::Relaxed) {
            1 => SessionState::Connecting,
            2 => SessionState::Established,
            _ => SessionState::Idle,
        }
    }

    /// Sets the session state.
    pub fn set_state(&self, s: SessionState) {
        self.state.store(s as u8, Ordering::Relaxed);
    }

    /// Whether the peer can be relayed: established and fully resynced.
    pub fn is_complete(&self) -> bool {
        self.state() == SessionState::Established && self.resynced.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::net::Ipv4Addr;
    use stktagg_wire::{KeyType, TableDefinition, Value};

    fn key(last: u8) -> Key {
        Key::from_ipv4(Ipv4Addr::new(10, 0, 0, last))
    }

    fn entry(k: u8, v: u32, expire_ms: Option<u32>) -> TaughtEntry {
        TaughtEntry {
            key: key(k),
            values: vec![Value::Uint(v)],
            expire_ms,
        }
    }

    fn table(name: &'static str, entries: Vec<TaughtEntry>) -> TaughtTable {
        TaughtTable {
            input_name: Bytes::from_static(name.as_bytes()),
            definition: TableDefinition {
                table_id: 1,
                name: Bytes::from_static(name.as_bytes()),
                key_type: KeyType::Ipv4,
                key_len: 4,
                expire_ms: 60_000,
                data: Vec::new(),
            },
            entries,
        }
    }

    #[test]
    fn owed_entries_win_age_and_come_back_when_the_store_lost_them() {
        let owed = OwedTeachBack {
            at_ms: 1_000,
            tables: vec![
                table(
                    "/a",
                    vec![
                        entry(1, 100, Some(50_000)),
                        entry(2, 7, Some(500)),
                        entry(3, 9, None),
                    ],
                ),
                table("/gone", vec![entry(4, 4, Some(10_000))]),
            ],
        };
        // Now: the node's lesson replaced key 1 with its new count, key 5 is new.
        let mut now = vec![table(
            "/a",
            vec![entry(1, 2, Some(60_000)), entry(5, 1, Some(60_000))],
        )];
        owed.lay_over(&mut now, 2_000);
        let a = &now[0].entries;
        let find = |k: u8, t: &[TaughtEntry]| t.iter().find(|e| e.key == key(k)).cloned();
        // The old count wins, its lifetime aged by the second since the snapshot.
        assert_eq!(find(1, a), Some(entry(1, 100, Some(49_000))));
        // Expired since: not taught.
        assert_eq!(find(2, a), None);
        assert_eq!(find(3, a), Some(entry(3, 9, None)));
        // Only in the store now: kept.
        assert_eq!(find(5, a), Some(entry(5, 1, Some(60_000))));
        assert_eq!(a.len(), 3);
        // A table the store no longer holds is taught from what is owed.
        assert_eq!(now[1].input_name, Bytes::from_static(b"/gone"));
        assert_eq!(now[1].entries, vec![entry(4, 4, Some(9_000))]);
    }
}
