//! A session engine fed any bytes by its peer, on both sides of the handshake:
//! as the acceptor (after a valid hello, or from the first byte) and as the dialer
//! (after a 200 status). Time moves as the input says. The engine reports events,
//! writes what it must and ends the session on bad input; it never panics.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use stktagg_session::{Event, NothingToSend, PeerSession, SessionConfig};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Some((&cut, stream)) = rest.split_first() else {
        return;
    };
    let mut config = SessionConfig::new("agg");
    config.decode_updates = mode & 4 == 0;
    let mut now = 1_000u64;
    let mut s = match mode % 3 {
        0 => {
            let mut s = PeerSession::accept(config, now);
            s.handle_input(now, b"HAProxyS 2.1\nagg\nhap1 42 1\n");
            s
        }
        1 => PeerSession::accept(config, now),
        _ => {
            let Ok(mut s) = PeerSession::dial(config, "hap1", now) else {
                return;
            };
            let mut out = BytesMut::new();
            s.poll_transmit(now, &mut NothingToSend, &mut out);
            s.handle_input(now, b"200\n");
            s
        }
    };
    let chunk = usize::from(cut % 64).max(1);
    let mut out = BytesMut::new();
    for piece in stream.chunks(chunk) {
        if s.is_closed() {
            break;
        }
        // The first byte of each read also moves the clock, up to 2.55 s.
        now += u64::from(piece[0]) * 10;
        s.handle_timeout(now);
        s.handle_input(now, piece);
        while let Some(event) = s.poll_event() {
            match event {
                Event::HelloReceived(_) => s.accept_hello(),
                Event::ResyncRequested => {}
                Event::Closed(_) => break,
                _ => {}
            }
        }
        out.clear();
        s.poll_transmit(now, &mut NothingToSend, &mut out);
        if let Some(t) = s.poll_timeout() {
            assert!(
                t >= now.saturating_sub(1),
                "a timeout in the past: {t} < {now}"
            );
        }
    }
});
