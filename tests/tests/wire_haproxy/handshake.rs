//! HAProxy's answers to hellos, read with the codec's status decoding, and
//! HAProxy's own hello, read with the codec's acceptor-side parser.

use bytes::BytesMut;
use std::time::Duration;
use stktagg_tests::lab::{LOCAL_PEER, MOCK_PEER};
use stktagg_tests::mock_peer::handshake_raw;
use stktagg_tests::{HarnessError, MockPeer, PeerLab};
use stktagg_wire::Message;
use stktagg_wire::hello::{HelloOutcome, HelloParser, StatusCode, Version};

fn lab(label: &str) -> PeerLab {
    PeerLab::builder(label)
        .table("t type ip size 1k expire 30s store gpc0")
        .start()
        .unwrap()
}

/// Sends `hello` as is; returns HAProxy's status and checks that HAProxy closes
/// the connection after a non-200 status.
fn status_of(lab: &PeerLab, hello: &str) -> StatusCode {
    let (stream, line, code, rest) = handshake_raw(lab.hap_addr, hello.as_bytes()).unwrap();
    assert_eq!(line, code.code().to_string(), "status line for {hello:?}");
    if code != StatusCode::Succeeded {
        let mut peer = MockPeer::from_stream(
            stream,
            rest,
            stktagg_tests::Duties {
                heartbeat: false,
                answer_resync: false,
                confirm: false,
                ack: false,
            },
        )
        .unwrap();
        let tail = peer.read_until_closed(Duration::from_secs(6)).unwrap();
        assert!(tail.is_empty(), "bytes after status {code}: {tail:?}");
    }
    code
}

/// What the codec's acceptor-side parser would answer to the same hello.
fn codec_verdict(hello: &str) -> StatusCode {
    let mut parser = HelloParser::new(LOCAL_PEER);
    let peers = vec![LOCAL_PEER.to_owned(), MOCK_PEER.to_owned()];
    let mut buf = BytesMut::from(hello.as_bytes());
    match parser.feed(&mut buf, &peers).unwrap() {
        Some(HelloOutcome::Complete(_)) => StatusCode::Succeeded,
        Some(HelloOutcome::Reject(c)) => c,
        None => panic!("parser wants more than {hello:?}"),
    }
}

#[test]
fn bad_hellos_get_haproxys_status_codes() {
    let lab = lab("hello");
    let cases = [
        ("HAProxyZ 2.1\nhap1\nagg 1 1\n", StatusCode::ProtocolError),
        ("HAProxyS 2.1\nhap1\nagg\n", StatusCode::ProtocolError),
        ("HAProxyS 2.2\nhap1\nagg 1 1\n", StatusCode::BadVersion),
        ("HAProxyS 3.0\nhap1\nagg 1 1\n", StatusCode::BadVersion),
        ("HAProxyS 2.1.0\nhap1\nagg 1 1\n", StatusCode::BadVersion),
        (
            "HAProxyS 2.1\nnotme\nagg 1 1\n",
            StatusCode::LocalPeerMismatch,
        ),
        (
            "HAProxyS 2.1\nhap1\nstranger 1 1\n",
            StatusCode::UnknownPeer,
        ),
        // Last: a 200 opens a session for `agg`.
        ("HAProxyS 2.1\r\nhap1\r\nagg 7 1\r\n", StatusCode::Succeeded),
    ];
    for (hello, want) in cases {
        assert_eq!(
            status_of(&lab, hello),
            want,
            "haproxy's answer to {hello:?}"
        );
        assert_eq!(codec_verdict(hello), want, "codec's verdict on {hello:?}");
    }
}

#[test]
fn dialing_with_the_codecs_hello_gets_200_and_a_session() {
    let lab = lab("hello200");
    let mut peer = lab.dial().unwrap();
    // A fresh HAProxy asks its first peer for a resync; the mock answers FINISHED
    // and HAProxy confirms. Then the session idles with heartbeats.
    let got = peer
        .recv_until(Duration::from_secs(5), |m| *m == Message::ResyncConfirm)
        .unwrap();
    assert_eq!(got[0].message, Message::ResyncRequest);
    assert_eq!(got[0].frame.hex(), "00 00");
    assert!(
        peer.sent
            .iter()
            .any(|(m, b)| *m == Message::ResyncFinished && b[..] == [0, 1])
    );
    let hb = peer
        .recv_until(Duration::from_secs(5), |m| *m == Message::Heartbeat)
        .unwrap();
    assert_eq!(hb.last().unwrap().frame.hex(), "00 04");
}

#[test]
fn downgraded_hello_is_accepted() {
    let lab = lab("hello20");
    let peer = lab.dial_with(Version::V2_0, Default::default());
    assert!(peer.is_ok(), "{:?}", peer.err());
}

#[test]
fn haproxy_dials_us_and_its_hello_decodes() {
    let lab = PeerLab::builder("accept")
        .table("t type ip size 1k expire 30s store gpc0")
        .accept_mode()
        .start()
        .unwrap();
    // `accept` runs HAProxy's hello through the codec's HelloParser and checks that
    // HAProxy calls us `agg` and introduces itself as `hap1`.
    let mut peer = lab.accept(Duration::from_secs(5)).unwrap();
    lab.api()
        .set_table(&lab.table("t"), "10.0.0.9", &[("gpc0", "3")])
        .unwrap();
    let got = peer
        .recv_until(Duration::from_secs(5), |m| matches!(m, Message::Update(_)))
        .unwrap();
    let Message::Update(u) = &got.last().unwrap().message else {
        unreachable!()
    };
    assert_eq!(u.values, vec![stktagg_wire::Value::Uint(3)]);
}

#[test]
fn refused_dial_is_an_error_not_a_session() {
    let lab = lab("refused");
    let err = MockPeer::dial(lab.hap_addr, "wrongname", MOCK_PEER).unwrap_err();
    assert!(
        matches!(&err, HarnessError::Refused { line } if line == "503"),
        "{err}"
    );
}
