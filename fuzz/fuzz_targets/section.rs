//! A hostile peer against the whole per-session path: the engine, the section's
//! `SessionCore` and a real store, with an honest source beside it. The hostile
//! stream comes after a valid hello from node `hap1` (so that what it sends is
//! applied). The input is read as a script: well-formed messages built with our
//! encoder from fuzzed parts (definitions of any key type, length, data types,
//! periods and array sizes; updates of any kind with fuzzed keys and values;
//! switches; acks; resync messages), raw bytes, and clock jumps. The store
//! expires and refreshes as time moves. Nothing may panic, and what the honest source
//! contributed must still be in the sum at the end (one bad peer never hurts the
//! others).
#![no_main]

use bytes::Bytes;
use bytes::BytesMut;
use libfuzzer_sys::arbitrary::{Result as ArbResult, Unstructured};
use libfuzzer_sys::fuzz_target;
use std::sync::Arc;
use stktagg_section::{Ending, SectionCore, SessionCore, Signals};
use stktagg_session::{Event, PeerSession, SessionConfig};
use stktagg_store::{SourceId, Store, StoreOptions, Waker};
use stktagg_topology::PeerId;
use stktagg_wire::{
    DataSpec, DataType, DictValue, Encoder, FreqCtr, Key, KeyType, Message, Storage,
    TableDefinition, Update, UpdateKind, Value,
};

const CONFIG: &str = "\
aggregations agg
    peer agg  127.0.0.1:10000 local
    peer hap1 127.0.0.1:10001
    peer hap2 127.0.0.1:10002
    peer top  127.0.0.1:10010 up
    from .uncombined to .aggr
    forward .l2
";

struct NoSignals;
impl Signals for NoSignals {
    fn request_resync(&self, _peer: PeerId) {}
}

struct NoWake;
impl Waker for NoWake {
    fn wake(&self) {}
}

fn honest_def() -> TableDefinition {
    TableDefinition {
        table_id: 1,
        name: Bytes::from_static(b"/req.uncombined"),
        key_type: KeyType::Ipv4,
        key_len: 4,
        expire_ms: 0,
        data: vec![DataSpec::plain(DataType::HttpReqCnt)],
    }
}

fn honest_key() -> Key {
    Key::from_ipv4(std::net::Ipv4Addr::new(192, 0, 2, 1))
}

/// The next piece of the hostile stream, from the script.
fn next_bytes(
    u: &mut Unstructured<'_>,
    enc: &mut Encoder,
    defs: &mut Vec<TableDefinition>,
    now: &mut u64,
) -> ArbResult<Vec<u8>> {
    let mut out = BytesMut::new();
    let msg = match u.int_in_range(0..=11u8)? {
        0 => {
            let key_type = *u.choose(&[
                KeyType::Sint,
                KeyType::Ipv4,
                KeyType::Ipv6,
                KeyType::String,
                KeyType::Binary,
            ])?;
            let key_len = match key_type.fixed_len() {
                Some(n) if u.ratio(15, 16)? => n,
                _ => u.int_in_range(0..=300)?,
            };
            let mut data = Vec::new();
            for _ in 0..u.int_in_range(0..=6)? {
                let data_type = *u.choose(DataType::ALL)?;
                data.push(DataSpec {
                    data_type,
                    period_ms: u.int_in_range(0..=120_000)?,
                    nbelem: u.int_in_range(0..=120)?,
                });
            }
            data.sort_by_key(|d| d.data_type as u8);
            data.dedup_by_key(|d| d.data_type as u8);
            let names: [&[u8]; 5] = [
                b"/req.uncombined",
                b"/conn.uncombined",
                b"/x.l2",
                b"/req.aggr",
                b"/other",
            ];
            let def = TableDefinition {
                table_id: u.int_in_range(0..=6)?,
                name: Bytes::copy_from_slice(u.choose(&names)?),
                key_type,
                key_len,
                expire_ms: *u.choose(&[0, 1, 1_000, 60_000, u32::MAX])?,
                data,
            };
            defs.push(def.clone());
            Message::TableDefinition(def)
        }
        1 if !defs.is_empty() => Message::TableSwitch {
            table_id: u.choose(defs)?.table_id,
        },
        2..=6 if !defs.is_empty() => {
            let def = u.choose(defs)?.clone();
            let key = match def.key_type.fixed_len() {
                Some(n) if u.ratio(15, 16)? => Key::from_str_bytes(u.bytes(n as usize)?),
                _ => {
                    let n = u.int_in_range(0..=40)?;
                    Key::from_str_bytes(u.bytes(n)?)
                }
            };
            let mut values = Vec::new();
            for d in &def.data {
                let n = d.nbelem.min(8) as usize;
                let freq = |u: &mut Unstructured<'_>| -> ArbResult<FreqCtr> {
                    Ok(FreqCtr {
                        age: u.arbitrary()?,
                        curr: u.arbitrary()?,
                        prev: u.arbitrary()?,
                    })
                };
                values.push(match (d.data_type.storage(), d.data_type.is_array()) {
                    (Storage::Uint, true) => {
                        Value::UintArray((0..n).map(|_| u.arbitrary()).collect::<ArbResult<_>>()?)
                    }
                    (Storage::FreqCtr, true) => {
                        Value::FreqArray((0..n).map(|_| freq(u)).collect::<ArbResult<_>>()?)
                    }
                    (Storage::Sint, _) => Value::Sint(u.arbitrary()?),
                    (Storage::Uint, _) => Value::Uint(u.arbitrary()?),
                    (Storage::Ull, _) => Value::Ull(u.arbitrary()?),
                    (Storage::FreqCtr, _) => Value::Freq(freq(u)?),
                    (Storage::Dict, _) => {
                        let n = u.int_in_range(0..=20)?;
                        Value::Dict(DictValue::Name(Bytes::copy_from_slice(u.bytes(n)?)))
                    }
                });
            }
            let kind = *u.choose(&[
                UpdateKind::Full,
                UpdateKind::Incremental,
                UpdateKind::Timed,
                UpdateKind::IncrementalTimed,
            ])?;
            Message::Update(Update {
                kind,
                table_id: def.table_id,
                update_id: u.arbitrary()?,
                expire_ms: matches!(kind, UpdateKind::Timed | UpdateKind::IncrementalTimed)
                    .then(|| u.arbitrary())
                    .transpose()?,
                key,
                values,
            })
        }
        7 => Message::Ack {
            table_id: u.int_in_range(0..=6)?,
            update_id: u.arbitrary()?,
        },
        8 => u
            .choose(&[
                Message::ResyncRequest,
                Message::ResyncFinished,
                Message::ResyncPartial,
                Message::ResyncConfirm,
                Message::Heartbeat,
            ])?
            .clone(),
        9 => {
            *now += u64::from(u.arbitrary::<u16>()?);
            return Ok(Vec::new());
        }
        _ => {
            let n = u.int_in_range(0..=64)?;
            return Ok(u.bytes(n)?.to_vec());
        }
    };
    // What our encoder refuses to build is left out: the raw bytes cover the rest.
    let _ = enc.encode(&msg, &mut out);
    Ok(out.to_vec())
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(cfg) = stktagg_config::parse_str(CONFIG, "fuzz.cfg") else {
        return;
    };
    let Ok(mut plan) = stktagg_topology::resolve(&cfg) else {
        return;
    };
    let plan = plan.sections.remove(0);
    let store = Arc::new(Store::new(StoreOptions::default()));
    let section = Arc::new(SectionCore::new(plan, store.clone(), 0, 0));
    let hap1 = PeerId(section.peer_by_name("hap1").unwrap_or(0));
    let hap2 = section.peer_by_name("hap2").unwrap_or(1);
    // The honest source: 7 requests from one client, never expiring.
    let honest = store
        .register_input(
            SourceId(hap2 as u16),
            b"/req.uncombined",
            &honest_def(),
            b"/req.aggr",
        )
        .expect("the honest table registers");
    store
        .apply(&honest, &honest_key(), &[Value::Uint(7)], None, 1)
        .expect("the honest update applies");

    let mut now = 10u64;
    let mut engine = PeerSession::accept(SessionConfig::new("agg"), now);
    engine.set_resync_policy(stktagg_section::resync_policy(section.peers[hap1.0].role));
    engine.handle_input(now, b"HAProxyS 2.1\nagg\nhap1 42 1\n");
    while let Some(e) = engine.poll_event() {
        if let Event::HelloReceived(_) = e {
            engine.accept_hello();
        }
    }
    let mut core = SessionCore::start(
        section.clone(),
        Arc::new(NoSignals),
        hap1,
        "fuzz".to_owned(),
        Arc::new(NoWake),
        now,
    );
    let mut out = BytesMut::new();
    let mut enc = Encoder::new();
    let mut defs = Vec::new();
    let mut ending = Ending::Closed;
    while !u.is_empty() {
        let Ok(piece) = next_bytes(&mut u, &mut enc, &mut defs, &mut now) else {
            break;
        };
        now += 1;
        engine.handle_timeout(now);
        engine.handle_input(now, &piece);
        if let Some(end) = core.handle_events(&mut engine, now) {
            ending = Ending::Protocol(end);
            break;
        }
        out.clear();
        engine.poll_transmit(now, &mut core, &mut out);
        store.expire(now);
        store.refresh_rates_budget(now, 64);
    }
    core.set_now(now);
    core.finish(&ending);
    // The hostile session is over: the honest contribution is still summed.
    let out_table = store
        .output_by_name(b"/req.aggr")
        .expect("the output table");
    let entry = store
        .read(out_table, &honest_key(), now)
        .expect("the honest key is still there");
    // hap1 may have added to the same key, never taken from hap2's share.
    match entry.values.first() {
        Some(Value::Uint(n)) => assert!(*n >= 7, "the honest 7 became {n}"),
        Some(Value::Ull(n)) => assert!(*n >= 7, "the honest 7 became {n}"),
        other => panic!("unexpected value {other:?}"),
    }
});
