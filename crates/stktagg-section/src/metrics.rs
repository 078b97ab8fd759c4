//! The Prometheus series a section's logic records. Every series is labelled by
//! section and, where it makes sense, by peer: both come from the configuration, so
//! label sets are bounded. No per-key labels, ever. (The exporter, and the series of
//! sockets and tasks, are the daemon's.)

use metrics::{counter, histogram};

/// The counters a session bumps for every update, looked up once per session
/// rather than once per update (a lookup builds the label strings).
#[derive(Debug, Clone)]
pub struct UpdateCounters {
    /// `stktagg_updates_received_total` for the peer.
    pub received: metrics::Counter,
    /// `stktagg_updates_sent_total` for the peer.
    pub sent: metrics::Counter,
}

impl UpdateCounters {
    /// The peer's counters.
    pub fn new(section: &str, peer: &str) -> Self {
        UpdateCounters {
            received: counter!("stktagg_updates_received_total", "section" => section.to_owned(), "peer" => peer.to_owned()),
            sent: counter!("stktagg_updates_sent_total", "section" => section.to_owned(), "peer" => peer.to_owned()),
        }
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

/// A group's active member changed.
pub fn group_switch(section: &str, group: &str) {
    counter!("stktagg_group_switches_total", "section" => section.to_owned(), "group" => group.to_owned())
        .increment(1);
}

/// Time from a source update to the new value leaving for a peer.
pub fn propagation(ms: u64) {
    histogram!("stktagg_propagation_seconds").record(ms as f64 / 1000.0);
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

/// A session ended on bad input.
pub fn protocol_error(section: &str, peer: &str, kind: &str) {
    counter!("stktagg_protocol_errors_total", "section" => section.to_owned(), "peer" => peer.to_owned(), "kind" => kind.to_owned())
        .increment(1);
}

/// A bounded label for a wire error: its variant name.
pub fn error_kind(e: &stktagg_wire::WireError) -> String {
    let dbg = format!("{e:?}");
    dbg.chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect()
}
