//! Deterministic, pre-encoded update streams.
//!
//! A stream is built once, before any timing starts, so that sending it is nothing
//! but `write` calls: the generator measures the system, not its own encoder. Update
//! `i` (0-based) carries update id `i + 1` (the first one in full form, the others
//! incremental, as HAProxy sends a push run), visits key `perm(i mod K)` where `perm`
//! is a fixed multiplicative permutation of `0..K` (so each run of `K` updates touches
//! every key once, in a scattered order), and holds:
//!
//! - `gpc0 = i mod 7`,
//! - `http_req_cnt = i + 1` (unique per update: a receiver that sees the sum of a key
//!   only one source writes can tell which update it reflects),
//! - `http_req_rate(10s) = {age: i mod 10000, curr: i mod 100, prev: 50}`.

use crate::error::LoadgenError;
use bytes::{Bytes, BytesMut};
use serde::Serialize;
use std::net::Ipv4Addr;
use stktagg_wire::{
    DataSpec, DataType, Encoder, FreqCtr, Key, KeyType, Message, TableDefinition, Update,
    UpdateKind, Value,
};

/// The kind of key a stream uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyKind {
    /// IPv4 addresses from 10.0.0.0 (HAProxy `type ip`).
    Ipv4,
    /// Strings `key-<8 digits>` (HAProxy `type string len 32`).
    String,
}

impl KeyKind {
    /// The HAProxy `type` clause of a table holding these keys.
    pub fn haproxy_type(self) -> &'static str {
        match self {
            KeyKind::Ipv4 => "ip",
            KeyKind::String => "string len 32",
        }
    }
}

impl std::str::FromStr for KeyKind {
    type Err = LoadgenError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ipv4" | "ip" => Ok(KeyKind::Ipv4),
            "string" => Ok(KeyKind::String),
            _ => Err(LoadgenError::BadSpec("key kind is `ipv4` or `string`")),
        }
    }
}

/// What to put in a stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StreamSpec {
    /// Number of updates.
    pub updates: u64,
    /// Number of distinct keys (at most 16 777 216).
    pub keys: u32,
    /// Key type.
    pub key_kind: KeyKind,
    /// Rotation of the visiting order: update `i` visits the key update `i + offset`
    /// of an unrotated stream would. Sources of one run use different offsets, so
    /// that they write the same keys at different moments.
    pub offset: u64,
    /// The table's wire name (`/` + the name in a HAProxy peers section).
    pub table_name: String,
    /// The table's expiry in ms.
    pub expire_ms: u32,
}

impl StreamSpec {
    /// A stream of `updates` updates over `keys` keys into `/bench.uncombined`, with a
    /// 60 s expiry (longer than any run, so nothing expires while it is measured).
    pub fn new(updates: u64, keys: u32, key_kind: KeyKind) -> StreamSpec {
        StreamSpec {
            updates,
            keys,
            key_kind,
            offset: 0,
            table_name: "/bench.uncombined".to_owned(),
            expire_ms: 60_000,
        }
    }

    /// The table definition the stream announces (table id 1).
    pub fn definition(&self) -> TableDefinition {
        let (key_type, key_len) = match self.key_kind {
            KeyKind::Ipv4 => (KeyType::Ipv4, 4),
            KeyKind::String => (KeyType::String, 33),
        };
        TableDefinition {
            table_id: 1,
            name: Bytes::copy_from_slice(self.table_name.as_bytes()),
            key_type,
            key_len,
            expire_ms: self.expire_ms,
            data: vec![
                DataSpec::plain(DataType::Gpc0),
                DataSpec::plain(DataType::HttpReqCnt),
                DataSpec {
                    data_type: DataType::HttpReqRate,
                    period_ms: 10_000,
                    nbelem: 0,
                },
            ],
        }
    }

    /// The key index update `i` visits.
    pub fn key_index(&self, i: u64) -> u32 {
        let k = u64::from(self.keys.max(1));
        let j = (i.wrapping_add(self.offset)) % k;
        // `multiplier(k)` is coprime with k, so this is a permutation of 0..k.
        ((j * multiplier(k)) % k) as u32
    }

    /// The key with index `k`.
    pub fn key(&self, k: u32) -> Key {
        match self.key_kind {
            KeyKind::Ipv4 => Key::from_ipv4(Ipv4Addr::from(0x0a00_0000u32.wrapping_add(k))),
            KeyKind::String => Key::from_str_bytes(format!("key-{k:08}")),
        }
    }

    /// The values of update `i`, in definition order.
    pub fn values(i: u64) -> Vec<Value> {
        vec![
            Value::Uint((i % 7) as u32),
            Value::Uint(http_req_cnt(i)),
            Value::Freq(FreqCtr {
                age: (i % 10_000) as u32,
                curr: (i % 100) as u32,
                prev: 50,
            }),
        ]
    }

    /// Builds the stream.
    ///
    /// # Errors
    /// [`LoadgenError::BadSpec`] for zero keys or more than 2^24 keys (IPv4 keys stay
    /// inside 10.0.0.0/8), or more than `u32::MAX` updates (update ids are 32-bit).
    pub fn build(&self) -> Result<Stream, LoadgenError> {
        if self.keys == 0 || self.keys > 1 << 24 {
            return Err(LoadgenError::BadSpec("keys must be in 1..=16777216"));
        }
        if self.updates > u64::from(u32::MAX) {
            return Err(LoadgenError::BadSpec("at most 2^32-1 updates per stream"));
        }
        let mut enc = Encoder::new();
        let def = self.definition();
        let mut define = BytesMut::new();
        enc.encode(&Message::TableDefinition(def.clone()), &mut define)?;
        // Updates of this shape take 14 to 30 bytes.
        let mut bytes = BytesMut::with_capacity((self.updates as usize).saturating_mul(24));
        let mut ends = Vec::with_capacity(self.updates as usize);
        for i in 0..self.updates {
            let update_id = (i + 1) as u32;
            let kind = if i == 0 {
                UpdateKind::Full
            } else {
                UpdateKind::Incremental
            };
            let msg = Message::Update(Update {
                kind,
                table_id: def.table_id,
                update_id,
                expire_ms: None,
                key: self.key(self.key_index(i)),
                values: StreamSpec::values(i),
            });
            enc.encode(&msg, &mut bytes)?;
            ends.push(bytes.len());
        }
        Ok(Stream {
            spec: self.clone(),
            define: define.freeze(),
            bytes: bytes.freeze(),
            ends,
        })
    }
}

/// `http_req_cnt` of update `i`.
pub fn http_req_cnt(i: u64) -> u32 {
    (i + 1) as u32
}

/// The update index an `http_req_cnt` value comes from (see [`http_req_cnt`]).
pub fn update_of_cnt(cnt: u32) -> Option<u64> {
    u64::from(cnt).checked_sub(1)
}

/// A multiplier coprime with `k`, near `k * 0.618` so that neighbours scatter.
fn multiplier(k: u64) -> u64 {
    let mut m = (k * 618_034 / 1_000_000) | 1;
    while m > 1 && gcd(m, k) != 1 {
        m += 2;
    }
    m.max(1)
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// A pre-encoded stream.
#[derive(Debug, Clone)]
pub struct Stream {
    /// What it holds.
    pub spec: StreamSpec,
    /// The table definition message.
    pub define: Bytes,
    /// Every update message, back to back.
    pub bytes: Bytes,
    /// `ends[i]` is the offset just past update `i` in `bytes`.
    pub ends: Vec<usize>,
}

impl Stream {
    /// The number of updates.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether the stream has no update.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The bytes of updates `from..to`.
    pub fn range(&self, from: usize, to: usize) -> &[u8] {
        let start = if from == 0 { 0 } else { self.ends[from - 1] };
        let end = if to == 0 { 0 } else { self.ends[to - 1] };
        &self.bytes[start..end]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use stktagg_wire::Decoder;

    #[test]
    fn every_run_of_k_updates_visits_every_key_once() {
        for keys in [1u32, 2, 10, 97, 1000, 4096, 100_000] {
            let mut spec = StreamSpec::new(0, keys, KeyKind::Ipv4);
            for offset in [0u64, 3, 12_345] {
                spec.offset = offset;
                let seen: HashSet<u32> = (0..u64::from(keys)).map(|i| spec.key_index(i)).collect();
                assert_eq!(seen.len(), keys as usize, "keys {keys} offset {offset}");
                assert!(seen.iter().all(|&k| k < keys));
            }
        }
    }

    #[test]
    fn stream_decodes_back_to_its_updates() {
        for kind in [KeyKind::Ipv4, KeyKind::String] {
            let spec = StreamSpec::new(500, 37, kind);
            let s = spec.build().unwrap();
            assert_eq!(s.len(), 500);
            let mut dec = Decoder::new();
            let mut buf = BytesMut::from(&s.define[..]);
            buf.extend_from_slice(&s.bytes);
            let Some(Message::TableDefinition(def)) = dec.decode(&mut buf).unwrap() else {
                panic!("definition first");
            };
            assert_eq!(def, spec.definition());
            for i in 0..500u64 {
                let Some(Message::Update(u)) = dec.decode(&mut buf).unwrap() else {
                    panic!("update {i}");
                };
                assert_eq!(u.update_id as u64, i + 1);
                assert_eq!(u.kind == UpdateKind::Full, i == 0);
                assert_eq!(u.key, spec.key(spec.key_index(i)));
                assert_eq!(u.values, StreamSpec::values(i));
                assert_eq!(update_of_cnt(http_req_cnt(i)), Some(i));
            }
            assert!(buf.is_empty());
            // Ranges cut exactly at message boundaries.
            let mid = s.range(10, 20);
            let mut one = BytesMut::from(s.range(10, 11));
            assert!(mid.starts_with(&one));
            assert_eq!(s.range(0, 500).len(), s.bytes.len());
            assert!(s.range(3, 3).is_empty());
            one.clear();
        }
    }

    #[test]
    fn build_refuses_impossible_specs() {
        assert!(StreamSpec::new(1, 0, KeyKind::Ipv4).build().is_err());
        assert!(
            StreamSpec::new(1, (1 << 24) + 1, KeyKind::Ipv4)
                .build()
                .is_err()
        );
        assert!(StreamSpec::new(1, 1 << 24, KeyKind::Ipv4).build().is_ok());
    }

    #[test]
    fn keys_match_haproxy_table_types() {
        let spec = StreamSpec::new(1, 10, KeyKind::Ipv4);
        assert_eq!(spec.key(1).display(KeyType::Ipv4), "10.0.0.1");
        let spec = StreamSpec::new(1, 10, KeyKind::String);
        assert_eq!(spec.key(42).display(KeyType::String), "key-00000042");
        // `string len 32`: 33-byte key_size, and 12 characters fit.
        assert_eq!(spec.definition().key_len, 33);
    }
}
