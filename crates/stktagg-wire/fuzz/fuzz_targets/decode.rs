//! Feeds arbitrary bytes to the message decoder (in chunks, as a socket would) and to
//! the handshake parsers. Checks that nothing panics, that errors are the peer's
//! fault, and that the decoder never holds a full limit's worth of bytes while it
//! waits for more.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use stktagg_wire::hello::{HelloParser, LineDecoder, decode_status};
use stktagg_wire::{Decoder, Encoder};

fuzz_target!(|data: &[u8]| {
    let Some((&control, input)) = data.split_first() else {
        return;
    };
    // The control byte picks a small limit (so that limits are hit) and a chunk size.
    let limit = 7 + usize::from(control & 0x3f) * 64;
    let chunk = 1 + usize::from(control >> 6) * 37;

    let mut dec = Decoder::with_max_message_len(limit);
    let mut enc = Encoder::new();
    let mut buf = BytesMut::new();
    let mut out = BytesMut::new();
    'feed: for piece in input.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(msg)) => {
                    // Re-encoding may be refused (our encoder is stricter than the
                    // peer's), but must not panic.
                    let _ = enc.encode(&msg, &mut out);
                    out.clear();
                }
                Ok(None) => {
                    assert!(buf.len() < limit);
                    break;
                }
                Err(e) => {
                    assert!(e.is_peer_fault());
                    break 'feed;
                }
            }
        }
    }

    let mut hello = BytesMut::from(input);
    let mut parser = HelloParser::with_line_decoder("agg", LineDecoder::new(limit));
    let _ = parser.feed(&mut hello, &|name: &str| name == "hap1");
    let mut status = BytesMut::from(input);
    let _ = decode_status(&LineDecoder::new(limit), &mut status);
});
