//! One `aggregations` section at run time: its sans-IO core
//! ([`stktagg_section::SectionCore`]: plan, store, peers' state, group election) and
//! what its tasks share around it (the clock, the tunables, each peer's channel for
//! incoming sessions and its resync flag, the bound address).
//!
//! The core is replaced whole by a reload ([`SectionCore::successor`]):
//! [`Section::core`] gives the current one, and sessions follow replacements
//! through [`Section::watch_core`]. Everything else here is per peer slot
//! (stable ids across reloads, `stktagg_topology::renumber`) and grows when a
//! reload adds a peer. Sections share nothing: each is an independent
//! aggregation domain.

use crate::clock::Clock;
use crate::load::Tunables;
use crate::tls::{SectionTls, TlsState};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use stktagg_section::{SectionCore, Signals};
use stktagg_store::{Store, StoreOptions};
use stktagg_topology::{PeerId, SectionPlan, Slots};
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;

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

/// Each peer slot's resync flag: what the section's election asks of the
/// sessions. Slots are added by reloads, never removed.
#[derive(Debug, Default)]
pub struct ResyncFlags(RwLock<Vec<Arc<Notify>>>);

impl ResyncFlags {
    /// What a session of `peer` waits on.
    pub fn flag(&self, peer: PeerId) -> Arc<Notify> {
        read(&self.0).get(peer.0).cloned().unwrap_or_default()
    }

    /// Makes sure every slot below `slots` has a flag.
    fn grow(&self, slots: usize) {
        let mut v = write(&self.0);
        while v.len() < slots {
            v.push(Arc::default());
        }
    }
}

impl Signals for ResyncFlags {
    fn request_resync(&self, peer: PeerId) {
        if let Some(n) = read(&self.0).get(peer.0) {
            n.notify_one();
        }
    }
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A peer's channel for incoming sessions (newest session wins).
#[derive(Debug)]
struct Mailbox {
    tx: mpsc::Sender<Incoming>,
    rx: Option<mpsc::Receiver<Incoming>>,
}

impl Mailbox {
    fn new() -> Mailbox {
        let (tx, rx) = mpsc::channel(1);
        Mailbox { tx, rx: Some(rx) }
    }
}

/// A running peer task: how to stop it, and how to know it has stopped.
#[derive(Debug)]
struct PeerTask {
    cancel: CancellationToken,
    done: CancellationToken,
}

/// One `aggregations` section (see the module documentation).
#[derive(Debug)]
pub struct Section {
    /// The section name (a section renamed is another section).
    pub name: String,
    /// The tables, shared by every core of the section.
    pub store: Arc<Store>,
    /// The clock.
    pub clock: Clock,
    /// Each peer's resync flag.
    pub resync: Arc<ResyncFlags>,
    /// Stops every task of the section (a child of the daemon's shutdown).
    pub cancel: CancellationToken,
    /// TLS on the listener and towards the peers we dial, as the configuration
    /// in force loaded it (replaced whole by a reload: [`Section::set_tls`]).
    tls: RwLock<Arc<TlsState>>,
    core: watch::Sender<Arc<SectionCore<Store>>>,
    tunables: RwLock<Tunables>,
    slots: Mutex<Slots>,
    mailboxes: Mutex<Vec<Mailbox>>,
    peer_tasks: Mutex<Vec<Option<PeerTask>>>,
    listener: Mutex<Option<CancellationToken>>,
    listen_addr: Mutex<Option<SocketAddr>>,
}

impl Section {
    /// Builds a section from its freshly resolved plan; `shutdown` stops it.
    pub fn new(
        plan: SectionPlan,
        tunables: &Tunables,
        clock: Clock,
        tls: SectionTls,
        shutdown: &CancellationToken,
    ) -> Section {
        let (plan, slots) = stktagg_topology::renumber(plan, &Slots::default());
        let n = slots.peer_count();
        let store = Arc::new(Store::new(StoreOptions::default()));
        let grace = tunables.startup_grace.as_millis() as u64;
        let core = SectionCore::new(plan, store.clone(), clock.now_ms(), grace);
        let resync = ResyncFlags::default();
        resync.grow(n);
        Section {
            name: core.name.clone(),
            store,
            clock,
            resync: Arc::new(resync),
            cancel: shutdown.child_token(),
            tls: RwLock::new(Arc::new(TlsState::new(tls))),
            core: watch::Sender::new(Arc::new(core)),
            tunables: RwLock::new(tunables.clone()),
            slots: Mutex::new(slots),
            mailboxes: Mutex::new((0..n).map(|_| Mailbox::new()).collect()),
            peer_tasks: Mutex::new((0..n).map(|_| None).collect()),
            listener: Mutex::new(None),
            listen_addr: Mutex::new(None),
        }
    }

    /// The current core: plan, peers, election (replaced whole by a reload).
    pub fn core(&self) -> Arc<SectionCore<Store>> {
        self.core.borrow().clone()
    }

    /// Follows the core's replacements (a session moves to each new core).
    pub fn watch_core(&self) -> watch::Receiver<Arc<SectionCore<Store>>> {
        self.core.subscribe()
    }

    /// The ids handed out so far (for renumbering a reloaded plan).
    pub fn slots(&self) -> Slots {
        lock(&self.slots).clone()
    }

    /// Installs the core that succeeds the current one, with its slots: every
    /// slot gets a resync flag, a mailbox and a task entry first, so that a new
    /// peer's session finds them from the moment the core names it.
    pub fn publish(&self, core: SectionCore<Store>, slots: Slots) {
        let n = slots.peer_count();
        self.resync.grow(n);
        {
            let mut m = lock(&self.mailboxes);
            while m.len() < n {
                m.push(Mailbox::new());
            }
        }
        {
            let mut t = lock(&self.peer_tasks);
            while t.len() < n {
                t.push(None);
            }
        }
        *lock(&self.slots) = slots;
        self.core.send_replace(Arc::new(core));
    }

    /// Gives `peer` a fresh mailbox (a peer task that starts again after one was
    /// stopped: the old receiver went with the old task).
    pub fn renew_mailbox(&self, peer: PeerId) {
        if let Some(m) = lock(&self.mailboxes).get_mut(peer.0) {
            *m = Mailbox::new();
        }
    }

    /// The timeouts and limits in force.
    pub fn tunables(&self) -> Tunables {
        read(&self.tunables).clone()
    }

    /// Replaces the timeouts and limits (new sessions and dials use them).
    pub fn set_tunables(&self, t: &Tunables) {
        *write(&self.tunables) = t.clone();
    }

    /// The engine configuration for this section's sessions (the resync policy is
    /// set per peer once the peer is known: [`stktagg_section::resync_policy`]).
    pub fn session_config(&self) -> stktagg_session::SessionConfig {
        let t = self.tunables();
        stktagg_session::SessionConfig {
            pid: std::process::id(),
            max_message_len: t.max_message_size,
            hello_timeout_ms: t.hello_timeout.as_millis() as u64,
            heartbeat_ms: t.heartbeat_interval.as_millis() as u64,
            idle_timeout_ms: t.idle_timeout.as_millis() as u64,
            ..stktagg_session::SessionConfig::new(self.core().local_name.clone())
        }
    }

    /// Hands a freshly accepted session to its peer's task (newest session wins).
    pub async fn hand_over(&self, peer: usize, incoming: Incoming) {
        let tx = lock(&self.mailboxes).get(peer).map(|m| m.tx.clone());
        // The channel holds one pending session; a second one waits, which is fine:
        // the task takes sessions as fast as they come. A peer whose task is gone
        // (removed by a reload) drops the session here.
        if let Some(tx) = tx {
            let _ = tx.send(incoming).await;
        }
    }

    /// The receiving end of a peer's mailbox, once (for its task).
    pub fn take_mailbox(&self, peer: usize) -> Option<mpsc::Receiver<Incoming>> {
        lock(&self.mailboxes)
            .get_mut(peer)
            .and_then(|m| m.rx.take())
    }

    /// Records `peer`'s task; returns the token that stops it and the one it
    /// cancels when it has stopped.
    pub fn register_peer_task(&self, peer: PeerId) -> (CancellationToken, CancellationToken) {
        let cancel = self.cancel.child_token();
        let done = CancellationToken::new();
        if let Some(slot) = lock(&self.peer_tasks).get_mut(peer.0) {
            *slot = Some(PeerTask {
                cancel: cancel.clone(),
                done: done.clone(),
            });
        }
        (cancel, done)
    }

    /// Stops `peer`'s task and waits until it has stopped (its session drained
    /// and ended), at most `grace`.
    pub async fn stop_peer(&self, peer: PeerId, grace: std::time::Duration) {
        let task = lock(&self.peer_tasks)
            .get_mut(peer.0)
            .and_then(Option::take);
        if let Some(t) = task {
            t.cancel.cancel();
            if tokio::time::timeout(grace, t.done.cancelled())
                .await
                .is_err()
            {
                tracing::warn!(section = %self.name, peer = peer.0, "a peer task did not stop in time");
            }
        }
    }

    /// Records the listener task's token, and stops the one it replaces.
    pub fn set_listener(&self, token: CancellationToken) {
        if let Some(old) = lock(&self.listener).replace(token) {
            old.cancel();
        }
    }

    /// Records the address actually bound.
    pub fn set_listen_addr(&self, addr: SocketAddr) {
        *lock(&self.listen_addr) = Some(addr);
    }

    /// The address the section listens on (after `bind`).
    pub fn listen_addr(&self) -> SocketAddr {
        lock(&self.listen_addr).unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// The TLS state new handshakes use.
    pub fn tls(&self) -> Arc<TlsState> {
        self.tls
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Replaces the TLS state with `loaded` (a reload, which has read every
    /// certificate, key and CA file again and checked them): new handshakes use
    /// it; established sessions keep the keys they negotiated.
    pub fn set_tls(&self, loaded: SectionTls) {
        let state = Arc::new(TlsState::new(loaded));
        let (before, after) = (self.tls().is_used(), state.is_used());
        let configurations = state.configurations();
        *self
            .tls
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = state;
        if before || after {
            tracing::info!(section = %self.name, configurations, "TLS certificates and CAs re-read");
        }
    }

    /// Whether we hold complete data ourselves (see [`SectionCore::up_to_date`]).
    pub fn up_to_date(&self) -> bool {
        self.core().up_to_date(self.clock.now_ms())
    }
}
