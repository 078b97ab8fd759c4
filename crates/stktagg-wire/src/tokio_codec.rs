//! The tokio-util adapter (feature `tokio-codec`): a thin [`PeerCodec`] over the
//! sans-IO [`Decoder`] and [`Encoder`], for use with `FramedRead`/`FramedWrite` or
//! `Framed` after the handshake.

use crate::decode::Decoder;
use crate::encode::Encoder;
use crate::error::WireError;
use crate::message::Message;
use bytes::BytesMut;

/// Both directions of one session's message stream.
#[derive(Debug, Clone, Default)]
pub struct PeerCodec {
    /// The receive state.
    pub decoder: Decoder,
    /// The transmit state.
    pub encoder: Encoder,
}

impl PeerCodec {
    /// A codec with HAProxy's default size limit in both directions.
    pub fn new() -> Self {
        PeerCodec::default()
    }

    /// A codec from existing halves (for custom limits).
    pub fn from_parts(decoder: Decoder, encoder: Encoder) -> Self {
        PeerCodec { decoder, encoder }
    }
}

impl tokio_util::codec::Decoder for PeerCodec {
    type Item = Message;
    type Error = WireError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Message>, WireError> {
        self.decoder.decode(src)
    }
}

impl tokio_util::codec::Encoder<&Message> for PeerCodec {
    type Error = WireError;

    fn encode(&mut self, item: &Message, dst: &mut BytesMut) -> Result<(), WireError> {
        self.encoder.encode(item, dst)
    }
}

impl tokio_util::codec::Encoder<Message> for PeerCodec {
    type Error = WireError;

    fn encode(&mut self, item: Message, dst: &mut BytesMut) -> Result<(), WireError> {
        self.encoder.encode(&item, dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_util::codec::{Decoder as _, Encoder as _};

    #[test]
    fn adapter_round_trips() {
        let mut codec = PeerCodec::new();
        let mut buf = BytesMut::new();
        codec.encode(Message::Heartbeat, &mut buf).unwrap();
        let ack = Message::Ack {
            table_id: 7,
            update_id: 1,
        };
        codec.encode(&ack, &mut buf).unwrap();
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(Message::Heartbeat));
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(ack));
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        // End of stream with a partial message is an error from tokio-util's default.
        buf.extend_from_slice(&[0x0a]);
        assert!(codec.decode_eof(&mut buf).is_err());
    }
}
