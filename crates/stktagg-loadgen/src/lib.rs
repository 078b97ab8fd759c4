//! A peers-protocol load generator: HAProxy-like sources for benchmarks.
//!
//! It plays one or many HAProxy nodes towards an aggregator (or towards a real
//! HAProxy, for comparison). Each source is a session of the workspace's protocol
//! engine (`stktagg-session`), which speaks for it: the hello, heartbeats, an empty
//! lesson and FINISHED for the target's RESYNC REQUEST, CONFIRM for its FINISHED or
//! PARTIAL, acknowledgements. The generator only adds the table definition and a
//! deterministic pre-built stream of updates, handed to the engine as pre-encoded
//! runs at full speed or at a fixed rate. It records when each update was written,
//! when the target acknowledged it (`0a 84`), and when aggregated updates came back,
//! and turns that into throughput, propagation latency and per-update cost. A
//! discard mode measures the generator alone (the same send path) against a socket
//! that throws everything away, so that nobody mistakes the generator's limit for
//! the system's.
//!
//! Only loopback targets are accepted, and every run is bounded by a deadline.
//! `cargo xtask bench` drives the binary (`stktagg-loadgen`, JSON on stdout) against
//! the daemon and HAProxy; see `docs/performance.md`.
//!
//! # Layout
//! - `stream`: [`StreamSpec`] and [`Stream`]: N updates over K keys (IPv4 or string
//!   keys; counters and a rate), encoded once with `stktagg-wire` before any timing.
//! - `source`: one session ([`run_source`]): the engine driven by a writer (the
//!   calling thread) and a reader thread; [`SourceConfig`], [`SourceReport`].
//! - `run`: many sources at once ([`run()`], [`RunSpec`], [`RunReport`]), propagation
//!   percentiles ([`Latency`]), and the discard sink ([`discard`]).
//! - `error`: [`LoadgenError`].
//!
//! The binary (`src/main.rs`) only parses the command line and prints the report.

pub mod error;
pub mod run;
pub mod source;
pub mod stream;

pub use error::LoadgenError;
pub use run::{DiscardReport, Latency, RunReport, RunSpec, Segment, discard, run};
pub use source::{SourceConfig, SourceReport, check_loopback, run_source};
pub use stream::{KeyKind, Stream, StreamSpec};
