//! The acceptor side: one TCP listener per section, and the hello checks.
//!
//! A connection is handed to its peer's task only once the hello is valid and `200`
//! has been written. Until then it holds nothing but a permit of the handshake
//! semaphore, so a flood of half-open connections cannot starve anything else.

use crate::section::{Incoming, Section};
use anyhow::{Context, Result};
use bytes::BytesMut;
use std::sync::Arc;
use stktagg_wire::hello::{HelloOutcome, HelloParser, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// A HEARTBEAT message (`00 04`).
pub(crate) const HEARTBEAT: [u8; 2] = [0x00, 0x04];

/// Handshakes in progress at once, per section.
const MAX_PENDING_HANDSHAKES: usize = 256;

/// Binds the section's listener (its `local` peer's address).
pub async fn bind(section: &Section) -> Result<TcpListener> {
    let addr = section.configured_listen_addr().await?;
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let bound = listener.local_addr().context("reading the bound address")?;
    section.set_listen_addr(bound);
    Ok(listener)
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
            if let Err(e) = handshake(&section, stream).await {
                tracing::debug!(section = %section.name, %remote, error = %e, "incoming handshake failed");
            }
        });
    }
}

/// Reads and checks the hello, answers, and hands a valid session to its peer task.
async fn handshake(section: &Section, mut stream: TcpStream) -> Result<()> {
    let _ = stream.set_nodelay(true);
    let mut parser = HelloParser::new(section.local_name.clone());
    let mut buf = BytesMut::with_capacity(256);
    let timeout = section.tunables.hello_timeout;
    let known = |name: &str| section.peer_by_name(name).is_some();
    let outcome = tokio::time::timeout(timeout, async {
        loop {
            if let Some(outcome) = parser.feed(&mut buf, &known)? {
                return Ok::<_, anyhow::Error>(outcome);
            }
            if buf.len() > section.tunables.max_message_size {
                anyhow::bail!("hello line too long");
            }
            let n = stream.read_buf(&mut buf).await?;
            if n == 0 {
                anyhow::bail!("connection closed during the hello");
            }
        }
    })
    .await
    .context("hello timed out")??;
    let hello = match outcome {
        HelloOutcome::Complete(hello) => hello,
        HelloOutcome::Reject(code) => {
            crate::metrics::hello_rejected(&section.name, code);
            if let Some(suppressed) = section.reject_log_limit.allow() {
                tracing::warn!(section = %section.name, code = code.code(), suppressed, "rejecting a hello");
            }
            let mut out = BytesMut::new();
            code.encode(&mut out);
            let _ = stream.write_all(&out).await;
            return Ok(());
        }
    };
    let Some(peer) = section.peer_by_name(&hello.local_name) else {
        // The parser only completes for known peers.
        anyhow::bail!("unknown peer `{}`", hello.local_name);
    };
    let mut out = BytesMut::new();
    StatusCode::Succeeded.encode(&mut out);
    // A heartbeat with the status: HAProxy may check this session's liveness within
    // 50 ms of a collision, before the peer task has taken it over.
    out.extend_from_slice(&HEARTBEAT);
    stream.write_all(&out).await?;
    let incoming = Incoming {
        stream,
        leftover: buf,
        downgraded: hello.downgraded(),
        dialed: false,
    };
    section.peers[peer].hand_over(incoming).await;
    Ok(())
}
