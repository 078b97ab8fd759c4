//! Helpers shared by the unit tests: hex in and out, so that tests read like captures,
//! the capture of HAProxy's DEFINE, and data-driven `check` helpers.

/// Lowercase hex, bytes separated by one space (`"0a 84 05"`).
pub(crate) fn hex(b: &[u8]) -> String {
    b.iter()
        .map(|c| format!("{c:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Parses hex with optional whitespace; `"quoted"` runs are taken as ASCII bytes, so
/// captures can be written as `0f "/local_counters" 04`.
pub(crate) fn unhex(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('"') {
            let end = r.find('"').expect("closing quote");
            out.extend_from_slice(&r.as_bytes()[..end]);
            rest = &r[end + 1..];
        } else if rest.starts_with(char::is_whitespace) {
            rest = &rest[1..];
        } else {
            out.push(u8::from_str_radix(&rest[..2], 16).expect("hex byte"));
            rest = &rest[2..];
        }
    }
    out
}

use crate::data::{DataSpec, DataType, Value};
use crate::decode::Decoder;
use crate::error::WireError;
use crate::key::{Key, KeyType};
use crate::message::{Message, TableDefinition, Update, UpdateKind};
use bytes::{Bytes, BytesMut};

/// The DEFINE captured from HAProxy 2.6.12.
pub(crate) const DEFINE_CAPTURE: &str =
    r#"0a 82 1c 02 0f "/local_counters" 04 04 f4 55 f0 c4 0d 0a f0 e2 03"#;

pub(crate) fn local_counters() -> TableDefinition {
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
pub(crate) fn decode_all(
    decoder: &mut Decoder,
    input_hex: &str,
) -> Result<Vec<Message>, WireError> {
    let mut buf = BytesMut::from(&unhex(input_hex)[..]);
    let mut out = Vec::new();
    while let Some(m) = decoder.decode(&mut buf)? {
        out.push(m);
    }
    assert!(buf.is_empty(), "left over: {}", hex(&buf));
    Ok(out)
}

/// A predicate on an expected decoding error, for data-driven error tables.
pub(crate) type ErrCheck = fn(&WireError) -> bool;

/// A stick-table frame of `msg_type` around `body_hex`, with its length computed.
pub(crate) fn stkt(msg_type: u8, body_hex: &str) -> String {
    let mut buf = BytesMut::new();
    crate::frame::put_frame(&mut buf, 10, msg_type, &unhex(body_hex));
    hex(&buf)
}

/// The varint bitfield of these data types, as hex.
pub(crate) fn bits_hex(types: &[DataType]) -> String {
    let mut b = Vec::new();
    crate::varint::encode(types.iter().fold(0, |a, t| a | t.bit()), &mut b);
    hex(&b)
}

/// Data-driven check: decoding `input_hex` with a fresh decoder gives `expected`.
#[track_caller]
pub(crate) fn check(input_hex: &str, expected: &[Message]) {
    let got = decode_all(&mut Decoder::new(), input_hex).unwrap();
    assert_eq!(got, expected);
}

/// Data-driven check: decoding fails with an error matching `pred`.
#[track_caller]
pub(crate) fn check_err(input_hex: &str, pred: impl Fn(&WireError) -> bool) {
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

pub(crate) fn update(
    kind: UpdateKind,
    table_id: u32,
    update_id: u32,
    key: Key,
    values: Vec<Value>,
) -> Update {
    Update {
        kind,
        table_id,
        update_id,
        expire_ms: kind.is_timed().then_some(29_315),
        key,
        values,
    }
}

pub(crate) fn one_type_table(
    id: u32,
    spec: DataSpec,
    key_type: KeyType,
    key_len: u32,
) -> TableDefinition {
    TableDefinition {
        table_id: id,
        name: Bytes::from(format!("/t{id}")),
        key_type,
        key_len,
        expire_ms: 0,
        data: vec![spec],
    }
}
