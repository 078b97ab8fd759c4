//! Property tests across modules: round trips of every message kind, key type and
//! data type; arbitrary bytes never panic nor over-buffer; byte-by-byte feeding.

use crate::data::{DataSpec, DataType, DictValue, FreqCtr, Storage, Value};
use crate::decode::Decoder;
use crate::encode::Encoder;
use crate::hello::{HelloParser, LineDecoder};
use crate::key::{Key, KeyType};
use crate::message::{Message, TableDefinition, Update};
use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

/// The random parts of one update: key, values, id, "continue the sequence",
/// "timed", expire.
type UpdateParts = (Key, Vec<Value>, u32, bool, bool, Option<u32>);

// ---- Property tests ----

fn arb_key_table() -> impl Strategy<Value = (KeyType, u32)> {
    prop_oneof![
        Just((KeyType::Sint, 4)),
        Just((KeyType::Ipv4, 4)),
        Just((KeyType::Ipv6, 16)),
        (2u32..40).prop_map(|l| (KeyType::String, l)),
        (1u32..40).prop_map(|l| (KeyType::Binary, l)),
    ]
}

fn arb_spec(t: DataType) -> BoxedStrategy<DataSpec> {
    let period = if t.storage() == Storage::FreqCtr {
        (0u32..=u32::MAX).boxed()
    } else {
        Just(0u32).boxed()
    };
    let nbelem = if t.is_array() {
        (1u32..=4).boxed()
    } else {
        Just(0u32).boxed()
    };
    (period, nbelem)
        .prop_map(move |(period_ms, nbelem)| DataSpec {
            data_type: t,
            period_ms,
            nbelem,
        })
        .boxed()
}

prop_compose! {
    fn arb_definition(table_id: u32)
        (mask in any::<u32>(), (key_type, key_len) in arb_key_table(),
         expire_ms in any::<u32>(), name in "/[a-z_.]{1,20}")
        (specs in DataType::ALL.iter().copied()
            .filter(|t| mask & (1 << t.id()) != 0)
            .map(arb_spec).collect::<Vec<_>>(),
         key_type in Just(key_type), key_len in Just(key_len),
         expire_ms in Just(expire_ms), name in Just(name))
        -> TableDefinition
    {
        TableDefinition {
            table_id,
            name: Bytes::from(name),
            key_type,
            key_len,
            expire_ms,
            data: specs,
        }
    }
}

fn arb_freq() -> impl Strategy<Value = FreqCtr> {
    (any::<u32>(), any::<u32>(), any::<u32>()).prop_map(|(age, curr, prev)| FreqCtr {
        age,
        curr,
        prev,
    })
}

fn arb_value(spec: DataSpec) -> BoxedStrategy<Value> {
    let n = spec.nbelem as usize;
    match (spec.data_type.is_array(), spec.data_type.storage()) {
        (true, Storage::FreqCtr) => proptest::collection::vec(arb_freq(), n)
            .prop_map(Value::FreqArray)
            .boxed(),
        (true, _) => proptest::collection::vec(any::<u32>(), n)
            .prop_map(Value::UintArray)
            .boxed(),
        (false, Storage::Sint) => any::<i32>().prop_map(Value::Sint).boxed(),
        (false, Storage::Uint) => any::<u32>().prop_map(Value::Uint).boxed(),
        (false, Storage::Ull) => any::<u64>().prop_map(Value::Ull).boxed(),
        (false, Storage::FreqCtr) => arb_freq().prop_map(Value::Freq).boxed(),
        // A few names, so that the dictionary cache sees hits as well as misses.
        (false, Storage::Dict) => prop_oneof![
            Just(DictValue::Absent),
            "s[0-3]".prop_map(|s| DictValue::Name(Bytes::from(s))),
            "[a-z]{0,30}".prop_map(|s| DictValue::Name(Bytes::from(s))),
        ]
        .prop_map(Value::Dict)
        .boxed(),
    }
}

fn arb_key(key_type: KeyType, key_len: u32) -> BoxedStrategy<Key> {
    match key_type {
        KeyType::Sint => any::<u32>().prop_map(Key::from_u32).boxed(),
        KeyType::Ipv4 => any::<[u8; 4]>()
            .prop_map(|o| Key::from_ipv4(o.into()))
            .boxed(),
        KeyType::Ipv6 => any::<[u8; 16]>()
            .prop_map(|o| Key::from_ipv6(o.into()))
            .boxed(),
        KeyType::String => proptest::collection::vec(any::<u8>(), 0..key_len as usize)
            .prop_map(Key::from_str_bytes)
            .boxed(),
        // Decoded binary keys are the full padded bytes.
        KeyType::Binary => proptest::collection::vec(any::<u8>(), key_len as usize)
            .prop_map(|v| Key::from_bytes(Bytes::from(v)))
            .boxed(),
    }
}

/// The random parts of an update for `def`; the session script picks the kind.
fn arb_update(def: TableDefinition) -> BoxedStrategy<UpdateParts> {
    let values: Vec<_> = def.data.iter().map(|s| arb_value(*s)).collect();
    (
        arb_key(def.key_type, def.key_len),
        values,
        any::<u32>(),
        any::<bool>(),
        any::<bool>(),
        proptest::option::of(any::<u32>()),
    )
        .boxed()
}

/// A session script: a few tables, each defined then given updates, with switches
/// back and control messages sprinkled in.
fn arb_session() -> impl Strategy<Value = Vec<Message>> {
    let tables = proptest::collection::vec((1u32..6).prop_flat_map(arb_definition), 1..4);
    tables
        .prop_flat_map(|defs| {
            let per_table: Vec<_> = defs
                .iter()
                .map(|d| proptest::collection::vec(arb_update(d.clone()), 0..6))
                .collect();
            (Just(defs), per_table, proptest::collection::vec(0u8..11, 8))
        })
        .prop_map(|(defs, updates, extras)| {
            let mut msgs = Vec::new();
            let mut enc = Encoder::new();
            let mut sink = BytesMut::new();
            for (i, (def, ups)) in defs.iter().zip(updates).enumerate() {
                let def_msg = Message::TableDefinition(def.clone());
                if enc.encode(&def_msg, &mut sink).is_err() {
                    continue;
                }
                msgs.push(def_msg);
                for (key, values, id, incremental, timed, expire) in ups {
                    let update_id = if incremental {
                        enc.last_update_id(def.table_id)
                            .map_or(id, |l| l.wrapping_add(1))
                    } else {
                        id
                    };
                    let kind = enc.update_kind(def.table_id, update_id, timed);
                    let u = Message::Update(Update {
                        kind,
                        table_id: def.table_id,
                        update_id,
                        expire_ms: kind.is_timed().then_some(expire.unwrap_or(0)),
                        key,
                        values,
                    });
                    if enc.encode(&u, &mut sink).is_ok() {
                        msgs.push(u);
                    }
                }
                let extra = match extras[i % extras.len()] {
                    0 => Message::Heartbeat,
                    1 => Message::ResyncRequest,
                    2 => Message::ResyncFinished,
                    3 => Message::ResyncPartial,
                    4 => Message::ResyncConfirm,
                    5 => Message::Ack {
                        table_id: def.table_id,
                        update_id: 7,
                    },
                    6 => Message::Ignored {
                        class: 10,
                        msg_type: 0x90,
                    },
                    7 => Message::ProtocolError,
                    8 => Message::SizeLimit,
                    _ => Message::TableSwitch {
                        table_id: defs[0].table_id,
                    },
                };
                if enc.encode(&extra, &mut sink).is_ok() {
                    msgs.push(extra);
                }
            }
            msgs
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn sessions_round_trip(msgs in arb_session()) {
        let mut enc = Encoder::new();
        let mut wire = BytesMut::new();
        for m in &msgs {
            enc.encode(m, &mut wire).unwrap();
        }
        let whole = wire.clone();
        // All at once.
        let mut dec = Decoder::new();
        let mut got = Vec::new();
        while let Some(m) = dec.decode(&mut wire).unwrap() {
            got.push(m);
        }
        prop_assert!(wire.is_empty());
        prop_assert_eq!(&got, &msgs);
        // Byte by byte gives the same messages.
        let mut dec = Decoder::new();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for &b in whole.iter() {
            buf.extend_from_slice(&[b]);
            while let Some(m) = dec.decode(&mut buf).unwrap() {
                got.push(m);
            }
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(&got, &msgs);
    }

    #[test]
    fn arbitrary_bytes_never_panic_nor_overbuffer(
        bytes in proptest::collection::vec(any::<u8>(), 0..600),
        limit in 7usize..300,
        chunk in 1usize..40,
    ) {
        let mut dec = Decoder::with_max_message_len(limit);
        let mut buf = BytesMut::new();
        'feed: for piece in bytes.chunks(chunk) {
            buf.extend_from_slice(piece);
            loop {
                match dec.decode(&mut buf) {
                    Ok(Some(_)) => {}
                    Ok(None) => {
                        // Whatever is left is the start of one message under the limit.
                        prop_assert!(buf.len() < limit, "{} buffered, limit {}", buf.len(), limit);
                        break;
                    }
                    Err(e) => {
                        prop_assert!(e.is_peer_fault());
                        break 'feed;
                    }
                }
            }
        }
        // The hello side too.
        let mut buf = BytesMut::from(&bytes[..]);
        let mut p = HelloParser::with_line_decoder("agg", LineDecoder::new(limit));
        let _ = p.feed(&mut buf, &|n: &str| n == "hap1");
        prop_assert!(buf.len() <= bytes.len());
    }

    #[test]
    fn arbitrary_bodies_after_a_definition(
        def in (1u32..3).prop_flat_map(arb_definition),
        msg_type in 0x80u8..0x87,
        body in proptest::collection::vec(any::<u8>(), 0..80),
    ) {
        // Random bodies of every stick-table type, after a valid definition, either
        // decode or fail with a peer error; whatever decodes re-encodes to a message
        // that decodes the same.
        let mut enc = Encoder::new();
        let mut wire = BytesMut::new();
        if enc.encode(&Message::TableDefinition(def), &mut wire).is_err() {
            return Ok(());
        }
        crate::frame::put_frame(&mut wire, 10, msg_type, &body);
        let mut dec = Decoder::new();
        prop_assert!(dec.decode(&mut wire).unwrap().is_some());
        match dec.decode(&mut wire) {
            Ok(Some(_)) | Ok(None) => {}
            Err(e) => prop_assert!(e.is_peer_fault()),
        }
    }
}
