//! One task per configured peer: dialing, incoming sessions, collisions, backoff.
//!
//! Like HAProxy, both sides listen and dial, and there is one session per peer pair.
//! The rule for collisions is HAProxy's: the newest session wins. When a session
//! arrives while another is running, the old one is cancelled and the new one takes
//! over. We only dial while we hold no session, after a randomised backoff, so that
//! two daemons that dial each other at once settle quickly instead of killing each
//! other's sessions in lockstep.
//!
//! An incoming session only gets here after the listener's checks (the name, and
//! the address for a peer under `addr-check`), so a newer session that replaces a
//! running one has passed the same checks; the replacement is logged with both
//! remote addresses. Our own dials bind our `local` peer's IP as their source
//! ([`stktagg_topology::SectionPlan::dial_source`]), so that an aggregator that
//! checks addresses recognises us. A peer whose configuration says `ssl` is
//! dialed over TLS (server name: its `sni`, else its name; our `crt` as client
//! certificate); a failed TLS handshake is logged like a refused hello.

use crate::section::{Incoming, PeerStream, Section, SessionState};
use anyhow::{Context, Result, bail};
use bytes::BytesMut;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use stktagg_session::{NothingToSend, PeerSession};
use stktagg_topology::PeerId;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

struct Running {
    handle: JoinHandle<()>,
    cancel: CancellationToken,
    /// The session's remote address, for the log line when a newer one replaces it.
    remote: SocketAddr,
}

/// Runs the peer until shutdown.
pub async fn run(
    section: Arc<Section>,
    id: PeerId,
    mut incoming: mpsc::Receiver<Incoming>,
    shutdown: CancellationToken,
) {
    // The name and counters stay the slot's across reloads; the address is read
    // afresh before each dial (a reload may readdress the peer).
    let core = section.core();
    let peer = &core.peers[id.0];
    let tunables = section.tunables();
    let mut running: Option<Running> = None;
    let mut backoff = Backoff::new(tunables.reconnect_min, tunables.reconnect_max);
    // Leave the peer a moment to dial us first: HAProxy nodes dial at start-up, and a
    // session they open needs no collision.
    let mut next_dial =
        Instant::now() + jitter(Duration::from_millis(200), Duration::from_millis(800));
    loop {
        let can_dial = running.is_none() && section.core().peers[id.0].addr.is_some();
        let dial_at = next_dial;
        tokio::select! {
            _ = shutdown.cancelled() => {
                if let Some(r) = running.take() {
                    r.cancel.cancel();
                    let _ = r.handle.await;
                }
                peer.stats.set_state(SessionState::Idle);
                return;
            }
            Some(conn) = incoming.recv() => {
                if let Some(old) = running.take() {
                    peer.stats.collisions.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(section = %section.name, peer = %peer.name, old_remote = %old.remote, new_remote = %conn.remote, "new incoming session replaces the running one");
                    old.cancel.cancel();
                    let _ = old.handle.await;
                }
                running = Some(spawn_session(&section, id, conn, &shutdown));
                backoff.reset();
            }
            _ = async {
                match running.as_mut() {
                    Some(r) => { let _ = (&mut r.handle).await; }
                    None => std::future::pending::<()>().await,
                }
            } => {
                running = None;
                peer.stats.set_state(SessionState::Idle);
                next_dial = Instant::now() + backoff.next();
            }
            res = async {
                tokio::time::sleep_until(dial_at).await;
                dial(&section, id).await
            }, if can_dial => {
                match res {
                    Ok(conn) => {
                        running = Some(spawn_session(&section, id, conn, &shutdown));
                        backoff.reset();
                    }
                    Err(e) => {
                        peer.stats.set_state(SessionState::Idle);
                        // A peer that is down is routine: debug only. A peer that answers
                        // but refuses the hello is a configuration mismatch (names):
                        // a warning, rate-limited.
                        if e.downcast_ref::<Refused>().is_some() || e.downcast_ref::<TlsRefused>().is_some() {
                            if let Some(suppressed) = peer.stats.log_limit.allow(section.clock.now_ms()) {
                                tracing::warn!(section = %section.name, peer = %peer.name, suppressed, "{e:#}");
                            }
                        } else {
                            tracing::debug!(section = %section.name, peer = %peer.name, error = %format!("{e:#}"), "dial failed");
                        }
                        *crate::section::lock(&peer.stats.last_error) = Some(format!("{e:#}"));
                        next_dial = Instant::now() + backoff.next();
                    }
                }
            }
        }
    }
}

fn spawn_session(
    section: &Arc<Section>,
    id: PeerId,
    conn: Incoming,
    shutdown: &CancellationToken,
) -> Running {
    let cancel = shutdown.child_token();
    let remote = conn.remote;
    let handle = tokio::spawn(crate::session::run(
        section.clone(),
        id,
        conn,
        cancel.clone(),
    ));
    Running {
        handle,
        cancel,
        remote,
    }
}

/// The peer answered our hello with an error status (or garbage).
#[derive(Debug, thiserror::Error)]
#[error(
    "{0}: check that its local peer name and ours match the configuration, and that it has our address for us"
)]
struct Refused(String);

/// Our TLS handshake with the peer failed: its certificate, or what it thinks of
/// ours.
#[derive(Debug, thiserror::Error)]
#[error(
    "TLS handshake with {addr} failed: {error}: check its certificate against our `ca-file` and its name against `sni` (or the peer name), and ours against its CA"
)]
struct TlsRefused {
    addr: SocketAddr,
    error: String,
}

/// Dials the peer, over TLS if its configuration says `ssl`, and runs the
/// connecting side of the handshake.
async fn dial(section: &Section, id: PeerId) -> Result<Incoming> {
    let core = section.core();
    let peer = &core.peers[id.0];
    let Some((host, port)) = peer.addr.as_ref() else {
        bail!("peer has no address");
    };
    peer.stats.set_state(SessionState::Connecting);
    let t = &section.tunables();
    let tcp = tokio::time::timeout(t.connect_timeout, connect(section, host, *port))
        .await
        .with_context(|| format!("connecting to {host}:{port} timed out"))?
        .with_context(|| format!("connecting to {host}:{port}"))?;
    tune(&tcp);
    let remote = tcp.peer_addr().context("reading the peer's address")?;
    let local = tcp.local_addr().context("reading our address")?;
    let mut stream = match section.tls().connector(&peer.name) {
        None => PeerStream::Plain(tcp),
        Some((connector, name)) => {
            let tls = tokio::time::timeout(t.hello_timeout, connector.connect(name, tcp))
                .await
                .with_context(|| format!("the TLS handshake with {remote} timed out"))?
                .map_err(|e| TlsRefused {
                    addr: remote,
                    error: e.to_string(),
                })?;
            PeerStream::Tls(Box::new(tokio_rustls::TlsStream::from(tls)))
        }
    };
    let mut engine =
        PeerSession::dial(section.session_config(), &peer.name, section.clock.now_ms())
            .context("encoding the hello")?;
    engine.set_resync_policy(stktagg_section::resync_policy(peer.role));
    let mut out = BytesMut::new();
    engine.poll_transmit(section.clock.now_ms(), &mut NothingToSend, &mut out);
    stream.write_all(&out).await.context("sending the hello")?;
    stream.flush().await.context("sending the hello")?;
    tokio::time::timeout(t.hello_timeout, async {
        loop {
            if engine.is_established() {
                return Ok(());
            }
            if let Some(end) = engine.closed_reason() {
                return Err(anyhow::Error::new(Refused(end.to_string())));
            }
            let buf = engine.input_buffer();
            buf.reserve(64);
            if stream.read_buf(buf).await? == 0 {
                bail!("connection closed before the status line");
            }
            engine.input_received(section.clock.now_ms());
        }
    })
    .await
    .context("waiting for the status line timed out")??;
    // Liveness at once, before the session task starts (HAProxy may check it within
    // 50 ms of a collision).
    out.clear();
    engine.poll_transmit(section.clock.now_ms(), &mut NothingToSend, &mut out);
    stream
        .write_all(&out)
        .await
        .context("sending the first heartbeat")?;
    stream
        .flush()
        .await
        .context("sending the first heartbeat")?;
    Ok(Incoming {
        stream,
        engine,
        remote,
        local,
        dialed: true,
    })
}

/// Connects to the first address of `host` that answers, from our `local` peer's
/// IP where the plan gives one for that address.
async fn connect(section: &Section, host: &str, port: u16) -> Result<TcpStream> {
    let mut last = None;
    for addr in tokio::net::lookup_host((host, port)).await? {
        match connect_one(section, addr).await {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("{host} resolves to no address")))
}

async fn connect_one(section: &Section, addr: SocketAddr) -> Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }?;
    if let Some(source) = section.core().plan.dial_source(addr.ip()) {
        socket
            .bind(SocketAddr::new(source, 0))
            .with_context(|| format!("binding the source address {source}"))?;
    }
    Ok(socket.connect(addr).await?)
}

/// Exponential backoff with full jitter between `min` and `max`.
#[derive(Debug)]
struct Backoff {
    min: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max: max.max(min),
            current: min,
        }
    }

    fn reset(&mut self) {
        self.current = self.min;
    }

    fn next(&mut self) -> Duration {
        let d = jitter(self.current / 2, self.current);
        self.current = (self.current * 2).min(self.max);
        d
    }
}

/// A pseudo-random duration in `[lo, hi]`. Randomness only spreads reconnects; it
/// needs no quality, so the standard library's per-process random hasher keys do.
fn jitter(lo: Duration, hi: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(Instant::now().elapsed().as_nanos() as u64);
    let span = hi.saturating_sub(lo).as_millis() as u64;
    let r = if span == 0 {
        0
    } else {
        h.finish() % (span + 1)
    };
    lo + Duration::from_millis(r)
}

/// Most bytes a peer link keeps queued in the kernel unsent. Above it the socket
/// is not writable and changes wait in the table's log, where a key changed again
/// is sent once with its latest value; in a kernel buffer of several megabytes
/// (Linux's autotuned default) each change would wait its turn, stale. Sums then
/// reach a slow peer later but fresher.
const NOTSENT_LOWAT: u32 = 128 * 1024;

/// Socket options of a peer link, ours or the peer's dial: no Nagle delay, and
/// little unsent data queued in the kernel ([`NOTSENT_LOWAT`]). Best effort: a
/// kernel without the option still gets a working link.
pub(crate) fn tune(tcp: &TcpStream) {
    let _ = tcp.set_nodelay(true);
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let _ = socket2::SockRef::from(tcp).set_tcp_notsent_lowat(NOTSENT_LOWAT);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_stays_in_bounds() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        for _ in 0..20 {
            let d = b.next();
            assert!(d <= Duration::from_secs(2), "{d:?}");
        }
        assert_eq!(b.current, Duration::from_secs(2));
        b.reset();
        assert!(b.next() <= Duration::from_millis(100));
    }
}
