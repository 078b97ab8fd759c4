//! Control and error messages in both directions: RESYNC PARTIAL sent by HAProxy
//! (it teaches us while its own resync is not over), our PARTIAL, our heartbeats,
//! and our error-class messages, each checked against HAProxy's own state in
//! `show peers`.

use crate::capture::record_or_compare;
use crate::encode::{WAIT, def, expect_ack, settled, update};
use crate::peers_dump::{self, show_peers};
use std::time::Duration;
use stktagg_tests::lab::MOCK_PEER;
use stktagg_tests::{Duties, MockPeer, PeerLab, Received, eventually};
use stktagg_wire::hello::Version;
use stktagg_wire::{DataSpec, DataType, Key, KeyType, Message, UpdateKind, Value};

fn lab(label: &str) -> PeerLab {
    PeerLab::builder(label)
        .table("t type ip size 1k expire 30s store gpc0")
        .start()
        .unwrap()
}

/// Dials a freshly started haproxy without answering its RESYNC REQUEST, and waits
/// for that request: HAProxy is then learning from us, so its own resync state is
/// not FINISHED. The session must start within HAProxy's 5 s resync timer, which it
/// does since the lab was just started.
fn learning_session(lab: &PeerLab) -> MockPeer {
    let duties = Duties {
        answer_resync: false,
        ..Duties::default()
    };
    let mut p = lab.dial_with(Version::V2_1, duties).unwrap();
    let got = p
        .recv_until(WAIT, |m| *m == Message::ResyncRequest)
        .unwrap();
    assert_eq!(got.last().unwrap().frame.hex(), "00 00");
    // HAProxy's state says so: the section is still learning from a remote peer
    // (LOCAL done, REMOTE not) and we are the assigned teacher.
    let d = show_peers(lab);
    let r = d.resync();
    assert!(r.local_done && !r.remote_done && r.assigned, "{r:?}");
    let agg = d.peer(MOCK_PEER);
    assert!(agg.learn_assigned(), "{agg:?}");
    p
}

/// Waits until `show peers` satisfies `ok`. From 3.0 on, the applet that reads our
/// FINISHED or PARTIAL only marks the lesson finished and wakes the section's sync
/// task, which updates the section's state a little later (2.6 updated it at
/// once), so the state is polled rather than read once.
fn wait_for_state(lab: &PeerLab, what: &str, ok: impl Fn(&peers_dump::PeersDump) -> bool) {
    eventually(what, WAIT, || {
        let d = show_peers(lab);
        if ok(&d) {
            Ok(())
        } else {
            Err(format!(
                "{:?}; {MOCK_PEER}: {:?}",
                d.resync(),
                d.peer(MOCK_PEER)
            ))
        }
    })
    .unwrap();
}

fn is_end_of_lesson(m: &Message) -> bool {
    matches!(m, Message::ResyncFinished | Message::ResyncPartial)
}

#[test]
fn haproxy_answers_partial_while_it_is_learning_from_us() {
    let lab = lab("partial");
    lab.api()
        .set_table("lab/t", "10.0.0.1", &[("gpc0", "5")])
        .unwrap();
    let mut p = learning_session(&lab);

    // Our RESYNC REQUEST while HAProxy waits for our lesson: it teaches what it has
    // (a DEFINE, since nothing selected /t on this session yet, and one timed
    // update), then says PARTIAL because its own resync is not FINISHED.
    p.send(&Message::ResyncRequest).unwrap();
    let lesson = p.recv_until(WAIT, is_end_of_lesson).unwrap();
    let end = lesson.last().unwrap();
    assert_eq!(end.message, Message::ResyncPartial, "{lesson:?}");
    assert_eq!(end.frame.hex(), "00 02");
    let taught: Vec<&Message> = lesson
        .iter()
        .map(|r| &r.message)
        .filter(|m| !matches!(m, Message::Heartbeat))
        .collect();
    let [
        Message::TableDefinition(d),
        Message::Update(u),
        Message::ResyncPartial,
    ] = taught[..]
    else {
        panic!("lesson: {taught:?}")
    };
    assert_eq!(
        (&d.name[..], d.key_type, d.key_len),
        (&b"/t"[..], KeyType::Ipv4, 4)
    );
    assert_eq!((u.kind, u.update_id), (UpdateKind::Timed, 1));
    assert!(
        u.expire_ms.is_some_and(|e| e > 20_000 && e <= 30_000),
        "{u:?}"
    );
    assert_eq!(u.key, Key::from_ipv4("10.0.0.1".parse().unwrap()));
    assert_eq!(u.values, vec![Value::Uint(5)]);
    // The mock's duty CONFIRMed the PARTIAL.
    assert_eq!(p.sent.last().unwrap().0, Message::ResyncConfirm);

    // Now we answer HAProxy's own request: FINISHED, which it CONFIRMs.
    p.send(&Message::ResyncFinished).unwrap();
    let after = p
        .recv_until(WAIT, |m| *m == Message::ResyncConfirm)
        .unwrap();
    let confirm = after.last().unwrap();
    assert_eq!(confirm.frame.hex(), "00 03");
    wait_for_state(&lab, "haproxy's resync FINISHED by our lesson", |d| {
        let r = d.resync();
        r.local_done && r.remote_done && r.remote_finished && !r.assigned
    });

    // Our CONFIRM ended its teach and our FINISHED its learning: live pushes resume
    // (from the teach origin, so 10.0.0.1 comes again, untimed). HAProxy pushes
    // before it sends its pending CONFIRMs, so the update may precede the 00 03.
    let mut live: Vec<Message> = after.iter().map(|r| r.message.clone()).collect();
    if !live.iter().any(|m| matches!(m, Message::Update(_))) {
        let more = p
            .recv_until(WAIT, |m| matches!(m, Message::Update(_)))
            .unwrap();
        live.extend(more.into_iter().map(|r| r.message));
    }
    let u = live
        .iter()
        .find_map(|m| match m {
            Message::Update(u) => Some(u),
            _ => None,
        })
        .unwrap();
    assert_eq!((u.kind, u.expire_ms), (UpdateKind::Full, None), "{u:?}");
    assert_eq!(u.key, Key::from_ipv4("10.0.0.1".parse().unwrap()));
    assert_eq!(u.values, vec![Value::Uint(5)]);

    // Up to date now, HAProxy ends the next lesson with FINISHED.
    p.send(&Message::ResyncRequest).unwrap();
    let again = p.recv_until(WAIT, is_end_of_lesson).unwrap();
    assert_eq!(again.last().unwrap().message, Message::ResyncFinished);

    // The capture: HAProxy's request, the lesson, PARTIAL, and its CONFIRM of our
    // FINISHED. Heartbeats are left out (their timing varies), and so is the live
    // re-push, which HAProxy may send before or after that CONFIRM.
    let mut frames: Vec<&Received> = p
        .log
        .iter()
        .take_while(|r| r.message != Message::ResyncPartial)
        .filter(|r| r.message != Message::Heartbeat)
        .collect();
    frames.push(end);
    frames.push(confirm);
    let frames: Vec<_> = frames.iter().map(|r| &r.frame).collect();
    record_or_compare(
        "partial",
        "HAProxy 2.6.12 answering our RESYNC REQUEST with PARTIAL while it is learning from us:\n\
         table t type ip size 1k expire 30s store gpc0, entry 10.0.0.1 gpc0=5 (update id 1),\n\
         freshly started, so on our session it first sends RESYNC REQUEST (00 00), which we leave\n\
         unanswered. We send 00 00: the lesson is the DEFINE of /t (id 1, expire 30000), one 0x85\n\
         (id 1, remaining ms, 10.0.0.1, gpc0 5), then RESYNC PARTIAL (00 02), as its own resync is\n\
         not finished. We CONFIRM, then answer its request with FINISHED (00 01); it CONFIRMs (00 03).",
        &frames,
    );
}

#[test]
fn our_partial_is_confirmed_and_marks_us_not_up_to_date() {
    let lab = lab("ourpartial");
    let mut p = learning_session(&lab);
    p.send(&Message::ResyncPartial).unwrap();
    p.recv_until(WAIT, |m| *m == Message::ResyncConfirm)
        .unwrap();
    // The lesson is over (no peer assigned) but the remote resync is not: HAProxy
    // waits for its resync timer, as after any partial lesson, and will not ask us
    // again.
    wait_for_state(&lab, "our PARTIAL lesson recorded", |d| {
        let r = d.resync();
        let agg = d.peer(MOCK_PEER);
        r.remote_partial
            && !r.remote_finished
            && !r.assigned
            && !r.remote_done
            && agg.not_up_to_date()
            && !agg.learn_assigned()
    });
}

#[test]
fn our_heartbeats_are_counted_and_our_error_messages_ignored() {
    let lab = lab("ourcontrol");
    let mut p = settled(&lab);
    let before = show_peers(&lab).peer(MOCK_PEER).num("rx_hbt");
    for _ in 0..3 {
        p.send(&Message::Heartbeat).unwrap();
    }
    eventually("haproxy counts our heartbeats", WAIT, || {
        let n = show_peers(&lab).peer(MOCK_PEER).num("rx_hbt");
        if n >= before + 3 {
            Ok(n)
        } else {
            Err(format!("rx_hbt {before} -> {n}"))
        }
    })
    .unwrap();

    // The error class is only ever sent before a close; received, HAProxy 2.6
    // ignores it: no error back, no close, and the next update is acknowledged.
    p.send(&Message::ProtocolError).unwrap();
    p.send(&Message::SizeLimit).unwrap();
    assert_eq!(p.sent[p.sent.len() - 2].1[..], [1, 0]);
    assert_eq!(p.sent[p.sent.len() - 1].1[..], [1, 1]);
    p.send(&Message::TableDefinition(def(
        4,
        "/t",
        KeyType::Ipv4,
        4,
        vec![DataSpec::plain(DataType::Gpc0)],
    )))
    .unwrap();
    p.send(&update(
        4,
        1,
        Key::from_ipv4("10.0.0.4".parse().unwrap()),
        vec![Value::Uint(4)],
    ))
    .unwrap();
    expect_ack(&mut p, 4, 1);
    assert!(
        !p.log
            .iter()
            .any(|r| matches!(r.message, Message::ProtocolError | Message::SizeLimit)),
        "{:?}",
        p.log
    );
    let agg = show_peers(&lab);
    let agg = agg.peer(MOCK_PEER);
    assert_eq!(agg.num("proto_err"), 0);
    assert_eq!(agg.fields["last_status"], "ESTA");
    // Still up a moment later.
    let more = p.collect_for(Duration::from_millis(300)).unwrap();
    assert!(
        more.iter()
            .all(|r| !matches!(r.message, Message::ProtocolError | Message::SizeLimit)),
        "{more:?}"
    );
}
