//! Harness for tests that run real `haproxy` processes (and, later, stktagg daemons)
//! on loopback.
//!
//! It is what the wire evidence tests (`tests/tests/`), the daemon's end-to-end
//! tests and `cargo xtask topo-test` build on: start an HAProxy 2.6 with a given
//! configuration, talk to its runtime API, and speak the peers protocol to it through
//! the `stktagg-wire` codec with a small blocking mock peer. Everything is bounded by
//! timeouts and uses ports picked by the kernel, so tests run in parallel. A missing
//! `haproxy` fails the test with an install hint; nothing skips silently.
//!
//! # Layout
//! - `error`: `HarnessError`, the one error type.
//! - `eventually`: bounded polling.
//! - `frame`: a codec-independent message splitter and hex helpers, so captures
//!   are exactly HAProxy's bytes.
//! - `ports`: free loopback ports, listeners and scratch directories.
//! - `haproxy`: `HaproxyConfig` (builder) and `Haproxy` (process handle, killed by
//!   PID on drop, log tail printed on failure); `require_haproxy` (which binary,
//!   `$STKTAGG_HAPROXY` or `haproxy` from `PATH`, and its version, printed once),
//!   `haproxy_version`.
//! - `mock_peer`: `MockPeer`, a blocking peers-protocol client (dial or accept)
//!   that does HAProxy's required duties (heartbeat, resync answers, acks).
//! - `http`: a blocking HTTP/1.0 client bound to a chosen source address.
//! - `lab`: `PeerLab`, one haproxy whose peers section declares the mock.
//! - `runtime`: `RuntimeApi`, a stats socket client (one command per connection).
//! - `pki`: a private CA and leaf certificates per test (rcgen), valid or expired.
//! - `tls`: a blocking TLS client that sends a hello and reads the status line.
//! - `show_table`: parsers for `show table` and `show table <name>`.

pub mod error;
pub mod eventually;
pub mod frame;
pub mod haproxy;
pub mod http;
pub mod lab;
pub mod mock_peer;
pub mod pki;
pub mod ports;
pub mod runtime;
pub mod show_table;
pub mod tls;

pub use error::{HarnessError, Result};
pub use eventually::eventually;
pub use haproxy::{
    Haproxy, HaproxyConfig, HaproxyVersion, PeerDecl, PeersSection, haproxy_version,
    require_haproxy,
};
pub use lab::PeerLab;
pub use mock_peer::{Duties, MockPeer, Received};
pub use runtime::RuntimeApi;
pub use show_table::{Entry, Field, TableDump, TableInfo};
