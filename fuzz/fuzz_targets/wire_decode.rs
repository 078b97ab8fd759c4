//! Any byte stream after the hello, cut into reads at points the input chooses:
//! the decoder returns messages, asks for more bytes or fails with an error; it
//! never panics, never consumes bytes it did not decode, and never holds more
//! than one message's worth of bytes while it waits for more.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use stktagg_wire::Decoder;

fuzz_target!(|data: &[u8]| {
    let Some((&limit, rest)) = data.split_first() else {
        return;
    };
    let Some((&cut, stream)) = rest.split_first() else {
        return;
    };
    // Small limits reach the "message too large" paths; 0 means HAProxy's default.
    let mut decoder = match limit {
        0 => Decoder::new(),
        n => Decoder::with_max_message_len(usize::from(n) * 8),
    };
    let chunk = usize::from(cut).max(1);
    let mut buf = BytesMut::new();
    for piece in stream.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            let before = buf.len();
            match decoder.decode(&mut buf) {
                Ok(Some(_)) => assert!(buf.len() < before, "a message consumed no byte"),
                Ok(None) => {
                    assert_eq!(buf.len(), before, "bytes consumed without a message");
                    assert!(buf.len() < decoder.max_message_len() + 16);
                    break;
                }
                // The session ends at the first error.
                Err(_) => return,
            }
        }
    }
});
