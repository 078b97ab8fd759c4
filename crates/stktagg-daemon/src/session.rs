//! One established peer session: a thin task that moves bytes between a socket and
//! the protocol engine ([`stktagg_session::PeerSession`]), and the engine's events to
//! the section's session core ([`stktagg_section::SessionCore`]), which gives them
//! their meaning and feeds the engine from the store.
//!
//! It never blocks the rest of the daemon: its outbound state is the store's
//! coalesced dirty set for this peer (latest value per key) plus a write buffer
//! that the engine only refills below its high-water mark, so a slow or stuck peer
//! costs at most one entry per key. Reading and writing happen in one `select!`
//! loop, never one waiting for the other and neither with priority, so two peers
//! that both write a lot cannot deadlock on full socket buffers, and a session busy
//! writing still reads (the idle rule looks at bytes received).

use crate::section::{Incoming, PeerStream, Section};
use bytes::BytesMut;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use stktagg_section::{Ending, SectionCore, SessionCore};
use stktagg_session::{End, PeerSession};
use stktagg_store::Store;
use stktagg_topology::PeerId;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

/// Free space made in the read buffer before each read.
const READ_CHUNK: usize = 16 * 1024;
/// How long the last words of a session may take to leave.
const FLUSH_TIMEOUT: Duration = Duration::from_millis(500);

/// A notifier the store wakes when this peer has something to send.
#[derive(Debug, Default)]
struct Wake(Notify);

impl stktagg_store::Waker for Wake {
    fn wake(&self) {
        self.0.notify_one();
    }
}

/// Runs an established session to its end.
pub async fn run(section: Arc<Section>, id: PeerId, conn: Incoming, cancel: CancellationToken) {
    let wake = Arc::new(Wake::default());
    let remote = conn.remote;
    // Watched from before the session core starts, so that no reload in between
    // goes unseen.
    let mut cores = section.watch_core();
    let start_core = cores.borrow_and_update().clone();
    let stats = start_core.peers[id.0].stats.clone();
    tracing::info!(section = %section.name, peer = %start_core.peers[id.0].name, %remote, dialed = conn.dialed, "session established");
    let mut core = SessionCore::start(
        start_core,
        section.resync.clone(),
        id,
        remote.to_string(),
        wake.clone(),
        section.clock.now_ms(),
    );
    let addrs = &stats.addrs;
    *crate::section::lock(addrs) = Some((conn.local.to_string(), remote.to_string()));
    let Incoming { stream, engine, .. } = conn;
    let tls = &stats.tls;
    tls.store(matches!(stream, PeerStream::Tls(_)), Ordering::Relaxed);
    // Plain TCP splits without a lock; TLS needs tokio's split, and a flush after
    // writes: rustls may keep records that the socket did not take yet.
    let ending = match stream {
        PeerStream::Plain(s) => {
            let (rd, wr) = s.into_split();
            drive(
                &section, &mut core, engine, rd, wr, &wake, &mut cores, cancel, false,
            )
            .await
        }
        PeerStream::Tls(s) => {
            let (rd, wr) = tokio::io::split(*s);
            drive(
                &section, &mut core, engine, rd, wr, &wake, &mut cores, cancel, true,
            )
            .await
        }
    };
    tls.store(false, Ordering::Relaxed);
    *crate::section::lock(addrs) = None;
    core.set_now(section.clock.now_ms());
    core.finish(&ending);
}

/// Moves bytes between the socket and the engine until the session ends, and
/// moves the session core to each core a reload installs. `flushes`: the writer
/// buffers (TLS), so it is flushed once the write buffer is empty, or the last
/// records written could wait for the next write.
#[allow(clippy::too_many_arguments)]
async fn drive<R, W>(
    section: &Section,
    core: &mut SessionCore<Store>,
    mut engine: PeerSession,
    mut rd: R,
    mut wr: W,
    wake: &Wake,
    cores: &mut watch::Receiver<Arc<SectionCore<Store>>>,
    cancel: CancellationToken,
    flushes: bool,
) -> Ending
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let resync_flag = section.resync.flag(core.peer().id);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut out = BytesMut::with_capacity(16 * 1024);
    let mut unflushed = false;
    let now = || section.clock.now_ms();
    // Anything already buffered after the hello, and the engine's first requests.
    if let Some(end) = core.handle_events(&mut engine, now()) {
        return last_words(&mut engine, core, &mut wr, now(), end).await;
    }
    loop {
        core.set_now(now());
        engine.poll_transmit(now(), core, &mut out);
        let writing = !out.is_empty();
        let inbuf = engine.input_buffer();
        // Read in large chunks: a full buffer would otherwise grow by a few bytes
        // per read.
        inbuf.reserve(READ_CHUNK);
        // No branch has priority (tokio polls them in a random order): a session
        // whose peer reads fast still reads what the peer sends while it writes its
        // backlog, and a source that streams at full speed still gets its acks and
        // sums.
        tokio::select! {
            _ = cancel.cancelled() => {
                // Drain: what is pending for this peer (up to the high-water mark)
                // and the write buffer, best effort and bounded in time.
                engine.poll_transmit(now(), core, &mut out);
                let _ = tokio::time::timeout(FLUSH_TIMEOUT, async {
                    wr.write_all(&out).await?;
                    wr.flush().await
                })
                .await;
                return Ending::Cancelled;
            }
            r = write_or_flush(&mut wr, &mut out), if writing || unflushed => {
                if let Err(e) = r {
                    return Ending::Io(e);
                }
                unflushed = writing && flushes;
                // One buffer at a time, then the other sessions: tokio's budget
                // would let this one write a hundred buffers in a row, and a
                // hundred busy sessions on one core then leave each other
                // unpolled for seconds (silent to their peers, and deaf to them).
                tokio::task::yield_now().await;
            }
            r = rd.read_buf(inbuf) => {
                if let Some(end) = received(r, &mut engine, core, now()) {
                    return end;
                }
            }
            _ = wake.0.notified(), if !writing => {}
            _ = resync_flag.notified() => engine.request_resync(),
            // The sender lives as long as the section, which outlives this task.
            Ok(()) = cores.changed() => {
                let next = cores.borrow_and_update().clone();
                core.switch_section(next);
            }
            _ = tick.tick() => {
                // Bytes already waiting count as received before the idle rule
                // looks: on a busy machine the tick may win the race against a
                // read that was ready all along. One attempt, never a wait.
                let inbuf = engine.input_buffer();
                if let Ok(r) = tokio::time::timeout(Duration::ZERO, rd.read_buf(inbuf)).await
                    && let Some(end) = received(r, &mut engine, core, now())
                {
                    return end;
                }
                engine.handle_timeout(now());
            }
        }
        if let Some(end) = core.handle_events(&mut engine, now()) {
            return last_words(&mut engine, core, &mut wr, now(), end).await;
        }
    }
}

/// What a read into the engine's input buffer means: the session's end (the peer
/// closed, a socket error), or bytes received, which count as liveness.
fn received(
    r: std::io::Result<usize>,
    engine: &mut PeerSession,
    core: &SessionCore<Store>,
    now: u64,
) -> Option<Ending> {
    match r {
        Ok(0) => Some(Ending::Closed),
        Ok(_) => {
            engine.input_received(now);
            core.peer().stats.last_rx_ms.store(now, Ordering::Relaxed);
            None
        }
        Err(e) => Some(Ending::Io(e)),
    }
}

/// Writes some of `out`, or flushes the writer when `out` is empty.
async fn write_or_flush(
    wr: &mut (impl AsyncWrite + Unpin),
    out: &mut BytesMut,
) -> std::io::Result<()> {
    if out.is_empty() {
        wr.flush().await
    } else {
        wr.write_buf(out).await.map(|_| ())
    }
}

/// Writes the engine's last words (HAProxy's error reply, if any) and ends.
async fn last_words(
    engine: &mut PeerSession,
    core: &mut SessionCore<Store>,
    wr: &mut (impl AsyncWrite + Unpin),
    now: u64,
    end: End,
) -> Ending {
    let mut out = BytesMut::new();
    engine.poll_transmit(now, core, &mut out);
    let _ = tokio::time::timeout(FLUSH_TIMEOUT, async {
        wr.write_all(&out).await?;
        wr.flush().await
    })
    .await;
    Ending::Protocol(end)
}
