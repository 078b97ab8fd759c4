//! One HAProxy-like source: a peers session driven by two threads.
//!
//! The calling thread is the writer: hello, heartbeat, the answer to the peer's
//! RESYNC REQUEST, the table definition and the stream (full speed, or paced to a
//! fixed rate), heartbeats every 2 s while idle. A reader thread cuts frames, reads
//! acks (`0a 84`: our table id and the last update id received) and, when asked,
//! decodes the aggregated updates coming back. Control answers go from the reader to
//! the writer over a channel, so only one thread ever writes to the socket and
//! messages never interleave.
//!
//! Every wait is bounded by the run's deadline; a session that does not finish in
//! time reports `complete: false` instead of hanging.

use crate::error::LoadgenError;
use crate::stream::{Stream, update_of_cnt};
use bytes::BytesMut;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};
use stktagg_wire::frame::{self, Frame};
use stktagg_wire::hello::{LineDecoder, decode_status};
use stktagg_wire::{DataType, Decoder, Hello, Message, StatusCode, Value};

/// Bytes handed to one `write` call at full speed.
const CHUNK: usize = 256 * 1024;
/// Heartbeat interval while nothing else is written (HAProxy closes after 5-10 s).
const HEARTBEAT: Duration = Duration::from_secs(2);
/// How often the pacing loop looks at the clock.
const PACE_TICK: Duration = Duration::from_micros(200);
/// The reader's poll interval for the stop flag.
const READ_POLL: Duration = Duration::from_millis(50);

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
    /// Decode aggregated updates coming back and record `http_req_cnt` arrivals.
    pub track_arrivals: bool,
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
    let leftover = handshake(&mut sock, cfg)?;

    let reader_sock = sock
        .try_clone()
        .map_err(LoadgenError::io("cloning the socket"))?;
    reader_sock
        .set_read_timeout(Some(READ_POLL))
        .map_err(LoadgenError::io("setting the read timeout"))?;
    let shared = Arc::new(Shared::default());
    let (ctl_tx, ctl_rx) = mpsc::channel::<[u8; 2]>();
    let reader = {
        let shared = shared.clone();
        let track = cfg.track_arrivals;
        let last_id = stream.len() as u32;
        thread::Builder::new()
            .name(format!("{}-rx", cfg.local_name))
            .spawn(move || read_loop(reader_sock, leftover, shared, ctl_tx, track, last_id, epoch))
            .map_err(LoadgenError::io("spawning the reader"))?
    };

    let mut w = Writer {
        sock: &mut sock,
        ctl: ctl_rx,
        last_write: Instant::now(),
        shared: &shared,
        deadline: cfg.deadline,
    };
    let mut report = SourceReport {
        name: cfg.local_name.clone(),
        ..SourceReport::default()
    };
    let result = w.run(cfg, stream, epoch, stop, acked, &mut report);
    acked.store(true, Ordering::Release);
    shared.stop.store(true, Ordering::Release);
    let _ = sock.shutdown(Shutdown::Both);
    let rx = reader.join().map_err(|_| LoadgenError::ThreadPanicked)?;
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

/// Sends the hello and reads the status line; returns what followed it.
fn handshake(sock: &mut TcpStream, cfg: &SourceConfig) -> Result<BytesMut, LoadgenError> {
    let mut hello = BytesMut::new();
    Hello::new(&cfg.remote_name, &cfg.local_name, std::process::id()).encode(&mut hello)?;
    sock.write_all(&hello)
        .map_err(LoadgenError::io("sending the hello"))?;
    let timeout = Duration::from_secs(5);
    sock.set_read_timeout(Some(timeout))
        .map_err(LoadgenError::io("setting the read timeout"))?;
    let lines = LineDecoder::default();
    let mut buf = BytesMut::with_capacity(4096);
    let mut tmp = [0u8; 4096];
    let status = loop {
        if let Some(status) = decode_status(&lines, &mut buf)? {
            break status;
        }
        match sock.read(&mut tmp) {
            Ok(0) => return Err(LoadgenError::ClosedDuringHandshake),
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(LoadgenError::HandshakeTimeout(timeout));
            }
            Err(e) => return Err(LoadgenError::io("reading the status line")(e)),
        }
    };
    if status != StatusCode::Succeeded {
        return Err(LoadgenError::Refused {
            code: status.code(),
        });
    }
    Ok(buf)
}

/// State the reader publishes to the writer.
#[derive(Debug, Default)]
struct Shared {
    /// The highest update id acknowledged.
    acked: AtomicU64,
    /// Whether a RESYNC REQUEST was answered (queued for the writer).
    resync_answered: AtomicBool,
    /// The reader stopped (socket closed or error).
    reader_done: AtomicBool,
    /// The writer is done: the reader should stop.
    stop: AtomicBool,
}

struct Writer<'a> {
    sock: &'a mut TcpStream,
    ctl: mpsc::Receiver<[u8; 2]>,
    last_write: Instant,
    shared: &'a Shared,
    deadline: Instant,
}

impl Writer<'_> {
    fn write(&mut self, bytes: &[u8]) -> Result<(), LoadgenError> {
        self.sock
            .write_all(bytes)
            .map_err(LoadgenError::io("writing to the target"))?;
        self.last_write = Instant::now();
        Ok(())
    }

    /// Writes queued control answers, and a heartbeat when idle for too long.
    fn service(&mut self) -> Result<(), LoadgenError> {
        while let Ok(msg) = self.ctl.try_recv() {
            self.write(&msg)?;
        }
        if self.last_write.elapsed() >= HEARTBEAT {
            self.write(&[frame::CLASS_CONTROL, frame::CTRL_HEARTBEAT])?;
        }
        Ok(())
    }

    /// Waits up to `d` (bounded by the deadline) for a control answer to write.
    fn idle(&mut self, d: Duration) -> Result<(), LoadgenError> {
        let d = d.min(self.deadline.saturating_duration_since(Instant::now()));
        if let Ok(msg) = self.ctl.recv_timeout(d) {
            self.write(&msg)?;
        }
        self.service()
    }

    fn expired(&self) -> bool {
        Instant::now() >= self.deadline
    }

    fn run(
        &mut self,
        cfg: &SourceConfig,
        stream: &Stream,
        epoch: Instant,
        stop: &AtomicBool,
        acked: &AtomicBool,
        report: &mut SourceReport,
    ) -> Result<(), LoadgenError> {
        // A heartbeat at once, as HAProxy expects from a fresh session.
        self.write(&[frame::CLASS_CONTROL, frame::CTRL_HEARTBEAT])?;
        let wait_until = Instant::now() + cfg.wait_resync;
        while !self.shared.resync_answered.load(Ordering::Acquire)
            && Instant::now() < wait_until
            && !self.expired()
        {
            self.idle(Duration::from_millis(5))?;
        }
        // Flush the answer itself before the stream.
        self.service()?;
        if !stream.is_empty() {
            report.first_byte_ns = Some(since(epoch));
            self.write(&stream.define)?;
            match cfg.rate {
                None => self.full_speed(stream, report)?,
                Some(rate) => self.paced(stream, rate, cfg.record_send_times, epoch, report)?,
            }
            report.last_byte_ns = Some(since(epoch));
            let last = stream.len() as u64;
            while self.shared.acked.load(Ordering::Acquire) < last
                && !self.shared.reader_done.load(Ordering::Acquire)
                && !self.expired()
            {
                self.idle(Duration::from_millis(2))?;
            }
        }
        acked.store(true, Ordering::Release);
        // Passive sources, and active ones once acknowledged, stay up (answering and
        // heartbeating) until the run says stop.
        while !stop.load(Ordering::Acquire)
            && !self.shared.reader_done.load(Ordering::Acquire)
            && !self.expired()
        {
            self.idle(Duration::from_millis(10))?;
        }
        Ok(())
    }

    fn full_speed(
        &mut self,
        stream: &Stream,
        report: &mut SourceReport,
    ) -> Result<(), LoadgenError> {
        for chunk in stream.bytes.chunks(CHUNK) {
            self.service()?;
            if self.expired() {
                return Ok(());
            }
            self.write(chunk)?;
        }
        report.sent = stream.len() as u64;
        Ok(())
    }

    fn paced(
        &mut self,
        stream: &Stream,
        rate: f64,
        record: bool,
        epoch: Instant,
        report: &mut SourceReport,
    ) -> Result<(), LoadgenError> {
        let n = stream.len();
        if record {
            report.send_times = Vec::with_capacity(n);
        }
        let start = Instant::now();
        let mut sent = 0usize;
        while sent < n && !self.expired() {
            let due = ((start.elapsed().as_secs_f64() * rate) as usize + 1).min(n);
            if due > sent {
                let t = since(epoch);
                let bytes = stream.range(sent, due);
                self.sock
                    .write_all(bytes)
                    .map_err(LoadgenError::io("writing to the target"))?;
                self.last_write = Instant::now();
                if record {
                    report.send_times.resize(due, t);
                }
                sent = due;
                report.sent = sent as u64;
            }
            self.service()?;
            thread::sleep(PACE_TICK);
        }
        Ok(())
    }
}

/// What the reader collected.
#[derive(Debug, Default)]
struct ReadOutcome {
    acks: Vec<(u32, u64)>,
    last_ack: Option<u64>,
    received: u64,
    received_span: Option<(u64, u64)>,
    arrivals: Vec<(u64, u64)>,
    resync_requests: u32,
    error: Option<String>,
}

fn read_loop(
    mut sock: TcpStream,
    mut buf: BytesMut,
    shared: Arc<Shared>,
    ctl: mpsc::Sender<[u8; 2]>,
    track: bool,
    last_id: u32,
    epoch: Instant,
) -> ReadOutcome {
    let mut out = ReadOutcome::default();
    let mut decoder = Decoder::new();
    let mut cnt_index: Option<usize> = None;
    let mut scratch = vec![0u8; 256 * 1024];
    loop {
        loop {
            let frame = match frame::split_frame(&mut buf, decoder.max_message_len()) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    out.error = Some(format!("bad frame from the target: {e}"));
                    shared.reader_done.store(true, Ordering::Release);
                    return out;
                }
            };
            if let Err(e) = handle_frame(
                frame,
                &mut decoder,
                &mut cnt_index,
                &mut out,
                &shared,
                &ctl,
                track,
                last_id,
                epoch,
            ) {
                out.error = Some(format!("bad message from the target: {e}"));
                shared.reader_done.store(true, Ordering::Release);
                return out;
            }
        }
        if shared.stop.load(Ordering::Acquire) {
            break;
        }
        match read_some(&mut sock, &mut scratch, &mut buf) {
            Ok(0) => {
                if !shared.stop.load(Ordering::Acquire) {
                    out.error = Some("the target closed the connection".to_owned());
                }
                break;
            }
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                if !shared.stop.load(Ordering::Acquire) {
                    out.error = Some(format!("reading from the target: {e}"));
                }
                break;
            }
        }
    }
    shared.reader_done.store(true, Ordering::Release);
    out
}

/// Reads once through `scratch` and appends what came to `buf`.
fn read_some(
    sock: &mut TcpStream,
    scratch: &mut [u8],
    buf: &mut BytesMut,
) -> std::io::Result<usize> {
    let n = sock.read(scratch)?;
    buf.extend_from_slice(&scratch[..n]);
    Ok(n)
}

#[allow(clippy::too_many_arguments)]
fn handle_frame(
    f: Frame,
    decoder: &mut Decoder,
    cnt_index: &mut Option<usize>,
    out: &mut ReadOutcome,
    shared: &Shared,
    ctl: &mpsc::Sender<[u8; 2]>,
    track: bool,
    last_id: u32,
    epoch: Instant,
) -> Result<(), stktagg_wire::WireError> {
    match (f.class, f.msg_type) {
        (frame::CLASS_CONTROL, frame::CTRL_RESYNC_REQUEST) => {
            // Nothing to teach: an empty lesson, then FINISHED.
            out.resync_requests += 1;
            let _ = ctl.send([frame::CLASS_CONTROL, frame::CTRL_RESYNC_FINISHED]);
            shared.resync_answered.store(true, Ordering::Release);
        }
        (frame::CLASS_CONTROL, frame::CTRL_RESYNC_FINISHED | frame::CTRL_RESYNC_PARTIAL) => {
            let _ = ctl.send([frame::CLASS_CONTROL, frame::CTRL_RESYNC_CONFIRM]);
        }
        (frame::CLASS_STICK_TABLE, frame::STKT_ACK) => {
            if let Message::Ack { update_id, .. } = decoder.decode_frame(f)? {
                let t = since(epoch);
                out.acks.push((update_id, t));
                shared
                    .acked
                    .fetch_max(u64::from(update_id), Ordering::AcqRel);
                if update_id == last_id && out.last_ack.is_none() {
                    out.last_ack = Some(t);
                }
            }
        }
        (
            frame::CLASS_STICK_TABLE,
            frame::STKT_UPDATE
            | frame::STKT_INCUPDATE
            | frame::STKT_UPDATE_TIMED
            | frame::STKT_INCUPDATE_TIMED,
        ) => {
            let t = since(epoch);
            out.received += 1;
            out.received_span = Some(match out.received_span {
                Some((first, _)) => (first, t),
                None => (t, t),
            });
            if track {
                // Only decoded when tracked: the counting path stays cheap so that
                // the generator's reader is not what limits the target's output.
                if let Message::Update(u) = decoder.decode_frame(f)? {
                    if cnt_index.is_none() {
                        *cnt_index = decoder.definition(u.table_id).and_then(|d| {
                            d.data
                                .iter()
                                .position(|s| s.data_type == DataType::HttpReqCnt)
                        });
                    }
                    if let Some(Value::Uint(c)) = cnt_index.and_then(|i| u.values.get(i))
                        && let Some(i) = update_of_cnt(*c)
                    {
                        out.arrivals.push((i, t));
                    }
                }
            }
        }
        (frame::CLASS_STICK_TABLE, frame::STKT_DEFINE | frame::STKT_SWITCH) => {
            decoder.decode_frame(f)?;
            *cnt_index = None;
        }
        _ => {}
    }
    Ok(())
}
