//! Runs of many sources, the discard sink, and the figures they produce.

use crate::error::LoadgenError;
use crate::source::{SourceConfig, SourceReport, check_loopback, run_source, write_stream};
use crate::stream::{Stream, StreamSpec};
use serde::Serialize;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// A run: `sources` sessions to one target, the first `active` of them sending a
/// stream each, the others only listening.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// The target (loopback only).
    pub target: SocketAddr,
    /// The target's local peer name.
    pub remote_name: String,
    /// Source `i` is named `<prefix><i + 1>`.
    pub local_prefix: String,
    /// Number of sessions.
    pub sources: usize,
    /// Number of them that send.
    pub active: usize,
    /// The stream each active source sends (source `i` rotates it by `i * keys /
    /// active`, so sources write the same keys at different moments).
    pub stream: StreamSpec,
    /// Total updates per second over the active sources; `None` is full speed.
    pub total_rate: Option<f64>,
    /// Measure propagation: source 1 records send times, the others decode what
    /// comes back. With several active sources (a fleet under load), source 1 is
    /// a probe: it writes a table of its own ([`probe_table`]) at its share of the
    /// rate, and only the last source decodes, that table only: the figure is
    /// from a write at one source to the new sum at the last one, under the load
    /// of every other source.
    pub latency: bool,
    /// How long to wait for each target's RESYNC REQUEST before sending.
    pub wait_resync: Duration,
    /// How long sessions stay up after the last acknowledgement, still reading.
    pub linger: Duration,
    /// Hard bound on the run.
    pub timeout: Duration,
    /// Also report the time between the ack of this update id and the last ack (per
    /// active source, the median is reported): the cost of the updates after it.
    pub measure_from: Option<u32>,
}

/// Percentiles of a latency distribution, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Latency {
    /// Updates measured.
    pub samples: usize,
    /// Median.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Maximum.
    pub max_us: f64,
}

impl Latency {
    /// The percentiles of `ns` (sorted in place); `None` when empty.
    pub fn of(ns: &mut [u64]) -> Option<Latency> {
        if ns.is_empty() {
            return None;
        }
        ns.sort_unstable();
        let q = |p: f64| {
            let i = ((ns.len() as f64 * p).ceil() as usize).clamp(1, ns.len()) - 1;
            ns[i] as f64 / 1000.0
        };
        Some(Latency {
            samples: ns.len(),
            p50_us: q(0.50),
            p99_us: q(0.99),
            p999_us: q(0.999),
            max_us: q(1.0),
        })
    }
}

/// What a run measured. Times are seconds.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// Sessions.
    pub sources: usize,
    /// Sending sessions.
    pub active: usize,
    /// Updates written, over all sources.
    pub updates: u64,
    /// From the first byte sent to the ack of the last update (the last source's);
    /// for an incomplete run, to the last ack received.
    pub elapsed_s: f64,
    /// Updates acknowledged, over all sources (the highest id acked per source).
    pub acked: u64,
    /// `updates / elapsed_s`, or `acked / elapsed_s` for an incomplete run.
    pub updates_per_s: f64,
    /// From the first byte sent to the last byte written.
    pub send_s: f64,
    /// Whether every active source got its last update acknowledged.
    pub complete: bool,
    /// Aggregated updates received, over all sources.
    pub received_updates: u64,
    /// `received_updates` per second of the span they arrived in.
    pub received_per_s: f64,
    /// Propagation from source 1 to every other source, when measured.
    pub latency: Option<Latency>,
    /// Updates of source 1 seen by every other source (the latency samples) against
    /// those sent.
    pub latency_coverage: Option<f64>,
    /// Seconds from the ack of `measure_from` to the last ack (median over active
    /// sources), and the cost per update after it, in ns.
    pub segment: Option<Segment>,
    /// Errors of individual sessions.
    pub errors: Vec<String>,
}

/// The tail of a run (see [`RunSpec::measure_from`]), timed from the first ack at
/// or after `from_update` to the last ack.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Segment {
    /// The update id asked for.
    pub from_update: u32,
    /// Updates timed, per source (from the first ack at or after `from_update`).
    pub updates: u64,
    /// Seconds.
    pub elapsed_s: f64,
    /// Nanoseconds per update over all sources.
    pub ns_per_update: f64,
}

/// The probe's table for a stream into `table` (`/bench.uncombined` gives
/// `/probe.uncombined`): the same suffix, so that the target aggregates it by the
/// same rule, and a base of its own, so that its sums count the probe alone.
pub fn probe_table(table: &str) -> String {
    match table.find('.') {
        Some(dot) => format!("/probe{}", &table[dot..]),
        None => "/probe".to_owned(),
    }
}

/// What the probe's table and its aggregate share: `/probe.`.
fn probe_prefix(probe: &str) -> String {
    match probe.find('.') {
        Some(dot) => probe[..=dot].to_owned(),
        None => probe.to_owned(),
    }
}

/// Carries out a run.
///
/// # Errors
/// A bad specification, a non-loopback target, or a session that cannot connect or
/// is refused. Later failures are listed in [`RunReport::errors`].
pub fn run(spec: &RunSpec) -> Result<RunReport, LoadgenError> {
    check_loopback(spec.target)?;
    if spec.active > spec.sources || spec.sources == 0 {
        return Err(LoadgenError::BadSpec("need 1..=sources active sources"));
    }
    if spec.latency && spec.sources < 2 {
        return Err(LoadgenError::BadSpec(
            "latency needs a source that writes and at least one other",
        ));
    }
    // A fleet under load: source 1 probes on a table of its own, the last source
    // watches it.
    let probe = spec.latency && spec.active > 1;
    let probe_name = probe_table(&spec.stream.table_name);
    // Every stream is built before the clock starts.
    let mut streams = Vec::with_capacity(spec.sources);
    for i in 0..spec.sources {
        if i < spec.active {
            let mut s = spec.stream.clone();
            s.offset = i as u64 * u64::from(spec.stream.keys) / spec.active as u64;
            if probe && i == 0 {
                s.table_name = probe_name.clone();
                s.offset = 0;
            }
            streams.push(Arc::new(s.build()?));
        } else {
            let mut s = spec.stream.clone();
            s.updates = 0;
            streams.push(Arc::new(s.build()?));
        }
    }
    let epoch = Instant::now();
    let deadline = epoch + spec.timeout;
    let stop = Arc::new(AtomicBool::new(false));
    let per_source_rate = spec.total_rate.map(|r| r / spec.active as f64);
    let mut handles = Vec::with_capacity(spec.sources);
    let done: Vec<Arc<AtomicBool>> = (0..spec.sources)
        .map(|_| Arc::new(AtomicBool::new(false)))
        .collect();
    for (i, stream) in streams.iter().enumerate() {
        let cfg = SourceConfig {
            target: spec.target,
            remote_name: spec.remote_name.clone(),
            local_name: format!("{}{}", spec.local_prefix, i + 1),
            rate: per_source_rate,
            record_send_times: spec.latency && i == 0,
            track_arrivals: spec.latency && i > 0 && (!probe || i == spec.sources - 1),
            track_tables: probe.then(|| probe_prefix(&probe_name)),
            wait_resync: spec.wait_resync,
            deadline,
        };
        let stream = stream.clone();
        let stop = stop.clone();
        let done = done[i].clone();
        let h = thread::Builder::new()
            .name(cfg.local_name.clone())
            .spawn(move || {
                let r = run_source(&cfg, &stream, epoch, &stop, &done);
                done.store(true, Ordering::Release);
                r
            })
            .map_err(LoadgenError::io("spawning a source"))?;
        handles.push(h);
    }
    // Every session stays up until every active one is acknowledged (or failed),
    // then all linger together, still reading what the target sends.
    while !done
        .iter()
        .take(spec.active)
        .all(|d| d.load(Ordering::Acquire))
        && Instant::now() < deadline
    {
        thread::sleep(Duration::from_millis(2));
    }
    thread::sleep(
        spec.linger
            .min(deadline.saturating_duration_since(Instant::now())),
    );
    stop.store(true, Ordering::Release);
    let mut reports = Vec::with_capacity(handles.len());
    for h in handles {
        reports.push(h.join().map_err(|_| LoadgenError::ThreadPanicked)??);
    }
    Ok(summarize(spec, &reports))
}

fn summarize(spec: &RunSpec, reports: &[SourceReport]) -> RunReport {
    let active = &reports[..spec.active];
    let first = active.iter().filter_map(|r| r.first_byte_ns).min();
    let last_ack = active.iter().filter_map(|r| r.last_ack_ns).max();
    let last_byte = active.iter().filter_map(|r| r.last_byte_ns).max();
    let updates: u64 = active.iter().map(|r| r.sent).sum();
    let complete = active.iter().all(|r| r.complete);
    let secs = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) if b > a => (b - a) as f64 / 1e9,
        _ => 0.0,
    };
    // An incomplete run is timed to its last ack, over what was acknowledged: a
    // lower bound rather than nothing.
    let acked: u64 = active
        .iter()
        .map(|r| r.acks.iter().map(|a| u64::from(a.0)).max().unwrap_or(0))
        .sum();
    let last_ack_any = active
        .iter()
        .filter_map(|r| r.acks.iter().map(|a| a.1).max())
        .max();
    let elapsed_s = if complete {
        secs(first, last_ack)
    } else {
        secs(first, last_ack_any)
    };
    let counted = if complete { updates } else { acked };
    let received_updates: u64 = reports.iter().map(|r| r.received_updates).sum();
    let rx_first = reports
        .iter()
        .filter_map(|r| r.received_span_ns.map(|s| s.0))
        .min();
    let rx_last = reports
        .iter()
        .filter_map(|r| r.received_span_ns.map(|s| s.1))
        .max();
    let rx_span = secs(rx_first, rx_last);
    let (latency, latency_coverage) = if spec.latency {
        let watchers = if spec.active > 1 {
            &reports[spec.sources - 1..]
        } else {
            &reports[1..]
        };
        let (l, c) = propagation(&reports[0], watchers);
        (l, Some(c))
    } else {
        (None, None)
    };
    let segment = spec.measure_from.and_then(|from| {
        // Acks come once per read pass of the target, so the first one at or after
        // `from` may be well past it: time the updates between the acks themselves.
        // The segment ends at the last ack, so an incomplete run still times what
        // was acknowledged.
        let mut per: Vec<(f64, u64)> = active
            .iter()
            .filter_map(|r| {
                let &(id, start) = r.acks.iter().find(|(id, _)| *id >= from)?;
                let &(last, end) = r.acks.iter().max_by_key(|(id, _)| *id)?;
                let n = u64::from(last.checked_sub(id).filter(|&n| n > 0)?);
                let ns = end.saturating_sub(start) as f64;
                Some((ns / n as f64, n))
            })
            .collect();
        if per.len() != active.len() {
            return None;
        }
        per.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (ns_per_source_update, updates) = per[per.len() / 2];
        Some(Segment {
            from_update: from,
            updates,
            elapsed_s: ns_per_source_update * updates as f64 / 1e9,
            // Sources send in parallel: the system's cost per update is the
            // per-source figure divided by their number.
            ns_per_update: ns_per_source_update / spec.active as f64,
        })
    });
    RunReport {
        sources: spec.sources,
        active: spec.active,
        updates,
        elapsed_s,
        acked,
        updates_per_s: if elapsed_s > 0.0 {
            counted as f64 / elapsed_s
        } else {
            0.0
        },
        send_s: secs(first, last_byte),
        complete,
        received_updates,
        received_per_s: if rx_span > 0.0 {
            received_updates as f64 / rx_span
        } else {
            0.0
        },
        latency,
        latency_coverage,
        segment,
        errors: reports
            .iter()
            .filter_map(|r| r.error.as_ref().map(|e| format!("{}: {e}", r.name)))
            .collect(),
    }
}

/// Latency from `sender` writing update `i` to the last of `receivers` receiving a
/// sum that reflects it; updates some receiver never saw as such (coalesced into a
/// later value) are left out. Returns the percentiles and the share measured.
pub fn propagation(sender: &SourceReport, receivers: &[SourceReport]) -> (Option<Latency>, f64) {
    let n = sender.send_times.len();
    if n == 0 || receivers.is_empty() {
        return (None, 0.0);
    }
    // Latest arrival per update over the receivers; 0 = not seen by all yet.
    let mut worst = vec![0u64; n];
    let mut seen = vec![0u32; n];
    for r in receivers {
        let mut first = vec![0u64; n];
        for &(i, t) in &r.arrivals {
            if let Some(f) = first.get_mut(i as usize)
                && *f == 0
            {
                *f = t.max(1);
            }
        }
        for i in 0..n {
            if first[i] != 0 {
                seen[i] += 1;
                worst[i] = worst[i].max(first[i]);
            }
        }
    }
    let all = receivers.len() as u32;
    let mut lat: Vec<u64> = (0..n)
        .filter(|&i| seen[i] == all)
        .map(|i| worst[i].saturating_sub(sender.send_times[i]))
        .collect();
    let coverage = lat.len() as f64 / n as f64;
    (Latency::of(&mut lat), coverage)
}

/// The generator's own limit: the stream written to a local socket whose reader
/// discards everything.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct DiscardReport {
    /// Updates written.
    pub updates: u64,
    /// Bytes the sink read (the stream, its definition, our hello and heartbeat).
    pub bytes: u64,
    /// From the first byte of the stream written to the last byte read by the sink.
    pub elapsed_s: f64,
    /// `updates / elapsed_s`.
    pub updates_per_s: f64,
}

/// Writes `stream` at full speed, through the same session engine and in the same
/// chunks as a source, into a loopback socket whose peer answers the hello and then
/// discards what it reads.
///
/// # Errors
/// Socket failures.
pub fn discard(stream: &Stream) -> Result<DiscardReport, LoadgenError> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(LoadgenError::io("binding the sink"))?;
    let addr = listener
        .local_addr()
        .map_err(LoadgenError::io("reading the sink address"))?;
    let sink = thread::Builder::new()
        .name("discard".to_owned())
        .spawn(move || -> std::io::Result<(u64, Instant)> {
            let (mut s, _) = listener.accept()?;
            s.set_read_timeout(Some(Duration::from_secs(30)))?;
            s.write_all(b"200\n")?;
            let mut buf = vec![0u8; 256 * 1024];
            let mut got = 0u64;
            loop {
                match s.read(&mut buf)? {
                    0 => return Ok((got, Instant::now())),
                    n => got += n as u64,
                }
            }
        })
        .map_err(LoadgenError::io("spawning the sink"))?;
    let mut s = std::net::TcpStream::connect(addr).map_err(LoadgenError::io("connecting"))?;
    s.set_nodelay(true)
        .map_err(LoadgenError::io("setting TCP_NODELAY"))?;
    let written = write_stream(&mut s, stream, Instant::now() + Duration::from_secs(60));
    // The sink stops at the end of the stream, or at once if writing failed.
    let _ = s.shutdown(Shutdown::Write);
    let joined = sink.join().map_err(|_| LoadgenError::ThreadPanicked)?;
    let start = written?;
    let (bytes, end) = joined.map_err(LoadgenError::io("draining"))?;
    let elapsed_s = end.duration_since(start).as_secs_f64();
    Ok(DiscardReport {
        updates: stream.len() as u64,
        bytes,
        elapsed_s,
        updates_per_s: stream.len() as f64 / elapsed_s.max(1e-9),
    })
}
