//! Framing: cutting messages out of the byte stream, without interpreting bodies.
//!
//! Every message is `class (1 byte), type (1 byte)`; when bit 7 of the type is set,
//! a varint body length and the body follow, in every class (`peer_recv_msg()`).
//! This layer is stateless and cheap: the hot path can look at a [`Frame`]'s class
//! and type (for example to count liveness, or to route updates by table) before
//! paying for [`crate::Decoder`]'s full parse.

use crate::error::WireError;
use crate::varint;
use bytes::{Bytes, BytesMut};

/// Class 0: control messages.
pub const CLASS_CONTROL: u8 = 0;
/// Class 1: error messages, sent just before closing.
pub const CLASS_ERROR: u8 = 1;
/// Class 10: stick-table messages.
pub const CLASS_STICK_TABLE: u8 = 10;
/// Class 255: reserved; receiving it is a protocol error.
pub const CLASS_RESERVED: u8 = 255;

/// Control type: resync request.
pub const CTRL_RESYNC_REQUEST: u8 = 0;
/// Control type: resync finished.
pub const CTRL_RESYNC_FINISHED: u8 = 1;
/// Control type: resync partial.
pub const CTRL_RESYNC_PARTIAL: u8 = 2;
/// Control type: resync confirm.
pub const CTRL_RESYNC_CONFIRM: u8 = 3;
/// Control type: heartbeat.
pub const CTRL_HEARTBEAT: u8 = 4;

/// Error type: protocol error.
pub const ERR_PROTOCOL: u8 = 0;
/// Error type: size limit.
pub const ERR_SIZE_LIMIT: u8 = 1;

/// Stick-table type: update with id.
pub const STKT_UPDATE: u8 = 0x80;
/// Stick-table type: incremental update.
pub const STKT_INCUPDATE: u8 = 0x81;
/// Stick-table type: table definition.
pub const STKT_DEFINE: u8 = 0x82;
/// Stick-table type: table switch.
pub const STKT_SWITCH: u8 = 0x83;
/// Stick-table type: update acknowledgement.
pub const STKT_ACK: u8 = 0x84;
/// Stick-table type: timed update with id.
pub const STKT_UPDATE_TIMED: u8 = 0x85;
/// Stick-table type: timed incremental update.
pub const STKT_INCUPDATE_TIMED: u8 = 0x86;

/// The type bit that says a body length follows.
pub const BODY_BIT: u8 = 0x80;

/// The longest body length varint HAProxy reads (`PEER_MSG_ENC_LENGTH_MAXLEN`).
pub const MAX_LENGTH_LEN: usize = 5;

/// The default message size limit, HAProxy's default `tune.bufsize`. It bounds the
/// whole message (header, length and body), because HAProxy must hold the whole
/// message in its buffer: a 16384-byte message passes, a 16385-byte one stalls.
pub const DEFAULT_MAX_MESSAGE_LEN: usize = 16384;

/// The smallest limit accepted: room for a header and the longest length varint.
pub const MIN_MAX_MESSAGE_LEN: usize = 2 + MAX_LENGTH_LEN;

/// Whether a (class, type) pair is a message HAProxy ignores, which then decodes as
/// [`crate::Message::Ignored`].
pub fn is_ignored(class: u8, msg_type: u8) -> bool {
    match class {
        CLASS_CONTROL => msg_type > CTRL_HEARTBEAT,
        CLASS_ERROR => msg_type > ERR_SIZE_LIMIT,
        CLASS_STICK_TABLE => !(STKT_UPDATE..=STKT_INCUPDATE_TIMED).contains(&msg_type),
        CLASS_RESERVED => false,
        _ => true,
    }
}

/// One message, cut out of the stream but not interpreted.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Frame {
    /// The class byte.
    pub class: u8,
    /// The type byte.
    pub msg_type: u8,
    /// The body (empty when bit 7 of the type is clear).
    pub body: Bytes,
}

impl Frame {
    /// Whether a receiver ignores this frame.
    pub fn is_ignored(&self) -> bool {
        is_ignored(self.class, self.msg_type)
    }
}

/// Cuts the next frame off the front of `buf`, consuming exactly its bytes.
///
/// Returns `Ok(None)` while the frame is incomplete. In that case, if the header is
/// known, `buf` gets enough capacity reserved for the whole frame, which is never
/// more than `max_message_len`, and it always holds fewer than `max_message_len`
/// bytes: a frame that cannot fit is refused before its body is buffered.
///
/// # Errors
/// [`WireError::ReservedClass`] for class 255, [`WireError::LengthTooLong`] if the
/// length does not end within 5 bytes, [`WireError::MessageTooLarge`] if the whole
/// frame would exceed `max_message_len` (answer `01 01`).
pub fn split_frame(buf: &mut BytesMut, max_message_len: usize) -> Result<Option<Frame>, WireError> {
    let limit = max_message_len.max(MIN_MAX_MESSAGE_LEN);
    let (class, msg_type) = match buf[..] {
        [c, t, ..] => (c, t),
        _ => return Ok(None),
    };
    if class == CLASS_RESERVED {
        return Err(WireError::ReservedClass { msg_type });
    }
    if msg_type & BODY_BIT == 0 {
        let _ = buf.split_to(2);
        return Ok(Some(Frame {
            class,
            msg_type,
            body: Bytes::new(),
        }));
    }
    let len_bytes = &buf[2..buf.len().min(2 + MAX_LENGTH_LEN)];
    let (body_len, len_len) = match varint::decode(len_bytes) {
        Ok(Some(v)) => v,
        Ok(None) if len_bytes.len() < MAX_LENGTH_LEN => return Ok(None),
        // Five bytes without an end, or a continuation on the 10th: HAProxy gives up
        // after 5 either way.
        Ok(None) | Err(_) => return Err(WireError::LengthTooLong),
    };
    let total = 2 + len_len as u64 + body_len;
    if total > limit as u64 {
        return Err(WireError::MessageTooLarge { len: total, limit });
    }
    // `total <= limit`, so this cast cannot truncate.
    let total = total as usize;
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    // Skip the header in place, then take the body: one shared handle per frame
    // rather than two (the split and the slice each cost an atomic increment).
    bytes::Buf::advance(buf, 2 + len_len);
    let body = buf.split_to(total - 2 - len_len).freeze();
    Ok(Some(Frame {
        class,
        msg_type,
        body,
    }))
}

/// Appends a frame: the header, then the body length as a varint and the body, when
/// bit 7 of the type is set (HAProxy reserves a 5-byte slot while building a body,
/// then writes the length's one encoding and moves the body after it). A body given for a type without bit 7 is not
/// written.
pub fn put_frame(dst: &mut BytesMut, class: u8, msg_type: u8, body: &[u8]) {
    dst.reserve(2 + varint::MAX_LEN + body.len());
    dst.extend_from_slice(&[class, msg_type]);
    if msg_type & BODY_BIT != 0 {
        varint::encode(body.len() as u64, dst);
        dst.extend_from_slice(body);
    }
}

/// The size of a frame [`put_frame`] writes.
pub fn frame_len(msg_type: u8, body_len: usize) -> usize {
    if msg_type & BODY_BIT != 0 {
        2 + varint::encoded_len(body_len as u64) + body_len
    } else {
        2
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::unhex;

    fn split(input: &str, limit: usize) -> (Result<Option<Frame>, WireError>, BytesMut) {
        let mut buf = BytesMut::from(&unhex(input)[..]);
        let r = split_frame(&mut buf, limit);
        (r, buf)
    }

    #[test]
    fn frames_without_body_take_two_bytes() {
        let (r, rest) = split("00 04 0a 05 ff", 16384);
        let f = r.unwrap().unwrap();
        assert_eq!((f.class, f.msg_type, f.body.len()), (0, 4, 0));
        assert_eq!(&rest[..], &unhex("0a 05 ff")[..]);
    }

    #[test]
    fn ack_capture_frame() {
        let (r, rest) = split("0a 84 05 07 00 00 00 01 00 04", 16384);
        let f = r.unwrap().unwrap();
        assert_eq!(f.msg_type, STKT_ACK);
        assert_eq!(&f.body[..], &unhex("07 00 00 00 01")[..]);
        assert_eq!(rest.len(), 2);
    }

    #[test]
    fn incomplete_frames_consume_nothing() {
        for input in [
            "",
            "0a",
            "0a 84",
            "0a 84 05",
            "0a 84 05 07 00 00 00",
            "0a 87 f0",
        ] {
            let (r, rest) = split(input, 16384);
            assert_eq!(r.unwrap(), None, "{input}");
            assert_eq!(rest.len(), unhex(input).len());
        }
    }

    #[test]
    fn length_must_end_within_five_bytes() {
        let (r, _) = split("0a 80 ff ff ff ff", 1 << 30);
        assert_eq!(r.unwrap(), None);
        let (r, _) = split("0a 80 ff ff ff ff ff", 1 << 30);
        assert!(matches!(r, Err(WireError::LengthTooLong)));
        // A 5-byte length is read in full; 33 818 864 bytes is then over any sane
        // limit, and refused before any body byte arrives.
        let (r, _) = split("0a 80 f0 80 80 80 00", 1 << 20);
        assert!(matches!(
            r,
            Err(WireError::MessageTooLarge {
                len: 33_818_871,
                ..
            })
        ));
    }

    #[test]
    fn oversized_lengths_fail_before_buffering() {
        // 16382 body bytes + 2 header + 3 length = 16387 > 16384.
        let mut hdr = BytesMut::new();
        put_frame(&mut hdr, 10, 0x80, &vec![0; 16382]);
        let (r, _) = split(&crate::testutil::hex(&hdr[..5]), 16384);
        assert!(matches!(
            r,
            Err(WireError::MessageTooLarge {
                len: 16387,
                limit: 16384
            })
        ));
        // Exactly the limit passes.
        let mut buf = BytesMut::new();
        put_frame(&mut buf, 10, 0x87, &vec![0; 16384 - 5]);
        assert_eq!(buf.len(), 16384);
        let f = split_frame(&mut buf, 16384).unwrap().unwrap();
        assert_eq!(f.body.len(), 16379);
    }

    #[test]
    fn class_255_is_an_error() {
        let (r, _) = split("ff 00", 16384);
        assert!(matches!(r, Err(WireError::ReservedClass { msg_type: 0 })));
    }

    #[test]
    fn ignored_kinds() {
        assert!(!is_ignored(0, 4));
        assert!(is_ignored(0, 9));
        assert!(is_ignored(0, 0x84));
        assert!(!is_ignored(1, 1));
        assert!(is_ignored(1, 2));
        assert!(is_ignored(5, 0));
        assert!(is_ignored(10, 0x87));
        assert!(is_ignored(10, 0x05));
        assert!(!is_ignored(10, 0x86));
        assert!(!is_ignored(255, 0));
    }

    #[test]
    fn put_frame_writes_minimal_lengths() {
        let mut buf = BytesMut::new();
        put_frame(&mut buf, 10, 0x84, &unhex("07 00 00 00 01"));
        assert_eq!(&buf[..], &unhex("0a 84 05 07 00 00 00 01")[..]);
        assert_eq!(frame_len(0x84, 5), 8);
        assert_eq!(frame_len(0x04, 5), 2);
        buf.clear();
        put_frame(&mut buf, 0, 4, b"ignored");
        assert_eq!(&buf[..], &[0, 4]);
    }
}
