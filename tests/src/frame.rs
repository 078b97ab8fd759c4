//! Raw message framing, independent of the codec.
//!
//! The mock peer cuts HAProxy's byte stream into messages with this small splitter
//! before handing each message to the codec. Captures are therefore exactly the bytes
//! HAProxy sent for one message, whatever the codec thinks of them, and a codec that
//! consumes too few or too many bytes is caught.
//!
//! Framing (peers-protocol.md §3): `class`, `type`, and when bit 7 of the type is
//! set, a varint body length (at most 5 bytes) then the body.

use bytes::Bytes;
use std::fmt::Write as _;

/// One message as it was on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFrame {
    /// The whole message: class, type, length and body.
    pub raw: Bytes,
    /// Where the body starts in `raw`.
    body_at: usize,
}

impl RawFrame {
    /// The class byte.
    pub fn class(&self) -> u8 {
        self.raw[0]
    }

    /// The type byte.
    pub fn msg_type(&self) -> u8 {
        self.raw[1]
    }

    /// The body (empty for messages without a length).
    pub fn body(&self) -> &[u8] {
        &self.raw[self.body_at..]
    }

    /// The whole message as lowercase hex, bytes separated by spaces.
    pub fn hex(&self) -> String {
        to_hex(&self.raw)
    }
}

/// Formats bytes as lowercase hex separated by spaces.
pub fn to_hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 3);
    for (i, c) in b.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        let _ = write!(s, "{c:02x}");
    }
    s
}

/// Parses hex text: pairs of hex digits, whitespace ignored.
pub fn from_hex(s: &str) -> Option<Vec<u8>> {
    let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    digits
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).ok()?, 16).ok())
        .collect()
}

/// Why a frame cannot be cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// The length varint did not end within 5 bytes.
    LengthTooLong,
}

/// Returns the total length of the first message in `buf`, `Ok(None)` if more bytes
/// are needed.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, FrameError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    if buf[1] & 0x80 == 0 {
        return Ok(Some(2));
    }
    // HAProxy's varint: a lead byte < 240 is the value; otherwise continuation bytes
    // each add `b << shift` until one is < 128.
    let mut i = 2;
    let Some(&b0) = buf.get(i) else {
        return Ok(None);
    };
    let mut len = u64::from(b0);
    i += 1;
    if b0 >= 0xf0 {
        let mut shift = 4;
        loop {
            if i - 2 >= 5 {
                return Err(FrameError::LengthTooLong);
            }
            let Some(&b) = buf.get(i) else {
                return Ok(None);
            };
            len += u64::from(b) << shift;
            shift += 7;
            i += 1;
            if b < 0x80 {
                break;
            }
        }
    }
    let total = i as u64 + len;
    Ok(if (buf.len() as u64) >= total {
        Some(total as usize)
    } else {
        None
    })
}

/// Cuts the first message off `buf` if it is complete.
pub fn split_frame(buf: &mut bytes::BytesMut) -> Result<Option<RawFrame>, FrameError> {
    let Some(n) = frame_len(buf)? else {
        return Ok(None);
    };
    let raw = buf.split_to(n).freeze();
    let body_at = if raw[1] & 0x80 == 0 {
        2
    } else if raw[2] < 0xf0 {
        3
    } else {
        // Lead byte, then continuation bytes up to the first one below 128.
        3 + raw[3..].iter().position(|b| *b < 0x80).map_or(0, |p| p + 1)
    };
    Ok(Some(RawFrame { raw, body_at }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    #[test]
    fn cuts_control_and_table_messages() {
        let mut b = BytesMut::from(&[0x00, 0x04, 0x0a, 0x84, 0x05, 0x07, 0, 0, 0, 1, 0x0a][..]);
        let hb = split_frame(&mut b).unwrap().unwrap();
        assert_eq!((hb.class(), hb.msg_type(), hb.body()), (0, 4, &[][..]));
        let ack = split_frame(&mut b).unwrap().unwrap();
        assert_eq!(ack.hex(), "0a 84 05 07 00 00 00 01");
        assert_eq!(ack.body(), &[7, 0, 0, 0, 1]);
        assert_eq!(split_frame(&mut b).unwrap(), None);
        assert_eq!(b.len(), 1);
    }

    #[test]
    fn long_lengths() {
        // 240 = f0 00, so the body starts at offset 4.
        let mut v = vec![0x0a, 0x80, 0xf0, 0x00];
        v.extend(std::iter::repeat_n(7u8, 240));
        assert_eq!(frame_len(&v[..100]), Ok(None));
        let mut b = BytesMut::from(&v[..]);
        let f = split_frame(&mut b).unwrap().unwrap();
        assert_eq!(f.body().len(), 240);
        assert_eq!(
            frame_len(&[0x0a, 0x80, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
            Err(FrameError::LengthTooLong)
        );
    }

    #[test]
    fn hex_round_trip() {
        assert_eq!(from_hex("0a 84\n05"), Some(vec![0x0a, 0x84, 0x05]));
        assert_eq!(from_hex("0a8"), None);
        assert_eq!(to_hex(&[0, 255]), "00 ff");
    }
}
