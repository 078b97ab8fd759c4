//! Evidence that the harness and the `stktagg-wire` codec work against a real
//! HAProxy 2.6. Each test starts its own `haproxy` on 127.0.0.1 with kernel-picked
//! ports, so tests run in parallel. Without `haproxy` every test fails with an
//! install hint (never skips).
//!
//! - `harness`: the harness itself (process, runtime API, parsers).
//! - `handshake`: status codes for good and bad hellos; HAProxy's own hello.
//! - `decode`: what HAProxy sends decodes (every key type, data type, dict form,
//!   timed resync), recorded as golden captures with `STKTAGG_RECORD=1`.
//! - `capture`: the golden-file recorder / structural comparer.
//! - `encode`: what the codec encodes, HAProxy accepts (read back with `show table`,
//!   acknowledged with our ids).
//! - `errors`: oversized messages, class 255, unknown messages.
//! - `control`: RESYNC PARTIAL from HAProxy (it teaches while still learning) and
//!   from us, our heartbeats and error-class messages, seen in `show peers`.
//! - `switch`: our TABLE SWITCH is honoured; HAProxy switches with a DEFINE.
//! - `acks`: our ACK is HAProxy's push cursor; a new session resumes after it.
//! - `values`: every data type of 2.6 one by one (conn_cur ignored), the rate read
//!   rule, and data-type bits 25/26 skipped.
//! - `peers_dump`: a reader for `show peers`.
//! - `shard`: our key-to-shard function is HAProxy's (`shards`, 2.7+), on 100,000
//!   keys of each key type.

// Test code may unwrap (a panic is a test failure); helpers outside `#[test]`
// functions are test code too.
#![allow(clippy::unwrap_used)]

mod acks;
mod capture;
mod control;
mod decode;
mod encode;
mod errors;
mod handshake;
mod harness;
mod peers_dump;
mod shard;
mod switch;
mod values;
