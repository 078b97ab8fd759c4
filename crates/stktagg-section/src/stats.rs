//! A peer's state and counters, as the runtime API and the metrics read them.

use crate::ratelimit::LogLimiter;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};

/// A peer session's state, as shown by `show peers` and the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum SessionState {
    /// No session and no attempt in progress.
    Idle = 0,
    /// Dialing or in the handshake.
    Connecting = 1,
    /// Established.
    Established = 2,
}

impl SessionState {
    /// The word `show peers` prints.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionState::Idle => "IDLE",
            SessionState::Connecting => "CONN",
            SessionState::Established => "ESTA",
        }
    }
}

/// Counters and state of one peer. Written by its session, read by anyone.
#[derive(Debug, Default)]
pub struct PeerStats {
    state: AtomicU8,
    /// Updates received.
    pub updates_in: AtomicU64,
    /// Updates sent.
    pub updates_out: AtomicU64,
    /// Full resyncs received from this peer (its FINISHED after our request).
    pub resyncs_in: AtomicU64,
    /// Full resyncs we taught this peer.
    pub resyncs_out: AtomicU64,
    /// Sessions established, after the first.
    pub reconnects: AtomicU64,
    /// Sessions established in all.
    pub sessions: AtomicU64,
    /// Sessions replaced by a newer one (collisions).
    pub collisions: AtomicU64,
    /// Sessions ended by bad input from the peer.
    pub protocol_errors: AtomicU64,
    /// Sessions that claimed this peer from an address it may not use
    /// (`addr-check`), refused.
    pub addr_refused: AtomicU64,
    /// Sessions that claimed this peer with a TLS client certificate that does not
    /// name it, refused.
    pub cert_refused: AtomicU64,
    /// The established session runs over TLS.
    pub tls: AtomicBool,
    /// Clock reading of the last established hello, 0 if never.
    pub last_hello_ms: AtomicU64,
    /// Clock reading of the last message received, 0 if never.
    pub last_rx_ms: AtomicU64,
    /// Clock reading of the last heartbeat received, 0 if never.
    pub last_heartbeat_ms: AtomicU64,
    /// The peer's last full resync to us ended with FINISHED (for `up` peers: it can
    /// be the group's active member; for sources: we hold its data).
    pub resynced: AtomicBool,
    /// The peer has answered a resync request of ours (FINISHED or PARTIAL) since
    /// we started: what we hold of a source is then all we can get of it.
    pub answered_resync: AtomicBool,
    /// The established session's addresses (ours, the peer's), as text.
    pub addrs: Mutex<Option<(String, String)>>,
    /// Why the last session ended.
    pub last_error: Mutex<Option<String>>,
    /// Limits this peer's warning lines (failed sessions, dial errors).
    pub log_limit: LogLimiter,
}

impl PeerStats {
    /// The session state.
    pub fn state(&self) -> SessionState {
        match self.state.load(Ordering::Relaxed) {
            1 => SessionState::Connecting,
            2 => SessionState::Established,
            _ => SessionState::Idle,
        }
    }

    /// Sets the session state.
    pub fn set_state(&self, s: SessionState) {
        self.state.store(s as u8, Ordering::Relaxed);
    }

    /// Whether the peer can be relayed: established and fully resynced.
    pub fn is_complete(&self) -> bool {
        self.state() == SessionState::Established && self.resynced.load(Ordering::Relaxed)
    }
}
