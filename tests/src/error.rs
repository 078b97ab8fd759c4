//! The harness's error type.

use std::io;
use std::time::Duration;

/// Everything that can go wrong while driving a real `haproxy` from a test.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// The `haproxy` binary could not be run. Tests never skip on this: they fail
    /// with the install hint, and under `CI=true` they say that CI needs it.
    #[error("{hint} (running `{binary}` failed: {source})")]
    HaproxyMissing {
        /// The binary that was tried.
        binary: String,
        /// What to do about it.
        hint: &'static str,
        /// Why running it failed.
        #[source]
        source: io::Error,
    },
    /// A system call (file, socket, process) failed.
    #[error("{context}: {source}")]
    Io {
        /// What the harness was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// `haproxy` exited before or while a test used it.
    #[error("haproxy exited ({status}); log tail:\n{log_tail}")]
    HaproxyExited {
        /// The exit status as printed by the OS.
        status: String,
        /// The last lines of its output.
        log_tail: String,
    },
    /// A bounded wait ran out.
    #[error("timed out after {waited:?} waiting for {what}; last error: {last}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long the harness waited.
        waited: Duration,
        /// The last failure seen while polling.
        last: String,
    },
    /// A runtime API command answered with an error text.
    #[error("runtime api command `{command}` answered: {answer}")]
    Cli {
        /// The command sent.
        command: String,
        /// HAProxy's answer.
        answer: String,
    },
    /// `show table` output did not have the expected shape.
    #[error("cannot parse show table output line `{line}`: {reason}")]
    Parse {
        /// The offending line.
        line: String,
        /// What was wrong with it.
        reason: String,
    },
    /// The codec rejected a message we tried to send, or a hello.
    #[error("codec: {0}")]
    Wire(#[from] stktagg_wire::WireError),
    /// The peer closed the connection while the harness expected more.
    #[error("peer closed the connection ({context})")]
    Closed {
        /// What the harness was waiting for.
        context: String,
    },
    /// The handshake ended with a status other than 200.
    #[error("handshake refused with status line `{line}`")]
    Refused {
        /// The status line as received, without its LF.
        line: String,
    },
    /// The peer sent something the test did not expect at that point.
    #[error("unexpected: {0}")]
    Unexpected(String),
}

impl HarnessError {
    /// Wraps an I/O error with what the harness was doing.
    pub fn io(context: impl Into<String>, source: io::Error) -> HarnessError {
        HarnessError::Io {
            context: context.into(),
            source,
        }
    }
}

/// The harness's result type.
pub type Result<T, E = HarnessError> = std::result::Result<T, E>;
