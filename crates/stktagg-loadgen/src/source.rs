//! One HAProxy-like source: a peers session driven by the workspace's protocol
//! engine ([`stktagg_session::PeerSession`]) from two threads.
//!
//! The engine owns the protocol: the hello and its status, the heartbeats, the
//! answer to the target's RESYNC REQUEST (an empty lesson, then FINISHED), CONFIRM
//! for its FINISHED or PARTIAL, acknowledgements both ways and the idle rule. This
//! module only moves bytes and reads events:
//!
//! - The calling thread is the writer: it asks the engine what to send (control
//!   messages, acks, and the stream, full speed or paced to a fixed rate) and writes
//!   it. The stream is pre-encoded ([`crate::stream`]) and handed to the engine as
//!   runs of at most [`CHUNK`] bytes ([`stktagg_session::Outbox::send_preencoded`]),
//!   so sending costs a header scan and a copy, not an encoding.
//! - A reader thread reads the socket, feeds the engine and turns its events into
//!   the report: acks with their arrival times, aggregated updates received and,
//!   when asked, their `http_req_cnt` arrivals. Only then does the engine decode
//!   the aggregated updates; otherwise it reads their ids and counts them
//!   ([`stktagg_session::SessionConfig::decode_updates`]).
//!
//! The engine sits behind a mutex that neither thread holds while it blocks on the
//! socket: only the writer writes, so messages never interleave, and the reader
//! timestamps each ack as it is read, whatever the writer is doing. The reader wakes
//! the writer (a condition variable) when something must go out at once (the answer
//! to a resync request, a CONFIRM) or when the last update is acknowledged; acks of
//! the target's updates go out with the writer's next pass (at most
//! [`IDLE_TICK`] later).
//!
//! Every wait is bounded by the run's deadline; a session that does not finish in
//! time reports `complete: false` instead of hanging.

use crate::error::LoadgenError;
use crate::stream::{Stream, update_of_cnt};
use bytes::BytesMut;
use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};
use stktagg_session::{
    Event, Feed, NothingToSend, Outbox, PeerSession, PreencodedError, Progress, SessionConfig,
    TableKey,
};
use stktagg_wire::{DataType, Value};

/// The most stream bytes handed to the engine, and so to one `write` call, at once.
pub const CHUNK: usize = 256 * 1024;
/// How often the pacing loop looks at the clock.
const PACE_TICK: Duration = Duration::from_micros(200);
/// The longest the writer sleeps between passes when it has nothing urgent to do:
/// pending acks and heartbeats wait at most this long.
pub const IDLE_TICK: Duration = Duration::from_millis(10);
/// How long a blocked read or write waits before the deadline and the stop flag
/// are looked at again.
const IO_POLL: Duration = Duration::from_millis(50);
/// Bytes read at once: small enough that the reader, which decodes what it read
/// while holding the engine, never holds it long.
const READ_CHUNK: usize = 64 * 1024;
/// Our table key for the stream's table (the engine gives it its wire id).
const STREAM_TABLE: TableKey = TableKey(1);

/// How one source behaves.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    /// Where the aggregator (or HAProxy) listens. Must be a loopback address.
    pub target: SocketAddr,
    /// The name the target answers to (its local peer name).
    pub remote_name: String,
    /// Our peer name, declared on the target.
    pub local_name: String,
    /// Updates per second for this source; `None` sends at full speed.
    pub rate: Option<f64>,
    /// Record when each update leaves (needed for latency).
    pub record_send_times: bool,
    /// Record the `http_req_cnt` arrivals of the aggregated updates coming back.
    pub track_arrivals: bool,
    /// Track only the tables whose name starts with this (the probe's, when every
    /// source sends); `None` tracks every table.
    pub track_tables: Option<String>,
    /// How long to wait for the target's RESYNC REQUEST (answered before the stream
    /// starts, so that the target's end-of-resync work is not inside the measure).
    pub wait_resync: Duration,
    /// Hard bound on the whole session.
    pub deadline: Instant,
}

/// What a source saw. Times are nanoseconds since the run's epoch.
#[derive(Debug, Clone, Default)]
pub struct SourceReport {
    /// Our peer name.
    pub name: String,
    /// Updates written.
    pub sent: u64,
    /// When the first byte of the stream (its definition) was written.
    pub first_byte_ns: Option<u64>,
    /// When the stream's last byte was written.
    pub last_byte_ns: Option<u64>,
    /// When the ack of the last update arrived.
    pub last_ack_ns: Option<u64>,
    /// Every ack: (update id, arrival time).
    pub acks: Vec<(u32, u64)>,
    /// Aggregated updates received.
    pub received_updates: u64,
    /// When the first and last aggregated updates were received.
    pub received_span_ns: Option<(u64, u64)>,
    /// `send_times[i]`: when update `i` was written (if recorded).
    pub send_times: Vec<u64>,
    /// (update index from `http_req_cnt`, arrival time) of tracked aggregated updates.
    pub arrivals: Vec<(u64, u64)>,
    /// RESYNC REQUESTs answered.
    pub resync_requests: u32,
    /// Whether every update was acknowledged before the deadline (passive sources:
    /// whether the session stayed up until stopped).
    pub complete: bool,
    /// What ended the session early, if anything did.
    pub error: Option<String>,
}

/// Refuses anything but loopback targets.
///
/// # Errors
/// [`LoadgenError::NotLoopback`].
pub fn check_loopback(addr: SocketAddr) -> Result<(), LoadgenError> {
    if addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(LoadgenError::NotLoopback { addr })
    }
}

fn since(epoch: Instant) -> u64 {
    epoch.elapsed().as_nanos() as u64
}

/// The engine's clock: milliseconds since the run's epoch.
fn ms(epoch: Instant) -> u64 {
    epoch.elapsed().as_millis() as u64
}

/// Runs one source session: `stream` (empty for a passive source that only listens)
/// until every update is acknowledged (then `acked` is set) and `stop` is set, or the
/// deadline passes.
///
/// # Errors
/// Connection and handshake failures. Failures after the handshake end the session
/// and are reported in [`SourceReport::error`].
pub fn run_source(
    cfg: &SourceConfig,
    stream: &Stream,
    epoch: Instant,
    stop: &AtomicBool,
    acked: &AtomicBool,
) -> Result<SourceReport, LoadgenError> {
    check_loopback(cfg.target)?;
    let mut sock = TcpStream::connect_timeout(&cfg.target, Duration::from_secs(2))
        .map_err(LoadgenError::io("connecting to the target"))?;
    sock.set_nodelay(true)
        .map_err(LoadgenError::io("setting TCP_NODELAY"))?;
    // Only a source that tracks arrivals looks inside the aggregated updates; the
    // others count them, at a third of the cost of decoding (a fleet of sources
    // receives every sum, and the generator shares the machine with the target).
    let engine = handshake(
        &mut sock,
        &cfg.local_name,
        &cfg.remote_name,
        cfg.track_arrivals,
        epoch,
        cfg.deadline,
    )?;
    sock.set_write_timeout(Some(IO_POLL))
        .map_err(LoadgenError::io("setting the write timeout"))?;

    let mut core = Core::new(engine, stream.len() as u32, cfg.track_tables.clone());
    // What came with the status line (a RESYNC REQUEST, say).
    core.drain(since(epoch));
    let shared = Arc::new(Shared {
        core: Mutex::new(core),
        wake: Condvar::new(),
        stop: AtomicBool::new(false),
    });
    let reader_sock = sock
        .try_clone()
        .map_err(LoadgenError::io("cloning the socket"))?;
    reader_sock
        .set_read_timeout(Some(IO_POLL))
        .map_err(LoadgenError::io("setting the read timeout"))?;
    let reader = {
        let shared = shared.clone();
        thread::Builder::new()
            .name(format!("{}-rx", cfg.local_name))
            .spawn(move || read_loop(reader_sock, &shared, epoch))
            .map_err(LoadgenError::io("spawning the reader"))?
    };

    let mut report = SourceReport {
        name: cfg.local_name.clone(),
        ..SourceReport::default()
    };
    let mut w = Writer {
        sock: &mut sock,
        shared: &shared,
        out: BytesMut::with_capacity(CHUNK + 4096),
        epoch,
        deadline: cfg.deadline,
    };
    let result = w.run(cfg, stream, stop, acked, &mut report);
    acked.store(true, Ordering::Release);
    shared.stop.store(true, Ordering::Release);
    let _ = sock.shutdown(Shutdown::Both);
    reader.join().map_err(|_| LoadgenError::ThreadPanicked)?;
    let rx = std::mem::take(&mut lock(&shared).rx);
    report.acks = rx.acks;
    report.received_updates = rx.received;
    report.received_span_ns = rx.received_span;
    report.arrivals = rx.arrivals;
    report.resync_requests = rx.resync_requests;
    report.last_ack_ns = rx.last_ack;
    let all_acked = stream.is_empty() || rx.last_ack.is_some();
    match result {
        Ok(()) => report.complete = all_acked && rx.error.is_none(),
        Err(e) => report.error = Some(e.to_string()),
    }
    if report.error.is_none() {
        report.error = rx.error;
    }
    Ok(report)
}

/// Dials: the engine's hello, then its status line read until the session is
/// established (bytes that followed it stay in the engine).
fn handshake(
    sock: &mut TcpStream,
    local_name: &str,
    remote_name: &str,
    decode_updates: bool,
    epoch: Instant,
    deadline: Instant,
) -> Result<PeerSession, LoadgenError> {
    let config = SessionConfig {
        pid: std::process::id(),
        // Room for a whole chunk of the stream on top of control messages.
        high_water: CHUNK,
        decode_updates,
        ..SessionConfig::new(local_name)
    };
    let timeout = Duration::from_millis(config.hello_timeout_ms);
    let mut engine = PeerSession::dial(config, remote_name, ms(epoch))?;
    let mut out = BytesMut::new();
    engine.poll_transmit(ms(epoch), &mut NothingToSend, &mut out);
    sock.write_all(&out)
        .map_err(LoadgenError::io("sending the hello"))?;
    sock.set_read_timeout(Some(IO_POLL))
        .map_err(LoadgenError::io("setting the read timeout"))?;
    let mut tmp = [0u8; 4096];
    loop {
        if engine.is_established() {
            return Ok(engine);
        }
        engine.handle_timeout(ms(epoch));
        if Instant::now() >= deadline {
            return Err(LoadgenError::HandshakeTimeout(timeout));
        }
        if let Some(end) = engine.poll_event().and_then(|e| match e {
            Event::Closed(end) => Some(end),
            _ => None,
        }) {
            return Err(match end {
                stktagg_session::End::Refused(code) => LoadgenError::Refused { code: code.code() },
                stktagg_session::End::HandshakeTimeout => LoadgenError::HandshakeTimeout(timeout),
                end => LoadgenError::Ended(end),
            });
        }
        match sock.read(&mut tmp) {
            Ok(0) => return Err(LoadgenError::ClosedDuringHandshake),
            Ok(n) => engine.handle_input(ms(epoch), &tmp[..n]),
            Err(e) if is_timeout(&e) => {}
            Err(e) => return Err(LoadgenError::io("reading the status line")(e)),
        }
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
    )
}

/// The engine and what its events told us, shared by the writer and the reader.
#[derive(Debug)]
struct Shared {
    core: Mutex<Core>,
    /// Signalled when the writer has something to do at once ([`Core::urgent`]).
    wake: Condvar,
    /// The writer is done: the reader stops.
    stop: AtomicBool,
}

/// Locks the core. A poisoned lock means the other thread panicked mid-update; the
/// report it leaves is still worth returning.
fn lock(shared: &Shared) -> MutexGuard<'_, Core> {
    shared.core.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the reader collected.
#[derive(Debug, Default)]
struct Received {
    acks: Vec<(u32, u64)>,
    last_ack: Option<u64>,
    /// The highest update id acknowledged.
    highest_ack: u32,
    received: u64,
    received_span: Option<(u64, u64)>,
    arrivals: Vec<(u64, u64)>,
    resync_requests: u32,
    error: Option<String>,
}

/// A source's session: the engine, and the report its events build.
#[derive(Debug)]
struct Core {
    engine: PeerSession,
    rx: Received,
    /// The stream's last update id.
    last_id: u32,
    /// The position of `http_req_cnt` in each of the target's tables, by its id.
    cnt_index: HashMap<u32, Option<usize>>,
    /// See [`SourceConfig::track_tables`].
    track_tables: Option<String>,
    /// The writer should pass at once: something urgent is queued or happened.
    urgent: bool,
    /// The session is over (the engine closed it, or the socket did).
    ended: bool,
}

impl Core {
    fn new(engine: PeerSession, last_id: u32, track_tables: Option<String>) -> Core {
        Core {
            engine,
            rx: Received::default(),
            last_id,
            cnt_index: HashMap::new(),
            track_tables,
            urgent: false,
            ended: false,
        }
    }

    /// Reads every pending event of the engine; `t` is when the bytes behind them
    /// were read.
    fn drain(&mut self, t: u64) {
        self.drain_events(t);
        // Counted by the engine, whether decoded (tracked) or not.
        let received = self.engine.updates_received();
        if received > self.rx.received {
            self.rx.received = received;
            self.rx.received_span = Some(match self.rx.received_span {
                Some((first, _)) => (first, t),
                None => (t, t),
            });
        }
    }

    fn drain_events(&mut self, t: u64) {
        while let Some(event) = self.engine.poll_event() {
            match event {
                Event::Acked { update_id, .. } => {
                    let rx = &mut self.rx;
                    rx.acks.push((update_id, t));
                    rx.highest_ack = rx.highest_ack.max(update_id);
                    if update_id == self.last_id && rx.last_ack.is_none() {
                        rx.last_ack = Some(t);
                        self.urgent = true;
                    }
                }
                Event::Update(u) => {
                    if let Some(&Some(i)) = self.cnt_index.get(&u.table_id)
                        && let Some(Value::Uint(c)) = u.values.get(i)
                        && let Some(i) = update_of_cnt(*c)
                    {
                        self.rx.arrivals.push((i, t));
                    }
                }
                Event::TableDefined(def) => {
                    let tracked = self
                        .track_tables
                        .as_ref()
                        .is_none_or(|p| def.name.starts_with(p.as_bytes()));
                    let i = def
                        .data
                        .iter()
                        .position(|s| s.data_type == DataType::HttpReqCnt)
                        .filter(|_| tracked);
                    self.cnt_index.insert(def.table_id, i);
                }
                Event::ResyncRequested => {
                    self.rx.resync_requests += 1;
                    self.urgent = true;
                }
                // A CONFIRM is queued.
                Event::ResyncEnded { .. } => self.urgent = true,
                Event::Closed(end) => {
                    self.rx.error.get_or_insert_with(|| end.to_string());
                    self.ended = true;
                    // HAProxy's error reply may be queued.
                    self.urgent = true;
                }
                Event::HelloReceived(_)
                | Event::Established { .. }
                | Event::ResyncAsked
                | Event::Confirmed => {}
            }
        }
    }

    /// The socket ended: `error` says why, unless we were closing it.
    fn end(&mut self, error: Option<String>) {
        if let Some(e) = error {
            self.rx.error.get_or_insert(e);
        }
        self.ended = true;
        self.urgent = true;
    }
}

fn read_loop(mut sock: TcpStream, shared: &Shared, epoch: Instant) {
    let mut buf = vec![0u8; READ_CHUNK];
    let stopped = || shared.stop.load(Ordering::Acquire);
    loop {
        if stopped() {
            return;
        }
        let error = match sock.read(&mut buf) {
            Ok(0) => Some("the target closed the connection".to_owned()),
            Ok(n) => {
                let t = since(epoch);
                let mut core = lock(shared);
                core.engine.handle_input(ms(epoch), &buf[..n]);
                core.drain(t);
                let (urgent, ended) = (core.urgent, core.ended);
                drop(core);
                if urgent {
                    shared.wake.notify_one();
                }
                if ended {
                    return;
                }
                continue;
            }
            Err(e) if is_timeout(&e) => continue,
            Err(e) => Some(format!("reading from the target: {e}")),
        };
        let mut core = lock(shared);
        core.end(error.filter(|_| !stopped()));
        drop(core);
        shared.wake.notify_one();
        return;
    }
}

/// Hands the pre-encoded stream to the engine, up to `due` updates.
#[derive(Debug)]
struct StreamFeed<'a> {
    stream: &'a Stream,
    /// Updates handed to the engine.
    sent: usize,
    /// Updates that may be sent by now.
    due: usize,
    /// Why the engine refused a run (a bug in the stream; the session stops).
    refused: Option<PreencodedError>,
}

impl Feed for StreamFeed<'_> {
    fn live(&mut self, out: &mut Outbox<'_>) -> Progress {
        let due = self.due.min(self.stream.len());
        if self.sent >= due || self.refused.is_some() {
            return Progress::Done;
        }
        let stream = self.stream;
        let start = self.sent.checked_sub(1).map_or(0, |i| stream.ends[i]);
        // Whole updates up to CHUNK bytes, at least one.
        let fit = stream.ends[self.sent..due].partition_point(|&end| end - start <= CHUNK);
        let to = self.sent + fit.max(1);
        let first_update_id = self.sent as u32 + 1;
        match out.send_preencoded(
            STREAM_TABLE,
            || Some(stream.spec.definition()),
            stream.range(self.sent, to),
            first_update_id,
        ) {
            Ok(true) => self.sent = to,
            // A definition is always given.
            Ok(false) => return Progress::Done,
            Err(e) => {
                self.refused = Some(e);
                return Progress::Done;
            }
        }
        if self.sent < due {
            Progress::More
        } else {
            Progress::Done
        }
    }
}

/// The writing side of a session: engine passes and socket writes.
struct Writer<'a> {
    sock: &'a mut TcpStream,
    shared: &'a Shared,
    out: BytesMut,
    epoch: Instant,
    deadline: Instant,
}

impl Writer<'_> {
    fn expired(&self) -> bool {
        Instant::now() >= self.deadline
    }

    /// One pass: the engine's timers, then everything it has to send (the stream up
    /// to `feed.due`, one chunk at most), written out. Returns whether the session
    /// is over.
    fn transmit(&mut self, feed: &mut StreamFeed<'_>) -> Result<bool, LoadgenError> {
        let now = ms(self.epoch);
        let ended = {
            let mut core = lock(self.shared);
            core.urgent = false;
            core.engine.handle_timeout(now);
            core.drain(since(self.epoch));
            core.engine.poll_transmit(now, feed, &mut self.out);
            core.ended
        };
        if let Some(e) = feed.refused.take() {
            return Err(LoadgenError::Preencoded(e));
        }
        self.write_out()?;
        Ok(ended)
    }

    /// Writes the buffer, bounded by the deadline.
    fn write_out(&mut self) -> Result<(), LoadgenError> {
        let mut at = 0;
        while at < self.out.len() {
            match self.sock.write(&self.out[at..]) {
                Ok(0) => {
                    return Err(LoadgenError::io("writing to the target")(
                        ErrorKind::WriteZero.into(),
                    ));
                }
                Ok(n) => at += n,
                Err(e) if is_timeout(&e) && !self.expired() => {}
                Err(e) => return Err(LoadgenError::io("writing to the target")(e)),
            }
        }
        self.out.clear();
        Ok(())
    }

    /// Passes now if something urgent is pending, else after up to `d` (bounded by
    /// the deadline) or as soon as the reader signals something urgent. Returns
    /// whether the session is over.
    fn idle(&mut self, feed: &mut StreamFeed<'_>, d: Duration) -> Result<bool, LoadgenError> {
        {
            let core = lock(self.shared);
            if !core.urgent {
                let d = d.min(self.deadline.saturating_duration_since(Instant::now()));
                let _ = self.shared.wake.wait_timeout(core, d);
            }
        }
        self.transmit(feed)
    }

    fn run(
        &mut self,
        cfg: &SourceConfig,
        stream: &Stream,
        stop: &AtomicBool,
        acked: &AtomicBool,
        report: &mut SourceReport,
    ) -> Result<(), LoadgenError> {
        let mut feed = StreamFeed {
            stream,
            sent: 0,
            due: 0,
            refused: None,
        };
        // The engine's heartbeat at once, as HAProxy expects from a fresh session.
        if self.transmit(&mut feed)? {
            return Ok(());
        }
        let wait_until = Instant::now() + cfg.wait_resync;
        while lock(self.shared).rx.resync_requests == 0
            && Instant::now() < wait_until
            && !self.expired()
        {
            if self.idle(&mut feed, Duration::from_millis(5))? {
                return Ok(());
            }
        }
        // The answer itself (an empty lesson, FINISHED) goes out before the stream.
        if self.transmit(&mut feed)? {
            return Ok(());
        }
        if !stream.is_empty() {
            report.first_byte_ns = Some(since(self.epoch));
            let r = match cfg.rate {
                None => self.full_speed(&mut feed),
                Some(rate) => self.paced(&mut feed, rate, cfg.record_send_times, report),
            };
            report.sent = feed.sent as u64;
            if r? {
                return Ok(());
            }
            report.last_byte_ns = Some(since(self.epoch));
            let last = stream.len() as u32;
            while lock(self.shared).rx.highest_ack < last && !self.expired() {
                if self.idle(&mut feed, IDLE_TICK)? {
                    return Ok(());
                }
            }
        }
        acked.store(true, Ordering::Release);
        // Passive sources, and active ones once acknowledged, stay up (answering,
        // acknowledging and heartbeating) until the run says stop.
        while !stop.load(Ordering::Acquire) && !self.expired() {
            if self.idle(&mut feed, IDLE_TICK)? {
                return Ok(());
            }
        }
        Ok(())
    }

    /// The whole stream, a chunk per pass. Returns whether the session is over.
    fn full_speed(&mut self, feed: &mut StreamFeed<'_>) -> Result<bool, LoadgenError> {
        feed.due = feed.stream.len();
        while feed.sent < feed.due && !self.expired() {
            if self.transmit(feed)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The stream at `rate` updates per second. Returns whether the session is over.
    fn paced(
        &mut self,
        feed: &mut StreamFeed<'_>,
        rate: f64,
        record: bool,
        report: &mut SourceReport,
    ) -> Result<bool, LoadgenError> {
        let n = feed.stream.len();
        if record {
            report.send_times = Vec::with_capacity(n);
        }
        let start = Instant::now();
        while feed.sent < n && !self.expired() {
            feed.due = ((start.elapsed().as_secs_f64() * rate) as usize + 1).min(n);
            let t = since(self.epoch);
            if self.transmit(feed)? {
                return Ok(true);
            }
            if record {
                report.send_times.resize(feed.sent, t);
            }
            thread::sleep(PACE_TICK);
        }
        Ok(false)
    }
}

/// Drives the writer of a session alone, for the discard sink: the handshake, then
/// `stream` at full speed, as a source sends it, to a peer that never answers after
/// its status line. Returns when the stream started (after the handshake).
pub(crate) fn write_stream(
    sock: &mut TcpStream,
    stream: &Stream,
    deadline: Instant,
) -> Result<Instant, LoadgenError> {
    let epoch = Instant::now();
    let engine = handshake(sock, "discard", "sink", false, epoch, deadline)?;
    sock.set_write_timeout(Some(IO_POLL))
        .map_err(LoadgenError::io("setting the write timeout"))?;
    let shared = Shared {
        core: Mutex::new(Core::new(engine, stream.len() as u32, None)),
        wake: Condvar::new(),
        stop: AtomicBool::new(false),
    };
    let mut w = Writer {
        sock,
        shared: &shared,
        out: BytesMut::with_capacity(CHUNK + 4096),
        epoch,
        deadline,
    };
    let mut feed = StreamFeed {
        stream,
        sent: 0,
        due: 0,
        refused: None,
    };
    let start = Instant::now();
    let ended = w.full_speed(&mut feed)?;
    if ended || feed.sent < stream.len() {
        let why = lock(&shared).rx.error.take();
        return Err(LoadgenError::Incomplete(
            why.unwrap_or_else(|| "the deadline passed".to_owned()),
        ));
    }
    Ok(start)
}
