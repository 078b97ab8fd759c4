//! Prometheus metrics: names, labels, and the exporter.
//!
//! Every series is labelled by section and, where it makes sense, by peer: both come
//! from the configuration, so label sets are bounded. No per-key labels, ever.
//!
//! Every series whose label values are known from the configuration is registered
//! at start ([`register_section`]): a peer that never connects has
//! `stktagg_peer_up 0`, and every counter starts at 0, so that alert rules such as
//! `increase(stktagg_protocol_errors_total[10m]) > 0` see the first error (a series
//! born at 1 has no earlier sample to increase from). Only `stktagg_table_entries`
//! appears later: table names come from the peers' definitions.
//!
//! The functions here take plain data (names and numbers), never a section, so that
//! the modules that call them stay free to change shape.

use anyhow::{Context, Result};
use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
pub use stktagg_section::PROTOCOL_ERROR_KINDS;
use stktagg_section::SectionCore;
use stktagg_store::Store;
use stktagg_wire::hello::StatusCode;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The propagation histogram's bucket bounds, in seconds.
const PROPAGATION_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

/// The status codes our listener answers a bad hello with (the `code` label of
/// `stktagg_hello_rejected_total`).
pub const HELLO_REJECT_CODES: &[StatusCode] = &[
    StatusCode::ProtocolError,
    StatusCode::BadVersion,
    StatusCode::LocalPeerMismatch,
    StatusCode::UnknownPeer,
];

/// Hellos rejected since start, all sections: `show info` prints it. (The other
/// counters `show info` sums live in each peer's stats; rejected hellos belong to
/// no configured peer.)
static HELLOS_REJECTED: AtomicU64 = AtomicU64::new(0);

/// Failed TLS handshakes on our listeners since start, all sections (`show info`).
static TLS_FAILURES: AtomicU64 = AtomicU64::new(0);

/// The installed recorder, once per process (a global recorder cannot be
/// replaced; the HTTP listener in front of it can: [`serve`]), or why it could
/// not be installed.
static HANDLE: std::sync::OnceLock<Result<PrometheusHandle, String>> = std::sync::OnceLock::new();

/// Installs the Prometheus recorder, describes every series and publishes
/// `stktagg_build_info`, once per process. It is installed whether or not a
/// metrics listener is configured: a reload that adds the listener then
/// exports every counter from the start, and sessions, which look their
/// counters up once, count into it from their first update.
pub fn install_recorder() -> Result<()> {
    let installed = HANDLE.get_or_init(|| {
        let handle = PrometheusBuilder::new()
            .set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Full(
                    "stktagg_propagation_seconds".to_owned(),
                ),
                PROPAGATION_BUCKETS,
            )
            .map_err(|e| format!("configuring the propagation histogram: {e}"))?
            .install_recorder()
            .map_err(|e| format!("installing the metrics recorder: {e}"))?;
        describe();
        gauge!("stktagg_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
        publish_process(&ProcessStats::collect());
        register_reloads();
        Ok(handle)
    });
    match installed {
        Ok(_) => Ok(()),
        Err(e) => anyhow::bail!("{e}"),
    }
}

/// The exposition text, as a scrape gets it (`None` before the recorder is
/// installed).
pub fn render() -> Option<String> {
    handle().map(PrometheusHandle::render)
}

fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE.get().and_then(|h| h.as_ref().ok())
}

/// Binds the metrics listener.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("starting the Prometheus listener on {addr}"))
}

/// Longest HTTP request head read from a scraper.
const MAX_REQUEST: usize = 8 * 1024;

/// Serves the metrics on `listener` until `stop`: every request gets the whole
/// exposition (`GET /metrics`, as Prometheus asks, or any other path, as the
/// exporter's own listener did), one request per connection.
///
/// The exporter's built-in listener is tied to the recorder it installs, and a
/// process has one recorder for good: serving the text ourselves is what lets a
/// reload move the listener.
pub async fn serve(listener: TcpListener, stop: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            a = listener.accept() => a,
        };
        let Ok((stream, _)) = accepted else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        tokio::spawn(scrape(stream));
    }
}

async fn scrape(mut stream: tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut head = Vec::with_capacity(512);
    let read = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        true
    })
    .await;
    if !matches!(read, Ok(true)) {
        return;
    }
    let reply = if head.starts_with(b"GET ") || head.starts_with(b"HEAD ") {
        let body = handle().map(PrometheusHandle::render).unwrap_or_default();
        let mut r = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        if head.starts_with(b"GET ") {
            r.push_str(&body);
        }
        r
    } else {
        "HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            .to_owned()
    };
    let _ = stream.write_all(reply.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// The outcomes a reload is counted under.
pub const RELOAD_RESULTS: &[&str] = &["ok", "invalid", "failed"];

fn register_reloads() {
    for r in RELOAD_RESULTS {
        counter!("stktagg_config_reloads_total", "result" => *r).increment(0);
    }
    gauge!("stktagg_config_last_reload_successful").set(1.0);
    gauge!("stktagg_config_last_reload_success_timestamp_seconds").set(unix_now());
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// A reload ended with `result` (one of [`RELOAD_RESULTS`]).
pub fn reload(result: &'static str) {
    counter!("stktagg_config_reloads_total", "result" => result).increment(1);
    let ok = result == "ok";
    gauge!("stktagg_config_last_reload_successful").set(if ok { 1.0 } else { 0.0 });
    if ok {
        gauge!("stktagg_config_last_reload_success_timestamp_seconds").set(unix_now());
    }
}

fn describe() {
    describe_counter!(
        "stktagg_config_reloads_total",
        "configuration reloads (SIGHUP), by result: ok (applied, or nothing to apply), invalid (the files do not check; nothing changed), failed (valid, but a listener could not be bound; nothing changed)"
    );
    describe_gauge!(
        "stktagg_config_last_reload_successful",
        "1 if the last reload (or the start) applied its configuration, 0 if it was refused"
    );
    describe_gauge!(
        "stktagg_config_last_reload_success_timestamp_seconds",
        metrics::Unit::Seconds,
        "when the configuration in force was applied (start or reload), since the Unix epoch"
    );
    describe_gauge!(
        "stktagg_build_info",
        "always 1; the version label says which stktagg runs"
    );
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
        "stktagg_hello_wrong_address_total",
        "incoming sessions refused (504) because they claim a peer from another address than its configured one (addr-check), by claimed peer"
    );
    describe_counter!(
        "stktagg_hello_wrong_identity_total",
        "incoming TLS sessions refused (504) because their client certificate does not name the peer they claim, by claimed peer"
    );
    describe_counter!(
        "stktagg_tls_handshake_failures_total",
        "incoming connections to a TLS listener whose TLS handshake failed (plain text, unknown CA, expired or missing client certificate, timeout)"
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
        "stktagg_table_size",
        "the most entries a table holds (its rule's size); new keys beyond it are refused, none evicted"
    );
    describe_counter!(
        "stktagg_table_full_total",
        "updates of a new key refused because its output table is full (the rule's size)"
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
        metrics::Unit::Seconds,
        "time from receiving a source update to sending the new value, per section"
    );
    describe_gauge!(
        "process_resident_memory_bytes",
        metrics::Unit::Bytes,
        "resident set size"
    );
    describe_gauge!(
        "process_virtual_memory_bytes",
        metrics::Unit::Bytes,
        "virtual memory size"
    );
    describe_gauge!(
        "process_cpu_seconds_total",
        metrics::Unit::Seconds,
        "user and system CPU time (a gauge only because the exporter's counters are integers: rate() reads it the same)"
    );
    describe_gauge!("process_open_fds", "open file descriptors");
    describe_gauge!(
        "process_max_fds",
        "the soft limit on open file descriptors (0: unlimited)"
    );
    describe_gauge!("process_threads", "OS threads");
    describe_gauge!(
        "process_start_time_seconds",
        metrics::Unit::Seconds,
        "start time of the process since the Unix epoch"
    );
}

/// One `up` group of a section, for [`register_section`]: its number as shown in
/// labels, and its members' names.
#[derive(Debug, Clone)]
pub struct GroupLabels {
    /// The `group` label value.
    pub group: String,
    /// The members, in configuration order.
    pub members: Vec<String>,
}

/// Registers every series of a section whose label values the configuration
/// fixes, at 0: per peer its session gauge and counters, per group its switches and
/// members, the section's rejected hellos by code, its failed TLS handshakes and
/// its propagation histogram.
pub fn register_section(section: &str, peers: &[&str], groups: &[GroupLabels]) {
    let s = || section.to_owned();
    for &peer in peers {
        let p = || peer.to_owned();
        gauge!("stktagg_peer_up", "section" => s(), "peer" => p()).set(0.0);
        counter!("stktagg_sessions_total", "section" => s(), "peer" => p()).increment(0);
        counter!("stktagg_updates_received_total", "section" => s(), "peer" => p()).increment(0);
        counter!("stktagg_updates_sent_total", "section" => s(), "peer" => p()).increment(0);
        counter!("stktagg_tables_ignored_total", "section" => s(), "peer" => p()).increment(0);
        counter!("stktagg_hello_wrong_address_total", "section" => s(), "peer" => p()).increment(0);
        counter!("stktagg_hello_wrong_identity_total", "section" => s(), "peer" => p())
            .increment(0);
        for direction in ["in", "out"] {
            counter!("stktagg_resyncs_total", "section" => s(), "peer" => p(), "direction" => direction)
                .increment(0);
        }
        for &kind in PROTOCOL_ERROR_KINDS {
            counter!("stktagg_protocol_errors_total", "section" => s(), "peer" => p(), "kind" => kind)
                .increment(0);
        }
    }
    for g in groups {
        counter!("stktagg_group_switches_total", "section" => s(), "group" => g.group.clone())
            .increment(0);
        for m in &g.members {
            gauge!("stktagg_group_active_member", "section" => s(), "group" => g.group.clone(), "peer" => m.clone())
                .set(0.0);
        }
    }
    counter!("stktagg_tls_handshake_failures_total", "section" => s()).increment(0);
    for code in HELLO_REJECT_CODES {
        counter!("stktagg_hello_rejected_total", "section" => s(), "code" => code.code().to_string())
            .increment(0);
    }
    // A registered histogram is exported with zero counts until its first sample.
    let _ = histogram!("stktagg_propagation_seconds", "section" => s());
}

/// An incoming hello was rejected.
pub fn hello_rejected(section: &str, code: StatusCode) {
    HELLOS_REJECTED.fetch_add(1, Ordering::Relaxed);
    counter!("stktagg_hello_rejected_total", "section" => section.to_owned(), "code" => code.code().to_string())
        .increment(1);
}

/// A session claimed `peer` from an address it may not use (`addr-check`). The
/// remote address is never a label: anyone can connect from anywhere, so it would
/// make the series unbounded; the warning line names it.
pub fn wrong_address(section: &str, peer: &str) {
    counter!("stktagg_hello_wrong_address_total", "section" => section.to_owned(), "peer" => peer.to_owned())
        .increment(1);
}

/// A session claimed `peer` with a client certificate that names someone else.
pub fn wrong_identity(section: &str, peer: &str) {
    counter!("stktagg_hello_wrong_identity_total", "section" => section.to_owned(), "peer" => peer.to_owned())
        .increment(1);
}

/// A TLS handshake on our listener failed. Nothing of the connection is a label:
/// it has not even said who it claims to be.
pub fn tls_handshake_failed(section: &str) {
    TLS_FAILURES.fetch_add(1, Ordering::Relaxed);
    counter!("stktagg_tls_handshake_failures_total", "section" => section.to_owned()).increment(1);
}

/// Hellos rejected since start, all sections.
pub fn hellos_rejected() -> u64 {
    HELLOS_REJECTED.load(Ordering::Relaxed)
}

/// Failed TLS handshakes on our listeners since start, all sections.
pub fn tls_handshake_failures() -> u64 {
    TLS_FAILURES.load(Ordering::Relaxed)
}

/// Publishes per-table entry counts and group membership.
pub fn table_sizes(section: &SectionCore<Store>) {
    for t in section.store.table_summaries() {
        let table = String::from_utf8_lossy(&t.name).into_owned();
        gauge!("stktagg_table_entries", "section" => section.name.clone(), "table" => table.clone())
            .set(t.used as f64);
        gauge!("stktagg_table_size", "section" => section.name.clone(), "table" => table)
            .set(t.size as f64);
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

/// The process's resource use, as `/proc` tells it (fields the platform does not
/// report are `None`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcessStats {
    /// Resident set size, in bytes.
    pub rss_bytes: Option<u64>,
    /// Virtual memory size, in bytes.
    pub virtual_bytes: Option<u64>,
    /// User and system CPU time, in seconds.
    pub cpu_seconds: Option<f64>,
    /// Open file descriptors.
    pub open_fds: Option<u64>,
    /// The soft limit on open file descriptors (0: unlimited).
    pub max_fds: Option<u64>,
    /// OS threads.
    pub threads: Option<u64>,
    /// Start time, in seconds since the Unix epoch.
    pub start_time_seconds: Option<u64>,
}

impl ProcessStats {
    /// Reads them now.
    pub fn collect() -> ProcessStats {
        let m = metrics_process::collector::collect();
        ProcessStats {
            rss_bytes: m.resident_memory_bytes,
            virtual_bytes: m.virtual_memory_bytes,
            cpu_seconds: m.cpu_seconds_total,
            open_fds: m.open_fds,
            max_fds: m.max_fds,
            threads: m.threads,
            start_time_seconds: m.start_time_seconds,
        }
    }
}

/// Publishes the standard `process_*` series.
pub fn publish_process(p: &ProcessStats) {
    let set = |name: &'static str, v: Option<f64>| {
        if let Some(v) = v {
            gauge!(name).set(v);
        }
    };
    set(
        "process_resident_memory_bytes",
        p.rss_bytes.map(|v| v as f64),
    );
    set(
        "process_virtual_memory_bytes",
        p.virtual_bytes.map(|v| v as f64),
    );
    set("process_cpu_seconds_total", p.cpu_seconds);
    set("process_open_fds", p.open_fds.map(|v| v as f64));
    set("process_max_fds", p.max_fds.map(|v| v as f64));
    set("process_threads", p.threads.map(|v| v as f64));
    set(
        "process_start_time_seconds",
        p.start_time_seconds.map(|v| v as f64),
    );
}

/// Refreshes the `process_*` series every second until shutdown, and does the
/// recorder's upkeep (its histograms hold samples until drained). Reading `/proc`
/// (a few small files and the fd directory) costs tens of microseconds; the
/// exporter has no per-scrape hook, so a timer keeps the values at most a second old.
pub async fn process_task(shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let stats = tokio::task::spawn_blocking(ProcessStats::collect)
            .await
            .unwrap_or_default();
        publish_process(&stats);
        if let Some(h) = handle() {
            h.run_upkeep();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_stats_are_read_on_linux() {
        let p = ProcessStats::collect();
        assert!(p.rss_bytes.is_some_and(|b| b > 1024 * 1024), "{p:?}");
        assert!(p.open_fds.is_some_and(|n| n >= 3), "{p:?}");
        assert!(p.cpu_seconds.is_some_and(|s| s >= 0.0), "{p:?}");
        assert!(p.threads.is_some_and(|n| n >= 1), "{p:?}");
    }
}
