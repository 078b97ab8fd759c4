//! HAProxy's variable-length integer (`intencode()` / `intdecode()` in `peers.c`).
//!
//! This is not LEB128. A value below 240 is one byte. Otherwise the first byte is
//! `0xF0 | (v & 0x0F)`, then `v = (v - 240) >> 4`, and each further byte is
//! `0x80 | (v & 0x7F)` with `v = (v - 128) >> 7` while `v >= 128`, ending with a byte
//! below 128. The decoder adds every byte *in full* at its shift, which is why the
//! encoder subtracts 240 and 128: each length covers its own contiguous range of
//! values, so every value has exactly one encoding and there is no overlong form.
//!
//! HAProxy's decoder has no length bound and wraps on overflow; this one rejects an
//! 11th byte and any sum above `u64::MAX`.

use crate::error::WireError;
use bytes::BufMut;

/// The longest encoding (`u64::MAX` takes 10 bytes).
pub const MAX_LEN: usize = 10;

/// A value carried as a varint. Any `u64` is valid; the newtype exists so that
/// encoding, decoding and sizing travel together, as in quinn's `VarInt`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct VarInt(pub u64);

impl VarInt {
    /// The encoded size in bytes.
    pub fn size(self) -> usize {
        encoded_len(self.0)
    }

    /// Appends the encoding to `buf`.
    pub fn encode(self, buf: &mut impl BufMut) {
        encode(self.0, buf);
    }

    /// Decodes one varint from the start of `buf`: `Ok(None)` if `buf` ends first,
    /// else the value and the number of bytes it took.
    pub fn decode(buf: &[u8]) -> Result<Option<(VarInt, usize)>, WireError> {
        Ok(decode(buf)?.map(|(v, n)| (VarInt(v), n)))
    }
}

impl From<u32> for VarInt {
    fn from(v: u32) -> Self {
        VarInt(u64::from(v))
    }
}

impl From<u64> for VarInt {
    fn from(v: u64) -> Self {
        VarInt(v)
    }
}

/// Appends the encoding of `v` to `buf`.
pub fn encode(v: u64, buf: &mut impl BufMut) {
    if v < 0xF0 {
        buf.put_u8(v as u8);
        return;
    }
    buf.put_u8(0xF0 | (v & 0x0F) as u8);
    let mut v = (v - 0xF0) >> 4;
    while v >= 0x80 {
        buf.put_u8(0x80 | (v & 0x7F) as u8);
        v = (v - 0x80) >> 7;
    }
    buf.put_u8(v as u8);
}

/// The number of bytes [`encode`] writes for `v` (1 to 10).
pub fn encoded_len(v: u64) -> usize {
    if v < 0xF0 {
        return 1;
    }
    let mut n = 2;
    let mut v = (v - 0xF0) >> 4;
    while v >= 0x80 {
        n += 1;
        v = (v - 0x80) >> 7;
    }
    n
}

/// Decodes one varint from the start of `buf`.
///
/// Returns `Ok(None)` when `buf` ends before the number does (the caller decides
/// whether that means "wait for more bytes" or "truncated message"), and otherwise
/// the value with the number of bytes consumed.
///
/// # Errors
/// [`WireError::VarintTooLong`] if the number would need an 11th byte, and
/// [`WireError::VarintOverflow`] if its value exceeds `u64::MAX`.
pub fn decode(buf: &[u8]) -> Result<Option<(u64, usize)>, WireError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    if first < 0xF0 {
        return Ok(Some((u64::from(first), 1)));
    }
    // Sum in u128: the largest shift used is 60, so a byte times 2^60 plus the
    // running total cannot overflow u128 and the u64 check is exact.
    let mut value = u128::from(first);
    let mut shift = 4u32;
    for (i, &b) in buf.iter().enumerate().skip(1) {
        if i == MAX_LEN - 1 && b >= 0x80 {
            // A continuation after the 10th byte would shift by 67.
            return Err(WireError::VarintTooLong);
        }
        value += u128::from(b) << shift;
        if value > u128::from(u64::MAX) {
            return Err(WireError::VarintOverflow);
        }
        if b < 0x80 {
            return Ok(Some((value as u64, i + 1)));
        }
        shift += 7;
    }
    Ok(None)
}

/// Decodes a varint for a field that is 32 bits wide on the receiver.
///
/// # Errors
/// As [`decode`], plus [`WireError::OutOfRange`] naming `field` if the value does not
/// fit in a `u32`.
pub fn decode_u32(buf: &[u8], field: &'static str) -> Result<Option<(u32, usize)>, WireError> {
    match decode(buf)? {
        None => Ok(None),
        Some((v, n)) => Ok(Some((to_u32(v, field)?, n))),
    }
}

/// Range-checks a decoded value against a 32-bit field.
///
/// # Errors
/// [`WireError::OutOfRange`] if `v` does not fit in a `u32`.
pub fn to_u32(v: u64, field: &'static str) -> Result<u32, WireError> {
    u32::try_from(v).map_err(|_| WireError::OutOfRange { field, value: v })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{hex, unhex};
    use proptest::prelude::*;

    /// Data-driven check: `value` encodes to `expected_hex` and decodes back from it.
    #[track_caller]
    fn check(value: u64, expected_hex: &str) {
        let mut buf = Vec::new();
        encode(value, &mut buf);
        assert_eq!(hex(&buf), expected_hex, "encoding of {value}");
        assert_eq!(encoded_len(value), buf.len(), "length of {value}");
        assert_eq!(decode(&buf).unwrap(), Some((value, buf.len())));
        // Every strict prefix is incomplete, not an error.
        for cut in 0..buf.len() {
            assert_eq!(
                decode(&buf[..cut]).unwrap(),
                None,
                "prefix {cut} of {value}"
            );
        }
    }

    #[test]
    fn worked_examples() {
        check(0, "00");
        check(239, "ef");
        check(240, "f0 00");
        check(256, "f0 01");
        check(2_287, "ff 7f");
        check(2_288, "f0 80 00");
        check(264_431, "ff ff 7f");
        check(264_432, "f0 80 80 00");
        check(u64::from(u32::MAX), "ff f0 fe fe 7e");
        check(4_328_786_160, "f0 80 80 80 80 00");
        check(u64::MAX, "ff f0 fe fe fe fe fe fe fe 0e");
        check(0x1234, "f4 94 01");
        check(30_000, "f0 c4 0d");
        check(5_000_000_000, "f0 91 bd 80 94 00");
        // The sign-extended i32 -1 is u64::MAX.
        check(i64::from(-1i32) as u64, "ff f0 fe fe fe fe fe fe fe 0e");
    }

    #[test]
    fn length_table_boundaries() {
        let bounds: [(u64, usize); 10] = [
            (0, 1),
            (240, 2),
            (2_288, 3),
            (264_432, 4),
            (33_818_864, 5),
            (4_328_786_160, 6),
            (554_084_600_048, 7),
            (70_922_828_777_712, 8),
            (9_078_122_083_518_704, 9),
            (1_161_999_626_690_365_680, 10),
        ];
        for (min, len) in bounds {
            assert_eq!(encoded_len(min), len, "{min}");
            if min > 0 {
                assert_eq!(encoded_len(min - 1), len - 1, "{}", min - 1);
            }
        }
    }

    #[test]
    fn rejects_eleventh_byte_and_overflow() {
        // Ten continuation bytes: the 10th byte asks for an 11th.
        let long = unhex("ff ff ff ff ff ff ff ff ff ff 00");
        assert!(matches!(decode(&long), Err(WireError::VarintTooLong)));
        // Even without the 11th byte present we know it is too long.
        assert!(matches!(decode(&long[..10]), Err(WireError::VarintTooLong)));
        // u64::MAX + 1: the last byte one higher.
        let over = unhex("f0 f0 fe fe fe fe fe fe fe 0f");
        assert!(matches!(decode(&over), Err(WireError::VarintOverflow)));
        let over = unhex("ff f0 fe fe fe fe fe fe fe 7f");
        assert!(matches!(decode(&over), Err(WireError::VarintOverflow)));
    }

    #[test]
    fn u32_fields_are_range_checked() {
        let mut buf = Vec::new();
        encode(u64::from(u32::MAX), &mut buf);
        assert_eq!(decode_u32(&buf, "x").unwrap(), Some((u32::MAX, 5)));
        buf.clear();
        encode(u64::from(u32::MAX) + 1, &mut buf);
        let err = decode_u32(&buf, "table id").unwrap_err();
        assert!(matches!(
            err,
            WireError::OutOfRange {
                field: "table id",
                value: 4_294_967_296
            }
        ));
        assert_eq!(decode_u32(&buf[..2], "x").unwrap(), None);
    }

    #[test]
    fn newtype_matches_functions() {
        let v = VarInt::from(30_000u32);
        assert_eq!(v.size(), 3);
        let mut buf = Vec::new();
        v.encode(&mut buf);
        assert_eq!(VarInt::decode(&buf).unwrap(), Some((v, 3)));
        assert_eq!(VarInt::from(7u64), VarInt(7));
    }

    proptest! {
        #[test]
        fn round_trip_all_u64(v in any::<u64>()) {
            let mut buf = Vec::new();
            encode(v, &mut buf);
            prop_assert_eq!(buf.len(), encoded_len(v));
            prop_assert!(buf.len() <= MAX_LEN);
            prop_assert_eq!(decode(&buf).unwrap(), Some((v, buf.len())));
            // Trailing bytes are not consumed.
            buf.push(0xAA);
            prop_assert_eq!(decode(&buf).unwrap(), Some((v, buf.len() - 1)));
        }

        #[test]
        fn encodings_are_unique(bytes in proptest::collection::vec(any::<u8>(), 0..12)) {
            // Whatever decodes, re-encodes to exactly the bytes it came from.
            if let Ok(Some((v, n))) = decode(&bytes) {
                let mut buf = Vec::new();
                encode(v, &mut buf);
                prop_assert_eq!(&buf[..], &bytes[..n]);
            }
        }
    }
}
