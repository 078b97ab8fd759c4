//! The attack of issue 12: a connection from an address no process of the
//! topology uses, whose hello claims a configured peer's name, with a table
//! definition and an update of 1 000 000 written right behind the hello, before
//! any answer (so that an aggregator that read past a refused hello would count
//! it). Over TLS ([`attempt_tls`]): the same bytes behind a TLS handshake with a
//! chosen client certificate, or none.

use super::topology::client_ip;
use anyhow::{Context, Result};
use bytes::{Bytes, BytesMut};
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};
use stktagg_tests::mock_peer::{handshake_raw_from, hello_bytes};
use stktagg_tests::pki::Leaf;
use stktagg_tests::tls::TlsAttempt;
use stktagg_wire::{
    DataSpec, DataType, Encoder, FreqCtr, Key, KeyType, Message, StatusCode, TableDefinition,
    Update, UpdateKind, Value, Version,
};

/// What the impostor claims to push: 1 000 000 requests for client 1.
pub const FAKE_COUNT: u32 = 1_000_000;

/// How long the aggregator may take to close after its answer.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// What an attempt got.
#[derive(Debug)]
pub struct Attempt {
    /// The status line, as sent.
    pub status: String,
    /// Its code.
    pub code: StatusCode,
    /// The connection was closed after the status.
    pub closed: bool,
}

/// From `source`, dials `target` (whose local peer is `target_name`) claiming to
/// be `claimed`, and pushes `table` (the node template's IP-keyed declaration)
/// with client 1 at [`FAKE_COUNT`] right behind the hello.
pub fn attempt(
    source: Ipv4Addr,
    target: SocketAddr,
    target_name: &str,
    claimed: &str,
    table: &str,
) -> Result<Attempt> {
    let bytes = impostor_bytes(target_name, claimed, table)?;
    let (mut stream, status, code, _) = handshake_raw_from(Some(source), target, &bytes)
        .with_context(|| format!("{claimed} -> {target_name} from {source}"))?;
    // After an error status the aggregator closes: read until then, bounded.
    let deadline = Instant::now() + CLOSE_TIMEOUT;
    let mut closed = false;
    let mut buf = [0u8; 4096];
    while !closed && Instant::now() < deadline {
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .context("setting a read timeout")?;
        match stream.read(&mut buf) {
            Ok(0) => closed = true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => closed = true,
        }
    }
    Ok(Attempt {
        status,
        code,
        closed,
    })
}

/// The hello to `target_name` claiming `claimed`, with `table` and client 1 at
/// [`FAKE_COUNT`] behind it.
fn impostor_bytes(target_name: &str, claimed: &str, table: &str) -> Result<BytesMut> {
    let mut bytes = hello_bytes(Version::V2_1, target_name, claimed)?;
    pipelined(table, &mut bytes)?;
    Ok(bytes)
}

/// Over TLS from the system's source address (`127.0.0.1`, which the loopback
/// rule of `addr-check` lets claim any loopback peer: only the certificate is
/// judged), dials `target` checking that its certificate names `target_name`,
/// presenting `client` (or no certificate), and sends what [`attempt`] sends.
pub fn attempt_tls(
    target: SocketAddr,
    target_name: &str,
    claimed: &str,
    table: &str,
    ca_pem: &str,
    client: Option<&Leaf>,
) -> Result<TlsAttempt> {
    let bytes = impostor_bytes(target_name, claimed, table)?;
    let cfg = stktagg_tests::tls::client_config(ca_pem, client)?;
    stktagg_tests::tls::attempt(None, target, cfg, target_name, &bytes)
        .with_context(|| format!("{claimed} -> {target_name} over TLS"))
}

/// Plain text from `127.0.0.1` to a TLS listener: the hello and what follows.
/// The answer is a TLS alert or nothing, never a status line: `Ok(None)` when the
/// connection was closed without one.
pub fn attempt_plain_on_tls(
    target: SocketAddr,
    target_name: &str,
    claimed: &str,
    table: &str,
) -> Result<Option<String>> {
    let bytes = impostor_bytes(target_name, claimed, table)?;
    match handshake_raw_from(None, target, &bytes) {
        Ok((_, status, ..)) => Ok(Some(status)),
        Err(stktagg_tests::HarnessError::Closed { .. }) => Ok(None),
        Err(e) => Err(e).context("plain text on a TLS port"),
    }
}

/// A definition of `table` as the node template declares its IP-keyed tables,
/// then an update of client 1 at [`FAKE_COUNT`].
fn pipelined(table: &str, out: &mut BytesMut) -> Result<()> {
    let def = TableDefinition {
        table_id: 1,
        name: Bytes::from(format!("/{table}")),
        key_type: KeyType::Ipv4,
        key_len: 4,
        expire_ms: 120_000,
        // In the wire's order (by data type), as HAProxy sends them.
        data: vec![
            DataSpec::plain(DataType::Gpc0),
            DataSpec::plain(DataType::HttpReqCnt),
            DataSpec {
                data_type: DataType::HttpReqRate,
                period_ms: 10_000,
                nbelem: 0,
            },
        ],
    };
    let ip: Ipv4Addr = client_ip(1).parse().context("client 1's key")?;
    let update = Update {
        kind: UpdateKind::Full,
        table_id: 1,
        update_id: 1,
        expire_ms: None,
        key: Key::from_ipv4(ip),
        values: vec![
            Value::Uint(FAKE_COUNT),
            Value::Uint(FAKE_COUNT),
            Value::Freq(FreqCtr {
                age: 0,
                curr: FAKE_COUNT,
                prev: 0,
            }),
        ],
    };
    let mut enc = Encoder::new();
    enc.encode(&Message::TableDefinition(def), out)
        .context("encoding the definition")?;
    enc.encode(&Message::Update(update), out)
        .context("encoding the update")?;
    Ok(())
}
