//! One `aggregations` section at run time: its sans-IO core
//! ([`stktagg_section::SectionCore`]: plan, store, peers' state, group election) and
//! what its tasks share around it (the clock, the tunables, each peer's channel for
//! incoming sessions and its resync flag, the bound address).
//!
//! A `Section` dereferences to its core, so `section.peers`, `section.store` and
//! `section.plan` read the core. Sections share nothing: each is an independent
//! aggregation domain.

use crate::clock::Clock;
use crate::load::Tunables;
use crate::tls::{SectionTls, TlsState};
use anyhow::{Context, Result, bail};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use stktagg_section::{SectionCore, Signals};
use stktagg_store::{Store, StoreOptions};
use stktagg_topology::{PeerId, SectionPlan};
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc};

pub use stktagg_section::{PeerInfo, PeerStats, SessionState, lock};

/// A peer connection: plain TCP, or TLS over TCP (either side).
#[derive(Debug)]
pub enum PeerStream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS, as the client or the server.
    Tls(Box<tokio_rustls::TlsStream<TcpStream>>),
}

impl tokio::io::AsyncRead for PeerStream {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            PeerStream::Plain(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            PeerStream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl tokio::io::AsyncWrite for PeerStream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            PeerStream::Plain(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            PeerStream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            PeerStream::Plain(s) => std::pin::Pin::new(s).poll_flush(cx),
            PeerStream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            PeerStream::Plain(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            PeerStream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A connection whose handshake is done, on its way to its peer task.
#[derive(Debug)]
pub struct Incoming {
    /// The connection.
    pub stream: PeerStream,
    /// The protocol engine, established (it holds any bytes read after the hello).
    pub engine: stktagg_session::PeerSession,
    /// The peer's address.
    pub remote: SocketAddr,
    /// Our address on this connection.
    pub local: SocketAddr,
    /// We dialed this session (else the peer did).
    pub dialed: bool,
}

/// Each peer's resync flag: what the section's election asks of the sessions.
#[derive(Debug, Default)]
pub struct ResyncFlags(Vec<Arc<Notify>>);

impl ResyncFlags {
    /// What a session of `peer` waits on.
    pub fn flag(&self, peer: PeerId) -> Arc<Notify> {
        self.0.get(peer.0).cloned().unwrap_or_default()
    }
}

impl Signals for ResyncFlags {
    fn request_resync(&self, peer: PeerId) {
        if let Some(n) = self.0.get(peer.0) {
            n.notify_one();
        }
    }
}

/// A peer's channel for incoming sessions (newest session wins).
#[derive(Debug)]
struct Mailbox {
    tx: mpsc::Sender<Incoming>,
    rx: Mutex<Option<mpsc::Receiver<Incoming>>>,
}

/// One `aggregations` section (see the module documentation).
#[derive(Debug)]
pub struct Section {
    /// The sans-IO core.
    pub core: Arc<SectionCore<Store>>,
    /// Tunables (timeouts, limits).
    pub tunables: Tunables,
    /// The clock.
    pub clock: Clock,
    /// Each peer's resync flag.
    pub resync: Arc<ResyncFlags>,
    /// TLS on the listener and towards the peers we dial, swappable by
    /// [`Section::reload_tls`].
    pub tls: TlsState,
    mailboxes: Vec<Mailbox>,
    listen_addr: OnceLock<SocketAddr>,
}

impl std::ops::Deref for Section {
    type Target = SectionCore<Store>;

    fn deref(&self) -> &SectionCore<Store> {
        &self.core
    }
}

impl Section {
    /// Builds a section from its plan and its TLS as loaded.
    pub fn new(plan: SectionPlan, tunables: &Tunables, clock: Clock, tls: SectionTls) -> Section {
        let n = plan.peers.len();
        let store = Arc::new(Store::new(StoreOptions::default()));
        let grace = tunables.startup_grace.as_millis() as u64;
        let core = SectionCore::new(plan, store, clock.now_ms(), grace);
        let mailboxes = (0..n)
            .map(|_| {
                let (tx, rx) = mpsc::channel(1);
                Mailbox {
                    tx,
                    rx: Mutex::new(Some(rx)),
                }
            })
            .collect();
        Section {
            core: Arc::new(core),
            tunables: tunables.clone(),
            clock,
            resync: Arc::new(ResyncFlags((0..n).map(|_| Arc::default()).collect())),
            tls: TlsState::new(tls),
            mailboxes,
            listen_addr: OnceLock::new(),
        }
    }

    /// The engine configuration for this section's sessions (the resync policy is
    /// set per peer once the peer is known: [`stktagg_section::resync_policy`]).
    pub fn session_config(&self) -> stktagg_session::SessionConfig {
        let t = &self.tunables;
        stktagg_session::SessionConfig {
            pid: std::process::id(),
            max_message_len: t.max_message_size,
            hello_timeout_ms: t.hello_timeout.as_millis() as u64,
            heartbeat_ms: t.heartbeat_interval.as_millis() as u64,
            idle_timeout_ms: t.idle_timeout.as_millis() as u64,
            ..stktagg_session::SessionConfig::new(self.local_name.clone())
        }
    }

    /// Hands a freshly accepted session to its peer's task (newest session wins).
    pub async fn hand_over(&self, peer: usize, incoming: Incoming) {
        // The channel holds one pending session; a second one waits, which is fine:
        // the task takes sessions as fast as they come.
        if let Some(m) = self.mailboxes.get(peer) {
            let _ = m.tx.send(incoming).await;
        }
    }

    /// The receiving end of a peer's mailbox, once (for its task).
    pub fn take_mailbox(&self, peer: usize) -> Option<mpsc::Receiver<Incoming>> {
        self.mailboxes.get(peer).and_then(|m| lock(&m.rx).take())
    }

    /// The configured listen address, resolved.
    pub async fn configured_listen_addr(&self) -> Result<SocketAddr> {
        let a = &self.plan.listener;
        let mut addrs = tokio::net::lookup_host((a.host.as_str(), a.port))
            .await
            .with_context(|| format!("resolving {}:{}", a.host, a.port))?;
        match addrs.next() {
            Some(addr) => Ok(addr),
            None => bail!("{}:{} resolves to no address", a.host, a.port),
        }
    }

    /// Records the address actually bound.
    pub fn set_listen_addr(&self, addr: SocketAddr) {
        let _ = self.listen_addr.set(addr);
    }

    /// The address the section listens on (after `bind`).
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen_addr
            .get()
            .copied()
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Re-reads the section's certificate, key and CA files and swaps the TLS
    /// configurations built from them, each one only if it rebuilt without error.
    /// Established sessions are not touched; new handshakes use the new files.
    /// Logs the outcome and returns it (nothing to do without TLS).
    pub fn reload_tls(&self) -> crate::tls::Reloaded {
        if !self.tls.is_used() {
            return crate::tls::Reloaded::default();
        }
        let r = self.tls.reload();
        for e in &r.errors {
            tracing::error!(section = %self.name, "TLS files not reloaded, keeping the previous ones: {e}");
        }
        if r.swapped > 0 {
            tracing::info!(section = %self.name, configurations = r.swapped, "TLS certificates and CAs re-read");
        }
        r
    }

    /// Whether we hold complete data ourselves (see [`SectionCore::up_to_date`]).
    pub fn up_to_date(&self) -> bool {
        self.core.up_to_date(self.clock.now_ms())
    }
}
