//! What a session tells its caller.

use stktagg_wire::{Hello, StatusCode, TableDefinition, Update, WireError};

/// Something the caller must know or act on, from [`crate::PeerSession::poll_event`].
#[derive(Debug)]
pub enum Event {
    /// Acceptor: a valid hello arrived. The caller checks who it is (a configured
    /// peer, from the right address, not already connected as itself) and answers
    /// with [`crate::PeerSession::accept`] or [`crate::PeerSession::refuse`].
    HelloReceived(Hello),
    /// The handshake is done: messages flow.
    Established {
        /// The peer speaks 2.0: it gets no timed updates.
        downgraded: bool,
    },
    /// The peer defined (or re-defined) one of its tables.
    TableDefined(TableDefinition),
    /// An update for one of the peer's tables. It is acknowledged by the session.
    /// `expire_ms` is kept only when the peer's table has an expiry.
    Update(Update),
    /// The peer acknowledged our updates of our table `table_id` up to `update_id`.
    Acked {
        /// Our table id.
        table_id: u32,
        /// The last update id the peer received.
        update_id: u32,
    },
    /// We sent RESYNC REQUEST: the peer's full lesson follows. A caller that replaces
    /// a source's contributions with its lesson marks the start here.
    ResyncAsked,
    /// The peer ended the lesson we asked for (FINISHED or PARTIAL); the session has
    /// CONFIRMed it.
    ResyncEnded {
        /// FINISHED (the peer was up to date) rather than PARTIAL.
        finished: bool,
    },
    /// The peer asked us for a full resync: the session calls the feed's
    /// [`crate::Feed::teach_back`] then [`crate::Feed::lesson`] until both are done,
    /// then ends the lesson. A caller prepares what it will teach here.
    ResyncRequested,
    /// The peer CONFIRMed the end of our lesson.
    Confirmed,
    /// The session is over: flush what [`crate::PeerSession::poll_transmit`] still
    /// gives, then close the connection.
    Closed(End),
}

/// Why a session ended, as the protocol sees it (socket errors and shutdown are the
/// caller's).
#[derive(Debug)]
pub enum End {
    /// Dialer: the peer answered our hello with an error status.
    Refused(StatusCode),
    /// Acceptor: we answered the peer's hello with an error status.
    Rejected(StatusCode),
    /// The handshake did not complete in time.
    HandshakeTimeout,
    /// Nothing received within the idle timeout.
    Silent,
    /// The peer sent something we cannot accept (the session sends HAProxy's reply).
    Protocol(WireError),
    /// The peer told us it found an error in what we sent, and closes.
    PeerError(PeerComplaint),
}

/// What the peer said was wrong with what we sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerComplaint {
    /// `01 00`: a protocol error.
    ProtocolError,
    /// `01 01`: a message over its size limit.
    SizeLimit,
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::Refused(code) => write!(f, "peer refused our hello with status {code}"),
            End::Rejected(code) => write!(f, "we refused the peer's hello with status {code}"),
            End::HandshakeTimeout => f.write_str("handshake timed out"),
            End::Silent => f.write_str("peer silent past the idle timeout"),
            End::Protocol(e) => write!(f, "protocol error from peer: {e}"),
            End::PeerError(PeerComplaint::ProtocolError) => {
                f.write_str("peer reported a protocol error in what we sent")
            }
            End::PeerError(PeerComplaint::SizeLimit) => {
                f.write_str("peer reported a message over its size limit")
            }
        }
    }
}
