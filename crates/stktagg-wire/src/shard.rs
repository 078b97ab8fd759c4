//! HAProxy's key-to-shard function (HAProxy >= 2.7, `shards` in a peers section).
//!
//! A node whose peers section declares `shards <n>` sends each entry only to the
//! peers whose `shard` is the entry's shard (and to peers without a shard). The
//! shard is `XXH64(key, len, seed) % n + 1`, where the seed is `XXH64` of the
//! table's local id with seed 0 (`stktable_init` and `stktable_get_key_shard` in
//! HAProxy's `src/stick_table.c`). The local id of a table declared in a peers
//! section is `<section>/<table>`; a backend's table is its backend's name. The
//! key is hashed as HAProxy holds it in memory: addresses in network order, a
//! string's bytes without NUL, a binary key's full key length, and an integer in the
//! host's byte order, which is little-endian on every platform HAProxy is commonly
//! built for (x86-64, arm64): a big-endian HAProxy would shard integer keys
//! differently.
//!
//! Agreeing on this function is what lets HAProxy nodes and stktagg aggregators of
//! one sharded tier send every key to the same shard.

use crate::key::{Key, KeyType};
use xxhash_rust::xxh64::xxh64;

/// The hash seed of a table, from its local id.
pub fn table_seed(local_id: &[u8]) -> u64 {
    xxh64(local_id, 0)
}

/// The local id HAProxy gives a table it knows under the network name `wire_name`
/// in a peers section called `section`: `<section>/<table>` for a peers-section
/// table (network name `/<table>`), the name itself for a backend's table.
pub fn local_id(section: &str, wire_name: &[u8]) -> Vec<u8> {
    match wire_name.strip_prefix(b"/") {
        Some(table) => {
            let mut id = Vec::with_capacity(section.len() + wire_name.len());
            id.extend_from_slice(section.as_bytes());
            id.push(b'/');
            id.extend_from_slice(table);
            id
        }
        None => wire_name.to_vec(),
    }
}

/// The shard of `key` (of a table of `key_type` whose seed is `seed`) among
/// `shards` shards: `1..=shards`, or 0 when the section has no shards.
pub fn key_shard(seed: u64, key_type: KeyType, key: &Key, shards: u32) -> u32 {
    if shards == 0 {
        return 0;
    }
    let b = key.as_bytes();
    let h = match key_type {
        // Our integer keys are big-endian (the wire form); HAProxy hashes its
        // in-memory, host-order (little-endian) value.
        KeyType::Sint if b.len() == 4 => xxh64(&[b[3], b[2], b[1], b[0]], seed),
        _ => xxh64(b, seed),
    };
    (h % u64::from(shards)) as u32 + 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn local_ids_are_haproxys() {
        assert_eq!(
            local_id("cluster", b"/req.uncombined"),
            b"cluster/req.uncombined"
        );
        assert_eq!(local_id("cluster", b"be_app"), b"be_app");
    }

    #[test]
    fn shards_are_in_range_and_zero_without_shards() {
        let seed = table_seed(b"cluster/req.uncombined");
        for i in 0..1000u32 {
            let k = Key::from_u32(i);
            let s = key_shard(seed, KeyType::Sint, &k, 3);
            assert!((1..=3).contains(&s));
            assert_eq!(key_shard(seed, KeyType::Sint, &k, 0), 0);
        }
        // Both shards get keys (the hash spreads).
        let ips: Vec<u32> = (0..100u8)
            .map(|i| {
                let k = Key::from_ipv4(Ipv4Addr::new(10, 0, 0, i));
                key_shard(seed, KeyType::Ipv4, &k, 2)
            })
            .collect();
        assert!(ips.contains(&1) && ips.contains(&2));
    }

    #[test]
    fn xxh64_matches_its_reference_vectors() {
        // The reference values of XXH64 (xxhash's sanity test): empty input, seed 0.
        assert_eq!(xxh64(b"", 0), 0xef46_db37_51d8_e999);
    }
}
