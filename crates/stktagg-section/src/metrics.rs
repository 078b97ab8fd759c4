//! The Prometheus series a section's logic records. Every series is labelled by
//! section and, where it makes sense, by peer: both come from the configuration, so
//! label sets are bounded. No per-key labels, ever. (The exporter, and the series of
//! sockets and tasks, are the daemon's.)

use metrics::{counter, histogram};

/// The `kind` label values of `stktagg_protocol_errors_total`: the names of the wire
/// errors a peer can cause (decoding errors), and `Other` for anything else, so that
/// the label set is fixed and can be registered at start.
pub const PROTOCOL_ERROR_KINDS: &[&str] = &[
    "Truncated",
    "VarintTooLong",
    "VarintOverflow",
    "OutOfRange",
    "LengthTooLong",
    "MessageTooLarge",
    "ReservedClass",
    "UnknownKeyType",
    "BadKeyLength",
    "BadTableName",
    "DefinitionParams",
    "TooManyTables",
    "UpdateWithoutTable",
    "UnknownTableId",
    "DictIdOutOfRange",
    "UnknownDictId",
    "BadDictLength",
    "LineTooLong",
    "Other",
];

/// The series a session updates for every update, looked up once per session
/// rather than once per update (a lookup builds the label strings).
#[derive(Debug, Clone)]
pub struct UpdateCounters {
    /// `stktagg_updates_received_total` for the peer.
    pub received: metrics::Counter,
    /// `stktagg_updates_sent_total` for the peer.
    pub sent: metrics::Counter,
    /// `stktagg_propagation_seconds` for the section.
    propagation: metrics::Histogram,
}

impl UpdateCounters {
    /// The peer's counters.
    pub fn new(section: &str, peer: &str) -> Self {
        UpdateCounters {
            received: counter!("stktagg_updates_received_total", "section" => section.to_owned(), "peer" => peer.to_owned()),
            sent: counter!("stktagg_updates_sent_total", "section" => section.to_owned(), "peer" => peer.to_owned()),
            propagation: histogram!("stktagg_propagation_seconds", "section" => section.to_owned()),
        }
    }

    /// Time from a source update to the new value leaving for a peer, in
    /// milliseconds of the daemon's clock, recorded in seconds. One sample per
    /// batch of changes written to a peer (up to 256), that of its oldest change:
    /// an upper bound of the batch's delays, at a cost that does not grow with the
    /// sums sent (a sample per sum cost a tenth of a fleet's CPU).
    ///
    /// The store stamps changes with that millisecond clock, so a sample is a whole
    /// number of milliseconds (0 means "within the same millisecond") although the
    /// buckets go down to 0.1 ms: finer samples need the store to stamp changes
    /// with a finer clock.
    pub fn propagation(&self, ms: u64) {
        self.propagation.record(ms as f64 / 1000.0);
    }
}

/// A full resync went `in` (from the peer) or `out` (to the peer).
pub fn resync(section: &str, peer: &str, direction: &'static str) {
    counter!("stktagg_resyncs_total", "section" => section.to_owned(), "peer" => peer.to_owned(), "direction" => direction)
        .increment(1);
}

/// A peer defined a table that no rule takes.
pub fn table_ignored(section: &str, peer: &str) {
    counter!("stktagg_tables_ignored_total", "section" => section.to_owned(), "peer" => peer.to_owned())
        .increment(1);
}

/// New keys refused by a full output table (`table` is its wire name): counted
/// per update refused. `by` 0 registers the series at 0 (when a source first
/// feeds the table), so that `increase(...) > 0` sees the first refusal.
pub fn table_full(section: &str, table: &str, by: u64) {
    counter!("stktagg_table_full_total", "section" => section.to_owned(), "table" => table.to_owned())
        .increment(by);
}

/// A group's active member changed.
pub fn group_switch(section: &str, group: &str) {
    counter!("stktagg_group_switches_total", "section" => section.to_owned(), "group" => group.to_owned())
        .increment(1);
}

/// A session came up or went down.
pub fn session_up(section: &str, peer: &str, up: bool) {
    metrics::gauge!("stktagg_peer_up", "section" => section.to_owned(), "peer" => peer.to_owned())
        .set(if up { 1.0 } else { 0.0 });
    if up {
        counter!("stktagg_sessions_total", "section" => section.to_owned(), "peer" => peer.to_owned())
            .increment(1);
    }
}

/// A session ended on bad input; `kind` is one of [`PROTOCOL_ERROR_KINDS`]
/// (see [`error_kind`]).
pub fn protocol_error(section: &str, peer: &str, kind: &str) {
    counter!("stktagg_protocol_errors_total", "section" => section.to_owned(), "peer" => peer.to_owned(), "kind" => kind.to_owned())
        .increment(1);
}

/// A bounded label for a wire error: its variant name if the peer can cause it
/// (one of [`PROTOCOL_ERROR_KINDS`]), else `Other`.
pub fn error_kind(e: &stktagg_wire::WireError) -> &'static str {
    let dbg = format!("{e:?}");
    let name: String = dbg
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect();
    PROTOCOL_ERROR_KINDS
        .iter()
        .copied()
        .find(|k| *k == name && *k != "Other")
        .unwrap_or("Other")
}

#[cfg(test)]
mod tests {
    use super::*;
    use stktagg_wire::{DataType, KeyType, WireError};

    #[test]
    fn every_error_a_peer_can_cause_has_its_own_kind() {
        let peer_errors = [
            WireError::Truncated { field: "f" },
            WireError::VarintTooLong,
            WireError::VarintOverflow,
            WireError::OutOfRange {
                field: "f",
                value: 1,
            },
            WireError::LengthTooLong,
            WireError::MessageTooLarge { len: 1, limit: 1 },
            WireError::ReservedClass { msg_type: 1 },
            WireError::UnknownKeyType { id: 1 },
            WireError::BadKeyLength {
                key_type: KeyType::Ipv4,
                key_len: 1,
            },
            WireError::BadTableName,
            WireError::DefinitionParams {
                data_type: DataType::Gpc,
            },
            WireError::TooManyTables { limit: 1 },
            WireError::UpdateWithoutTable,
            WireError::UnknownTableId { table_id: 1 },
            WireError::DictIdOutOfRange { id: 1 },
            WireError::UnknownDictId { id: 1 },
            WireError::BadDictLength,
            WireError::LineTooLong { limit: 1 },
        ];
        let mut kinds: Vec<&str> = peer_errors
            .iter()
            .map(|e| {
                assert!(e.is_peer_fault(), "{e:?}");
                error_kind(e)
            })
            .collect();
        kinds.push("Other");
        assert_eq!(kinds, PROTOCOL_ERROR_KINDS);
        // Our own encoding errors and socket errors are not a peer's protocol error
        // kind: they fold into `Other`.
        assert_eq!(error_kind(&WireError::BadDictLength), "BadDictLength");
        assert_eq!(
            error_kind(&WireError::UndefinedTable { table_id: 3 }),
            "Other"
        );
        assert_eq!(
            error_kind(&WireError::Io(std::io::Error::other("x"))),
            "Other"
        );
    }
}
