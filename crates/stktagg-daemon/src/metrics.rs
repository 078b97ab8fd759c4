//! Prometheus metrics: names, labels, and the exporter.
//!
//! Every series is labelled by section and, where it makes sense, by peer: both come
//! from the configuration, so label sets are bounded. No per-key labels, ever.

use anyhow::{Context, Result};
use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge};
use std::net::SocketAddr;
use stktagg_section::SectionCore;
use stktagg_store::Store;
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

/// An incoming hello was rejected.
pub fn hello_rejected(section: &str, code: StatusCode) {
    counter!("stktagg_hello_rejected_total", "section" => section.to_owned(), "code" => code.code().to_string())
        .increment(1);
}

/// Publishes per-table entry counts and group membership.
pub fn table_sizes(section: &SectionCore<Store>) {
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
