//! [`LoadgenError`]: what can stop a load run.

use std::net::SocketAddr;

/// Why a source or a run failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadgenError {
    /// The target is not a loopback address: the generator only ever loads this
    /// machine.
    #[error("refusing to send load to {addr}: only 127.0.0.0/8 and ::1 are allowed")]
    NotLoopback {
        /// The refused address.
        addr: SocketAddr,
    },
    /// A socket operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The peer answered the hello with another status than 200.
    #[error("peer refused the hello with status {code}")]
    Refused {
        /// The status code received.
        code: u32,
    },
    /// The peer sent something the codec rejects, or we built a message it refuses.
    #[error("protocol: {0}")]
    Wire(#[from] stktagg_wire::WireError),
    /// The handshake did not complete in time.
    #[error("no status line from the peer within {0:?}")]
    HandshakeTimeout(std::time::Duration),
    /// The session ended during the handshake for another reason than a refusal or
    /// a timeout (a malformed status line, say).
    #[error("session ended during the handshake: {0}")]
    Ended(stktagg_session::End),
    /// The session engine refused part of our own pre-encoded stream (a bug in the
    /// stream's construction).
    #[error("sending the stream: {0}")]
    Preencoded(#[from] stktagg_session::PreencodedError),
    /// The stream could not be written whole (discard mode).
    #[error("stream not written whole: {0}")]
    Incomplete(String),
    /// The peer closed the connection during the handshake.
    #[error("peer closed the connection during the handshake")]
    ClosedDuringHandshake,
    /// A stream or run specification that cannot be carried out.
    #[error("bad specification: {0}")]
    BadSpec(&'static str),
    /// The report could not be written as JSON.
    #[error("writing the report: {0}")]
    Report(#[from] serde_json::Error),
    /// A worker thread panicked.
    #[error("a source thread panicked")]
    ThreadPanicked,
}

impl LoadgenError {
    pub(crate) fn io(context: &'static str) -> impl FnOnce(std::io::Error) -> LoadgenError {
        move |source| LoadgenError::Io { context, source }
    }
}
