//! Prometheus metrics: names, labels, and the exporter.
//!
//! Every series is labelled by section and, where it makes sense, by peer: both come
//! from the configuration, so label sets are bounded. No per-key labels, ever.

use crate::section::Section;
use anyhow::{Context, Result};
use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use std::net::SocketAddr;
use stktagg_wire::hello::StatusCode;

/// Installs the Prometheus exporter with its HTTP listener on `addr`.
pub fn install(addr: SocketAddr) -> Result<()> {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full("stktagg_propagation_seconds".to_owned()),
            &[
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0,
            ],
        )
        .context("configuring the propagation histogram")?
        .install()
        .with_context(|| format!("starting the Prometheus listener on {addr}"))?;
    describe();
    Ok(())
}

fn describe() {
    describe_gauge!("stktagg_peer_up", "1 while the peer session is established");
    describe_counter!(
        "stktagg_updates_received_total",
        "stick-table updates received from a peer"
    );
    describe_counter!(
        "stktagg_updates_sent_total",
        "stick-table updates sent to a peer"
    );
    describe_counter!(
        "stktagg_resyncs_total",
        "full resyncs, by direction (in: from the peer, out: to the peer)"
    );
    describe_counter!("stktagg_sessions_total", "peer sessions established");
    describe_counter!(
        "stktagg_protocol_errors_total",
        "sessions ended by bad input, by kind"
    );
    describe_counter!(
        "stktagg_hello_rejected_total",
        "incoming hellos answered with an error status, by code"
    );
    describe_counter!(
        "stktagg_tables_ignored_total",
        "table definitions that match no rule"
    );
    describe_gauge!(
        "stktagg_table_entries",
        "entries per aggregated or relayed table"
    );
    describe_gauge!(
        "stktagg_group_active_member",
        "1 for the active member of an up group"
    );
    describe_counter!(
        "stktagg_group_switches_total",
        "changes of an up group's active member"
    );
    describe_histogram!(
        "stktagg_propagation_seconds",
        "time from receiving a source update to sending the new value"
    );
}

/// A session came up or went down.
pub fn session_up(section: &str, peer: &str, up: bool) {
    gauge!("stktagg_peer_up", "section" => section.to_owned(), "peer" => peer.to_owned())
        .set(if up { 1.0 } else { 0.0 });
    if up {
        counter!("stktagg_sessions_total", "section" => section.to_owned(), "peer" => peer.to_owned())
            .increment(1);
    }
}

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

/// A session ended on bad input.
pub fn protocol_error(section: &str, peer: &str, kind: &str) {
    counter!("stktagg_protocol_errors_total", "section" => section.to_owned(), "peer" => peer.to_owned(), "kind" => kind.to_owned())
        .increment(1);
}

/// An incoming hello was rejected.
pub fn hello_rejected(section: &str, code: StatusCode) {
    counter!("stktagg_hello_rejected_total", "section" => section.to_owned(), "code" => code.code().to_string())
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

/// Publishes per-table entry counts and group membership.
pub fn table_sizes(section: &Section) {
    for t in section.store.table_summaries() {
        gauge!("stktagg_table_entries", "section" => section.name.clone(), "table" => String::from_utf8_lossy(&t.name).into_owned())
            .set(t.used as f64);
    }
    for g in section.plan.groups.iter() {
        let active = section.active_member(g.id.0 as u16);
        for m in g.members.iter() {
            let peer = &section.peers[m.0];
            gauge!("stktagg_group_active_member", "section" => section.name.clone(), "group" => section.group_number(g.id.0 as u16), "peer" => peer.name.clone())
                .set(if active == Some(*m) { 1.0 } else { 0.0 });
        }
    }
}

/// A bounded label for a wire error: its variant name.
pub fn error_kind(e: &stktagg_wire::WireError) -> String {
    let dbg = format!("{e:?}");
    dbg.chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect()
}
