//! Stick-table key types and keys.

use bytes::Bytes;
use std::cmp::Ordering;
use std::fmt::{self, Write as _};
use std::hash::{Hash, Hasher};
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

/// The longest key held inline, without a heap block: every `ip`, `ipv6` and
/// `integer` key, and short strings and binaries.
pub const INLINE_KEY_LEN: usize = 23;

/// A key, held as its canonical bytes: 4 big-endian bytes for `integer` and `ip`,
/// 16 for `ipv6`, the string's bytes (without length or NUL) for `string`, and the
/// full zero-padded key-length bytes for `binary`.
///
/// A key of up to [`INLINE_KEY_LEN`] bytes is held inline (32 bytes in all, no
/// allocation, a clone is a copy); a longer one shares a [`Bytes`] buffer. The
/// representation never shows: equality, hashing and order are those of the bytes.
///
/// The key type lives in the table definition, not in the key: two keys of one table
/// compare equal exactly when HAProxy would treat them as one entry.
#[derive(Clone)]
pub struct Key(Repr);

#[derive(Clone)]
enum Repr {
    Inline { len: u8, buf: [u8; INLINE_KEY_LEN] },
    Shared(Bytes),
}

impl Key {
    /// A key of these bytes, copied.
    pub fn copy_from_slice(b: &[u8]) -> Key {
        match Key::inline(b) {
            Some(k) => k,
            None => Key(Repr::Shared(Bytes::copy_from_slice(b))),
        }
    }

    /// A key of these bytes: inline if short, else sharing `b`'s buffer.
    pub fn from_bytes(b: Bytes) -> Key {
        match Key::inline(&b) {
            Some(k) => k,
            None => Key(Repr::Shared(b)),
        }
    }

    fn inline(b: &[u8]) -> Option<Key> {
        let len = u8::try_from(b.len())
            .ok()
            .filter(|&l| usize::from(l) <= INLINE_KEY_LEN)?;
        let mut buf = [0u8; INLINE_KEY_LEN];
        buf[..b.len()].copy_from_slice(b);
        Some(Key(Repr::Inline { len, buf }))
    }

    /// An `integer` key.
    pub fn from_u32(v: u32) -> Key {
        Key::copy_from_slice(&v.to_be_bytes())
    }

    /// An `ip` key.
    pub fn from_ipv4(ip: Ipv4Addr) -> Key {
        Key::copy_from_slice(&ip.octets())
    }

    /// An `ipv6` key.
    pub fn from_ipv6(ip: Ipv6Addr) -> Key {
        Key::copy_from_slice(&ip.octets())
    }

    /// A `string` key.
    pub fn from_str_bytes(s: impl AsRef<[u8]>) -> Key {
        Key::copy_from_slice(s.as_ref())
    }

    /// The canonical bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            Repr::Inline { len, buf } => &buf[..usize::from(*len)],
            Repr::Shared(b) => b,
        }
    }

    /// The canonical bytes as a [`Bytes`] (a copy for an inline key).
    pub fn to_bytes(&self) -> Bytes {
        match &self.0 {
            Repr::Inline { .. } => Bytes::copy_from_slice(self.as_bytes()),
            Repr::Shared(b) => b.clone(),
        }
    }

    /// The first `n` bytes (all of them if the key is shorter).
    pub fn truncated(&self, n: usize) -> Key {
        match &self.0 {
            Repr::Shared(b) if b.len() > n => Key::from_bytes(b.slice(..n)),
            _ if self.as_bytes().len() > n => Key::copy_from_slice(&self.as_bytes()[..n]),
            _ => self.clone(),
        }
    }

    /// The same key, owning its bytes: a long key decoded from a frame shares the
    /// frame's buffer, which a key kept for long must not pin.
    pub fn detached(&self) -> Key {
        match &self.0 {
            Repr::Inline { .. } => self.clone(),
            Repr::Shared(b) => Key(Repr::Shared(Bytes::copy_from_slice(b))),
        }
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
        write!(f, "Key({})", hex(self.as_bytes()))
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Key {}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // The bytes alone, without the length prefix a slice adds: every map
        // lookup of the data path hashes a key, and one write is cheaper than two.
        // Equal keys still hash equally.
        state.write(self.as_bytes());
    }
}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Key) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Key {
    fn cmp(&self, other: &Key) -> Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}

impl From<Bytes> for Key {
    fn from(b: Bytes) -> Key {
        Key::from_bytes(b)
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
            Key::from_bytes(Bytes::from_static(b"AB\0\0\0\0")).display(KeyType::Binary),
            "414200000000"
        );
    }

    #[test]
    fn short_keys_are_inline_and_long_ones_share_their_buffer() {
        assert_eq!(std::mem::size_of::<Key>(), 32);
        let long = Bytes::from(vec![b'x'; 40]);
        let shared = Key::from_bytes(long.clone());
        assert_eq!(shared.to_bytes().as_ptr(), long.as_ptr());
        assert_ne!(shared.detached().to_bytes().as_ptr(), long.as_ptr());
        let short = Key::from_bytes(long.slice(..INLINE_KEY_LEN));
        assert!(matches!(short.0, Repr::Inline { .. }));
        assert!(matches!(
            Key::copy_from_slice(&[7; INLINE_KEY_LEN + 1]).0,
            Repr::Shared(_)
        ));
    }

    #[test]
    fn equality_hash_and_order_are_the_bytes_whatever_the_representation() {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        let bytes = vec![b'k'; 30];
        // The same 20 bytes, once cut from a shared buffer, once copied inline.
        let a = Key::from_bytes(Bytes::from(bytes.clone())).truncated(20);
        let b = Key(Repr::Shared(Bytes::copy_from_slice(&bytes[..20])));
        assert!(matches!(a.0, Repr::Inline { .. }));
        assert_eq!(a, b);
        let h = BuildHasherDefault::<DefaultHasher>::default();
        assert_eq!(h.hash_one(&a), h.hash_one(&b));
        assert!(Key::from_str_bytes("ab") < Key::from_bytes(Bytes::from(vec![b'b'; 40])));
        assert!(Key::from_str_bytes("") < Key::from_str_bytes("a"));
        assert_eq!(a.truncated(40), a);
        assert_eq!(a.truncated(3).as_bytes(), b"kkk");
    }
}
