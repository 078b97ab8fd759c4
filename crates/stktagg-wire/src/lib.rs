//! HAProxy's peers protocol (version 2.1), as a sans-IO codec.
//!
//! This crate turns bytes into typed messages and back. It has no sockets, no tasks
//! and no clock: the daemon feeds it bytes and time. It is what stktagg uses to speak
//! to stock HAProxy nodes and to other aggregators, and it can be reused on its own.
//!
//! # Layout
//! - `data`: data types (HAProxy's `STKTABLE_DT_*`), their storage and values.
//! - `key`: key types and keys.
//! - `message`: the messages exchanged after the handshake.

#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod data;
pub mod key;
pub mod message;

pub use data::{Aggregation, DataSpec, DataType, DictValue, FreqCtr, ParamKind, Storage, Value};
pub use key::{Key, KeyType};
pub use message::{Message, TableDefinition, Update, UpdateKind};
