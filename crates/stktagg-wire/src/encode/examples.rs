//! Worked examples of what the encoder refuses (a receiver would reject or misread
//! it) and of its size limit.

use crate::data::{DataSpec, DataType, FreqCtr, Value};
use crate::encode::Encoder;
use crate::error::WireError;
use crate::key::{Key, KeyType};
use crate::message::{Message, UpdateKind};
use crate::testutil::*;
use bytes::{Bytes, BytesMut};
#[test]
fn encoder_refuses_invalid_definitions_and_updates() {
    let mut enc = Encoder::new();
    let mut buf = BytesMut::new();
    let mut bad = local_counters();
    bad.table_id = 0;
    let bads = {
        let mut v = vec![bad];
        let mut d = local_counters();
        d.name = Bytes::new();
        v.push(d);
        let mut d = local_counters();
        d.key_len = 16;
        v.push(d);
        let mut d = local_counters();
        d.data.swap(0, 1);
        v.push(d);
        let mut d = local_counters();
        d.data[0].nbelem = 3;
        v.push(d);
        let mut d = local_counters();
        d.data[0].period_ms = 3;
        v.push(d);
        let mut d = local_counters();
        d.data.push(DataSpec {
            data_type: DataType::Gpc,
            period_ms: 0,
            nbelem: 101,
        });
        v.push(d);
        v
    };
    for d in bads {
        let err = enc
            .encode(&Message::TableDefinition(d), &mut buf)
            .unwrap_err();
        assert!(
            matches!(err, WireError::InvalidDefinition { .. }),
            "{err:?}"
        );
        assert_eq!(err.fault(), crate::Fault::Local);
    }
    assert!(buf.is_empty());
    let key = Key::from_ipv4(std::net::Ipv4Addr::LOCALHOST);
    let u = update(UpdateKind::Full, 2, 1, key.clone(), vec![Value::Uint(1)]);
    let err = enc
        .encode(&Message::Update(u.clone()), &mut buf)
        .unwrap_err();
    assert!(matches!(err, WireError::UndefinedTable { table_id: 2 }));
    enc.encode(&Message::TableDefinition(local_counters()), &mut buf)
        .unwrap();
    let err = enc.encode(&Message::Update(u), &mut buf).unwrap_err();
    assert!(matches!(
        err,
        WireError::ValueCount {
            expected: 4,
            got: 1
        }
    ));
    let u = update(
        UpdateKind::Full,
        2,
        1,
        key.clone(),
        vec![
            Value::Uint(1),
            Value::Uint(1),
            Value::Ull(1),
            Value::Freq(FreqCtr::default()),
        ],
    );
    let err = enc.encode(&Message::Update(u), &mut buf).unwrap_err();
    assert!(matches!(
        err,
        WireError::ValueShape {
            index: 2,
            data_type: DataType::HttpReqCnt
        }
    ));
    // Incremental right after a definition: the receiver's counter is unknown.
    let u = update(
        UpdateKind::Incremental,
        2,
        1,
        key.clone(),
        vec![
            Value::Uint(1),
            Value::Uint(1),
            Value::Uint(1),
            Value::Freq(FreqCtr::default()),
        ],
    );
    let err = enc.encode(&Message::Update(u), &mut buf).unwrap_err();
    assert!(matches!(
        err,
        WireError::IncrementalIdMismatch {
            expected: None,
            got: 1
        }
    ));
    // Another table defined after: the first is no longer selected.
    let other = one_type_table(5, DataSpec::plain(DataType::Gpc0), KeyType::Sint, 4);
    enc.encode(&Message::TableDefinition(other), &mut buf)
        .unwrap();
    let u = update(
        UpdateKind::Full,
        2,
        1,
        key,
        vec![
            Value::Uint(1),
            Value::Uint(1),
            Value::Uint(1),
            Value::Freq(FreqCtr::default()),
        ],
    );
    let err = enc
        .encode(&Message::Update(u.clone()), &mut buf)
        .unwrap_err();
    assert!(matches!(
        err,
        WireError::TableNotSelected {
            table_id: 2,
            selected: Some(5)
        }
    ));
    enc.encode(&Message::TableSwitch { table_id: 2 }, &mut buf)
        .unwrap();
    enc.encode(&Message::Update(u), &mut buf).unwrap();
}

#[test]
fn encoder_refuses_oversized_messages() {
    let spec = DataSpec {
        data_type: DataType::Gpc,
        period_ms: 0,
        nbelem: 100,
    };
    let def = one_type_table(1, spec, KeyType::Binary, 16_000);
    let mut enc = Encoder::new();
    let mut buf = BytesMut::new();
    enc.encode(&Message::TableDefinition(def), &mut buf)
        .unwrap();
    let len_before = buf.len();
    let u = update(
        UpdateKind::Full,
        1,
        1,
        Key::from_bytes(Bytes::from_static(b"k")),
        vec![Value::UintArray(vec![u32::MAX; 100])],
    );
    let err = enc.encode(&Message::Update(u), &mut buf).unwrap_err();
    assert!(
        matches!(err, WireError::Oversized { limit: 16384, .. }),
        "{err:?}"
    );
    assert_eq!(buf.len(), len_before);
}
