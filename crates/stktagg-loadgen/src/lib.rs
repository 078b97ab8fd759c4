//! A peers-protocol load generator: HAProxy-like sources for benchmarks.
//!
//! It plays one or many HAProxy nodes towards an aggregator (or towards a real
//! HAProxy, for comparison): the hello, a heartbeat at once and every 2 s, an empty
//! lesson (`00 01`) for the target's RESYNC REQUEST, CONFIRM for its FINISHED or
//! PARTIAL, the table definition, then a deterministic pre-built stream of updates at
//! full speed or at a fixed rate. It records when each update was written, when the
//! target acknowledged it (`0a 84`), and when aggregated updates came back, and turns
//! that into throughput, propagation latency and per-update cost. A discard mode
//! measures the generator alone against a socket that throws everything away, so
//! that nobody mistakes the generator's limit for the system's.
//!
//! Only loopback targets are accepted, and every run is bounded by a deadline.
//! `cargo xtask bench` drives the binary (`stktagg-loadgen`, JSON on stdout) against
//! the daemon and HAProxy; see `docs/performance.md`.
//!
//! # Layout
//! - `stream`: [`StreamSpec`] and [`Stream`]: N updates over K keys (IPv4 or string
//!   keys; counters and a rate), encoded once with `stktagg-wire` before any timing.
//! - `source`: one session ([`run_source`]): a writer (the calling thread) and a
//!   reader thread; [`SourceConfig`], [`SourceReport`].
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
