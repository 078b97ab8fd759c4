//! Stick-table key types and keys.

use bytes::Bytes;
use std::fmt::{self, Write as _};
use std::net::{Ipv4Addr, Ipv6Addr};

/// A key type as numbered on the wire (`SMP_T_*` in HAProxy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum KeyType {
    /// `integer`: 4 raw big-endian bytes on the wire.
    Sint = 2,
    /// `ip`: an IPv4 address, 4 bytes in network order.
    Ipv4 = 4,
    /// `ipv6`: 16 bytes in network order.
    Ipv6 = 5,
    /// `string [len L]`: a varint length then that many bytes.
    String = 6,
    /// `binary [len L]`: exactly key-length bytes, zero padded.
    Binary = 7,
}

impl KeyType {
    /// The key type with this wire id. 0, 1 and 3 are reserved and ids from 8 on are
    /// unknown: both give `None`.
    pub fn from_id(id: u64) -> Option<KeyType> {
        match id {
            2 => Some(KeyType::Sint),
            4 => Some(KeyType::Ipv4),
            5 => Some(KeyType::Ipv6),
            6 => Some(KeyType::String),
            7 => Some(KeyType::Binary),
            _ => None,
        }
    }

    /// The wire id.
    pub fn id(self) -> u8 {
        self as u8
    }

    /// The name HAProxy prints in `show table` (`type: <name>`).
    pub fn name(self) -> &'static str {
        match self {
            KeyType::Sint => "integer",
            KeyType::Ipv4 => "ip",
            KeyType::Ipv6 => "ipv6",
            KeyType::String => "string",
            KeyType::Binary => "binary",
        }
    }

    /// The only key length HAProxy accepts for fixed-size types.
    pub fn fixed_len(self) -> Option<u32> {
        match self {
            KeyType::Sint | KeyType::Ipv4 => Some(4),
            KeyType::Ipv6 => Some(16),
            KeyType::String | KeyType::Binary => None,
        }
    }
}

/// A key, held as its canonical bytes: 4 big-endian bytes for `integer` and `ip`,
/// 16 for `ipv6`, the string's bytes (without length or NUL) for `string`, and the
/// full zero-padded key-length bytes for `binary`.
///
/// The key type lives in the table definition, not in the key: two keys of one table
/// compare equal exactly when HAProxy would treat them as one entry.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(pub Bytes);

impl Key {
    /// An `integer` key.
    pub fn from_u32(v: u32) -> Key {
        Key(Bytes::copy_from_slice(&v.to_be_bytes()))
    }

    /// An `ip` key.
    pub fn from_ipv4(ip: Ipv4Addr) -> Key {
        Key(Bytes::copy_from_slice(&ip.octets()))
    }

    /// An `ipv6` key.
    pub fn from_ipv6(ip: Ipv6Addr) -> Key {
        Key(Bytes::copy_from_slice(&ip.octets()))
    }

    /// A `string` key.
    pub fn from_str_bytes(s: impl AsRef<[u8]>) -> Key {
        Key(Bytes::copy_from_slice(s.as_ref()))
    }

    /// The canonical bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Formats the key as HAProxy's `show table` prints it for a table of `key_type`:
    /// dotted/colon notation for addresses, unsigned decimal for integers, the text for
    /// strings (non-printable bytes escaped) and lowercase hex for binary keys.
    pub fn display(&self, key_type: KeyType) -> String {
        let b = self.as_bytes();
        match key_type {
            KeyType::Sint if b.len() == 4 => {
                u32::from_be_bytes([b[0], b[1], b[2], b[3]]).to_string()
            }
            KeyType::Ipv4 if b.len() == 4 => Ipv4Addr::new(b[0], b[1], b[2], b[3]).to_string(),
            KeyType::Ipv6 if b.len() == 16 => {
                let mut o = [0u8; 16];
                o.copy_from_slice(b);
                Ipv6Addr::from(o).to_string()
            }
            KeyType::String => {
                let mut s = String::with_capacity(b.len());
                for &c in b {
                    if (0x20..0x7f).contains(&c) && c != b'\\' {
                        s.push(c as char);
                    } else {
                        let _ = write!(s, "\\x{c:02x}");
                    }
                }
                s
            }
            _ => hex(b),
        }
    }
}

fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 2);
    for c in b {
        let _ = write!(s, "{c:02x}");
    }
    s
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({})", hex(&self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_matches_haproxy() {
        assert_eq!(
            Key::from_u32(3_000_000_000).display(KeyType::Sint),
            "3000000000"
        );
        assert_eq!(
            Key::from_ipv4(Ipv4Addr::new(127, 0, 0, 1)).display(KeyType::Ipv4),
            "127.0.0.1"
        );
        assert_eq!(
            Key::from_ipv6(Ipv6Addr::LOCALHOST).display(KeyType::Ipv6),
            "::1"
        );
        assert_eq!(Key::from_str_bytes("abc").display(KeyType::String), "abc");
        assert_eq!(
            Key(Bytes::from_static(b"AB\0\0\0\0")).display(KeyType::Binary),
            "414200000000"
        );
    }
}
