//! The acceptor side: one TCP listener per section, the TLS handshake when the
//! section's `local` peer says `ssl`, and the hello checks.
//!
//! A connection is handed to its peer's task only once the hello is valid, the
//! connection comes from an address the claimed peer may use (`addr-check`:
//! [`stktagg_topology::PeerPlan::accepts_from`]), its TLS client certificate, if
//! it sent one, names the claimed peer, and `200` has been written. A failed TLS
//! handshake (plain text on a TLS port, an unknown CA, an expired or missing
//! certificate) ends the connection before any hello is read. Until
//! then it holds nothing but a permit of the handshake semaphore, so a flood of
//! half-open connections cannot starve anything else. A session refused for its
//! address or its certificate gets `504`, the answer to an unknown name
//! (docs/decisions.md), so a prober cannot tell a configured name from an unknown
//! one.

use crate::section::{Incoming, PeerStream, Section};
use anyhow::{Context, Result};
use bytes::BytesMut;
use rustls::pki_types::CertificateDer;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use stktagg_session::{Event, NothingToSend, PeerSession};
use stktagg_wire::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsStream;
use tokio_util::sync::CancellationToken;

/// Handshakes in progress at once, per section.
const MAX_PENDING_HANDSHAKES: usize = 256;

/// Binds the section's listener (its `local` peer's address).
pub async fn bind(section: &Section) -> Result<TcpListener> {
    let (listener, bound) = bind_to(&section.core().plan.listener).await?;
    section.set_listen_addr(bound);
    Ok(listener)
}

/// Binds a listener on `addr` (resolved), and says where it is bound.
pub async fn bind_to(addr: &stktagg_config::PeerAddr) -> Result<(TcpListener, SocketAddr)> {
    let mut addrs = tokio::net::lookup_host((addr.host.as_str(), addr.port))
        .await
        .with_context(|| format!("resolving {addr}"))?;
    let Some(addr) = addrs.next() else {
        anyhow::bail!("{addr} resolves to no address");
    };
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let bound = listener.local_addr().context("reading the bound address")?;
    Ok((listener, bound))
}

/// Accepts connections until shutdown.
pub async fn run(section: Arc<Section>, listener: TcpListener, shutdown: CancellationToken) {
    let permits = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        let (stream, remote) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(section = %section.name, error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!(section = %section.name, %remote, "too many handshakes in progress, closing");
            continue;
        };
        let section = section.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = handshake(&section, stream, remote).await {
                tracing::debug!(section = %section.name, %remote, error = %e, "incoming handshake failed");
            }
        });
    }
}

/// Runs the TLS handshake when the listener speaks TLS, reads and checks the
/// hello, answers, and hands a valid session to its peer task. The TLS handshake
/// and the hello share one deadline, `timeout hello`.
async fn handshake(section: &Section, tcp: TcpStream, remote: SocketAddr) -> Result<()> {
    crate::peer::tune(&tcp);
    let local = tcp.local_addr()?;
    let deadline = tokio::time::Instant::now() + section.tunables().hello_timeout;
    let Some(acceptor) = section.tls().acceptor() else {
        return hello(
            section,
            PeerStream::Plain(tcp),
            None,
            remote,
            local,
            deadline,
        )
        .await;
    };
    let failure = match tokio::time::timeout_at(deadline, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => {
            // Only a certificate the verifier accepted is here: the handshake
            // fails on any other.
            let certs = tls.get_ref().1.peer_certificates().map(<[_]>::to_vec);
            let stream = PeerStream::Tls(Box::new(TlsStream::from(tls)));
            return hello(section, stream, certs, remote, local, deadline).await;
        }
        Ok(Err(e)) => e.to_string(),
        Err(_) => "timed out".to_owned(),
    };
    tls_failure(section, remote, &failure);
    Ok(())
}

/// The hello part of [`handshake`], on a plain or TLS stream; `certs` is the
/// client's certificate chain, if it sent one over TLS.
async fn hello(
    section: &Section,
    mut stream: PeerStream,
    certs: Option<Vec<CertificateDer<'static>>>,
    remote: SocketAddr,
    local: SocketAddr,
    deadline: tokio::time::Instant,
) -> Result<()> {
    let mut engine = PeerSession::accept(section.session_config(), section.clock.now_ms());
    let mut out = BytesMut::new();
    let verdict = tokio::time::timeout_at(deadline, async {
        loop {
            while let Some(event) = engine.poll_event() {
                match event {
                    Event::HelloReceived(hello) => return Ok(Ok(hello)),
                    Event::Closed(end) => return Ok::<_, anyhow::Error>(Err(end)),
                    _ => {}
                }
            }
            let buf = engine.input_buffer();
            buf.reserve(256);
            if stream.read_buf(buf).await? == 0 {
                anyhow::bail!("connection closed during the hello");
            }
            engine.input_received(section.clock.now_ms());
        }
    })
    .await
    .context("hello timed out")??;
    let hello = match verdict {
        Ok(hello) => hello,
        Err(end) => {
            // A malformed hello: the engine answered it (or, for a line too long,
            // closes without a word, as HAProxy does).
            if let stktagg_session::End::Rejected(code) = end {
                count_rejection(section, code, remote, None);
            }
            engine.poll_transmit(section.clock.now_ms(), &mut NothingToSend, &mut out);
            answer(&mut stream, &out).await;
            return Ok(());
        }
    };
    // The plan as it is when the hello arrives (a reload may change it).
    let core = section.core();
    let Some(peer) = core.peer_by_name(&hello.local_name) else {
        count_rejection(
            section,
            StatusCode::UnknownPeer,
            remote,
            Some(&hello.local_name),
        );
        engine.refuse(StatusCode::UnknownPeer);
        engine.poll_transmit(section.clock.now_ms(), &mut NothingToSend, &mut out);
        answer(&mut stream, &out).await;
        return Ok(());
    };
    // Checked before the hand-over: an impostor never reaches the peer's task, so
    // it can neither displace the real session nor have anything counted. Both
    // checks apply where both are on (docs/decisions.md): the address first, then
    // the name in a client certificate.
    let accepted = core
        .plan
        .peer(stktagg_topology::PeerId(peer))
        .is_some_and(|p| p.accepts_from(remote.ip()));
    let refused = if !accepted {
        refuse_address(section, &core, peer, remote);
        true
    } else if let Some(chain) = &certs
        && !crate::tls::identity_matches(Some(chain), &hello.local_name)
    {
        refuse_identity(section, &core, peer, remote, chain);
        true
    } else {
        false
    };
    if refused {
        engine.refuse(StatusCode::UnknownPeer);
        engine.poll_transmit(section.clock.now_ms(), &mut NothingToSend, &mut out);
        answer(&mut stream, &out).await;
        return Ok(());
    }
    engine.set_resync_policy(stktagg_section::resync_policy(core.peers[peer].role));
    engine.accept_hello();
    // The status with a heartbeat: HAProxy may check this session's liveness within
    // 50 ms of a collision, before the peer task has taken it over.
    engine.poll_transmit(section.clock.now_ms(), &mut NothingToSend, &mut out);
    stream.write_all(&out).await?;
    stream.flush().await?;
    let incoming = Incoming {
        stream,
        engine,
        remote,
        local,
        dialed: false,
    };
    section.hand_over(peer, incoming).await;
    Ok(())
}

/// Writes a refusal and closes (over TLS, with a close_notify), ignoring errors:
/// the connection is being dropped anyway.
async fn answer(stream: &mut PeerStream, out: &[u8]) {
    let _ = stream.write_all(out).await;
    let _ = stream.flush().await;
    let _ = stream.shutdown().await;
}

/// Counts and logs a failed TLS handshake on our listener (rate-limited, with the
/// refused hellos: connections come from anyone).
fn tls_failure(section: &Section, remote: SocketAddr, error: &str) {
    crate::metrics::tls_handshake_failed(&section.name);
    if let Some(suppressed) = section
        .core()
        .reject_log_limit
        .allow(section.clock.now_ms())
    {
        tracing::warn!(section = %section.name, %remote, error, suppressed, "TLS handshake failed on the peers listener");
    }
}

/// Counts and logs a session that claims `peer` with a client certificate that
/// names someone else (rate-limited, with the other refused hellos).
fn refuse_identity(
    section: &Section,
    core: &stktagg_section::SectionCore<stktagg_store::Store>,
    peer: usize,
    remote: SocketAddr,
    chain: &[CertificateDer<'static>],
) {
    let p = &core.peers[peer];
    p.stats.cert_refused.fetch_add(1, Ordering::Relaxed);
    crate::metrics::hello_rejected(&section.name, StatusCode::UnknownPeer);
    crate::metrics::wrong_identity(&section.name, &p.name);
    let names = chain
        .first()
        .map(crate::tls::certificate_names)
        .unwrap_or_default()
        .join(",");
    if let Some(suppressed) = core.reject_log_limit.allow(section.clock.now_ms()) {
        tracing::warn!(
            section = %section.name,
            claimed = %p.name,
            %remote,
            certificate_names = %names,
            suppressed,
            "refusing a session whose client certificate does not name the peer it claims"
        );
    }
}

/// Counts and logs a session that claims `peer` from an address it may not use
/// (rate-limited, with the other refused hellos: they come from anyone).
fn refuse_address(
    section: &Section,
    core: &stktagg_section::SectionCore<stktagg_store::Store>,
    peer: usize,
    remote: SocketAddr,
) {
    let p = &core.peers[peer];
    p.stats.addr_refused.fetch_add(1, Ordering::Relaxed);
    crate::metrics::hello_rejected(&section.name, StatusCode::UnknownPeer);
    crate::metrics::wrong_address(&section.name, &p.name);
    let expected = core
        .plan
        .peer(stktagg_topology::PeerId(peer))
        .and_then(|p| p.checked_ip)
        .map(|ip| ip.to_string())
        .unwrap_or_default();
    if let Some(suppressed) = core.reject_log_limit.allow(section.clock.now_ms()) {
        tracing::warn!(
            section = %section.name,
            claimed = %p.name,
            %remote,
            %expected,
            suppressed,
            "refusing a session that claims a peer from another address than its own (addr-check)"
        );
    }
}

/// Counts and logs a refused hello (rate-limited: hellos come from anyone).
fn count_rejection(section: &Section, code: StatusCode, remote: SocketAddr, claimed: Option<&str>) {
    crate::metrics::hello_rejected(&section.name, code);
    if let Some(suppressed) = section
        .core()
        .reject_log_limit
        .allow(section.clock.now_ms())
    {
        tracing::warn!(section = %section.name, code = code.code(), %remote, claimed, suppressed, "rejecting a hello");
    }
}
