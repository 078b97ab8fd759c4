//! Worked examples of the codec, from captures and the protocol notes: each message
//! decoded from its bytes (data-driven: `check(input_hex, expected)`,
//! `check_err(input_hex, pred)`) and encoded back to them.

use crate::data::{DataSpec, DataType, DictValue, FreqCtr, Value};
use crate::decode::Decoder;
use crate::encode::Encoder;
use crate::error::WireError;
use crate::key::{Key, KeyType};
use crate::message::{Message, TableDefinition, UpdateKind};
use crate::testutil::*;
use bytes::{Bytes, BytesMut};
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
        Key::from_bytes(Bytes::from_static(b"AB")),
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
    long.key = Key::from_bytes(Bytes::from_static(b"ABCDEFG"));
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

/// Encodes messages with a fresh encoder and returns the hex.
fn encode_all(msgs: &[Message]) -> String {
    let mut enc = Encoder::new();
    let mut buf = BytesMut::new();
    for m in msgs {
        enc.encode(m, &mut buf).unwrap();
    }
    hex(&buf)
}
