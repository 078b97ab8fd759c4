//! HAProxy's peers protocol (version 2.1), as a sans-IO codec.
//!
//! This crate turns bytes into typed messages and back. It has no sockets, no tasks
//! and no clock: the daemon feeds it bytes and time. It is what stktagg uses to speak
//! to stock HAProxy nodes and to other aggregators, and it can be reused on its own.
//!
//! A session is: the caller sends a [`Hello`], the acceptor checks it with a
//! [`HelloParser`] and answers a [`StatusCode`]; then each side runs a [`Decoder`]
//! for what it receives and an [`Encoder`] for what it sends. "Need more bytes" is
//! always `Ok(None)`; every [`WireError`] says whose [`Fault`] it is.
//!
//! # Layout
//! - `varint`: HAProxy's variable-length integer (not LEB128) and [`VarInt`].
//! - `error`: [`WireError`], one variant per broken rule, and [`Fault`].
//! - `hello`: the handshake: [`Hello`], [`Version`], [`StatusCode`], the
//!   [`LineDecoder`], the acceptor's [`HelloParser`] and [`PeerDirectory`].
//! - `data`: data types (HAProxy's `STKTABLE_DT_*`), their storage and values.
//! - `key`: key types and keys.
//! - `message`: the messages exchanged after the handshake.
//! - `shard`: HAProxy's key-to-shard function (`shards`, HAProxy >= 2.7).
//! - `frame`: framing without interpretation ([`Frame`], [`frame::split_frame`]),
//!   class and type constants, the size limit.
//! - `decode`: [`Decoder`], the receive state (definitions, selected table, update
//!   ids, dictionary cache).
//! - `encode`: [`Encoder`], the transmit state, which refuses what a receiver would
//!   reject.
//! - `dict` and `tables` (private): the dictionary caches and the per-direction table
//!   map shared by both sides.
//! - `tokio_codec` (feature `tokio-codec`): `PeerCodec`, the tokio-util adapter.
//!
//! Tests live beside the code: each module's own, the encoder's refusals in
//! `encode/examples.rs`; test-only modules hold what spans the codec: `examples`
//! (worked examples from captures and the protocol notes, decoded and encoded back),
//! `goldens` (the HAProxy captures of `tests/captures/`), `proptests` (only property
//! tests), `testutil` (hex and the data-driven `check` helpers). `fuzz/` (its own
//! workspace) has a cargo-fuzz target: `cargo +nightly fuzz run decode` from this
//! crate's directory.

#![cfg_attr(not(test), warn(clippy::unwrap_used))]
#![warn(missing_docs)]

pub mod data;
pub mod decode;
mod dict;
pub mod encode;
pub mod error;
pub mod frame;
pub mod hello;
pub mod key;
pub mod message;
pub mod shard;
mod tables;
pub mod varint;

#[cfg(feature = "tokio-codec")]
pub mod tokio_codec;

#[cfg(test)]
mod examples;
#[cfg(test)]
mod goldens;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod testutil;

pub use data::{Aggregation, DataSpec, DataType, DictValue, FreqCtr, ParamKind, Storage, Value};
pub use decode::Decoder;
pub use dict::DICT_SLOTS;
pub use encode::{Encoder, SharedLayout, SharedUpdate};
pub use error::{Fault, WireError};
pub use frame::Frame;
pub use hello::{
    Hello, HelloOutcome, HelloParser, LineDecoder, PeerDirectory, StatusCode, Version,
};
pub use key::{Key, KeyType};
pub use message::{Message, TableDefinition, Update, UpdateKind, UpdateRef};
#[cfg(feature = "tokio-codec")]
pub use tokio_codec::PeerCodec;
pub use varint::VarInt;
