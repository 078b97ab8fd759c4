//! Cross-module tests: worked examples from captures, data-driven decoding checks,
//! and property tests (round trips of every message kind, key type and data type;
//! arbitrary bytes; byte-by-byte feeding).

use crate::data::{DataSpec, DataType, DictValue, FreqCtr, Storage, Value};
use crate::decode::Decoder;
use crate::encode::Encoder;
use crate::error::WireError;
use crate::hello::{HelloParser, LineDecoder};
use crate::key::{Key, KeyType};
use crate::message::{Message, TableDefinition, Update, UpdateKind};
use crate::testutil::{hex, unhex};
use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

/// The DEFINE captured from HAProxy 2.6.12.
const DEFINE_CAPTURE: &str = r#"0a 82 1c 02 0f "/local_counters" 04 04 f4 55 f0 c4 0d 0a f0 e2 03"#;

fn local_counters() -> TableDefinition {
    TableDefinition {
        table_id: 2,
        name: Bytes::from_static(b"/local_counters"),
        key_type: KeyType::Ipv4,
        key_len: 4,
        expire_ms: 30_000,
        data: vec![
            DataSpec::plain(DataType::Gpc0),
            DataSpec::plain(DataType::ConnCur),
            DataSpec::plain(DataType::HttpReqCnt),
            DataSpec {
                data_type: DataType::HttpReqRate,
                period_ms: 10_000,
                nbelem: 0,
            },
        ],
    }
}

/// Decodes every message of `input_hex` with `decoder`, requiring all bytes used.
fn decode_all(decoder: &mut Decoder, input_hex: &str) -> Result<Vec<Message>, WireError> {
    let mut buf = BytesMut::from(&unhex(input_hex)[..]);
    let mut out = Vec::new();
    while let Some(m) = decoder.decode(&mut buf)? {
        out.push(m);
    }
    assert!(buf.is_empty(), "left over: {}", hex(&buf));
    Ok(out)
}

/// A predicate on an expected decoding error, for data-driven error tables.
type ErrCheck = fn(&WireError) -> bool;

/// The random parts of one update: key, values, id, "continue the sequence",
/// "timed", expire.
type UpdateParts = (Key, Vec<Value>, u32, bool, bool, Option<u32>);

/// A stick-table frame of `msg_type` around `body_hex`, with its length computed.
fn stkt(msg_type: u8, body_hex: &str) -> String {
    let mut buf = BytesMut::new();
    crate::frame::put_frame(&mut buf, 10, msg_type, &unhex(body_hex));
    hex(&buf)
}

/// The varint bitfield of these data types, as hex.
fn bits_hex(types: &[DataType]) -> String {
    let mut b = Vec::new();
    crate::varint::encode(types.iter().fold(0, |a, t| a | t.bit()), &mut b);
    hex(&b)
}

/// Data-driven check: decoding `input_hex` with a fresh decoder gives `expected`.
#[track_caller]
fn check(input_hex: &str, expected: &[Message]) {
    let got = decode_all(&mut Decoder::new(), input_hex).unwrap();
    assert_eq!(got, expected);
}

/// Data-driven check: decoding fails with an error matching `pred`.
#[track_caller]
fn check_err(input_hex: &str, pred: impl Fn(&WireError) -> bool) {
    let mut d = Decoder::new();
    let mut buf = BytesMut::from(&unhex(input_hex)[..]);
    loop {
        match d.decode(&mut buf) {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("{input_hex}: no error"),
            Err(e) => {
                assert!(pred(&e), "{input_hex}: unexpected {e:?}");
                assert!(e.is_peer_fault());
                return;
            }
        }
    }
}

/// Encodes messages with a fresh encoder and returns the hex.
fn encode_all(msgs: &[Message]) -> String {
    let mut enc = Encoder::new();
    let mut buf = BytesMut::new();
    for m in msgs {
        enc.encode(m, &mut buf).unwrap();
    }
    hex(&buf)
}

fn update(kind: UpdateKind, table_id: u32, update_id: u32, key: Key, values: Vec<Value>) -> Update {
    Update {
        kind,
        table_id,
        update_id,
        expire_ms: kind.is_timed().then_some(29_315),
        key,
        values,
    }
}

#[test]
fn define_capture() {
    let def = Message::TableDefinition(local_counters());
    check(DEFINE_CAPTURE, std::slice::from_ref(&def));
    assert_eq!(encode_all(&[def]), hex(&unhex(DEFINE_CAPTURE)));
}

#[test]
fn define_with_array_tail() {
    // `gpt(2),gpc(3),gpc_rate(2,5s),bytes_in_cnt,http_err_rate(2s)`, expire 60 s: the
    // captured tail is [60000, 12,2000, 22,2, 23,3, 24,2,5000].
    let def = TableDefinition {
        table_id: 1,
        name: Bytes::from_static(b"/strtab"),
        key_type: KeyType::String,
        key_len: 9,
        expire_ms: 60_000,
        data: vec![
            DataSpec {
                data_type: DataType::HttpErrRate,
                period_ms: 2000,
                nbelem: 0,
            },
            DataSpec::plain(DataType::BytesInCnt),
            DataSpec {
                data_type: DataType::Gpt,
                period_ms: 0,
                nbelem: 2,
            },
            DataSpec {
                data_type: DataType::Gpc,
                period_ms: 0,
                nbelem: 3,
            },
            DataSpec {
                data_type: DataType::GpcRate,
                period_ms: 5000,
                nbelem: 2,
            },
        ],
    };
    let bytes = encode_all(&[Message::TableDefinition(def.clone())]);
    let mut tail = Vec::new();
    for v in [60_000u64, 12, 2000, 22, 2, 23, 3, 24, 2, 5000] {
        crate::varint::encode(v, &mut tail);
    }
    assert!(bytes.ends_with(&hex(&tail)), "{bytes}");
    check(&bytes, &[Message::TableDefinition(def)]);
}

#[test]
fn ack_capture() {
    let ack = Message::Ack {
        table_id: 7,
        update_id: 1,
    };
    check("0a 84 05 07 00 00 00 01", std::slice::from_ref(&ack));
    assert_eq!(encode_all(&[ack]), "0a 84 05 07 00 00 00 01");
}

#[test]
fn control_and_error_messages() {
    let all = [
        (Message::ResyncRequest, "00 00"),
        (Message::ResyncFinished, "00 01"),
        (Message::ResyncPartial, "00 02"),
        (Message::ResyncConfirm, "00 03"),
        (Message::Heartbeat, "00 04"),
        (Message::ProtocolError, "01 00"),
        (Message::SizeLimit, "01 01"),
        (Message::TableSwitch { table_id: 2 }, "0a 83 01 02"),
    ];
    for (msg, bytes) in all {
        if !matches!(msg, Message::TableSwitch { .. }) {
            check(bytes, std::slice::from_ref(&msg));
            assert_eq!(encode_all(std::slice::from_ref(&msg)), bytes);
        }
    }
    // A switch needs a definition before it, on both sides.
    let input = format!("{DEFINE_CAPTURE} 0a 83 01 02");
    let got = decode_all(&mut Decoder::new(), &input).unwrap();
    assert_eq!(got[1], Message::TableSwitch { table_id: 2 });
    let mut enc = Encoder::new();
    let err = enc
        .encode(&Message::TableSwitch { table_id: 2 }, &mut BytesMut::new())
        .unwrap_err();
    assert!(matches!(err, WireError::UndefinedTable { table_id: 2 }));
}

#[test]
fn ignored_messages() {
    check(
        "05 00 00 09 0a 87 03 aa bb cc 0a 05 01 07 00 84 01 ff",
        &[
            Message::Ignored {
                class: 5,
                msg_type: 0,
            },
            Message::Ignored {
                class: 0,
                msg_type: 9,
            },
            Message::Ignored {
                class: 10,
                msg_type: 0x87,
            },
            Message::Ignored {
                class: 10,
                msg_type: 0x05,
            },
            Message::Ignored {
                class: 1,
                msg_type: 7,
            },
            Message::Ignored {
                class: 0,
                msg_type: 0x84,
            },
        ],
    );
    assert_eq!(
        encode_all(&[Message::Ignored {
            class: 10,
            msg_type: 0x87
        }]),
        "0a 87 00"
    );
    let err = Encoder::new()
        .encode(
            &Message::Ignored {
                class: 10,
                msg_type: 0x80,
            },
            &mut BytesMut::new(),
        )
        .unwrap_err();
    assert!(matches!(err, WireError::NotIgnorable { .. }));
}

#[test]
fn update_after_capture_and_incremental_ids() {
    // Full update id 1 for 127.0.0.1: gpc0 0, conn_cur 0, http_req_cnt 3,
    // http_req_rate (age 5000, curr 30, prev 100) as in the freq ctr example.
    let input = format!(
        "{DEFINE_CAPTURE} {} {}",
        stkt(0x80, "00 00 00 01 7f 00 00 01 00 00 03 f8 a9 01 1e 64"),
        stkt(0x81, "7f 00 00 02 01 00 04 00 00 00")
    );
    // The lengths are 16 and 10 bytes.
    assert!(input.contains("0a 80 10") && input.contains("0a 81 0a"));
    let got = decode_all(&mut Decoder::new(), &input).unwrap();
    let key1 = Key::from_ipv4(std::net::Ipv4Addr::LOCALHOST);
    let rate = FreqCtr {
        age: 5000,
        curr: 30,
        prev: 100,
    };
    let u1 = update(
        UpdateKind::Full,
        2,
        1,
        key1,
        vec![
            Value::Uint(0),
            Value::Uint(0),
            Value::Uint(3),
            Value::Freq(rate),
        ],
    );
    let u2 = update(
        UpdateKind::Incremental,
        2,
        2,
        Key::from_ipv4(std::net::Ipv4Addr::new(127, 0, 0, 2)),
        vec![
            Value::Uint(1),
            Value::Uint(0),
            Value::Uint(4),
            Value::Freq(FreqCtr::default()),
        ],
    );
    assert_eq!(got[1], Message::Update(u1.clone()));
    assert_eq!(got[2], Message::Update(u2.clone()));
    let again = encode_all(&[
        Message::TableDefinition(local_counters()),
        Message::Update(u1),
        Message::Update(u2),
    ]);
    assert_eq!(again, hex(&unhex(&input)));
}

#[test]
fn timed_updates_and_expire() {
    let mut enc = Encoder::new();
    let mut buf = BytesMut::new();
    enc.encode(&Message::TableDefinition(local_counters()), &mut buf)
        .unwrap();
    let values = vec![
        Value::Uint(1),
        Value::Uint(2),
        Value::Uint(3),
        Value::Freq(FreqCtr::default()),
    ];
    let key = Key::from_ipv4(std::net::Ipv4Addr::LOCALHOST);
    let t = update(
        UpdateKind::Timed,
        2,
        0x8000_0001,
        key.clone(),
        values.clone(),
    );
    enc.encode(&Message::Update(t.clone()), &mut buf).unwrap();
    assert_eq!(
        enc.update_kind(2, 0x8000_0002, true),
        UpdateKind::IncrementalTimed
    );
    assert_eq!(enc.update_kind(2, 0x8000_0005, false), UpdateKind::Full);
    let it = update(
        UpdateKind::IncrementalTimed,
        2,
        0x8000_0002,
        key.clone(),
        values.clone(),
    );
    enc.encode(&Message::Update(it.clone()), &mut buf).unwrap();
    let mut dec = Decoder::new();
    let _def = dec.decode(&mut buf).unwrap();
    assert_eq!(dec.decode(&mut buf).unwrap(), Some(Message::Update(t)));
    assert_eq!(dec.decode(&mut buf).unwrap(), Some(Message::Update(it)));
    assert_eq!(dec.last_update_id(2), Some(0x8000_0002));
    // Expire on a plain update, or none on a timed one: refused.
    let mut bad = update(UpdateKind::Full, 2, 9, key.clone(), values.clone());
    bad.expire_ms = Some(1);
    let err = enc.encode(&Message::Update(bad), &mut buf).unwrap_err();
    assert!(matches!(err, WireError::ExpireMismatch { .. }));
    // An incremental id that is not next: refused, nothing written.
    let skip = update(UpdateKind::Incremental, 2, 0x8000_0009, key, values);
    let before = buf.len();
    let err = enc.encode(&Message::Update(skip), &mut buf).unwrap_err();
    assert!(matches!(
        err,
        WireError::IncrementalIdMismatch {
            expected: Some(0x8000_0003),
            got: 0x8000_0009
        }
    ));
    assert_eq!(buf.len(), before);
}

/// A table with one data type, for value-level checks.
fn one_type_table(id: u32, spec: DataSpec, key_type: KeyType, key_len: u32) -> TableDefinition {
    TableDefinition {
        table_id: id,
        name: Bytes::from(format!("/t{id}")),
        key_type,
        key_len,
        expire_ms: 0,
        data: vec![spec],
    }
}

#[test]
fn dictionary_full_then_short() {
    let def = one_type_table(1, DataSpec::plain(DataType::ServerKey), KeyType::Ipv4, 4);
    let key = Key::from_ipv4(std::net::Ipv4Addr::LOCALHOST);
    let s1 = Value::Dict(DictValue::Name(Bytes::from_static(b"s1")));
    let msgs = [
        Message::TableDefinition(def),
        Message::Update(update(
            UpdateKind::Full,
            1,
            1,
            key.clone(),
            vec![s1.clone()],
        )),
        Message::Update(update(
            UpdateKind::Incremental,
            1,
            2,
            key.clone(),
            vec![s1.clone()],
        )),
        Message::Update(update(
            UpdateKind::Incremental,
            1,
            3,
            key,
            vec![Value::Dict(DictValue::Absent)],
        )),
    ];
    let bytes = encode_all(&msgs);
    // Full form `04 01 02 73 31`, then short form `01 01`, then absent `00`.
    assert!(
        bytes.ends_with(
            "0a 80 0d 00 00 00 01 7f 00 00 01 04 01 02 73 31 \
         0a 81 06 7f 00 00 01 01 01 \
         0a 81 05 7f 00 00 01 00"
        ),
        "{bytes}"
    );
    check(&bytes, &msgs);
}

#[test]
fn dictionary_errors() {
    let def = one_type_table(1, DataSpec::plain(DataType::ServerKey), KeyType::Sint, 4);
    let head = encode_all(&[Message::TableDefinition(def)]);
    let cases: [(&str, ErrCheck); 5] = [
        ("0a 81 06 00 00 00 01 01 02", |e| {
            matches!(e, WireError::UnknownDictId { id: 2 })
        }),
        ("0a 81 06 00 00 00 01 01 00", |e| {
            matches!(e, WireError::DictIdOutOfRange { id: 0 })
        }),
        ("0a 81 07 00 00 00 01 02 f0 00", |e| {
            matches!(e, WireError::DictIdOutOfRange { id: 240 })
        }),
        ("0a 81 0a 00 00 00 01 05 01 02 73 31 00", |e| {
            matches!(e, WireError::BadDictLength)
        }),
        ("0a 81 08 00 00 00 01 05 01 02 73", |e| {
            matches!(e, WireError::Truncated { .. })
        }),
    ];
    for (tail, pred) in cases {
        check_err(&format!("{head} {tail}"), pred);
    }
}

#[test]
fn key_encodings() {
    // integer: 4 raw BE bytes; binary: zero padded to key_len.
    let int_def = one_type_table(1, DataSpec::plain(DataType::Gpc0), KeyType::Sint, 4);
    let bytes = encode_all(&[
        Message::TableDefinition(int_def),
        Message::Update(update(
            UpdateKind::Full,
            1,
            1,
            Key::from_u32(3_000_000_000),
            vec![Value::Uint(1)],
        )),
    ]);
    assert!(
        bytes.ends_with("0a 80 09 00 00 00 01 b2 d0 5e 00 01"),
        "{bytes}"
    );

    let bin_def = one_type_table(1, DataSpec::plain(DataType::Gpc0), KeyType::Binary, 6);
    let short = update(
        UpdateKind::Full,
        1,
        1,
        Key(Bytes::from_static(b"AB")),
        vec![Value::Uint(1)],
    );
    let bytes = encode_all(&[
        Message::TableDefinition(bin_def.clone()),
        Message::Update(short.clone()),
    ]);
    assert!(bytes.ends_with("41 42 00 00 00 00 01"), "{bytes}");
    let got = decode_all(&mut Decoder::new(), &bytes).unwrap();
    let Message::Update(u) = &got[1] else {
        panic!("{got:?}")
    };
    assert_eq!(u.key.as_bytes(), b"AB\0\0\0\0");
    assert_eq!(u.key.display(KeyType::Binary), "414200000000");
    // Longer than key_len: refused.
    let mut long = short;
    long.key = Key(Bytes::from_static(b"ABCDEFG"));
    let mut enc = Encoder::new();
    let mut buf = BytesMut::new();
    enc.encode(&Message::TableDefinition(bin_def), &mut buf)
        .unwrap();
    let err = enc.encode(&Message::Update(long), &mut buf).unwrap_err();
    assert!(matches!(err, WireError::InvalidKey { len: 7, .. }));
}

#[test]
fn string_keys_are_cut_like_haproxy() {
    // `string len 3` is key_len 4: at most 3 bytes are kept, all 5 must be present.
    let def = one_type_table(1, DataSpec::plain(DataType::Gpc0), KeyType::String, 4);
    let head = encode_all(&[Message::TableDefinition(def)]);
    let got = decode_all(
        &mut Decoder::new(),
        &format!("{head} 0a 80 0b 00 00 00 01 05 \"abcde\" 07"),
    )
    .unwrap();
    let Message::Update(u) = &got[1] else {
        panic!("{got:?}")
    };
    assert_eq!(u.key.as_bytes(), b"abc");
    assert_eq!(u.values, vec![Value::Uint(7)]);
    check_err(&format!("{head} 0a 80 08 00 00 00 01 05 \"ab\" 07"), |e| {
        matches!(e, WireError::Truncated { field: "key" })
    });
    // The encoder refuses a key HAProxy would cut.
    let mut enc = Encoder::new();
    let mut buf = BytesMut::new();
    let def = one_type_table(1, DataSpec::plain(DataType::Gpc0), KeyType::String, 4);
    enc.encode(&Message::TableDefinition(def), &mut buf)
        .unwrap();
    let u = update(
        UpdateKind::Full,
        1,
        1,
        Key::from_str_bytes("abcd"),
        vec![Value::Uint(1)],
    );
    let err = enc.encode(&Message::Update(u), &mut buf).unwrap_err();
    assert!(matches!(err, WireError::InvalidKey { .. }));
}

#[test]
fn value_widths() {
    let def = |t: DataType| one_type_table(1, DataSpec::plain(t), KeyType::Sint, 4);
    // server_id -1 is sign-extended to 10 bytes, and read back as -1.
    let bytes = encode_all(&[
        Message::TableDefinition(def(DataType::ServerId)),
        Message::Update(update(
            UpdateKind::Full,
            1,
            1,
            Key::from_u32(1),
            vec![Value::Sint(-1)],
        )),
    ]);
    assert!(bytes.ends_with("ff f0 fe fe fe fe fe fe fe 0e"), "{bytes}");
    let got = decode_all(&mut Decoder::new(), &bytes).unwrap();
    assert!(matches!(&got[1], Message::Update(u) if u.values == vec![Value::Sint(-1)]));
    // A uint above u32::MAX is refused rather than truncated.
    let head = encode_all(&[Message::TableDefinition(def(DataType::Gpc0))]);
    let body = stkt(0x80, "00 00 00 01 00 00 00 01 f0 80 80 80 80 00");
    check_err(&format!("{head} {body}"), |e| {
        matches!(
            e,
            WireError::OutOfRange {
                field: "uint value",
                ..
            }
        )
    });
    // bytes_in_cnt carries 64 bits: 5 000 000 000.
    let head = encode_all(&[Message::TableDefinition(def(DataType::BytesInCnt))]);
    let got = decode_all(
        &mut Decoder::new(),
        &format!(
            "{head} {}",
            stkt(0x80, "00 00 00 01 00 00 00 01 f0 91 bd 80 94 00")
        ),
    )
    .unwrap();
    assert!(matches!(&got[1], Message::Update(u) if u.values == vec![Value::Ull(5_000_000_000)]));
    // A freq_ctr age is modular: a 64-bit age keeps its low 32 bits, never an error.
    let rate = DataSpec {
        data_type: DataType::ConnRate,
        period_ms: 1000,
        nbelem: 0,
    };
    let head = encode_all(&[Message::TableDefinition(one_type_table(
        1,
        rate,
        KeyType::Sint,
        4,
    ))]);
    let got = decode_all(
        &mut Decoder::new(),
        &format!(
            "{head} {}",
            stkt(
                0x80,
                "00 00 00 01 00 00 00 01 ff f0 fe fe fe fe fe fe fe 0e 1e 64"
            )
        ),
    )
    .unwrap();
    let expected = FreqCtr {
        age: u32::MAX,
        curr: 30,
        prev: 100,
    };
    assert!(matches!(&got[1], Message::Update(u) if u.values == vec![Value::Freq(expected)]));
}

#[test]
fn definition_errors() {
    let rate = bits_hex(&[DataType::HttpReqRate]);
    let gpc = bits_hex(&[DataType::Gpc]);
    let cases: Vec<(String, ErrCheck)> = vec![
        // Name length 0.
        (stkt(0x82, "01 00"), |e| {
            matches!(e, WireError::BadTableName)
        }),
        // The name ends the body.
        (stkt(0x82, r#"01 02 "/a""#), |e| {
            matches!(e, WireError::BadTableName)
        }),
        // The name runs past the body.
        (stkt(0x82, r#"01 09 "/a" 04"#), |e| {
            matches!(e, WireError::BadTableName)
        }),
        // Key type 3 is reserved, 8 unknown.
        (stkt(0x82, r#"01 02 "/a" 03 04 00"#), |e| {
            matches!(e, WireError::UnknownKeyType { id: 3 })
        }),
        (stkt(0x82, r#"01 02 "/a" 08 04 00"#), |e| {
            matches!(e, WireError::UnknownKeyType { id: 8 })
        }),
        // ip with length 8; string with length 0.
        (stkt(0x82, r#"01 02 "/a" 04 08 00"#), |e| {
            matches!(e, WireError::BadKeyLength { key_len: 8, .. })
        }),
        (stkt(0x82, r#"01 02 "/a" 06 00 00"#), |e| {
            matches!(e, WireError::BadKeyLength { key_len: 0, .. })
        }),
        // http_req_rate with an expire but no parameter group.
        (stkt(0x82, &format!(r#"01 02 "/a" 04 04 {rate} 00"#)), |e| {
            matches!(
                e,
                WireError::DefinitionParams {
                    data_type: DataType::HttpReqRate
                }
            )
        }),
        // The group names another type.
        (
            stkt(0x82, &format!(r#"01 02 "/a" 04 04 {rate} 00 09 01"#)),
            |e| {
                matches!(
                    e,
                    WireError::DefinitionParams {
                        data_type: DataType::HttpReqRate
                    }
                )
            },
        ),
        // The group lacks its period.
        (
            stkt(0x82, &format!(r#"01 02 "/a" 04 04 {rate} 00 0a"#)),
            |e| {
                matches!(
                    e,
                    WireError::DefinitionParams {
                        data_type: DataType::HttpReqRate
                    }
                )
            },
        ),
        // gpc without any tail: no element count.
        (stkt(0x82, &format!(r#"01 02 "/a" 04 04 {gpc}"#)), |e| {
            matches!(
                e,
                WireError::DefinitionParams {
                    data_type: DataType::Gpc
                }
            )
        }),
        // Truncated inside the key length varint.
        (stkt(0x82, r#"01 02 "/a" 04 f0"#), |e| {
            matches!(e, WireError::Truncated { .. })
        }),
        // Table id above u32.
        (stkt(0x82, r#"f0 80 80 80 80 00 01 "a" 04 04"#), |e| {
            matches!(
                e,
                WireError::OutOfRange {
                    field: "table id",
                    ..
                }
            )
        }),
    ];
    for (input, pred) in cases {
        check_err(&input, pred);
    }
}

#[test]
fn old_definitions_without_expire_and_unknown_bits() {
    // No expire: rates get period 0, expire 0.
    let rate = bits_hex(&[DataType::HttpReqRate]);
    let got = decode_all(
        &mut Decoder::new(),
        &stkt(0x82, &format!(r#"01 02 "/a" 04 04 {rate}"#)),
    )
    .unwrap();
    let Message::TableDefinition(def) = &got[0] else {
        panic!("{got:?}")
    };
    assert_eq!(def.expire_ms, 0);
    assert_eq!(def.data, vec![DataSpec::plain(DataType::HttpReqRate)]);
    // Bit 30 is unknown: ignored, its parameters and values skipped as trailing bytes.
    let mut bits = Vec::new();
    crate::varint::encode(DataType::Gpc0.bit() | (1 << 30), &mut bits);
    let mut dec = Decoder::new();
    let input = format!(
        "{} {}",
        stkt(
            0x82,
            &format!(r#"01 02 "/a" 02 04 {} 00 1e 05"#, hex(&bits))
        ),
        stkt(0x80, "00 00 00 01 00 00 00 09 07 55")
    );
    let got = decode_all(&mut dec, &input).unwrap();
    assert_eq!(dec.unknown_data_bits(1), Some(1 << 30));
    let Message::TableDefinition(def) = &got[0] else {
        panic!("{got:?}")
    };
    assert_eq!(def.data, vec![DataSpec::plain(DataType::Gpc0)]);
    let Message::Update(u) = &got[1] else {
        panic!("{got:?}")
    };
    assert_eq!(u.values, vec![Value::Uint(7)]);
    assert_eq!(u.key, Key::from_u32(9));
}

#[test]
fn session_state_errors() {
    check_err("0a 80 05 00 00 00 01 00", |e| {
        matches!(e, WireError::UpdateWithoutTable)
    });
    check_err("0a 81 01 00", |e| {
        matches!(e, WireError::UpdateWithoutTable)
    });
    check_err("0a 83 01 05", |e| {
        matches!(e, WireError::UnknownTableId { table_id: 5 })
    });
    check_err("ff 04", |e| {
        matches!(e, WireError::ReservedClass { msg_type: 4 })
    });
    check_err("0a 84 02 07 00", |e| {
        matches!(e, WireError::Truncated { field: "update id" })
    });
    // A known message truncated inside its body is an error, not "need more".
    check_err(&format!("{DEFINE_CAPTURE} 0a 80 04 00 00 00 01"), |e| {
        matches!(e, WireError::Truncated { field: "key" })
    });
    // Trailing bytes in a known body are fine.
    check(
        "0a 84 07 07 00 00 00 01 ee ee",
        &[Message::Ack {
            table_id: 7,
            update_id: 1,
        }],
    );
}

#[test]
fn redefinition_under_a_new_id() {
    let mut d2 = local_counters();
    d2.table_id = 9;
    let input = encode_all(&[Message::TableDefinition(local_counters())]);
    let input2 = encode_all(&[Message::TableDefinition(d2)]);
    let mut dec = Decoder::new();
    decode_all(&mut dec, &format!("{input} {input2}")).unwrap();
    assert!(dec.definition(2).is_none());
    assert_eq!(
        dec.definition(9).map(|d| d.name.clone()),
        Some(Bytes::from_static(b"/local_counters"))
    );
    assert_eq!(dec.selected_table(), Some(9));
    let mut buf = BytesMut::from(&unhex("0a 83 01 02")[..]);
    assert!(matches!(
        dec.decode(&mut buf),
        Err(WireError::UnknownTableId { table_id: 2 })
    ));
}

#[test]
fn too_many_tables() {
    let mut dec = Decoder::new().with_max_tables(2);
    let mut input = String::new();
    for id in 1..=3u32 {
        let def = one_type_table(id, DataSpec::plain(DataType::Gpc0), KeyType::Sint, 4);
        input.push_str(&encode_all(&[Message::TableDefinition(def)]));
        input.push(' ');
    }
    let mut buf = BytesMut::from(&unhex(&input)[..]);
    assert!(dec.decode(&mut buf).unwrap().is_some());
    assert!(dec.decode(&mut buf).unwrap().is_some());
    assert!(matches!(
        dec.decode(&mut buf),
        Err(WireError::TooManyTables { limit: 2 })
    ));
}

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
        Key(Bytes::from_static(b"k")),
        vec![Value::UintArray(vec![u32::MAX; 100])],
    );
    let err = enc.encode(&Message::Update(u), &mut buf).unwrap_err();
    assert!(
        matches!(err, WireError::Oversized { limit: 16384, .. }),
        "{err:?}"
    );
    assert_eq!(buf.len(), len_before);
}

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
            .prop_map(|v| Key(Bytes::from(v)))
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
