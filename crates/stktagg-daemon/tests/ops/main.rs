//! Operating stktagg: the runtime API, the Prometheus endpoint, the command line,
//! signals and the files under `deploy/`, tested against the real `stktagg` binary
//! with real HAProxy 2.6 nodes attached.
//!
//! Each test starts its own processes on its own block of 127.0.77.x addresses
//! (see `rig`), with ports picked by the kernel, so tests run in parallel with each
//! other and with the other test binaries. Every wait is bounded; every process is
//! stopped by PID. Without `haproxy` the tests that need it fail with the harness's
//! install hint.
//!
//! # Layout
//! - `rig`: the `stktagg` subprocess, HAProxy nodes, HTTP client, a Prometheus
//!   scraper and text-exposition parser, an interactive CLI client.
//! - `api`: every runtime API command, compared with what a real HAProxy prints.
//! - `metrics`: every Prometheus series, with an `up` group fail-over, a
//!   protocol error provoked by a raw client, and a daemon whose peers never
//!   connected (every series there, at 0, from the start).
//! - `cli`: `-c`, `--version`, `--print-default-config`, exit codes, SIGTERM and
//!   SIGINT.
//! - `ha_example`: the seed's HA example run as its README says (node lines
//!   merged into Debian's stock haproxy.cfg), on 127.0.59.N.
//! - `sockets`: every `stats socket` line opened with its mode, owner and group;
//!   each one's level enforced per command, lowered per connection.
//! - `tls`: mutual TLS with real nodes (they dial us, we dial them), impostors
//!   over TLS and plain text refused and counted, certificates re-read on SIGHUP.
//! - `deploy`: the files under `deploy/` (configs check, the seed's node lines
//!   merged into Debian's stock haproxy.cfg check, the metrics port is 10090
//!   everywhere, the Grafana dashboard and the alert rules name only real series
//!   and agree on thresholds, systemd unit, Prometheus scrape config).

// Test code may unwrap (a panic is a test failure); helpers outside `#[test]`
// functions are test code too.
#![allow(clippy::unwrap_used)]

mod api;
mod cli;
mod deploy;
mod ha_example;
mod metrics;
mod rig;
mod sockets;
mod tls;
