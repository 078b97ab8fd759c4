//! The golden captures of `tests/captures/` (recorded from HAProxy 2.6.12 by the
//! live suite), decoded field by field.

use crate::data::{DataSpec, DataType, DictValue, Value};
use crate::decode::Decoder;
use crate::encode::Encoder;
use crate::key::KeyType;
use crate::message::{Message, TableDefinition, UpdateKind};
use crate::testutil::*;
use bytes::{Bytes, BytesMut};
// ---- Golden captures from HAProxy 2.6.12 (recorded by the live test suite) ----

/// Reads a capture file of `tests/captures/` as one message per line.
fn capture(name: &str) -> Vec<Vec<u8>> {
    let path = format!("{}/tests/captures/{name}.hex", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(unhex)
        .collect()
}

/// Decodes every captured message (after `prelude`), checks each consumed exactly its
/// line, and re-encodes the decoded messages: HAProxy's bytes must come back exactly.
fn golden(name: &str, prelude: &[Message]) -> Vec<Message> {
    let mut dec = Decoder::new();
    let mut enc = Encoder::new();
    let mut sink = BytesMut::new();
    let mut pre = BytesMut::new();
    for m in prelude {
        enc.encode(m, &mut pre).unwrap();
    }
    while dec.decode(&mut pre).unwrap().is_some() {}
    let mut out = Vec::new();
    for line in capture(name) {
        let mut buf = BytesMut::from(&line[..]);
        let msg = dec
            .decode(&mut buf)
            .unwrap_or_else(|e| panic!("{name}: {}: {e}", hex(&line)))
            .unwrap_or_else(|| panic!("{name}: {}: incomplete", hex(&line)));
        assert!(buf.is_empty(), "{name}: {}: bytes left", hex(&line));
        sink.clear();
        enc.encode(&msg, &mut sink).unwrap();
        assert_eq!(hex(&sink), hex(&line), "{name}: re-encoding {msg:?}");
        out.push(msg);
    }
    out
}

#[test]
fn golden_keys() {
    let msgs = golden("keys", &[]);
    let keys: Vec<_> = msgs
        .iter()
        .filter_map(|m| match m {
            Message::Update(u) => Some((u.key.clone(), u.values.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(keys.len(), 6);
    assert_eq!(keys[0].0.display(KeyType::Ipv4), "10.1.2.3");
    assert_eq!(keys[1].0.display(KeyType::Ipv6), "2001:db8::1");
    assert_eq!(keys[2].0.as_bytes(), b"abcdefgh");
    assert_eq!(keys[3].0.as_bytes(), b"a-string");
    assert_eq!(keys[4].0.as_bytes(), b"AB\0\0\0\0");
    assert_eq!(keys[5].0.display(KeyType::Sint), "3000000000");
    let gpc0: Vec<_> = keys.iter().map(|k| k.1.clone()).collect();
    assert_eq!(gpc0[2], vec![Value::Uint(4)]);
}

#[test]
fn golden_dict() {
    let msgs = golden("dict", &[]);
    let s1 = Value::Dict(DictValue::Name(Bytes::from_static(b"s1")));
    for m in &msgs[1..] {
        let Message::Update(u) = m else {
            panic!("{m:?}")
        };
        assert_eq!(u.values, vec![Value::Sint(1), s1.clone()]);
    }
    let Message::Update(u) = &msgs[2] else {
        panic!("{msgs:?}")
    };
    assert_eq!((u.kind, u.update_id), (UpdateKind::Incremental, 2));
}

#[test]
fn golden_all_types() {
    let msgs = golden("all_types", &[]);
    let Message::Update(arr) = &msgs[1] else {
        panic!("{msgs:?}")
    };
    assert_eq!(arr.values[0], Value::UintArray(vec![7, 0, 0]));
    assert_eq!(arr.values[1], Value::UintArray(vec![3, 0]));
    let Message::Update(all) = &msgs[3] else {
        panic!("{msgs:?}")
    };
    assert_eq!(all.values.len(), 22);
    assert_eq!(all.values[0], Value::Sint(-7));
    assert_eq!(all.values[4], Value::Uint(4_000_000_000));
    assert_eq!(all.values[13], Value::Ull(5_000_000_000));
    assert_eq!(all.values[15], Value::Ull(1_099_511_627_776));
    assert_eq!(all.values[19], Value::Dict(DictValue::Absent));
    let Value::Freq(rate) = all.values[10] else {
        panic!("{:?}", all.values[10])
    };
    assert_eq!((rate.curr, rate.prev), (42, 0));
}

#[test]
fn golden_resync_timed() {
    // The live push before the resync had defined `/t` (gpc0, ip, 30 s) as id 1 and
    // sent updates 1..3, which the incremental ids continue from after the 0x85.
    let t = TableDefinition {
        table_id: 1,
        name: Bytes::from_static(b"/t"),
        key_type: KeyType::Ipv4,
        key_len: 4,
        expire_ms: 30_000,
        data: vec![DataSpec::plain(DataType::Gpc0)],
    };
    // The prelude is harmless when the capture carries the DEFINE itself.
    let msgs = golden("resync_timed", &[Message::TableDefinition(t)]);
    let ids: Vec<_> = msgs
        .iter()
        .filter_map(|m| match m {
            Message::Update(u) => Some((u.kind, u.update_id)),
            _ => None,
        })
        .collect();
    assert_eq!(
        ids,
        vec![
            (UpdateKind::Timed, 1),
            (UpdateKind::IncrementalTimed, 2),
            (UpdateKind::IncrementalTimed, 3),
        ]
    );
    // The remaining lifetime varies from run to run, within the 30 s expire.
    for m in &msgs {
        if let Message::Update(u) = m {
            assert!(matches!(u.expire_ms, Some(1..=30_000)), "{u:?}");
        }
    }
    assert_eq!(msgs.last(), Some(&Message::ResyncFinished));
}
